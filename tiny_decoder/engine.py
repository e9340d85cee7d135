"""A decode engine: the model's own forward and cache, without generate()'s per-step machinery.

    from tiny_decoder.engine import Engine
    new_tokens = Engine(model).generate([[0, 412, 88], [0, 7]], max_new_tokens=100, temperature=0.8, top_k=50, seed=0)

Design choices (nanochat's Engine and gpt-fast are the anchors):
- One preallocated static KV cache (transformers' `StaticCache`) for the whole batch: prompts of different lengths are
  left-padded and masked, positions count real tokens only (as generate() does), so greedy decoding gives exactly
  generate()'s tokens.
- One decode step is a function (token, position, slot, mask) -> (next-token logits, their argmax); it marks the new
  token's own slot in the mask itself. With `compile=True` it gets the whole-cache mask, so its shapes are fixed and
  torch.compile traces it once per (batch, cache bucket) (the static cache's write index is a tensor). On CPU the
  compiled step is dozens of microsecond-sized kernels, so every fixed cost counts: inductor's C++ wrapper calls them
  without a Python line each; the weights are frozen into the step (inductor's `freezing`) and its matrix-vector
  products are inductor's own generated C++ GEMMs, chosen by measurement (`max_autotune`; MKL's path for one row
  was the largest single cost of a step on an AMD CPU), and projections of the same input (q/k/v, gate/up) are
  concatenated into one GEMM at compile time (fused QKV / gate-up without changing the model); attention for the
  one new query is a multiply-reduce over the cache that inductor fuses (`one_query_attention`), not the CPU flash
  kernel's BLAS call per row and head. Frozen weights are a copy: an Engine refuses a model whose weights changed
  since it compiled (make a new one).
  Each Engine compiles its own copy of the step (torch.compile caches per code object), so Dynamo's per-call guards
  can be cut to the tensor guards (shapes, dtypes, devices): the step is microseconds of kernels and the full guard set
  over every module attribute cost ~20 % of it. What the dropped guards watched - the model's structure - is checked
  once per `generate` call instead: a model whose config changed needs a new Engine.
- The host loop does as little as it can per token: the greedy token comes out of the step, positions and slots are
  made once per call, and whether every row has stopped is read every STOP_CHECK steps (rows past their EOS decode on
  and are cut afterwards; rows never see each other, so the others' tokens are unchanged).
- `compile="aot"`: the same step exported (torch.export) and compiled ahead of time by AOTInductor (aot_step.py),
  called with its flat tensors: no Dynamo frame, guards or wrappers per token, the fastest step on a CPU
  (bench/engine.py). Models whose cache has Python state (sliding windows) or whose depth varies per token are refused.
- `compile="auto"` (the default) decodes eagerly until the model has run AUTO_COMPILE_STEPS steps, then compiles -
  ahead of time on CPU where the model exports, with torch.compile otherwise: compiling costs seconds, which only
  long or repeated use pays back. On CPU the ahead-of-time step is kept on disk (io/step_store.py, ~/.cache/
  tiny_decoder/aot), and the steps are counted there too, per model (its config and weights) and machine: a later
  process - a script run again, a Space restarted - loads the stored step in milliseconds and decodes at the
  compiled speed from its first token; a model decoded a few tokens at a time in many processes is compiled once
  they add up to AUTO_COMPILE_STEPS. `keep_compiled=False` keeps and reads nothing there.
- Sampling stays on the device: temperature, top-k, top-p, repetition penalty, a torch.Generator per call (seed).
- Each row stops at its EOS; the loop ends when every row has stopped or max_new_tokens is reached; `stream` is
  called with (row, token) for every new token as it is made.
It is a faster path, not a second model: `generate()` stays the public, documented way. Variants whose attention
cannot use a static cache (linear attention: it sums over every cached slot) are refused; all others work.
"""

import itertools
import types

import torch

from . import aot_step
from .io.step_store import StepStore, remove_temporary

_ENGINES = itertools.count()
CACHE_BUCKET = 64  # compiled steps are traced for cache lengths in multiples of this
STOP_CHECK = 8  # without a stream, whether every row has made its EOS is read (a host sync) every this many steps
# The compiled step on CPU: the C++ wrapper, frozen weights, inductor's C++ GEMMs where they measure faster than ATen's.
# The frozen projections that read the same input (q/k/v, gate/up) become one GEMM each (`cpp.enable_concat_linear`).
CPU_COMPILE_OPTIONS = {
    "cpp_wrapper": True,
    "freezing": True,
    "cpp.enable_concat_linear": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
}
# compile="auto": the model's eager decode steps after which an Engine compiles. Renting before buying: by then eager
# decoding has cost about what compiling does (bench/engine.py --break_even on a 2-core CPU, AOTInductor: 19.6 s of
# compilation - frozen weights and the GEMM search are not in inductor's caches - against 2.32 -> 0.17 ms a step at
# batch 1, break-even ~9,100 steps; batch 32 ~5,500; torch.compile's step 9,300 / 8,400), so a run costs at most about
# twice the better of the two choices made in hindsight. On CPU the purchase is kept (io/step_store.py) and the steps
# are counted per model on the machine, so the rule holds across processes; loading a stored step costs 0.02-0.04 s.
AUTO_COMPILE_STEPS = 10_000


class Engine:
    """`compile`: True (every call through torch.compile's step), "aot" (through AOTInductor's), False (never), or
    "auto" (the default): eager until the model has run AUTO_COMPILE_STEPS decode steps (in this Engine, or on this
    machine where its step can be stored), compiled from the next call on (AOTInductor on CPU where the model
    exports; torch.compile, with a warning, where exporting fails) - compiling costs seconds, which only a long run
    or many calls pay back - and eager again, with a warning, if compiling fails. Under "auto" and "aot" a step
    compiled ahead of time is kept in `cache_dir` (default $TINY_DECODER_CACHE/aot, ~/.cache/tiny_decoder/aot) and
    loaded from there by later Engines of the same model, shape and machine; `keep_compiled=False`: neither."""

    def __init__(self, model, compile: bool | str = "auto", cache_dir=None, keep_compiled: bool = True):
        if compile not in (True, False, "auto", "aot"):
            raise ValueError(f"compile={compile!r} must be True, False, 'auto' or 'aot'.")
        self.model = model.eval()
        self.config = model.config
        self.compile = compile
        self.store = StepStore(cache_dir) if keep_compiled else None
        self.eager_steps = 0  # decode steps run without the compiled step ("auto" counts them)
        self._weights = None  # (what _traced_for said, the model's digest then): hashed again only after a change
        self._compiled_for = None  # the config and weights the compiled step was traced for
        self._compiled = None  # this Engine's compiled step, made at its first use
        self._traced = set()  # the (batch, cache length) shapes it has been traced for (one graph each)
        self._aot_steps = {}  # compile="aot": (batch, cache length) -> that shape's AOTInductor step
        self._aot_ok = True  # False once exporting failed under "auto" (torch.compile's step is used instead)
        if getattr(self.config, "attention_type", "softmax") == "linear":
            raise ValueError(
                "attention_type='linear' sums over every cached slot, so it cannot use the engine's static cache; "
                "use model.generate() (the dynamic cache) for this model."
            )

    def _use_compiled(self, shape, device) -> tuple[bool, str | None]:
        """Whether this call (its mask's `shape`) runs the compiled step - always under True and "aot"; under "auto"
        once the model's eager steps reach AUTO_COMPILE_STEPS, or at once where its step for this shape is stored -
        and the model's id in the store where an eager call's steps are counted there (else None)."""
        if self.compile != "auto" or self.eager_steps >= AUTO_COMPILE_STEPS or shape in self._aot_steps:
            return self.compile in (True, "aot", "auto"), None
        if not self._storable(device):
            return False, None
        model_id = self._model_id()
        if self._stored_step(shape, device, model_id) is not None:
            return True, None
        self.eager_steps = max(self.eager_steps, self.store.steps(model_id))
        return self.eager_steps >= AUTO_COMPILE_STEPS, model_id

    def _storable(self, device) -> bool:
        """Whether this model's compiled step would be AOTInductor's, kept in the store (CPU, exportable)."""
        from transformers import StaticCache

        if self.store is None or device.type != "cpu" or not self._aot_ok:
            return False
        return aot_step.refusal(self.model, StaticCache(config=self.config, max_cache_len=1)) is None

    def _model_id(self) -> str:
        """The sha256 of the model's config and weights (aot_step.model_digest), hashed again only after a change."""
        traced_for = self._traced_for()
        if self._weights is None or self._weights[0] != traced_for:
            self._weights = (traced_for, aot_step.model_digest(self.model))
        return self._weights[1]

    def _key(self, shape, device, model_id=None) -> dict:
        options = CPU_COMPILE_OPTIONS if device.type == "cpu" else {}
        return aot_step.step_key(self.model, model_id or self._model_id(), decode, shape, options)

    def _stored_step(self, shape, device, model_id=None):
        """The stored AOTInductor step for this (batch, cache length), loaded (None: none is stored, or it failed
        to load - then it is compiled anew and replaces the stored one)."""
        path = self.store.find(self._key(shape, device, model_id))
        if path is None:
            return None
        try:
            step = aot_step.load_step(path)
        except Exception as err:
            import warnings

            warnings.warn(f"Engine: the stored decode step {path} did not load ({err}); compiling it again.", stacklevel=4)
            return None
        self._aot_steps[shape] = step
        return step

    def _cache_length(self, needed: int, compiled: bool) -> int:
        """Compiled: the cache length rounded up to a multiple of CACHE_BUCKET (within the context), so prompts and
        max_new_tokens of other lengths reuse the traced step (a new length costs a compilation, seconds); the
        slots past the run stay masked. Eager: exactly what the run needs."""
        if not compiled:
            return needed
        limit = getattr(self.config, "max_position_embeddings", None) or needed
        return max(needed, min(-(-needed // CACHE_BUCKET) * CACHE_BUCKET, limit))

    def _compiled_step(self, device):
        """torch.compile of this Engine's own copy of `_decode`, guarded on its tensors only."""
        func = self._decode.__func__
        code = func.__code__.replace(co_name=f"_decode_engine_{next(_ENGINES)}")  # a cache of its own in Dynamo
        own = types.MethodType(types.FunctionType(code, func.__globals__, code.co_name, func.__defaults__), self)
        guards = {"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe}
        if device.type != "cpu":
            return torch.compile(own, fullgraph=True, dynamic=False, options=guards)
        return torch.compile(own, fullgraph=True, dynamic=False, backend=inductor_one_query_attention, options=guards)

    def _traced_for(self):
        """What the compiled step assumes: the config (its structure) and the weights it froze (each tensor's
        storage and in-place version, so training, load_state_dict or pruning after compiling is seen)."""
        tensors = itertools.chain(self.model.parameters(), self.model.buffers())
        return self.config.to_json_string(use_diff=False), [(t.data_ptr(), t._version) for t in tensors]

    def _compiled_call(self, token, position, slot, mask, cache) -> tuple[bool, tuple | None]:
        """The compiled step on the whole mask (one shape for every step); under "auto", a failed compilation
        (e.g. no C++ compiler) turns this Engine eager with a warning: (False, None)."""
        try:
            if self._ahead_of_time(mask, cache):
                return True, self._aot_call(token, position, slot, mask, cache)
            if mask.shape in self._traced:
                return True, self._compiled(token, position, slot, mask, cache)
            # A call that traces and compiles, under the CPU options: Dynamo reads inductor's config (freezing decides
            # whether the weights become constants) while tracing, so options given to torch.compile come too late
            # for it; patching costs ~30 us, so only here.
            import torch._inductor.config as inductor_config

            with inductor_config.patch(CPU_COMPILE_OPTIONS if mask.device.type == "cpu" else {}):
                out = self._compiled(token, position, slot, mask, cache)
            self._traced.add(mask.shape)
            return True, out
        except Exception as err:
            import warnings

            if self.compile == "auto" and isinstance(err, aot_step.ExportFailed) and self._aot_ok:
                warnings.warn(f"Engine: the decode step is compiled with torch.compile instead ({err})", stacklevel=3)
                self._aot_ok = False  # this model does not export: torch.compile's step from now on
                return self._compiled_call(token, position, slot, mask, cache)
            if self.compile != "auto" or not isinstance(err, torch._dynamo.exc.BackendCompilerFailed | aot_step.ExportFailed):
                raise

            warnings.warn(f"Engine: compiling the decode step failed ({type(err).__name__}); decoding eagerly.", stacklevel=3)
            self.compile = False
            return False, None

    def _ahead_of_time(self, mask, cache) -> bool:
        """Whether this call's step is AOTInductor's: always under "aot"; under "auto", on CPU for a model it can
        export (the faster of the two compiled steps there: bench/engine.py); torch.compile otherwise."""
        if self.compile == "aot" or mask.shape in self._aot_steps:
            return True
        if self.compile != "auto" or not self._aot_ok or mask.shape in self._traced or mask.device.type != "cpu":
            return False  # (a shape torch.compile already serves is not asked again, step after step)
        return aot_step.refusal(self.model, cache) is None

    def _aot_call(self, token, position, slot, mask, cache):
        """compile="aot": this shape's step, exported and compiled ahead of time at its first use (aot_step.py)."""
        step = self._aot_steps.get(mask.shape)
        if step is None:
            reason = aot_step.refusal(self.model, cache)
            if reason is not None:
                raise ValueError(f"compile='aot' cannot export this model's decode step: {reason}; use compile=True.")
            step = self._stored_step(mask.shape, mask.device) if self.store is not None else None
            if step is None:
                step = self._compile_ahead_of_time(token, position, slot, mask, cache)
                self._aot_steps[mask.shape] = step
        return step(token, position, slot, mask, *aot_step.cache_tensors(cache))

    def _compile_ahead_of_time(self, token, position, slot, mask, cache):
        """Export and compile this shape's step into a package - kept in the store, if this Engine keeps one - and
        load it."""
        options = CPU_COMPILE_OPTIONS if mask.device.type == "cpu" else {}
        example = (token, position, slot, mask)

        def write(path=None):
            return aot_step.compile_package(decode, self.model, cache, example, options, one_query_decomposition(), path)

        if self.store is None:
            return aot_step.load_step(write())
        about = {"what": "tiny-decoder Engine decode step (AOTInductor package)", "batch, cache length": list(mask.shape)}
        path = self.store.save(self._key(mask.shape, mask.device), write, about)
        step = aot_step.load_step(path)
        remove_temporary(path)  # where the store could not keep it
        return step

    def _decode(self, token, position, slot, mask, cache):
        return decode(self.model, token, position, slot, mask, cache)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        repetition_penalty: float = 1.0,
        eos_token_id: int | None = None,
        stream=None,
    ) -> list[list[int]]:
        """Per prompt (a list of token ids), the new token ids, ending with the EOS if one was made
        (temperature 0 = greedy). `eos_token_id` defaults to the config's."""
        self._check(prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        cfg, device = self.config, next(self.model.parameters()).device
        shape = (len(prompts), self._cache_length(max(map(len, prompts)) + max_new_tokens, compiled=True))
        compiled, counted_as = self._use_compiled(shape, device)
        if compiled:
            self._ready_compiled_step()
        eager_before = self.eager_steps
        eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
        ids, lengths, mask, cache, logits = self._prefill(prompts, max_new_tokens, compiled, device)
        batch, width = ids.shape
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        seen = None  # tokens already in each row, for the repetition penalty only
        if repetition_penalty != 1.0:
            seen = torch.zeros(batch, cfg.vocab_size, dtype=torch.bool, device=device)
            seen.scatter_(1, ids, mask[:, :width].bool())
        greedy = temperature == 0 and repetition_penalty == 1.0
        steps = torch.arange(max_new_tokens, device=device)
        position_at = (lengths[None, :, None] + steps[:, None, None]).unbind(0)  # step i's (B, 1) input positions
        slot_at = (width + steps)[:, None].unbind(0)  # and its mask column, (1,)
        made, alive = [], [True] * batch  # alive: rows without their EOS yet, kept on the host when streaming
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        best = logits.argmax(-1)
        for i in range(max_new_tokens):
            token = best if greedy else sample(logits.float(), temperature, top_k, top_p, repetition_penalty, seen, generator)
            made.append(token)
            if seen is not None:
                seen.scatter_(1, token[:, None], True)
            if stream is not None:  # a host read per step anyway: the stop check rides on it
                for row, value in enumerate(token.tolist()):
                    if alive[row]:
                        stream(row, value)
                        alive[row] = value != eos
                if not any(alive):
                    break
            elif eos is not None and i % STOP_CHECK == STOP_CHECK - 1:
                done |= (torch.stack(made[-STOP_CHECK:]) == eos).any(0)
                if bool(done.all()):
                    break
            if i == max_new_tokens - 1:
                break
            step = (token[:, None], position_at[i], slot_at[i])
            if compiled:
                compiled, out = self._compiled_call(*step, mask, cache)
            if not compiled:  # the slots filled so far, as generate() passes them
                out = self._decode(*step, mask[:, : width + i + 1], cache)
                self.eager_steps += 1
            logits, best = out
        if counted_as is not None and self.eager_steps > eager_before:  # the model's eager steps on this machine
            self.eager_steps = max(self.eager_steps, self.store.count(counted_as, self.eager_steps - eager_before))
        return [cut(row, eos) for row in torch.stack(made, 1).tolist()]

    def _ready_compiled_step(self):
        """Make this Engine's compiled step at its first use; refuse a model that changed since it was traced."""
        traced_for = self._traced_for()
        if self._compiled is None:
            self._compiled, self._compiled_for = self._compiled_step(next(self.model.parameters()).device), traced_for
        elif traced_for != self._compiled_for:
            what = "config" if traced_for[0] != self._compiled_for[0] else "weights"
            raise ValueError(
                f"the model's {what} changed since this Engine compiled its decode step (it holds what it was "
                "traced for: e.g. set_early_exit, training, load_state_dict); make a new Engine(model) for the "
                "model as it is now."
            )

    def _prefill(self, prompts, max_new_tokens, compiled, device):
        """The left-padded prompts through the model into a fresh static cache: (ids (B, W), lengths (B,), the
        (B, L) mask over the whole cache, the cache, the (B, V) logits of each row's first new token)."""
        from transformers import StaticCache

        cfg = self.config
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        batch, width = len(prompts), int(lengths.max())
        total = self._cache_length(width + max_new_tokens, compiled)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
        mask = torch.zeros(batch, total, dtype=torch.long, device=device)
        mask[:, :width] = (torch.arange(width, device=device) >= (width - lengths)[:, None]).long()
        cache = StaticCache(config=cfg, max_cache_len=total)
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask[:, :width], cache=cache, use_cache=True)
        if compiled and device.type == "cpu":
            unpin(cache)
        return ids, lengths, mask, cache, out.logits[:, -1]

    def _check(self, prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty):
        """Every argument, before any tensor is made: one message naming the value and what is allowed."""
        import math
        import numbers

        def integer(value):
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)

        def number(value):
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        if not prompts or any(not hasattr(p, "__len__") or len(p) == 0 for p in prompts):
            raise ValueError("Engine.generate needs one or more prompts, each a list of at least one token id.")
        vocab = self.config.vocab_size
        for row, prompt in enumerate(prompts):
            bad = [t for t in prompt if not integer(t) or not 0 <= t < vocab]
            if bad:
                raise ValueError(
                    f"prompt {row} holds {bad[0]!r}, not a token id of this model: ids are integers in [0, {vocab})."
                )
        if not integer(max_new_tokens) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1.")
        longest = max(map(len, prompts)) + max_new_tokens
        limit = getattr(self.config, "max_position_embeddings", None)
        if limit is not None and longest > limit:
            raise ValueError(
                f"the longest prompt plus max_new_tokens is {longest} tokens, beyond the model's context of "
                f"{limit}; shorten the prompt or lower max_new_tokens."
            )
        if not number(temperature) or temperature < 0:
            raise ValueError(f"temperature={temperature!r} must be a finite number >= 0 (0: greedy).")
        if top_k is not None and (not integer(top_k) or top_k < 1):
            raise ValueError(f"top_k={top_k!r} must be an integer >= 1, or None (off).")
        if top_p is not None and (not number(top_p) or not 0 < top_p <= 1):
            raise ValueError(f"top_p={top_p!r} must be in (0, 1], or None (off).")
        if not number(repetition_penalty) or not repetition_penalty > 0:
            raise ValueError(f"repetition_penalty={repetition_penalty!r} must be a finite number > 0.")


def decode(model, token, position, slot, mask, cache):
    """One decode step: (B, 1) token ids at (B, 1) positions, their mask column `slot` (1,), the (B, L) mask ->
    (B, V) logits of the next token and its (B,) argmax (greedy decoding's token, so the host does not compute it)."""
    mask.index_fill_(1, slot, 1)
    logits = model(input_ids=token, position_ids=position, attention_mask=mask, cache=cache, use_cache=True).logits[:, -1]
    return logits, logits.argmax(-1)


def one_query_attention(q, k, v, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None):
    """The CPU flash attention kernel (what sdpa becomes on CPU) for one new token per row, written as multiply-reduce:
    inductor fuses it into loops over the cache, where the kernel makes a BLAS matrix-vector call per (row, head) (a
    quarter of a compiled batch-32 step's samples in perf; alternating runs: 3.6 against 3.8 ms a step). Returns
    (output (B, H, 1, d), logsumexp (B, H, 1)) as the kernel does; anything but one query without dropout keeps the
    kernel (NotImplemented)."""
    if q.shape[-2] != 1 or dropout_p != 0.0 or is_causal:
        return NotImplemented
    if k.shape[1] != q.shape[1]:  # grouped KV heads: query head h reads KV head h // group, as repeat_kv does
        k, v = (x.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for x in (k, v))
    scores = (q * k).sum(-1).to(torch.promote_types(q.dtype, torch.float32))  # (B, H, L), fp32 at least
    scores = scores * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_mask is not None:
        mask = attn_mask[..., 0, :]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = scores.softmax(-1).to(v.dtype)
    out = (weights[..., None] * v).sum(-2, keepdim=True).to(q.dtype)  # (B, H, 1, d)
    return out, scores.logsumexp(-1, keepdim=True)


def inductor_one_query_attention(graph, example_inputs):
    """Inductor with one_query_attention in place of the CPU attention kernel (its other decompositions kept)."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    return compile_fx(graph, example_inputs, decompositions={**select_decomp_table(), **one_query_decomposition()})


def one_query_decomposition() -> dict:
    """{the CPU attention kernel: one_query_attention}, for both compiled steps (torch.compile's and AOTInductor's)."""
    return {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default: one_query_attention}


def cut(row: list[int], eos: int | None) -> list[int]:
    """A row's tokens up to and with its first EOS (the steps it decoded after that are dropped)."""
    return row[: row.index(eos) + 1] if eos is not None and eos in row else row


def unpin(cache) -> None:
    """Let the compiled step take the cache's tensors as inputs again: transformers' StaticCache marks them as static
    addresses (for CUDA graphs), and inductor's freezing folds such tensors into the step as constants - the cache
    would stop changing."""
    for layer in cache.layers:
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                value.__dict__.pop("_dynamo_static_input_type", None)


def sample(logits, temperature, top_k, top_p, repetition_penalty, seen, generator) -> torch.Tensor:
    """(B, V) float logits -> (B,) token ids, on the logits' device; the same transforms as generate()'s
    processors (repetition penalty, temperature, top-k, top-p), then argmax (temperature 0) or a draw."""
    if repetition_penalty != 1.0:  # CTRL's penalty on tokens already present, as RepetitionPenaltyLogitsProcessor
        penalised = torch.where(logits < 0, logits * repetition_penalty, logits / repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        # Top-k first, then top-p among the k survivors only: the same distribution as filtering all V logits (the
        # others have probability 0), without sorting the whole vocabulary every step.
        values, index = torch.topk(logits, top_k, dim=-1)  # descending
        if top_p is not None and top_p < 1.0:
            probs = values.softmax(-1)
            values = values.masked_fill(probs.cumsum(-1) - probs >= top_p, float("-inf"))  # the top one always stays
        choice = torch.multinomial(values.softmax(-1), 1, generator=generator)
        return index.gather(1, choice).squeeze(-1)
    if top_p is not None and top_p < 1.0:  # keep the smallest set whose probability reaches top_p (at least one)
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cumulative <= 1 - top_p
        remove_sorted[:, -1] = False
        logits = logits.masked_fill(remove_sorted.scatter(1, order, remove_sorted), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
