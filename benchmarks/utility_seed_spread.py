"""A bench row's utility alone over seeds: how much a change of seed moves it.

For each seed, as ``medveil bench --seed S`` draws it (the key, the split carve, the
budget's subsample, the fit and training seeds), every scheme is fitted and the task
runs through its protocol (``run_task``); ckks is scored by its HE network in
plaintext (its decrypted predictions match it). One JSON line per (seed, scheme).
Example (docs/benchmarks.md, "One shape for every protocol")::

    python benchmarks/utility_seed_spread.py --seeds 0,1,2,3 \\
        --schemes plain,block_scramble,intensity_lut,ckks
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cxr-demo")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--schemes", default="plain")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from medveil.attacks.pipeline import public_images
    from medveil.attacks.suite import seeded_key
    from medveil.bench import parse_schemes, subsample_for_budget
    from medveil.budgets import get_budget
    from medveil.data import load_dataset
    from medveil.metrics import classification_metrics, probabilities_from_logits
    from medveil.protocols import get_protocol, run_task

    budget = get_budget(args.budget)
    for seed in (int(s) for s in args.seeds.split(",")):
        data = subsample_for_budget(load_dataset(args.data, seed=seed), budget, seed)
        key = seeded_key("victim", seed)
        test = data.split("test")
        for spec in parse_schemes(args.schemes):
            started = time.perf_counter()
            scheme = spec.create(budget=budget)
            scheme.fit(scheme.fit_data(data), key=key, seed=seed, public=public_images(data))
            if scheme.protocol == "encrypted_inference":  # its HE network, in plaintext
                logits = scheme.model.net.forward(scheme.model.check_images(test.images))
                metrics = classification_metrics(probabilities_from_logits(logits),
                                                 test.labels)
            else:
                metrics = run_task(get_protocol(scheme.protocol), scheme, data, key=key,
                                   budget=budget, seed=seed).decoded.metrics(test)
            print(json.dumps({"seed": seed, "scheme": spec.label, **metrics,
                              "wall_s": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
