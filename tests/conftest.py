"""Shared test settings: offline Hub, few threads, small models built on the fly."""

import contextlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Measured matmul rates (the MFU yardstick) go to a folder of this test session, not the user's ~/.cache.
os.environ.setdefault("TINY_DECODER_CACHE", __import__("tempfile").mkdtemp(prefix="tiny-decoder-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

POSITION_EMBEDDINGS = ["rope", "alibi", "sinusoidal", "learned", "none"]


def small_config(**overrides):
    from tiny_decoder import TinyDecoderConfig

    kwargs = dict(
        vocab_size=67,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    kwargs.update(overrides)
    return TinyDecoderConfig(**kwargs)


def model_and_batch(dtype=torch.float64, seed=0, **overrides):
    """A very small model (float64 by default, eval mode) with norms away from 1, and a batch: for checks of
    gradients and their estimates."""
    from tiny_decoder import TinyDecoderForCausalLM

    torch.manual_seed(seed)
    model = (
        TinyDecoderForCausalLM(small_config(hidden_size=16, num_attention_heads=2, num_key_value_heads=1, **overrides))
        .to(dtype)
        .eval()
    )
    with torch.no_grad():  # norms away from 1 so their gradients are not special
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    ids = torch.randint(3, 67, (2, 9))
    return model, {"input_ids": ids, "labels": ids}


def toy_dataset(n=64, length=16, vocab=67):
    """Rows that count up from a random start, modulo the vocabulary: a pattern a tiny model learns fast."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    starts = torch.randint(3, vocab, (n, 1), generator=g)
    ids = (starts + torch.arange(length)) % vocab
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def pytest_collection_modifyitems(items):
    """End-to-end tests (scripts and training runs on the generated corpus of `workdir`) are `slow`."""
    for item in items:
        if "workdir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """A test that built an Accelerator (or transformers' Trainer, TRL's) must not fix the next one's settings."""
    yield
    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def shared_tinystories():
    """../shared/data/tinystories beside the checkout (or $TINY_DECODER_DATA), else None."""
    env = os.environ.get("TINY_DECODER_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories"
    return path if (path / "train.jsonl").exists() else None


def generated_documents(n=300, seed=0):
    """Story-like documents made up here, so tests never depend on files outside the repo."""
    import random

    rng = random.Random(seed)
    names = ["Lily", "Tom", "Mia", "Ben", "Zoë", "Ángel"]
    verbs = ["saw", "found", "liked", "lost", "shared", "painted"]
    things = ["a red ball", "a big tree", "the cat", "a shiny stone", "some cake", "a little boat"]
    docs = []
    for _ in range(n):
        k = rng.randint(1, 6)
        docs.append(" ".join(f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)}." for _ in range(k)))
    return docs


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tiny_decoder.data.tokenizer import train_bpe_tokenizer

    docs = generated_documents(500)
    return train_bpe_tokenizer([docs[i : i + 100] for i in range(0, 500, 100)], vocab_size=300, model_max_length=32)


# ---------------------------------------------------------------- training runs on generated data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_tokenizer):
    """A generated corpus (train.jsonl, validation.jsonl) and a tokenizer folder for training runs."""
    d = tmp_path_factory.mktemp("train")
    data = d / "data"
    data.mkdir()
    docs = generated_documents(240, seed=5)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[:200]))
    (data / "validation.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[200:]))
    tiny_tokenizer.save_pretrained(d / "tok")
    return d


def cli_args(workdir, out, **over):
    args = dict(
        preset="nano",
        dataset_path=str(workdir / "data"),
        tokenizer_name=str(workdir / "tok"),
        block_size=16,
        output_dir=str(out),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=6,
        warmup_steps=2,
        learning_rate=3e-3,
        logging_steps=1,
        eval_steps=3,
        save_steps=3,
        max_eval_batches=2,
        num_samples=1,
        max_new_tokens=8,
        report_to="none",
        use_cpu="true",
        seed=7,
    )
    args.update(over)
    return [x for k, v in args.items() if v is not None for x in (f"--{k}", str(v))]


def run_script(name, argv):
    """scripts/NAME.py's main() in this process, imported as `scripts_NAME` (scripts/evaluate_model.py must not
    take the place of the `evaluate` package in sys.modules)."""
    import importlib.util

    module_name = f"scripts_{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module.main(argv)


def run(argv):
    """scripts/train.py's main() in this process."""
    return run_script("train", argv)


@contextlib.contextmanager
def killed_at_checkpoint(monkeypatch, step):
    """The run dies (KeyboardInterrupt) when it is about to write checkpoint-STEP, as a killed process would."""
    import tiny_decoder.training.checkpointer as trainer_module  # where the Trainer's checkpoints are written

    real_save = trainer_module.save_checkpoint

    def save(accelerator, output_dir, state, limit, **kw):
        if state["step"] == step:
            raise KeyboardInterrupt("simulated kill")
        return real_save(accelerator, output_dir, state, limit, **kw)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- saved folders the demo serves
@pytest.fixture(scope="module")
def story_model(workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "story"
    run(cli_args(workdir, out, max_steps=20, eval_steps=20, save_steps=20, num_samples=0))
    return out


@pytest.fixture(scope="module")
def chat_model(story_model, tmp_path_factory):
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiny_decoder.data.chat import add_chat_template

    out = tmp_path_factory.mktemp("demo") / "chat"
    shutil.copytree(story_model, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    if add_chat_template(tokenizer):  # new role tokens: the embeddings grow, as SFT does
        model = AutoModelForCausalLM.from_pretrained(out)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
