"""One bench row: a scheme on a data set with a seed, through its protocol and the attacks.

Apart from ``bench`` (which parses schemes, orders rows, sweeps and resumes) so that
the executors, which run rows, and the bench, which hands rows to an executor, do not
import each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medveil import __version__
from medveil.attacks.pipeline import GRID_IMAGES, attack_row, public_images
from medveil.attacks.suite import seeded_key
from medveil.budgets import BenchBudget
from medveil.cache import BenchCache, fit_scheme
from medveil.comparison import per_image_outcome, utility_intervals
from medveil.data import ImageSet
from medveil.metrics import image_similarity
from medveil.protocols import get_protocol, run_task
from medveil.rows import Row
from medveil.schemes import create, get_scheme_class
from medveil.timing import StageClock
from medveil.verdicts import membership_verdict


@dataclass(frozen=True)
class SchemeSpec:
    """One scorecard row to run: a registered scheme with parameter overrides."""

    label: str
    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def create(self, *, budget: BenchBudget | None = None):
        """The scheme with this row's parameters; a budget that cuts schemes adds its
        ``quick_params`` where the row does not name them."""
        params = dict(self.params)
        if budget is not None:
            params = budget.scheme_params(get_scheme_class(self.name), params)
        return create(self.name, **params)


def run_header(dataset: ImageSet, budget: BenchBudget, seed: int) -> dict[str, Any]:
    """What must match for a finished row to be reused by ``--resume``."""
    header = {"dataset": {"name": dataset.name, "image_size": list(dataset.image_shape[1:]),
                          "n_train": int((dataset.splits == "train").sum()),
                          "n_test": int((dataset.splits == "test").sum())},
              "seed": seed, "mode": budget.mode, "budget": asdict(budget),
              "medveil_version": __version__}
    return json.loads(json.dumps(header, default=str))  # as it reads back from disk


def run_scheme(spec: SchemeSpec, data: ImageSet, budget: BenchBudget, seed: int, *,
               cache: BenchCache | None = None) -> dict[str, Any]:
    """One scorecard row, plus the images the report shows: the owner fits the scheme,
    the protocol's owner and processor halves run the task (``run_task``: the steps the
    command line runs), the owner scores the decoded outcome, and the attack pipeline
    attacks what the protocol's ``attack_surface`` says each actor sees.

    With a ``cache``, the owner's fit (and the shadow attacker's, under its own key) is
    reused where the same data, scheme, parameters, seed, key and code made one, and a
    scheme that fits nothing reuses its whole row; ``cached`` lists what was reused.
    """
    victim_key = seeded_key("victim", seed)
    wrong_key = seeded_key("wrong", seed)
    scheme = spec.create(budget=budget)
    clock = StageClock()
    whole_row = None
    if cache is not None and not scheme.needs_fit:
        whole_row = cache.row_address(data, spec, run_header(data, budget, seed), seed)
        with clock.stage("row_from_cache"):
            cached_row = cache.load_row(whole_row)
        if cached_row is not None:
            return {**cached_row, "timing": clock.figures(), "cached": ["row"]}
    protocol = get_protocol(scheme.protocol)
    row = Row(scheme=spec.label, protocol=protocol.name, params=dict(scheme.params))
    with clock.stage("fit"):
        scheme, hit = fit_scheme(cache, "owner_fit", scheme, scheme.fit_data(data),
                                 key=victim_key, seed=seed, public=public_images(data))
        row.cached += ["fit"] if hit else []
    outcome = run_task(protocol, scheme, data, key=victim_key, budget=budget, seed=seed,
                       clock=clock, wrong_key=wrong_key)
    test = data.split("test")
    row.params = dict(scheme.params)
    row.utility = outcome.decoded.metrics(test)
    row.per_image = per_image_outcome(outcome.decoded, test)
    row.utility_intervals = utility_intervals(row.per_image, test.labels, seed=seed)
    row.protocol_section = outcome.section
    row.rounds = outcome.rounds
    row.messages = [{"sender": m.sender, "kind": m.kind, "round": m.round,
                     "bytes": int(m.nbytes)} for m in outcome.transcript]
    pictures: dict[str, np.ndarray] = {"original": test.images[:GRID_IMAGES]}
    if scheme.invertible:
        with clock.stage("recover"):
            pictures.update(_recovery(row, scheme, outcome, test, protocol.recovery_images,
                                      key=victim_key, wrong_key=wrong_key))
    surface = protocol.attack_surface(outcome)
    pictures.update(surface.pictures)
    findings = attack_row(surface, scheme=scheme, scheme_name=spec.name, params=row.params,
                          data=data, budget=budget, seed=seed, clock=clock, cache=cache)
    row.attacks, row.verdicts = findings.attacks, findings.verdicts
    row.cached += findings.cached
    if surface.updates is not None:
        with clock.stage("aggregator"):
            row.attacks, row.verdicts = _aggregator(row, surface.updates, data, budget, seed)
    with clock.stage("membership"):
        row.membership = membership_row(protocol, outcome, data, budget=budget, seed=seed)
    row.verdicts = {**row.verdicts, "membership": membership_verdict(row.membership)}
    pictures.update(findings.pictures)
    figures = outcome.figures
    row.cost = {"fit_s": clock.seconds["fit"],
                "protect_ms_per_image": figures.get("protect_ms_per_image"),
                "train_s": figures.get("train_s"),
                "infer_ms_per_image": figures.get("predict_ms_per_image", 0.0)
                + figures.get("decode_ms_per_image", 0.0),
                "view_bytes_per_image": figures.get("view_bytes_per_image"),
                "plain_bytes_per_image": float(np.prod(test.image_shape))}  # uint8 pixels
    row.pictures = pictures
    row.timing = clock.figures()
    row.threads = _threads()
    result = row.to_dict()
    if whole_row is not None:
        cache.save_row(whole_row, result)
    return result


def _aggregator(row: Row, updates, data: ImageSet, budget: BenchBudget, seed: int):
    """The aggregator's update inversion and its verdict, added to the row's."""
    from medveil.attacks.aggregator import aggregator_attacks, aggregator_verdict
    from medveil.attacks.pipeline import public_images

    public = public_images(data) or data.split("test")
    figures = aggregator_attacks(updates, budget=budget.attacks.updates, seed=seed,
                                 public=public.images)
    return ({**row.attacks, "update_inversion": figures},
            {**row.verdicts, "aggregator": aggregator_verdict(figures)})


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def membership_row(protocol, outcome, data: ImageSet, *, budget: BenchBudget, seed: int
                   ) -> dict[str, Any]:
    """The membership attacks on the run's task model, in its own input domain (the
    protocol's ``membership_target``), or why they were not measured."""
    from medveil.attacks.membership import membership_attacks

    target = protocol.membership_target(outcome, data, budget=budget, seed=seed)
    if isinstance(target, str):
        return {"not_measured": target}
    return membership_attacks(target, references=budget.attacks.membership_references,
                              seed=seed)


def _recovery(row: Row, scheme, outcome, test: ImageSet, limit: int | None, *, key,
              wrong_key) -> dict[str, np.ndarray]:
    """The key holder's recovery of the released test views (the first ``limit``), and an
    attacker who bypasses the fingerprint check and decodes with a key of its own."""
    views = outcome.release.arrays["test"]["view"][:limit]
    sample = test.images[:len(views)]
    recovered = scheme.recover(views, key=key)
    row.recovery = image_similarity(sample, recovered)
    row.wrong_key = image_similarity(sample, scheme.recover_bypassing_check(views, wrong_key))
    return {"key-holder recovery": recovered[:GRID_IMAGES]}
