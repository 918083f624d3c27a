"""Markdown tables for docs/benchmarks.md from a (partial) scorecard: the verdict per
threat actor, the leak curve, the figures behind them, and where each row's time
went (scorecard /6 ``timing``).

Reads ``scorecard.json`` or ``scorecard.partial.json`` (rows as they finish), so the
tables can be written while a long bench is still running. Example::

    python benchmarks/scorecard_tables.py runs/bench-cxr64-v4/scorecard.partial.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from medveil.report import verdict_table as report_verdict_table


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %" if value < 0.1 else f"{100 * value:.0f} %"


def _reid(reid: dict[str, Any] | None) -> str:
    if not reid:
        return "-"
    low, high = reid["top1_ci95"]
    return (f"{reid['top1']:.2f} [{low:.2f}, {high:.2f}] ({reid.get('method', '-')}; "
            f"chance {_pct(reid['chance'])})")


def verdict_table(rows: list[dict[str, Any]]) -> list[str]:
    """The report's verdict table (medveil.report.verdict_table), as Markdown lines."""
    header, body = report_verdict_table({"results": rows})
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cells) + " |" for cells in body]]


def curve_table(rows: list[dict[str, Any]]) -> list[str]:
    sizes = sorted({p["pairs"] for row in rows for p in (row["attacks"].get("leak_curve") or [])})
    lines = ["| row | " + " | ".join(f"K = {k}: SSIM / advantage (method); re-id top-1"
                                     for k in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for row in rows:
        points = {p["pairs"]: p for p in row["attacks"].get("leak_curve") or []}
        cells = [f"{points[k]['ssim']:.3f} / {points[k].get('advantage', float('nan')):.2f} "
                 f"({points[k]['method']}); {points[k]['reidentify']['top1']:.2f}"
                 if k in points else "-" for k in sizes]
        lines.append(f"| `{row['scheme']}` | " + " | ".join(cells) + " |")
    return lines


def figures_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| row | utility | visual SSIM / invariant / advantage (floor) | shadow key SSIM / "
             "advantage; re-id | re-id at the largest K [95 % CI] | third parties: rate "
             "[95 % CI], patients | row wall s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        attacks, utility = row["attacks"], row.get("utility") or {}
        util = ", ".join(f"{k} {v:.3f}" for k, v in utility.items() if k in ("auc", "dice"))
        vis = attacks.get("visual")
        vis_cell = (f"{vis['ssim']:.3f} / {vis['invariant']['ssim']:.3f} / "
                    f"{vis['advantage']:.2f} ({vis['floor_ssim']:.3f}); "
                    f"re-id {_reid(vis.get('reidentify'))}") if vis else "-"
        structure = (vis or {}).get("structure")
        if structure:  # segmentation: the annotated structure a ridge detector finds
            vis_cell += (f"; structure AUC {structure['auc']:.3f} (floor "
                         f"{structure['floor_auc']:.3f}, plaintext "
                         f"{structure['plaintext_auc']:.3f}), advantage "
                         f"{structure['advantage']:.2f}")
        shadow = attacks.get("shadow_key")
        shadow_cell = (f"{shadow['ssim']:.3f} / {shadow.get('advantage', float('nan')):.2f}; "
                       f"{_reid(shadow.get('reidentify'))}") if shadow else "-"
        third = attacks.get("third_parties")
        third_cell = (f"{_pct(third['disclosure_rate'])} [{_pct(third['disclosure_ci95'][0])}, "
                      f"{_pct(third['disclosure_ci95'][1])}], "
                      f"{third['third_parties_disclosed']}") if third else "-"
        lines.append(f"| `{row['scheme']}` | {util or '-'} | {vis_cell} | {shadow_cell} | "
                     f"{_reid(attacks.get('reidentify'))} | {third_cell} | "
                     f"{row.get('wall_s', 0):.0f} |")
    return lines


def _stage_group(stage: str) -> str:
    """Leak sizes folded together: the table's columns are the kinds of stage."""
    for prefix in ("known_plaintext_k", "reidentify_k"):
        if stage.startswith(prefix):
            return prefix[:-2]
    return stage


def timing_table(rows: list[dict[str, Any]]) -> list[str]:
    """Seconds per stage and row (known-plaintext and re-identification summed over the
    leak sizes), the row's wall time and what no stage covers."""
    timed = [r for r in rows if r.get("timing")]
    stages: list[str] = []
    for row in timed:
        for stage in map(_stage_group, row["timing"]):
            if stage not in stages:
                stages.append(stage)
    lines = ["| scheme | " + " | ".join(stages) + " | other | wall |",
             "|" + "---|" * (len(stages) + 3)]
    for row in timed:
        grouped: dict[str, float] = {}
        for stage, seconds in row["timing"].items():
            group = _stage_group(stage)
            grouped[group] = grouped.get(group, 0.0) + seconds
        other = row["wall_s"] - sum(grouped.values())
        cells = [f"{grouped[s]:.0f}" if s in grouped else "-" for s in stages]
        lines.append(f"| {row['scheme']} | " + " | ".join(cells) +
                     f" | {other:.0f} | {row['wall_s']:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scorecard", type=Path)
    args = parser.parse_args()
    card = json.loads(args.scorecard.read_text())
    ok = [r for r in card["results"] if r.get("status") == "ok"]
    rows = [r for r in ok if r.get("attacks")]
    print("\n".join(["### Verdicts", "", *verdict_table(rows), "", "### Leak curve", "",
                     *curve_table([r for r in rows if r["attacks"].get("leak_curve")]), "",
                     "### Figures", "", *figures_table(rows), "",
                     "### Seconds per stage", "", *timing_table(ok)]))


if __name__ == "__main__":
    main()
