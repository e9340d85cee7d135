"""Write a Hugging Face Space folder for the demo page: app.py, the tiny_decoder package, requirements.txt and a
README whose metadata makes it a Gradio Space serving the given Hub models.

    .venv/bin/python scripts/build_space.py --model user/tiny-stories --output_dir runs/space
    hf upload user/tiny-stories-demo runs/space . --repo-type space     # online; creates the Space if needed

The Space reads its models from models.txt (one Hub id per line; TINY_DECODER_MODELS overrides it). Models must
be on the Hub: a Space cannot read this machine's folders.
"""

import shutil
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from tiny_decoder.cli import parse_args

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "huggingface-hub", "matplotlib", "datasets")


@dataclass
class SpaceArguments:
    model: list[str] = field(default_factory=list, metadata={"help": "Hub ids the Space serves (space-separated)."})
    output_dir: str = field(default="runs/space", metadata={"help": "The Space folder to write."})
    title: str = "tiny-decoder demo"
    overwrite_output_dir: bool = False

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model is required: the Hub id(s) of pushed models (`make train` + --push_to_hub true).")
        local = [m for m in self.model if Path(m).exists() or m.startswith((".", "/", "~"))]
        if local:
            raise ValueError(f"--model {local[0]!r} is a local path; a Space loads models from the Hub: push it and give its id.")


def main(argv=None):
    (args,) = parse_args((SpaceArguments,), argv)
    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / "app.py").exists():
            raise ValueError(f"--output_dir {out} holds other files; give an empty or new folder.")
        if not args.overwrite_output_dir:
            raise ValueError(f"--output_dir {out} holds a Space folder already; pass --overwrite_output_dir true to replace it.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "app.py", out / "app.py")
    shutil.copytree(ROOT / "tiny_decoder", out / "tiny_decoder", ignore=shutil.ignore_patterns("__pycache__"))
    (out / "models.txt").write_text("\n".join(args.model) + "\n")
    pins = [f"{name}=={version(name)}" for name in REQUIREMENTS]
    (out / "requirements.txt").write_text("\n".join(pins) + "\n")
    (out / "README.md").write_text(
        "---\n"
        f"title: {args.title}\n"
        "sdk: gradio\n"
        f"sdk_version: {version('gradio')}\n"
        "app_file: app.py\n"
        "models:\n" + "".join(f"  - {m}\n" for m in args.model) + "tags:\n  - tiny-decoder\n  - tinystories\n---\n\n"
        f"# {args.title}\n\nWrite with {', '.join(args.model)}; see each token's probability, the top-5 alternatives "
        "and the attention heads. Built by tiny-decoder's scripts/build_space.py.\n"
    )
    print(f"wrote {out}; push it with: hf upload <user>/<space-name> {out} . --repo-type space")


if __name__ == "__main__":
    main()
