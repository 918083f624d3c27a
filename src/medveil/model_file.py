"""The processor's model file (``medveil.model/1``): its format name and a checked read.

Apart from ``tasks`` (which trains the models) so that ``atomic`` can recognise a
medveil model file without importing the training code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medveil.errors import ModelFileError

MODEL_FORMAT = "medveil.model/1"


def read_model_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A model file's record (torch, ``weights_only``: no pickled code), format checked."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; train one with "
                             "`medveil train --out MODEL`")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
        if record.get("format") != MODEL_FORMAT:
            raise ValueError("format")
    except Exception:  # noqa: BLE001
        raise ModelFileError(f"{path} is not a medveil model file ({MODEL_FORMAT})") from None
    return record
