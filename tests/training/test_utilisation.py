"""Utilisation in every log: tokens/s, achieved FLOP/s and MFU against this device's measured matmul rate, which is
measured once per device and dtype and cached."""

import json
import math

import pytest
import torch

from conftest import cli_args, metrics, run  # noqa: F401  (workdir is a conftest fixture)


def test_the_matmul_rate_is_measured_once_per_device_and_dtype(tmp_path, monkeypatch):
    import tiny_decoder.evaluation.throughput as report

    monkeypatch.setenv("TINY_DECODER_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(report, "measure_matmul_rate", lambda device, dtype, size: calls.append(dtype) or 1e11)
    cpu = torch.device("cpu")
    assert report.matmul_rate(cpu) == report.matmul_rate(cpu) == 1e11
    assert report.matmul_rate(cpu, "bf16") == 1e11
    assert calls == [torch.float32, torch.bfloat16]  # the second fp32 call read the cache
    cached = json.loads((tmp_path / "matmul_rate.json").read_text())
    assert sorted(k.split(" | ")[1] for k in cached) == ["bfloat16", "float32"]


def test_a_real_matmul_rate_is_a_positive_number():
    from tiny_decoder.evaluation.throughput import measure_matmul_rate

    rate = measure_matmul_rate(torch.device("cpu"), torch.float32, 128, repeats=2)
    assert math.isfinite(rate) and rate > 1e6


def test_every_training_record_carries_tokens_flops_and_mfu(workdir, tmp_path, monkeypatch):
    import tiny_decoder.training.metrics as metrics_module
    from tiny_decoder.evaluation.throughput import flops_per_token

    monkeypatch.setattr(metrics_module, "matmul_rate", lambda device, precision: 2e9)
    out = tmp_path / "run"
    result = run(cli_args(workdir, out, max_steps=4, logging_steps=2))
    records = [r for r in metrics(out) if "loss" in r]
    assert [r["step"] for r in records] == [2, 4]
    config = json.loads((out / "config.json").read_text())
    fpt = flops_per_token(result["params"], type("C", (), config), 16)
    for r in records:
        assert r["flops_per_s"] == pytest.approx(r["tokens_per_s"] * fpt)
        assert r["mfu"] == pytest.approx(r["flops_per_s"] / 2e9) and 0 < r["mfu"]
    assert "of its measured fp32 matmul rate (2 GFLOP/s per device)" in (out / "README.md").read_text()
