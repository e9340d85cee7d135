"""Compiled decode steps kept on disk between processes, so a later Engine loads in milliseconds what cost this one
~20 s to compile (a CPU step's frozen weights and GEMM search are not in inductor's own caches).

Where: $TINY_DECODER_CACHE/aot, by default ~/.cache/tiny_decoder/aot. A stored step is an AOTInductor package
(`<name>.pt2`: a shared library with the model's weights inside) beside `<name>.json`, which says what it is and holds
the package's sha256. `<name>` is the sha256 of everything the step depends on (the caller's key: weights, code,
versions, CPU, shape, options), so a step is only ever found for the model, machine and shape it was made for.

Trust: a package is native code the process runs. One is loaded only from a folder and a file that belong to this
user and that nobody else may write, and only when its bytes hash to what its .json says; anything else is passed
over (and compiled anew into a private temporary folder), never loaded.
Writes go to a temporary name, then are renamed into place. Pruning (beyond MAX_BYTES, least recently used first)
deletes only names this store gives; other files in the folder are left alone.
Also kept: how many decode steps each model has run eagerly on this machine (`steps.json`), so Engine's
compile="auto" rule - compile once eager decoding has cost about as much - counts across processes.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

CACHE_ENV = "TINY_DECODER_CACHE"
MAX_BYTES = 2 * 1024**3  # packages kept in all; beyond it the least recently used go
MODELS_COUNTED = 512  # steps.json keeps this many models' counts (the most recently counted)
OURS = re.compile(r"^(?:[0-9a-f]{64}\.(?:pt2|json)|\.[0-9a-f]{64}\.\d+\.tmp\.(?:pt2|json))$")


def cache_root() -> Path:
    """The package's cache folder: $TINY_DECODER_CACHE, else ~/.cache/tiny_decoder."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tiny_decoder")


def digest(key) -> str:
    """The sha256 of a JSON-able key (sorted, so the same key always names the same file)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def private(path: Path) -> bool:
    """Whether `path` belongs to this user and nobody else may write it (always true where there are no uids)."""
    if not hasattr(os, "getuid"):
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


class StepStore:
    """The compiled steps (and eager step counts) kept in one folder: `find` and `save` a package by its key."""

    def __init__(self, root: str | os.PathLike | None = None, max_bytes: int = MAX_BYTES):
        self.folder = Path(root) if root is not None else cache_root() / "aot"
        self.max_bytes = max_bytes

    def find(self, key) -> Path | None:
        """The stored package for `key`, if there is one this store may trust (see the module's docstring)."""
        name = digest(key)
        package, about = self.folder / f"{name}.pt2", self.folder / f"{name}.json"
        if not (private(self.folder) and private(package) and private(about)):
            return None
        try:
            recorded = json.loads(about.read_text()).get("sha256")
        except (OSError, ValueError, AttributeError):
            return None
        if recorded != file_sha256(package):
            return None
        os.utime(package)  # most recently used: the last to be pruned
        return package

    def save(self, key, write, about: dict) -> Path:
        """Call `write(path)` to make the package for `key`, keep it, and return where it lies. Where the folder
        cannot be made or is not private, the package goes to a temporary folder of this process instead (used,
        not kept). If `write` raises, nothing is left behind."""
        name = digest(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            keep = private(self.folder)
        except OSError:
            keep = False
        if not keep:
            path = Path(tempfile.mkdtemp(prefix="tiny-decoder-step-")) / f"{name}.pt2"
            try:
                write(path)
            except BaseException:
                remove_temporary(path)
                raise
            return path
        tmp = self.folder / f".{name}.{os.getpid()}.tmp.pt2"
        try:
            write(tmp)
            os.chmod(tmp, 0o600)
            record = {**about, "sha256": file_sha256(tmp), "key": key, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
            self._write_json(self.folder / f"{name}.json", record)
            os.replace(tmp, self.folder / f"{name}.pt2")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.prune()
        return self.folder / f"{name}.pt2"

    def prune(self) -> None:
        """Beyond max_bytes, the least recently used packages (and their .json) go; temporary files of ours older
        than a day (a killed writer's) too. Only names this store gives are touched. Best effort: a file another
        process removed meanwhile, or one that cannot be removed, is passed over."""
        with contextlib.suppress(OSError):
            self._prune()

    def _prune(self) -> None:
        if not private(self.folder):
            return
        ours = {}
        for p in self.folder.iterdir():
            if OURS.match(p.name):
                with contextlib.suppress(OSError):  # gone meanwhile (another process pruned), or a dangling link
                    ours[p] = p.stat()
        for p, st in ours.items():
            if p.name.startswith(".") and time.time() - st.st_mtime > 86_400:
                p.unlink(missing_ok=True)
        packages = sorted((p for p in ours if p.suffix == ".pt2" and not p.name.startswith(".")), key=lambda p: ours[p].st_mtime)
        total = sum(ours[p].st_size for p in packages)
        for p in packages:
            if total <= self.max_bytes:
                break
            total -= ours[p].st_size
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)

    def steps(self, model: str) -> int:
        """Decode steps counted for `model` (an id: e.g. the sha256 of its config and weights)."""
        value = self._counts().get(model, 0)
        return value if isinstance(value, int) and value >= 0 else 0

    def count(self, model: str, steps: int) -> int:
        """Add `steps` to `model`'s count and return the new total (the count alone if the folder is not ours)."""
        counts = self._counts()
        total = self.steps(model) + steps
        counts.pop(model, None)
        counts[model] = total
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if private(self.folder):
                self._write_json(self.folder / "steps.json", dict(list(counts.items())[-MODELS_COUNTED:]))
        return total

    def _counts(self) -> dict:
        try:
            counts = json.loads((self.folder / "steps.json").read_text())
        except (OSError, ValueError):
            return {}
        return counts if isinstance(counts, dict) else {}

    def _write_json(self, path: Path, value) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
        try:
            tmp.write_text(json.dumps(value, indent=1, default=str))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def remove_temporary(path: Path) -> None:
    """Remove a package that save() put in a temporary folder of its own (a stored one is left where it is)."""
    if path.parent.name.startswith("tiny-decoder-step-") and path.parent.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(path.parent, ignore_errors=True)
