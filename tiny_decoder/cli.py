"""What every command in scripts/ shares: arguments from a file and/or flags, one-line errors."""

import dataclasses
import sys

from transformers import HfArgumentParser


def parse_args(dataclass_types, argv: list[str]) -> tuple:
    """`cmd args.json|args.yaml [--flag value ...]` (flags override the file) or `cmd --flag value ...`."""
    parser = HfArgumentParser(dataclass_types)
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        loader = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        base = loader(argv[0])
        if len(argv) == 1:
            return base
        parser.set_defaults(**{k: v for d in base for k, v in dataclasses.asdict(d).items()})
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(argv)


def run_command(main) -> None:
    """Run a script's main(); bad input (DataError, CheckpointError, bad arguments, missing files) exits with
    one line, and so does Ctrl-C (exit status 130, as a shell reports an interrupted command)."""
    try:
        main()
    except (ValueError, OSError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt as err:
        print(f"\n{err or 'interrupted; complete checkpoints already in output_dir are kept (resume with --resume_from_checkpoint latest)'}",
              file=sys.stderr)
        sys.exit(130)
