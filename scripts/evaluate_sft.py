"""Base vs fine-tuned on held-out instructions: requested words present, and the assistant-token loss.

    python scripts/evaluate_sft.py --base_model runs/tiny --sft_model runs/tiny-sft --dataset_path runs/instruct

Uses the "Write a story that uses the words: ..." conversations of validation.jsonl (stories the base
never trained on when it was trained on the corpus's train split). The base has no chat template, so
it is measured twice: with the template and the role tokens added at their mean embedding (exactly
where fine-tuning starts), and with the instruction as plain text after an EOS (how one would prompt
a base model). Answers are sampled with a fixed seed.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tiny_decoder.cli import check_output_file, parse_args, run_command
from tiny_decoder.data.chat import add_chat_template, load_conversations
from tiny_decoder.data.instructions import words_present
from tiny_decoder.data.tokenizer import load_tokenizer
from tiny_decoder.io.sources import check_model_source
from tiny_decoder.training.objectives import CausalLMObjective
from tiny_decoder.training.objectives.sft import SFTObjective, assistant_loss, generate_answers


@dataclass
class EvalArguments:
    base_model: str = "runs/tiny"
    sft_model: str = "runs/tiny-sft"
    dataset_path: str = "runs/instruct"
    num_prompts: int = 100
    block_size: int = 256
    max_new_tokens: int = 200
    seed: int = 0
    num_examples: int = 3
    output_json: str | None = field(default=None, metadata={"help": "Also write the table and examples here."})

    def __post_init__(self):
        check_output_file(self.output_json)
        for name in ("num_prompts", "block_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 1.")
        if self.num_examples < 0:
            raise ValueError(f"--num_examples {self.num_examples} must be >= 0.")


def check_models(args) -> None:
    """Both models exist, and the SFT model is the fine-tuned one: scripts/sft.py saves a chat template with it."""
    check_model_source(args.base_model, "base_model")
    check_model_source(args.sft_model, "sft_model")
    base_chat, sft_chat = (bool(getattr(load_tokenizer(m), "chat_template", None)) for m in (args.base_model, args.sft_model))
    if not sft_chat:
        swapped = " (it looks swapped with --base_model, which has one)" if base_chat else ""
        raise ValueError(
            f"--sft_model {args.sft_model!r} has no chat template, so it was not fine-tuned by scripts/sft.py{swapped}; "
            f"pass the base model as --base_model and the fine-tuned one as --sft_model."
        )
    if not (Path(args.dataset_path) / "validation.jsonl").is_file():
        raise ValueError(
            f"--dataset_path {args.dataset_path!r} has no validation.jsonl; scripts/build_instructions.py makes one."
        )


def words_conversations(path: Path, n: int):
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    load_conversations(str(path))  # the same checks as training
    return [r for r in records if r.get("task") == "words" and r.get("words")][:n]


def main(argv=None):
    from transformers import AutoModelForCausalLM

    argv = sys.argv[1:] if argv is None else argv
    (args,) = parse_args((EvalArguments,), argv)
    check_models(args)
    records = words_conversations(Path(args.dataset_path) / "validation.jsonl", args.num_prompts)
    if not records:
        raise ValueError(
            f"{args.dataset_path}/validation.jsonl has no 'uses the words' conversations (scripts/build_instructions.py makes them)."
        )
    instructions = [r["messages"][0]["content"] for r in records]
    conversations = [r["messages"] for r in records]

    def chat_prompts(tok):
        return [SFTObjective().prompt_ids(tok, t) for t in instructions]

    rows, examples = [], {}
    base_tok = load_tokenizer(args.base_model)
    base = AutoModelForCausalLM.from_pretrained(args.base_model).eval()
    plain = [CausalLMObjective().prompt_ids(base_tok, t + "\n") for t in instructions]
    plain_answers = generate_answers(base, base_tok, plain, args.max_new_tokens, args.seed)
    add_chat_template(base_tok)
    torch.manual_seed(args.seed)
    base.resize_token_embeddings(len(base_tok), mean_resizing=True)
    for name, model, tok, answers in (
        ("base, plain-text prompt", base, base_tok, plain_answers),
        ("base + chat template (SFT's start)", base, base_tok, None),
        ("fine-tuned (SFT)", AutoModelForCausalLM.from_pretrained(args.sft_model).eval(), load_tokenizer(args.sft_model), None),
    ):
        answers = (
            answers if answers is not None else generate_answers(model, tok, chat_prompts(tok), args.max_new_tokens, args.seed)
        )
        score = sum(words_present(a, r["words"]) for a, r in zip(answers, records)) / len(records)
        loss = assistant_loss(model, tok, conversations, args.block_size) if "plain" not in name else None
        rows.append({"model": name, "words_present": score, "assistant_loss": loss})
        examples[name] = [{"instruction": i, "answer": a} for i, a in zip(instructions[: args.num_examples], answers)]
    print(f"\n{len(records)} held-out instructions, answers sampled (top-k 50, top-p 0.95, seed {args.seed})\n")
    print("| model | requested words present | assistant-token loss |\n|---|---|---|")
    for r in rows:
        loss = f"{r['assistant_loss']:.3f}" if r["assistant_loss"] is not None else "(same model as below)"
        print(f"| {r['model']} | {r['words_present']:.1%} | {loss} |")
    for name, exs in examples.items():
        print(f"\n### {name}")
        for e in exs:
            print(f"\n> {e['instruction']}\n\n{e['answer'].strip()}")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps({"rows": rows, "examples": examples}, indent=2))
    return rows


if __name__ == "__main__":
    run_command(main)
