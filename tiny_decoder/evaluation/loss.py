"""The validation loss, computed one way for every number the package reports: the trainer's evaluations,
`compare.py`, `prune.py`, the SFT evaluation and the experiments all call `mean_loss`."""

import torch


@torch.no_grad()
def mean_loss(model, batches, accelerator=None, max_batches: int | None = None, per: str = "row") -> float:
    """Mean next-token loss of `model` over `batches` (dicts with input_ids, labels -100 where ignored,
    optionally attention_mask).

    per="row": every row counts once (the model's per-batch mean, weighted by the rows in the batch); the
    measure for packed blocks of equal length, as training evaluates. per="token": every labelled token
    counts once; the measure when labels cover a varying part of each row (assistant tokens of chats).
    With an accelerator, every process's share is gathered first (and padding duplicates dropped).
    """
    if per not in ("row", "token"):
        raise ValueError(f"per={per!r}: use 'row' or 'token'.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values = []  # per row: its batch's mean loss; per token: (summed loss, labelled tokens) of the batch
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "labels", "attention_mask")}
        if per == "row":
            loss = model(**batch, use_cache=False).loss.detach().float()
            value = loss.repeat(batch["input_ids"].shape[0])
        else:  # num_items_in_batch=1 turns the model's own (shifted, masked) loss into a sum over labelled tokens
            total = model(**batch, num_items_in_batch=torch.tensor(1), use_cache=False).loss.detach().double()
            value = torch.stack([total, (batch["labels"][:, 1:] != -100).sum().double()])[None]
        values.append(accelerator.gather_for_metrics(value) if accelerator is not None else value)
    model.train(was_training)
    if not values:
        return float("nan")
    if per == "row":
        return torch.cat(values).mean().item()
    total, count = torch.cat(values).sum(0).tolist()
    return total / max(count, 1)


def blocks_loss(model, blocks, batch_size: int = 64, max_batches: int | None = None) -> float:
    """`mean_loss` over a dataset of packed blocks (`input_ids` of equal length), as the trainer evaluates."""
    batches = (
        {"input_ids": ids, "labels": ids}
        for ids in (torch.tensor(blocks[s : s + batch_size]["input_ids"]) for s in range(0, len(blocks), batch_size))
    )
    loss = mean_loss(model, batches, max_batches=max_batches)
    if loss != loss:  # nan: no block at all
        raise ValueError("No validation blocks to measure the loss on; give more validation data or a smaller block_size.")
    return loss
