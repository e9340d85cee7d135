"""Optimizers and schedule: Muon + AdamW as one optimizer equals the two run side by side."""

import copy
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli_args, run, small_config  # noqa: F401  (workdir is a conftest fixture)
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.training.optim import MuonWithAdamW, build_optimizer, param_groups


def args(**over):
    base = dict(optim="muon", learning_rate=0.01, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8,
                lr_scheduler_type="cosine", warmup_steps=2, min_lr_ratio=0.1)
    return SimpleNamespace(**{**base, **over})


def loss_of(model, seed):
    x = torch.randint(0, 67, (2, 12), generator=torch.Generator().manual_seed(seed))
    return model(input_ids=x, labels=x).loss


def test_muon_with_adamw_equals_the_two_optimizers_side_by_side():
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(tie_word_embeddings=True))
    ref = copy.deepcopy(model)
    opt, sched = build_optimizer(model, args(), total_steps=6)
    assert isinstance(opt, MuonWithAdamW)
    blocks = {id(p) for p in ref.model.layers.parameters() if p.dim() == 2}
    matrices = [p for p in ref.parameters() if id(p) in blocks]
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in blocks]} for g in param_groups(ref, 0.1)]
    muon = torch.optim.Muon(matrices, lr=0.01, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW(rest, lr=0.01, betas=(0.9, 0.95), eps=1e-8)
    f = sched.lr_lambdas[0]
    for step in range(4):
        for o in (muon, adamw):
            for g in o.param_groups:
                g["lr"] = 0.01 * f(step)
        loss_of(model, step).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        loss_of(ref, step).backward()
        muon.step()
        adamw.step()
        muon.zero_grad()
        adamw.zero_grad()
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    # every parameter is in exactly one inner optimizer, and the schedule reached all groups
    inner = [p for g in opt.param_groups for p in g["params"]]
    assert len(inner) == len({id(p) for p in inner}) == len(list(model.parameters()))
    assert len({g["lr"] for g in opt.param_groups}) == 1


def test_muon_state_round_trips():
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config())
    opt, sched = build_optimizer(model, args(), total_steps=6)
    for step in range(2):
        loss_of(model, step).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    clone = copy.deepcopy(model)
    opt2, sched2 = build_optimizer(clone, args(), total_steps=6)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    sched2.load_state_dict(sched.state_dict())
    for m, o, s in ((model, opt, sched), (clone, opt2, sched2)):
        for step in range(2, 4):
            loss_of(m, step).backward()
            o.step()
            o.zero_grad()
            s.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_muon_resumes_exactly_through_the_training_script(workdir, tmp_path):
    common = dict(optim="muon", max_steps=4, save_steps=2, save_total_limit=100)
    run(cli_args(workdir, tmp_path / "straight", **common))
    run(cli_args(workdir, tmp_path / "split", **{**common, "max_steps": 4, "save_steps": 2}))
    import shutil

    for name in ("checkpoint-4", "model.safetensors"):
        target = tmp_path / "split" / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(cli_args(workdir, tmp_path / "split", resume_from_checkpoint=str(tmp_path / "split" / "checkpoint-2"), **common))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_optimizer_is_refused():
    from tiny_decoder.training import TrainArguments

    with pytest.raises(ValueError, match="optim='sgd' is not supported"):
        TrainArguments(optim="sgd")
