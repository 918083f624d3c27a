"""Membership inference against the task model a row produces: was this image in its
training set?

Every other attack of the suite targets what the processor *sees*; this one targets
the *model* that comes out, the figure differential privacy is designed to bound and
the one on which a view row and a federated row can be compared. It runs in the
model's own input domain (a protocol says which: :class:`MembershipTarget`), with
the owner's truth of each candidate (the attacker is assumed to know the label or
mask of the record it asks about, as in the literature).

Two attacks, both offline (no model is trained on a candidate):

- ``loss``: the loss-threshold attack of Yeom et al. 2018: a candidate whose loss
  under the model is low was more likely trained on. Its score is the model's
  confidence in the truth (``p(y | x)``, or ``exp(-loss)`` per image for masks).
- ``rmia``: RMIA (Zarifzadeh et al. 2024), offline: ``reference`` models trained by
  the same training on data that holds no candidate give ``Pr(x)``, the confidence
  an image gets from a model that did not see it, approximated offline as
  ``((1 + a) * mean_ref p(x) + (1 - a)) / 2`` (the paper's linear approximation of
  the in-model confidence, ``a = OFFLINE_A``); the likelihood ratio
  ``p(x | target) / Pr(x)`` is compared with that of population images ``z``: the
  score is the share of ``z`` it beats by the factor ``GAMMA``.

Candidates: members are a random sample of the training split; non-members the
validation split's images (a random carve of the same source as train, never
trained on). The test split is left out on purpose: an official test split can come
from another time or site (Kermany's chest X-rays do, with another class balance),
and an attack would then measure that shift instead of membership. The reference
models train on the rest of the training split (never a candidate), each on its own
random share (``REFERENCE_SHARE``), choosing their checkpoint on the remainder.

Figures: ROC AUC (DeLong interval) and the TPR at 1 % and 0.1 % FPR, each with a
stratified bootstrap interval; where the non-members are too few for a rate (fewer
than ``1 / fpr`` of them: not one false positive could be allowed) the figure says
so instead of printing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medveil.seeds import derive_seed, numpy_rng

#: RMIA's offline approximation of the in-model confidence (Zarifzadeh et al. 2024,
#: their offline ``a``; they report 0.2 to 0.6 work for image classifiers)
OFFLINE_A = 0.3
#: RMIA's threshold on the ratio of likelihood ratios (the paper's ``gamma``)
GAMMA = 1.0
#: the share of the reference pool each reference model trains on (the rest picks
#: its checkpoint)
REFERENCE_SHARE = 0.8
#: the false-positive rates at which the TPR is reported
FPR_POINTS = (0.01, 0.001)
#: population images ``z`` of RMIA (at most)
POPULATION = 1000
#: bootstrap resamples of the intervals
RESAMPLES = 1000
#: the verdict: the model leaks membership when the lower end of the interval of the
#: stronger attack's TPR at 1 % FPR is above 1 % (above what guessing gives)
LEAK_FPR = 0.01

#: A per-example confidence in the truth, in (0, 1]: ``p(y | x)`` or ``exp(-loss)``.
Scorer = Callable[["Samples"], np.ndarray]


@dataclass
class Samples:
    """Inputs in a model's domain, with the owner's truth of each (labels or masks)."""

    inputs: np.ndarray
    truth: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, index: np.ndarray) -> Samples:
        return Samples(self.inputs[index], self.truth[index])


@dataclass
class MembershipTarget:
    """What a protocol offers the membership attacks of one run.

    ``splits``: every split in the model's input domain with its truth (``train``:
    the model's training data; ``val``: images of the same source it never trained
    on). ``score``: the target model's confidence. ``fit_reference(train, val,
    seed)``: the same training as the target's on other data, returning that
    model's scorer. ``domain`` and ``threat`` are the report's words: what the
    model takes and who could query it.
    """

    domain: str
    threat: str
    splits: dict[str, Samples]
    score: Scorer
    fit_reference: Callable[[Samples, Samples, int], Scorer]


def candidate_splits(data, *, truth: str) -> dict[str, Samples]:
    """The train and val splits of an :class:`~medveil.data.imageset.ImageSet` as
    samples with their ``truth`` (``"labels"`` or ``"masks"``)."""
    return {s: Samples(data.split(s).images, getattr(data.split(s), truth))
            for s in ("train", "val") if s in data.split_names}


def reference_imageset(train: Samples, val: Samples, *, like, truth: str):
    """A reference model's training data as an ImageSet shaped like ``like`` (its class
    names): ``train`` to train on, ``val`` to choose the checkpoint."""
    from medveil.data.imageset import from_splits

    parts = [(split, s.inputs, s.truth if truth == "labels" else None,
              s.truth if truth == "masks" else None)
             for split, s in (("train", train), ("val", val)) if len(s)]
    return from_splits(parts, class_names=like.class_names,
                       meta={"name": f"{like.name}[reference]", "reader": "memory"})


def log_confidence(values: np.ndarray) -> np.ndarray:
    """``log`` of confidences, floored so that a zero is a very low score, not -inf."""
    return np.log(np.clip(np.asarray(values, dtype=np.float64), 1e-30, None))


def rmia_scores(target: np.ndarray, references: np.ndarray, target_z: np.ndarray,
                references_z: np.ndarray, *, a: float = OFFLINE_A,
                gamma: float = GAMMA) -> np.ndarray:
    """RMIA's offline score of each candidate: the share of population images ``z``
    whose likelihood ratio it beats by ``gamma``.

    ``target`` (N,) and ``references`` (R, N): confidences of the candidates under the
    target and the reference models; ``target_z`` (M,), ``references_z`` (R, M): those
    of the population images.
    """
    def ratio(p_target, p_refs):
        offline = 0.5 * ((1 + a) * np.mean(p_refs, axis=0) + (1 - a))
        return np.asarray(p_target, dtype=np.float64) / np.maximum(offline, 1e-30)

    ratio_x, ratio_z = ratio(target, references), np.sort(ratio(target_z, references_z))
    # share of z with ratio_x / ratio_z > gamma, i.e. ratio_z < ratio_x / gamma
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / max(1, len(ratio_z))


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float) -> float:
    """The share of members scored above the threshold that lets at most ``fpr`` of the
    non-members through (ties at the threshold count as negatives: conservative)."""
    allowed = int(np.floor(fpr * len(non_members)))
    ranked = np.sort(non_members)[::-1]
    threshold = ranked[allowed] if allowed < len(ranked) else -np.inf
    return float(np.mean(members > threshold))


def attack_figures(members: np.ndarray, non_members: np.ndarray, *,
                   rng: np.random.Generator, resamples: int = RESAMPLES) -> dict[str, Any]:
    """AUC (DeLong) and TPR at each of ``FPR_POINTS`` (stratified bootstrap) of one
    attack's scores; a rate the non-members are too few for is ``None`` with a note."""
    from medveil.stats import delong_auc

    scores = np.concatenate([members, non_members])
    labels = np.concatenate([np.ones(len(members), int), np.zeros(len(non_members), int)])
    auc = delong_auc(scores, labels)
    out: dict[str, Any] = {"auc": auc.estimate, "auc_ci95": [auc.low, auc.high],
                           "auc_method": auc.method}
    boot_m = rng.integers(0, len(members), (resamples, len(members)))
    boot_n = rng.integers(0, len(non_members), (resamples, len(non_members)))
    for fpr in FPR_POINTS:
        name = f"tpr_at_{fpr * 100:g}pct_fpr"
        if len(non_members) * fpr < 1:
            out[name] = None
            out[f"{name}_note"] = (f"{len(non_members)} non-members allow no false positive "
                                   f"at {fpr:.1%} FPR (a rate needs {int(np.ceil(1 / fpr))})")
            continue
        samples = [tpr_at_fpr(members[m], non_members[n], fpr)
                   for m, n in zip(boot_m, boot_n, strict=True)]
        low, high = np.percentile(samples, [2.5, 97.5])
        out[name] = tpr_at_fpr(members, non_members, fpr)
        out[f"{name}_ci95"] = [float(low), float(high)]
    return out


@dataclass
class Candidates:
    """Which images the attacks ask about and which train the reference models."""

    members: np.ndarray  #: indices into the train split
    non_members: np.ndarray  #: indices into the val split
    pool: np.ndarray  #: train indices that are never candidates: the references' data


def choose_candidates(n_train: int, n_val: int, *, seed: int) -> Candidates:
    """As many members as non-members (at most half the training split, so that the
    reference models keep data to train on)."""
    rng = numpy_rng(seed, "attacks/membership/candidates")
    count = min(n_val, n_train // 2)
    order = rng.permutation(n_train)
    non_members = np.sort(rng.permutation(n_val)[:count])
    return Candidates(members=np.sort(order[:count]), non_members=non_members,
                      pool=np.sort(order[count:]))


def membership_attacks(target: MembershipTarget, *, references: int, seed: int
                       ) -> dict[str, Any]:
    """Both attacks on ``target`` with ``references`` reference models (the row's
    ``attacks.membership``)."""
    train, val = target.splits["train"], target.splits.get("val")
    if val is None or len(val) < 2 or len(train) < 4:
        return {"not_measured": f"{0 if val is None else len(val)} validation images (at "
                                "least 2 needed) to serve as non-members of the training "
                                "source"}
    chosen = choose_candidates(len(train), len(val), seed=seed)
    members, non_members = train.take(chosen.members), val.take(chosen.non_members)
    pool = train.take(chosen.pool)
    rng = numpy_rng(seed, "attacks/membership/population")
    population = pool.take(np.sort(rng.permutation(len(pool))[:POPULATION]))
    candidates = Samples(np.concatenate([members.inputs, non_members.inputs]),
                         np.concatenate([members.truth, non_members.truth]))
    target_c, target_z = target.score(candidates), target.score(population)
    ref_c, ref_z = [], []
    for k in range(references):
        order = numpy_rng(seed, f"attacks/membership/reference-{k}/data").permutation(len(pool))
        cut = max(1, int(round(REFERENCE_SHARE * len(pool))))
        scorer = target.fit_reference(pool.take(np.sort(order[:cut])),
                                      pool.take(np.sort(order[cut:])),
                                      derive_seed(seed, f"attacks/membership/reference-{k}"))
        ref_c.append(scorer(candidates))
        ref_z.append(scorer(population))
    m = len(members)
    scores = {"loss": log_confidence(target_c)}
    if references:
        scores["rmia"] = rmia_scores(target_c, np.stack(ref_c), target_z, np.stack(ref_z))
    out: dict[str, Any] = {"domain": target.domain, "threat": target.threat,
                           "members": m, "non_members": len(non_members),
                           "references": references, "reference_images": int(round(
                               REFERENCE_SHARE * len(pool))),
                           "rmia": {"offline_a": OFFLINE_A, "gamma": GAMMA}}
    for name, values in scores.items():
        figures = attack_figures(values[:m], values[m:],
                                 rng=numpy_rng(seed, f"attacks/membership/{name}/bootstrap"))
        out[name] = {**out.get(name, {}), **figures}
    out["leaks"] = membership_leaks(out)
    return out


def membership_leaks(figures: dict[str, Any]) -> bool | None:
    """Whether the model leaks membership: the lower end of the interval of either
    attack's TPR at ``LEAK_FPR`` is above ``LEAK_FPR``; None where no rate was measured."""
    name = f"tpr_at_{LEAK_FPR * 100:g}pct_fpr"
    lows = [figures[a][f"{name}_ci95"][0] for a in ("loss", "rmia")
            if isinstance(figures.get(a), dict) and figures[a].get(name) is not None]
    if not lows:
        return None
    return bool(max(lows) > LEAK_FPR)


def classification_scorer(predict_proba: Callable[[np.ndarray], np.ndarray]) -> Scorer:
    """A scorer from a function giving (N, K) class probabilities: ``p(y | x)``."""
    def score(samples: Samples) -> np.ndarray:
        probs = np.asarray(predict_proba(samples.inputs), dtype=np.float64)
        return probs[np.arange(len(probs)), np.asarray(samples.truth, dtype=np.int64)]
    return score


def mask_scorer(mask_probabilities: Callable[[np.ndarray], np.ndarray]) -> Scorer:
    """A scorer from a function giving per-pixel foreground probabilities:
    ``exp(-mean binary cross-entropy)`` of each image's true mask."""
    def score(samples: Samples) -> np.ndarray:
        probs = np.clip(np.asarray(mask_probabilities(samples.inputs), np.float64),
                        1e-7, 1 - 1e-7)
        truth = np.asarray(samples.truth, dtype=np.float64).reshape(probs.shape) > 0.5
        log_likelihood = np.where(truth, np.log(probs), np.log1p(-probs))
        return np.exp(log_likelihood.reshape(len(probs), -1).mean(axis=1))
    return score
