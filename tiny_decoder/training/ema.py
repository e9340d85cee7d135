"""Weight EMA (`--ema_decay`): an exponential moving average of the weights, kept in float32 beside training.

After every optimizer step ema <- d * ema + (1 - d) * w, with d = min(ema_decay, (1 + n) / (10 + n)) after n updates
(the usual warm-up: the first averages forget the initial weights quickly instead of carrying them for 1 / (1 - d)
steps). Validation reports the raw weights and the average; the final model saved is the average (the log and the
card say so); every checkpoint carries it as `ema.safetensors`, so a resumed run continues it exactly.
"""

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FILE = "ema.safetensors"
COUNT = "__updates__"  # the number of updates so far, stored beside the weights


class WeightEMA:
    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: torch.nn.Module):
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1 - d)
        self.updates += 1

    @contextmanager
    def swapped_in(self, module: torch.nn.Module):
        """The average in `module`'s weights for the block (evaluation); the training weights come back after it."""
        saved = {n: p.detach().clone() for n, p in module.named_parameters() if n in self.shadow}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, p in module.named_parameters():
                    if name in saved:
                        p.copy_(saved[name])

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module):
        for name, p in module.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name].to(p.dtype))

    def save(self, folder: str):
        save_file(
            {**self.shadow, COUNT: torch.tensor(self.updates)}, str(Path(folder) / FILE), metadata={"decay": str(self.decay)}
        )

    def load(self, folder: Path) -> bool:
        """The average a checkpoint holds (False when it holds none: a run that turned EMA on at this resume)."""
        path = Path(folder) / FILE
        if not path.is_file():
            return False
        state = load_file(str(path))
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"{path} lacks the average of {missing[:3]}; it belongs to another model.")
        self.updates = int(state.pop(COUNT))
        self.shadow = {n: state[n] for n in self.shadow}
        return True
