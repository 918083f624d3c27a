from __future__ import annotations

import numpy as np
import pytest

from medveil.errors import DataError, ModelFileError
from medveil.tasks import (
    ClassifierConfig,
    SegmenterConfig,
    TrainedModel,
    evaluate_model,
    predict_proba,
    train_model,
)


@pytest.fixture(scope="module")
def small_cxr(cxr):
    return cxr.head(96)


def test_classifier_is_deterministic_from_the_seed(small_cxr):
    config = ClassifierConfig(epochs=2, width=8)
    a = train_model(small_cxr, seed=3, classifier=config)
    b = train_model(small_cxr, seed=3, classifier=ClassifierConfig(epochs=2, width=8))
    c = train_model(small_cxr, seed=4, classifier=ClassifierConfig(epochs=2, width=8))
    test = small_cxr.split("test").images
    assert np.array_equal(predict_proba(a, test), predict_proba(b, test))
    assert not np.array_equal(predict_proba(a, test), predict_proba(c, test))
    metrics = evaluate_model(a, small_cxr)
    assert set(metrics) == {"accuracy", "auc", "f1", "mcc"}


def test_training_leaves_global_rng_alone(small_cxr):
    import torch

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    train_model(small_cxr, seed=0, classifier=ClassifierConfig(epochs=1, width=8))
    assert torch.equal(torch.rand(3), before)


def test_model_file_round_trip(tmp_path, small_cxr):
    model = train_model(small_cxr, seed=0, classifier=ClassifierConfig(epochs=1, width=8))
    path = model.save(tmp_path / "m.pt")
    loaded = TrainedModel.load(path)
    test = small_cxr.split("test").images
    assert np.allclose(predict_proba(model, test), predict_proba(loaded, test))
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(ModelFileError, match="not a medveil model"):
        TrainedModel.load(tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="does not exist"):
        TrainedModel.load(tmp_path / "missing.pt")


def test_segmenter_trains_and_is_deterministic(chase):
    config = dict(steps=6, batch_size=2, patch=64, channels=(8, 16, 32), num_res_units=1,
                  eval_every=3)
    a = train_model(chase, seed=0, segmenter=SegmenterConfig(**config))
    b = train_model(chase, seed=0, segmenter=SegmenterConfig(**config))
    ma, mb = evaluate_model(a, chase), evaluate_model(b, chase)
    assert ma == mb and set(ma) == {"dice", "iou"}
    assert len(a.history) == 2 and "val_dice" in a.history[0]


def test_unlabelled_data_cannot_be_trained(cxr):
    from medveil.data import ImageSet

    unlabelled = ImageSet(images=cxr.images[:4], splits=np.full(4, "train"),
                          ids=np.arange(4).astype(str))
    with pytest.raises(DataError, match="nothing to train"):
        train_model(unlabelled)
