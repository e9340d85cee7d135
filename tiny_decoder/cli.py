"""What every command in scripts/ shares: arguments from a file and/or flags, one-line errors."""

import dataclasses
import sys

from transformers import HfArgumentParser


def parse_args(dataclass_types, argv: list[str]) -> tuple:
    """`cmd args.json|args.yaml [--flag value ...]` (flags override the file) or `cmd --flag value ...`."""
    parser = HfArgumentParser(dataclass_types)
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        loader = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        if len(argv) == 1:
            return loader(argv[0])
        # The file's values become defaults for the flags (checked only once the flags are in: a required
        # argument may come from either).
        values = _read_file(argv[0])
        known = {f.name for d in dataclass_types for f in dataclasses.fields(d)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown argument(s) {unknown}; `--help` lists them.")
        parser.set_defaults(**values)
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(argv)


def check_finite(arguments) -> None:
    """Every float field of an argument dataclass is a finite number (inf and nan make no sense in any of them)."""
    import math

    for f in dataclasses.fields(arguments):
        value = getattr(arguments, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{f.name} {value} is not a finite number; give a finite value.")


def check_output_file(path: str | None, flag: str = "output_json") -> None:
    """A file the script will write at the end: its folder must exist now, not after the work is done."""
    from pathlib import Path

    if path is None:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"--{flag} {path!r} is a folder; give a file name.")
    if not target.parent.is_dir():
        raise ValueError(
            f"--{flag} {path!r}: the folder {str(target.parent)!r} does not exist; create it or choose another path."
        )


def looks_local(name: str) -> bool:
    """A Hub id is `owner/name` or a bare `name` (`gpt2`); anything else (absolute, relative, several slashes) is
    meant as a path, and so is `owner/name` whose `owner` is a folder here (runs/tinyy: a mistyped run folder)."""
    from pathlib import Path

    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return True
    return name.count("/") == 1 and Path(name.split("/")[0]).is_dir()


def hub_id(name: str | None) -> str | None:
    """`name` when it names a Hub model, None for a path of this machine (cards' `base_model` must not leak one)."""
    from pathlib import Path

    return name if name and not (Path(name).expanduser().exists() or looks_local(name)) else None


def check_model_source(value: str, flag: str = "model_name_or_path", needs: str = "config.json and model.safetensors") -> None:
    """The one check of a model given on a command line, before any work: a local folder must be a saved
    model folder, a path that looks local must exist, and a Hub name needs the Hub (offline: said at once)."""
    from pathlib import Path

    from .data import hub_is_reachable

    path = Path(value).expanduser()
    give = f"give a folder written by save_pretrained (with {needs})"
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"--{flag} {value!r} is a folder without config.json: not a saved model folder; {give}.")
    if path.exists():
        return
    if looks_local(value):
        raise ValueError(f"--{flag} {value!r} does not exist; {give}.")
    if not hub_is_reachable():
        raise ValueError(
            f"--{flag} {value!r} does not exist here, and the Hub cannot be reached to look it up as a model id; "
            f"{give}, or go online."
        )


def _read_file(path: str) -> dict:
    import json
    from pathlib import Path

    text = Path(path).read_text()
    if path.endswith(".json"):
        return json.loads(text)
    import yaml

    return yaml.safe_load(text) or {}


def run_command(main) -> None:
    """Run a script's main(); bad input (DataError, CheckpointError, bad arguments, missing files) exits with
    one line, and so does Ctrl-C (exit status 130, as a shell reports an interrupted command)."""
    try:
        main()
    except (ValueError, OSError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt as err:
        print(
            f"\n{err or 'interrupted; complete checkpoints already in output_dir are kept (resume with --resume_from_checkpoint latest)'}",
            file=sys.stderr,
        )
        sys.exit(130)
