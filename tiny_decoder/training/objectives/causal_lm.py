"""What the training loop minimises, as one object the loop calls on every micro-batch.

The loop owns the optimizer, schedule, checkpoints and logs; an objective owns the loss and the
shape of the examples (how they are built from the data and batched). Plain pre-training is
`CausalLMObjective` (packed text blocks); distillation (a teacher in the loop) and SFT (chat
examples with assistant-only labels) subclass it, so a new kind of training is a new objective,
never a second copy of the loop.
"""

import torch

from ...data import build_lm_datasets, clean_and_split, load_raw_dataset
from ...data.tokenizer import get_tokenizer


class CausalLMObjective:
    """Next-token cross-entropy on `labels` (-100 = ignored), the loss `scripts/train.py` trains."""

    name = "causal_lm"
    tags: tuple[str, ...] = ()  # extra Hub tags for the model card
    samples_include_prompt = True  # a story's sample is prompt + continuation; a chat sample is the answer alone

    def load_data(self, data_args):
        """The raw data (before the tokenizer exists: a new tokenizer may be trained on it)."""
        return load_raw_dataset(data_args)

    def build_tokenizer(self, tok_args, data_args, raw):
        """The run's tokenizer: the one `tok_args` names, or a new BPE trained on the training split of `raw`;
        then `setup_tokenizer`."""
        train_docs = clean_and_split(raw, data_args)[0]["train"] if not tok_args.tokenizer_name else None
        tokenizer = get_tokenizer(tok_args, train_docs, data_args.text_column, data_args.block_size)
        self.setup_tokenizer(tokenizer)
        return tokenizer

    def setup_tokenizer(self, tokenizer) -> None:
        """Change the tokenizer before it is saved and used (e.g. add a chat template)."""

    def build_datasets(self, data_args, tokenizer, raw):
        """({"train", "validation"} datasets of examples, {split: data.SplitReport})."""
        return build_lm_datasets(data_args, tokenizer, raw)

    def collate(self, items) -> dict:
        """A list of examples -> a batch dict of tensors (input_ids, labels, optionally attention_mask)."""
        ids = torch.tensor([it["input_ids"] for it in items], dtype=torch.long)
        return {"input_ids": ids, "labels": ids}

    def prompt_ids(self, tokenizer, prompt: str) -> list[int]:
        """Token ids that start a sample generation: a story begins after an EOS, as in training."""
        return [tokenizer.eos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def prepare(self, model, tokenizer, accelerator, compile: bool = False) -> None:
        """Called once before training, with the unwrapped student: check compatibility, place helpers,
        compile the loss's own arithmetic when the run compiles (`--torch_compile`)."""

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to backpropagate, extra scalars to log, e.g. {"ce": ..., "kl": ...})."""
        out = model(
            input_ids=batch["input_ids"], labels=batch["labels"], attention_mask=batch.get("attention_mask"), use_cache=False
        )
        return out.loss, {}

    def signature(self) -> dict:
        """The settings that shape the loss; saved in checkpoints so a resume can say when they change."""
        return {"objective": self.name}

    def divergence_hint(self) -> str:
        """What else may have made the loss non-finite, for the divergence message ("" or ", or ...")."""
        return ""

    def card_section(self) -> str:
        """Markdown for the model card (empty: nothing beyond the training table)."""
        return ""
