"""A centre's privacy ledger: every DP-SGD step it has taken, for its accountant.

Opacus' accountant state is a short history of ``(noise_multiplier, sample_rate,
steps)``; the ledger keeps that history for one centre across rounds (a Flower
ClientApp is a new process per message, so the accountant cannot live in memory) and
answers two questions: the centre's sample-level epsilon so far at ``delta``, and
whether a planned round would take it past ``max_epsilon`` (asked *before* the round,
so a run stops before the bound is passed, never after).

The accountant is Opacus' RDP accountant (Mironov 2017; Opacus' own default is PRV,
tighter and slower): deterministic, cheap to re-evaluate each round.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from medveil.errors import DataError

ACCOUNTANT = "rdp"


@dataclass
class PrivacyLedger:
    """One centre's DP-SGD steps: ``history`` as Opacus' accountant keeps it."""

    history: list[tuple[float, float, int]] = field(default_factory=list)
    mechanism: str = ACCOUNTANT

    def epsilon(self, delta: float) -> float:
        """Sample-level epsilon of every step so far at ``delta`` (0 with no DP step)."""
        if not self.history:
            return 0.0
        return float(self._accountant().get_epsilon(delta=delta))

    def with_round(self, noise_multiplier: float, sample_rate: float, steps: int
                   ) -> PrivacyLedger:
        """The ledger after one more round of ``steps`` steps (a copy)."""
        return PrivacyLedger(history=[*self.history, (float(noise_multiplier),
                                                      float(sample_rate), int(steps))],
                             mechanism=self.mechanism)

    def _accountant(self):
        accountants = _opacus("opacus.accountants")
        accountant = accountants.create_accountant(self.mechanism)
        accountant.load_state_dict({"history": [tuple(h) for h in self.history],
                                    "mechanism": self.mechanism})
        return accountant

    # -- on disk ----------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"mechanism": self.mechanism,
                           "history": [list(h) for h in self.history]})

    @classmethod
    def from_json(cls, text: str, *, where: str = "the ledger") -> PrivacyLedger:
        """A ledger back, every field checked (a centre's ledger is what stops its run)."""
        try:
            record = json.loads(text)
            mechanism = record["mechanism"]
            history = [(float(s), float(q), int(n)) for s, q, n in record["history"]]
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{where} is not a privacy ledger medveil wrote ({exc}); restore "
                            "it from the run's checkpoint") from None
        if mechanism != ACCOUNTANT or any(
                not (math.isfinite(s) and s >= 0 and 0 < q <= 1 and n >= 0)
                for s, q, n in history):
            raise DataError(f"{where} holds steps no accountant took (mechanism "
                            f"{mechanism!r}); restore it from the run's checkpoint")
        return cls(history=history, mechanism=mechanism)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Atomically (0600): a crash mid-write leaves the former ledger."""
        from medveil.atomic import atomic_write_bytes

        return atomic_write_bytes(path, self.to_json().encode(), force=True, check=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        """The ledger at ``path``; a centre that has none yet starts empty."""
        path = Path(path)
        if not path.exists():
            return cls()
        return cls.from_json(path.read_text(), where=str(path))


def noise_for_epsilon(target_epsilon: float, *, delta: float, sample_rate: float,
                      steps: int) -> float:
    """The noise multiplier that spends ``target_epsilon`` at ``delta`` over ``steps``
    steps at ``sample_rate`` (computed once, for the whole run, not per round)."""
    utils = _opacus("opacus.accountants.utils")
    return float(utils.get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                            sample_rate=sample_rate, steps=steps,
                                            accountant=ACCOUNTANT))


def _opacus(module: str):
    import warnings

    from medveil.federated import require

    # the RDP orders Opacus searches end at 256: a small epsilon (high noise, few steps)
    # is then a slightly loose upper bound, which is the safe side to report
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha",
                            category=UserWarning)
    return require(module)
