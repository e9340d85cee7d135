"""The studies of tiny_decoder/experiments/ end to end through their command lines, on generated data."""

import json

import pytest

from conftest import cli_args, run, run_script  # noqa: F401  (workdir is a conftest fixture)

pytestmark = pytest.mark.slow


def nano_experiment(workdir, out) -> list[str]:
    """scripts/experiment.py's flags for a seconds-long study on the generated corpus."""
    return ["--dataset_path", str(workdir / "data"), "--output_dir", str(out), "--budget", "0.02", "--batch_size", "4",
            "--block_size", "16", "--vocab_size", "300", "--max_eval_batches", "2"]  # fmt: skip


def test_the_experiment_script_trains_each_variant_and_writes_one_table(workdir, tmp_path):
    out = tmp_path / "exp"
    results, exits = run_script(
        "experiment",
        [
            *nano_experiment(workdir, out),
            "--variants",
            "baseline",
            "orthogonal_parallel",
            "early_exit_training",
            "ema",
        ],
    )
    assert list(results) == ["baseline", "orthogonal_parallel", "early_exit_training", "ema"]
    for r in results.values():
        assert r["params"] > 0 and r["memory_mib"] >= 0 and r["act_rms_spread"] >= 1 and len(r["curve"]) >= 1
    # the same tokenizer, seed and schedule: the orthogonal-parallel model starts where the baseline does
    assert results["orthogonal_parallel"]["params"] == results["baseline"]["params"] + 2 * 2 * 2 * 64
    assert [r["threshold"] for r in exits] == [1.0, 0.9, 0.7, 0.5, 0.3] and exits[0]["mean_exit_layer"] == 1
    table = (out / "table.md").read_text()
    assert "| orthogonal_parallel | residual=orthogonal_parallel |" in table and "| threshold | loss |" in table
    assert "| ema | --ema_decay 0.99 |" in table  # a training switch, and its row is the saved model's (the average)
    ema_evals = [json.loads(line) for line in (out / "ema" / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    assert results["ema"]["val_loss"] == ema_evals[-1]["eval_loss_ema"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_zeroth_order_experiment_writes_its_table_curves_and_results(workdir, tmp_path):
    base = tmp_path / "base"
    run(cli_args(workdir, base, max_steps=4))
    out = tmp_path / "exp"
    results = run_script(
        "zeroth_order_experiment",
        [
            "--base_model",
            str(base),
            "--dataset_path",
            str(workdir / "data"),
            "--output_dir",
            str(out),
            "--budget",
            "0.01",
            "--batch_size",
            "4",
            "--block_size",
            "16",
            "--max_eval_batches",
            "2",
        ],
    )
    assert set(results) == {"fine-tune", "scratch"}
    for setting in results.values():
        assert set(setting["curves"]) == {"adamw", "zeroth_order"}
        zo = setting["curves"]["zeroth_order"]
        assert zo[-1]["step"] == 10 and zo[-1]["forward_passes"] == 20  # 1,000 steps x 0.01, two forwards each
        assert set(setting["memory"]) == {"inference", "zeroth_order", "adamw"}
    table = (out / "table.md").read_text()
    assert table.count("| zeroth_order |") == 2 and "forward passes" in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pruned" / "model.safetensors").exists()  # the fine-tune setting starts from the pruned base


def test_the_architecture_experiment_averages_over_seeds(workdir, tmp_path):
    out = tmp_path / "seeds"
    results, _ = run_script(
        "experiment",
        [
            *nano_experiment(workdir, out),
            "--variants",
            "baseline",
            "--seeds",
            "0",
            "1",
        ],
    )
    losses = results["baseline"]["val_losses"]
    assert len(losses) == 2 and losses[0] != losses[1]  # two seeds, two different runs
    assert results["baseline"]["val_loss"] == sum(losses) / 2
    assert (out / "baseline-seed1" / "model.safetensors").exists()
    assert "| per seed |" in (out / "table.md").read_text()
