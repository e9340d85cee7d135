"""Configuration for tiny-decoder: one object that names every architectural choice.

Each swappable piece is picked by a string (positions, norm, norm placement, activation,
attention implementation). Every value is checked at construction so a typo fails here,
with the field name and the allowed values, instead of deep inside a forward pass.
"""

from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

POSITION_EMBEDDINGS = ("rope", "alibi", "sinusoidal", "learned", "none")
NORMS = ("rmsnorm", "layernorm")
NORM_POSITIONS = ("pre", "post")
HIDDEN_ACTS = ("gelu", "relu", "silu", "relu2", "swiglu")
RESIDUALS = ("add", "orthogonal_parallel")
ATTENTION_TYPES = ("softmax", "linear")


class TinyDecoderConfig(PretrainedConfig):
    r"""
    The configuration of a tiny-decoder model: every architectural choice, each a field. Defaults give a
    Llama-style model (RoPE, RMSNorm before each sublayer, SwiGLU, tied head).

    Args:
        vocab_size (`int`, *optional*, defaults to 4096):
            Tokens in the vocabulary: rows of the token embedding (and of the tied LM head).
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the residual stream.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Query heads per attention layer.
        num_key_value_heads (`int`, *optional*):
            Key/value heads: equal to `num_attention_heads` for MHA (the default), fewer for GQA, 1 for MQA. Must
            divide `num_attention_heads`.
        head_dim (`int`, *optional*):
            Channels per head; defaults to `hidden_size // num_attention_heads`. Set explicitly after pruning heads,
            when each head keeps its width.
        intermediate_size (`int`, *optional*):
            Channels of the MLP's hidden layer; defaults to 4 x `hidden_size`, or 8/3 x `hidden_size` rounded up to
            a multiple of 32 for SwiGLU (three matrices at the parameter count of a 4x two-matrix MLP).
        max_position_embeddings (`int`, *optional*, defaults to 256):
            The longest sequence the model is meant for: the learned table's rows, RoPE's original length.
        position_embedding (`str`, *optional*, defaults to `"rope"`):
            How order enters: `"rope"` (rotary q/k), `"alibi"` (a distance bias on the scores), `"sinusoidal"` or
            `"learned"` (vectors added to the token embeddings), `"none"` (NoPE). See positions.py.
        rope_parameters (`dict`, *optional*):
            transformers' RoPE dict: `rope_type` (`"default"`, `"linear"`, `"dynamic"`, `"yarn"`, `"llama3"`, ...),
            `rope_theta` (default 10000), its scaling keys, and `partial_rotary_factor` (the share of each head's
            channels that rotate).
        rope_theta (`float`, *optional*):
            Shortcut for `rope_parameters["rope_theta"]` (and how config.json files before `rope_parameters` held it).
        alibi_slopes (`list[float]`, *optional*):
            ALiBi's per-head slopes; defaults to the paper's geometric series for the head count. Pruning heads
            writes the survivors' own slopes here.
        sinusoidal_scale (`float`, *optional*):
            Amplitude of sinusoidal positions; defaults to `initializer_range * sqrt(2)`, so their RMS equals the
            token embeddings' init std (amplitude 1 against std-0.02 embeddings swamps the tokens). config.json
            files saved before this field keep 1.0.
        norm (`str`, *optional*, defaults to `"rmsnorm"`):
            `"rmsnorm"` or `"layernorm"`; statistics in float32.
        norm_position (`str`, *optional*, defaults to `"pre"`):
            `"pre"`: the norm before each sublayer, and one before the head (GPT-2, Llama); `"post"`: after the
            residual add (the 2017 Transformer).
        norm_eps (`float`, *optional*, defaults to 1e-5):
            Added to the variance inside each norm.
        norm_bias (`bool`, *optional*, defaults to `True`):
            Whether LayerNorm has a bias (RMSNorm never has one).
        hidden_act (`str`, *optional*, defaults to `"swiglu"`):
            The MLP: `"swiglu"` (gated, three matrices) or a plain up -> activation -> down with `"gelu"`, `"relu"`,
            `"silu"` or `"relu2"` (squared ReLU, So et al. 2021; the modded-nanogpt speedruns' MLP).
        qk_norm (`bool`, *optional*, defaults to `False`):
            RMSNorm with a learned weight over the head dimension on queries and keys, before RoPE (Qwen3's form;
            keeps attention logits bounded at high learning rates).
        final_logit_softcapping (`float`, *optional*):
            Logits become `cap * tanh(logits / cap)` (Gemma 2's name and form); `None`: no cap.
        fused_loss (`bool`, *optional*, defaults to `False`):
            When training with labels (and no soft-capping), the LM head and the cross-entropy run as one step a block
            of rows at a time (fused_loss.py): the same loss and gradients without the full logits, which the output
            then leaves out (`logits=None`). Faster and lighter under bf16 autocast at small hidden sizes.
        zero_init_output_projections (`bool`, *optional*, defaults to `False`):
            Initialise attention's `o_proj` and the MLP's `down_proj` at zero (modded-nanogpt), so each block starts
            as the identity; `False`: GPT-2's 1/sqrt(2 * layers)-scaled normal init.
        sliding_window (`int`, *optional*):
            Each query attends to itself and the `sliding_window - 1` tokens before it (Mistral's convention), and the
            KV cache keeps only that window. `None`: full causal attention.
        attention_type (`str`, *optional*, defaults to `"softmax"`):
            `"softmax"`, or `"linear"`: causal linear attention (Katharopoulos et al. 2020), O(sequence) time and
            memory; see linear_attention.py.
        early_exit_threshold (`float`, *optional*):
            In cached decoding a token leaves after the first block (from `early_exit_min_layer` on) whose exit -
            the shared head on that block's normed state - gives its top token a probability above this; deeper
            layers' keys and values come from the exit state (CALM). `None` or 1.0: never. See early_exit.py.
        early_exit_min_layer (`int`, *optional*, defaults to 0):
            The first block a token may exit after.
        early_exit_loss_weight (`float`, *optional*, defaults to 0.0):
            Training adds this times the mean cross-entropy of the intermediate exits.
        layer_dropout (`float`, *optional*, defaults to 0.0):
            In training, each block but the first is skipped with this probability (LayerSkip).
        residual (`str`, *optional*, defaults to `"add"`):
            How a sublayer's output y joins the stream x: `"add"` (x + y), or `"orthogonal_parallel"`
            (x + alpha * (y - p) + beta * p, p = y's projection on x; alpha, beta learned per channel, 1 at init).
        embedding_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the input embeddings (tokens plus absolute positions).
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention weights (kernels that support it).
        residual_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on each sublayer's output before it joins the residual stream.
        attention_bias (`bool`, *optional*, defaults to `False`):
            Biases in the q/k/v/o projections.
        mlp_bias (`bool`, *optional*, defaults to `False`):
            Biases in the MLP's projections.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            The LM head shares the token embedding's weight.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal init (GPT-2); residual-branch outputs are scaled by 1/sqrt(2 * layers), the learned
            position table starts at a tenth of it.
        use_cache (`bool`, *optional*, defaults to `True`):
            Whether forward returns a KV cache by default.
        bos_token_id (`int`, *optional*, defaults to 1):
            Beginning-of-text token.
        eos_token_id (`int`, *optional*, defaults to 2):
            End-of-text token (generation stops there).
        pad_token_id (`int`, *optional*, defaults to 0):
            Padding token (sequence classification reads the last non-pad token).

    ```python
    >>> from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
    >>> config = TinyDecoderConfig(hidden_size=128, num_hidden_layers=2, position_embedding="alibi")
    >>> model = TinyDecoderForCausalLM(config)
    ```"""

    model_type = "tiny_decoder"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    # How `from_pretrained(..., tp_plan="auto")` shards the blocks (Megatron: column-split the
    # projections into heads / MLP channels, row-split the ones back to the residual stream), and
    # which module inputs/outputs a pipeline stage passes on.
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 8,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 256,
        position_embedding: str = "rope",
        rope_parameters: dict | None = None,
        rope_theta: float | None = None,
        alibi_slopes: list[float] | None = None,
        sinusoidal_scale: float | None = None,
        norm: str = "rmsnorm",
        norm_position: str = "pre",
        norm_eps: float = 1e-5,
        hidden_act: str = "swiglu",
        qk_norm: bool = False,
        final_logit_softcapping: float | None = None,
        fused_loss: bool = False,
        zero_init_output_projections: bool = False,
        sliding_window: int | None = None,
        attention_type: str = "softmax",
        early_exit_threshold: float | None = None,
        early_exit_min_layer: int = 0,
        early_exit_loss_weight: float = 0.0,
        layer_dropout: float = 0.0,
        residual: str = "add",
        embedding_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        norm_bias: bool = True,
        tie_word_embeddings: bool = True,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        pad_token_id: int | None = 0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        # Explicit after pruning heads (each head keeps its width); else hidden_size / heads. Old
        # config.json files without the field load as before.
        self._head_dim_given = head_dim is not None
        self.head_dim = head_dim if head_dim is not None else (hidden_size // num_attention_heads if num_attention_heads else 0)
        if intermediate_size is None:
            # SwiGLU has three matrices; 8/3 * d keeps its parameter count equal to a 4 * d GELU MLP.
            intermediate_size = 4 * hidden_size if hidden_act != "swiglu" else _round_up(8 * hidden_size // 3, 32)
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding = position_embedding
        # transformers' RoPE dict: {"rope_type": "default" | "linear" | "dynamic" | "yarn" | "llama3" | ...,
        # "rope_theta": ..., "factor": ..., "partial_rotary_factor": ...}. A top-level `rope_theta`
        # (old config.json files, or a quick override) fills in rope_parameters["rope_theta"].
        self.rope_parameters = dict(rope_parameters) if rope_parameters else None
        if rope_theta is not None:
            kwargs["rope_theta"] = rope_theta
        # Sinusoidal positions are added at the token embeddings' scale: their RMS (amplitude / sqrt 2) equals the
        # embeddings' init std, as Vaswani's sqrt(d)-scaled embeddings met unit-amplitude positions on one scale.
        # Amplitude 1 against std-0.02 embeddings swamped the tokens (make experiment: +1.85 nats). A config.json
        # saved before this field existed (it has `transformers_version` but no sinusoidal_scale) keeps amplitude 1.
        if sinusoidal_scale is None:
            sinusoidal_scale = 1.0 if "transformers_version" in kwargs else initializer_range * 2**0.5
        self.sinusoidal_scale = sinusoidal_scale
        # ALiBi's slopes follow from the head count; pruning heads keeps the survivors' own slopes here.
        self.alibi_slopes = list(alibi_slopes) if alibi_slopes is not None else None
        self.norm = norm
        self.norm_position = norm_position
        self.norm_eps = norm_eps
        self.hidden_act = hidden_act
        self.qk_norm = qk_norm
        self.final_logit_softcapping = final_logit_softcapping
        self.fused_loss = fused_loss
        self.zero_init_output_projections = zero_init_output_projections
        if hidden_act != "swiglu":  # a plain MLP has no gate_proj: the sharding plan names only layers that exist
            self.base_model_tp_plan = {k: v for k, v in type(self).base_model_tp_plan.items() if "gate_proj" not in k}
        # Each query attends to itself and the sliding_window - 1 tokens before it (Mistral's convention);
        # the KV cache then keeps only that window. None: full causal attention.
        self.sliding_window = sliding_window
        # "softmax", or "linear": causal linear attention (Katharopoulos et al. 2020), phi(x) = elu(x) + 1,
        # O(sequence) time and memory; see linear_attention.py.
        self.attention_type = attention_type
        # Dynamic depth (early_exit.py): in cached decoding a token leaves after the first layer (from
        # early_exit_min_layer on) whose exit - the shared head on that layer's normed state - gives its top
        # token a probability above early_exit_threshold (None or 1.0: never); deeper layers' KV come from the
        # exit state (CALM's state propagation). Training: early_exit_loss_weight * the mean cross-entropy of
        # the intermediate exits is added to the loss; layer_dropout skips each block (but the first) with
        # that probability in training.
        self.early_exit_threshold = early_exit_threshold
        self.early_exit_min_layer = early_exit_min_layer
        self.early_exit_loss_weight = early_exit_loss_weight
        self.layer_dropout = layer_dropout
        # How a sublayer's output y joins the stream x: "add" (x + y), or "orthogonal_parallel"
        # (x + alpha * (y - p) + beta * p, p = y's projection on x; learned per channel, 1 at init).
        self.residual = residual
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.norm_bias = norm_bias
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.check_values(kwargs.get("rope_theta"))  # before transformers' own validators run in __init__
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.check_token_ids()

    @property
    def rope_theta(self) -> float:
        return (self.__dict__.get("rope_parameters") or {}).get("rope_theta", self.default_theta)

    def validate_rope(self):
        # transformers checks rope_parameters on every config; only RoPE models use them.
        if getattr(self, "position_embedding", "rope") == "rope":
            super().validate_rope()

    def to_dict(self):
        out = super().to_dict()
        out.pop("_head_dim_given", None)
        return out

    def check_values(self, rope_theta: float | None = None) -> None:
        """Raise ValueError naming the field, its value and what is allowed: each field alone, then the
        combinations that must agree."""
        rope = self._check_fields(rope_theta)
        self._check_combinations(rope)

    def _check_fields(self, rope_theta: float | None) -> dict:
        """Every field on its own; returns the RoPE settings with their defaults filled in."""
        for name, allowed in (
            ("position_embedding", POSITION_EMBEDDINGS),
            ("norm", NORMS),
            ("norm_position", NORM_POSITIONS),
            ("hidden_act", HIDDEN_ACTS),
            ("residual", RESIDUALS),
            ("attention_type", ATTENTION_TYPES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"TinyDecoderConfig.{name}={value!r} is not supported; choose one of {list(allowed)}.")
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TinyDecoderConfig.{name}={value!r} must be a positive integer.")
        if self.early_exit_threshold is not None and not 0 <= self.early_exit_threshold <= 1:
            raise ValueError(
                f"TinyDecoderConfig.early_exit_threshold={self.early_exit_threshold!r} must be a probability "
                f"in [0, 1] (1.0 or None: never exit early)."
            )
        if not 0 <= self.early_exit_min_layer < self.num_hidden_layers:
            raise ValueError(
                f"TinyDecoderConfig.early_exit_min_layer={self.early_exit_min_layer!r} must be a layer index "
                f"in [0, {self.num_hidden_layers})."
            )
        if self.early_exit_loss_weight < 0:
            raise ValueError(f"TinyDecoderConfig.early_exit_loss_weight={self.early_exit_loss_weight!r} must be >= 0.")
        cap = self.final_logit_softcapping
        if cap is not None and not (isinstance(cap, (int, float)) and not isinstance(cap, bool) and 0 < cap < float("inf")):
            raise ValueError(
                f"TinyDecoderConfig.final_logit_softcapping={cap!r} must be a finite number > 0 (e.g. 30.0), or None for no cap."
            )
        for name in ("embedding_dropout", "attention_dropout", "residual_dropout", "layer_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"TinyDecoderConfig.{name}={value!r} must be in [0, 1).")
        rope = dict(self.rope_parameters or {})
        rope.setdefault("rope_theta", self.default_theta if rope_theta is None else rope_theta)
        rope.setdefault("rope_type", rope.get("type", "default"))
        for name in ("rope_theta", "norm_eps", "initializer_range"):
            value = rope["rope_theta"] if name == "rope_theta" else getattr(self, name)
            if not value > 0:
                raise ValueError(f"TinyDecoderConfig.{name}={value!r} must be > 0.")
        if not (isinstance(self.sinusoidal_scale, (int, float)) and 0 < self.sinusoidal_scale < float("inf")):
            raise ValueError(f"TinyDecoderConfig.sinusoidal_scale={self.sinusoidal_scale!r} must be a finite number > 0.")
        return rope

    def _check_combinations(self, rope: dict) -> None:
        """Fields that must fit together: head counts and sizes, RoPE channels, ALiBi slopes, windows, linear attention."""
        if not self._head_dim_given and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"TinyDecoderConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}; pick sizes where hidden_size % num_attention_heads == 0 "
                f"(or set head_dim)."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"TinyDecoderConfig.num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads}; use a divisor (1 = MQA, equal = MHA)."
            )
        if self.position_embedding == "rope":
            rope_type = rope["rope_type"]
            if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
                raise ValueError(
                    f"TinyDecoderConfig.rope_parameters['rope_type']={rope_type!r} is not supported; choose one of "
                    f"{['default', *ROPE_INIT_FUNCTIONS]}."
                )
            factor = rope.get("partial_rotary_factor", 1.0)
            if not 0 < factor <= 1 or int(self.head_dim * factor) % 2:
                raise ValueError(
                    f"TinyDecoderConfig.position_embedding='rope' needs an even number of rotated channels, got "
                    f"head_dim={self.head_dim} x partial_rotary_factor={factor}; use an even head_dim and a factor in (0, 1]."
                )
        if self.alibi_slopes is not None and len(self.alibi_slopes) != self.num_attention_heads:
            raise ValueError(
                f"TinyDecoderConfig.alibi_slopes has {len(self.alibi_slopes)} slopes for {self.num_attention_heads} "
                f"attention heads; give one per head, or None for the standard slopes."
            )
        if self.sliding_window is not None and (
            not isinstance(self.sliding_window, int) or isinstance(self.sliding_window, bool) or self.sliding_window < 1
        ):
            raise ValueError(
                f"TinyDecoderConfig.sliding_window={self.sliding_window!r} must be a positive integer "
                f"(the tokens a query sees, itself included), or None for full attention."
            )
        if self.attention_type == "linear" and (self.sliding_window is not None or self.position_embedding == "alibi"):
            what = "sliding_window" if self.sliding_window is not None else "position_embedding='alibi'"
            raise ValueError(
                f"TinyDecoderConfig.attention_type='linear' has no score matrix to window or bias; drop {what} "
                f"or use attention_type='softmax'."
            )
        if self.position_embedding == "sinusoidal" and self.hidden_size % 2:
            raise ValueError(
                f"TinyDecoderConfig.position_embedding='sinusoidal' needs an even hidden_size, got {self.hidden_size}."
            )

    def check_token_ids(self) -> None:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name, None)
            ids = value if isinstance(value, list) else [value]
            for i in ids:
                if i is not None and not 0 <= i < self.vocab_size:
                    raise ValueError(
                        f"TinyDecoderConfig.{name}={value!r} lies outside the vocabulary [0, {self.vocab_size}); "
                        f"set it to an id of the tokenizer or to None."
                    )


def _round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple
