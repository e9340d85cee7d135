"""The LM head and the next-token cross-entropy as one step, a block of rows at a time (config.fused_loss).

Why: at a small hidden size the (tokens x vocabulary) logits cost more than the model that makes them. Under bf16
autocast on a CPU the unfused head + loss took about half of make train's step (bench/step_profile.py shows the
pieces): the logits are made in bf16, copied to fp32, log-softmaxed, the same again backwards; bench/speed.py
--fused_loss measures the step with this instead. Here each block's logits live only while its loss and its
gradient are made (one fused log-softmax in fp32, exponentiated in place into softmax - one-hot; the rows' scale goes
on the small operands of the gradient matmuls, not over the vocabulary), and the gradients of the hidden states and
of the head's weight leave the forward pass already computed; backward only scales them. Same loss and gradients as
`lm_head` + transformers' ForCausalLMLoss (shift, -100 ignored, `num_items_in_batch`), the logits never returned.
"""

import torch

ROWS = 256  # rows of logits alive at a time: (ROWS, vocabulary) in fp32 stays in the CPU's caches


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, divisor):
        """hidden (N, D), weight (V, D), targets (N,) with -100 ignored, divisor: what the summed loss is divided by.
        Matmuls follow the ambient autocast (bf16 under it); logits, softmax and the loss are fp32 (fp64 for fp64)."""
        wide = torch.promote_types(weight.dtype, torch.float32)  # fp32, or fp64 for a float64 model
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=wide, device=weight.device)
        total = torch.zeros((), dtype=wide, device=hidden.device)
        for start in range(0, hidden.shape[0], ROWS):
            h, y = hidden[start : start + ROWS], targets[start : start + ROWS]
            logits = torch.nn.functional.linear(h, weight)
            low = logits.dtype  # bf16 under autocast: the gradient matmuls run in it too, as autograd's would
            rows, safe = torch.arange(len(y), device=y.device), y.clamp(min=0)
            scale = ((y != -100) / divisor).to(wide)[:, None]  # each row's share of the loss; 0 for ignored rows
            logp = torch.log_softmax(logits, -1, dtype=wide)  # one fused pass, in fp32 even from bf16 logits
            total -= (logp[rows, safe] * scale[:, 0]).sum()
            grad = logp.exp_()  # softmax
            grad[rows, safe] -= 1.0  # - one-hot, in fp32 before any rounding to bf16
            grad = grad.to(low)  # the row scale is applied to the matmuls' small operands, not to (rows, V)
            grad_hidden[start : start + ROWS] = ((grad @ weight.to(low)).to(wide) * scale).to(hidden.dtype)
            grad_weight += (grad.t() @ (h * scale).to(low)).to(wide)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None


def fused_causal_lm_loss(hidden, weight, labels, num_items_in_batch=None) -> torch.Tensor:
    """(B, T, D) last hidden states, the head's (V, D) weight, (B, T) labels -> the mean next-token loss over labels
    that are not -100 (or their sum / num_items_in_batch), as transformers' ForCausalLMLoss."""
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].reshape(-1)
    divisor = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum().clamp(min=1)
    if isinstance(divisor, torch.Tensor):
        divisor = divisor.to(hidden.device, torch.promote_types(weight.dtype, torch.float32))
    return LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets, divisor)
