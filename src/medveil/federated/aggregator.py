"""The aggregator's rounds: what it asks of the centres, and how it combines their
updates (Flower's FedAvg / FedProx strategies and their weighted average).

The aggregator is the processor of the federated protocol and is treated as every
processor is treated, from both sides: it never holds an image, and every update it
gets from a centre is checked before it is averaged (the same parameter names, shapes
and dtype as the model it sent, finite values, the example count the centre declared
when it joined), so one hostile centre cannot make the global model NaN or change its
architecture, nor inflate its weight in the average past what it declared.

The learning rate follows the standard classifier's one-cycle schedule over the whole
run (a warm-up to ``lr`` over the first 30 % of the rounds, then a cosine fall), each
round's start and end sent to the centres in its plan (a centre steps linearly between
them); the final model is the last
round's (there is no validation set on the server to choose a round by).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medveil.errors import ConfigError, IntegrityError
from medveil.federated import require
from medveil.federated.centre import LocalPlan
from medveil.seeds import seeded

#: a centre's local optimisers (a fresh one each round, as FedAvg's centres start)
OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class FederatedSettings:
    """One federated run's configuration (the ``federated`` scheme's parameters)."""

    centres: int = 3
    rounds: int = 15
    epochs: int = 1  #: local epochs per round
    lr: float = 2e-3  #: the peak of the run's one-cycle schedule
    momentum: float = 0.9
    batch_size: int = 64
    mu: float = 0.0  #: FedProx's proximal weight (0: FedAvg)
    noise: float = 0.0
    target_epsilon: float = 0.0
    clip: float = 1.0
    delta: float = 1e-5
    max_epsilon: float = 0.0
    width: int = 16
    groups: int = 8
    augment: bool = True
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        if self.noise > 0 and self.target_epsilon > 0:
            raise ConfigError("give the DP noise multiplier (noise=) or a target epsilon "
                              "(epsilon=), not both")
        for name in ("centres", "rounds", "epochs", "batch_size", "width", "groups"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "clip", "delta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be above 0, got {getattr(self, name)}")
        for name in ("momentum", "mu", "noise", "target_epsilon", "max_epsilon"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                              f"{self.optimizer!r}")
        if not self.delta < 1:
            raise ConfigError(f"delta must be below 1, got {self.delta}")

    @property
    def private(self) -> bool:
        return self.noise > 0 or self.target_epsilon > 0

    def plan(self, round_: int) -> LocalPlan:
        """Round ``round_``'s plan for every centre (1-based): the learning rate at the
        round's start and end on the run's one-cycle schedule."""
        return LocalPlan(round=round_, rounds=self.rounds, epochs=self.epochs,
                         lr=one_cycle(self.lr, (round_ - 1) / self.rounds),
                         lr_end=one_cycle(self.lr, round_ / self.rounds),
                         momentum=self.momentum, batch_size=self.batch_size, mu=self.mu,
                         noise=self.noise, target_epsilon=self.target_epsilon,
                         clip=self.clip, delta=self.delta, max_epsilon=self.max_epsilon,
                         augment=self.augment, optimizer=self.optimizer)


def one_cycle(peak: float, t: float, *, warm: float = 0.3, start_div: float = 25.0,
              end_div: float = 1e4) -> float:
    """The learning rate at fraction ``t`` of the run on the standard classifier's
    schedule (torch's OneCycleLR defaults): a cosine rise from ``peak / start_div`` to
    ``peak`` over the first ``warm`` of the run, then a cosine fall towards
    ``peak / (start_div * end_div)``."""
    low, final = peak / start_div, peak / (start_div * end_div)
    if t <= warm:
        return low + (peak - low) * (1 - math.cos(math.pi * t / warm)) / 2
    return final + (peak - final) * (1 + math.cos(math.pi * (t - warm) / (1 - warm))) / 2


def plan_to_config(plan: LocalPlan) -> dict[str, Any]:
    """A plan as the JSON / ConfigRecord the aggregator sends."""
    return asdict(plan)


def plan_from_config(config: dict[str, Any]) -> LocalPlan:
    """A plan back from what a centre received, checked (the aggregator is an
    adversary too: a centre trains only on a plan it can read)."""
    try:
        plan = LocalPlan(**{k: config[k] for k in LocalPlan.__dataclass_fields__})
    except (KeyError, TypeError) as exc:
        raise IntegrityError(f"the aggregator's round plan is incomplete ({exc})") from None
    numbers = [v for k, v in asdict(plan).items() if k not in ("augment", "optimizer")]
    if plan.optimizer not in OPTIMIZERS or not isinstance(plan.augment, bool):
        raise IntegrityError(f"the aggregator's round plan holds values no run has: {config}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               and v >= 0 for v in numbers) or plan.batch_size < 1 or plan.epochs < 1 \
            or plan.round < 1 or plan.clip <= 0 or not 0 < plan.delta < 1:
        raise IntegrityError(f"the aggregator's round plan holds values no run has: {config}")
    return plan


def initial_state(settings: FederatedSettings, *, in_channels: int, num_classes: int,
                  seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The federated classifier's config and its seeded initial weights."""
    from medveil.nets.classifier import SmallCNN

    config = {"in_channels": in_channels, "num_classes": num_classes,
              "width": settings.width, "norm": "group", "groups": settings.groups}
    with seeded(seed, "federated/model"):
        net = SmallCNN(**config)
    return net.config, {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


class Aggregator:
    """FedAvg (or FedProx) over the centres' updates, with Flower's strategy objects."""

    def __init__(self, settings: FederatedSettings) -> None:
        strategy = require("flwr.serverapp.strategy")
        common = {"min_train_nodes": 1, "min_available_nodes": 1}
        self.settings = settings
        self.strategy = (strategy.FedProx(proximal_mu=settings.mu, **common)
                         if settings.mu > 0 else strategy.FedAvg(**common))

    def aggregate(self, global_state: dict[str, np.ndarray],
                  updates: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
        """The example-weighted average of the centres' weights (Flower's
        ``aggregate_arrayrecords``, the function FedAvg and FedProx aggregate with)."""
        app = require("flwr.app")
        utils = require("flwr.serverapp.strategy.strategy_utils")
        if not updates:
            raise ConfigError("no centre sent an update this round")
        records = []
        for i, (state, examples) in enumerate(updates):
            check_update(state, global_state, where=f"centre {i}'s update")
            records.append(app.RecordDict({
                "arrays": app.ArrayRecord({k: app.Array(np.ascontiguousarray(v))
                                           for k, v in state.items()}),
                "metrics": app.MetricRecord({self.strategy.weighted_by_key: int(examples)})}))
        merged = utils.aggregate_arrayrecords(records, self.strategy.weighted_by_key)
        return {k: np.asarray(merged[k].numpy(), dtype=global_state[k].dtype)
                for k in global_state}


def check_update(state: dict[str, np.ndarray], reference: dict[str, np.ndarray], *,
                 where: str) -> None:
    """A centre's weights have the model's names, shapes and dtypes, and are finite."""
    if set(state) != set(reference):
        raise IntegrityError(f"{where} names parameters the model does not have (or lacks "
                             "some); refuse it")
    for name, value in state.items():
        ref = reference[name]
        if not isinstance(value, np.ndarray) or value.shape != ref.shape or \
                value.dtype != ref.dtype:
            raise IntegrityError(f"{where}: {name} is not a {ref.dtype} array of shape "
                                 f"{ref.shape}; refuse it")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise IntegrityError(f"{where}: {name} holds values that are not finite; "
                                 "refuse it")
