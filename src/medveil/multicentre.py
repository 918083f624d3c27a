"""Multi-centre collaboration for encoded segmentation (privacy_sf's protocol).

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

from typing import Any

import numpy as np

from medveil.attacks.suite import seeded_key
from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError
from medveil.metrics import segmentation_metrics
from medveil.schemes import create


def split_into_centres(data: ImageSet, centres: int, *, seed: int) -> list[ImageSet]:
    """Each split's images dealt to ``centres`` centres in a seeded random order."""
    if centres < 1:
        raise ConfigError(f"centres must be at least 1, got {centres}")
    rng = np.random.default_rng(seed + 101)
    owner = np.empty(len(data), dtype=np.int64)
    for split in data.split_names:
        rows = rng.permutation(np.nonzero(data.splits == split)[0])
        if split in ("train", "test") and len(rows) < centres:
            raise ConfigError(f"{data.name} has {len(rows)} {split} images, fewer than "
                              f"{centres} centres; use fewer --centres")
        owner[rows] = np.arange(len(rows)) % centres
    return [data.subset(np.nonzero(owner == c)[0]) for c in range(centres)]


def run_multicentre(data: ImageSet, *, centres: int = 3, seed: int = 0,
                    scheme: str = "privacy_sf", **params: Any) -> dict[str, Any]:
    """Dice per centre: one pooled server mapping against each centre alone."""
    if data.task != "segmentation":
        raise ConfigError(f"{data.name} is not a segmentation set; multi-centre needs masks")
    parts = split_into_centres(data, centres, seed=seed)
    clients, pairs, tests = [], [], []
    for index, part in enumerate(parts):
        key = seeded_key(f"centre-{index}", seed)
        client = create(scheme, **params).fit(part.split("train"), key=key, seed=seed + index)
        train, test = part.split("train"), part.split("test")
        pairs.append(client.training_pairs(train.images, train.masks, key=key))
        tests.append((test, key))
        clients.append(client)
    server = clients[0]  # the server code is the scheme's; it holds no key
    pooled = server.train_mapping(pairs, seed=seed)
    rows = []
    for index, (client, (test, key)) in enumerate(zip(clients, tests, strict=True)):
        alone = server.train_mapping([pairs[index]], seed=seed)
        together = client.segment(
            test.images, lambda tokens, i=index: server.map_tokens(pooled, tokens, centre=i),
            key=key)
        by_itself = client.segment(test.images,
                                   lambda tokens, net=alone: server.map_tokens(net, tokens),
                                   key=key)
        rows.append({"centre": index, "n_train": len(parts[index].split("train")),
                     "n_pairs": len(pairs[index].images),
                     "n_test": len(test), "pooled": segmentation_metrics(together, test.masks),
                     "alone": segmentation_metrics(by_itself, test.masks)})
    mean = {mode: {metric: float(np.mean([r[mode][metric] for r in rows]))
                   for metric in ("dice", "iou")} for mode in ("pooled", "alone")}
    return {"scheme": scheme, "params": dict(clients[0].params), "centres": centres,
            "seed": seed, "dataset": data.name, "rows": rows, "mean": mean}
