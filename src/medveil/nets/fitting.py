"""The owner-side fitting loop the schemes' own networks share (VAE, sparse codec)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def fit_one_cycle(net: nn.Module, x: torch.Tensor, loss_of_batch: Callable[[torch.Tensor],
                                                                        torch.Tensor], *,
                  epochs: int, batch_size: int, lr: float, generator: torch.Generator,
                  optimiser: str = "adam") -> nn.Module:
    """Shuffled mini-batch epochs under a one-cycle schedule; returns ``net`` in eval mode.

    All randomness (the shuffles, and whatever ``loss_of_batch`` draws) comes from
    ``generator``, so a fit is a function of the seed. ``optimiser`` is ``adam`` or
    ``adamw``.
    """
    choice = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimiser]
    opt = choice(net.parameters(), lr=lr)
    steps = max(1, -(-len(x) // batch_size)) * epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            loss = loss_of_batch(x[order[i:i + batch_size]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()
