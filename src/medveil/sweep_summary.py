"""One summary of a sweep over seeds: every row's figures as mean and spread over the
seeds, with the per-seed values kept beside them.

A training seed moves a classifier's AUC by several hundredths (docs/benchmarks.md),
as much as the differences between schemes; a single-seed scorecard cannot say which
differences are the schemes'. ``medveil bench --seeds 0,1,2`` runs each seed into its
own folder (its scorecard and report); this module writes ``summary.json`` and
``summary.md`` beside them: per data set and row, every numeric figure of
``utility``, ``vs_plain``, ``attacks`` and ``membership`` as mean, standard deviation,
minimum and maximum over the seeds, and for each row the statement of whether its
utility cost against plain is measurable (in how many seeds the paired interval lies
below zero).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_write_bytes

SUMMARY_SCHEMA = "medveil.sweep-summary/1"
#: the sections of a row whose numeric figures are summarised
SECTIONS = ("utility", "vs_plain", "attacks", "membership")
HEADLINE = {"classification": "auc", "segmentation": "dice"}


def numeric_leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number under ``value`` by its dotted path (lists and strings skipped; a
    bool is not a number here)."""
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, child in value.items():
            found.update(numeric_leaves(child, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
            np.isfinite(value):
        found[prefix] = float(value)
    return found


def _spread(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()),
            "sd": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max()), "n": len(array),
            "per_seed": [float(v) for v in values]}


def cost_statement(differences: list[dict[str, Any] | None], *, metric: str) -> dict[str, Any]:
    """Whether a row's utility cost against plain is measurable over the seeds: the
    paired interval lies below zero in every seed (measurable), in none (not
    measurable), or in some (mixed; the seeds disagree)."""
    measured = [d for d in differences if d]
    below = sum(1 for d in measured if d["high"] < 0)
    above = sum(1 for d in measured if d["low"] > 0)
    if not measured:
        verdict = "not compared"
    elif below == len(measured):
        verdict = "measurable cost"
    elif below == 0 and above == len(measured):
        verdict = "measurably better"
    elif below == 0:
        verdict = "no measurable cost"
    else:
        verdict = "mixed"
    return {"metric": metric, "verdict": verdict, "seeds": len(measured),
            "seeds_cost": below, "seeds_better": above}


def summarise(scorecards: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of scorecards of one sweep (any data sets; grouped by data set)."""
    by_data: dict[str, list[dict[str, Any]]] = {}
    for card in scorecards:
        by_data.setdefault(card["dataset"]["name"], []).append(card)
    datasets = []
    for name, cards in by_data.items():
        task = cards[0]["dataset"]["task"]
        metric = HEADLINE[task]
        labels: list[str] = []
        for card in cards:
            labels += [r["scheme"] for r in card["results"] if r["scheme"] not in labels]
        rows = []
        for label in labels:
            found = [(card["seed"], next((r for r in card["results"]
                                          if r["scheme"] == label and r["status"] == "ok"),
                                         None)) for card in cards]
            ok = [(seed, row) for seed, row in found if row is not None]
            figures: dict[str, list[float]] = {}
            for _, row in ok:
                for section in SECTIONS:
                    for path, value in numeric_leaves(row.get(section) or {}, section).items():
                        figures.setdefault(path, []).append(value)
            complete = {path: _spread(values) for path, values in sorted(figures.items())
                        if len(values) == len(ok)}
            rows.append({"scheme": label, "seeds": [seed for seed, _ in ok],
                         "failed_seeds": [seed for seed, row in found if row is None],
                         "figures": complete,
                         "utility_cost": cost_statement(
                             [(row.get("vs_plain") or {}).get(metric) for _, row in ok],
                             metric=metric) if label != "plain" else None,
                         "membership_leaks": [(row.get("membership") or {}).get("leaks")
                                              for _, row in ok]})
        datasets.append({"dataset": name, "task": task, "mode": cards[0]["mode"],
                         "seeds": [card["seed"] for card in cards], "rows": rows})
    return {"schema": SUMMARY_SCHEMA, "datasets": datasets}


def _cell(figures: dict[str, Any], path: str, digits: int = 3) -> str:
    spread = figures.get(path)
    if not spread:
        return "-"
    return f"{spread['mean']:.{digits}f} ± {spread['sd']:.{digits}f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary's headline tables: utility and its difference to plain, membership."""
    md = ["# medveil sweep over seeds", "",
          "Mean ± standard deviation over the seeds (each seed's scorecard and report are in "
          "its folder; `summary.json` has every figure with its per-seed values). A utility "
          "cost is *measurable* when the paired 95 % interval against plain (same seed, same "
          "test images) lies below zero in every seed.", ""]
    for block in summary["datasets"]:
        metric = HEADLINE[block["task"]]
        md += [f"## {block['dataset']} ({block['mode']}, seeds "
               f"{', '.join(map(str, block['seeds']))})", "",
               f"| scheme | {metric.upper()} | {metric.upper()} − plain | utility cost | "
               "membership AUC (loss) | membership AUC (RMIA) | TPR at 1 % FPR (RMIA) |",
               "|---|---|---|---|---|---|---|"]
        for row in block["rows"]:
            f = row["figures"]
            cost = row["utility_cost"]
            cost_text = "reference" if cost is None else \
                f"{cost['verdict']} ({cost['seeds_cost']} of {cost['seeds']} seeds below 0)"
            md.append(f"| {row['scheme']} | {_cell(f, f'utility.{metric}')} | "
                      f"{_cell(f, f'vs_plain.{metric}.estimate')} | {cost_text} | "
                      f"{_cell(f, 'membership.loss.auc')} | {_cell(f, 'membership.rmia.auc')} | "
                      f"{_cell(f, 'membership.rmia.tpr_at_1pct_fpr')} |")
        md.append("")
    return "\n".join(md) + "\n"


def write_summary(out: Path, scorecards: list[dict[str, Any]]) -> dict[str, Any]:
    """``summary.json`` and ``summary.md`` of a sweep into ``out``."""
    summary = summarise(scorecards)
    atomic_write_bytes(Path(out) / "summary.json",
                       (json.dumps(summary, indent=2) + "\n").encode(), check=False)
    atomic_write_bytes(Path(out) / "summary.md", summary_markdown(summary).encode(),
                       check=False)
    return summary
