"""Training checkpoints: written whole or not at all, and checked before they are loaded.

A checkpoint is `accelerator.save_state` (model as safetensors, optimizer, scheduler, RNG of
every process) plus `trainer_state.json` (step and data position), written under a temporary
name and renamed once complete. `manifest.json` lists every file with its size and sha256, so
a missing, truncated or altered file is refused with its name instead of failing inside torch.
"""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(accelerator, output_dir: str, state: dict, save_total_limit: int | None = None) -> Path:
    final = Path(output_dir) / f"checkpoint-{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE).write_text(json.dumps(state, indent=2))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if save_total_limit:
            for old in list_checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(output_dir: str) -> list[Path]:
    """Complete checkpoints (with a manifest), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / MANIFEST).exists()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(spec: str, output_dir: str) -> Path:
    """'latest' -> newest complete checkpoint in output_dir; otherwise the folder given."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"resume_from_checkpoint='latest' but {output_dir!r} holds no complete checkpoint-N folder.")
        return found[-1]
    return Path(spec)


def verify_checkpoint(path: Path) -> dict:
    """Check every file against the manifest; return the trainer state."""
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    if not (path / MANIFEST).exists():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has no {MANIFEST}: it was not written completely (or not by this trainer). "
            f"Resume from an earlier checkpoint."
        )
    manifest = json.loads((path / MANIFEST).read_text())
    for name, meta in manifest.items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"Checkpoint {str(path)!r} is missing {name}; resume from another checkpoint.")
        if f.stat().st_size != meta["size"]:
            raise CheckpointError(
                f"Checkpoint file {str(f)!r} is truncated or changed ({f.stat().st_size} bytes, expected {meta['size']}); "
                f"resume from another checkpoint."
            )
        if _sha256(f) != meta["sha256"]:
            raise CheckpointError(f"Checkpoint file {str(f)!r} does not match its checksum; resume from another checkpoint.")
    return json.loads((path / STATE).read_text())
