"""The plaintext baseline: the view is the image itself.

Every scorecard's first row, so that each scheme's utility and privacy are read
against what no protection gives and no protection costs.
"""

from __future__ import annotations

import numpy as np

from medveil.keys import Key
from medveil.schemes.base import Scheme, register


@register
class PlainScheme(Scheme):
    name = "plain"
    invertible = True
    keyed = False

    def _protect(self, images: np.ndarray, *, key: Key) -> np.ndarray:
        return images.copy()

    def _recover(self, view: np.ndarray, *, key: Key) -> np.ndarray:
        return view.astype(np.float32, copy=True)
