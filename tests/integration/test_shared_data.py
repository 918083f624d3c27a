"""`medveil data show` on every real set the project is measured on."""

from __future__ import annotations

import pytest

from medveil.data import load_dataset
from tests.conftest import shared_path


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
