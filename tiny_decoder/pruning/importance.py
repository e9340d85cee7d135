"""How much each unit matters, measured on a calibration set with forward hooks (no gradients).

Activation-based, as in Minitron (Muralidharan et al. 2024, arXiv 2407.14679), averaged over
tokens:
- hidden channel i: mean |norm output_i| summed over every norm in the model (what each
  sublayer reads of the residual stream);
- attention head: mean L2 norm of the head's output before o_proj; a KV group (GQA) scores the
  sum of its query heads, since it can only be removed whole;
- MLP channel: mean |act(gate) * up| (the input of down_proj);
- layer: block influence, 1 - cos(input, output) of the block (ShortGPT, arXiv 2403.03853): a
  block that barely turns its input scores low. Or ("loss") the calibration loss with the
  layer skipped: how much dropping it costs.
A unit whose weights are zero on purpose scores exactly 0, so it is pruned first.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LAYER_METRICS = ("block_influence", "loss")


@dataclass
class Importance:
    hidden: torch.Tensor  # (hidden_size,)
    heads: torch.Tensor  # (layers, num_key_value_heads): one score per KV group
    mlp: torch.Tensor  # (layers, intermediate_size)
    layers: torch.Tensor  # (layers,): higher = keep


@torch.no_grad()
def collect_importance(model, batches, layer_metric: str = "block_influence") -> Importance:
    """Scores for every unit of `model` (a TinyDecoderForCausalLM) over `batches` of input ids (B, T)."""
    if layer_metric not in LAYER_METRICS:
        raise ValueError(f"layer_metric={layer_metric!r} is not supported; choose one of {list(LAYER_METRICS)}.")
    batches = list(batches)
    cfg = model.config
    n_layers, n_kv, n_rep = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads
    hidden = torch.zeros(cfg.hidden_size, dtype=torch.float64)
    heads = torch.zeros(n_layers, cfg.num_attention_heads, dtype=torch.float64)
    mlp = torch.zeros(n_layers, cfg.intermediate_size, dtype=torch.float64)
    influence = torch.zeros(n_layers, dtype=torch.float64)
    tokens = 0

    def norm_hook(module, inputs, output):
        hidden.add_(output.detach().abs().double().sum(dim=(0, 1)))

    def head_hook(i):
        def hook(module, inputs):
            y = inputs[0].detach().double()  # (B, T, H * d)
            heads[i] += y.view(*y.shape[:2], cfg.num_attention_heads, -1).norm(dim=-1).sum(dim=(0, 1))

        return hook

    def mlp_hook(i):
        def hook(module, inputs):
            mlp[i] += inputs[0].detach().abs().double().sum(dim=(0, 1))

        return hook

    def block_hook(i):
        def hook(module, inputs, output):
            x_in, x_out = inputs[0].detach().double(), output[0].detach().double()
            influence[i] += (1 - F.cosine_similarity(x_in, x_out, dim=-1)).sum()

        return hook

    handles = []
    for name, module in model.named_modules():
        # The residual stream's norms (QK-norm's span the head dimension, which has no hidden channels).
        if module.__class__.__name__ in ("RMSNorm", "LayerNorm") and not name.endswith(("q_norm", "k_norm")):
            handles.append(module.register_forward_hook(norm_hook))
    for i, block in enumerate(model.model.layers):
        handles.append(block.self_attn.o_proj.register_forward_pre_hook(head_hook(i)))
        handles.append(block.mlp.down_proj.register_forward_pre_hook(mlp_hook(i)))
        handles.append(block.register_forward_hook(block_hook(i)))
    was_training = model.training
    model.eval()
    try:
        for ids in batches:
            model(input_ids=ids, use_cache=False)
            tokens += ids.numel()
    finally:
        for h in handles:
            h.remove()
    if tokens == 0:
        raise ValueError("The calibration set is empty: give at least one batch of tokens.")
    layers = influence / tokens
    if layer_metric == "loss":
        layers = layer_drop_losses(model, batches)
    model.train(was_training)
    return Importance(
        hidden=hidden / tokens, heads=(heads / tokens).view(n_layers, n_kv, n_rep).sum(-1), mlp=mlp / tokens, layers=layers
    )


@torch.no_grad()
def layer_drop_losses(model, batches) -> torch.Tensor:
    """Calibration loss with each layer skipped in turn, minus the full model's: the cost of dropping it."""

    def loss():
        total = sum(model(input_ids=ids, labels=ids, use_cache=False).loss.double() * ids.shape[0] for ids in batches)
        return total / sum(ids.shape[0] for ids in batches)

    full, layers = loss(), model.model.layers
    rises = []
    try:
        for i in range(len(layers)):
            model.model.layers = torch.nn.ModuleList(b for j, b in enumerate(layers) if j != i)
            rises.append(loss() - full)
    finally:
        model.model.layers = layers
    return torch.stack(rises)
