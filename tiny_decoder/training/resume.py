"""Whether a checkpoint fits the run that asks to resume it, decided before any data work.

A checkpoint's weights have the shapes of the config it was trained with, and its data position counts blocks of
its block size. A resume that asks for another preset, config or block size would fail late (after data
preparation, with a page of state_dict size mismatches) or, for the block size, continue silently on other data
positions; both are refused here in one line that names each difference and the flags that fix it.
"""

import json
from pathlib import Path

from .checkpoint import CheckpointError

# Fields that do not shape the weights or are set from the tokenizer: not compared.
IGNORED = {"vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "transformers_version", "architectures", "auto_map"}
IGNORED |= {"dtype", "torch_dtype", "use_cache", "model_type"}


class _Vocabulary:
    """What build_config reads of a tokenizer, taken from the checkpoint's config (the tokenizer comes later)."""

    def __init__(self, config: dict):
        self.size = config.get("vocab_size", 0)
        self.bos_token_id, self.eos_token_id = config.get("bos_token_id"), config.get("eos_token_id")
        self.pad_token_id = config.get("pad_token_id")

    def __len__(self):
        return self.size


def _plain(value):
    return json.loads(json.dumps(value))  # tuples as lists, as the saved config.json has them


def config_differences(saved: dict, asked: dict) -> list[str]:
    """'field=saved -> asked' for every architecture field both name and that differs."""
    keys = sorted(k for k in saved.keys() & asked.keys() if k not in IGNORED and not k.startswith("_"))
    return [f"{k}={saved[k]!r} -> {asked[k]!r}" for k in keys if _plain(saved[k]) != _plain(asked[k])]


def check_resume_fits(checkpoint: Path, state, model_args, block_size: int) -> None:
    """Refuse, in one line, a resume whose block size or architecture differs from the checkpoint's."""
    from .arguments import build_config

    resume = "resume with the arguments the run was started with, or start a new run in another --output_dir"
    saved_block = getattr(state, "block_size", None)
    if saved_block is not None and saved_block != block_size:
        raise CheckpointError(
            f"{checkpoint} was trained on blocks of {saved_block} tokens; this run asks for --block_size {block_size}: "
            f"pass --block_size {saved_block} ({resume})."
        )
    config_file = Path(checkpoint) / "config.json"
    if model_args.model_name_or_path or not config_file.is_file():
        return  # continuing a saved model: its own config is loaded, and the weights' check happens on load
    saved = json.loads(config_file.read_text())
    try:
        asked = build_config(model_args, _Vocabulary(saved), block_size).to_dict()
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{checkpoint}: this run's model arguments do not build a config ({err}).") from None
    differences = config_differences(saved, asked)
    if differences:
        shown = ", ".join(differences[:6]) + (f" and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise CheckpointError(
            f"{checkpoint} holds another model than this run asks for (--preset / --config_name / --config_overrides / "
            f"--block_size): {shown}; {resume}."
        )
