"""The model's contract: every architecture trains, loss semantics, HF output conventions."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from conftest import POSITION_EMBEDDINGS, small_config
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.model.configuration_tiny_decoder import HIDDEN_ACTS, NORM_POSITIONS, NORMS

COMBOS = list(itertools.product(POSITION_EMBEDDINGS, NORMS, NORM_POSITIONS, HIDDEN_ACTS))


@pytest.mark.parametrize("pe, norm, norm_position, act", COMBOS)
def test_every_architecture_overfits_a_fixed_batch(pe, norm, norm_position, act):
    torch.manual_seed(0)
    cfg = small_config(
        position_embedding=pe,
        norm=norm,
        norm_position=norm_position,
        hidden_act=act,
        num_hidden_layers=2,
        hidden_size=32,
        vocab_size=32,
    )
    model = TinyDecoderForCausalLM(cfg).train()
    ids = torch.randint(0, cfg.vocab_size, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
        opt.step()
        first = loss.item() if first is None else first
    assert first > 3.0  # ~ln(32) at init
    assert loss.item() < 0.5 * first, f"loss {first:.3f} -> {loss.item():.3f}"


def test_loss_is_shifted_cross_entropy_ignoring_minus_100():
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config()).eval()
    ids = torch.randint(3, 60, (2, 9))
    labels = ids.clone()
    labels[0, 5:] = -100
    out = model(ids, labels=labels)
    ref = F.cross_entropy(out.logits[:, :-1].reshape(-1, 67).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)


def test_num_items_in_batch_turns_mean_into_sum_over_that_count():
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config()).eval()
    ids = torch.randint(3, 60, (2, 9))
    mean = model(ids, labels=ids).loss
    summed = model(ids, labels=ids, num_items_in_batch=torch.tensor(100)).loss
    n_targets = 2 * 8
    torch.testing.assert_close(summed, mean * n_targets / 100)


def test_return_dict_false_and_logits_to_keep():
    model = TinyDecoderForCausalLM(small_config()).eval()
    ids = torch.randint(3, 60, (2, 9))
    full = model(ids).logits
    tup = model(ids, labels=ids, return_dict=False)
    assert isinstance(tup, tuple) and tup[0].dim() == 0
    torch.testing.assert_close(tup[1], full)
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, full[:, -1:])


def test_inputs_embeds_equal_input_ids():
    model = TinyDecoderForCausalLM(small_config(position_embedding="learned")).eval()
    ids = torch.randint(3, 60, (2, 9))
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits)
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=embeds)


def test_tied_embeddings_share_storage_and_untied_do_not():
    tied = TinyDecoderForCausalLM(small_config())
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
    untied = TinyDecoderForCausalLM(small_config(tie_word_embeddings=False))
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()


def test_init_is_gpt2_style():
    cfg = small_config(hidden_size=256, num_hidden_layers=8, num_attention_heads=8, vocab_size=4096)
    model = TinyDecoderForCausalLM(cfg)
    assert abs(model.model.embed_tokens.weight.std().item() - 0.02) < 0.002
    expected = 0.02 / (2 * 8) ** 0.5
    assert abs(model.model.layers[3].self_attn.o_proj.weight.std().item() - expected) < 0.1 * expected
    assert abs(model.model.layers[3].mlp.down_proj.weight.std().item() - expected) < 0.1 * expected
    assert torch.all(model.model.layers[0].attn_norm.weight == 1)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = small_config()
    a = TinyDecoderForCausalLM(cfg).train()
    b = TinyDecoderForCausalLM(cfg).train()
    b.load_state_dict(a.state_dict())
    b.activation_checkpointing_enable({"use_reentrant": False})
    assert b.model.layers[0].gradient_checkpointing
    ids = torch.randint(3, 60, (2, 12))
    a(ids, labels=ids).loss.backward()
    b(ids, labels=ids).loss.backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_learned_positions_past_the_table_give_a_clear_error():
    model = TinyDecoderForCausalLM(small_config(position_embedding="learned", max_position_embeddings=8)).eval()
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model(torch.randint(3, 60, (1, 9)))


def test_unknown_attention_implementation_is_refused():
    with pytest.raises(ValueError):
        TinyDecoderForCausalLM._from_config(small_config(), attn_implementation="flash_attention_9")
