"""Multi-centre data: one data set dealt to N centres (``medveil multicentre``).

N centres each hold their own images and masks and their own key; none sees
another's data. Every centre fits its own client networks on its own training
images, encodes its training pairs under its own keyed transform and sends only
the encodings. The server fits **one** mapping network on all centres' encodings
(a per-centre adapter in front and behind, a shared trunk) and, for comparison,
one mapping per centre on that centre's encodings alone. Each centre then decodes
the server's predictions for its own test images; Dice and IoU are reported per
centre for both. The centres are a split of one data set by image (a named
number of centres), seeded.
"""

from __future__ import annotations

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError
from medveil.seeds import derive_seed


def split_into_centres(data: ImageSet, centres: int, *, seed: int) -> list[ImageSet]:
    """Each split's images dealt to ``centres`` centres in a seeded random order."""
    owner = deal_rows(data, centres, seed=seed)
    return [data.subset(np.nonzero(owner == c)[0]) for c in range(centres)]


def deal_rows(data: ImageSet, centres: int, *, seed: int) -> np.ndarray:
    """The centre of each row of ``data``: every split in a seeded random order, dealt
    round-robin (each centre gets an equal share of every split, to one image)."""
    if centres < 1:
        raise ConfigError(f"centres must be at least 1, got {centres}")
    rng = np.random.default_rng(derive_seed(seed, "multicentre/deal"))
    owner = np.empty(len(data), dtype=np.int64)
    for split in data.split_names:
        rows = rng.permutation(np.nonzero(data.splits == split)[0])
        if split in ("train", "test") and len(rows) < centres:
            raise ConfigError(f"{data.name} has {len(rows)} {split} images, fewer than "
                              f"{centres} centres; use fewer --centres")
        owner[rows] = np.arange(len(rows)) % centres
    return owner
