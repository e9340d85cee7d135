"""One rule for every folder a script writes: refuse a folder holding something else, replace own output only
when asked, and one writer at a time (a lock that a killed process does not leave behind for good)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, cli_args, generated_documents, metrics, run, run_script  # noqa: F401


def corpus(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_documents(80)))
    return data


def test_the_tokenizer_trainer_never_writes_into_a_model_folder(workdir, tmp_path):
    from tiny_decoder.io.run_dir import OutputDirError

    model_dir = tmp_path / "model"
    run(cli_args(workdir, model_dir, max_steps=1))
    before = (model_dir / "tokenizer.json").read_bytes()
    argv = ["--dataset_path", str(workdir / "data"), "--vocab_size", "300", "--output_dir", str(model_dir)]
    for extra in ([], ["--overwrite_output_dir", "true"]):
        with pytest.raises(OutputDirError, match="holds files a tokenizer does not write"):
            run_script("train_tokenizer", argv + extra)
    assert (model_dir / "tokenizer.json").read_bytes() == before


def test_a_tokenizer_folder_is_replaced_only_when_asked(tmp_path):
    from tiny_decoder.io.run_dir import OutputDirError

    argv = ["--dataset_path", str(corpus(tmp_path)), "--vocab_size", "300", "--output_dir", str(tmp_path / "tok")]
    run_script("train_tokenizer", argv)
    with pytest.raises(OutputDirError, match="already holds a tokenizer's output.*--overwrite_output_dir true"):
        run_script("train_tokenizer", argv)
    run_script("train_tokenizer", argv + ["--overwrite_output_dir", "true"])
    assert not (tmp_path / "tok" / ".lock").exists()


def test_an_instruction_set_is_replaced_only_when_asked(tmp_path):
    from tiny_decoder.io.run_dir import OutputDirError

    argv = ["--dataset_path", str(corpus(tmp_path)), "--output_dir", str(tmp_path / "instruct")]
    run_script("build_instructions", argv)
    with pytest.raises(OutputDirError, match="already holds an instruction set's output"):
        run_script("build_instructions", argv)
    run_script("build_instructions", argv + ["--overwrite_output_dir", "true"])


def test_a_pruned_folder_is_never_told_to_resume(workdir, tmp_path):
    from tiny_decoder.io.run_dir import OutputDirError

    base = tmp_path / "base"
    run(cli_args(workdir, base, max_steps=1))
    argv = [
        "--model_name_or_path",
        str(base),
        "--target_params",
        "80%",
        "--dataset_path",
        str(workdir / "data"),
        "--block_size",
        "16",
        "--calibration_samples",
        "8",
        "--output_dir",
        str(tmp_path / "pruned"),
    ]
    run_script("prune", argv)
    with pytest.raises(OutputDirError) as err:
        run_script("prune", argv)
    assert "already holds a pruned model's output" in str(err.value) and "resume" not in str(err.value)


def hold_lock(folder):
    """Another process that holds `folder`'s lock as a script does, until it is killed."""
    code = (
        "import sys, time; from tiny_decoder.io.run_dir import OutputLock; "
        "OutputLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_folder_another_live_process_writes_is_refused(workdir, tmp_path):
    from tiny_decoder.io.run_dir import OutputDirError

    out = tmp_path / "run"
    other = hold_lock(out)
    try:
        with pytest.raises(
            OutputDirError, match=rf"is being written by another process \(pid {other.pid} on {socket.gethostname()}"
        ):
            run(cli_args(workdir, out, max_steps=1))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing touched
    finally:
        other.kill()
        other.wait()


def test_the_lock_of_a_killed_process_goes_with_it(workdir, tmp_path):
    """The OS releases the lock of a process that dies (SIGKILL: no atexit, no cleanup); the file it leaves,
    naming the dead holder, is no obstacle."""
    out = tmp_path / "run"
    dead = hold_lock(out)
    dead.kill()
    dead.wait()
    assert str(dead.pid) in (out / ".lock").read_text()  # left behind, as a killed writer leaves it
    assert run(cli_args(workdir, out, max_steps=1))["step"] == 1
    assert not (out / ".lock").exists()  # released when the run ended


def test_two_runs_started_at_once_into_one_folder_one_is_refused_in_one_line(workdir, tmp_path):
    out = tmp_path / "both"
    argv = cli_args(workdir, out, max_steps=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    last = [line for line in refused.strip().splitlines() if line.strip()][-1]
    assert last.startswith("error: output_dir") and "Traceback" not in refused, refused[-2000:]
    steps = [r["step"] for r in metrics(out)]
    assert len(steps) == len(set(steps)) and max(steps) == 4
