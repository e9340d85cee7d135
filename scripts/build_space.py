"""Write a Hugging Face Space folder for the demo page: app.py, the tiny_decoder package, requirements.txt and a
README whose metadata makes it a Gradio Space serving the given Hub models.

    .venv/bin/python scripts/build_space.py --model user/tiny-stories --output_dir runs/space
    hf upload user/tiny-stories-demo runs/space . --repo-type space     # online; creates the Space if needed

The Space reads its models from models.txt (one Hub id per line; TINY_DECODER_MODELS overrides it) and offers only
those. Models must be on the Hub: a Space cannot read this machine's folders, so local paths are refused.

requirements.txt pins this environment's versions without local labels (`torch==2.13.0`, not `2.13.0+cpu`, which
only the PyTorch index has): pip on the Space then takes PyPI's Linux wheel of torch, which carries CUDA libraries
and runs on CPU hardware too. `--cpu_torch true` puts PyTorch's CPU index first instead (a smaller image: pip
prefers its `+cpu` build of the same version). app.py binds to GRADIO_SERVER_NAME, which a Space sets to 0.0.0.0.

The folder is this script's own: it writes a marker (.tiny-decoder-space.json, the files it wrote) and later
replaces only those files; a folder holding anything it did not write is refused, naming what is in the way.
"""

import json
import sys
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.io.sources import looks_local

ROOT = Path(__file__).resolve().parent.parent
MARKER = ".tiny-decoder-space.json"
REQUIREMENTS = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "huggingface-hub", "matplotlib", "datasets")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class SpaceArguments:
    model: list[str] = field(default_factory=list, metadata={"help": "Hub ids the Space serves (space-separated)."})
    output_dir: str = field(default="runs/space", metadata={"help": "The Space folder to write."})
    title: str = "tiny-decoder demo"
    cpu_torch: bool = field(default=False, metadata={"help": f"Take torch from PyTorch's CPU index ({CPU_INDEX})."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a Space folder this script wrote."})

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model is required: the Hub id(s) of pushed models (`make train` + --push_to_hub true).")
        local = [m for m in self.model if Path(m).expanduser().exists() or looks_local(m)]
        if local:
            raise ValueError(
                f"--model {local[0]!r} is a local path; a Space loads models from the Hub: push it "
                f"(--push_to_hub true --hub_model_id you/name) and give its id."
            )


def pin(name: str) -> str:
    """name==version without a local label: `2.13.0+cpu` is a build only PyTorch's index has."""
    return f"{name}=={version(name).split('+')[0]}"


def folder_contents(out: Path) -> list[str]:
    """Every file and link under `out` (relative, sorted), the marker aside; folders only through their files."""
    found = [p for p in out.rglob("*") if p.is_file() or p.is_symlink()]
    return sorted(str(p.relative_to(out)) for p in found if p.name != MARKER or p.parent != out)


def written_before(out: Path) -> list[str] | None:
    """The files an earlier build wrote (from its marker), or None when the folder has no readable marker."""
    try:
        files = json.loads((out / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else None


def claim(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding anything this script did not write; with `overwrite`, delete what it wrote."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is a file; give a new or empty folder.")
    present = folder_contents(out) if out.is_dir() else []
    if not present and not (out / MARKER).exists():
        return
    ours = written_before(out)
    foreign = [f for f in present if ours is None or f not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"--output_dir {out} holds files build_space did not write ({shown}); nothing was changed. "
            f"Give a new or empty folder, or move them away."
        )
    if not overwrite:
        raise ValueError(f"--output_dir {out} holds a Space folder already; pass --overwrite_output_dir true to replace it.")
    root = out.resolve()
    for name in present:  # every one listed in the marker (nothing foreign is left at this point)
        path = out / name
        if path.resolve().parent.is_relative_to(root) and (path.is_file() or path.is_symlink()):
            path.unlink()
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()  # only folders the deleted files emptied: any other file stops this


def write_space(args: SpaceArguments, out: Path) -> list[str]:
    """The Space's files; returns their names relative to `out`."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "app.py", out / "app.py")
    shutil.copytree(ROOT / "tiny_decoder", out / "tiny_decoder", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    (out / "models.txt").write_text("\n".join(args.model) + "\n")
    requirements = ([f"--extra-index-url {CPU_INDEX}"] if args.cpu_torch else []) + [pin(n) for n in REQUIREMENTS]
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (out / "README.md").write_text(
        "---\n"
        f"title: {args.title}\n"
        "sdk: gradio\n"
        f"sdk_version: {version('gradio')}\n"
        f'python_version: "{sys.version_info.major}.{sys.version_info.minor}"\n'
        "app_file: app.py\n"
        "models:\n" + "".join(f"  - {m}\n" for m in args.model) + "tags:\n  - tiny-decoder\n  - tinystories\n---\n\n"
        f"# {args.title}\n\nWrite with {', '.join(args.model)}; see each token's probability, the top-5 alternatives "
        "and the attention heads. Only these models can be loaded. Built by tiny-decoder's scripts/build_space.py.\n"
    )
    return folder_contents(out)


def main(argv=None):
    (args,) = parse_args((SpaceArguments,), sys.argv[1:] if argv is None else argv)
    out = Path(args.output_dir).expanduser()
    claim(out, args.overwrite_output_dir)
    files = write_space(args, out)
    (out / MARKER).write_text(json.dumps({"files": files}, indent=1) + "\n")
    print(f"wrote {out}; push it with: hf upload <user>/<space-name> {out} . --repo-type space")
    return out


if __name__ == "__main__":
    run_command(main)
