"""Zeroth-order training: the gradient estimated from forward passes alone (SPSA, Spall 1992; MeZO,
Malladi et al. 2023), as an optimizer the training loop steps like AdamW.

Design choices:
- The stored weights are never written by a probe. A probe runs the model with w + eps*u in place of
  w through forward hooks: a module's perturbed tensors exist only while that module runs (one
  module's worth of extra memory, no autograd graph), and the weights stay bit-exact, with no copy
  kept. u = s * z, z ~ N(0, I) regenerated from its seed whenever it is needed (never stored);
  s = 1, or each tensor's RMS with `zo_adaptive_eps` (the probe size follows the tensor's scale).
- Per direction j the projected gradient is c_j = (L(w + eps u_j) - L(w - eps u_j)) / (2 eps)
  (central) or (L(w + eps u_j) - L(w)) / eps (forward); the estimate is g = mean_j c_j u_j, whose
  expectation is E[u u^T] grad = s^2 * grad. The step regenerates each u_j tensor by tensor.
- Directions are indexed by (micro-batch, process, k): every micro-batch of an accumulation and
  every process probes its own directions on its own batch. At the step the scalars c_j are
  gathered (P*A*K floats) and summed in index order, so every process applies the same update (no
  gradient all-reduce) and N processes equal N-fold accumulation, as with backprop.
- A direction's seed is a function of (seed, step, index), so a resumed run draws the same
  directions; the state is the step count and, with `zo_momentum`, the EMA buffers.
- Options (TrainArguments.zo_*): forward differences, K directions per micro-batch (one at a time,
  or all 2K probes in one vmap'd forward), a random subset of tensors per step, an EMA of the
  estimate, clipping of each c_j, decoupled weight decay (matrices, as AdamW here), a line search
  along the step, and the loop's warmup/decay schedule on the learning rate.
"""

import contextlib
import math
import warnings

import torch
from torch import nn

_M64 = (1 << 64) - 1
LINE_SEARCH_FACTORS = (0.5, 1.0, 2.0)


def _scalar(loss: torch.Tensor) -> torch.Tensor:
    """The loss as a detached scalar of at least float32 (a float64 model keeps float64 differences)."""
    return loss.detach().to(torch.promote_types(loss.dtype, torch.float32))


def mix_seed(*values: int) -> int:
    """splitmix64 over the values: well-separated generator seeds from (seed, step, direction, tensor)."""
    h = 0
    for v in values:
        h = (h + (int(v) & _M64) + 0x9E3779B97F4A7C15) & _M64
        z = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


class _LossOf(nn.Module):
    """`loss_fn(model)` as a module, so `functional_call` can swap the model's weights under vmap."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self):
        return self.loss_fn(self.model)


class ZerothOrderOptimizer(torch.optim.Optimizer):
    """SPSA / MeZO. Call `probe(model, loss_fn)` once per micro-batch (forward passes only), then `step()`.

    `loss_fn(model) -> scalar loss tensor` on the micro-batch. Param groups as for AdamW (lr, weight_decay);
    the learning-rate scheduler acts on them as usual.
    """

    def __init__(
        self,
        params,
        lr: float,
        eps: float = 1e-3,
        num_directions: int = 1,
        difference: str = "central",
        adaptive_eps: bool = False,
        tensor_fraction: float = 1.0,
        momentum: float = 0.0,
        clip: float = 0.0,
        line_search: bool = False,
        batched: bool = False,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
    ):
        if difference not in ("central", "forward"):
            raise ValueError(f"difference={difference!r}: choose 'central' or 'forward'.")
        super().__init__(params, dict(lr=lr, weight_decay=0.0, zo_step=0))
        self.eps, self.num_directions, self.difference = eps, num_directions, difference
        self.adaptive_eps, self.tensor_fraction, self.momentum, self.clip = adaptive_eps, tensor_fraction, momentum, clip
        self.line_search, self.batched, self.seed = line_search, batched, seed
        self.process_index, self.num_processes = process_index, num_processes
        self._params = [p for g in self.param_groups for p in g["params"]]  # index t of a tensor = its seed slot
        self._index = {id(p): t for t, p in enumerate(self._params)}
        self._group_of = {id(p): g for g in self.param_groups for p in g["params"]}
        self.forward_passes = 0  # by this process
        self._reset_step()
        self._stats, self._stat_steps = {}, 0

    # ------------------------------------------------------------------ the direction of index j
    @property
    def step_count(self) -> int:
        return self.param_groups[0]["zo_step"]

    def _reset_step(self):
        self._probes = []  # (direction index j, c_j, |loss difference|) of this step, this process
        self._micro = 0
        self._active = self._scales = None
        self._reference = None  # loss at w on the last micro-batch (line search)
        self._last_loss_fn = self._last_model = None

    def begin_step(self):
        """The tensors this step perturbs and their scales (fixed for the whole step)."""
        n = len(self._params)
        k = n if self.tensor_fraction >= 1 else max(1, math.ceil(self.tensor_fraction * n))
        if k < n:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.step_count, 0xA11))
            self._active = sorted(torch.randperm(n, generator=g)[:k].tolist())
        else:
            self._active = list(range(n))
        self._scales = {
            t: (max(self._params[t].detach().float().pow(2).mean().sqrt().item(), 1e-3) if self.adaptive_eps else 1.0)
            for t in self._active
        }

    def direction(self, t: int, j: int) -> torch.Tensor:
        """u_j for tensor t at the current step: s_t * z, z drawn from the seed of (step, j, t)."""
        p = self._params[t]
        g = torch.Generator(device=p.device).manual_seed(mix_seed(self.seed, self.step_count, j, t))
        z = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)
        return (z * self._scales[t]).to(p.dtype)

    # ------------------------------------------------------------------ running the model at w + offset
    @contextlib.contextmanager
    def offset_weights(self, model: nn.Module, offset):
        """Inside, `model` computes with w_t + offset(t) for every active tensor t; w itself is untouched."""
        active = set(self._active)
        owned = {}
        for module in model.modules():
            slots = [
                (name, p)
                for name, p in module._parameters.items()
                if p is not None and id(p) in self._index and self._index[id(p)] in active
            ]
            if slots:
                owned[module] = slots

        def swap_in(module, args):
            for name, p in owned[module]:
                module._parameters[name] = p.detach() + offset(self._index[id(p)])

        def swap_back(module, args, output):
            for name, p in owned[module]:
                module._parameters[name] = p

        handles = [h for m in owned for h in (m.register_forward_pre_hook(swap_in), m.register_forward_hook(swap_back))]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for module, slots in owned.items():
                for name, p in slots:
                    module._parameters[name] = p

    def _loss_at(self, model, loss_fn, offset) -> torch.Tensor:
        self.forward_passes += 1
        with self.offset_weights(model, offset):
            return _scalar(loss_fn(model))

    # ------------------------------------------------------------------ one micro-batch
    @torch.no_grad()
    def probe(self, model: nn.Module, loss_fn) -> torch.Tensor:
        """Forward passes along this micro-batch's directions; returns the loss at w (its estimate, for central)."""
        if self._active is None:
            self.begin_step()
        K, P, a = self.num_directions, self.num_processes, self._micro
        js = [(a * P + self.process_index) * K + k for k in range(K)]
        eps = self.eps
        base = None
        if self.difference == "forward":
            self.forward_passes += 1
            base = _scalar(loss_fn(model))
        if self.batched:
            plus, minus = self._batched_losses(model, loss_fn, js)
        else:
            plus = torch.stack([self._loss_at(model, loss_fn, lambda t, j=j: eps * self.direction(t, j)) for j in js])
            minus = (
                torch.stack([self._loss_at(model, loss_fn, lambda t, j=j: -eps * self.direction(t, j)) for j in js])
                if base is None
                else None
            )
        if base is None:
            coeff, diff, loss = (plus - minus) / (2 * eps), (plus - minus).abs(), ((plus + minus) / 2).mean()
        else:
            coeff, diff, loss = (plus - base) / eps, (plus - base).abs(), base
        self._probes += [(j, c, d) for j, c, d in zip(js, coeff, diff)]
        self._micro += 1
        self._reference, self._last_loss_fn, self._last_model = loss, loss_fn, model
        return loss

    def _batched_losses(self, model, loss_fn, js):
        """All probes of this micro-batch in one forward: the perturbed weights stacked along a vmap dimension."""
        from torch.func import functional_call, vmap

        names = {id(p): n for n, p in model.named_parameters()}
        signs = [1.0] * len(js) + ([-1.0] * len(js) if self.difference == "central" else [])
        probes = js + (js if self.difference == "central" else [])
        stacked = {}
        for t in self._active:
            p = self._params[t].detach()
            stacked["model." + names[id(self._params[t])]] = torch.stack(
                [p + s * self.eps * self.direction(t, j) for s, j in zip(signs, probes)]
            )
        wrapper = _LossOf(model, loss_fn)
        self.forward_passes += len(probes)
        with warnings.catch_warnings():  # CPU SDPA has no batching rule: vmap loops over it (right, but slower)
            warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
            losses = _scalar(vmap(lambda w: functional_call(wrapper, w, ()), randomness="same")(stacked))
        return losses[: len(js)], (losses[len(js) :] if self.difference == "central" else None)

    # ------------------------------------------------------------------ the update
    def _gathered(self):
        j = torch.tensor([p[0] for p in self._probes], dtype=torch.long)
        c = torch.stack([p[1] for p in self._probes]).double().cpu()
        d = torch.stack([p[2] for p in self._probes]).double().cpu()
        if self.num_processes > 1:
            import torch.distributed as dist

            device = self._params[0].device if dist.get_backend() != "gloo" else torch.device("cpu")
            parts = []
            for x in (j.double(), c, d):
                out = [torch.zeros_like(x, device=device) for _ in range(self.num_processes)]
                dist.all_gather(out, x.to(device))
                parts.append(torch.cat(out).cpu())
            j, c, d = parts[0].long(), parts[1], parts[2]
        order = torch.argsort(j)
        return j[order].tolist(), c[order], d[order]

    def _estimate(self, t, js, coeffs):
        """g_t = mean_j c_j u_{j,t}, in index order (the same sum on every process)."""
        g = torch.zeros_like(self._params[t])
        for j, c in zip(js, coeffs.tolist()):
            g.add_(self.direction(t, j), alpha=c)
        return g.div_(len(js))

    @torch.no_grad()
    def step(self, closure=None):
        if not self._probes:
            raise RuntimeError("ZerothOrderOptimizer.step() before any probe(model, loss_fn): nothing to step with.")
        js, coeffs, diffs = self._gathered()
        coeffs = coeffs.clamp(-self.clip, self.clip) if self.clip > 0 else coeffs
        ema = self.momentum > 0
        direction = {}
        if ema:  # the EMA buffers are the direction; without them it is regenerated from the seeds when needed
            for t in self._active:
                state = self.state[self._params[t]]
                g = self._estimate(t, js, coeffs)
                if "zo_ema" not in state:
                    state["zo_ema"] = g
                else:
                    state["zo_ema"].mul_(self.momentum).add_(g, alpha=1 - self.momentum)
                direction[t] = state["zo_ema"]
        step_dir = (lambda t: direction[t]) if ema else (lambda t: self._estimate(t, js, coeffs))
        factor = self._search(step_dir) if self.line_search else 1.0
        sq = 0.0
        for t in self._active:
            p = self._params[t]
            d = step_dir(t)
            sq += float(d.float().pow(2).sum())
            if factor:
                p.add_(self._update(t, d, factor))
        self._record(
            zo_grad_norm=math.sqrt(sq),
            zo_proj_grad=float(coeffs.abs().mean()),
            zo_proj_std=float(coeffs.std()) if len(coeffs) > 1 else 0.0,
            zo_loss_diff=float(diffs.mean()),
            zo_eps=self.eps * sum(self._scales.values()) / len(self._scales),
            zo_step_factor=factor,
            zo_tensors=len(self._active),
        )
        for g in self.param_groups:
            g["zo_step"] += 1
        self._reset_step()

    def _update(self, t: int, d: torch.Tensor, factor: float) -> torch.Tensor:
        """What the step adds to tensor t: -lr * (factor * d + weight_decay * w) (decoupled decay, as AdamW)."""
        p, group = self._params[t], self._group_of[id(self._params[t])]
        out = d * (-group["lr"] * factor)
        if group["weight_decay"]:
            out.add_(p.detach(), alpha=-group["lr"] * group["weight_decay"])
        return out

    def _search(self, step_dir) -> float:
        """The factor of lr, among LINE_SEARCH_FACTORS, whose update gives the lowest loss on the last
        micro-batch; 0 (no update, only the seeds advance) when none is below the loss at w."""
        best, best_loss = 0.0, float(self._reference)
        for f in LINE_SEARCH_FACTORS:
            loss = float(self._loss_at(self._last_model, self._last_loss_fn, lambda t, f=f: self._update(t, step_dir(t), f)))
            if loss < best_loss:
                best, best_loss = f, loss
        return best

    def _record(self, **values):
        for k, v in values.items():
            self._stats[k] = self._stats.get(k, 0.0) + v
        self._stat_steps += 1

    def pop_stats(self) -> dict:
        """Each statistic averaged over the steps since the last call (what the loop logs)."""
        out = {k: v / self._stat_steps for k, v in self._stats.items()} if self._stat_steps else {}
        self._stats, self._stat_steps = {}, 0
        return out
