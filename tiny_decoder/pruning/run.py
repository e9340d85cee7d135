"""What `scripts/prune.py` does, as library code: prune a saved tiny-decoder folder into a smaller saved
folder, with the before/after table (parameters, validation loss, generation speed) and a model card."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data import build_lm_datasets, load_raw_dataset
from ..data.tokenizer import load_tokenizer
from ..evaluation.loss import blocks_loss
from ..evaluation.speed import generation_speed
from ..io.cards import render_pruned_card
from ..io.run_dir import OutputLock, check_output_dir, clear_run, save_atomically
from ..io.sources import check_model_source
from ..training.objectives import CausalLMObjective
from .importance import LAYER_METRICS
from .plan import prune_model


@dataclass
class PruneArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "The tiny-decoder folder (or Hub name) to prune."})
    output_dir: str = field(default="runs/pruned", metadata={"help": "Where the pruned model, tokenizer and card go."})
    overwrite_output_dir: bool = False
    target_params: str | None = field(default=None, metadata={"help": "Size to reach: '50%%', '0.5' or a count like '650000'."})
    num_layers: int | None = field(default=None, metadata={"help": "Keep this many layers (the least influential go)."})
    num_heads: int | None = field(default=None, metadata={"help": "Query heads per layer (whole KV groups go)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP channels per layer."})
    hidden_size: int | None = field(default=None, metadata={"help": "Hidden (residual stream) channels."})
    layer_importance: str = field(default="block_influence", metadata={"help": f"One of {list(LAYER_METRICS)}."})
    calibration_samples: int = field(default=256, metadata={"help": "Training blocks that measure importance."})
    per_device_eval_batch_size: int = 64
    max_eval_batches: int | None = field(default=None, metadata={"help": "Validation batches for the loss (None: all)."})
    seed: int = 42

    def __post_init__(self):
        if not self.model_name_or_path:
            raise ValueError("--model_name_or_path is required: the folder of a trained tiny-decoder (e.g. runs/tiny).")
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples={self.calibration_samples} must be >= 1.")
        if self.layer_importance not in LAYER_METRICS:
            raise ValueError(f"layer_importance={self.layer_importance!r}: choose one of {list(LAYER_METRICS)}.")


def load_model(name: str):
    from transformers import AutoModelForCausalLM

    from ..model import TinyDecoderForCausalLM

    check_model_source(name)
    model = AutoModelForCausalLM.from_pretrained(name)
    if not isinstance(model, TinyDecoderForCausalLM):
        raise ValueError(f"{name!r} is a {type(model).__name__}; scripts/prune.py cuts tiny-decoder models only.")
    return model.eval()


def measure(model, blocks, tokenizer, args) -> dict:
    prompt = CausalLMObjective().prompt_ids(tokenizer, "Once upon a time")
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "val_loss": blocks_loss(model, blocks["validation"], args.per_device_eval_batch_size, args.max_eval_batches),
        "generate_tok_s": generation_speed(model, prompt),
    }


def prune_folder(args: PruneArguments, data_args, command: str) -> dict:
    """Load, measure, prune, measure again, print the table, save the smaller model with its tokenizer, card and
    prune_report.json; returns the report."""
    torch.manual_seed(args.seed)
    model = load_model(args.model_name_or_path)
    old = check_output_dir(args.output_dir, args.overwrite_output_dir, what="a pruned model")
    with OutputLock(args.output_dir):
        return _prune(model, old, args, data_args, command)


def _prune(model, old, args, data_args, command: str) -> dict:
    data_args.block_size = min(data_args.block_size, model.config.max_position_embeddings)
    tokenizer = load_tokenizer(args.model_name_or_path, data_args.block_size)
    blocks, _ = build_lm_datasets(data_args, tokenizer, load_raw_dataset(data_args))
    order = torch.randperm(len(blocks["train"]), generator=torch.Generator().manual_seed(args.seed))
    calib = blocks["train"].select(order[: args.calibration_samples].tolist())["input_ids"]
    size = args.per_device_eval_batch_size
    batches = [torch.tensor(calib[i : i + size]) for i in range(0, len(calib), size)]

    before = measure(model, blocks, tokenizer, args)
    sizes = (args.hidden_size, args.num_layers, args.num_heads, args.intermediate_size)
    small, report = prune_model(model, batches, args.target_params, *sizes, args.layer_importance)
    after = measure(small, blocks, tokenizer, args)
    rows = comparison_rows(before, after, report)
    card = pruned_card(
        model.config, small.config, report, rows, args, f"{len(calib)} training blocks of {data_args.block_size} tokens", command
    )
    result = {
        "before": before,
        "after": after,
        "sizes": asdict(report.sizes),
        "removed": report.removed,
        "kept_layers": report.keep.layers,
    }

    def write_extras(folder):
        Path(folder, "README.md").write_text(card)
        Path(folder, "prune_report.json").write_text(json.dumps(result, indent=2))

    if old:
        clear_run(old)
    small.config.use_cache = True
    save_atomically(args.output_dir, small.save_pretrained, tokenizer.save_pretrained, write_extras)
    print(f"saved the pruned model, tokenizer, card and prune_report.json to {args.output_dir}")
    return result


def comparison_rows(before: dict, after: dict, report) -> list[tuple]:
    """(name, before, after) rows, printed as a table and kept for the card."""
    shape = ("num_layers", "hidden_size", "num_heads", "num_key_value_heads", "intermediate_size")
    rows = [("parameters", f"{before['params']:,}", f"{after['params']:,}")]
    rows += [(k, report.before[k], report.after[k]) for k in shape]
    rows += [
        ("validation loss", f"{before['val_loss']:.4f}", f"{after['val_loss']:.4f}"),
        (
            "generate tokens/s (greedy, batch 1, this machine)",
            f"{before['generate_tok_s']:.0f}",
            f"{after['generate_tok_s']:.0f}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n" + "\n".join(f"{name:<{width}}  {str(a):>12}  {str(b):>12}" for name, a, b in [("", "before", "after")] + rows))
    if "target" in report.before:
        print(f"target {report.before['target']:,} parameters, reached {after['params']:,}")
    return rows


def pruned_card(config, small_config, report, rows, args, calibration: str, command: str) -> str:
    notes = []
    if config.norm == "rmsnorm" and report.removed["hidden_channels"]:
        notes.append("RMSNorm weights were scaled by sqrt(d/d') and norm_eps by d/d' so the kept channels' scale is unchanged.")
    if config.position_embedding == "sinusoidal" and report.removed["hidden_channels"]:
        notes.append("The sinusoidal positions of the kept channels became a learned table holding the same values.")
    importance = f"activation magnitudes (Minitron) for heads, MLP and hidden channels; layers by {args.layer_importance}"
    return render_pruned_card(
        small_config,
        {
            "repo": args.output_dir,
            "local": True,
            "title": Path(args.output_dir).resolve().name,
            "source": args.model_name_or_path,
            "removed": report.describe(),
            "rows": rows,
            "importance": importance,
            "calibration": calibration,
            "notes": " ".join(notes),
            "command": command,
        },
    )
