"""Knowledge distillation: a student learns a teacher's next-token distributions (Hinton et al. 2015).

    loss = alpha * T^2 * D(teacher_T, student_T) + (1 - alpha) * CE(labels)

Design choices:
- D is selectable: forward KL(p_teacher || q_student), mean-seeking, the classic choice and
  Minitron's; reverse KL(q || p), mode-seeking (MiniLLM); or the generalized Jensen-Shannon
  divergence with weight beta (GKD, Agarwal et al. 2024), symmetric and bounded.
- T softens both distributions; T^2 keeps the KD gradient's scale independent of T.
- The positions CE ignores are ignored here too: labels == -100 after the shift, and padding.
- The teacher is frozen (eval mode, requires_grad False, no autograd graph), may run in
  bf16/fp16, and its logits exist only inside one call.
- One objective object serves the accelerate loop (`Trainer(objective=...)`) and
  transformers' Trainer (`DistillationTrainer`), so both compute the same loss.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..arguments import check_finite
from .causal_lm import CausalLMObjective

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class DistillationArguments:
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "The teacher: a causal LM folder or Hub name that uses the student's tokenizer."}
    )
    alpha: float = field(default=0.5, metadata={"help": "Weight of the distillation term; 1 - alpha weighs CE on the labels."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature T for both teacher and student."})
    divergence: str = field(default="forward_kl", metadata={"help": f"One of {list(DIVERGENCES)}."})
    jsd_beta: float = field(default=0.5, metadata={"help": "Generalized JSD's mixture weight of the teacher, in (0, 1)."})
    teacher_dtype: str = field(default="float32", metadata={"help": f"The teacher's weights: {list(TEACHER_DTYPES)}."})

    def __post_init__(self):
        check_finite(self)
        if not self.teacher_name_or_path:
            raise ValueError("--teacher_name_or_path is required: a causal LM folder (e.g. runs/tiny) or Hub name.")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1] (0: plain CE, 1: distillation only).")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0.")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence={self.divergence!r} is not supported; choose one of {list(DIVERGENCES)}.")
        if not 0 < self.jsd_beta < 1:
            raise ValueError(f"jsd_beta={self.jsd_beta} must be in (0, 1).")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype={self.teacher_dtype!r} is not supported; choose one of {list(TEACHER_DTYPES)}.")


def divergence_per_token(student_logits, teacher_logits, temperature=1.0, divergence="forward_kl", beta=0.5):
    """(..., V) logits -> (...) divergence between the tempered distributions, in float32 (no T^2)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if divergence == "forward_kl":
        return (t.exp() * (t - s)).sum(-1)
    if divergence == "reverse_kl":
        return (s.exp() * (s - t)).sum(-1)
    if divergence == "jsd":
        log_m = torch.logsumexp(torch.stack((t + math.log(beta), s + math.log(1 - beta))), dim=0)
        return beta * (t.exp() * (t - log_m)).sum(-1) + (1 - beta) * (s.exp() * (s - log_m)).sum(-1)
    raise ValueError(f"divergence={divergence!r} is not supported; choose one of {list(DIVERGENCES)}.")


def distillation_divergence(
    student_logits, teacher_logits, labels, attention_mask=None, temperature=1.0, divergence="forward_kl", beta=0.5
) -> torch.Tensor:
    """Mean divergence over the positions whose next-token label counts (the ones CE averages over)."""
    keep = labels[:, 1:] != -100  # logits at i predict token i + 1
    if attention_mask is not None:
        keep = keep & attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    per = divergence_per_token(student_logits[:, :-1], teacher_logits[:, :-1], temperature, divergence, beta)
    return torch.where(keep, per, 0.0).sum() / keep.sum().clamp(min=1)  # fixed shapes: compiles without breaks


def load_teacher(name_or_path: str, dtype: str = "float32"):
    """A frozen causal LM: eval mode, no gradients."""
    from transformers import AutoModelForCausalLM

    from ...io.sources import check_model_source

    check_model_source(name_or_path, "teacher_name_or_path")
    teacher = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=TEACHER_DTYPES[dtype])
    teacher.eval().requires_grad_(False)
    return teacher


def check_same_vocabulary(teacher, teacher_name: str, student_config, tokenizer) -> None:
    """Refuse a teacher whose token ids mean something else than the student's: KD compares distributions id by id."""
    problems = []
    if teacher.config.vocab_size != student_config.vocab_size:
        problems.append(
            f"the teacher has {teacher.config.vocab_size} output logits (vocab_size) and the student {student_config.vocab_size}"
        )
    teacher_tok = None
    try:
        from transformers import AutoTokenizer

        teacher_tok = AutoTokenizer.from_pretrained(teacher_name)
    except (OSError, ValueError):  # a folder without a tokenizer: compare the config's special ids only
        pass
    if teacher_tok is not None and teacher_tok.get_vocab() != tokenizer.get_vocab():
        problems.append(
            f"the teacher's tokenizer has {len(teacher_tok)} tokens and the student's {len(tokenizer)}"
            + (", with different ids" if len(teacher_tok) == len(tokenizer) else "")
        )
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        t_id = getattr(teacher_tok, name) if teacher_tok is not None else getattr(teacher.config, name, None)
        s_id = getattr(tokenizer, name)
        if t_id is not None and s_id is not None and t_id != s_id:
            problems.append(f"{name} is {t_id} for the teacher and {s_id} for the student")
    if problems:
        raise ValueError(
            f"teacher {teacher_name!r} does not share the student's vocabulary: {'; '.join(problems)}. "
            f"Distillation compares next-token distributions id by id; train the student with the teacher's "
            f"tokenizer (--tokenizer_name {teacher_name})."
        )


class DistillationObjective(CausalLMObjective):
    """The loop's loss with a teacher in it; logs `ce` and `kl` (the divergence, whichever is chosen) apart."""

    name = "distillation"
    tags = ("knowledge-distillation",)

    def __init__(self, teacher, teacher_name: str, alpha=0.5, temperature=1.0, divergence="forward_kl", jsd_beta=0.5):
        self.teacher, self.teacher_name = teacher, teacher_name
        self.alpha, self.temperature, self.divergence, self.beta = alpha, temperature, divergence, jsd_beta
        self._divergence = distillation_divergence

    @classmethod
    def from_args(cls, args: DistillationArguments):
        return cls(
            load_teacher(args.teacher_name_or_path, args.teacher_dtype),
            args.teacher_name_or_path,
            args.alpha,
            args.temperature,
            args.divergence,
            args.jsd_beta,
        )

    def prepare(self, model, tokenizer, accelerator=None, compile: bool = False) -> None:
        check_same_vocabulary(self.teacher, self.teacher_name, model.config, tokenizer)
        if getattr(model.config, "fused_loss", False):  # e.g. pruned from a teacher trained with it
            model.config.fused_loss = False  # the divergence needs the student's logits, which the fused loss omits
        if accelerator is not None:
            self.teacher.to(accelerator.device)
        if compile:  # fuses the softmaxes and the sum over the vocabulary: about half the KD step's cost on CPU
            self._divergence = torch.compile(distillation_divergence)

    def __call__(self, model, batch):
        out = model(
            input_ids=batch["input_ids"], labels=batch["labels"], attention_mask=batch.get("attention_mask"), use_cache=False
        )
        with torch.no_grad():
            teacher_logits = self.teacher(
                input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
            ).logits
        kl = self._divergence(
            out.logits, teacher_logits, batch["labels"], batch.get("attention_mask"), self.temperature, self.divergence, self.beta
        )
        loss = self.alpha * self.temperature**2 * kl + (1 - self.alpha) * out.loss
        return loss, {"ce": out.loss.detach(), "kl": kl.detach()}

    def signature(self) -> dict:
        return {
            "objective": self.name,
            "teacher": self.teacher_name,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "divergence": self.divergence,
            "jsd_beta": self.beta,
        }

    def divergence_hint(self) -> str:
        return f", or the distillation temperature ({self.temperature:g}) or alpha ({self.alpha:g}) is off"

    def card_section(self) -> str:
        n = sum(p.numel() for p in self.teacher.parameters())
        beta = f" (beta {self.beta})" if self.divergence == "jsd" else ""
        return (
            "## Distillation\n\n"
            f"Trained as a student of `{self.teacher_name}` ({n / 1e6:.2f} M parameters): loss = "
            f"alpha * T^2 * {self.divergence}{beta}(teacher, student) + (1 - alpha) * CE, with alpha = {self.alpha}, "
            f"T = {self.temperature}. `metrics.jsonl` logs `ce` and `kl` apart."
        )


class DistillationTrainer(Trainer):
    """transformers.Trainer with a teacher: `compute_loss` is `DistillationObjective`'s loss.

    trainer = DistillationTrainer(model=student, teacher_model=teacher, alpha=0.5, temperature=2.0,
                                  args=TrainingArguments(...), train_dataset=...)
    """

    def __init__(
        self,
        *args,
        teacher_model,
        alpha=0.5,
        temperature=1.0,
        divergence="forward_kl",
        jsd_beta=0.5,
        teacher_name="teacher",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        teacher_model.eval().requires_grad_(False)
        teacher_model.to(self.args.device)
        self.objective = DistillationObjective(teacher_model, teacher_name, alpha, temperature, divergence, jsd_beta)
        self.loss_is_scaled_for_ga = False  # our loss is a per-micro-batch mean: let Trainer divide by accumulation
        self._extra_sums, self._extra_count = {}, 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation reports the student's own CE, as the accelerate loop does
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, extras = self.objective(model, inputs)
        for k, v in extras.items():  # averaged over the micro-batches since the last log, like Trainer's loss
            self._extra_sums[k] = self._extra_sums.get(k, 0.0) + v.item()
        self._extra_count += 1
        return loss

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._extra_count:
            logs = {**logs, **{k: v / self._extra_count for k, v in self._extra_sums.items()}}
            self._extra_sums, self._extra_count = {}, 0
        super().log(logs, *args, **kwargs)
