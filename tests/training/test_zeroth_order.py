"""Zeroth-order training (SPSA / MeZO): the probes run the perturbed model without touching the weights,
the update is regenerated from seeds, the estimate aligns with autograd, the options do what they say,
and the loss falls with forward passes only."""

import copy
import math

import pytest
import torch

from conftest import model_and_batch
from tiny_decoder.evaluation.finite_difference import default_loss
from tiny_decoder.training.optimizers import param_groups
from tiny_decoder.training.zeroth_order import ZerothOrderOptimizer, mix_seed


def loss_fn(batch):
    return lambda m: default_loss(m, batch)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_probe_runs_the_perturbed_model_and_leaves_the_weights_bit_exact():
    model, batch = model_and_batch()
    opt = ZerothOrderOptimizer(model.parameters(), lr=1e-2, eps=1e-3)
    opt.begin_step()
    before = snapshot(model)
    with opt.offset_weights(model, lambda t: 1e-3 * opt.direction(t, 5)):
        inside = default_loss(model, batch).item()
    explicit = copy.deepcopy(model)  # w + eps u written into a copy (the tied head moves with the embedding)
    with torch.no_grad():
        for t, p in enumerate(explicit.parameters()):
            p.add_(1e-3 * opt.direction(t, 5))
    assert inside == pytest.approx(default_loss(explicit, batch).item(), rel=1e-12, abs=1e-12)
    assert inside != pytest.approx(default_loss(model, batch).item(), rel=1e-9)
    opt.probe(model, loss_fn(batch))
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # no write, no restore error
    assert all(p.grad is None for p in model.parameters())


def test_the_step_is_regenerated_from_seeds_and_stores_no_direction():
    model, batch = model_and_batch()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = ZerothOrderOptimizer(model.parameters(), lr=0.1, eps=1e-4, num_directions=3, seed=11)
    opt.probe(model, loss_fn(batch))
    coeffs = [c.item() for _, c, _ in opt._probes]
    opt.step()
    assert not opt.state  # no buffers: the directions live in their seeds
    for t, (p, w) in enumerate(zip(model.parameters(), w0)):
        g = torch.zeros_like(w)
        for j, c in enumerate(coeffs):  # z rebuilt here from (seed, step 0, direction j, tensor t)
            gen = torch.Generator().manual_seed(mix_seed(11, 0, j, t))
            g += c * torch.randn(w.shape, generator=gen, dtype=torch.float32).double()
        torch.testing.assert_close(p.detach(), w - 0.1 * g / 3, rtol=0, atol=1e-12)
    # each coefficient is the central difference it claims to be
    z = [
        torch.randn(w.shape, generator=torch.Generator().manual_seed(mix_seed(11, 0, 0, t)), dtype=torch.float32).double()
        for t, w in enumerate(w0)
    ]
    plus, minus = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for a, b, w, zt in zip(plus.parameters(), minus.parameters(), w0, z):
            a.copy_(w + 1e-4 * zt)
            b.copy_(w - 1e-4 * zt)
    expected = (default_loss(plus, batch) - default_loss(minus, batch)).item() / 2e-4
    assert coeffs[0] == pytest.approx(expected, rel=1e-9)


def norm_params(model):
    return [p for n, p in model.named_parameters() if "norm" in n]


def estimate(model, batch, directions, lr=1.0, **kw):
    """The optimizer's estimate, read off one step with lr 1 and no weight decay: w_before - w_after."""
    params = norm_params(model)
    before = [p.detach().clone() for p in params]
    opt = ZerothOrderOptimizer(params, lr=lr, num_directions=directions, **kw)
    opt.probe(model, loss_fn(batch))
    opt.step()
    g = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, params)]) / lr
    with torch.no_grad():
        for b, p in zip(before, params):
            p.copy_(b)
    return g


def autograd_gradient(model, batch):
    model.zero_grad(set_to_none=True)
    default_loss(model, batch).backward()
    g = torch.cat([p.grad.flatten() for p in norm_params(model)])
    model.zero_grad(set_to_none=True)
    return g


@pytest.mark.parametrize("difference", ["central", "forward"])
def test_the_mean_estimate_aligns_with_autograd(difference):
    model, batch = model_and_batch()
    exact = autograd_gradient(model, batch)
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=0).item()  # noqa: E731
    many = estimate(model, batch, 500, eps=1e-5, difference=difference, batched=True)
    few = estimate(model, batch, 4, eps=1e-5, difference=difference, batched=True)
    assert cos(many, exact) > 0.9
    assert cos(few, exact) < cos(many, exact)
    # adaptive eps probes along s*z, so the estimate's expectation is s^2 * grad
    params = norm_params(model)
    s2 = torch.cat(
        [torch.full((p.numel(),), max(p.detach().pow(2).mean().sqrt().item(), 1e-3) ** 2, dtype=p.dtype) for p in params]
    )
    adaptive = estimate(model, batch, 500, eps=1e-5, difference=difference, batched=True, adaptive_eps=True)
    assert cos(adaptive, s2 * exact) > 0.9


def test_batched_probes_equal_probes_one_at_a_time():
    model, batch = model_and_batch()
    a = estimate(model, batch, 6, eps=1e-4)
    b = estimate(model, batch, 6, eps=1e-4, batched=True)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-10)


def test_momentum_is_an_ema_of_the_estimates():
    runs = {}
    for beta in (0.0, 0.7):
        model, batch = model_and_batch()
        opt = ZerothOrderOptimizer(model.parameters(), lr=0.05, momentum=beta, seed=3)
        ws = [torch.cat([p.detach().flatten().clone() for p in model.parameters()])]
        for _ in range(2):
            opt.probe(model, loss_fn(batch))
            opt.step()
            ws.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
        runs[beta] = ws
        assert bool(opt.state) == (beta > 0)  # buffers only when asked for
    plain, ema = runs[0.0], runs[0.7]
    torch.testing.assert_close(ema[1], plain[1], rtol=0, atol=0)  # the first EMA is the estimate itself
    expected = ema[1] + 0.7 * (plain[1] - plain[0]) + 0.3 * (plain[2] - plain[1])
    torch.testing.assert_close(ema[2], expected, rtol=1e-10, atol=1e-12)


def test_a_tensor_fraction_perturbs_and_updates_only_a_random_subset():
    model, batch = model_and_batch()
    opt = ZerothOrderOptimizer(model.parameters(), lr=0.05, tensor_fraction=0.3)
    n = len(list(model.parameters()))
    moved_sets = []
    for _ in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        opt.probe(model, loss_fn(batch))
        active = list(opt._active)
        opt.step()
        moved = [t for t, (b, p) in enumerate(zip(before, model.parameters())) if not torch.equal(b, p.detach())]
        assert moved == active and len(active) == math.ceil(0.3 * n)
        moved_sets.append(tuple(moved))
    assert len(set(moved_sets)) > 1  # a new subset each step


def test_clipping_bounds_each_projected_gradient_and_weight_decay_is_decoupled():
    model, batch = model_and_batch()
    opt = ZerothOrderOptimizer(param_groups(model, 0.5), lr=0.1, clip=1e-3, num_directions=4)
    decayed = [p for p in opt.param_groups[0]["params"]]
    before = [p.detach().clone() for p in decayed]
    opt.probe(model, loss_fn(batch))
    raw = max(abs(c.item()) for _, c, _ in opt._probes)
    opt.step()
    stats = opt.pop_stats()
    assert raw > 1e-3 >= stats["zo_proj_grad"]
    # with the step clipped to ~nothing, a matrix shrinks by (1 - lr * wd)
    for b, p in zip(before, decayed):
        torch.testing.assert_close(p.detach(), b * (1 - 0.1 * 0.5), rtol=0, atol=1e-3 * 0.1 * 40)
    assert set(stats) >= {"zo_grad_norm", "zo_proj_std", "zo_loss_diff", "zo_eps", "zo_step_factor"}


def test_the_line_search_never_raises_the_batch_loss():
    model, batch = model_and_batch(dtype=torch.float32)
    opt = ZerothOrderOptimizer(model.parameters(), lr=0.5, line_search=True, difference="forward", seed=1)
    factors = []
    for _ in range(15):
        start = default_loss(model, batch).item()
        opt.probe(model, loss_fn(batch))
        opt.step()
        factors.append(opt.pop_stats()["zo_step_factor"])
        assert default_loss(model, batch).item() <= start + 1e-6
    assert any(f > 0 for f in factors)


def test_the_loss_falls_with_forward_passes_only():
    model, batch = model_and_batch(dtype=torch.float32, seed=1)
    batch = {"input_ids": batch["input_ids"][:1], "labels": batch["labels"][:1]}
    opt = ZerothOrderOptimizer(model.parameters(), lr=2e-3, eps=1e-3, num_directions=4, batched=True, seed=0)
    start = default_loss(model, batch).item()
    with torch.no_grad():
        for _ in range(300):
            opt.probe(model, loss_fn(batch))
            opt.step()
    assert default_loss(model, batch).item() < start - 0.5
    assert all(p.grad is None for p in model.parameters())
    assert opt.forward_passes == 300 * 8


def test_step_before_any_probe_is_refused():
    model, _ = model_and_batch()
    with pytest.raises(RuntimeError, match="before any probe"):
        ZerothOrderOptimizer(model.parameters(), lr=1e-3).step()
    with pytest.raises(ValueError, match="difference"):
        ZerothOrderOptimizer(model.parameters(), lr=1e-3, difference="backward")
