"""Our attention (eager and sdpa) against a naive float64 reference written loop by loop."""

import math

import pytest
import torch

from conftest import POSITION_EMBEDDINGS, small_config
from tiny_decoder import TinyDecoderModel


def reference_rope(x, pos, theta):
    """Rotate channel pairs (i, i + d/2) by pos * theta^(-2i/d), as complex multiplication."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = pos.double()[..., None] * freqs
    z = torch.complex(x[..., : d // 2], x[..., d // 2 :]) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag), dim=-1)


def naive_attention(attn, x, pos, mask, pe, theta):
    """Float64, one query row at a time: the definition, with no batching tricks."""
    x = x.double()
    b, t, _ = x.shape
    h, hk, d = attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim

    def proj(layer, heads):
        w, bias = layer.weight.double(), layer.bias
        y = x @ w.T + (bias.double() if bias is not None else 0)
        return y.view(b, t, heads, d)

    q, k, v = proj(attn.q_proj, h), proj(attn.k_proj, hk), proj(attn.v_proj, hk)
    if pe == "rope":
        q = reference_rope(q, pos[:, :, None].expand(b, t, h), theta)
        k = reference_rope(k, pos[:, :, None].expand(b, t, hk), theta)
    slopes = [2 ** (-8 * (i + 1) / h) for i in range(h)]  # ALiBi paper, heads a power of two
    out = torch.zeros(b, t, h, d, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            kv = hi // (h // hk)
            for i in range(t):
                keys = [j for j in range(i + 1) if mask[bi, j]]
                if not keys:
                    continue
                s = torch.stack([q[bi, i, hi] @ k[bi, j, kv] / math.sqrt(d) for j in keys])
                if pe == "alibi":
                    s = s - torch.tensor([slopes[hi] * (i - j) for j in keys], dtype=torch.float64)
                w = torch.softmax(s, dim=0)
                out[bi, i, hi] = sum(wj * v[bi, j, kv] for wj, j in zip(w, keys))
    o = attn.o_proj
    y = out.reshape(b, t, h * d) @ o.weight.double().T
    return y + (o.bias.double() if o.bias is not None else 0)


def run_first_attention(model, ids, mask):
    """Run the model; return (input, output) of layer 0's attention and the positions used."""
    seen = {}
    attn = model.layers[0].self_attn
    handle = attn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out[0]))
    model(ids, attention_mask=mask, use_cache=False)
    handle.remove()
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return seen["x"], seen["y"], pos


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("padding", ["none", "left", "right"])
@pytest.mark.parametrize("pe", ["rope", "alibi", "none"])
def test_attention_matches_naive_float64(impl, kv_heads, padding, pe):
    torch.manual_seed(0)
    cfg = small_config(num_key_value_heads=kv_heads, position_embedding=pe, attention_bias=True)
    model = TinyDecoderModel._from_config(cfg, attn_implementation=impl).eval()
    ids = torch.randint(3, cfg.vocab_size, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    if padding == "left":
        mask[0, :3] = 0
    elif padding == "right":
        mask[1, 4:] = 0
    x, y, pos = run_first_attention(model, ids, mask)
    ref = naive_attention(model.layers[0].self_attn, x, pos, mask, pe, cfg.rope_theta)
    real = mask.bool()  # rows of pad queries are undefined; compare real tokens only
    torch.testing.assert_close(y.double()[real], ref[real], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
def test_eager_and_sdpa_agree(kv_heads, pe):
    torch.manual_seed(1)
    cfg = small_config(num_key_value_heads=kv_heads, position_embedding=pe)
    eager = TinyDecoderModel._from_config(cfg, attn_implementation="eager").eval()
    sdpa = TinyDecoderModel._from_config(cfg, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    ids = torch.randint(3, cfg.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    for m in (None, mask):
        a = eager(ids, attention_mask=m).last_hidden_state
        b = sdpa(ids, attention_mask=m).last_hidden_state
        keep = slice(None) if m is None else m.bool()
        torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
def test_causality(impl, pe):
    """Changing tokens after position t leaves every output at positions <= t unchanged."""
    torch.manual_seed(2)
    cfg = small_config(position_embedding=pe)
    model = TinyDecoderModel._from_config(cfg, attn_implementation=impl).eval()
    ids = torch.randint(3, cfg.vocab_size, (1, 10))
    base = model(ids).last_hidden_state
    for t in range(9):
        changed = ids.clone()
        changed[0, t + 1 :] = torch.randint(3, cfg.vocab_size, (9 - t,))
        out = model(changed).last_hidden_state
        torch.testing.assert_close(out[0, : t + 1], base[0, : t + 1], atol=1e-6, rtol=1e-5)
        assert not torch.allclose(out[0, t + 1 :], base[0, t + 1 :])  # and the future does matter


def test_eager_returns_weights_that_are_causal_distributions():
    cfg = small_config()
    model = TinyDecoderModel._from_config(cfg, attn_implementation="eager").eval()
    out = model(torch.randint(3, 60, (2, 6)), output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == cfg.num_hidden_layers and len(out.hidden_states) == cfg.num_hidden_layers + 1
    w = out.attentions[0]
    assert w.shape == (2, cfg.num_attention_heads, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, cfg.num_attention_heads, 6))
    assert torch.all(w.triu(1) == 0)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)


def test_sdpa_under_cpu_bf16_autocast_attends_in_float32(monkeypatch):
    """bf16 autocast on CPU: sdpa gets float32 q/k/v with autocast off (its flash kernel is slower in bf16 there), so
    the attention output is float32-exact for its inputs; the projections around it stay bf16."""
    torch.manual_seed(3)
    cfg = small_config(num_key_value_heads=4)
    model = TinyDecoderModel._from_config(cfg, attn_implementation="sdpa").eval()
    kernel, seen = torch.nn.functional.scaled_dot_product_attention, []

    def spy(q, k, v, *args, **kwargs):
        out = kernel(q, k, v, *args, **kwargs)
        seen.append((q, k, v, torch.is_autocast_enabled("cpu"), out))
        return out

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ids = torch.randint(3, cfg.vocab_size, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, use_cache=False)
        projected = model.layers[0].self_attn.q_proj(torch.randn(2, 9, cfg.hidden_size))
    assert projected.dtype == torch.bfloat16 and len(seen) == cfg.num_hidden_layers
    for q, k, v, autocast_on, out in seen:
        assert {q.dtype, k.dtype, v.dtype, out.dtype} == {torch.float32} and not autocast_on
        causal = torch.ones(9, 9, dtype=torch.bool).tril()
        scores = (q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~causal, -math.inf)
        torch.testing.assert_close(out.double(), scores.softmax(-1) @ v.double(), atol=1e-6, rtol=1e-5)
