"""finite_difference_check: in float64 central differences match autograd to ~1e-6, the mean SPSA estimate
aligns with it, a wrong backward is caught, and the weights come back bit-exactly."""

import pytest
import torch

from conftest import model_and_batch
from tiny_decoder.evaluation.finite_difference import finite_difference_check, format_check


@pytest.mark.parametrize("pe", ["rope", "alibi", "learned"])
def test_central_differences_match_autograd_in_float64(pe):
    model, batch = model_and_batch(position_embedding=pe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # eps 5e-5 balances truncation (~eps^2) against round-off (~1e-16 / eps): all three models stay below 6e-7 there
    rows = finite_difference_check(model, batch, eps=5e-5, coords_per_tensor=6)
    assert len(rows) == len([p for p in model.parameters()])  # every tensor, the tied head once
    worst = max(r["fd_rel_error"] for r in rows)
    assert worst < 1e-6, format_check(rows)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # bit-exact restore


def test_mean_spsa_estimate_aligns_with_autograd():
    model, batch = model_and_batch()
    names = ["model.norm.weight", "model.layers.0.attn_norm.weight", "model.layers.1.mlp_norm.weight"]
    rows = finite_difference_check(model, batch, coords_per_tensor=2, directions=600, names=names, seed=1)
    assert sorted(r["name"] for r in rows) == sorted(names)
    assert all(r["spsa_cosine"] > 0.9 for r in rows), format_check(rows)
    few = finite_difference_check(model, batch, coords_per_tensor=1, directions=4, names=names[:1], seed=1)
    many = next(r for r in rows if r["name"] == names[0])
    assert few[0]["name"] == names[0] and few[0]["spsa_cosine"] < many["spsa_cosine"]  # more directions, closer


class WrongBackward(torch.autograd.Function):
    """Identity forward whose backward doubles the gradient: the kind of bug the check exists for."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def test_a_wrong_backward_is_caught():
    model, batch = model_and_batch()
    norm = model.model.norm
    real_forward = norm.forward
    norm.forward = lambda x: WrongBackward.apply(real_forward(x))
    rows = finite_difference_check(model, batch, coords_per_tensor=4, names=["model.norm.weight", "model.embed_tokens.weight"])
    assert all(r["fd_rel_error"] > 0.3 for r in rows), format_check(rows)
    with pytest.raises(ValueError, match="No trainable parameter matches"):
        finite_difference_check(model, batch, names=["nope"])
