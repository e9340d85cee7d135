"""Resumes that do not fit the checkpoint are refused before any data work; a full disk is one line and leaves no
half-written checkpoint; flags that need another flag say so; saved files get the usual modes."""

import errno
import os
from collections import namedtuple

import pytest

from conftest import cli_args, run  # noqa: F401  (workdir is a conftest fixture)
from tiny_decoder.io.run_dir import OutputDirError
from tiny_decoder.training.checkpoint import CheckpointError, list_checkpoints


@pytest.fixture
def no_data_work(monkeypatch):
    """Data preparation fails loudly: a refusal must come before it."""
    from tiny_decoder.training.objectives import CausalLMObjective

    def load_data(self, data_args):
        raise AssertionError("data preparation started")

    monkeypatch.setattr(CausalLMObjective, "load_data", load_data)


@pytest.fixture
def checkpointed(workdir, tmp_path):
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=4, save_steps=2))
    return out


def test_another_block_size_is_refused_before_data_work(workdir, checkpointed, no_data_work):
    with pytest.raises(
        CheckpointError, match=r"trained on blocks of 16 tokens; this run asks for --block_size 8: pass --block_size 16"
    ):
        run(cli_args(workdir, checkpointed, max_steps=6, block_size=8, resume_from_checkpoint="latest"))


def test_another_preset_is_refused_before_data_work_naming_the_fields(workdir, checkpointed, no_data_work):
    with pytest.raises(CheckpointError) as err:
        run(cli_args(workdir, checkpointed, max_steps=6, preset="tiny", resume_from_checkpoint="latest"))
    message = str(err.value)
    assert "holds another model than this run asks for" in message and "hidden_size=64 -> 128" in message
    assert "\n" not in message and "size mismatch" not in message
    with pytest.raises(CheckpointError, match=r"num_hidden_layers=2 -> 3"):
        run(cli_args(workdir, checkpointed, max_steps=6, config_overrides="num_hidden_layers=3", resume_from_checkpoint="latest"))


def test_the_same_arguments_still_resume(workdir, checkpointed):
    run(cli_args(workdir, checkpointed, max_steps=6, resume_from_checkpoint="latest"))
    assert list_checkpoints(checkpointed)[-1].name == "checkpoint-6"


def full_disk(monkeypatch, free=1000):
    import tiny_decoder.io.run_dir as run_dir

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_dir.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - free, free))


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_tmp(workdir, tmp_path, monkeypatch):
    from accelerate import Accelerator

    out = tmp_path / "run"
    real = Accelerator.save_state

    def save_state(self, output_dir=None, **kw):
        if output_dir.endswith("checkpoint-4.tmp"):
            os.makedirs(output_dir, exist_ok=True)
            open(os.path.join(output_dir, "model.safetensors"), "wb").write(b"\0" * 100)  # half written
            full_disk(monkeypatch)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 490")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    with pytest.raises(CheckpointError) as err:
        run(cli_args(workdir, out, max_steps=6, save_steps=2))
    message = str(err.value)
    assert message.startswith("checkpoint-4: the disk holding") and str(out) in message and "\n" not in message
    assert "MB were needed and 0.0 MB are free" in message and "enforce fail" not in message
    assert not list(out.glob("*.tmp")) and [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]


def test_a_full_disk_at_the_final_save_is_one_line_and_leaves_no_tmp(workdir, tmp_path, monkeypatch):
    from tiny_decoder import TinyDecoderForCausalLM

    out = tmp_path / "run"

    def save_pretrained(self, folder, **kw):
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, "model.safetensors"), "wb").write(b"\0" * 10)
        full_disk(monkeypatch)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TinyDecoderForCausalLM, "save_pretrained", save_pretrained)
    with pytest.raises(OutputDirError, match=r"the disk holding .* is full: 0.0 MB are free\. Nothing half-written"):
        run(cli_args(workdir, out, max_steps=2, save_steps=2))
    assert not (out / ".final.tmp").exists() and list_checkpoints(out)  # the checkpoint is there to resume from


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(hub_format="llama"), "--hub_format llama does nothing without --push_to_hub true"),
        (dict(hub_strategy="checkpoint"), "--hub_strategy checkpoint does nothing without --push_to_hub true"),
        (dict(hub_private_repo="true"), "--hub_private_repo True does nothing without --push_to_hub true"),
    ],
)
def test_hub_flags_without_push_to_hub_are_refused(workdir, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run(cli_args(workdir, tmp_path / "run", **flags))


def test_saved_weights_are_readable_like_every_other_file(workdir, checkpointed):
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    for folder in (checkpointed, list_checkpoints(checkpointed)[-1]):
        modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
        assert modes["model.safetensors"] == expected and set(modes.values()) == {expected}, modes
