"""Perplexity: a uniform model scores the vocabulary size, our number equals a hand computation, sliding
windows give each token the context the definition says, the evaluate metric and the script agree."""

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import ROOT, generated_documents, run_script, small_config
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.evaluation.perplexity import perplexity, windows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=128)).eval()
    d = tmp_path_factory.mktemp("ppl-model")
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


def load(d):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)


def test_uniform_model_has_perplexity_equal_to_the_vocabulary_size(model_dir):
    model, tok = load(model_dir)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: the uniform distribution
    result = perplexity(model, tok, generated_documents(5))
    assert result.perplexity == pytest.approx(model.config.vocab_size, rel=1e-5)


def test_perplexity_equals_a_hand_computation(model_dir):
    model, tok = load(model_dir)
    texts = generated_documents(7, seed=3)
    nll, n = 0.0, 0
    for text in texts:  # one text at a time, no padding, no batching: the definition
        ids = tok(text)["input_ids"]
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        nll -= sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)))
        n += len(ids) - 1
    got = perplexity(model, tok, texts, batch_size=3)
    assert got.tokens == n and got.texts == 7
    assert got.loss == pytest.approx(nll / n, rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert len(got.perplexities) == 7


def test_stride_changes_nothing_when_texts_fit_the_context(model_dir):
    model, tok = load(model_dir)
    texts = generated_documents(6, seed=4)
    plain = perplexity(model, tok, texts)
    for stride in (1, 7, 64):
        assert perplexity(model, tok, texts, stride=stride).loss == pytest.approx(plain.loss, rel=1e-6)


def test_sliding_window_gives_each_token_its_last_max_length_tokens_as_context(model_dir):
    """stride 1: token t is predicted from exactly the min(t, L - 1) tokens before it."""
    model, tok = load(model_dir)
    text = " ".join(generated_documents(12, seed=9))
    ids = tok(text)["input_ids"]
    L = 12
    assert len(ids) > 3 * L
    nll = 0.0
    for t in range(1, len(ids)):
        ctx = ids[max(0, t - L + 1) : t + 1]
        logp = torch.log_softmax(model(torch.tensor([ctx])).logits[0, -2].double(), -1)
        nll -= logp[ids[t]].item()
    got = perplexity(model, tok, [text], max_length=L, stride=1, batch_size=16)
    assert got.tokens == len(ids) - 1
    assert got.loss == pytest.approx(nll / (len(ids) - 1), rel=1e-5)


def test_windows_score_every_token_once():
    ids = list(range(100))
    for L, stride in ((16, 4), (16, 15), (10, 1)):
        scored = [t for w, lab in windows(ids, L, stride) for t in lab[1:] if t != -100]
        assert scored == ids[1:]
    chunks = windows(ids, 10, 10)  # disjoint chunks: each chunk's first token has no context
    assert sum(1 for _, lab in chunks for t in lab[1:] if t != -100) == 100 - 10


def test_bad_input_is_named(model_dir, tmp_path):
    model, tok = load(model_dir)
    with pytest.raises(ValueError, match="more than the context of 128.*--stride"):
        perplexity(model, tok, [" ".join(generated_documents(40))])
    with pytest.raises(ValueError, match="No text to score"):
        perplexity(model, tok, ["", "  "])
    with pytest.raises(ValueError, match="stride=0"):
        windows(list(range(100)), 10, 0)
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ValueError, match="not a saved model folder"):
        run_script("evaluate_model", ["--model_name_or_path", str(tmp_path / "notamodel"), "--dataset_path", str(tmp_path)])


def test_evaluate_metric_loads_by_path_and_matches_the_library(model_dir):
    import evaluate

    metric = evaluate.load(str(ROOT / "metrics" / "perplexity"))
    texts = generated_documents(5, seed=2)
    out = metric.compute(predictions=texts, model_id=str(model_dir), batch_size=2)
    model, tok = load(model_dir)
    want = perplexity(model, tok, texts)
    assert out["perplexity"] == pytest.approx(want.perplexity, rel=1e-6)
    assert out["perplexities"] == pytest.approx(want.perplexities, rel=1e-6)
    assert out["mean_perplexity"] == pytest.approx(sum(want.perplexities) / 5, rel=1e-6)


def test_script_prints_and_writes_numbers_and_samples(model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    texts = generated_documents(20, seed=6)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:10]))
    (data / "validation.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[10:]))
    out = tmp_path / "ppl.json"
    result = run_script(
        "evaluate_model",
        ["--model_name_or_path", str(model_dir), "--dataset_path", str(data), "--max_new_tokens", "5", "--output_json", str(out)],
    )
    report = json.loads(Path(out).read_text())
    model, tok = load(model_dir)
    assert report["perplexity"] == pytest.approx(perplexity(model, tok, texts[10:]).perplexity, rel=1e-6)
    assert report["texts"] == 10 and len(report["samples"]) == 2 and report["samples"][0]["text"]
    assert f"{result.perplexity:.2f}" in capsys.readouterr().out


def test_write_card_adds_the_numbers_and_a_model_index_the_hub_parser_reads(model_dir, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- tiny-decoder\n---\n\n# tiny\n\n## Training\n\ntext\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "validation.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in generated_documents(8, seed=1)))
    (data / "train.jsonl").write_text(json.dumps({"text": "Lily saw a cat."}) + "\n")
    argv = ["--model_name_or_path", str(folder), "--dataset_path", str(data), "--max_new_tokens", "4", "--write_card", "true"]
    result = run_script("evaluate_model", argv)
    run_script("evaluate_model", argv)  # a second run replaces the section, it does not add another
    text = (folder / "README.md").read_text()
    assert text.count("## Evaluation") == 1 and "## Training" in text and f"| {result.perplexity:.2f} |" in text
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and "tiny-decoder" in card.data.tags
    [entry] = card.data.eval_results
    assert entry.metric_type == "perplexity" and entry.metric_value == pytest.approx(result.perplexity, abs=1e-3)


def test_any_transformers_causal_lm_folder_works(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    ).eval()
    llama.save_pretrained(tmp_path / "llama")
    tiny_tokenizer.save_pretrained(tmp_path / "llama")
    data = tmp_path / "data"
    data.mkdir()
    texts = generated_documents(6, seed=12)
    (data / "validation.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (data / "train.jsonl").write_text(json.dumps({"text": "Tom saw a boat."}) + "\n")
    result = run_script(
        "evaluate_model", ["--model_name_or_path", str(tmp_path / "llama"), "--dataset_path", str(data), "--max_new_tokens", "3"]
    )
    assert result.perplexity == pytest.approx(perplexity(llama, tiny_tokenizer, texts).perplexity, rel=1e-6)
    assert 1 < result.perplexity < 10 * len(tiny_tokenizer)


def test_a_plain_text_file_is_scored_with_a_stride(model_dir, tmp_path):
    story = " ".join(generated_documents(30, seed=13))
    (tmp_path / "stories.txt").write_text(story)
    result = run_script(
        "evaluate_model",
        [
            "--model_name_or_path",
            str(model_dir),
            "--dataset_path",
            str(tmp_path / "stories.txt"),
            "--stride",
            "64",
            "--max_new_tokens",
            "3",
        ],
    )
    model, tok = load(model_dir)
    assert result.texts == 1 and result.tokens == len(tok(story)["input_ids"]) - 1
