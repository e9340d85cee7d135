"""config.fused_loss: the LM head + cross-entropy in blocks of rows gives the unfused model's loss and gradients
(float64, several blocks, ignored labels, num_items_in_batch, tied weights), stays close under bf16 autocast, and
leaves the logits out only while training."""

import pytest
import torch

import tiny_decoder.model.fused_loss as fused_module
from conftest import small_config
from tiny_decoder import TinyDecoderForCausalLM


def pair(dtype=torch.float64, **over):
    torch.manual_seed(0)
    plain = TinyDecoderForCausalLM(small_config(**over)).to(dtype).train()
    fused = TinyDecoderForCausalLM(small_config(fused_loss=True, **over)).to(dtype).train()
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def loss_and_grads(model, ids, labels, **kw):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=labels, use_cache=False, **kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def exact_loss_and_grads(model, ids, labels, num_items_in_batch=None):
    """The reference: the unfused model's logits and cross-entropy in the model's own dtype (transformers' loss
    upcasts to float32 only, so a float64 model needs this to compare at 1e-12)."""
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    targets = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    loss = loss / (num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum())
    loss.backward()
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("num_items", [None, 37])
@pytest.mark.parametrize("tied", [True, False])
def test_fused_loss_and_gradients_equal_the_unfused_model(monkeypatch, num_items, tied):
    monkeypatch.setattr(fused_module, "ROWS", 7)  # several blocks, the last one short
    plain, fused = pair(tie_word_embeddings=tied, embedding_dropout=0.0)
    ids = torch.randint(0, 67, (3, 10))
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt the loss skips, as SFT's labels do
    labels[2, 7:] = -100
    kw = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    ref_loss, ref_grads = exact_loss_and_grads(plain, ids, labels, **kw)
    out, grads = loss_and_grads(fused, ids, labels, **kw)
    assert out.logits is None
    assert torch.allclose(out.loss, ref_loss, atol=1e-12, rtol=0)
    unfused, _ = loss_and_grads(plain, ids, labels, **kw)  # transformers' loss, float32 inside
    assert torch.allclose(out.loss.float(), unfused.loss, atol=1e-6)
    assert ref_grads.keys() == grads.keys()
    for name in ref_grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-12, rtol=1e-9), name


def test_fused_loss_under_bf16_autocast_stays_close_to_float64():
    plain, fused = pair(dtype=torch.float32, embedding_dropout=0.0)
    exact = TinyDecoderForCausalLM(small_config(embedding_dropout=0.0)).double().train()
    exact.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 67, (4, 16))
    ref_loss, ref_grads = exact_loss_and_grads(exact, ids, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = loss_and_grads(fused, ids, ids)
        unfused, unfused_grads = loss_and_grads(plain, ids, ids)
    head = "model.embed_tokens.weight"  # tied: the head's gradient lands here
    for loss, g in ((out.loss, grads), (unfused.loss, unfused_grads)):
        assert abs(loss.item() - ref_loss.item()) < 2e-2
        assert (g[head].double() - ref_grads[head]).norm() / ref_grads[head].norm() < 3e-2
    # no further from float64 than the unfused bf16 step (its logits are rounded to bf16 once more)
    assert abs(out.loss.item() - ref_loss.item()) <= abs(unfused.loss.item() - ref_loss.item()) + 5e-3


def test_fused_loss_applies_only_while_training_with_labels_and_no_softcap():
    _, fused = pair()
    ids = torch.randint(0, 67, (2, 8))
    assert fused(input_ids=ids, labels=ids).logits is None
    fused.eval()  # validation: logits and the same loss as the unfused path
    plain, _ = pair()
    plain.eval()
    out, ref = fused(input_ids=ids, labels=ids), plain(input_ids=ids, labels=ids)
    assert out.logits is not None and torch.equal(out.loss, ref.loss)
    fused.train()
    with torch.no_grad():
        assert fused(input_ids=ids, labels=ids).logits is not None
    assert fused(input_ids=ids).logits is not None  # no labels
    _, capped = pair(final_logit_softcapping=5.0)
    assert capped(input_ids=ids, labels=ids).logits is not None  # the cap keeps the unfused head
