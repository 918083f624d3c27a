"""privacy_sf across N centres: one pooled server mapping against each centre alone.

Writes one JSON record and prints a Markdown table. Example (docs/benchmarks.md)::

    python benchmarks/multicentre.py --data ../shared/data/segmentation/chase_db1 \
        --size 256 --centres 3 --out runs/multicentre-chase.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medveil.atomic import atomic_write_bytes
from medveil.bench import parse_value
from medveil.data import load_dataset
from medveil.multicentre import run_multicentre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="chase-demo")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--centres", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("multicentre.json"))
    parser.add_argument("params", nargs="*", help="scheme parameters as NAME=VALUE")
    args = parser.parse_args()
    params = dict(p.split("=", 1) for p in args.params)
    data = load_dataset(args.data, seed=args.seed, size=args.size)
    started = time.perf_counter()
    record = run_multicentre(data, centres=args.centres, seed=args.seed,
                             **{k: parse_value(v) for k, v in params.items()})
    record["wall_s"] = time.perf_counter() - started
    atomic_write_bytes(args.out, (json.dumps(record, indent=2) + "\n").encode())
    print("| centre | train / test images | encoded training pairs | Dice pooled | Dice alone "
          "| IoU pooled | IoU alone |")
    print("|---|---|---|---|---|---|---|")
    for row in record["rows"]:
        print(f"| {row['centre']} | {row['n_train']} / {row['n_test']} | {row['n_pairs']} | "
              f"{row['pooled']['dice']:.3f} | {row['alone']['dice']:.3f} | "
              f"{row['pooled']['iou']:.3f} | {row['alone']['iou']:.3f} |")
    mean = record["mean"]
    print(f"| mean | | | {mean['pooled']['dice']:.3f} | {mean['alone']['dice']:.3f} | "
          f"{mean['pooled']['iou']:.3f} | {mean['alone']['iou']:.3f} |")
    print(f"wall {record['wall_s']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
