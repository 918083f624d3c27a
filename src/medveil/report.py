"""The benchmark's report: Markdown and a self-contained HTML page, with pictures.

A reader should be able to pick a scheme from the report alone: the table puts
utility, the strongest attack and cost side by side, the plot shows the
privacy-utility trade-off, and the grids show what each attack actually sees.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from medveil.atomic import atomic_write_bytes
from medveil.comparison import utility_statement
from medveil.pictures import save_image_grid
from medveil.verdicts import ANATOMY_BLURRED, MEMBERSHIP_WHO, STRUCTURE_SHOWN

HEADLINE = {"classification": "auc", "segmentation": "dice"}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def strongest_attack(row: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The reconstruction attack with the highest SSIM (the privacy figure to read).

    Every attack in the row that reports an SSIM counts: the shared suite's and a
    scheme's own extra attacks (primis's magnitude and per-tile attackers).
    """
    best_name, best = None, None
    for name, figures in (row.get("attacks") or {}).items():
        if not isinstance(figures, dict) or "ssim" not in figures:
            continue
        candidates = [(name, figures)]
        if isinstance(figures.get("invariant"), dict):  # the contrast-invariant reading
            candidates.append((f"{name}, contrast-invariant", figures["invariant"]))
        for label, candidate in candidates:
            if best is None or candidate["ssim"] > best["ssim"]:
                best_name, best = label, candidate
    return best_name, best


def _table_rows(scorecard: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    task = scorecard["dataset"]["task"]
    utility_keys = ["auc", "accuracy", "f1", "mcc"] if task == "classification" else \
        ["dice", "iou"]
    header = ["scheme", "status", *utility_keys, f"{utility_keys[0]} vs plain (paired, 95 %)",
              "membership AUC / TPR at 1 % FPR (stronger attack)",
              "strongest attack (SSIM / PSNR, advantage)",
              "known-plaintext SSIM", "shadow-key SSIM", "re-id top-1 (chance)",
              "recovery SSIM", "wrong-key SSIM", "protect ms/img", "view bytes/img"]
    body = []
    for row in scorecard["results"]:
        utility = row.get("utility") or {}
        attacks = row.get("attacks") or {}
        name, best = strongest_attack(row)
        reid = attacks.get("reidentify")
        body.append([
            row["scheme"], row["status"] if row["status"] == "ok" else f"error: {row['error']}",
            *[_with_interval(utility.get(k), (row.get("utility_intervals") or {}).get(k))
              for k in utility_keys],
            _difference_cell((row.get("vs_plain") or {}).get(utility_keys[0])),
            _membership_cell(row.get("membership")),
            (f"{name}: {best['ssim']:.3f} / {best['psnr']:.1f} dB"
             + (f", {best['advantage']:.2f}" if "advantage" in best else "")) if best else "-",
            _fmt((attacks.get("known_plaintext") or {}).get("ssim")),
            _fmt((attacks.get("shadow_key") or {}).get("ssim")),
            f"{reid['top1']:.3f} ({reid['chance']:.3f})" if reid else "-",
            _fmt((row.get("recovery") or {}).get("ssim")),
            _fmt((row.get("wrong_key") or {}).get("ssim")),
            _fmt((row.get("cost") or {}).get("protect_ms_per_image"), 2),
            _fmt((row.get("cost") or {}).get("view_bytes_per_image"), 0),
        ])
    return header, body


def _with_interval(value: Any, interval: dict[str, Any] | None) -> str:
    if interval is None or value is None:
        return _fmt(value)
    return f"{value:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def _difference_cell(difference: dict[str, Any] | None) -> str:
    if not difference:
        return "-"
    return (f"{difference['estimate']:+.3f} [{difference['low']:+.3f}, "
            f"{difference['high']:+.3f}], p {difference['p_value']:.2g}")


def strongest_membership(figures: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The membership attack with the higher AUC, or None where none was measured."""
    attacks = [(name, figures[name]) for name in ("loss", "rmia")
               if figures and isinstance(figures.get(name), dict)]
    return max(attacks, key=lambda item: item[1]["auc"]) if attacks else None


def _membership_cell(figures: dict[str, Any] | None) -> str:
    best = strongest_membership(figures)
    if best is None:
        return "not measured" if figures else "-"
    name, attack = best
    rate = attack.get("tpr_at_1pct_fpr")
    rate_text = "too few non-members" if rate is None else (
        f"{rate:.1%} [{attack['tpr_at_1pct_fpr_ci95'][0]:.1%}, "
        f"{attack['tpr_at_1pct_fpr_ci95'][1]:.1%}]")
    return (f"{name}: {attack['auc']:.3f} [{attack['auc_ci95'][0]:.3f}, "
            f"{attack['auc_ci95'][1]:.3f}] / {rate_text}")


def _verdict_cell(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return "-"
    parts = []
    if verdict.get("advantage") is not None:
        parts.append(f"advantage {verdict['advantage']:.2f} ({verdict['image_attack']})")
    if "reid_top1" in verdict:
        parts.append(f"re-id {verdict['reid_top1']:.0%} vs {verdict['reid_chance']:.1%}")
    if "third_party_rate" in verdict:
        parts.append(f"others {verdict['third_party_rate']:.0%}")
    if "structure_advantage" in verdict:
        parts.append(f"structure {verdict['structure_advantage']:.2f}")
    return verdict["verdict"] + (f" ({', '.join(parts)})" if parts else "")


def verdict_table(scorecard: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One line per row, one column per threat actor (medveil.verdicts); the
    aggregator's column where a row has one (federated training)."""
    from medveil.attacks.aggregator import AGGREGATOR_WHO
    from medveil.verdicts import ACTORS

    rows = [row for row in scorecard["results"] if row["status"] == "ok"]
    aggregated = any("aggregator" in (row.get("verdicts") or {}) for row in rows)
    header = ["scheme", *[f"{number}: {who}" for _, number, who in ACTORS],
              *([AGGREGATOR_WHO] if aggregated else []), f"the model: {MEMBERSHIP_WHO}"]
    body = [[row["scheme"], *[_verdict_cell((row.get("verdicts") or {}).get(name))
                              for name, _, _ in ACTORS],
             *([_aggregator_cell(row)] if aggregated else []),
             _verdict_cell((row.get("verdicts") or {}).get("membership"))]
            for row in rows]
    return header, body


def _aggregator_cell(row: dict[str, Any]) -> str:
    """The aggregator's verdict with its figures; "not applicable" for a row whose
    processor sees no update (every view scheme)."""
    verdict = (row.get("verdicts") or {}).get("aggregator")
    if verdict is None:
        return "not applicable (no model update reaches the processor)"
    figures = (row.get("attacks") or {}).get("update_inversion") or {}
    probe = figures.get("probe", {})
    return (f"{verdict['verdict']} (advantage {verdict['advantage']:.2f} on a real round's "
            f"update; {probe.get('advantage', float('nan')):.2f} on one image, one step)")


def _leak_plot(path: Path, scorecard: dict[str, Any]) -> Path | None:
    """How many leaked pairs break each scheme: advantage and re-identification over
    chance against K, one line per scheme."""
    curves = {row["scheme"]: row["attacks"]["leak_curve"] for row in scorecard["results"]
              if row["status"] == "ok" and (row.get("attacks") or {}).get("leak_curve")}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for index, (scheme, curve) in enumerate(curves.items()):
        pairs = [point["pairs"] for point in curve]
        style = {"color": f"C{index % 10}", "marker": "o", "label": scheme}
        left.plot(pairs, [point.get("advantage", point["ssim"]) for point in curve], **style)
        right.plot(pairs, [point["reidentify"]["top1"] for point in curve], **style)
    ticks = sorted({point["pairs"] for curve in curves.values() for point in curve})
    for axis in (left, right):
        axis.set_xscale("log")
        axis.minorticks_off()
        axis.set_xticks(ticks, [str(k) for k in ticks])
        axis.set_xlabel("leaked (view, plaintext) pairs K")
        axis.grid(alpha=0.3)
    left.set_ylabel("known-plaintext advantage over the floor")
    left.axhline(0, color="k", linewidth=0.5)
    right.set_ylabel("re-identification top-1")
    chance = next(iter(curves.values()))[-1]["reidentify"]["chance"]
    right.axhline(chance, color="k", linewidth=0.5, linestyle="--")
    right.annotate("chance", (0.02, chance), xycoords=("axes fraction", "data"), fontsize=7)
    left.legend(fontsize=7)
    fig.suptitle(f"how many leaked pairs break it: {scorecard['dataset']['name']}",
                 fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue(), check=False)


def privacy_figure(row: dict[str, Any]) -> tuple[float, str] | None:
    """The headline privacy figure of a row: the strongest attack's advantage over the
    floor for an attacker with leaked pairs (scorecard /4), else its raw SSIM."""
    verdict = (row.get("verdicts") or {}).get("leaked_pairs") or {}
    if verdict.get("advantage") is not None:
        return verdict["advantage"], "advantage"
    _, best = strongest_attack(row)
    return (best["ssim"], "SSIM") if best else None


def _plot(path: Path, scorecard: dict[str, Any]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = HEADLINE[scorecard["dataset"]["task"]]
    points, kinds = [], set()
    for row in scorecard["results"]:
        figure = privacy_figure(row)
        if row["status"] == "ok" and row.get("utility") and figure:
            points.append((row["scheme"], row["utility"][metric], figure[0]))
            kinds.add(figure[1])
    if not points:
        return None
    kind = "advantage over the floor" if kinds == {"advantage"} else "SSIM"
    fig, ax = plt.subplots(figsize=(5.5, 4))
    families: dict[str, list[tuple[str, float, float]]] = {}
    for point in points:  # variants of one scheme (a sweep, an ablation) share a colour
        families.setdefault(point[0].split(":")[0], []).append(point)
    for index, (family, members) in enumerate(families.items()):
        colour = f"C{index % 10}"
        members.sort(key=lambda point: point[2])
        if len(members) > 1:  # the trade-off curve of a sweep, in order of attack SSIM
            ax.plot([m[2] for m in members], [m[1] for m in members], color=colour,
                    alpha=0.35, linewidth=1)
        for name, utility, ssim in members:
            ax.scatter(ssim, utility, s=40, color=colour)
            label = name if name == family else name[len(family) + 1:]
            ax.annotate(label, (ssim, utility), textcoords="offset points", xytext=(5, 4),
                        fontsize=7)
    if any(len(m) > 1 for m in families.values()):
        ax.legend(handles=[plt.Line2D([], [], marker="o", linestyle="", color=f"C{i % 10}",
                                      label=f) for i, f in enumerate(families)],
                  fontsize=7, loc="lower left")
    ax.set_xlabel(f"strongest reconstruction attack: {kind} (lower = more private)")
    ax.set_ylabel(f"utility: test {metric.upper()} (higher = more useful)")
    ax.set_xlim(min(-0.05, min(point[2] for point in points) - 0.05), 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(f"privacy vs utility on {scorecard['dataset']['name']}", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue(), check=False)


def _grid(path: Path, pictures: dict[str, np.ndarray]) -> Path:
    titles = list(pictures)
    n = len(next(iter(pictures.values())))
    rows = [[pictures[t][i] for t in titles] for i in range(n)]
    return save_image_grid(path, rows, col_titles=titles)


def _verdict(row: dict[str, Any], plain: dict[str, Any] | None, metric: str) -> str:
    if row["status"] != "ok":
        return "failed in this run; see the error."
    _, best = strongest_attack(row)
    parts = [f"the task ran under the `{row['protocol']}` protocol"
             + (f" ({row['rounds']} rounds)" if (row.get("rounds") or 1) > 1 else "")]
    if row.get("utility"):
        interval = (row.get("utility_intervals") or {}).get(metric)
        parts.append(f"{metric.upper()} {_with_interval(row['utility'][metric], interval)}"
                     + (f" ({interval['method']} 95 % interval)" if interval else ""))
    difference = (row.get("vs_plain") or {}).get(metric)
    if difference:
        parts.append(utility_statement(difference, metric=metric.upper())
                     + " (paired on the same test images against plain)")
    aggregator = (row.get("verdicts") or {}).get("aggregator")
    if aggregator:
        parts.append(f"the aggregator's update inversion: {_aggregator_cell(row)}")
    membership = (row.get("verdicts") or {}).get("membership")
    if membership:
        domain = (row.get("membership") or {}).get("domain")
        parts.append("membership inference on the task model"
                     + (f" (in its domain: {domain})" if domain else "")
                     + f": {membership['verdict']}")
    if best:
        level = "images are largely recovered" if best["ssim"] >= 0.8 else \
            "much of the structure is recovered" if best["ssim"] >= 0.5 else \
            "reconstructions are poor"
        floor = (f" (advantage {best['advantage']:.2f} over the {best.get('floor_ssim', 0):.3f} "
                 "floor of a guess without the view)" if "advantage" in best else "")
        parts.append(f"strongest attack SSIM {best['ssim']:.3f}{floor}: {level}")
    visual = (row.get("attacks") or {}).get("visual") or {}
    invariant = visual.get("invariant") or {}
    if "advantage" in invariant and invariant["advantage"] >= ANATOMY_BLURRED:
        parts.append(f"a reader sees the patient's anatomy in the view once its contrast "
                     f"is inverted or rescaled (SSIM {invariant['ssim']:.3f} after the best "
                     f"intensity map, raw {visual['ssim']:.3f}; advantage "
                     f"{invariant['advantage']:.2f})")
    structure = visual.get("structure") or {}
    if structure and structure["advantage"] >= STRUCTURE_SHOWN:
        parts.append(f"the view shows the patient's annotated structure (the vessels on a "
                     f"fundus): an untrained ridge detector finds it in the view with AUC "
                     f"{structure['auc']:.3f}, against {structure['floor_auc']:.3f} in the "
                     f"attacker's guess without the view and {structure['plaintext_auc']:.3f} "
                     f"in the plaintext (advantage {structure['advantage']:.2f})")
    seen = visual.get("reidentify") or {}
    if seen and seen["top1_ci95"][0] > seen["chance"]:
        parts.append(f"matching the views themselves against a gallery of {seen['gallery']} "
                     f"images, with no training, finds the patient for {seen['top1']:.0%} of "
                     f"them (chance {seen['chance']:.1%}, by {seen['method'].replace('_', ' ')}"
                     "): the view identifies its patient"
                     + (" by its fine structure (vessels, edges), which the view shows"
                        if seen["method"] == "fine_structure" else ""))
    third = (row.get("attacks") or {}).get("third_parties")
    if third:
        parts.append(f"views matched against all {third['owner_images']} owner images: "
                     f"{third['disclosure_rate']:.0%} of {third['victims']} views show "
                     f"another patient beyond look-alikes (chance {third['chance']:.0%}; "
                     f"{third['third_parties_disclosed']} distinct patients)")
    not_applicable = (row.get("attacks") or {}).get("not_applicable")
    if not_applicable:
        parts.append(f"image attacks not applicable ({not_applicable})")
    reid = (row.get("attacks") or {}).get("reidentify")
    if reid:
        interval = (f", 95 % interval {reid['top1_ci95'][0]:.0%} to {reid['top1_ci95'][1]:.0%}"
                    if "top1_ci95" in reid else "")
        parts.append(f"re-identified {reid['top1']:.0%} of held-out images at top-1 "
                     f"(chance {reid['chance']:.0%}{interval})")
    section = row.get("protocol_section")
    if section:  # the protocol describes its own figures
        from medveil.protocols import get_protocol

        parts += get_protocol(row["protocol"]).describe(section, row)
    return "; ".join(parts) + "."


def _summary(scorecard: dict[str, Any], metric: str) -> str:
    """Plain words: which rows keep utility, which resist the attacks, which are broken."""
    plain = next((r for r in scorecard["results"] if r["scheme"] == "plain"), None)
    ok = [r for r in scorecard["results"]
          if r["status"] == "ok" and r["scheme"] != "plain" and r.get("utility")]
    if not ok or not plain or not plain.get("utility"):
        return "Only the baseline ran; there is nothing to choose between."
    base = plain["utility"][metric]

    def ssim(row: dict[str, Any]) -> float:
        figure = privacy_figure(row)
        return figure[0] if figure else 0.0

    def measurable_cost(row: dict[str, Any]) -> bool:
        difference = (row.get("vs_plain") or {}).get(metric)
        return bool(difference) and difference["high"] < 0

    useful = [r for r in ok if (r.get("vs_plain") or {}).get(metric) and not measurable_cost(r)]
    costly = [r for r in ok if measurable_cost(r)]
    broken = [r["scheme"] for r in ok
              if ((r.get("verdicts") or {}).get("leaked_pairs") or {}).get("level") == "broken"]
    lines = []
    if useful:
        pick = min(useful, key=ssim)
        figure = privacy_figure(pick)
        lines.append(f"With no measurable {metric.upper()} cost against plain ({base:.3f}; "
                     "the paired 95 % interval of the difference holds zero or lies above "
                     "it): " + ", ".join(f"'{r['scheme']}' "
                                         f"({_difference_cell(r['vs_plain'][metric])})"
                                         for r in useful)
                     + f". Of these, '{pick['scheme']}' resists reconstruction best "
                     f"(strongest attack {figure[1] if figure else 'SSIM'} {ssim(pick):.3f}).")
    else:
        lines.append(f"Every scheme measurably costs {metric.upper()} against plain "
                     f"({base:.3f}), or was not compared.")
    if costly:
        lines.append(f"A measurable {metric.upper()} cost: " + ", ".join(
            f"'{r['scheme']}' ({_difference_cell(r['vs_plain'][metric])})" for r in costly)
            + ".")
    leaking = [r["scheme"] for r in [plain, *ok]
               if ((r.get("verdicts") or {}).get("membership") or {}).get("level")
               == "leaks membership"]
    if leaking:
        lines.append("The trained model leaks membership (the interval of TPR at 1 % FPR "
                     "lies above 1 %): " + ", ".join(leaking) + ".")
    if broken:
        lines.append("Broken in this run for an attacker with leaked pairs (images, "
                     "identities or other patients recovered; docs/threat-model.md has the "
                     "thresholds): " + ", ".join(broken) + ".")
    return " ".join(lines)


VERDICT_NOTE = (
    "Each attacker knows what the one before knows. 'advantage' is how far the strongest "
    "reconstruction gets above the attacker's best guess without the view (0: nothing; "
    "1: a perfect copy); 're-id' is the top-1 rate of matching a view to its patient in a "
    "gallery with distractors, against chance; 'others' is the share of views that show "
    "another of the owner's patients. Thresholds: docs/threat-model.md.")


PATIENT_NOTICE = (
    "This report holds patient images: test images of the data set it ran on, their "
    "views and key holders' recoveries. Keep it where those images may be kept; do not "
    "mail it around. `medveil bench --no-pictures` writes a report without them.")
NO_PATIENT_NOTICE = ("This report holds no patient image (written with --no-pictures, or "
                     "no row had pictures); only figures.")


def _executor_words(executor: dict[str, Any] | None) -> str:
    if not executor or executor["name"] == "inprocess":
        return ""
    return (f" (rows on {executor['name']}: {executor['workers']} workers, "
            f"{executor['threads_per_worker']} thread(s) each)")


def budget_note(mode: str) -> str:
    """What the report must say about a budget's figures (the demo's are not to quote)."""
    from medveil.budgets import BUDGETS

    return BUDGETS[mode]().note if mode in BUDGETS else ""


def write_report(out: Path, scorecard: dict[str, Any],
                 pictures: dict[str, dict[str, np.ndarray] | None]) -> dict[str, Path]:
    """Write report.md, report.html and the PNGs they name into ``out``."""
    out = Path(out)
    files: dict[str, Path] = {}
    plot = _plot(out / "privacy_utility.png", scorecard)
    if plot:
        files["plot"] = plot
    leak_plot = _leak_plot(out / "leak_curve.png", scorecard)
    if leak_plot:
        files["leak_curve"] = leak_plot
    verdict_header, verdict_body = verdict_table(scorecard)
    for scheme, pics in pictures.items():
        if pics:
            files[f"grid:{scheme}"] = _grid(out / f"grid_{scheme}.png", pics)
    if not any(key.startswith("grid:") for key in files):
        for stale in out.glob("grid_*.png"):  # a former run's patient pictures
            stale.unlink(missing_ok=True)
    notice = (PATIENT_NOTICE if any(key.startswith("grid:") for key in files)
              else NO_PATIENT_NOTICE)
    header, body = _table_rows(scorecard)
    metric = HEADLINE[scorecard["dataset"]["task"]]
    plain = next((r for r in scorecard["results"] if r["scheme"] == "plain"), None)
    ds, machine = scorecard["dataset"], scorecard["machine"]
    intro = (f"Data: {ds['name']} ({ds['task']}, {'x'.join(map(str, ds['image_size']))}, "
             f"{ds['n_train']} train / {ds['n_test']} test). Mode: {scorecard['mode']}, "
             f"seed {scorecard['seed']}. Machine: {machine['cpu']}, {machine['cores']} cores, "
             f"torch {machine['torch']}. Wall time {scorecard.get('wall_s', 0):.0f} s"
             f"{_executor_words(machine.get('executor'))}.")
    if budget_note(scorecard["mode"]):
        intro += f" Budget `{scorecard['mode']}`: {budget_note(scorecard['mode'])}"
    reused = [f"{r['scheme']} ({', '.join(r['cached'])})" for r in scorecard["results"]
              if r.get("cached")]
    if reused:
        intro += (f" Reused from the bench cache (`--cache`; the same inputs and code made "
                  f"them): {'; '.join(reused)}.")
    resumed = [r["scheme"] for r in scorecard["results"] if r.get("resumed")]
    if resumed:
        intro += (f" Rows kept from an interrupted run of the same data, seed and budget "
                  f"(`--resume`; no pictures): {', '.join(resumed)}.")
    how_to_read = ("How to read it: utility is the standard model trained and tested on what "
                   "the processor gets (for key-holder schemes, on recovered images). Privacy is "
                   "the strongest reconstruction attack on held-out test images (SSIM 1 = "
                   "perfect copy; a scheme is only as private as its best attack says) and "
                   "re-identification top-1 against chance.")
    md = [f"# medveil benchmark: {ds['name']}", "", f"**{notice}**", "", intro, "",
          "## Verdicts by attacker", "", VERDICT_NOTE, "",
          "| " + " | ".join(verdict_header) + " |", "|" + "---|" * len(verdict_header)]
    md += ["| " + " | ".join(cells) + " |" for cells in verdict_body]
    md += ["", "## Figures", "", how_to_read, "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(cells) + " |" for cells in body]
    summary = _summary(scorecard, metric)
    md += ["", "## Which scheme", "", summary, "",
           "![privacy vs utility](privacy_utility.png)" if plot else "", "",
           "![leak curve](leak_curve.png)" if leak_plot else "", "",
           "## Per scheme", ""]
    for row in scorecard["results"]:
        md += [f"### {row['scheme']}", "", _verdict(row, plain, metric), ""]
        if f"grid:{row['scheme']}" in files:
            md += [f"![{row['scheme']}](grid_{row['scheme']}.png)", ""]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode(), check=False)

    def img(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'

    rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                        for cells in body)
    verdict_heads = "".join(f"<th>{html.escape(h)}</th>" for h in verdict_header)
    verdicts_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                            + "</tr>" for cells in verdict_body)
    sections = "".join(
        f"<h3>{html.escape(r['scheme'])}</h3><p>{html.escape(_verdict(r, plain, metric))}</p>"
        + (img(files[f"grid:{r['scheme']}"]) if f"grid:{r['scheme']}" in files else "")
        for r in scorecard["results"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>medveil benchmark: {html.escape(ds['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 6px}}
th{{background:#f0f0f0}}img{{max-width:100%}}</style></head><body>
<h1>medveil benchmark: {html.escape(ds['name'])}</h1>
<p><strong>{html.escape(notice)}</strong></p>
<p>{html.escape(intro)}</p>
<h2>Verdicts by attacker</h2><p>{html.escape(VERDICT_NOTE)}</p>
<table><tr>{verdict_heads}</tr>{verdicts_html}</table>
<h2>Figures</h2><p>{html.escape(how_to_read)}</p>
<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>{rows_html}</table>
<h2>Which scheme</h2><p>{html.escape(summary)}</p>
{img(plot) if plot else ''}
{img(leak_plot) if leak_plot else ''}
<h2>Per scheme</h2>{sections}
</body></html>
"""
    atomic_write_bytes(out / "report.html", page.encode(), check=False)
    return files
