"""Are the attackers trained to convergence? Known-plaintext and re-identification at the
budget's steps and at a multiple of them, per scheme, on the same views and leak.

An attack cut short makes a scheme look safer than it is. For each scheme: fit it with
the bench's victim key, protect train and test, then run the bench's known-plaintext
inverter (every candidate, the scheme's own included) at the largest leak size and
its re-identification (gallery with distractors), once at the budget's inversion and
Siamese steps and once at ``--factor`` times them. One JSON line per (scheme, factor),
appended to ``--out``; ``--resume`` skips lines already there. Example::

    nice python benchmarks/attack_convergence.py --data ../shared/data/cxr_pneumonia_64.npz \\
        --schemes plain,block_scramble,intensity_lut,obfuscation,fesf,primis \\
        --out runs/convergence-cxr64.jsonl --resume

The issue's rule: where the multiple gains more than 0.02 SSIM or 0.05 top-1, the
default budget is too small.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from medveil.attacks.pipeline import gallery_distractors, public_images
from medveil.attacks.suite import known_plaintext, leak_sizes, reidentification, seeded_key
from medveil.bench import parse_schemes, subsample_for_budget
from medveil.budgets import get_budget
from medveil.data import load_dataset
from medveil.protocols.base import protect_batched
from medveil.seeds import numpy_rng


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--schemes", required=True, help="comma list, as for medveil bench")
    parser.add_argument("--budget", default="full")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    budget = get_budget(args.budget)
    data = subsample_for_budget(load_dataset(args.data, seed=args.seed), budget, args.seed)
    done = set()
    if args.resume and args.out.exists():
        done = {(row["scheme"], row["factor"]) for row in map(json.loads,
                                                              args.out.read_text().splitlines())}
    train, test = data.split("train"), data.split("test")
    key = seeded_key("victim", args.seed)
    for spec in parse_schemes(args.schemes):
        if all((spec.label, f) in done for f in (1, args.factor)):
            continue
        scheme = spec.create(budget=budget).fit(train, key=key, seed=args.seed,
                                                public=public_images(data))
        views = {s: protect_batched(scheme, data.split(s).images, key)
                 for s in data.split_names}
        # the bench's leak, queries and distractors (attacks.pipeline.image_attacks)
        order = numpy_rng(args.seed, "attacks/leak-order").permutation(len(train))
        leak = np.sort(order[:leak_sizes(len(train), budget.attacks)[-1]])
        queries = np.sort(numpy_rng(args.seed, "attacks/queries").choice(
            len(test), min(budget.attacks.gallery, len(test)), replace=False))
        distractors = gallery_distractors(train, test, leak, queries, budget.attacks.distractors,
                                          args.seed, extra=public_images(data))
        for factor in (1, args.factor):
            if (spec.label, factor) in done:
                continue
            attacks = replace(
                budget.attacks,
                inversion=replace(budget.attacks.inversion,
                                  steps=budget.attacks.inversion.steps * factor),
                reid=replace(budget.attacks.reid, steps=budget.attacks.reid.steps * factor))
            started = time.perf_counter()
            kp, inverter = known_plaintext(views["train"][leak], train.images[leak],
                                           views["test"], test.images, budget=attacks,
                                           seed=args.seed, extra=scheme.attack_inverters())
            reid = reidentification(inverter, views["train"][leak], train.images[leak],
                                    views["test"][queries], test.images[queries], distractors,
                                    budget=attacks, seed=args.seed).figures
            row = {"scheme": spec.label, "factor": factor, "data": data.name,
                   "inversion_steps": attacks.inversion.steps, "reid_steps": attacks.reid.steps,
                   "pairs": int(len(leak)), "known_plaintext": kp.figures, "reidentify": reid,
                   "wall_s": time.perf_counter() - started}
            with args.out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, default=float) + "\n")
            print(f"{spec.label} x{factor}: SSIM {kp.figures['ssim']:.3f} "
                  f"({kp.figures['method']}), top-1 {reid['top1']:.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
