"""Seeds derived by purpose, as keys are: ``derive_seed(seed, "attacks/leak-order")``.

A run has one seed (``--seed``); every random choice in it (a network's
initialisation, the batches it sees, which training images leak, which test images
are queried) gets its own seed, derived from the run's seed and a name that says what
it is for. Two purposes never share a stream by accident (``seed + 1`` for one loop
was ``seed`` for the next run's), and a new purpose changes no other figure.

Seeds are for reproducibility only; secrets come from :mod:`medveil.keys`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_DOMAIN = b"medveil/seed/v1"


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` under the run's ``seed`` (SHA-256 of both)."""
    if not purpose:
        raise ValueError("derive_seed needs a purpose")
    digest = hashlib.sha256(_DOMAIN + b"\0" + str(int(seed)).encode() + b"\0"
                            + purpose.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def numpy_rng(seed: int, purpose: str):
    """A numpy Generator for ``purpose`` under ``seed``."""
    import numpy as np

    return np.random.default_rng(derive_seed(seed, purpose))


def torch_generator(seed: int, purpose: str) -> Any:
    """A torch Generator for ``purpose`` under ``seed`` (batches, augmentation)."""
    import torch

    return torch.Generator().manual_seed(derive_seed(seed, purpose))


@contextmanager
def seeded(seed: int, purpose: str) -> Iterator[Any]:
    """Run a training loop reproducibly without touching the caller's torch state.

    Inside, torch's global generator is seeded for ``purpose + "/init"`` (weight
    initialisation, dropout); the generator yielded is for ``purpose + "/batches"``
    (shuffling, sampling, augmentation). On exit the caller's RNG state is restored.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, f"{purpose}/init"))
        yield torch_generator(seed, f"{purpose}/batches")
