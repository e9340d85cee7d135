"""Every script, as a user types it: `--help` works, and each bad value is refused before any work with one
line naming the flag (a table: script, arguments, the message). Runs in-process on tiny folders made here."""

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, generated_documents, run_script, small_config

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_working_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        run_script(name, ["--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_tokenizer):
    """A tiny saved model (and a linear-attention one), an "SFT" model with the chat template, story data, chat data."""
    from tiny_decoder import TinyDecoderForCausalLM
    from tiny_decoder.data.chat import add_chat_template

    root = tmp_path_factory.mktemp("scripts")
    for name, over in (("model", {}), ("linear", {"attention_type": "linear"})):
        torch.manual_seed(0)
        model = TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=32, **over))
        model.save_pretrained(root / name)
        tiny_tokenizer.save_pretrained(root / name)
    sft = root / "sft"
    model = TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer) + 8, max_position_embeddings=32))
    model.save_pretrained(sft)
    tok = tiny_tokenizer.__class__.from_pretrained(root / "model")
    add_chat_template(tok)
    tok.save_pretrained(sft)
    data = root / "data"
    data.mkdir()
    docs = generated_documents(60, seed=3)
    for split, part in (("train", docs[:50]), ("validation", docs[50:])):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
    chat = root / "chat"
    chat.mkdir()
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 42}]}
    for split in ("train", "validation"):
        (chat / f"{split}.jsonl").write_text(json.dumps(bad) + "\n")
    return root


def cases():
    # (script, arguments with {root} for the fixture folder, a regex of the one-line error)
    return [
        ("train", ["--learning_rate", "inf"], r"--learning_rate inf is not a finite number"),
        ("train", ["--dataset_path", "{root}/data", "--max_train_samples", "0"], r"--max_train_samples 0 must be >= 1"),
        ("train", ["--optim", "zeroth_order", "--zo_eps", "1e6"], r"zo_eps=1000000.0 must be in \(0, 1\]"),
        ("train", ["--model_name_or_path", "runs/tinyy"], r"--model_name_or_path 'runs/tinyy' does not exist"),
        ("distill", ["--teacher_name_or_path", "runs/nope"], r"--teacher_name_or_path 'runs/nope' does not exist"),
        ("distill", ["--teacher_name_or_path", "{root}/model", "--temperature", "inf"], r"--temperature inf is not a finite"),
        (
            "sft",
            [
                "--model_name_or_path",
                "{root}/model",
                "--dataset_path",
                "{root}/chat",
                "--output_dir",
                "{root}/out-sft",
                "--use_cpu",
                "true",
                "--report_to",
                "none",
            ],
            r"content of type int .*content must be a string",
        ),
        (
            "prune",
            [
                "--model_name_or_path",
                "{root}/model",
                "--target_params",
                "1e5",
                "--dataset_path",
                "{root}/data",
                "--output_dir",
                "{root}/out-prune",
                "--block_size",
                "16",
            ],
            r"target '1e5' \(100,000 parameters\) is not below",
        ),
        (
            "prune",
            [
                "--model_name_or_path",
                "{root}/model",
                "--target_params",
                "2.5",
                "--dataset_path",
                "{root}/data",
                "--output_dir",
                "{root}/out-prune2",
                "--block_size",
                "16",
            ],
            r"neither a fraction below 1 nor a whole",
        ),
        ("build_instructions", ["--n_words", "0"], r"--n_words 0 must be >= 1"),
        ("build_instructions", ["--words_within", "0"], r"--words_within 0 must be >= 1"),
        (
            "build_instructions",
            ["--n_words", "100", "--words_within", "200", "--dataset_path", "{root}/data", "--output_dir", "{root}/out-instruct"],
            r"'uses the words' task would be empty",
        ),
        ("evaluate_sft", ["--base_model", "{root}/nope"], r"--base_model '.*nope' does not exist"),
        ("evaluate_sft", ["--base_model", "{root}/model", "--sft_model", "{root}/model"], r"--sft_model .* has no chat template"),
        ("evaluate_sft", ["--base_model", "{root}/sft", "--sft_model", "{root}/model"], r"looks swapped with --base_model"),
        ("evaluate_sft", ["--num_prompts", "0"], r"--num_prompts 0 must be >= 1"),
        ("evaluate_sft", ["--num_prompts", "-3"], r"--num_prompts -3 must be >= 1"),
        ("evaluate_model", ["--model_name_or_path", "{root}/model", "--batch_size", "0"], r"--batch_size 0 must be >= 1"),
        ("evaluate_model", ["--model_name_or_path", "runs/tinyy"], r"'runs/tinyy' does not exist"),
        ("inspect_model", ["--model_name_or_path", "runs/tinyy"], r"'runs/tinyy' does not exist"),
        ("inspect_model", ["--model_name_or_path", "{root}/model", "--text", ""], r"--text is empty"),
        ("compare", ["--models", "runs/nope"], r"'runs/nope' does not exist"),
        ("compare", ["--models", "{root}/model", "--per_device_eval_batch_size", "0"], r"must be >= 1"),
        ("experiment", ["--variants", "nope"], r"--variants \['nope'\]: not variants"),
        ("zeroth_order_experiment", ["--settings", "nope", "--base_model", "{root}/model"], r"--settings \['nope'\]"),
        ("train_tokenizer", ["--dataset_path", "{root}/data", "--output_dir", "{root}/model"], r"holds files a tokenizer"),
    ]


@pytest.mark.parametrize("script,argv,message", cases(), ids=lambda x: x if isinstance(x, str) and " " not in x else None)
def test_bad_values_are_refused_with_the_flag_named(folders, script, argv, message):
    argv = [a.replace("{root}", str(folders)) for a in argv]
    start = time.time()
    with pytest.raises(ValueError, match=message):
        run_script(script, argv)
    assert time.time() - start < 20  # before any work (a mistyped path never waits for the Hub)


def test_inspecting_a_linear_attention_model_says_there_are_no_maps(folders, tmp_path, capsys):
    result = run_script("inspect_model", ["--model_name_or_path", str(folders / "linear"), "--output_dir", str(tmp_path)])
    assert result == {"stats": []} and "forms no attention weights" in capsys.readouterr().out
    assert (tmp_path / "parameters.md").exists() and not (tmp_path / "attention.png").exists()
    assert Path(tmp_path / "shapes.txt").read_text()


def adversarial_cases():
    """Found by an adversarial pass over every script: each once a traceback, a misleading
    line or work done before failing."""
    return [
        ("train", ["--config_overrides", "hidden_size=abc"], r"config_overrides hidden_size='abc': hidden_size takes a number"),
        ("train", ["--seed", "-1"], r"--seed -1 must be in \[0, 2\*\*32 - 1\]"),
        ("train", ["--output_dir", ""], r"--output_dir is empty"),
        ("compare", ["--models", "{root}/nope"], r"--models '.*nope' does not exist"),
        (
            "compare",
            ["--models", "{root}/model", "--output_json", "{root}/no/such/dir/x.json"],
            r"--output_json .* does not exist",
        ),
        (
            "evaluate_model",
            ["--model_name_or_path", "{root}/model", "--output_json", "{root}/no/dir/x.json"],
            r"folder .* does not exist",
        ),
        ("evaluate_sft", ["--output_json", "{root}/no/dir/x.json"], r"--output_json .*: the folder .* does not exist"),
        (
            "sft",
            [
                "--model_name_or_path",
                "{root}/model",
                "--dataset_path",
                "{root}/one_chat.jsonl",
                "--output_dir",
                "{root}/o",
                "--use_cpu",
                "true",
                "--report_to",
                "none",
            ],
            r"leaves the (validation|train) split empty",
        ),
    ]


@pytest.mark.parametrize(
    "script,argv,message", adversarial_cases(), ids=lambda x: x if isinstance(x, str) and " " not in x else None
)
def test_what_the_adversarial_pass_found_is_refused_in_one_line(folders, script, argv, message):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Once upon a time."}]}
    (folders / "one_chat.jsonl").write_text(json.dumps(chat) + "\n")
    argv = [a.replace("{root}", str(folders)) for a in argv]
    with pytest.raises(ValueError, match=message):
        run_script(script, argv)
