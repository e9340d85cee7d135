"""A training run never loses a user's work: reused folders, compiled checkpoints, finished and
interrupted runs, Ctrl-C, and the model card a run leaves behind."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, cli_args, metrics, run  # noqa: F401  (workdir is a conftest fixture)
from tiny_decoder.io.run_dir import OutputDirError
from tiny_decoder.training.checkpoint import list_checkpoints, plain_name


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_a_folder_holding_a_run_is_refused_and_nothing_in_it_changes(workdir, tmp_path):
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=4, save_steps=2))
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OutputDirError, match="already holds a training run.*--overwrite_output_dir.*--resume_from_checkpoint"):
        run(cli_args(workdir, out, max_steps=6, learning_rate=1e-3))
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_overwrite_output_dir_replaces_the_old_run_whole(workdir, tmp_path):
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=8, save_steps=2, save_total_limit=100))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8"]
    run(cli_args(workdir, out, max_steps=3, save_steps=3, overwrite_output_dir="true", config_overrides="hidden_size=32"))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]  # the old run's 2..8 are gone
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2, 3]
    assert weights(out)["model.embed_tokens.weight"].shape[1] == 32


def test_overwrite_never_deletes_files_a_run_does_not_write(workdir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(OutputDirError, match="notes.txt"):
        run(cli_args(workdir, out, overwrite_output_dir="true"))
    assert (out / "notes.txt").read_text() == "my notes"


def test_output_dir_that_is_a_file(workdir, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        run(cli_args(workdir, f))


def test_resuming_from_an_earlier_checkpoint_keeps_the_new_branch(workdir, tmp_path):
    """Rotation and 'latest' follow the order checkpoints were written in, not their step numbers:
    checkpoint-8 of the abandoned branch must not outlive what the resumed run writes."""
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=8, save_steps=2, save_total_limit=100))
    run(cli_args(workdir, out, max_steps=6, save_steps=1, save_total_limit=1, resume_from_checkpoint=str(out / "checkpoint-4")))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-6"]
    from tiny_decoder.training.checkpoint import resolve_checkpoint

    assert resolve_checkpoint("latest", str(out)).name == "checkpoint-6"
    # metrics.jsonl was cut back to step 4 before the resumed run appended: every step once
    assert [m["step"] for m in metrics(out) if "loss" in m] == list(range(1, 7))


def test_checkpoints_hold_plain_names_without_the_tied_copy(workdir, tmp_path):
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=2, save_steps=2))
    names = set(load_file(str(out / "checkpoint-2" / "model.safetensors")))
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    assert not any(n.startswith(("_orig_mod.", "module.")) for n in names)
    assert plain_name("module._orig_mod.model.norm.weight") == "model.norm.weight"


@pytest.mark.parametrize("first,then", [("true", "false"), ("false", "true")])
def test_compiled_and_plain_checkpoints_resume_either_way(workdir, tmp_path, first, then):
    out = tmp_path / "run"
    common = dict(max_steps=4, save_steps=2, save_total_limit=100, max_new_tokens=4)
    run(cli_args(workdir, out, torch_compile=first, **{**common, "max_steps": 2}))
    names = set(load_file(str(out / "checkpoint-2" / "model.safetensors")))
    assert not any("_orig_mod" in n for n in names)
    run(cli_args(workdir, out, torch_compile=then, resume_from_checkpoint="latest", **common))
    plain = tmp_path / "plain"
    run(cli_args(workdir, plain, torch_compile="false", **common))
    a, b = weights(out), weights(plain)
    for k in b:  # compiled kernels round differently, so close rather than bit-equal
        torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=2e-3, msg=k)


def test_checkpoint_files_from_before_this_version_still_load(workdir, tmp_path):
    """A model file with `_orig_mod.` names and the tied head (as compiled runs wrote them) resumes."""
    from safetensors.torch import save_file

    from tiny_decoder.training.checkpoint import MANIFEST, _sha256

    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=2, save_steps=2))
    ckpt = out / "checkpoint-2"
    state = load_file(str(ckpt / "model.safetensors"))
    old = {"_orig_mod." + k: v for k, v in state.items()}
    old["_orig_mod.lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(old, str(ckpt / "model.safetensors"))
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["model.safetensors"] = {
        "size": (ckpt / "model.safetensors").stat().st_size,
        "sha256": _sha256(ckpt / "model.safetensors"),
    }
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    result = run(cli_args(workdir, out, max_steps=3, save_steps=3, resume_from_checkpoint="latest"))
    assert result["step"] == 3


def test_resuming_a_finished_run_says_so_and_changes_nothing(workdir, tmp_path, capsys):
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=3, save_steps=3))
    before = (out / "model.safetensors").read_bytes(), (out / "README.md").read_text()
    result = run(cli_args(workdir, out, max_steps=3, save_steps=3, resume_from_checkpoint="latest"))
    assert result["finished_already"] and result["step"] == 3
    assert "it is finished, nothing to do" in capsys.readouterr().out
    assert ((out / "model.safetensors").read_bytes(), (out / "README.md").read_text()) == before


@pytest.mark.parametrize(
    "flags,message",
    [
        (dict(max_steps=-1, num_train_epochs=0), "num_train_epochs=0.0 trains nothing"),
        (dict(max_steps=0), "max_steps=0"),
        (dict(warmup_steps=-5), "warmup_steps=-5 must be >= 0"),
        (dict(learning_rate=0), "learning_rate=0.0 must be > 0"),
        (dict(save_total_limit=0), "save_total_limit=0 must be >= 1"),
    ],
)
def test_arguments_that_train_nothing_or_make_no_sense_are_refused(workdir, tmp_path, flags, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run(cli_args(workdir, tmp_path / "run", **flags))
    assert not (tmp_path / "run").exists()


def test_block_size_beyond_a_saved_models_context_is_refused(workdir, tmp_path):
    first = tmp_path / "first"
    run(cli_args(workdir, first, max_steps=1, save_steps=1))  # max_position_embeddings = block_size = 16
    with pytest.raises(ValueError, match=r"block_size=32 is longer than .*max_position_embeddings=16.*--block_size 16"):
        run(cli_args(workdir, tmp_path / "second", model_name_or_path=str(first), tokenizer_name=None, block_size=32))


def virtual_clock(monkeypatch, seconds_per_forward=0.05):
    """The training loop's clock, advanced only by forward passes: timings in tests become exact."""
    from types import SimpleNamespace

    import tiny_decoder.training.budget as budget_module
    import tiny_decoder.training.metrics as metrics_module
    from tiny_decoder import TinyDecoderForCausalLM

    clock = SimpleNamespace(now=1000.0)
    for module in (budget_module, metrics_module):  # the run's clock and the metrics windows
        monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: clock.now))
    forward = TinyDecoderForCausalLM.forward

    def timed_forward(self, *a, **k):
        clock.now += seconds_per_forward
        return forward(self, *a, **k)

    monkeypatch.setattr(TinyDecoderForCausalLM, "forward", timed_forward)
    return clock


def test_tokens_per_second_counts_the_steps_in_a_short_window(workdir, tmp_path, monkeypatch):
    """3 steps logged with logging_steps=10: the rate is over 3 steps, not 10 (it was 3.3x too high)."""
    virtual_clock(monkeypatch)
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=3, logging_steps=10, save_steps=3))
    (last,) = [m for m in metrics(out) if "tokens_per_s" in m]
    assert last["tokens"] == 3 * 4 * 16
    assert last["tokens_per_s"] == pytest.approx(3 * 4 * 16 / (3 * 0.05))


def test_model_card_snippet_runs_where_it_stands_without_the_package(workdir, tmp_path):
    out = tmp_path / "cards" / "run"
    run(cli_args(workdir, out, max_steps=2, save_steps=2, output_dir=os.path.relpath(out, ROOT)))
    card = (out / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert f'AutoTokenizer.from_pretrained("{os.path.relpath(out, ROOT)}", trust_remote_code=True)' in code
    assert "../shared" not in card and str(workdir) not in card.split("```")[0]
    assert "relative to where training ran" in card and 'name: "run"' in card
    blocked = "import sys; sys.modules['tiny_decoder'] = None\n"
    proc = subprocess.run(
        [sys.executable, "-c", blocked + code],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()


def test_card_names_tinystories_for_a_local_copy(workdir, tmp_path):
    from tiny_decoder.data import DataArguments
    from tiny_decoder.training.report import describe_data

    copy = tmp_path / "tinystories"
    copy.mkdir()
    (copy / "train.jsonl").write_text('{"text": "a"}\n')
    name, desc = describe_data(DataArguments(dataset_path=str(copy)), {})
    assert name == "roneneldan/TinyStories" and "TinyStories" in desc and str(tmp_path) not in desc
    other = tmp_path / "my_corpus"
    other.mkdir()
    name, desc = describe_data(DataArguments(dataset_path=str(other)), {})
    assert name is None and "my_corpus" in desc and str(tmp_path) not in desc


def test_tokenizer_of_a_saved_folder_loads_without_a_prompt_after_import(workdir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    import tiny_decoder  # noqa: F401

    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=1, save_steps=1))

    def no_prompt(*a, **k):
        raise AssertionError("AutoTokenizer asked whether to trust remote code")

    monkeypatch.setattr("builtins.input", no_prompt)
    assert len(AutoTokenizer.from_pretrained(out)) > 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_saves_a_checkpoint_and_prints_one_line_with_the_resume_command(workdir, tmp_path):
    out = tmp_path / "run"
    argv = cli_args(workdir, out, max_steps=100000, save_steps=100000, logging_steps=1, eval_steps=100000)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    log = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last = [line for line in stderr.strip().splitlines() if line.strip()][-1]
    m = re.match(r"stopped by Ctrl-C at step (\d+); checkpoint-\1 holds it\. Resume with: (.*)$", last)
    assert m and m.group(2).endswith("--resume_from_checkpoint latest"), last
    # the interpreter that ran, so the command works without an activated venv
    assert m.group(2).split()[0] in (sys.executable, os.path.relpath(sys.executable, ROOT)), last
    step = int(m.group(1))
    assert [p.name for p in list_checkpoints(out)] == [f"checkpoint-{step}"]
    result = run(cli_args(workdir, out, max_steps=step + 2, save_steps=100000, resume_from_checkpoint="latest"))
    assert result["step"] == step + 2


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("model_name_or_path", "/no/such/model", "'/no/such/model' does not exist"),
        ("config_name", "./missing-config", "'./missing-config' does not exist"),
        ("model_name_or_path", "tests", "'tests' is a folder without config.json"),
    ],
)
def test_a_model_source_that_cannot_load_is_refused_before_any_work(workdir, tmp_path, flag, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run(cli_args(workdir, tmp_path / "run", **{flag: value}))
    assert not (tmp_path / "run").exists()


def test_a_run_that_stopped_before_its_first_step_does_not_block_the_folder(workdir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="not divisible"):  # the tokenizer folder is written before the model is built
        run(cli_args(workdir, out, tokenizer_name=None, vocab_size=300, config_overrides="hidden_size=30"))
    assert [p.name for p in out.iterdir()] == ["tokenizer"]
    assert run(cli_args(workdir, out, max_steps=1, save_steps=1))["step"] == 1


def test_plan_total_steps_fits_the_budget():
    from tiny_decoder.training.budget import plan_total_steps

    # 100 s used, 1 s per step, 600 s budget, evaluations of 5 s every 100 steps
    planned = plan_total_steps(60, 2000, 100.0, 1.0, 600.0, 100, 5.0, margin=0.0)
    assert planned == 60 + (600 - 100 - (1940 // 100 + 1) * 5)
    assert plan_total_steps(60, 300, 100.0, 1.0, 600.0, 100, 5.0) == 300  # fits: unchanged
    assert plan_total_steps(60, 300, 700.0, 1.0, 600.0, 100, 5.0) == 61  # out of time already: one more step


def test_a_time_budget_shortens_the_schedule_so_it_still_ends(workdir, tmp_path, monkeypatch):
    """A slow machine gets a finished (annealed) schedule with fewer steps, and a resume keeps the plan."""
    virtual_clock(monkeypatch)  # 0.05 s per step
    out = tmp_path / "run"
    common = dict(
        max_steps=100000,
        max_train_minutes=0.5,
        eval_steps=100000,
        save_steps=100,
        logging_steps=1,
        save_total_limit=100,
        min_lr_ratio=0.1,
        warmup_steps=5,
    )
    result = run(cli_args(workdir, out, **common))
    # timed over steps 20..200 at 0.05 s each; 30 s * 0.97 - 10 s used - one evaluation (2 x 8 blocks of 16
    # tokens at a third of a step's cost per token: 0.067 s) leaves 380 steps
    assert result["step"] == 580
    state = json.loads((out / "checkpoint-580" / "trainer_state.json").read_text())
    assert (state["planned_from"], state["planned_total_steps"]) == (100000, 580)
    last = [m for m in metrics(out) if "lr" in m][-1]
    assert last["step"] == 580 and last["lr"] == pytest.approx(3e-3 * 0.1)  # the schedule ended
    first_ckpt = out / "checkpoint-200"  # planned at step 200, saved after it
    assert json.loads((first_ckpt / "trainer_state.json").read_text())["planned_total_steps"] == 580
    again = run(cli_args(workdir, out, resume_from_checkpoint=str(first_ckpt), **common))
    assert again["step"] == 580
