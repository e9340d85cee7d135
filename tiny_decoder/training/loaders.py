"""The run's data loaders, and how many optimizer steps they make.

Data order is a pure function of (seed, epoch): every process draws the same permutation and accelerate gives
each its share, so N processes see the batches that one process with N-fold gradient accumulation sees, and a
resumed run sees what an uninterrupted one saw. Each loader has a generator of its own: creating an iterator
would otherwise draw from the global RNG, and a resumed run's dropout masks would differ.
"""

import math

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler):
    """A permutation of range(n) fixed by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def build_loaders(datasets: dict, args, collate, streaming: bool) -> tuple[DataLoader, DataLoader, EpochSampler | None]:
    """(training loader, validation loader, the training sampler or None for a stream)."""
    sampler = None if streaming else EpochSampler(len(datasets["train"]), args.seed)
    train_dl = DataLoader(
        datasets["train"],
        batch_size=args.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=collate,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_dl = DataLoader(
        datasets["validation"],
        batch_size=args.per_device_eval_batch_size,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),
    )
    return train_dl, eval_dl, sampler


def count_steps(datasets: dict, args, streaming: bool, processes: int) -> tuple[int, int | None]:
    """(optimizer steps of the run, steps per epoch or None for a stream)."""
    if streaming:
        if args.max_steps <= 0:
            raise ValueError("Streaming data has no known length: set --max_steps.")
        return args.max_steps, None
    n_train = len(datasets["train"])
    batches = n_train // args.per_device_train_batch_size // processes  # per process per epoch, drop_last
    if batches == 0:
        raise ValueError(
            f"{n_train} training blocks make no full batch of {args.per_device_train_batch_size} "
            f"per process on {processes} process(es); lower --per_device_train_batch_size."
        )
    per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
    return total, per_epoch


def eval_tokens(datasets: dict, args, block_size: int, streaming: bool) -> int:
    """Tokens one evaluation reads (0 for a stream, whose validation length is unknown)."""
    if streaming:
        return 0
    return min(len(datasets["validation"]), (args.max_eval_batches or 10**9) * args.per_device_eval_batch_size) * block_size
