import json

import pytest

from tiny_decoder.cli import parse_args, run_command
from tiny_decoder.data import DataArguments
from tiny_decoder.training import ModelArguments, TrainArguments


def test_file_then_flags_override_the_file(tmp_path):
    f = tmp_path / "args.json"
    f.write_text(json.dumps({"preset": "nano", "learning_rate": 0.01, "block_size": 64, "output_dir": "a"}))
    model, data, train = parse_args((ModelArguments, DataArguments, TrainArguments), [str(f)])
    assert (model.preset, train.learning_rate, data.block_size, train.output_dir) == ("nano", 0.01, 64, "a")
    model, data, train = parse_args((ModelArguments, DataArguments, TrainArguments), [str(f), "--learning_rate", "0.002"])
    assert (model.preset, train.learning_rate, data.block_size) == ("nano", 0.002, 64)


def test_bad_input_exits_with_one_line(capsys):
    def main():
        raise ValueError("block_size=1 must be at least 2.")

    with pytest.raises(SystemExit) as exit_info:
        run_command(main)
    assert exit_info.value.code == "error: block_size=1 must be at least 2."


def test_a_required_argument_may_come_after_the_file_and_unknown_keys_are_named(tmp_path):
    from tiny_decoder.training.objectives.distillation import DistillationArguments

    f = tmp_path / "args.yaml"
    f.write_text("learning_rate: 0.01\nalpha: 0.25\n")
    train, kd = parse_args((TrainArguments, DistillationArguments), [str(f), "--teacher_name_or_path", "runs/t"])
    assert (train.learning_rate, kd.alpha, kd.teacher_name_or_path) == (0.01, 0.25, "runs/t")
    with pytest.raises(ValueError, match="teacher_name_or_path is required"):
        parse_args((TrainArguments, DistillationArguments), [str(f)])
    f.write_text("learning_rat: 0.01\n")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['learning_rat'\]"):
        parse_args((TrainArguments, DistillationArguments), [str(f), "--alpha", "0.5"])


def test_a_hub_id_without_an_owner_is_a_hub_id(tmp_path, monkeypatch):
    import tiny_decoder.io.sources as sources
    from tiny_decoder.io.sources import check_model_source, hub_id, looks_local

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not looks_local("gpt2") and not looks_local("someone/model")
    assert looks_local("./gpt2") and looks_local("runs/tinyy") and looks_local("a/b/c") and looks_local("~/m")
    monkeypatch.setattr(sources, "hub_is_reachable", lambda: True)
    check_model_source("gpt2")  # online: left to from_pretrained, not "does not exist"
    monkeypatch.setattr(sources, "hub_is_reachable", lambda: False)
    with pytest.raises(ValueError, match="'gpt2' does not exist here, and the Hub cannot be reached"):
        check_model_source("gpt2")
    with pytest.raises(ValueError, match="'runs/tinyy' does not exist; give a folder"):
        check_model_source("runs/tinyy")
    assert hub_id("gpt2") == "gpt2" and hub_id("someone/m") == "someone/m"
    assert hub_id(str(tmp_path)) is None and hub_id("runs/x") is None and hub_id(None) is None


@pytest.mark.parametrize("script", ["train", "sft", "distill"])
def test_the_training_scripts_tear_the_process_group_down_also_when_they_fail(script, tmp_path, monkeypatch):
    """One entry (commands.run_training) for the three: under torchrun a failed run still ends its process group."""
    import torch.distributed as dist

    from conftest import run_script

    ended = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: ended.append(script))
    argv = ["--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out")]
    if script == "distill":
        argv += ["--teacher_name_or_path", str(tmp_path / "no-teacher")]
    with pytest.raises(ValueError, match="does not exist"):
        run_script(script, argv)
    assert ended == [script]
