"""A scorecard row as a typed record: what the bench, the executors, the cache and the
report pass between them (``Row.to_dict`` is its JSON, ``scorecard.schema.json`` its
contract).

A row's protocol-specific figures are one section, ``protocol_section``, that the
protocol named in ``protocol`` produces (``OwnerHalf.section``) and describes in the
report (``Protocol.describe``): the report reads no protocol's figures by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Keys of the row's dict that never reach the scorecard (the report's pictures, an
#: error's traceback): the executors and the bench pass them along, ``_finish`` pops them.
PRIVATE_KEYS = ("_pictures", "_traceback", "_per_image")


@dataclass
class Row:
    """One scheme on one data set with one seed."""

    scheme: str  #: the row's label (``name`` or ``name:param=value``)
    protocol: str
    params: dict[str, Any]
    status: str = "ok"
    error: str | None = None
    utility: dict[str, float] | None = None
    #: each utility figure with its 95 % interval over the test images
    utility_intervals: dict[str, dict[str, Any]] | None = None
    #: this row minus plain on the same test images (paired), per figure
    vs_plain: dict[str, dict[str, Any]] | None = None
    #: the membership attacks on the row's task model (medveil.attacks.membership)
    membership: dict[str, Any] | None = None
    #: torch's intra-op threads while the row ran (its figures can depend on them)
    threads: int | None = None
    recovery: dict[str, float] | None = None  #: the key holder's, invertible schemes
    wrong_key: dict[str, float] | None = None  #: a decode with another key
    attacks: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, Any] | None = None
    cost: dict[str, float | None] = field(default_factory=dict)
    protocol_section: dict[str, Any] | None = None
    rounds: int | None = None
    messages: list[dict[str, Any]] | None = None
    cached: list[str] = field(default_factory=list)
    timing: dict[str, float] | None = None
    pictures: dict[str, np.ndarray] | None = None
    traceback: str | None = None
    #: each test image's outcome, for the paired comparisons (never in the scorecard)
    per_image: dict[str, np.ndarray] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as the scorecard holds it (optional sections only where set), with the
        private ``_pictures`` / ``_traceback`` where present."""
        out: dict[str, Any] = {
            "scheme": self.scheme, "protocol": self.protocol, "params": dict(self.params),
            "status": self.status, "error": self.error, "utility": self.utility,
            "recovery": self.recovery, "wrong_key": self.wrong_key, "attacks": self.attacks,
            "cost": self.cost, "cached": list(self.cached)}
        for name in ("utility_intervals", "vs_plain", "membership", "threads", "verdicts",
                     "protocol_section", "rounds", "messages", "timing"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.pictures is not None:
            out["_pictures"] = self.pictures
        if self.traceback is not None:
            out["_traceback"] = self.traceback
        if self.per_image is not None:
            out["_per_image"] = self.per_image
        return out

    @classmethod
    def failed(cls, *, scheme: str, protocol: str, params: dict[str, Any], error: str,
               traceback: str | None = None) -> Row:
        """The row of a scheme that failed (the others go on)."""
        return cls(scheme=scheme, protocol=protocol, params=params, status="error",
                   error=error, traceback=traceback)
