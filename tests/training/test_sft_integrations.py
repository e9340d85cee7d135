"""The model with the tools SFT users reach for first: TRL's SFTTrainer and a PEFT LoRA adapter."""

import pytest
import torch

from conftest import generated_documents

trl = pytest.importorskip("trl", reason="the [sft] extra (make setup installs it)")
peft = pytest.importorskip("peft", reason="the [sft] extra (make setup installs it)")


@pytest.fixture
def model_and_tok(tiny_tokenizer):
    import copy

    from conftest import small_config
    from tiny_decoder import TinyDecoderForCausalLM
    from tiny_decoder.data.chat import add_chat_template

    tok = copy.deepcopy(tiny_tokenizer)
    add_chat_template(tok)
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(
        small_config(
            vocab_size=len(tok),
            hidden_size=64,
            max_position_embeddings=96,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    return model, tok


def chat_dataset(n=64):
    from datasets import Dataset

    from tiny_decoder.data.instructions import build_instruction_set

    convs = build_instruction_set(generated_documents(n, seed=4), validation_fraction=0.0)["train"]
    return Dataset.from_list([{"messages": c["messages"]} for c in convs])


def test_trl_sft_trainer_fine_tunes_our_model_on_assistant_tokens(model_and_tok, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tok = model_and_tok
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=25,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        logging_steps=5,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        max_length=96,
        assistant_only_loss=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=chat_dataset(), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    labeled = batch["labels"][batch["labels"] != -100]
    real_but_unlabeled = (batch["labels"] == -100) & (batch.get("attention_mask", batch["input_ids"] != tok.pad_token_id) == 1)
    assert labeled.numel() > 0 and real_but_unlabeled.any()  # the prompts are masked, the answers are not
    user, assistant = tok.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])
    assert user not in labeled.tolist() and assistant not in labeled.tolist()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.7 * losses[0], losses


def test_peft_lora_adapter_trains_saves_loads_and_merges(model_and_tok, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, tok = model_and_tok
    base_state = {k: v.clone() for k, v in model.state_dict().items()}  # get_peft_model wraps the model in place
    lora = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in lora.parameters())
    ids = torch.randint(3, 200, (4, 24), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(20):
        loss = lora(input_ids=ids, labels=ids).loss
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < first
    lora.eval()
    expected = lora(input_ids=ids).logits
    lora.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    from tiny_decoder import TinyDecoderForCausalLM

    torch.manual_seed(0)
    fresh = TinyDecoderForCausalLM(model.config)
    fresh.load_state_dict(base_state)
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
    merged = loaded.merge_and_unload()
    assert isinstance(merged, TinyDecoderForCausalLM) and not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
