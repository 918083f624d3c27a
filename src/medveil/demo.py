"""The end-to-end demo on the bundled data: what `make demo` runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medveil.atomic import atomic_write_bytes
from medveil.data import load_dataset
from medveil.data.bundled import DEFAULT_CLASSIFICATION, DEFAULT_SEGMENTATION
from medveil.keys import Key
from medveil.pictures import save_dataset_grid
from medveil.protect import protect_dataset
from medveil.store import open_store
from medveil.tasks import SegmenterConfig, evaluate_model, train_model


def run_demo(out: str | os.PathLike[str], *, seed: int = 0, progress: bool = True,
             epochs: int = 8, steps: int = 300) -> dict[str, Any]:
    """Owner and processor, end to end, on the bundled sets.

    The owner makes a key and protects the bundled chest X-rays (``plain``
    and the keyed ``intensity_lut`` reference scheme); the processor trains the
    standard classifier on each store's views and evaluates it; the bundled
    CHASE_DB1 images train the U-Net. Everything lands in ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key_path = out / "owner.key"
    key = Key.load(key_path) if key_path.exists() else Key.generate()
    if not key_path.exists():
        key.save(key_path)
    results: dict[str, Any] = {"key_fingerprint": key.fingerprint, "classification": {}}
    cxr = load_dataset(DEFAULT_CLASSIFICATION, seed=seed)
    save_dataset_grid(out / "cxr-demo.png", cxr, seed=seed)
    for scheme in ("plain", "intensity_lut"):
        store_path = out / f"store-{scheme}"
        protect_dataset(cxr, scheme=scheme, key=key, out=store_path, seed=seed, force=True)
        views = open_store(store_path, key=key).as_imageset()
        save_dataset_grid(out / f"views-{scheme}.png", views, seed=seed)
        model = train_model(views, seed=seed, epochs=epochs, progress=progress)
        model.save(out / f"classifier-{scheme}.pt")
        results["classification"][scheme] = {**evaluate_model(model, views),
                                             "train_s": model.train_s}
    chase = load_dataset(DEFAULT_SEGMENTATION, seed=seed)
    save_dataset_grid(out / "chase-demo.png", chase, per_row=4, seed=seed)
    seg = train_model(chase, seed=seed, segmenter=SegmenterConfig(steps=steps, eval_every=100),
                      progress=progress)
    seg.save(out / "unet-plain.pt")
    results["segmentation"] = {"plain": {**evaluate_model(seg, chase), "train_s": seg.train_s}}
    atomic_write_bytes(out / "demo.json", (json.dumps(results, indent=2) + "\n").encode())
    return results
