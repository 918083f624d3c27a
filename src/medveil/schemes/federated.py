"""``federated``: no view at all. The images stay in each centre; the centres train one
classifier together with FedAvg over Flower, with Opacus DP-SGD where asked
(``medveil.protocols.federated``, ``medveil.federated``).

It is a scheme so that it sits in the same scorecard as the five view schemes, under
the same attackers: its row runs the federated protocol's halves in process. Its
parameters are the run's configuration, public like every scheme's; there is no key
and nothing to fit, and ``protect`` refuses (there is no view to make).

Rows: ``federated`` (no DP), ``federated:noise=1.1`` or ``federated:epsilon=8`` (DP-SGD
in every centre at that noise multiplier, or the noise that spends that epsilon at
``delta`` over the planned rounds), ``federated:mu=0.01`` (FedProx),
``federated:split=dirichlet,alpha=0.3`` (label skew).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medveil.errors import ConfigError
from medveil.keys import Key
from medveil.schemes.base import Scheme, register


@register
class FederatedScheme(Scheme):
    name = "federated"
    protocol = "federated"
    keyed = False
    releases_view = False
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    #: in process, every centre trains every round: about one plain training, plus
    #: the per-example gradients of DP-SGD, plus the membership references
    bench_cost = 1.5

    def __init__(self, *, centres: int = 3, split: str = "iid", alpha: float = 0.5,
                 rounds: int = 0, local_epochs: int = 1, batch_size: int = 0,
                 lr: float = 2e-3, momentum: float = 0.9, mu: float = 0.0,
                 optimizer: str = "adamw",
                 noise: float = 0.0, epsilon: float = 0.0, clip: float = 1.0,
                 delta: float = 1e-5, max_epsilon: float = 0.0, width: int = 0,
                 groups: int = 8) -> None:
        """``rounds`` 0 / ``batch_size`` 0 / ``width`` 0: the budget's classifier epochs,
        batch size and width (one local epoch per round: the same passes over the data
        as the standard classifier). ``noise`` / ``epsilon``: DP-SGD's noise multiplier,
        or the target epsilon at ``delta`` it is chosen for (0, 0: no DP). ``max_epsilon``: a centre
        declines any round that would take it past this (0: no bound). ``optimizer``:
        each centre's local optimiser, fresh each round (``adamw`` at ``lr`` on the
        standard classifier's one-cycle schedule over the run, or ``sgd`` with
        ``momentum``)."""
        super().__init__(centres=centres, split=split, alpha=alpha, rounds=rounds,
                         local_epochs=local_epochs, batch_size=batch_size, lr=lr,
                         momentum=momentum, optimizer=optimizer, mu=mu, noise=noise,
                         epsilon=epsilon, clip=clip, delta=delta, max_epsilon=max_epsilon,
                         width=width, groups=groups)
        from medveil.federated.deal import SPLITS

        if split not in SPLITS:
            raise ConfigError(f"scheme 'federated': split must be one of {', '.join(SPLITS)}, "
                              f"got {split!r}")
        if min(rounds, batch_size, width) < 0:
            raise ConfigError("scheme 'federated': rounds, batch_size and width are 0 (the "
                              "budget's) or more")

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        raise ConfigError("the federated scheme makes no view: each centre keeps its images "
                          "and sends model updates; run it as a bench row "
                          "(--schemes federated)")
