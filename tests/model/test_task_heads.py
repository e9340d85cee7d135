"""Sequence classification, token classification and extractive QA heads, trained with Trainer."""

import pytest
import torch
from torch.utils.data import Dataset

from conftest import small_config


class Examples(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def sequence_task(n, g):
    """Label 1 when token 7 occurs anywhere (attention must carry it to the last token); right padding."""
    rows = []
    for i in range(n):
        length = int(torch.randint(6, 13, (1,), generator=g))
        ids = torch.randint(10, 60, (12,), generator=g)
        if i % 2:
            ids[int(torch.randint(0, length, (1,), generator=g))] = 7
        ids[length:] = 0  # pad
        rows.append({"input_ids": ids, "attention_mask": (torch.arange(12) < length).long(), "labels": torch.tensor(i % 2)})
    return rows


def token_task(n, g):
    """Label each token by whether a 7 came before it (a causal running OR)."""
    rows = []
    for _ in range(n):
        ids = torch.randint(10, 60, (12,), generator=g)
        ids[int(torch.randint(0, 12, (1,), generator=g))] = 7
        rows.append({"input_ids": ids, "labels": (ids == 7).long().cummax(0).values})
    return rows


def qa_task(n, g):
    """The answer is the two tokens after the marker 7."""
    rows = []
    for _ in range(n):
        ids = torch.randint(10, 60, (12,), generator=g)
        s = int(torch.randint(0, 9, (1,), generator=g))
        ids[s] = 7
        rows.append({"input_ids": ids, "start_positions": torch.tensor(s + 1), "end_positions": torch.tensor(s + 2)})
    return rows


def mean_loss(model, rows):
    model.eval()
    with torch.no_grad():
        batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        return float(model(**batch).loss)


@pytest.mark.parametrize(
    "auto, task",
    [
        ("AutoModelForSequenceClassification", sequence_task),
        ("AutoModelForTokenClassification", token_task),
        ("AutoModelForQuestionAnswering", qa_task),
    ],
)
def test_head_trains_with_trainer_and_reloads(auto, task, tmp_path):
    import transformers
    from transformers import Trainer, TrainingArguments

    import tiny_decoder  # noqa: F401  (registers the Auto classes)

    g = torch.Generator().manual_seed(0)
    rows = task(256, g)
    torch.manual_seed(0)
    model = getattr(transformers, auto).from_config(small_config(hidden_size=64, num_labels=2))
    assert type(model).__name__.startswith("TinyDecoderFor")
    before = mean_loss(model, rows)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=32,
        max_steps=60,
        learning_rate=3e-3,
        warmup_steps=5,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=20,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=Examples(rows)).train()
    after = mean_loss(model, rows)
    assert after < 0.6 * before, (before, after)

    model.save_pretrained(tmp_path / "saved")
    again = getattr(transformers, auto).from_pretrained(tmp_path / "saved").eval()
    assert type(again) is type(model)
    assert mean_loss(again, rows) == pytest.approx(after, rel=1e-5)
