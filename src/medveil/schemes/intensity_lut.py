"""Weak reference scheme: a keyed bijective intensity lookup table.

Not a protection method anyone should use. It exists so that the attack suite
can be shown to break something: a bijective intensity mapping keeps every edge
and shape, and an inversion network learns the table from a few leaked pairs.
"""

from __future__ import annotations

import numpy as np

from medveil.errors import ConfigError
from medveil.keys import Key
from medveil.schemes.base import Scheme, register


@register
class IntensityLutScheme(Scheme):
    name = "intensity_lut"
    invertible = True
    reference_only = True

    def __init__(self, *, levels: int = 256) -> None:
        if not 2 <= int(levels) <= 65536:
            raise ConfigError(f"levels must be in [2, 65536], got {levels}")
        super().__init__(levels=int(levels))

    def _table(self, key: Key) -> np.ndarray:
        # Derived from the key at each use and never stored: the table is key material.
        return key.stream("intensity_lut/table").permutation(self.params["levels"])

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        top = self.params["levels"] - 1
        levels = np.rint(images * top).astype(np.int64)
        return (self._table(key)[levels] / top).astype(np.float32)

    def _recover(self, view: np.ndarray, *, key: Key) -> np.ndarray:
        top = self.params["levels"] - 1
        inverse = np.argsort(self._table(key))
        levels = np.clip(np.rint(view * top).astype(np.int64), 0, top)
        return (inverse[levels] / top).astype(np.float32)
