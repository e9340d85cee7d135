"""EleutherAI's lm-evaluation-harness runs a saved tiny-decoder folder through its `hf` backend on a
local task (loglikelihood: pick the story's ending; generate_until: continue a sentence), and its
numbers equal ours computed directly."""

import json

import pytest
import torch

from conftest import small_config

pytestmark = pytest.mark.slow  # subprocesses / whole runs

lm_eval = pytest.importorskip("lm_eval")

ENDINGS = [
    ("Lily found a red ball.", [" She played with it.", " The moon ate a chair.", " Blue sleeps loudly."], 0),
    ("Tom saw a big tree.", [" Cake runs under forks.", " He climbed the tree.", " Rain sings the door."], 1),
    ("Mia had some cake.", [" Stones fly to soup.", " The sky is a spoon.", " She shared the cake."], 2),
    ("Ben lost a little boat.", [" He looked for the boat.", " Trees drink the moon.", " A chair ran away."], 0),
]
CONTINUE = [("Lily saw", "."), ("Tom found a", "."), ("Mia liked the", ".")]


def write_tasks(root):
    (root / "endings.jsonl").write_text(
        "".join(json.dumps({"context": c, "endings": e, "label": y}) + "\n" for c, e, y in ENDINGS)
    )
    (root / "continue.jsonl").write_text("".join(json.dumps({"context": c, "target": t}) + "\n" for c, t in CONTINUE))
    (root / "story_endings.yaml").write_text(f"""task: story_endings
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / "endings.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
""")
    (root / "story_continue.yaml").write_text(f"""task: story_continue
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / "continue.jsonl"}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
""")


@torch.no_grad()
def continuation_loglikelihood(model, tok, context, continuation):
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
    return sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole)))


def test_harness_runs_our_folder_and_agrees_with_our_numbers(tmp_path, tiny_tokenizer):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import tiny_decoder  # noqa: F401  (registers the Auto classes for the hf backend)
    from tiny_decoder import TinyDecoderForCausalLM

    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=64)).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    write_tasks(tmp_path)
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={folder},dtype=float32",
        tasks=["story_endings", "story_continue"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        device="cpu",
        batch_size=2,
        log_samples=True,
    )
    samples = {s["doc_id"]: s for s in out["samples"]["story_endings"]}
    correct = 0
    for i, (context, endings, label) in enumerate(ENDINGS):
        ours = [continuation_loglikelihood(model, tiny_tokenizer, context, e) for e in endings]
        theirs = [r[0][0] for r in samples[i]["resps"]]
        assert theirs == pytest.approx(ours, abs=1e-4)
        correct += int(max(range(3), key=ours.__getitem__) == label)
    assert out["results"]["story_endings"]["acc,none"] == pytest.approx(correct / len(ENDINGS))

    for s in out["samples"]["story_continue"]:
        context = CONTINUE[s["doc_id"]][0]
        ids = tiny_tokenizer(context, add_special_tokens=False, return_tensors="pt")["input_ids"]
        gen = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tiny_tokenizer.pad_token_id,
            eos_token_id=tiny_tokenizer.eos_token_id,
        )
        text = tiny_tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).split(".")[0]
        assert s["resps"][0][0] == text
