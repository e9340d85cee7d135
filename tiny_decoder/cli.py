"""What every command in scripts/ shares: arguments from a file and/or flags, one-line errors. It imports nothing
of the package, so any floor may use it; the training scripts' entry is in commands.py."""

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
