"""Utility-only sweep: fit a scheme variant, train the standard classifier on its views.

Used to choose defaults before spending a full bench (attacks included) on them.
One JSON line per variant on stdout. Example::

    python benchmarks/utility_sweep.py --data ../shared/data/cxr_pneumonia_64.npz \
        obfuscation:levels=32 obfuscation:levels=16
"""

from __future__ import annotations

import argparse
import json
import time

from medveil.attacks.suite import seeded_key
from medveil.bench import parse_schemes
from medveil.budgets import BenchBudget
from medveil.data.readers import load_dataset
from medveil.protocols import get_protocol, run_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("schemes", nargs="+")
    args = parser.parse_args()
    data = load_dataset(args.data, seed=args.seed)
    budget = BenchBudget.for_mode(args.quick)
    key = seeded_key("victim", args.seed)
    for spec in parse_schemes(",".join(args.schemes)):
        started = time.perf_counter()
        scheme = spec.create()
        scheme.fit(data.split("train"), key=key, seed=args.seed)
        outcome = run_task(get_protocol(scheme.protocol), scheme, data, key=key, budget=budget,
                           seed=args.seed)
        metrics = outcome.decoded.metrics(data.split("test"))
        print(json.dumps({"scheme": spec.label, **metrics,
                          "wall_s": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
