"""Look inside a saved model: its parameter table, the shapes of one forward, its attention maps.

    python scripts/inspect_model.py --model_name_or_path runs/tiny --output_dir runs/tiny-inspect
    python scripts/inspect_model.py --model_name_or_path runs/tiny --text "Lily saw a cat." --layers 0 3 --heads 0 1

Writes parameters.md, shapes.txt, attention.png, attention.html and attention_stats.json to --output_dir.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.evaluation.introspection import attention_maps, format_parameter_table, parameter_table, trace_shapes
from tiny_decoder.io.sources import check_model_source


@dataclass
class InspectArguments:
    model_name_or_path: str = field(metadata={"help": "A saved model folder."})
    output_dir: str = field(default="runs/inspect", metadata={"help": "Where the table, trace and pictures go."})
    text: str = "Once upon a time, Lily saw a little cat. She gave the cat some milk."
    layers: list[int] | None = field(default=None, metadata={"help": "Layers to draw (default: all)."})
    heads: list[int] | None = field(default=None, metadata={"help": "Heads to draw (default: all)."})
    trust_remote_code: bool = False

    def __post_init__(self):
        if not self.text.strip():
            raise ValueError("--text is empty: give a sentence to trace and draw attention for.")


def main(argv=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tiny_decoder  # noqa: F401  (registers the Auto classes)

    argv = sys.argv[1:] if argv is None else argv
    (args,) = parse_args((InspectArguments,), argv)
    check_model_source(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path, attn_implementation="eager", trust_remote_code=args.trust_remote_code
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = format_parameter_table(parameter_table(model))
    ids = tokenizer(args.text, return_tensors="pt")["input_ids"]
    shapes = trace_shapes(model, ids)
    (out / "parameters.md").write_text(table + "\n")
    (out / "shapes.txt").write_text(shapes + "\n")
    print(table, "\n", shapes, sep="\n")
    if getattr(model.config, "attention_type", "softmax") == "linear":
        print(
            f"\n{args.model_name_or_path} uses linear attention, which forms no attention weights: no attention maps "
            f"to draw (wrote {out}/parameters.md and shapes.txt)."
        )
        return {"stats": []}
    maps = attention_maps(model, tokenizer, args.text, out, args.layers, args.heads)
    print("\nmost focused heads (lowest entropy):")
    for s in sorted(maps["stats"], key=lambda s: s["entropy"])[:4]:
        st = s["strongest"]
        print(
            f"  layer {s['layer']} head {s['head']}: entropy {s['entropy']:.2f} nats, "
            f"{st['query_token']!r} -> {st['key_token']!r} ({st['weight']:.2f})"
        )
    print(f"\nwrote {out}/parameters.md, shapes.txt, attention.png, attention.html, attention_stats.json")
    return maps


if __name__ == "__main__":
    run_command(main)
