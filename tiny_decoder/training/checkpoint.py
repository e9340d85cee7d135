"""Training checkpoints: written whole or not at all, checked before they are loaded, and the
same whatever wrapped the model while it trained.

A checkpoint is `accelerator.save_state` (model as safetensors, optimizer, scheduler, RNG of
every process) plus `trainer_state.json` (step, data position, when it was written), written
under a temporary name and renamed once complete. `manifest.json` lists every file with its
size and sha256, so a missing, truncated or altered file is refused with its name instead of
failing inside torch.

The model file holds the plain module's parameter names: no `_orig_mod.` (torch.compile) or
`module.` (DDP) prefix, and no second copy of a tied head. So a checkpoint written with
`--torch_compile` resumes without it and the other way round, and one written by N processes
resumes in one (see `install_state_hooks`).
"""

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from ..io.run_dir import default_modes, write_failure

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_WRAPPERS = ("_orig_mod.", "module.")  # torch.compile and DDP put these in front of every name


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def plain_name(name: str) -> str:
    """'module._orig_mod.model.norm.weight' -> 'model.norm.weight'."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPERS:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def plain_state_dict(state: dict, module) -> dict:
    """A state dict under the module's own names, without the tied head's second copy."""
    tied = getattr(module, "_tied_weights_keys", None) or {}
    tie = getattr(getattr(module, "config", None), "tie_word_embeddings", False)
    plain = {plain_name(k): v for k, v in state.items()}
    return {k: v for k, v in plain.items() if not (tie and k in tied)}


def install_state_hooks(accelerator) -> None:
    """Make accelerate save and load the model under its plain parameter names.

    Saving: strip the wrappers' prefixes and drop tied copies (the head shares the embedding).
    Loading: read the file ourselves into the unwrapped module, accepting prefixed names from
    files written before this existed, and tell accelerate the model is done.
    """

    def save_hook(models, weights, output_dir):
        for i, (model, state) in enumerate(zip(models, weights)):
            weights[i] = plain_state_dict(state, accelerator.unwrap_model(model, keep_torch_compile=False))

    def load_hook(models, input_dir):
        from safetensors.torch import load_file

        for i, model in enumerate(list(models)):
            path = Path(input_dir) / (MODEL_FILE if i == 0 else f"model_{i}.safetensors")
            if not path.exists():
                continue  # not ours (e.g. a .bin from elsewhere): leave it to accelerate
            module = accelerator.unwrap_model(model, keep_torch_compile=False)
            state = {plain_name(k): v for k, v in load_file(str(path), device="cpu").items()}
            missing, unexpected = module.load_state_dict(state, strict=False)
            tied = set(getattr(module, "_tied_weights_keys", None) or {})
            missing = [k for k in missing if k not in tied]
            if missing or unexpected:
                raise CheckpointError(
                    f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}. "
                    f"Resume with the architecture arguments the checkpoint was written with."
                )
            models.remove(model)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(
    accelerator, output_dir: str, state: dict, save_total_limit: int | None = None, model=None, savers=()
) -> Path:
    """checkpoint-STEP: accelerate's state, `savers` (each called with the folder on the main process: the config
    and tokenizer, so the checkpoint opens with from_pretrained), trainer_state.json and the manifest; renamed
    into place once complete."""
    final = Path(output_dir) / f"checkpoint-{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        _write_checkpoint(accelerator, tmp, state, model, savers)
    except (OSError, RuntimeError) as err:  # a full disk, most often: no half-written folder stays behind
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"checkpoint-{state['step']}: {write_failure(err, Path(output_dir), _expected_size(output_dir, model))}"
        ) from None
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if save_total_limit:
            # Newest-written last: a checkpoint this run just wrote is never rotated away in favour of
            # a higher-numbered one left by an abandoned branch (a resume from an earlier checkpoint).
            for old in list_checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _expected_size(output_dir: str, model) -> int | None:
    """Bytes a checkpoint takes: the newest complete one's, else the weights and two AdamW moments (fp32)."""
    found = list_checkpoints(output_dir)
    if found:
        return sum(p.stat().st_size for p in found[-1].rglob("*") if p.is_file())
    if model is None:
        return None
    return 3 * 4 * sum(p.numel() for p in model.parameters())


def _write_checkpoint(accelerator, tmp: Path, state: dict, model, savers) -> None:
    """Everything of a checkpoint into `tmp`, the manifest last (it is what makes a checkpoint complete)."""
    accelerator.save_state(str(tmp), safe_serialization=True)
    if model is not None and accelerator.distributed_type == "FSDP":
        # FSDP writes sharded files; also gather the whole model (a collective) so one process can load it.
        from safetensors.torch import save_file

        full = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            save_file(
                {
                    k: v.contiguous()
                    for k, v in plain_state_dict(full, accelerator.unwrap_model(model, keep_torch_compile=False)).items()
                },
                str(tmp / MODEL_FILE),
                metadata={"format": "pt"},
            )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for save in savers:
            save(str(tmp))
        (tmp / STATE).write_text(json.dumps({**state, "saved_at": time.time()}, indent=2))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        default_modes(tmp)


def _saved_at(path: Path) -> float:
    try:
        return float(json.loads((path / STATE).read_text()).get("saved_at", 0.0))
    except (OSError, ValueError, AttributeError):
        return 0.0


def list_checkpoints(output_dir: str) -> list[Path]:
    """Complete checkpoints (with a manifest), in the order they were written (oldest first)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(_saved_at(p), int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / MANIFEST).exists()]
    return [p for *_, p in sorted(found)]


def resolve_checkpoint(spec: str, output_dir: str) -> Path:
    """'latest' -> the complete checkpoint written last in output_dir; otherwise the folder given."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"resume_from_checkpoint='latest' but {output_dir!r} holds no complete checkpoint-N folder.")
        return found[-1]
    return Path(spec)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint file {str(path)!r} is unreadable or not valid JSON ({err}); resume from another checkpoint."
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint file {str(path)!r} does not hold a JSON object; resume from another checkpoint.")
    return data


def verify_checkpoint(path: Path) -> dict:
    """Check every file against the manifest; return the trainer state."""
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    if not (path / MANIFEST).exists():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has no {MANIFEST}: it was not written completely (or not by this trainer). "
            f"Resume from an earlier checkpoint."
        )
    manifest = _read_json(path / MANIFEST)
    for name, meta in manifest.items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"Checkpoint {str(path)!r} is missing {name}; resume from another checkpoint.")
        if not isinstance(meta, dict) or "size" not in meta or "sha256" not in meta:
            raise CheckpointError(
                f"Checkpoint file {str(path / MANIFEST)!r} is damaged (entry {name!r}); resume from another checkpoint."
            )
        if f.stat().st_size != meta["size"]:
            raise CheckpointError(
                f"Checkpoint file {str(f)!r} is truncated or changed ({f.stat().st_size} bytes, expected {meta['size']}); "
                f"resume from another checkpoint."
            )
        if _sha256(f) != meta["sha256"]:
            raise CheckpointError(f"Checkpoint file {str(f)!r} does not match its checksum; resume from another checkpoint.")
    state = _read_json(path / STATE)
    missing = [k for k in ("step", "epoch", "batch_in_epoch", "tokens") if k not in state]
    if missing:
        raise CheckpointError(f"Checkpoint file {str(path / STATE)!r} lacks {missing}; resume from another checkpoint.")
    return state
