"""Owner side: fit a scheme and write a protected store of a data set's views."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.keys import Key
from medveil.schemes import create
from medveil.store import write_store


def protect_dataset(imageset: ImageSet, *, scheme: str, key: Key, out: str | os.PathLike[str],
                    seed: int = 0, params: dict[str, Any] | None = None, force: bool = False,
                    batch_size: int = 256) -> dict[str, Any]:
    """Fit ``scheme`` on the train split, protect every split, write the store.

    Labels and masks travel beside each split's view; image ids do not (file
    names can identify patients). Schemes that encode masks too (privacy_sf) send
    the training and validation masks' encodings instead, and no test masks.

    Returns:
        A summary: the store path, counts per split, timings.
    """
    instance = create(scheme, **(params or {}))
    started = time.perf_counter()
    instance.fit(imageset.split("train"), key=key, seed=seed)
    fit_s = time.perf_counter() - started
    arrays: dict[str, dict[str, np.ndarray]] = {}
    started = time.perf_counter()
    for split in imageset.split_names:
        part = imageset.split(split)
        views = [instance.protect(part.images[i:i + batch_size], key=key)
                 for i in range(0, len(part), batch_size)]
        arrays[split] = {"view": np.concatenate(views)}
        if part.labels is not None:
            arrays[split]["labels"] = part.labels
        if part.masks is not None and instance.utility_path == "encoded_segmentation":
            # the masks are private too: only their encodings leave, and only for the
            # splits the server trains and validates on
            if split != "test":
                arrays[split]["encoded_masks"] = instance.protect_masks(part.masks, key=key)
        elif part.masks is not None:
            arrays[split]["masks"] = part.masks
    protect_s = time.perf_counter() - started
    dataset = {"name": imageset.name, "task": imageset.task,
               "image_shape": list(imageset.image_shape), "class_names": imageset.class_names}
    scheme_record = {"name": instance.name, "version": instance.version,
                     "params": instance.params, "utility_path": instance.utility_path}
    path = write_store(out, arrays=arrays, scheme=scheme_record, dataset=dataset,
                       key=key, force=force)
    return {"store": str(Path(path)), "scheme": instance.name,
            "splits": {s: len(a["view"]) for s, a in arrays.items()},
            "fit_s": fit_s, "protect_s": protect_s, "key_fingerprint": key.fingerprint}
