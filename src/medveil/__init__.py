"""medveil: privacy-preserving deep learning on medical images.

Heavy dependencies (torch, monai) are imported lazily by the modules that
need them, so ``import medveil`` and the CLI's start-up stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from medveil.errors import MedveilError  # noqa: E402

__all__ = ["MedveilError", "__version__"]
