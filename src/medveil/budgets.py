"""Named budgets: how long the processor's model and the attackers train.

One budget is shared by the bench and by the command line (``--budget``), so that a
workflow run by hand on the same data, seed and key gives the bench's row. A
budget also says whether a scheme's own training is cut (``scheme_cut``: the
scheme's ``cut_params`` of that name apply where a row or ``--param`` does not
name them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medveil.attacks.suite import AttackBudget, InversionBudget, ReidBudget, UpdateAttackBudget
from medveil.errors import unknown_name
from medveil.tasks import ClassifierConfig, SegmenterConfig


@dataclass
class BenchBudget:
    """Everything that differs between budgets (``full``, ``quick``, ``demo``, ``smoke``)."""

    mode: str
    classifier: ClassifierConfig
    segmenter: SegmenterConfig
    attacks: AttackBudget
    max_train: int | None
    max_test: int | None
    scheme_cut: str | None = field(default=None)
    #: what the report says about this budget's figures ("" for none)
    note: str = field(default="")

    @classmethod
    def for_mode(cls, quick: bool) -> BenchBudget:
        return get_budget("quick" if quick else "full")

    def scheme_params(self, scheme_class: Any, given: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """A scheme's parameters under this budget: its ``cut_params[scheme_cut]`` where
        the budget cuts schemes, overridden by what the user or the row gives."""
        defaults = scheme_class.cut_params.get(self.scheme_cut, {}) if self.scheme_cut else {}
        return {**defaults, **(given or {})}

    def fresh_classifier(self) -> ClassifierConfig:
        return ClassifierConfig(**self.classifier.__dict__)

    def fresh_segmenter(self) -> SegmenterConfig:
        return SegmenterConfig(**self.segmenter.__dict__)


def _full() -> BenchBudget:
    return BenchBudget("full", ClassifierConfig(), SegmenterConfig(), AttackBudget(),
                       max_train=None, max_test=None)


def _quick() -> BenchBudget:
    return BenchBudget("quick", ClassifierConfig(epochs=10),
                       SegmenterConfig(steps=150, patch=96, eval_every=50),
                       AttackBudget.quick(), max_train=600, max_test=200, scheme_cut="quick")


def _demo() -> BenchBudget:
    """``make demo``: every scheme on the bundled sets in minutes. The quick budget cut
    again (64 test images, half the epochs, a fifth of the inversion steps and an
    eighth of the re-identification steps, one leak size, the schemes' ``demo`` cuts):
    a first look at the workflow and the report, not figures to quote; the report
    names the budget that ran."""
    return BenchBudget("demo", ClassifierConfig(epochs=5, batch_size=32),
                       SegmenterConfig(steps=80, patch=64, eval_every=40),
                       AttackBudget(inversion=InversionBudget(steps=40, batch_size=16,
                                                              channels=(16, 32, 64)),
                                    reid=ReidBudget(steps=12, batch_size=32), leak_sizes=(100,),
                                    gallery=64, distractors=200, shadow_images=120,
                                    third_party_victims=64, membership_references=2,
                                    updates=UpdateAttackBudget(iterations=100, restarts=1,
                                                               update_images=2,
                                                               probe_victims=1)),
                       max_train=600, max_test=64, scheme_cut="demo",
                       note="a first look at the workflow, cut to run in minutes (64 test "
                            "images, half the quick budget's epochs, a fifth of its inversion "
                            "and an eighth of its re-identification steps, one leak size, the "
                            "schemes' own training cut): weaker attacks and models than the "
                            "quick and full budgets, whose figures are in docs/benchmarks.md; "
                            "do not quote these.")


def _smoke() -> BenchBudget:
    """Seconds, not minutes: for tests of the workflow's plumbing, not of quality."""
    return BenchBudget("smoke", ClassifierConfig(epochs=2),
                       SegmenterConfig(steps=12, patch=64, eval_every=6, batch_size=4),
                       AttackBudget(inversion=InversionBudget(steps=20, batch_size=8,
                                                              channels=(8, 16, 32)),
                                    reid=ReidBudget(steps=10, batch_size=16), shadow_images=64,
                                    leak_sizes=(8, 32), gallery=16, distractors=32,
                                    third_party_victims=32, membership_references=2,
                                    updates=UpdateAttackBudget(iterations=20, restarts=1,
                                                               update_images=1,
                                                               probe_victims=1)),
                       max_train=None, max_test=None, scheme_cut="quick",
                       note="seconds per row, for tests of the plumbing: the figures mean "
                            "nothing.")


BUDGETS = {"full": _full, "quick": _quick, "demo": _demo, "smoke": _smoke}


def get_budget(name: str) -> BenchBudget:
    """A fresh budget by name; an unknown name is a clear error with a suggestion."""
    if name not in BUDGETS:
        raise unknown_name("budget", name, list(BUDGETS))
    return BUDGETS[name]()
