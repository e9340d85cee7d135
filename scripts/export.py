"""Export a trained tiny-decoder to a format other runtimes read.

    python scripts/export.py --model_name_or_path runs/tiny --format hf --output_dir runs/tiny-llama

    python scripts/export.py --model_name_or_path runs/tiny --format gguf --outtype q8_0 --output_dir runs/tiny-gguf
    python scripts/export.py --model_name_or_path runs/tiny --format onnx --output_dir runs/tiny-onnx

`--format hf` (or `llama`): a plain LlamaForCausalLM folder - Qwen3ForCausalLM for a model with qk_norm -
(safetensors, config, generation config, tokenizer, card) that loads with zero custom code. `--format gguf`: one llama.cpp file (`llama` architecture, tokenizer inside) in
f32, f16 or q8_0. `--format onnx`: model.onnx, a decoder with past keys and values (ONNX Runtime), with the
tokenizer. A config Llama cannot express is refused for llama/gguf, naming every field that blocks it.
"""

import json
import sys
from dataclasses import dataclass, field

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.export.gguf import OUTTYPES, export_gguf_folder
from tiny_decoder.export.llama import export_llama_folder
from tiny_decoder.export.onnx import export_onnx_folder

FORMATS = ("hf", "llama", "gguf", "onnx")  # "llama": the name "hf" had before Qwen3; the same export


@dataclass
class ExportArguments:
    model_name_or_path: str = field(metadata={"help": "A saved tiny-decoder folder (or Hub name)."})
    output_dir: str = field(metadata={"help": "The folder to write (refused if it holds anything but an earlier export)."})
    format: str = field(default="hf", metadata={"help": f"One of {list(FORMATS)} (hf and llama: the same export)."})
    outtype: str = field(default="f32", metadata={"help": f"GGUF weights: one of {list(OUTTYPES)}."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an earlier export in output_dir."})

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"--format {self.format!r} is not available; choose one of {list(FORMATS)}.")
        if self.outtype not in OUTTYPES:
            raise ValueError(f"--outtype {self.outtype!r} is not a GGUF type written here; choose one of {list(OUTTYPES)}.")
        if self.format != "gguf" and self.outtype != "f32":
            raise ValueError(f"--outtype {self.outtype} is for --format gguf; --format {self.format} keeps the weights as saved.")


def main(argv=None):
    (args,) = parse_args((ExportArguments,), sys.argv[1:] if argv is None else argv)
    if args.format == "gguf":
        path = export_gguf_folder(args.model_name_or_path, args.output_dir, args.outtype, args.overwrite_output_dir)
        print(f"wrote {path} (GGUF, llama architecture, {args.outtype}, tokenizer inside)")
        return path
    if args.format == "onnx":
        path = export_onnx_folder(args.model_name_or_path, args.output_dir, args.overwrite_output_dir)
        print(f"wrote {path} (a decoder with past keys and values for ONNX Runtime) and the tokenizer")
        return path
    folder = export_llama_folder(args.model_name_or_path, args.output_dir, args.overwrite_output_dir)
    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    print(f"wrote a {arch} folder to {folder} (loads with no custom code)")
    return folder


if __name__ == "__main__":
    run_command(main)
