"""Knowledge distillation: the loss against references, a frozen teacher, the loop seam, resume, Trainer."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import cli_args, killed_at_checkpoint, metrics, run_script, small_config
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.training.objectives.distillation import (
    DIVERGENCES,
    DistillationObjective,
    check_same_vocabulary,
    distillation_divergence,
    divergence_per_token,
)


def pair(seed=0, **over):
    torch.manual_seed(seed)
    student = TinyDecoderForCausalLM(small_config(**over))
    torch.manual_seed(seed + 1)
    teacher = TinyDecoderForCausalLM(small_config(hidden_size=48, num_hidden_layers=3, **over)).eval()
    return student, teacher


def batch(n=4, t=12, seed=0):
    ids = torch.randint(3, 67, (n, t), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}


def reference_divergence(s_logits, t_logits, kind, temperature, beta=0.5):
    """float64, one position at a time, from the definitions."""
    p = F.softmax(t_logits.double() / temperature, -1)
    q = F.softmax(s_logits.double() / temperature, -1)
    kl = lambda a, b: (a * (a.log() - b.log())).sum()  # noqa: E731
    if kind == "forward_kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_divergences_match_their_definitions(kind, temperature):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 11, generator=g) * 3, torch.randn(5, 11, generator=g) * 3
    ours = divergence_per_token(s, t, temperature, kind, beta=0.3)
    ref = torch.stack([reference_divergence(s[i], t[i], kind, temperature, 0.3) for i in range(5)])
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=1e-5)
    assert (ours >= -1e-7).all()


def test_divergence_ignores_masked_positions_and_averages_the_rest():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 6, 9, generator=g), torch.randn(2, 6, 9, generator=g)
    labels = torch.randint(0, 9, (2, 6), generator=g)
    labels[0, 3:] = -100  # targets 3.. of row 0 ignored -> logits at 2.. ignored
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # left padding in row 1
    value = distillation_divergence(s, t, labels, mask)
    per = divergence_per_token(s[:, :-1], t[:, :-1])
    kept = [(0, 0), (0, 1), (1, 2), (1, 3), (1, 4)]
    assert torch.isclose(value, torch.stack([per[i, j] for i, j in kept]).mean())
    s2 = s.clone()
    s2[0, 2:] += 5.0  # changing logits at ignored positions changes nothing
    s2[1, :2] -= 3.0
    assert torch.equal(distillation_divergence(s2, t, labels, mask), value)


def test_alpha_zero_is_exactly_the_plain_cross_entropy():
    student, teacher = pair()
    b = batch()
    loss, extras = DistillationObjective(teacher, "t", alpha=0.0, temperature=2.0)(student, b)
    assert torch.equal(loss, student(**b).loss)
    assert extras["kl"] > 0 and torch.equal(extras["ce"], loss.detach())


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_divergence_is_zero_when_student_is_the_teacher(kind):
    student, _ = pair()
    teacher = copy.deepcopy(student).eval()
    loss, extras = DistillationObjective(teacher, "t", alpha=1.0, temperature=1.5, divergence=kind)(student.eval(), batch())
    assert abs(extras["kl"].item()) < 1e-6
    assert abs(loss.item()) < 1e-6


def test_teacher_stays_frozen_and_the_students_divergence_falls():
    student, teacher = pair()
    teacher.requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    objective = DistillationObjective(teacher, "t", alpha=1.0, temperature=1.0)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    b = batch(seed=3)
    kls = []
    for _ in range(40):
        loss, extras = objective(student, b)
        loss.backward()
        opt.step()
        opt.zero_grad()
        kls.append(extras["kl"].item())
    assert kls[-1] < 0.3 * kls[0], kls[::10]
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not teacher.training


def test_a_teacher_with_another_vocabulary_is_refused(tiny_tokenizer):
    _, teacher = pair(vocab_size=500)
    student_config = small_config(vocab_size=len(tiny_tokenizer))
    with pytest.raises(ValueError, match=rf"teacher has 500 output logits \(vocab_size\) and the student {len(tiny_tokenizer)}"):
        check_same_vocabulary(teacher, "other-teacher", student_config, tiny_tokenizer)


# ---------------------------------------------------------------- the script on the training loop


def distill(argv):
    return run_script("distill", argv)


@pytest.fixture(scope="module")
def teacher_dir(workdir):
    from conftest import run

    out = workdir / "teacher"
    if not (out / "model.safetensors").exists():
        run(cli_args(workdir, out, max_steps=8, config_overrides="hidden_size=96"))
    return out


def kd_args(workdir, out, teacher, **over):
    base = cli_args(workdir, out, tokenizer_name=None, **over)
    return base + ["--teacher_name_or_path", str(teacher), "--alpha", "0.7", "--temperature", "2.0"]


def test_distill_script_logs_ce_and_kl_and_resumes_exactly(workdir, teacher_dir, tmp_path, monkeypatch):
    common = dict(max_steps=6, save_steps=2, save_total_limit=None, config_overrides="residual_dropout=0.1")
    result = distill(kd_args(workdir, tmp_path / "straight", teacher_dir, **common))
    logged = [m for m in metrics(tmp_path / "straight") if "loss" in m]
    for m in logged:  # the logged total is the objective's mix of the two parts
        assert m["kl"] > 0 and m["ce"] > 0
        assert abs(m["loss"] - (0.7 * 4.0 * m["kl"] + 0.3 * m["ce"])) < 1e-4 * m["loss"]
    card = (tmp_path / "straight" / "README.md").read_text()
    assert "## Distillation" in card and str(teacher_dir) in card
    assert result["step"] == 6
    state = json.loads((tmp_path / "straight" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["objective"]["teacher"] == str(teacher_dir) and state["objective"]["alpha"] == 0.7

    with killed_at_checkpoint(monkeypatch, 4):
        distill(kd_args(workdir, tmp_path / "crashed", teacher_dir, **common))
    distill(kd_args(workdir, tmp_path / "crashed", teacher_dir, resume_from_checkpoint="latest", **common))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_distill_script_refuses_a_teacher_with_another_tokenizer_before_training(workdir, teacher_dir, tmp_path):
    from conftest import generated_documents
    from tiny_decoder.data.tokenizer import train_bpe_tokenizer

    other = train_bpe_tokenizer([generated_documents(200, seed=9)], vocab_size=280, model_max_length=32)
    other.save_pretrained(tmp_path / "other_tok")
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match=r"teacher has \d+ output logits .* and the student 280.*--tokenizer_name"):
        distill(kd_args(workdir, out, teacher_dir) + ["--tokenizer_name", str(tmp_path / "other_tok")])
    assert not list(out.glob("checkpoint-*")) and not (out / "metrics.jsonl").exists()


def test_distillation_trainer_trains_with_transformers_trainer(tmp_path):
    from transformers import TrainingArguments

    from conftest import toy_dataset
    from tiny_decoder.training.objectives.distillation import DistillationTrainer

    student, teacher = pair()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=30,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        gradient_accumulation_steps=2,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        seed=0,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, alpha=1.0, temperature=1.0, args=args, train_dataset=toy_dataset()
    )
    b = {k: torch.tensor(v) for k, v in toy_dataset()[:8].items()}
    first, _ = trainer.objective(student, b)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all("kl" in h and "ce" in h for h in logs)
    last, _ = trainer.objective(student.eval(), b)
    assert last < 0.5 * first
    assert all(p.grad is None for p in teacher.parameters())


def test_any_transformers_causal_lm_with_the_same_vocabulary_can_teach():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    teacher = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=67,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    ).eval()
    student, _ = pair()
    objective = DistillationObjective(teacher, "llama", alpha=1.0)
    b = batch()
    with torch.no_grad():
        expected = distillation_divergence(student(**b).logits, teacher(input_ids=b["input_ids"]).logits, b["labels"])
    loss, extras = objective(student, b)
    torch.testing.assert_close(extras["kl"], expected)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_loads_frozen_in_the_requested_dtype(teacher_dir):
    from tiny_decoder.training.objectives.distillation import load_teacher

    teacher = load_teacher(str(teacher_dir), "bfloat16")
    assert not teacher.training and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in teacher.parameters())
    student = TinyDecoderForCausalLM._from_config(teacher.config, dtype=torch.float32)
    ids = torch.randint(3, 200, (2, 10))
    loss, extras = DistillationObjective(teacher, str(teacher_dir), alpha=0.5)(student, {"input_ids": ids, "labels": ids})
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and extras["kl"] > 0
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher(str(teacher_dir) + "-missing")


def test_compiled_divergence_matches_the_eager_one(tiny_tokenizer):
    student, teacher = pair(vocab_size=len(tiny_tokenizer))
    b = batch()
    b["labels"][0, 5:] = -100
    eager = DistillationObjective(teacher, "t", alpha=0.5, temperature=2.0)
    compiled = DistillationObjective(teacher, "t", alpha=0.5, temperature=2.0)
    compiled.prepare(student, tiny_tokenizer, compile=True)
    (loss_e, ex_e), (loss_c, ex_c) = eager(student, b), compiled(student, b)
    torch.testing.assert_close(loss_c, loss_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ex_c["kl"], ex_e["kl"], atol=1e-6, rtol=1e-5)


def test_a_pruned_folder_is_distilled_from_its_teacher(workdir, teacher_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiny_decoder.pruning import prune_model

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    calib = [torch.randint(3, 200, (4, 16), generator=torch.Generator().manual_seed(0))]
    pruned, _ = prune_model(teacher, calib, target="50%")
    pruned.save_pretrained(tmp_path / "pruned")
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(tmp_path / "pruned")
    out = tmp_path / "student"
    distill(kd_args(workdir, out, teacher_dir, max_steps=2, model_name_or_path=str(tmp_path / "pruned"), preset=None))
    student = AutoModelForCausalLM.from_pretrained(out)
    assert student.config.hidden_size == pruned.config.hidden_size < teacher.config.hidden_size
    card = (out / "README.md").read_text()
    assert "knowledge-distillation" in card and "from-scratch" not in card
    assert "base_model:" not in card and str(tmp_path / "pruned") in card  # a local path is named, not Hub metadata


def test_a_student_saved_with_fused_loss_distils_with_its_logits(tiny_tokenizer):
    # A student pruned from a teacher trained with config.fused_loss inherits it; the divergence needs its logits.
    student, teacher = pair(fused_loss=True)
    b = batch()
    assert student.train()(**b).logits is None  # what the objective would get without prepare()
    objective = DistillationObjective(teacher, "t", alpha=0.5, temperature=1.0)
    objective.prepare(student, tiny_tokenizer)
    loss, extras = objective(student, b)
    loss.backward()
    assert student.config.fused_loss is False and extras["kl"] > 0 and torch.isfinite(loss)
