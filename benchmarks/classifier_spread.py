"""The standard classifier's test AUC across training seeds and torch thread counts.

What "seed noise" means for the bench's utility figures: the bench's split (data
seed 0), the full budget's classifier, plaintext images; only the training seed and
the number of torch threads (which changes the order floats are summed in) vary.
One JSON line per run on stdout. Example::

    python benchmarks/classifier_spread.py --data ../shared/data/cxr_pneumonia_64.npz \
        --threads 1 --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", default="full")
    args = parser.parse_args()

    import torch

    from medveil.bench import subsample_for_budget
    from medveil.budgets import get_budget
    from medveil.data import load_dataset
    from medveil.tasks import evaluate_model, train_model

    torch.set_num_threads(args.threads)
    budget = get_budget(args.budget)
    data = subsample_for_budget(load_dataset(args.data, seed=0), budget, 0)
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        model = train_model(data, seed=seed, classifier=budget.fresh_classifier())
        figures = evaluate_model(model, data)
        print(json.dumps({"threads": args.threads, "seed": seed, "auc": figures["auc"],
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
