"""A key-holder scheme's owner-side figures without the attacks (primis).

Fit with the bench's victim key, protect and recover every split, then the
standard task on the recovered images; recovery, wrong-key and texture figures
on the test split. For when the bench's attacks are too slow to wait for (a
primis view of a 256x256 image has 442,400 values). Example::

    python benchmarks/key_holder_utility.py --data ../shared/data/segmentation/chase_db1 \
        --size 256 --scheme primis
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from medveil.attacks.suite import seeded_key
from medveil.bench import BenchBudget, _protect_all, _subsample, _utility, _with_images
from medveil.data import load_dataset
from medveil.metrics import image_similarity, texture_agreement
from medveil.schemes import create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--scheme", default="primis")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    budget = BenchBudget.for_mode(False)
    data = _subsample(load_dataset(args.data, seed=args.seed, size=args.size), budget, args.seed)
    key, wrong = seeded_key("victim", args.seed), seeded_key("wrong", args.seed)
    started = time.perf_counter()
    scheme = create(args.scheme).fit(data.split("train"), key=key, seed=args.seed)
    fit_s = time.perf_counter() - started
    views = {s: _protect_all(scheme, data.split(s).images, key) for s in data.split_names}
    recovered = {s: scheme.recover(views[s], key=key) for s in data.split_names}
    test = data.split("test")
    print(json.dumps({
        "fit_s": fit_s, "recovery": image_similarity(test.images, recovered["test"]),
        "wrong_key": image_similarity(test.images,
                                      scheme.recover_bypassing_check(views["test"], wrong)),
        "texture": texture_agreement(test.images, recovered["test"]),
        "view_bytes": views["test"].nbytes / len(test)}), flush=True)
    order = np.concatenate([np.nonzero(data.splits == s)[0] for s in data.split_names])
    images = np.concatenate([recovered[s] for s in data.split_names])
    metrics, train_s, _ = _utility(_with_images(data.subset(order), images), budget, args.seed)
    print(json.dumps({"utility": metrics, "train_s": train_s}), flush=True)


if __name__ == "__main__":
    main()
