"""generate(): the KV cache changes nothing, padding changes nothing, sampling is seeded."""

import pytest
import torch
from transformers import DynamicCache

from conftest import POSITION_EMBEDDINGS, small_config
from tiny_decoder import TinyDecoderForCausalLM


def make_model(pe, impl="sdpa", seed=0):
    torch.manual_seed(seed)
    cfg = small_config(position_embedding=pe, vocab_size=257, hidden_size=64, num_attention_heads=4, max_position_embeddings=128)
    # float64 so argmax never flips on rounding differences between paths
    return TinyDecoderForCausalLM._from_config(cfg, attn_implementation=impl).double().eval()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
def test_greedy_with_cache_equals_without(pe, impl):
    model = make_model(pe, impl)
    prompt = torch.randint(3, 257, (2, 5))
    cached = model.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=True, eos_token_id=None)
    uncached = model.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=False, eos_token_id=None)
    assert cached.shape == (2, 25)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
def test_cache_step_logits_equal_full_forward(pe):
    """Prefill + one token at a time through a Cache gives the logits of one full forward."""
    model = make_model(pe)
    ids = torch.randint(3, 257, (2, 12))
    full = model(ids, use_cache=False).logits
    cache = DynamicCache(config=model.config)
    out = model(ids[:, :7], cache=cache)
    steps = [out.logits]
    for t in range(7, 12):
        out = model(ids[:, t : t + 1], past_key_values=out.cache)  # the v4 name still works
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert out.cache.get_seq_length() == 12


@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
def test_left_padded_batch_generates_like_each_prompt_alone(pe):
    model = make_model(pe)
    prompts = [torch.randint(3, 257, (n,)) for n in (3, 7, 5)]
    width = max(len(p) for p in prompts)
    pad = model.config.pad_token_id
    batch = torch.full((3, width), pad)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    together = model.generate(batch, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=pad)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=12, do_sample=False, eos_token_id=None)
        assert torch.equal(together[i, width:], alone[0, len(p) :]), f"prompt {i}"


@pytest.mark.parametrize("kwargs", [dict(top_k=10), dict(top_p=0.9), dict(top_k=20, top_p=0.8, temperature=0.7)])
def test_sampling_is_reproducible_with_a_seed(kwargs):
    model = make_model("rope")
    prompt = torch.randint(3, 257, (2, 4))

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(prompt, do_sample=True, max_new_tokens=16, eos_token_id=None, **kwargs)

    a, b, c = sample(123), sample(123), sample(7)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_top_k_one_is_greedy():
    model = make_model("alibi")
    prompt = torch.randint(3, 257, (2, 4))
    greedy = model.generate(prompt, do_sample=False, max_new_tokens=10, eos_token_id=None)
    torch.manual_seed(0)
    sampled = model.generate(prompt, do_sample=True, top_k=1, max_new_tokens=10, eos_token_id=None)
    assert torch.equal(greedy, sampled)


def test_generation_stops_at_eos():
    model = make_model("rope")
    prompt = torch.randint(3, 257, (1, 4))
    free = model.generate(prompt, do_sample=False, max_new_tokens=10, eos_token_id=None)
    eos = int(free[0, 6])  # pretend the 3rd generated token is EOS
    stopped = model.generate(prompt, do_sample=False, max_new_tokens=10, eos_token_id=eos)
    assert stopped.shape[1] <= 7 and stopped[0, -1] == eos
