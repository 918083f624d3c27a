"""Start a bench folder from finished rows of an earlier run, for `medveil bench --resume`.

A full row can take an hour on two cores; when an earlier scorecard already has
the row (same data, seed and budget, same code for that scheme), this writes it
into ``OUT/scorecard.partial.json`` with the header `--resume` checks, so the
next `medveil bench --resume --out OUT` keeps it and runs only the rest.
Example (docs/benchmarks.md)::

    python benchmarks/reuse_rows.py --data ../shared/data/cxr_pneumonia_64.npz \
        --rows runs/bench-cxr64-primis/scorecard.json --schemes plain --out runs/bench-cxr64-fesf
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medveil.atomic import atomic_write_bytes
from medveil.bench import run_header, subsample_for_budget
from medveil.budgets import BenchBudget
from medveil.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", required=True, type=Path,
                        help="an earlier scorecard.json, or a JSON list of rows")
    parser.add_argument("--schemes", default="plain", help="comma list of row labels to keep")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    budget = BenchBudget.for_mode(args.quick)
    data = subsample_for_budget(load_dataset(args.data, seed=args.seed, size=args.size), budget,
                      args.seed)
    source = json.loads(args.rows.read_text())
    rows = source["results"] if isinstance(source, dict) else source
    wanted = {s.strip() for s in args.schemes.split(",")}
    kept = [r for r in rows if r["scheme"] in wanted and r.get("status") == "ok"]
    args.out.mkdir(parents=True, exist_ok=True)
    partial = {**run_header(data, budget, args.seed), "results": kept}
    atomic_write_bytes(args.out / "scorecard.partial.json",
                       (json.dumps(partial, indent=2) + "\n").encode())
    print(f"kept {[r['scheme'] for r in kept]} -> {args.out / 'scorecard.partial.json'}")


if __name__ == "__main__":
    main()
