"""Wall time per stage of a bench row: where a bench's hours go.

A row's stages (the scheme's fit, protect, the task model's training, prediction,
each attack) are timed where they run and written into the row's ``timing``
(scorecard /6), so that speeding the bench up starts from a measurement and a
cached or skipped stage shows as such.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageClock:
    """Seconds per named stage, in the order the stages first ran; a stage that runs
    twice (the same attack at two leak sizes under one name) adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def figures(self) -> dict[str, float]:
        return dict(self.seconds)
