"""Before / after, row by row: two scorecards of the same bench (same data, budget and
schemes) side by side, for a change that moves figures (e.g. seeds derived by purpose).

For every scheme: the headline utility, the strongest attack's SSIM, the known-plaintext
SSIM at the largest leak, re-identification top-1 at the largest leak, and the verdict
level per threat actor. Example::

    python benchmarks/compare_scorecards.py runs/before-quick/scorecard.json \\
        runs/after-quick/scorecard.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    attacks = row.get("attacks") or {}
    utility = row.get("utility") or {}
    metric = "auc" if "auc" in utility else "dice"
    ssims = [(attacks.get(name) or {}).get("ssim") for name in
             ("visual", "known_plaintext", "shadow_key")]
    ssims = [s for s in ssims if s is not None]
    verdicts = row.get("verdicts") or {}
    return {"utility": (metric, utility.get(metric)),
            "strongest": max(ssims) if ssims else None,
            "kp": (attacks.get("known_plaintext") or {}).get("ssim"),
            "reid": (attacks.get("reidentify") or {}).get("top1"),
            "levels": " / ".join(str((verdicts.get(actor) or {}).get("level", "-"))
                                 for actor in ("views_only", "shadow_key", "leaked_pairs"))}


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    rows_after = {r["scheme"]: r for r in after["results"]}
    lines = ["| scheme | utility before | after | strongest SSIM before | after | "
             "known-plaintext SSIM before | after | re-id top-1 before | after | "
             "verdicts (actor 1 / 2 / 3) before | after |", "|" + "---|" * 11]
    for row in before["results"]:
        other = rows_after.get(row["scheme"])
        if other is None or row["status"] != "ok" or other["status"] != "ok":
            lines.append(f"| {row['scheme']} | not in both runs |" + " |" * 10)
            continue
        b, a = _figures(row), _figures(other)
        lines.append(
            f"| {row['scheme']} | {b['utility'][0]} {_fmt(b['utility'][1])} | "
            f"{_fmt(a['utility'][1])} | {_fmt(b['strongest'])} | {_fmt(a['strongest'])} | "
            f"{_fmt(b['kp'])} | {_fmt(a['kp'])} | {_fmt(b['reid'], 2)} | {_fmt(a['reid'], 2)} "
            f"| {b['levels']} | {a['levels']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    print("\n".join(table(before, after)))


if __name__ == "__main__":
    main()
