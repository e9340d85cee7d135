"""The engine's decode step compiled ahead of time (AOTInductor): Engine(model, compile="aot").

Why: on a CPU a compiled batch-1 decode step of a small model is ~150 us of kernels, and torch.compile's per-call
machinery around them (Dynamo's frame and guards, AOTAutograd's wrappers) adds ~40 us more a token. Here the step is
exported once per (batch, cache length) with torch.export and compiled by AOTInductor into a package that runs with no
Python between its kernels; the weights are constants inside it (frozen), the KV cache and the mask stay inputs it
writes in place. The engine hands over its step function, inductor options and attention decomposition (the same as
its torch.compile path's), so this module sits below it and knows nothing of it.

A compiled package can be kept and loaded by a later process (`load_step`, milliseconds): `step_key` names everything
the package depends on - the model's config and weights (`model_digest`), the source of the code that traced it,
the torch and transformers versions, the CPU, the shapes, the compiler options - for the engine's step store
(io/step_store.py).

What it needs: a cache whose layers are transformers' plain `StaticLayer` (their write index is a tensor); sliding
windows (whose layers keep Python ints) and dynamic depth (a data-dependent loop) are refused with a pointer to
compile=True.
"""

import copy
import functools
import hashlib
import inspect
import platform
from pathlib import Path

import torch
from torch import nn

FORMAT = 1  # of a stored step: raise it when what a step takes or returns changes


class ExportFailed(RuntimeError):
    """Exporting or compiling the step failed (Engine(compile="auto") then compiles with torch.compile, with a
    warning)."""


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


def compile_package(step, model, cache, example: tuple, options: dict, decompositions: dict, package_path=None) -> str:
    """Export `step` for these shapes and compile it with AOTInductor (inductor `options`, `decompositions` on top of
    the core ATen ones) into a package (at `package_path`, else in inductor's cache): its path. `load_step(path)` is
    a callable (token, position, slot, mask, *cache_tensors(cache)) -> the step's outputs that updates the mask and
    the cache tensors in place."""
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
        path = torch._inductor.aoti_compile_and_package(
            program, package_path=None if package_path is None else str(package_path), inductor_configs=options
        )
    except Exception as err:
        raise ExportFailed(
            f"exporting or compiling the decode step ahead of time failed ({type(err).__name__}: {str(err)[:300]}); "
            "Engine(model, compile=True) compiles it with torch.compile instead."
        ) from err
    return path


def load_step(path):
    """A package's step, through its C++ loader alone: ~3 ms, where torch._inductor's Python loader first imports
    ~1 s of modules. Its Python __call__ would also parse the input and output specs from JSON and flatten them on
    every call (~30 us, a fifth of a batch-1 step); the inputs here are already the flat list its loader runs on."""
    loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    run = loader.boxed_run
    return lambda *tensors: tuple(run(list(tensors)))


def model_digest(model) -> str:
    """The sha256 of the model's config and of every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256(model.config.to_json_string().encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def step_key(model, weights: str, step, shape: tuple, options: dict) -> dict:
    """Everything a compiled step depends on (`weights`: the model's model_digest): a package made under the same
    key computes the same step."""
    import transformers

    return {
        "format": FORMAT,
        "model": weights,
        "code": code_digest(inspect.getfile(type(model)), inspect.getfile(step)),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_identity(),
        "device": device_identity(next(model.parameters()).device),
        "shape": list(shape),
        "dtype": str(next(model.parameters()).dtype),
        "options": options,
    }


def device_identity(device) -> str:
    """The device a step runs on: "cpu", or a GPU's name and compute capability (a package holds its kernels)."""
    if device.type != "cuda":
        return device.type
    props = torch.cuda.get_device_properties(device)
    return f"cuda {props.name} sm_{props.major}{props.minor}"


@functools.cache
def code_digest(model_file: str, step_file: str) -> str:
    """The sha256 of the code a step is traced from: the model's package (every .py beside `model_file`), the file of
    the step function (with its decompositions) and this one."""
    sources = sorted(Path(model_file).parent.glob("*.py")) + [Path(step_file), Path(__file__)]
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()


@functools.cache
def cpu_identity() -> str:
    """This CPU's model and instruction sets: a package is built for the vector ISA of the machine it was made on."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    wanted = ("model name", "flags", "Features", "CPU part")
    found = {
        line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in info if line.startswith(wanted) and ":" in line
    }
    return hashlib.sha256(f"{platform.machine()} {sorted(found.items())}".encode()).hexdigest()
