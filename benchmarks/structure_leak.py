"""The visual attack alone on one scheme's views: raw, contrast-invariant and
annotated-structure figures against the attacker's floor, as the bench computes them.

The full bench's privacy_sf row on CHASE_DB1 takes hours (the victim's client fit,
then the shadow-key attacker's own, then the inverters); the visual attack needs only
the victim's fit and the test views. This script runs exactly those two steps with
the bench's budget, key, seed and data handling, then ``medveil.attacks.suite.visual``
(the bench's function), and writes the figures as JSON and the bench's grid picture::

    nice python benchmarks/structure_leak.py --data ../shared/data/segmentation/chase_db1 \\
        --size 256 --scheme privacy_sf --out runs/structure-chase-psf
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medveil.attacks.pipeline import GRID_IMAGES, public_images
from medveil.attacks.suite import seeded_key, visual
from medveil.bench import parse_schemes, subsample_for_budget
from medveil.budgets import get_budget
from medveil.data import load_dataset
from medveil.pictures import save_image_grid
from medveil.protocols.base import protect_batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--scheme", required=True, help="one scheme, as for medveil bench")
    parser.add_argument("--budget", default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    budget = get_budget(args.budget)
    size = (args.size, args.size) if args.size else None
    data = subsample_for_budget(load_dataset(args.data, size=size, seed=args.seed), budget,
                                args.seed)
    train, test = data.split("train"), data.split("test")
    spec = parse_schemes(args.scheme)[-1]  # the list opens with the plain baseline
    scheme = spec.create(budget=budget)
    key = seeded_key("victim", args.seed)  # the bench's victim key
    started = time.perf_counter()
    scheme.fit(train, key=key, seed=args.seed, public=public_images(data))
    fit_s = time.perf_counter() - started
    views = protect_batched(scheme, test.images, key)
    result = visual(scheme.view_as_image(views), test.images, public=train.images,
                    masks=test.masks)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"data": data.name, "scheme": spec.label, "budget": budget.mode,
              "seed": args.seed, "victims": len(test), "fit_s": fit_s,
              "visual": {k: v for k, v in (result.figures or {}).items()}}
    (args.out / "visual.json").write_text(json.dumps(record, indent=1, default=float) + "\n")
    if result.reconstructions is not None:
        rows = [[test.images[i], test.masks[i].astype("float32"), result.reconstructions[i]]
                for i in range(min(GRID_IMAGES, len(test)))]
        save_image_grid(args.out / "grid.png", rows, col_titles=["original", "mask", "view"])
    print(json.dumps(record, indent=1, default=float))


if __name__ == "__main__":
    main()
