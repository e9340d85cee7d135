"""`--mixed_precision auto`: the run's precision chosen by timing the run's own step, not by a table.

bf16 autocast is 1.4-1.6x faster than fp32 on a CPU with bf16 units (AVX-512 BF16, AMX) and ~80x slower on
one without (AVX2), and which GPU precision wins depends on the card; so the candidates are timed on the
machine. Each candidate first runs a one-row probe step (so a precision that is emulated in software costs
seconds, not minutes, to rule out), then the survivors are timed on full steps of the run's batch shape.
A precision is chosen over a more preferred one (fp32 first, then bf16, then fp16) only when it is
clearly faster: low precision changes the numbers, so it must pay for itself.
"""

import copy
import time
from dataclasses import dataclass, field

import torch

PREFERENCE = ("no", "bf16", "fp16")  # fp32 unless faster; bf16 needs no loss scaling, fp16 does
NAMES = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class PrecisionChoice:
    choice: str  # accelerate's name: "no", "bf16" or "fp16"
    seconds: dict = field(default_factory=dict)  # per full step, for the candidates that were timed
    dropped: dict = field(default_factory=dict)  # candidate -> why it was not timed

    def reason(self) -> str:
        """'bf16 autocast: 0.205 s per step vs fp32 0.331 s (1.61x faster), timed on this machine'."""
        if len(self.seconds) < 2 and not self.dropped:
            return f"{NAMES[self.choice]}: the only candidate on this device"
        mine = self.seconds[self.choice]
        others = [f"{NAMES[p]} {s:.3f} s" for p, s in self.seconds.items() if p != self.choice]
        others += [f"{NAMES[p]} {why}" for p, why in self.dropped.items()]
        label = NAMES[self.choice] + ("" if self.choice == "no" else " autocast")
        text = f"{label}: {mine:.3f} s per step vs " + ", ".join(others)
        if self.choice != "no" and "no" in self.seconds:
            text += f" ({self.seconds['no'] / mine:.2f}x faster than fp32)"
        return text + ", timed on this machine"


def candidates_for(device: torch.device, zeroth_order: bool = False) -> list[str]:
    """fp32 and bf16 on CPUs; on accelerators also fp16 (as accelerate offers), unless the run has no
    gradients to scale (zeroth-order training refuses fp16) or the GPU lacks bf16."""
    if device.type == "cpu":
        return ["no", "bf16"]
    found = ["no"]
    if device.type != "cuda" or torch.cuda.is_bf16_supported():
        found.append("bf16")
    if not zeroth_order:
        found.append("fp16")
    return found


def choose_precision(
    candidates, run_step, clock=time.perf_counter, steps: int = 3, give_up: float = 3.0, margin: float = 0.05
) -> PrecisionChoice:
    """Time `run_step(precision, full)` for each candidate and keep the fastest.

    run_step(p, full=False) is a one-row probe; a candidate whose probe takes more than `give_up` times the
    fastest probe is dropped untimed. Survivors run one warm-up each, then `steps` rounds of one timed full
    step each, interleaved; a candidate's best step counts (the least disturbed by anything else running). A candidate later in PREFERENCE wins
    only when more than `margin` faster than the best earlier one.
    """
    order = sorted(candidates, key=PREFERENCE.index)

    def probe(p):
        t0 = clock()
        run_step(p, False)
        return clock() - t0

    probes = {p: probe(p) for p in order}
    for p in order:  # a second look before ruling one out: a passing load must not decide
        if probes[p] > give_up * min(probes.values()):
            probes[p] = min(probes[p], probe(p))
    fastest_probe = min(probes.values())
    result = PrecisionChoice(choice=order[0])
    timed = []
    for p in order:
        if probes[p] > give_up * fastest_probe:
            result.dropped[p] = f"probe {probes[p] / fastest_probe:.0f}x slower, not timed"
        else:
            run_step(p, True)  # warm-up: first-call allocations and kernel choices
            timed.append(p)
    times = {p: [] for p in timed}
    for _ in range(steps):  # interleaved, so a passing load on the machine slows every candidate alike
        for p in timed:
            t0 = clock()
            run_step(p, True)
            times[p].append(clock() - t0)
    result.seconds = {p: min(t) for p, t in times.items()}
    best = None
    for p in order:  # preference order: a later one must beat the best so far by the margin
        if p in result.seconds and (best is None or result.seconds[p] < (1 - margin) * result.seconds[best]):
            best = p
    result.choice = best
    return result


def autocast_dtype(precision: str):
    """torch.autocast's dtype for accelerate's precision name; None for fp32 ('no')."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def time_model_step(model, batch_size: int, block_size: int, device, with_grad: bool = True):
    """A `run_step` for choose_precision: forward (+ backward) of a copy of `model` on random tokens of the
    run's shape. The copy and the tokens draw from a forked RNG, so the run's own draws do not move."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        twin = copy.deepcopy(model).to(device).train()
        ids = torch.randint(0, twin.config.vocab_size, (batch_size, block_size), device=device)

    forks = [device] if device.type == "cuda" else []

    def run_step(precision: str, full: bool):
        x = ids if full else ids[:1]
        dtype = autocast_dtype(precision)
        with torch.random.fork_rng(devices=forks), torch.set_grad_enabled(with_grad):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = twin(input_ids=x, labels=x, use_cache=False).loss
            if with_grad:
                loss.backward()
                twin.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    return run_step
