"""Command-line arguments of the training script, as dataclasses for HfArgumentParser.

Names follow transformers' TrainingArguments and run_clm.py wherever the meaning is the same,
so a user's flags and JSON/YAML files carry over.
"""

from dataclasses import dataclass, field, fields

from ..model.configuration_tiny_decoder import TinyDecoderConfig

# Architecture presets. `small` is llama2.c's stories15M shape (its 32k vocab makes it 15M;
# with our 4096-token BPE it is ~7M).
PRESETS = {
    "nano": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4),
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
    "small": dict(hidden_size=288, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6, intermediate_size=768),
}


@dataclass
class ModelArguments:
    preset: str = field(default="tiny", metadata={"help": f"Architecture preset: {sorted(PRESETS)}."})
    config_name: str | None = field(default=None, metadata={"help": "A config.json (or folder) instead of a preset."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Start from these weights (folder or Hub name)."})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated config fields, e.g. 'hidden_size=192,residual_dropout=0.1'."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa' or 'eager'."})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is unknown; choose one of {sorted(PRESETS)}.")
        check_overrides(TinyDecoderConfig(), parse_overrides(self.config_overrides))  # names and types, before any work


@dataclass
class TrainArguments:
    output_dir: str = field(default="runs/tiny", metadata={"help": "Checkpoints, logs and the final model go here."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace the run already in output_dir (deletes its checkpoints and model)."}
    )
    seed: int = 42
    learning_rate: float = 1e-3
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Cosine decays to learning_rate * this."})
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={
            "help": "'cosine', 'linear' or 'constant' (after warmup), or 'warmup_stable_decay' (transformers' "
            "get_wsd_schedule: flat after warmup, then a cosine to min_lr_ratio over the last --wsd_decay_fraction)."
        },
    )
    wsd_decay_fraction: float = field(
        default=0.2, metadata={"help": "warmup_stable_decay: the share of the run's steps the final decay takes, in (0, 1]."}
    )
    warmup_steps: int = 100
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; -1: num_train_epochs decides."})
    num_train_epochs: float = 1.0
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Time budget. After 200 steps the run measures its speed and ends the learning-rate schedule at "
            "the step that fits (saved in checkpoints); it also stops (evaluates, saves) when time runs out."
        },
    )
    logging_steps: int = 10
    eval_steps: int = 200
    max_eval_batches: int | None = field(default=None, metadata={"help": "Evaluate on at most this many batches."})
    save_steps: int = 500
    save_total_limit: int | None = 2
    mixed_precision: str = field(
        default="no",
        metadata={
            "help": "'no' (fp32), 'bf16', 'fp16', or 'auto': time the run's step in each on this machine, keep the fastest."
        },
    )
    torch_compile: bool = False
    use_cpu: bool = False
    dataloader_num_workers: int = 0
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder, or 'latest'. Resuming is bit-exact without --torch_compile; compiled "
            "CPU kernels may round differently from run to run."
        },
    )
    report_to: str = field(default="tensorboard", metadata={"help": "Trackers: 'tensorboard', 'all' or 'none'."})
    num_samples: int = field(default=3, metadata={"help": "Stories generated at the end (printed and in the card)."})
    sample_prompt: str = "Once upon a time"
    max_new_tokens: int = 200
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_strategy: str = field(default="end", metadata={"help": "'end', or 'checkpoint' to push every checkpoint too."})
    hub_private_repo: bool = False
    hub_format: str = field(
        default="native",
        metadata={
            "help": "'native' (the model with its remote code), or 'llama': push the plain Llama export, which Hub "
            "users load without trust_remote_code (the config must be Llama-expressible; checked first)."
        },
    )
    optim: str = field(
        default="adamw_torch",
        metadata={
            "help": "'adamw_torch' (backprop), 'muon' (torch.optim.Muon on the blocks' weight matrices, AdamW at "
            "--learning_rate on embeddings, head, norms and biases), or 'zeroth_order' (SPSA/MeZO: "
            "forward passes only; learning_rate is its step size)."
        },
    )
    # Muon (optimizers.py). match_rms_adamw (Moonshot) scales each update to AdamW's RMS, so the AdamW-tuned
    # --learning_rate and --weight_decay carry over unchanged: the default for that reason.
    muon_learning_rate: float | None = field(default=None, metadata={"help": "Muon's peak rate (default: --learning_rate)."})
    muon_momentum: float = field(default=0.95, metadata={"help": "Muon's (Nesterov) momentum."})
    muon_weight_decay: float | None = field(
        default=None, metadata={"help": "Muon's decoupled weight decay (default: --weight_decay)."}
    )
    muon_adjust_lr_fn: str = field(
        default="match_rms_adamw",
        metadata={"help": "'match_rms_adamw' (AdamW's learning rates carry over) or 'original' (Keller Jordan's scaling)."},
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Keep an exponential moving average of the weights with this decay (e.g. 0.999; off by default): "
            "validation reports both, and the final model saved is the average (ema.py)."
        },
    )
    # Zeroth-order training (training/zeroth_order.py): forward passes only, at inference memory.
    zo_eps: float = field(default=1e-3, metadata={"help": "Zeroth-order: probe size eps (w +/- eps*u)."})
    zo_num_directions: int = field(default=1, metadata={"help": "Zeroth-order: random directions per micro-batch, averaged."})
    zo_difference: str = field(
        default="central", metadata={"help": "'central' (2 forwards per direction) or 'forward' (1, plus L(w))."}
    )
    zo_adaptive_eps: bool = field(default=False, metadata={"help": "Zeroth-order: scale each tensor's probe by its RMS."})
    zo_tensor_fraction: float = field(
        default=1.0, metadata={"help": "Zeroth-order: perturb and update this random fraction of the parameter tensors per step."}
    )
    zo_momentum: float = field(default=0.0, metadata={"help": "Zeroth-order: EMA of the estimate (0: none, no extra buffers)."})
    zo_clip: float = field(default=0.0, metadata={"help": "Zeroth-order: clip each projected gradient to +/- this (0: off)."})
    zo_line_search: bool = field(
        default=False, metadata={"help": "Zeroth-order: try 0.5x, 1x, 2x the step on the batch, keep the best."}
    )
    zo_batched: bool = field(
        default=False,
        metadata={"help": "Zeroth-order: all probes of a micro-batch in one vmap'd forward (faster when memory allows)."},
    )
    zo_hybrid: str = field(
        default="none", metadata={"help": "'none', 'zo_then_backprop' or 'backprop_then_zo' (switch at zo_switch_step)."}
    )
    zo_switch_step: int = field(default=0, metadata={"help": "Hybrid: the optimizer step at which the second phase starts."})
    backprop_learning_rate: float = field(default=1e-3, metadata={"help": "Hybrid: AdamW's peak learning rate in its phase."})
    log_activation_norms: bool = field(
        default=False,
        metadata={"help": "Log each block's output RMS (act_rms_<layer>) and their max/min spread in metrics.jsonl."},
    )

    def __post_init__(self):
        check_finite(self)
        if not self.output_dir.strip():
            raise ValueError("--output_dir is empty; give the folder the run writes to (e.g. runs/tiny).")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed {self.seed} must be in [0, 2**32 - 1].")
        choices = {
            "lr_scheduler_type": ("cosine", "linear", "constant", "warmup_stable_decay"),
            "mixed_precision": ("no", "bf16", "fp16", "auto"),
            "hub_strategy": ("end", "checkpoint"),
            "hub_format": ("native", "llama"),
            "report_to": ("tensorboard", "all", "none"),
            "optim": ("adamw_torch", "muon", "zeroth_order"),
            "muon_adjust_lr_fn": ("match_rms_adamw", "original"),
            "zo_difference": ("central", "forward"),
            "zo_hybrid": ("none", "zo_then_backprop", "backprop_then_zo"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; choose one of {list(allowed)}.")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "eval_steps",
            "save_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        for name, low in (
            ("warmup_steps", 0),
            ("weight_decay", 0.0),
            ("max_grad_norm", 0.0),
            ("adam_epsilon", 0.0),
            ("num_samples", 0),
            ("max_new_tokens", 1),
            ("dataloader_num_workers", 0),
        ):
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1].")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1).")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps={self.max_steps}: give a positive number of steps, or -1 to let num_train_epochs decide."
            )
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ValueError(
                f"num_train_epochs={self.num_train_epochs} trains nothing; give a positive number (or --max_steps N)."
            )
        if self.max_train_minutes is not None and not self.max_train_minutes > 0:
            raise ValueError(f"max_train_minutes={self.max_train_minutes} must be > 0 (leave it unset for no limit).")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit={self.save_total_limit} must be >= 1 (leave it unset to keep every checkpoint).")
        if self.log_activation_norms and self.torch_compile:
            raise ValueError("--log_activation_norms hooks every block, which --torch_compile would trace; drop one of them.")
        self._check_zeroth_order()
        self._check_muon_and_schedule()
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs --hub_model_id NAME (e.g. your-user/tiny-stories).")
        if not self.push_to_hub:  # flags that only shape a push: given alone, they would be ignored silently
            for name, default in (("hub_format", "native"), ("hub_strategy", "end"), ("hub_private_repo", False)):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"--{name} {getattr(self, name)} does nothing without --push_to_hub true: add "
                        f"--push_to_hub true --hub_model_id you/name, or drop --{name}."
                    )

    def _check_muon_and_schedule(self):
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"--ema_decay {self.ema_decay} must be in (0, 1), e.g. 0.999 (leave it unset for no average).")
        if not 0 < self.wsd_decay_fraction <= 1:
            raise ValueError(f"--wsd_decay_fraction {self.wsd_decay_fraction} must be in (0, 1] (the share of steps that decay).")
        if self.lr_scheduler_type != "warmup_stable_decay" and self.wsd_decay_fraction != 0.2:
            raise ValueError(
                "--wsd_decay_fraction does nothing without --lr_scheduler_type warmup_stable_decay; add it or drop the flag."
            )
        muon_flags = {
            "muon_learning_rate": None,
            "muon_momentum": 0.95,
            "muon_weight_decay": None,
            "muon_adjust_lr_fn": "match_rms_adamw",
        }
        if self.optim != "muon":
            given = [name for name, default in muon_flags.items() if getattr(self, name) != default]
            if given:
                raise ValueError(f"--{given[0]} does nothing without --optim muon; add --optim muon or drop the flag.")
            return
        if self.muon_learning_rate is not None and not self.muon_learning_rate > 0:
            raise ValueError(f"--muon_learning_rate {self.muon_learning_rate} must be > 0 (leave it unset for --learning_rate).")
        if not 0 <= self.muon_momentum < 1:
            raise ValueError(f"--muon_momentum {self.muon_momentum} must be in [0, 1).")
        if self.muon_weight_decay is not None and self.muon_weight_decay < 0:
            raise ValueError(f"--muon_weight_decay {self.muon_weight_decay} must be >= 0.")

    def _check_zeroth_order(self):
        if self.optim != "zeroth_order":
            if self.zo_hybrid != "none":
                raise ValueError(f"zo_hybrid={self.zo_hybrid!r} needs --optim zeroth_order.")
            return
        if self.torch_compile:
            raise ValueError(
                "--torch_compile does not combine with --optim zeroth_order (each probe swaps perturbed "
                "weights in, which would recompile every forward); drop --torch_compile."
            )
        if self.mixed_precision == "fp16":
            raise ValueError(
                "--mixed_precision fp16 does not combine with --optim zeroth_order (there is no gradient "
                "to scale); use bf16 or no."
            )
        if not 0 < self.zo_eps <= 1:
            raise ValueError(
                f"zo_eps={self.zo_eps} must be in (0, 1]: a probe larger than the weights themselves (~0.02-1) sees a "
                f"destroyed model on both sides, and their difference carries no gradient. MeZO uses 1e-3 (the default)."
            )
        if self.zo_num_directions < 1:
            raise ValueError(f"zo_num_directions={self.zo_num_directions} must be >= 1.")
        if not 0 < self.zo_tensor_fraction <= 1:
            raise ValueError(f"zo_tensor_fraction={self.zo_tensor_fraction} must be in (0, 1].")
        if not 0 <= self.zo_momentum < 1:
            raise ValueError(f"zo_momentum={self.zo_momentum} must be in [0, 1).")
        if self.zo_clip < 0:
            raise ValueError(f"zo_clip={self.zo_clip} must be >= 0 (0: no clipping).")
        if self.zo_hybrid != "none" and self.zo_switch_step < 1:
            raise ValueError(
                f"zo_hybrid={self.zo_hybrid!r} needs --zo_switch_step N >= 1 (the step where the second phase starts)."
            )
        if not self.backprop_learning_rate > 0:
            raise ValueError(f"backprop_learning_rate={self.backprop_learning_rate} must be > 0.")


def check_model_sources(model_args: ModelArguments) -> None:
    """Refuse a --model_name_or_path / --config_name that cannot load, before any data work."""
    from ..io.sources import check_model_source

    if model_args.model_name_or_path:
        check_model_source(model_args.model_name_or_path, "model_name_or_path")
    if model_args.config_name:
        check_model_source(model_args.config_name, "config_name", needs="config.json")


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.1,c=rope,d=true' -> {'a': 1, 'b': 0.1, 'c': 'rope', 'd': True}."""
    out = {}
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise ValueError(f"config_overrides item {item!r} is not of the form name=value.")
        key, value = (s.strip() for s in item.split("=", 1))
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False, "none": None}.get(value.lower(), value)
        out[key] = value
    return out


def check_overrides(config, overrides: dict) -> dict:
    """Overrides that name fields of `config` with values of their kind; 'none' stays a string for string fields
    (position_embedding=none)."""
    unknown = [k for k in overrides if not hasattr(config, k)]
    if unknown:
        raise ValueError(f"config_overrides names unknown fields {unknown}; see TinyDecoderConfig for the fields.")
    for k, v in overrides.items():
        current = getattr(config, k)
        if v is None and isinstance(current, str):
            overrides[k] = "none"
        elif isinstance(v, str) and isinstance(current, (int, float)) and not isinstance(current, bool):
            kind = type(current).__name__
            raise ValueError(f"config_overrides {k}={v!r}: {k} takes a number ({kind}, now {current!r}), not text.")
    return overrides


def build_config(model_args: ModelArguments, tokenizer, block_size: int) -> TinyDecoderConfig:
    """Preset or config file, sized to the tokenizer and block size, then the overrides."""
    special = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if model_args.config_name:
        config = TinyDecoderConfig.from_pretrained(model_args.config_name)
        for k, v in special.items():
            setattr(config, k, v)
    else:
        config = TinyDecoderConfig(**PRESETS[model_args.preset], max_position_embeddings=block_size, **special)
    overrides = check_overrides(config, parse_overrides(model_args.config_overrides))
    if overrides:
        base = config.to_dict()
        if "head_dim" not in overrides and base.get("head_dim") == base["hidden_size"] // base["num_attention_heads"]:
            base.pop("head_dim")  # derived, not chosen: let new hidden_size / heads derive it again
        config = TinyDecoderConfig(**{**base, **overrides})
    if config.max_position_embeddings < block_size:
        raise ValueError(f"max_position_embeddings={config.max_position_embeddings} < block_size={block_size}.")
    return config


def check_finite(arguments) -> None:
    """Every float field of an argument dataclass is a finite number (inf and nan make no sense in any of them)."""
    import math

    for f in fields(arguments):
        value = getattr(arguments, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{f.name} {value} is not a finite number; give a finite value.")
