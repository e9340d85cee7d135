"""The output folder of a run: one run per folder, and nothing in it written half.

Like `Trainer` and run_clm.py, a run refuses a folder that already holds something unless it
is asked to continue it (`--resume_from_checkpoint`) or to replace it (`--overwrite_output_dir`);
replacing deletes only what a run writes, never a file it does not know.
"""

import os
import re
import shutil
from pathlib import Path

# What scripts/train.py (and distill.py, prune.py) write into output_dir (save_pretrained of model and tokenizer included).
RUN_FILES = {
    "tokenizer",
    "metrics.jsonl",
    "loss_curve.png",
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tiny-decoder",
    ".final.tmp",
    "prune_report.json",
    # the remote code save_pretrained copies: the files of tiny_decoder/model/
    *(p.name for p in (Path(__file__).resolve().parents[1] / "model").glob("*.py") if p.name != "__init__.py"),
}
_RUN_PATTERN = re.compile(r"^checkpoint-\d+(\.tmp)?$")
# Left by a run that stopped before its first checkpoint (a bad argument, Ctrl-C during data
# preparation): no training progress, so a new run simply replaces them.
NO_PROGRESS = {"tokenizer", "tiny-decoder", ".final.tmp"}


class OutputDirError(ValueError):
    pass


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or bool(_RUN_PATTERN.match(name))


def check_output_dir(output_dir: str, overwrite: bool, resuming: bool) -> list[Path]:
    """Refuse a folder another run (or anything else) lives in; return what overwriting would delete."""
    root = Path(output_dir)
    if root.exists() and not root.is_dir():
        raise OutputDirError(f"output_dir {output_dir!r} is a file, not a folder; choose another --output_dir.")
    entries = sorted(root.iterdir()) if root.is_dir() else []
    if not entries or resuming:
        return []
    names = [p.name for p in entries]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    foreign = [n for n in names if not _is_run_file(n)]
    if foreign:
        raise OutputDirError(
            f"output_dir {output_dir!r} is not empty and holds files a training run does not write ({', '.join(foreign[:6])}); "
            f"choose a new or empty --output_dir."
        )
    if all(n in NO_PROGRESS or n.endswith(".tmp") for n in names):
        return entries
    if not overwrite:
        raise OutputDirError(
            f"output_dir {output_dir!r} already holds a training run ({shown}). Pass --overwrite_output_dir true to "
            f"replace it, --resume_from_checkpoint latest to continue it, or choose another --output_dir."
        )
    return entries


def clear_run(entries: list[Path]) -> None:
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def save_atomically(output_dir: str, *savers) -> None:
    """Call each `save_pretrained`-like function on a temporary folder, then move the files in.

    A crash leaves the earlier files (or none), never a mix of a half-written new set and old ones.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{output_dir!r} is a file, not a folder; choose another output folder.")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for save in savers:
        save(tmp)
    written = list(tmp.iterdir()) if tmp.exists() else []
    if not written:
        raise OutputDirError(f"nothing was written to {output_dir!r}.")
    for f in written:
        target = out / f.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
    tmp.rmdir()
