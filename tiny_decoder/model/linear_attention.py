"""Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

softmax(q k^T) is replaced by the kernel phi(q) . phi(k) with phi(x) = elu(x) + 1 (positive), so
    out_i = phi(q_i) . sum_{j <= i} phi(k_j) v_j^T  /  phi(q_i) . sum_{j <= i} phi(k_j),
running sums over the keys instead of a T x S score matrix: time and memory grow linearly with
the sequence (computed in chunks, see below). Why not Linformer: its low-rank projection mixes all positions of
the sequence, so a token would see later tokens; it cannot be made causal without giving up the
projection. With a KV cache the prefix sums run over the cached keys too, so cached decoding is
exact (O(S) per new token; an RNN-state cache would make it O(1), not done here).

`linear_attention` has the signature of every attention function of transformers' interface (and of
`eager_attention`), so the attention layer calls it like any kernel; it returns no weights.
"""

import torch
import torch.nn.functional as F

from .norms import at_least_float32


def feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def causal_linear_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, chunk_size: int = 64, eps: float = 1e-6
) -> torch.Tensor:
    """query (B, H, T, d) for the last T of the S keys/values (B, H, S, d); returns (B, T, H, d).

    Chunked: the state sum_j phi(k_j) v_j^T (d x d) of all earlier keys, plus a causal C x C product
    inside each chunk of C queries, so memory is O(C^2 + d^2) per head beyond the inputs and time
    O(S * d^2 + T * C * d).
    """
    t, s = query.shape[-2], key.shape[-2]
    q, k, v = (at_least_float32(x) for x in (feature_map(query), feature_map(key), value))
    past = s - t
    state = k[..., :past, :].transpose(-2, -1) @ v[..., :past, :]  # (B, H, d, d_v): keys before the queries
    norm = k[..., :past, :].sum(-2)  # (B, H, d)
    out = []
    for start in range(0, t, chunk_size):
        qc = q[..., start : start + chunk_size, :]
        kc, vc = k[..., past + start : past + start + chunk_size, :], v[..., past + start : past + start + chunk_size, :]
        scores = (qc @ kc.transpose(-2, -1)).tril()  # (B, H, C, C): within the chunk, j <= i only
        num = qc @ state + scores @ vc
        den = (qc * norm.unsqueeze(-2)).sum(-1, keepdim=True) + scores.sum(-1, keepdim=True) + eps
        out.append(num / den)
        state = state + kc.transpose(-2, -1) @ vc
        norm = norm + kc.sum(-2)
    return torch.cat(out, dim=-2).to(query.dtype).transpose(1, 2).contiguous()


def linear_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """The attention-interface form: q (B, H, T, d), k/v (B, H_kv, S, d) -> ((B, T, H, d), None). There is no
    score matrix, so no mask (causality is in the running sums; padding is refused by `check_inputs`),
    no scaling (the feature map is not scale-free in the same way) and no weights to return."""
    groups = module.num_key_value_groups
    if groups > 1:  # each kv head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return causal_linear_attention(query, key, value), None


def check_inputs(cache, attention_mask) -> None:
    """Linear attention sums over every cached key: refuse what would add keys that are not real tokens."""
    from transformers.cache_utils import StaticCache

    if isinstance(cache, StaticCache):
        raise ValueError(
            "attention_type='linear' sums over all cached keys, and a static cache holds empty slots; "
            "use the dynamic cache (the default; drop cache_implementation='static')."
        )
    if (
        attention_mask is not None
        and not torch.compiler.is_compiling()
        and attention_mask.dim() == 2
        and not bool(attention_mask.all())
    ):
        raise ValueError(
            "attention_type='linear' does not take padding (the attention_mask has zeros); "
            "run sequences of one length, or one at a time."
        )
