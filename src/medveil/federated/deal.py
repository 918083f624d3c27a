"""One data set dealt to N centres by image: each centre holds its own images.

``iid``: every split's images in a seeded random order, dealt round-robin (what
``medveil multicentre`` does). ``dirichlet``: label skew, the usual non-IID benchmark
(Hsu et al. 2019): for each split and class, the class's images are divided among the
centres in proportions drawn from Dirichlet(``alpha``) (small alpha: each centre sees
mostly one class; large alpha: close to iid). Every centre keeps at least one training
image of the split sizes allow.
"""

from __future__ import annotations

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError
from medveil.multicentre import deal_rows
from medveil.seeds import numpy_rng

SPLITS = ("iid", "dirichlet")


def deal_to_centres(data: ImageSet, centres: int, *, split: str = "iid", alpha: float = 0.5,
                    seed: int) -> list[np.ndarray]:
    """The row indices of ``data`` each centre holds (sorted), by the ``split`` rule."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if centres < 1:
        raise ConfigError(f"centres must be at least 1, got {centres}")
    if split == "iid":
        owner = deal_rows(data, centres, seed=seed)
        return [np.nonzero(owner == c)[0] for c in range(centres)]
    if not alpha > 0:
        raise ConfigError(f"alpha must be above 0 for a Dirichlet split, got {alpha}")
    if data.labels is None:
        raise ConfigError("a Dirichlet (label-skewed) split needs labels; use split=iid")
    rng = numpy_rng(seed, "federated/deal/dirichlet")
    owner = np.empty(len(data), dtype=np.int64)
    for name in data.split_names:
        rows = np.nonzero(data.splits == name)[0]
        if len(rows) < centres and name in ("train", "test"):
            raise ConfigError(f"{data.name} has {len(rows)} {name} images, fewer than "
                              f"{centres} centres; use fewer centres")
        for label in np.unique(data.labels[rows]):
            members = rng.permutation(rows[data.labels[rows] == label])
            shares = rng.dirichlet(np.full(centres, float(alpha)))
            cuts = np.floor(np.cumsum(shares)[:-1] * len(members)).astype(int)
            for centre, part in enumerate(np.split(members, cuts)):
                owner[part] = centre
        if name == "train":
            _no_empty_centre(owner, rows, centres, rng)
    return [np.nonzero(owner == c)[0] for c in range(centres)]


def _no_empty_centre(owner: np.ndarray, rows: np.ndarray, centres: int, rng) -> None:
    """Give a centre that drew no training image one from the largest centre."""
    for centre in range(centres):
        counts = np.bincount(owner[rows], minlength=centres)
        if counts[centre] == 0:
            largest = int(np.argmax(counts))
            owner[rng.choice(rows[owner[rows] == largest])] = centre
