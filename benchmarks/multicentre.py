"""Several centres, one processor: the pooled model against each centre alone.

A thin wrapper of `medveil multicentre` (the same library call, the workflow of
the command line in memory), kept for the commands recorded in
docs/benchmarks.md. Example::

    python benchmarks/multicentre.py --data ../shared/data/segmentation/chase_db1 \
        --size 256 --centres 3 --budget full --out runs/multicentre-chase
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medveil.bench import parse_value
from medveil.data import load_dataset
from medveil.workflow import multicentre_table, run_multicentre, write_multicentre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="chase-demo")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--centres", type=int, default=3)
    parser.add_argument("--scheme", default="privacy_sf")
    parser.add_argument("--budget", default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("multicentre"))
    parser.add_argument("params", nargs="*", help="scheme parameters as NAME=VALUE")
    args = parser.parse_args()
    params = {k: parse_value(v) for k, v in (p.split("=", 1) for p in args.params)}
    data = load_dataset(args.data, seed=args.seed, size=args.size)
    started = time.perf_counter()
    record = run_multicentre(data, centres=args.centres, scheme=args.scheme, budget=args.budget,
                             seed=args.seed, params=params)
    record["wall_s"] = time.perf_counter() - started
    write_multicentre(record, args.out, force=True)
    print(multicentre_table(record))
    print(f"wall {record['wall_s']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
