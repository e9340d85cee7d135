"""The engine's decode step compiled ahead of time (AOTInductor): Engine(model, compile="aot").

Why: on a CPU a compiled batch-1 decode step of a small model is ~150 us of kernels, and torch.compile's per-call
machinery around them (Dynamo's frame and guards, AOTAutograd's wrappers) adds ~40 us more a token. Here the step is
exported once per (batch, cache length) with torch.export and compiled by AOTInductor into a package that runs with no
Python between its kernels; the weights are constants inside it (frozen), the KV cache and the mask stay inputs it
writes in place. The engine hands over its step function, inductor options and attention decomposition (the same as
its torch.compile path's), so this module sits below it and knows nothing of it.

What it needs: a cache whose layers are transformers' plain `StaticLayer` (their write index is a tensor); sliding
windows (whose layers keep Python ints) and dynamic depth (a data-dependent loop) are refused with a pointer to
compile=True.
"""

import copy

import torch
from torch import nn


class ExportFailed(RuntimeError):
    """Exporting or compiling the step failed (Engine(compile="auto") then decodes eagerly, with a warning)."""


def refusal(model, cache) -> str | None:
    """Why this model's decode step cannot be exported (None: it can)."""
    from transformers.cache_utils import StaticLayer

    from .model.early_exit import uses_dynamic_depth

    if uses_dynamic_depth(model.config):
        return "dynamic depth (early exit or layer dropout) decides per token how many layers run"
    if any(type(layer) is not StaticLayer for layer in cache.layers):
        return "its cache has sliding-window layers, whose fill level is a Python number, not a tensor"
    return None


def cache_tensors(cache) -> list[torch.Tensor]:
    """Per layer: keys, values, and the write index - what the exported step takes and updates in place."""
    return [t for layer in cache.layers for t in (layer.keys, layer.values, layer.cumulative_length)]


class DecodeStep(nn.Module):
    """`step(model, token, position, slot, mask, cache)` with the cache as plain tensors, so torch.export sees every
    state it mutates as an input. `frame` is a shallow copy of a prefilled cache: its layers take the tensors per call."""

    def __init__(self, model, frame, step):
        super().__init__()
        self.model, self.frame, self.step = model, frame, step

    def forward(self, token, position, slot, mask, *state):
        for i, layer in enumerate(self.frame.layers):
            layer.keys, layer.values, layer.cumulative_length = state[3 * i : 3 * i + 3]
        return self.step(self.model, token, position, slot, mask, self.frame)


def compile_step(step, model, cache, example: tuple, options: dict, decompositions: dict):
    """Export `step` for these shapes and compile it with AOTInductor (inductor `options`, `decompositions` on top of
    the core ATen ones): a callable (token, position, slot, mask, *cache_tensors(cache)) -> the step's outputs that
    updates the mask and the cache tensors in place."""
    from torch._decomp import core_aten_decompositions

    frame = copy.copy(cache)
    frame.layers = [copy.copy(layer) for layer in cache.layers]
    state = [t.clone() for t in cache_tensors(cache)]  # exporting runs the step: on copies, not on the live cache
    table = {**core_aten_decompositions(), **decompositions}
    options = {k: v for k, v in options.items() if k != "cpp_wrapper"}  # AOTInductor's output is C++ anyway
    try:
        with torch.no_grad():
            program = torch.export.export(DecodeStep(model, frame, step), tuple(t.clone() for t in example) + tuple(state))
        program = program.run_decompositions(table)
        package = torch._inductor.aoti_load_package(torch._inductor.aoti_compile_and_package(program, inductor_configs=options))
    except Exception as err:
        raise ExportFailed(
            f"exporting or compiling the decode step ahead of time failed ({type(err).__name__}: {str(err)[:300]}); "
            "Engine(model, compile=True) compiles it with torch.compile instead."
        ) from err
    # The package's __call__ parses its input and output specs from JSON and flattens them on every call (~30 us, a
    # fifth of a batch-1 step); the inputs here are already the flat list of tensors its loader runs on.
    run = package.loader.boxed_run
    return lambda *tensors: tuple(run(list(tensors)))
