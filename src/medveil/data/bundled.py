"""Small real data sets shipped inside the package, so medveil runs offline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).parent / "demo"


@dataclass(frozen=True)
class BundledSet:
    name: str
    path: Path
    task: str
    description: str
    attribution: str
    defaults: dict[str, Any] = field(default_factory=dict)


BUNDLED: dict[str, BundledSet] = {
    "cxr-demo": BundledSet(
        name="cxr-demo",
        path=DEMO_DIR / "cxr_pneumonia_demo_64.npz",
        task="classification",
        description="480 train / 160 test paediatric chest X-rays, 64x64, normal vs pneumonia "
                    "(a stratified subset of the official split)",
        attribution="Kermany, Zhang, Goldbaum, Labeled Optical Coherence Tomography (OCT) and "
                    "Chest X-Ray Images for Classification, Mendeley Data v2, CC BY 4.0",
    ),
    "chase-demo": BundledSet(
        name="chase-demo",
        path=DEMO_DIR / "chase_db1",
        task="segmentation",
        description="8 CHASE_DB1 retinal fundus photographs (children 1-4, both eyes) with the "
                    "first expert's vessel masks; read at 256x256 by default",
        attribution="Fraz et al. 2012, CHASE_DB1, Kingston University, CC BY 4.0",
        defaults={"size": 256},
    ),
}

DEFAULT_CLASSIFICATION = "cxr-demo"
DEFAULT_SEGMENTATION = "chase-demo"


def resolve_bundled(name: str) -> tuple[Path, dict[str, Any]] | None:
    """The path and default read options of a bundled set, or None for other names."""
    entry = BUNDLED.get(name)
    if entry is None:
        return None
    return entry.path, dict(entry.defaults)
