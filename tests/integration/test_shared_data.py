"""`medveil data show` on every real set the project is measured on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medveil.data import load_dataset
from tests.conftest import SHARED_DATA, shared_path


@pytest.mark.parametrize("name,n,size", [
    ("cxr_pneumonia_64.npz", 5840, 64),
    ("cxr_pneumonia_128.npz", 5840, 128),
    ("breastmnist_28.npz", 780, 28),
    ("pneumoniamnist_28_balanced.npz", 3166, 28),
])
def test_shared_npz_sets(name, n, size):
    data = load_dataset(shared_path(name))
    assert len(data) == n and data.image_shape == (1, size, size)
    assert data.task == "classification" and set(data.labels.tolist()) == {0, 1}


def test_shared_chase_db1_folder():
    data = load_dataset(shared_path("segmentation", "chase_db1"), size=240)
    assert len(data) == 28 and data.masks.shape == (28, 1, 240, 240)
    assert (data.splits == "test").sum() == 8  # children 11-14, the usual held-out set


def _listed_sources() -> list[tuple[str, list[str]]]:
    import nibabel
    from pydicom.data import get_testdata_file

    sources = [(str(SHARED_DATA / name), []) for name in (
        "cxr_pneumonia_64.npz", "cxr_pneumonia_128.npz", "breastmnist_28.npz",
        "pneumoniamnist_28_balanced.npz")]
    sources.append((str(SHARED_DATA / "segmentation" / "chase_db1"), ["--size", "240"]))
    for name in ("CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm", "US1_UNCI.dcm"):
        sources.append((str(get_testdata_file(name, download=False)), []))
    sources.append((str(Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"), []))
    return sources


@pytest.mark.parametrize("source,options", _listed_sources(),
                         ids=lambda v: Path(v).name if isinstance(v, str) else "")
def test_data_show_reads_every_listed_file(source, options, tmp_path):
    from typer.testing import CliRunner

    from medveil.cli import app

    if str(SHARED_DATA) in source and not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is not here")
    result = CliRunner().invoke(app, ["data", "show", source, *options,
                                      "--grid", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert re.search(r"\d+ images, \d+x\d+, \d channel\(s\), values in \[0\.\d+, [01]\.\d+\]",
                     result.output), result.output
    assert (tmp_path / "g.png").stat().st_size > 1000
