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

from medveil.attacks.suite import seeded_key
from medveil.bench import parse_schemes, subsample_for_budget
from medveil.budgets import BenchBudget
from medveil.data import load_dataset
from medveil.metrics import image_similarity, texture_agreement
from medveil.protocols import get_protocol, run_task
from medveil.protocols.base import protect_batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--scheme", default="primis",
                        help="a key-holder scheme, optionally with NAME=VALUE overrides "
                             "(primis:min_steps=0)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    budget = BenchBudget.for_mode(False)
    data = subsample_for_budget(load_dataset(args.data, seed=args.seed, size=args.size), budget,
                                args.seed)
    key, wrong = seeded_key("victim", args.seed), seeded_key("wrong", args.seed)
    started = time.perf_counter()
    spec = parse_schemes(args.scheme)[-1]
    scheme = spec.create().fit(data.split("train"), key=key, seed=args.seed)
    fit_s = time.perf_counter() - started
    views = {s: protect_batched(scheme, data.split(s).images, key) for s in data.split_names}
    test = data.split("test")
    recovered = scheme.recover(views["test"], key=key)
    print(json.dumps({
        "scheme": spec.label, "fit_s": fit_s,
        "recovery": image_similarity(test.images, recovered),
        "wrong_key": image_similarity(test.images,
                                      scheme.recover_bypassing_check(views["test"], wrong)),
        "texture": texture_agreement(test.images, recovered),
        "view_bytes": views["test"].nbytes / len(test)}), flush=True)
    started = time.perf_counter()
    outcome = run_task(get_protocol(scheme.protocol), scheme, data, key=key, budget=budget,
                       seed=args.seed)
    metrics = outcome.decoded.metrics(test)
    print(json.dumps({"utility": metrics, "task_s": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    main()
