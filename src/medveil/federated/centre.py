"""One centre's round: the global model trained on the centre's own images.

Plain local training (no DP) is mini-batch SGD with momentum over shuffled batches.
With DP, the same loop runs under Opacus' DP-SGD (Abadi et al. 2016): Poisson-sampled
batches of expected size ``batch_size``, each example's gradient clipped to ``clip``,
Gaussian noise of standard deviation ``noise * clip`` added to the sum, the step's
privacy spent recorded in the centre's :class:`~medveil.federated.ledger.PrivacyLedger`.

Two choices the papers leave open, named here:

- the loss is class-weighted cross-entropy as the standard classifier's (weights from
  the centre's own label counts), reduced as a per-example mean so Opacus' per-example
  gradients are each example's own;
- FedProx's proximal term (Li et al. 2020, ``mu/2 |w - w_global|^2``) is applied as a
  decoupled step after each optimiser step (``w -= lr * mu * (w - w_global)``, as AdamW
  decouples weight decay): through the loss, DP-SGD's clipping and noise would distort
  it; outside, it is post-processing and costs no privacy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError
from medveil.federated.ledger import PrivacyLedger, noise_for_epsilon
from medveil.seeds import derive_seed, seeded


@dataclass(frozen=True)
class LocalPlan:
    """What the aggregator asks of every centre for one round (its config record)."""

    round: int
    rounds: int  #: the run's planned rounds (a target epsilon is spread over them)
    epochs: int
    lr: float  #: at the round's first step
    lr_end: float  #: at its last (linear in between)
    momentum: float
    batch_size: int
    mu: float  #: FedProx's proximal weight (0: FedAvg)
    noise: float  #: DP-SGD noise multiplier (0 and no target_epsilon: no DP)
    target_epsilon: float  #: spend this over the run instead of a fixed noise (0: unused)
    clip: float
    delta: float
    max_epsilon: float  #: a centre declines a round that would take it past this (0: none)
    augment: bool = True
    optimizer: str = "adamw"  #: the centre's local optimiser: ``adamw`` or ``sgd``

    @property
    def private(self) -> bool:
        return self.noise > 0 or self.target_epsilon > 0


@dataclass
class LocalResult:
    """What one centre's round produced: its new weights and what it spent."""

    state: dict[str, np.ndarray] | None  #: None: the centre declined the round
    examples: int
    steps: int
    ledger: PrivacyLedger
    noise: float
    loss: float = float("nan")
    declined: str | None = None


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return max(1, math.ceil(examples / batch_size))


def noise_multiplier(plan: LocalPlan, examples: int) -> float:
    """The centre's noise multiplier: ``plan.noise``, or the one that spends
    ``plan.target_epsilon`` at ``plan.delta`` over every planned round at this centre's
    sample rate (a property of the run, recomputed the same way every round)."""
    if plan.target_epsilon > 0:
        per_epoch = steps_per_epoch(examples, plan.batch_size)
        return noise_for_epsilon(plan.target_epsilon, delta=plan.delta,
                                 sample_rate=1.0 / per_epoch,
                                 steps=plan.rounds * plan.epochs * per_epoch)
    return float(plan.noise)


def train_locally(net_config: dict[str, Any], global_state: dict[str, np.ndarray],
                  train: ImageSet, *, plan: LocalPlan, ledger: PrivacyLedger, seed: int,
                  centre: int) -> LocalResult:
    """The global weights trained for ``plan.epochs`` on ``train`` (this centre's images);
    declines (``state`` None) where the round would pass ``plan.max_epsilon``."""


    if train.labels is None or len(train) == 0:
        raise ConfigError(f"centre {centre} has no labelled training images")
    examples = len(train)
    per_epoch = steps_per_epoch(examples, plan.batch_size)
    sigma = noise_multiplier(plan, examples) if plan.private else 0.0
    if plan.private:
        planned = ledger.with_round(sigma, 1.0 / per_epoch, plan.epochs * per_epoch)
        spent = planned.epsilon(plan.delta)
        if plan.max_epsilon > 0 and spent > plan.max_epsilon:
            return LocalResult(state=None, examples=examples, steps=0, ledger=ledger,
                               noise=sigma, declined=(
                                   f"round {plan.round} would take centre {centre} to "
                                   f"epsilon {spent:.2f} > max_epsilon {plan.max_epsilon}"))
    purpose = f"federated/centre-{centre}/round-{plan.round}"
    with seeded(seed, purpose) as gen:  # dropout, batches, shifts and noise: seeded
        net, steps, loss, ledger = _train(net_config, global_state, train, plan=plan,
                                          ledger=ledger, sigma=sigma, gen=gen,
                                          noise_seed=derive_seed(seed, purpose + "/noise"))
    weights = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    return LocalResult(state=weights, examples=examples, steps=steps, ledger=ledger,
                       noise=sigma, loss=loss)


def _train(net_config, global_state, train: ImageSet, *, plan: LocalPlan,
           ledger: PrivacyLedger, sigma: float, gen, noise_seed: int):
    """The local epochs; returns the trained network, its steps, mean loss and ledger."""
    import torch

    from medveil.nets.classifier import SmallCNN
    from medveil.tasks import random_shift

    net = SmallCNN(**net_config)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in global_state.items()})
    anchor = [p.detach().clone() for p in net.parameters()]
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels.astype(np.int64))
    num_classes = int(net_config["num_classes"])
    counts = torch.bincount(y, minlength=num_classes).float().clamp(min=1)
    weight = counts.sum() / (num_classes * counts)
    if plan.optimizer == "adamw":
        optimiser = torch.optim.AdamW(net.parameters(), lr=plan.lr, weight_decay=1e-4)
    else:
        optimiser = torch.optim.SGD(net.parameters(), lr=plan.lr, momentum=plan.momentum)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=plan.batch_size, shuffle=True,
                                         generator=gen)
    engine = None
    if plan.private:
        opacus = _opacus()
        engine = opacus.PrivacyEngine(accountant=ledger.mechanism)
        engine.accountant.load_state_dict({"history": [tuple(h) for h in ledger.history],
                                           "mechanism": ledger.mechanism})
        net, optimiser, loader = engine.make_private(
            module=net, optimizer=optimiser, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=plan.clip, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(noise_seed))
    pad = max(1, train.image_shape[1] // 16)
    net.train()
    total, seen, steps = 0.0, 0, 0
    planned = max(1, plan.epochs * len(loader) - 1)
    for _ in range(plan.epochs):
        for batch, labels in loader:
            for group in optimiser.param_groups:
                group["lr"] = plan.lr + (plan.lr_end - plan.lr) * min(1.0, steps / planned)
            if plan.augment and len(batch):
                batch = random_shift(batch, pad, gen)
            losses = torch.nn.functional.cross_entropy(net(batch), labels, reduction="none")
            loss = (weight[labels] * losses).mean() if len(batch) else losses.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
            if plan.mu > 0:
                _proximal_step(net, anchor, lr=optimiser.param_groups[0]["lr"], mu=plan.mu)
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
    if engine is not None:
        state = engine.accountant.state_dict()
        ledger = PrivacyLedger(history=[tuple(h) for h in state["history"]],
                               mechanism=ledger.mechanism)
        net = net._module if hasattr(net, "_module") else net
    return net, steps, total / max(1, seen), ledger


def _proximal_step(net, anchor, *, lr: float, mu: float) -> None:
    import torch

    with torch.no_grad():
        for p, a in zip(net.parameters(), anchor, strict=True):
            p.sub_(lr * mu * (p - a))


def _opacus():
    from medveil.federated import require

    opacus = require("opacus")
    import warnings

    # Opacus warns on every backward of a network whose input needs no gradient
    warnings.filterwarnings("ignore", message="Full backward hook is firing",
                            category=UserWarning)
    warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
    return opacus
