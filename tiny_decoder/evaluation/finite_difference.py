"""Gradients without backprop, checked against autograd: a tool to test any layer's backward.

For each parameter tensor, `finite_difference_check` compares autograd's gradient with
- central differences on a few random coordinates: (L(w + eps e_i) - L(w - eps e_i)) / (2 eps);
- an SPSA estimate (Spall 1992; MeZO, Malladi et al. 2023): the mean over random directions z of
  (L(w + eps z) - L(w - eps z)) / (2 eps) * z, whose expectation is the gradient.
Run it in float64 (`model.double()`): the central difference's error is O(eps^2) and rounding adds
~1e-16 * loss / eps, so eps = 1e-4 (the default) gives ~1e-7 relative agreement on this model, where
1e-6 would be limited by rounding and float32 by its 1e-7 precision. The weights are put back
bit-exactly (from a copy of the one tensor being perturbed), and the model is left as it was.
"""

import torch


def default_loss(model, batch):
    """Shifted next-token cross-entropy in the model's own precision (at least float32).

    Not `model(..., labels=...).loss`: transformers' loss upcasts logits with `.float()`, which turns a
    float64 model's logits into float32 and hides differences below ~1e-7.
    """
    labels = batch.get("labels", batch["input_ids"])
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


@torch.no_grad()
def _value(loss_fn, model, batch) -> float:
    return float(loss_fn(model, batch))


def finite_difference_check(
    model,
    batch: dict,
    eps: float = 1e-4,
    coords_per_tensor: int = 8,
    directions: int = 0,
    names: list[str] | None = None,
    seed: int = 0,
    loss_fn=default_loss,
) -> list[dict]:
    """Per parameter tensor: relative error and cosine of central differences (and of SPSA with `directions` > 0)
    against autograd. `names` limits the check to those tensors."""
    was_training = model.training
    model.eval()  # no dropout: the loss must be a deterministic function of the weights
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)]
    if not params:
        raise ValueError(f"No trainable parameter matches names={names}; see model.named_parameters().")
    model.zero_grad(set_to_none=True)
    loss_fn(model, batch).backward()
    autograd = {n: p.grad.detach().double().clone() for n, p in params}
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for name, p in params:
            original = p.detach().clone()
            flat = p.data.view(-1)
            idx = torch.randperm(flat.numel(), generator=g)[:coords_per_tensor]
            fd = []
            for i in idx.tolist():
                flat[i] = original.view(-1)[i] + eps
                plus = _value(loss_fn, model, batch)
                flat[i] = original.view(-1)[i] - eps
                minus = _value(loss_fn, model, batch)
                flat[i] = original.view(-1)[i]
                fd.append((plus - minus) / (2 * eps))
            row = {
                "name": name,
                "numel": p.numel(),
                **_compare(torch.tensor(fd, dtype=torch.float64), autograd[name].view(-1)[idx], "fd"),
            }
            if directions:
                estimate = torch.zeros(p.shape, dtype=torch.float64)
                for _ in range(directions):
                    z = torch.randn(p.shape, generator=g, dtype=torch.float64)
                    p.data.copy_(original + eps * z.to(p.dtype))
                    plus = _value(loss_fn, model, batch)
                    p.data.copy_(original - eps * z.to(p.dtype))
                    minus = _value(loss_fn, model, batch)
                    estimate += (plus - minus) / (2 * eps) * z
                p.data.copy_(original)
                row.update(_compare(estimate.view(-1) / directions, autograd[name].view(-1), "spsa"))
            assert torch.equal(p.data, original)  # bit-exact: every perturbation was undone from the copy
            rows.append(row)
    model.train(was_training)
    return rows


def _compare(estimate: torch.Tensor, exact: torch.Tensor, prefix: str) -> dict:
    scale = max(exact.norm().item(), estimate.norm().item(), 1e-30)
    cosine = torch.nn.functional.cosine_similarity(estimate, exact, dim=0).item() if exact.norm() > 0 else float("nan")
    return {f"{prefix}_rel_error": (estimate - exact).norm().item() / scale, f"{prefix}_cosine": cosine}


def format_check(rows: list[dict]) -> str:
    spsa = any("spsa_cosine" in r for r in rows)
    head = "| tensor | numel | central diff. rel. error | cosine |" + (" SPSA cosine | SPSA rel. error |" if spsa else "")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        line = f"| {r['name']} | {r['numel']:,} | {r['fd_rel_error']:.2e} | {r['fd_cosine']:.6f} |"
        if spsa:
            line += f" {r.get('spsa_cosine', float('nan')):.3f} | {r.get('spsa_rel_error', float('nan')):.3f} |"
        lines.append(line)
    return "\n".join(lines)
