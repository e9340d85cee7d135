"""transformers.Trainer drives the model: loss falls, checkpoints save, resume continues exactly."""

import torch
from transformers import Trainer, TrainingArguments

from conftest import small_config, toy_dataset
from tiny_decoder import TinyDecoderForCausalLM


def make_trainer(out_dir, max_steps):
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config())
    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=2e-2,
        gradient_accumulation_steps=2,
        save_steps=10,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return Trainer(model=model, args=args, train_dataset=toy_dataset())


def test_trainer_trains_checkpoints_and_resumes(tmp_path):
    full = make_trainer(tmp_path / "full", 20)
    full.train()
    losses = [h["loss"] for h in full.state.log_history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    ckpt = tmp_path / "full" / "checkpoint-10"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "optimizer.pt").exists()
    assert (ckpt / "modeling_tiny_decoder.py").exists()

    resumed = make_trainer(tmp_path / "resumed", 20)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == 20
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
