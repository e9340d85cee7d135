"""Run by test_fsdp.py under torchrun: FSDP2 (fully_shard per Block, then the root) on CPU over gloo.

Trains two steps sharded, then gathers the full state dict the way accelerate does for FSDP2
(`get_model_state_dict(full_state_dict=True, cpu_offload=True)`), writes it with the checkpoint's
plain names, and saves the sharded model's logits on a fixed batch for the single-process check.
"""

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

from tiny_decoder import TinyDecoderConfig, TinyDecoderForCausalLM
from tiny_decoder.training.checkpoint import plain_state_dict


def main(out_dir: str):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    config = TinyDecoderConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=True,
    )
    model = TinyDecoderForCausalLM._from_config(config, attn_implementation="sdpa")
    for block in model.model.layers:
        fully_shard(block)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(2):
        batch = torch.randint(0, 97, (4, 16), generator=g)
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    fixed = torch.arange(32).remainder(97).view(2, 16)
    with torch.no_grad():
        logits = model(input_ids=fixed).logits
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        save_file({k: v.contiguous() for k, v in plain_state_dict(full, model).items()}, f"{out_dir}/model.safetensors")
        config.save_pretrained(out_dir)
        save_file({"logits": logits.contiguous()}, f"{out_dir}/logits.safetensors")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
