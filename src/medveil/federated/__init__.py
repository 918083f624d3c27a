"""Federated training with differential privacy: the images stay in each centre.

N centres train one classifier together with FedAvg (FedProx as a parameter) over
Flower's record types and strategies, each centre with Opacus DP-SGD where the run asks
for it. What leaves a centre is a model update; the aggregator (the processor) sees
the updates and is attacked like every other processor
(:mod:`medveil.attacks.update_inversion`).

- :mod:`.deal`: the data dealt to centres (``iid`` or label-skewed, Dirichlet ``alpha``)
- :mod:`.ledger`: a centre's privacy ledger (the accountant's history, persisted)
- :mod:`.centre`: one centre's local training (plain or DP-SGD) on its own images
- :mod:`.aggregator`: the server's rounds: configure, check, aggregate (Flower's FedAvg)
- ``medveil.protocols.federated``: the two halves on the protocol shape

Flower and Opacus are imported lazily (:func:`require`) with an install hint.
"""

from __future__ import annotations

import os
from typing import Any

from medveil.errors import MissingDependencyError

#: Flower's telemetry and update check stay off unless the user turns them on.
FLOWER_ENVIRONMENT = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def require(module: str) -> Any:
    """Import ``flwr`` or ``opacus`` (telemetry off first), or say how to install them."""
    import importlib

    for name, value in FLOWER_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"federated training needs {module.split('.')[0]}: "
                                     "install it with pip install 'medveil[federated]'"
                                     ) from None
