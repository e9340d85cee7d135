"""The output folder of every script: one writer per folder, and nothing in it written half.

Like `Trainer` and run_clm.py, a script refuses a folder that already holds something unless it
is asked to continue it (training's `--resume_from_checkpoint`) or to replace it (`--overwrite_output_dir`);
replacing deletes only what that script writes, never a file it does not know, and a folder holding files
of another kind (a model folder given to the tokenizer trainer) is refused either way. While a script
writes, it holds an OS lock on `output_dir/.lock` (filelock), which also names its process: a second writer is
refused in one line naming it, and a killed writer's lock goes with its process.
"""

import atexit
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

LOCK = ".lock"

TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", ".final.tmp"}
# What save_pretrained of a model and its tokenizer writes, with its card: a saved model folder.
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "README.md", *TOKENIZER_FILES}
# What scripts/train.py (and distill.py, prune.py) write into output_dir.
RUN_FILES = {
    *MODEL_FILES,
    "tokenizer",
    "metrics.jsonl",
    "loss_curve.png",
    "tiny-decoder",
    "prune_report.json",
    # the remote code save_pretrained copies: the files of tiny_decoder/model/
    *(p.name for p in (Path(__file__).resolve().parents[1] / "model").glob("*.py") if p.name != "__init__.py"),
}
INSTRUCTION_FILES = {"train.jsonl", "validation.jsonl"}
_RUN_PATTERN = re.compile(r"^checkpoint-\d+(\.tmp)?$")
# Left by a run that stopped before its first checkpoint (a bad argument, Ctrl-C during data
# preparation): no training progress, so a new run simply replaces them.
NO_PROGRESS = {"tokenizer", "tiny-decoder", ".final.tmp"}


class OutputDirError(ValueError):
    pass


def check_output_dir(
    output_dir: str, overwrite: bool, resuming: bool = False, own: set[str] | None = None, what: str = "a training run"
) -> list[Path]:
    """Refuse a folder another writer holds, or that holds anything but `own` files (default: a training run's);
    return what overwriting would delete."""
    own = RUN_FILES if own is None else own
    is_own = (lambda n: n in own or bool(_RUN_PATTERN.match(n))) if own is RUN_FILES else (lambda n: n in own)
    root = Path(output_dir)
    if root.exists() and not root.is_dir():
        raise OutputDirError(f"output_dir {output_dir!r} is a file, not a folder; choose another --output_dir.")
    check_lock(root)
    entries = sorted(p for p in root.iterdir() if p.name != LOCK) if root.is_dir() else []
    if not entries or resuming:
        return []
    names = [p.name for p in entries]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    foreign = [n for n in names if not is_own(n)]
    if foreign:
        raise OutputDirError(
            f"output_dir {output_dir!r} is not empty and holds files {what} does not write ({', '.join(foreign[:6])}); "
            f"choose a new or empty --output_dir."
        )
    if own is RUN_FILES and all(n in NO_PROGRESS or n.endswith(".tmp") for n in names):
        return entries
    if not overwrite:
        resume = ", --resume_from_checkpoint latest to continue it" if own is RUN_FILES and what == "a training run" else ""
        raise OutputDirError(
            f"output_dir {output_dir!r} already holds {what}'s output ({shown}). Pass --overwrite_output_dir true to "
            f"replace it{resume}, or choose another --output_dir."
        )
    return entries


_HELD: dict[Path, "OutputLock"] = {}  # the folders this process holds, so its own checks pass


def _holder(path: Path) -> str:
    """'pid 123 on host, since 12:00:00' from the lock file, as its holder wrote it."""
    try:
        info = json.loads(path.read_text())
        started = time.strftime("%H:%M:%S", time.localtime(info["started"]))
        return f"pid {info['pid']} on {info['host']}, since {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def check_lock(root: Path) -> None:
    """Refuse a folder another live process holds. The lock is the OS's (flock through filelock): it goes with its
    process, so a killed writer leaves no lock to take over, only a file."""
    path = root / LOCK
    if not path.exists() or path.resolve() in _HELD:
        return
    probe = FileLock(path, timeout=0, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        raise OutputDirError(
            f"output_dir {str(root)!r} is being written by another process ({_holder(path)}); wait for it to end "
            f"or choose another --output_dir."
        ) from None
    probe.release()


class OutputLock:
    """output_dir/.lock for the length of a script (released at exit, also on errors, and by the OS if the
    process dies); the file names its holder for the refusal message."""

    def __init__(self, output_dir: str):
        self.root = Path(output_dir)
        self.path = self.root / LOCK
        self.lock = FileLock(self.path, timeout=0, thread_local=False)

    @property
    def held(self) -> bool:
        return self.lock.is_locked

    def acquire(self) -> "OutputLock":
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except Timeout:
            check_lock(self.root)  # names the holder
            raise OutputDirError(f"could not lock output_dir {str(self.root)!r}; try again.") from None
        self.path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        _HELD[self.path.resolve()] = self
        atexit.register(self.release)
        return self

    def release(self):
        if self.held:
            _HELD.pop(self.path.resolve(), None)
            self.path.unlink(missing_ok=True)  # while still held: no other process can hold this file now
            self.lock.release()

    def __enter__(self):
        return self if self.held else self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def claim_output_dir(output_dir: str, overwrite: bool, own: set[str] | None = None, what: str = "a training run") -> OutputLock:
    """The rule for a script that is not training: check the folder, lock it, clear its old output when
    overwriting. Use as `with claim_output_dir(...):` around the writing."""
    old = check_output_dir(output_dir, overwrite, own=own, what=what)
    lock = OutputLock(output_dir).acquire()
    if old:
        clear_run(old)
    return lock


def clear_run(entries: list[Path]) -> None:
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def default_modes(folder: Path) -> None:
    """Give every file under `folder` the mode a new file gets here (0644 under the usual umask): transformers writes
    model.safetensors through a private temporary file (0600), and a model folder is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def disk_full(err: BaseException) -> bool:
    """A write that failed for want of space: ENOSPC, or torch's zip writer's way of saying so."""
    import errno

    text = str(err)
    return getattr(err, "errno", None) == errno.ENOSPC or "No space left" in text or "unexpected pos" in text


def write_failure(err: BaseException, folder: Path, needed: int | None = None) -> str:
    """One line on a failed write: for a full disk, which folder and how much was needed and free."""
    if not disk_full(err):
        first = (str(err).strip().splitlines() or [""])[0][:200]
        return f"writing into {str(folder)!r} failed ({type(err).__name__}: {first}); nothing half-written was kept."
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = f"about {needed / 1e6:,.1f} MB were needed and " if needed else ""
    return (
        f"the disk holding {str(folder)!r} is full: {need}{free / 1e6:,.1f} MB are free. Nothing half-written was "
        f"kept; free some space (or choose another output folder) and run again."
    )


def save_atomically(output_dir: str, *savers) -> None:
    """Call each `save_pretrained`-like function on a temporary folder, then move the files in.

    A crash leaves the earlier files (or none), never a mix of a half-written new set and old ones; a failed write
    (a full disk) removes the temporary folder and says so in one line.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{output_dir!r} is a file, not a folder; choose another output folder.")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for save in savers:
            save(tmp)
    except (OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(err):
            raise OutputDirError(write_failure(err, out)) from None
        raise
    if tmp.exists():
        default_modes(tmp)
    written = list(tmp.iterdir()) if tmp.exists() else []
    if not written:
        raise OutputDirError(f"nothing was written to {output_dir!r}.")
    for f in written:
        target = out / f.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
    tmp.rmdir()
