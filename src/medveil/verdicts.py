"""A plain verdict per threat actor, from a row's attack figures.

The thresholds are the yardstick's, written out in docs/threat-model.md. The
actors are cumulative: each knows what the one before knows, so its verdict
rests on the strongest attack open to it or to any weaker actor.

1. ``views_only``: sees the views (and may hold a gallery of candidate
   plaintexts to match them against): ``visual`` (its annotated-structure figure
   too), its re-identification, ``third_parties``.
2. ``shadow_key``: also knows the algorithm and holds public images of the same
   modality: ``shadow_key`` and its re-identification, attacks that use public
   images as a prior.
3. ``leaked_pairs``: also holds K leaked (view, plaintext) pairs:
   ``known_plaintext`` at the largest K and its re-identification, the scheme's
   own attacks.
"""

from __future__ import annotations

from typing import Any

#: advantage over the floor at or above which the images count as recovered
IMAGES_RECOVERED = 0.8
#: advantage at or above which a reconstruction shows blurred anatomy
ANATOMY_BLURRED = 0.2
#: advantage of the annotated-structure figure (``visual.structure``: vessels a
#: ridge detector finds in the view) at or above which the view counts as showing it
STRUCTURE_SHOWN = 0.2
#: re-identification top-1 at or above which (and significantly over chance)
#: identities count as recovered; significant but lower: some identities
IDENTITIES_RECOVERED = 0.5
#: third-party disclosure rate at or above which other patients count as disclosed
THIRD_PARTIES_DISCLOSED = 0.5

ACTORS: tuple[tuple[str, int, str], ...] = (
    ("views_only", 1, "sees only the views"),
    ("shadow_key", 2, "knows the algorithm and holds public images"),
    ("leaked_pairs", 3, "holds K leaked (view, plaintext) pairs"),
)

#: which attack figures belong to which actor (the scheme's own attacks name theirs
#: with an ``actor`` field; unnamed ones are counted for actor 3)
_IMAGE_ATTACKS = {"visual": 1, "shadow_key": 2, "known_plaintext": 3}
_REID = {("visual", "reidentify"): 1, ("shadow_key", "reidentify"): 2, ("reidentify",): 3}


def actor_verdicts(attacks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{actor: {actor, who, advantage, image_attack, reid_top1, reid_over_chance,
    reid_ci95, reid_attack, third_party_rate, level, verdict}}`` for the three actors."""
    if attacks.get("not_applicable"):
        return {name: {"actor": number, "who": who, "level": "not applicable",
                       "verdict": f"not applicable: {attacks['not_applicable']}"}
                for name, number, who in ACTORS}
    images = _image_figures(attacks)
    reids = _reid_figures(attacks)
    third = attacks.get("third_parties") if isinstance(attacks.get("third_parties"),
                                                       dict) else None
    structure = _structure_advantage(attacks)
    out = {}
    for name, number, who in ACTORS:
        open_images = [(adv, attack) for actor, adv, attack in images if actor <= number]
        open_reids = [(fig, attack) for actor, fig, attack in reids if actor <= number]
        best_image = max(open_images, default=(None, None))
        best_reid = max(open_reids, default=(None, None),
                        key=lambda item: -1.0 if item[0] is None else item[0]["top1_ci95"][0]
                        - item[0]["chance"])
        entry: dict[str, Any] = {"actor": number, "who": who,
                                 "advantage": best_image[0], "image_attack": best_image[1]}
        reid = best_reid[0]
        if reid is not None:
            entry.update(reid_top1=reid["top1"], reid_chance=reid["chance"],
                         reid_over_chance=reid["top1_over_chance"], reid_ci95=reid["top1_ci95"],
                         reid_attack=best_reid[1])
        if third is not None:
            entry["third_party_rate"] = third["disclosure_rate"]
        if structure is not None:
            entry["structure_advantage"] = structure
        entry["level"], entry["verdict"] = judge(best_image[0], reid, third,
                                                 structure=structure)
        out[name] = entry
    return out


def judge(advantage: float | None, reid: dict[str, Any] | None,
          third: dict[str, Any] | None, *, structure: float | None = None
          ) -> tuple[str, str]:
    """(level, sentence): ``broken``, ``partial`` or ``no measurable leak``."""
    broken, partial = [], []
    if advantage is not None:
        if advantage >= IMAGES_RECOVERED:
            broken.append("images recovered")
        elif advantage >= ANATOMY_BLURRED:
            partial.append("blurred anatomy")
    if structure is not None and structure >= STRUCTURE_SHOWN and not broken:
        partial.append("annotated structure shown")
    if reid is not None and reid["top1_ci95"][0] > reid["chance"]:
        (broken if reid["top1"] >= IDENTITIES_RECOVERED else partial).append(
            "identities recovered" if reid["top1"] >= IDENTITIES_RECOVERED
            else "some identities")
    if third is not None and third["disclosure_ci95"][0] > third["chance"]:
        (broken if third["disclosure_rate"] >= THIRD_PARTIES_DISCLOSED else partial).append(
            "other patients disclosed")
    if broken:
        return "broken", "broken: " + _join(broken + partial)
    if partial:
        return "partial", "partial: " + _join(partial)
    if advantage is None and reid is None:
        return "not measured", "not measured: the view is no picture and no attack of " \
            "this actor applies"
    return "no measurable leak", "no measurable leak"


def _join(parts: list[str]) -> str:
    if "images recovered" in parts and "identities recovered" in parts:
        parts = ["images and identities recovered",
                 *[p for p in parts if p not in ("images recovered", "identities recovered")]]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _image_figures(attacks: dict[str, Any]) -> list[tuple[int, float, str]]:
    found = []
    for name, figures in attacks.items():
        if not isinstance(figures, dict) or "advantage" not in figures:
            continue
        actor = _IMAGE_ATTACKS.get(name, int(figures.get("actor", 3)))
        found.append((actor, float(figures["advantage"]), name))
    return found


def _structure_advantage(attacks: dict[str, Any]) -> float | None:
    """The view's annotated-structure advantage (actor 1's, so every actor's)."""
    visual = attacks.get("visual")
    structure = visual.get("structure") if isinstance(visual, dict) else None
    return float(structure["advantage"]) if isinstance(structure, dict) else None


def _reid_figures(attacks: dict[str, Any]) -> list[tuple[int, dict[str, Any], str]]:
    found = []
    for path, actor in _REID.items():
        figures: Any = attacks
        for part in path:
            figures = figures.get(part) if isinstance(figures, dict) else None
        if isinstance(figures, dict) and "top1_ci95" in figures:
            found.append((actor, figures, "/".join(path)))
    return found


#: The model's own actor: whoever can query the row's task model in its input domain
#: (medveil.attacks.membership says who that is per protocol).
MEMBERSHIP_WHO = "queries the trained model about candidate images"


def membership_verdict(figures: dict[str, Any] | None) -> dict[str, Any]:
    """``{who, level, verdict, tpr_at_1pct_fpr_low}``: the model leaks membership when the
    lower end of the stronger attack's interval of TPR at 1 % FPR is above 1 %
    (``medveil.attacks.membership.LEAK_FPR``; docs/threat-model.md)."""
    from medveil.attacks.membership import LEAK_FPR

    if not figures or figures.get("not_measured"):
        reason = (figures or {}).get("not_measured", "no membership figures")
        return {"who": MEMBERSHIP_WHO, "level": "not measured",
                "verdict": f"not measured: {reason}"}
    name = f"tpr_at_{LEAK_FPR * 100:g}pct_fpr"
    measured = [(figures[a][f"{name}_ci95"][0], a, figures[a]) for a in ("loss", "rmia")
                if isinstance(figures.get(a), dict) and figures[a].get(name) is not None]
    if not measured:
        note = next((figures[a].get(f"{name}_note") for a in ("loss", "rmia")
                     if isinstance(figures.get(a), dict)), "no rate measured")
        return {"who": MEMBERSHIP_WHO, "level": "not measured",
                "verdict": f"not measured: {note}"}
    low, attack, best = max(measured, key=lambda item: item[0])
    ci = best[f"{name}_ci95"]
    said = (f"{attack}: TPR at {LEAK_FPR:.0%} FPR {best[name]:.1%} [{ci[0]:.1%}, {ci[1]:.1%}], "
            f"AUC {best['auc']:.3f}")
    if low > LEAK_FPR:
        return {"who": MEMBERSHIP_WHO, "level": "leaks membership",
                "verdict": f"the model leaks membership ({said})",
                "tpr_at_1pct_fpr_low": float(low)}
    return {"who": MEMBERSHIP_WHO, "level": "no measurable leak",
            "verdict": f"no measurable membership leak ({said})",
            "tpr_at_1pct_fpr_low": float(low)}
