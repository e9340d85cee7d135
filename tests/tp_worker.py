"""Run under torchrun with 2 CPU processes: load a saved folder with tp_plan="auto" (gloo) and
write this rank's logits and the shapes of its local shards."""

import json
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

import tiny_decoder  # noqa: F401  (registers the Auto classes)

folder, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder, tp_plan="auto").eval()
rank = dist.get_rank()
ids = torch.arange(24).remainder(60).view(2, 12) + 3
with torch.no_grad():
    logits = model(ids, use_cache=False).logits
    logits = logits.full_tensor() if hasattr(logits, "full_tensor") else logits
    generated = model.generate(ids[:, :4], max_new_tokens=6, do_sample=False)
shapes = {n: list((p.to_local() if hasattr(p, "to_local") else p).shape) for n, p in model.named_parameters()}
torch.save({"logits": logits, "generated": generated}, f"{out}/rank{rank}.pt")
with open(f"{out}/shapes{rank}.json", "w") as f:
    json.dump(shapes, f)
dist.barrier()
dist.destroy_process_group()
