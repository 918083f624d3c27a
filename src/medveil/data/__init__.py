"""Reading real medical images into one :class:`ImageSet`."""

from __future__ import annotations

from medveil.data.bundled import BUNDLED
from medveil.data.imageset import ImageSet
from medveil.data.readers import READERS, load_dataset, look_up_option

__all__ = ["BUNDLED", "READERS", "ImageSet", "load_dataset", "look_up_option"]
