"""The argument files in configs/ parse with the arguments of the scripts that read them (the Makefile's commands),
so a renamed flag or an invalid combination (e.g. a Muon knob without --optim muon) fails here, not 10 minutes into
`make train` or `make distill`."""

import json
from pathlib import Path

import pytest

from tiny_decoder.cli import parse_args
from tiny_decoder.data import DataArguments
from tiny_decoder.data.tokenizer import TokenizerArguments
from tiny_decoder.training import ModelArguments, TrainArguments
from tiny_decoder.training.objectives.distillation import DistillationArguments

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TRAINING = (ModelArguments, DataArguments, TokenizerArguments, TrainArguments)
# file -> the argument dataclasses of the script(s) that read it (train.py, distill.py, sft.py)
READERS = {
    "tiny_cpu.json": [TRAINING],
    "nano_smoke.json": [TRAINING],
    "recovery_cpu.json": [TRAINING, (*TRAINING, DistillationArguments)],
    "sft_cpu.json": [TRAINING],
}


def test_every_config_has_a_reader():
    assert sorted(p.name for p in CONFIGS.glob("*.json")) == sorted(READERS)


@pytest.mark.parametrize("name", sorted(READERS))
def test_config_parses_with_its_scripts(name):
    path = str(CONFIGS / name)
    values = json.loads(Path(path).read_text())
    for types in READERS[name]:
        argv = [path, "--teacher_name_or_path", "runs/tiny"] if DistillationArguments in types else [path]
        parsed = parse_args(types, argv)
        train_args = next(a for a in parsed if isinstance(a, TrainArguments))
        for key in ("optim", "lr_scheduler_type", "max_steps", "learning_rate"):
            if key in values:  # the file's value arrives, not a default
                assert getattr(train_args, key) == values[key]
