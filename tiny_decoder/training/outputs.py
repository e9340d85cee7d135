"""What a finished run leaves for people: sample texts, the loss curve, the model card, and the upload."""

import math
import sys

from ..evaluation.sampling import sample_texts
from ..io.cards import render_model_card
from ..io.hub import push_model
from .optimizers import optimizer_card_section
from .report import describe_data, plot_loss_curve


class FinalOutputs:
    """Written by the main process after the final model is saved. `hub_exporter` (e.g. the Llama export, passed in
    by the script) is what `--hub_format` other than native pushes instead of the native folder."""

    def __init__(self, args, model_args, data_args, tok_args, objective, tokenizer, reports, command, hub_exporter=None):
        self.args, self.model_args, self.data_args, self.tok_args = args, model_args, data_args, tok_args
        self.objective, self.tokenizer, self.reports, self.command = objective, tokenizer, reports, command
        self.hub_exporter = hub_exporter

    def write(self, module, checkpointer, eval_loss: float, facts: dict) -> list[str]:
        """Samples (printed), loss_curve.png, README.md, then the push; returns the samples. `facts`: the run's
        figures for the card (steps, tokens, batch_tokens, minutes, params, mixed_precision, hardware)."""
        samples = self.samples(module)
        for i, s in enumerate(samples):
            print(f"\n--- sample {i + 1} ---\n{s}")
        out_dir = checkpointer.out_dir
        plot_loss_curve(facts.pop("records"), str(out_dir / "loss_curve.png"))
        card = self.model_card(module, samples, eval_loss, facts)
        checkpointer.save_card(card)
        print(
            f"\nsaved model, tokenizer, model card and loss curve to {out_dir}; validation loss {eval_loss:.4f} "
            f"after {facts['steps']} steps, {facts['tokens']:,} tokens, {facts['minutes']:.1f} min"
        )
        if self.args.push_to_hub:
            exporter = self.hub_exporter.save_folder if self.hub_exporter is not None else None
            push_model(module, self.tokenizer, card, self.args, exporter=exporter)
        return samples

    def samples(self, module) -> list[str]:
        """The run's sample texts from the objective's prompt (a story after an EOS, or a chat answer)."""
        args = self.args
        prompt = self.objective.prompt_ids(self.tokenizer, args.sample_prompt)
        return sample_texts(
            module,
            self.tokenizer,
            [prompt] * args.num_samples,
            args.max_new_tokens,
            seed=args.seed,
            include_prompt=self.objective.samples_include_prompt,
        )

    def model_card(self, module, samples: list[str], eval_loss: float, facts: dict) -> str:
        args, objective = self.args, self.objective
        dataset_name, dataset_desc = describe_data(self.data_args, self.reports)
        return render_model_card(
            module.config,
            {
                **facts,
                "repo": args.hub_model_id or args.output_dir,
                "local": not args.hub_model_id,
                "title": (args.hub_model_id or self._folder_name()).split("/")[-1],
                "dataset_name": dataset_name,
                "dataset_desc": dataset_desc,
                "tokenizer_desc": self.tok_args.tokenizer_name
                or f"byte-level BPE, {len(self.tokenizer)} tokens, trained on the training split",
                "learning_rate": args.learning_rate,
                "lr_scheduler_type": args.lr_scheduler_type,
                "warmup_steps": args.warmup_steps,
                "eval_loss": eval_loss,
                "eval_ppl": math.exp(min(eval_loss, 50)),
                "command": self.command or " ".join(sys.argv),
                "prompt": args.sample_prompt,
                "seed": args.seed,
                "samples": samples,
                "method": objective.card_section() + optimizer_card_section(args),
                "base_model": self.model_args.model_name_or_path,
                "tags": objective.tags + (("zeroth-order",) if args.optim == "zeroth_order" else ()),
            },
        )

    def _folder_name(self) -> str:
        from pathlib import Path

        return Path(self.args.output_dir).resolve().name
