"""Supervised fine-tuning on chat data, as an objective of the training loop (see training/objective.py).

The model learns to answer: conversations are rendered by the chat template (chat.py), the loss is
taken on assistant tokens only, and each example is one conversation padded to `block_size`
(attention_mask 0 on the padding), so no conversation ever attends to another. The tokenizer
gains the role tokens and the template before it is saved, and the model's embeddings grow to
match (the tied head stays tied), so the output folder chats through `apply_chat_template`.
"""

from pathlib import Path

import torch
from datasets import Dataset

from ...data import DataError, SplitReport, in_validation
from ...data.chat import add_chat_template, encode_conversation, load_conversations
from ...evaluation.loss import mean_loss
from ...evaluation.sampling import sample_texts
from .causal_lm import CausalLMObjective


def load_chat_splits(data_args) -> dict:
    """{"train", "validation"} conversations from a folder (train.jsonl + validation.jsonl) or one JSONL file
    (split by each conversation's hash, --validation_split_percentage)."""
    path = data_args.local_path
    if not path:
        raise DataError(
            "SFT reads local chat JSONL: give --dataset_path FOLDER (train.jsonl, validation.jsonl) or a "
            "file; scripts/build_instructions.py makes one from TinyStories."
        )
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "train.jsonl").is_file():
            raise DataError(f"{path} has no train.jsonl; give a folder with train.jsonl (and validation.jsonl).")
        train = load_conversations(str(p / "train.jsonl"))
        if (p / "validation.jsonl").is_file():
            return {"train": train, "validation": load_conversations(str(p / "validation.jsonl"))}
    else:
        train = load_conversations(str(p))
    fraction = data_args.validation_split_percentage / 100
    key = lambda conv: "\n".join(m["content"] for m in conv)  # noqa: E731
    splits = {
        "train": [c for c in train if not in_validation(key(c), fraction)],
        "validation": [c for c in train if in_validation(key(c), fraction)],
    }
    for split, conversations in splits.items():
        if not conversations:
            raise DataError(
                f"{path} ({'no validation.jsonl in the folder' if p.is_dir() else 'one file'}): holding out "
                f"{data_args.validation_split_percentage:g}% of its "
                f"{len(train)} conversation(s) by hash leaves the {split} split empty; add a validation.jsonl or more "
                f"conversations (or change --validation_split_percentage)."
            )
    return splits


class SFTObjective(CausalLMObjective):
    name = "sft"
    tags = ("sft", "chat")
    samples_include_prompt = False

    def load_data(self, data_args):
        return load_chat_splits(data_args)

    def setup_tokenizer(self, tokenizer) -> None:
        add_chat_template(tokenizer)

    def build_datasets(self, data_args, tokenizer, raw):
        datasets, reports = {}, {}
        for split, conversations in raw.items():
            examples = [encode_conversation(tokenizer, c, data_args.block_size) for c in conversations]
            kept = [e for e in examples if e is not None]
            if not kept:
                raise DataError(
                    f"The {split} split has no conversation with an assistant token within block_size="
                    f"{data_args.block_size}; raise --block_size or shorten the prompts."
                )
            truncated = sum(e.pop("truncated") for e in kept)
            if truncated:
                print(f"{split}: {truncated} of {len(kept)} conversations cut to block_size={data_args.block_size}")
            datasets[split] = Dataset.from_list(kept)
            reports[split] = SplitReport(
                documents=len(conversations),
                dropped_empty=len(examples) - len(kept),
                tokens=sum(sum(e["attention_mask"]) for e in kept),
                blocks=len(kept),
                chars=sum(len(m["content"]) for c in conversations for m in c),
            )
        return datasets, reports

    def collate(self, items) -> dict:
        return {k: torch.tensor([it[k] for it in items], dtype=torch.long) for k in ("input_ids", "labels", "attention_mask")}

    def prompt_ids(self, tokenizer, prompt: str) -> list[int]:
        return list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )

    def prepare(self, model, tokenizer, accelerator, compile: bool = False) -> None:
        if len(tokenizer) > model.config.vocab_size:  # the role tokens: new rows start at the mean embedding
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)

    def card_section(self) -> str:
        return (
            "## Supervised fine-tuning\n\nFine-tuned on conversations rendered by the chat template saved with the "
            "tokenizer (roles `<|system|>`, `<|user|>`, `<|assistant|>`, turns ending in EOS); the loss counts "
            "assistant tokens only. Chat with `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`."
        )


def assistant_loss(model, tokenizer, conversations, block_size: int, batch_size: int = 32) -> float:
    """Mean next-token loss over the assistant tokens of `conversations` (chat template applied)."""
    objective = SFTObjective()
    examples = [e for e in (encode_conversation(tokenizer, c, block_size) for c in conversations) if e is not None]
    batches = (objective.collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size))
    return mean_loss(model, batches, per="token")


def generate_answers(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 200, seed: int = 0, batch_size: int = 50
) -> list[str]:
    """Sampled answers (the package's sampling defaults, fixed seed) to chat prompts given as token ids."""
    return sample_texts(model, tokenizer, prompts, max_new_tokens, seed=seed, include_prompt=False, batch_size=batch_size)
