"""Update inversion by the federated aggregator, calibrated on real chest X-rays.

The calibration needs an architecture that is known to leak: a network whose first layer
is fully connected with a bias gives the input away in its own gradient (Geiping et al.
2020, Prop. 1), so a correct attack must find the image, and one that does not find it
is broken. The federated classifier itself (SmallCNN, width 8, GroupNorm, global
average pooling) does not yield to the attack at these budgets (about 2000 iterations:
SSIM 0.1-0.25 against a floor of 0.47-0.62, measured when this was written); its tests
here check the label rule on real updates and the attack's contract, not a leak.

A centre's local step is taken as a centre takes it: train mode (dropout on), one plain
SGD step at lr 0.01 on one image's cross-entropy; the attacker never sees the dropout mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medveil.attacks.suite import attacker_floor
from medveil.attacks.update_inversion import (
    InversionConfig,
    ObservedUpdate,
    idlg_label,
    invert_update,
    match_and_score,
)
from medveil.nets.classifier import SmallCNN
from medveil.seeds import seeded
from tests.conftest import shared_path

SIDE = 32
#: the federated classifier as the brief names it (GroupNorm, no running statistics)
SMALL_CNN = {"in_channels": 1, "num_classes": 2, "width": 8, "norm": "group"}
#: the leaky calibration network: fully connected first layer with a bias
LEAKY = {"in_channels": 1, "num_classes": 2, "side": SIDE, "hidden": 64, "dropout": 0.2}
#: the calibration budget, about 0.5 s per inversion on one thread; a TV weight of 1e-2
#: (not the default 1e-4) is the prior that suits [0, 1] pixels (the weakest victim here:
#: advantage 0.62 with it, 0.55 without; more iterations change neither)
CALIBRATION = InversionConfig(iterations=300, restarts=1, tv=1e-2)


def leaky_net(*, in_channels: int, num_classes: int, side: int, hidden: int,
              dropout: float = 0.0) -> nn.Module:
    """Flatten -> Linear(+bias) -> ReLU -> Dropout -> Linear: the input is the ratio of a
    first-layer row's weight gradient to its bias gradient, so updates of it leak."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, hidden), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, num_classes))


@pytest.fixture(scope="module")
def xrays() -> dict[str, np.ndarray]:
    """Real paediatric chest X-rays, 32x32 centre crops of the 64 px set: the first
    training images of each class (the train split is ordered by class) and sixteen
    test images as the attacker's public images."""
    data = np.load(shared_path("cxr_pneumonia_64.npz"))
    labels = data["train_labels"].reshape(-1).astype(np.int64)
    rows = np.concatenate([np.flatnonzero(labels == c)[:4] for c in (0, 1)])
    crop = (slice(None), None, slice(16, 48), slice(16, 48))
    return {"images": data["train_images"][rows][crop].astype(np.float32) / 255,
            "labels": labels[rows],
            "public": data["test_images"][:16][crop].astype(np.float32) / 255}


def centre_update(build, config: dict, images: np.ndarray, labels: np.ndarray,
                  *, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``before`` (a seeded initialisation) and ``after`` one local SGD step (lr 0.01,
    train mode) on ``images``: what a centre sends back."""
    with seeded(seed, "tests/update-inversion/net"):
        net = build(**config)
    before = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    net.train()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.01)
    optimiser.zero_grad()
    with seeded(seed, "tests/update-inversion/dropout"):
        loss = nn.functional.cross_entropy(net(torch.from_numpy(images)),
                                           torch.from_numpy(labels))
    loss.backward()
    optimiser.step()
    return before, {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("granted", [True, False], ids=["labels", "idlg"])
@pytest.mark.parametrize("victim", [0, 4], ids=["normal", "pneumonia"])
def test_inversion_recovers_a_real_xray_from_a_leaky_update(xrays, victim, granted):
    x, y = xrays["images"][victim:victim + 1], xrays["labels"][victim:victim + 1]
    before, after = centre_update(leaky_net, LEAKY, x, y)
    update = ObservedUpdate(LEAKY, before, after, x.shape[1:], 1, y if granted else None)
    rec = invert_update(update, config=CALIBRATION, seed=0, build_net=leaky_net)
    figures = match_and_score(rec, x, floor=attacker_floor(xrays["public"], x))
    assert rec.shape == x.shape and rec.dtype == np.float32
    assert 0.0 <= rec.min() and rec.max() <= 1.0
    assert figures["advantage"] >= 0.5, figures


def test_noise_of_the_same_norm_is_not_inverted(xrays):
    """The same attack on an update that carries no image: it must not bite."""
    x, y = xrays["images"][:1], xrays["labels"][:1]
    before, after = centre_update(leaky_net, LEAKY, x, y)
    rng = np.random.default_rng(20260101)
    noise = {k: rng.standard_normal(v.shape) for k, v in before.items()}
    norm = np.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    scale = norm / np.sqrt(sum((v ** 2).sum() for v in noise.values()))
    fake = {k: (before[k] + scale * noise[k]).astype(np.float32) for k in before}
    update = ObservedUpdate(LEAKY, before, fake, x.shape[1:], 1, y)
    rec = invert_update(update, config=CALIBRATION, seed=0, build_net=leaky_net)
    figures = match_and_score(rec, x, floor=attacker_floor(xrays["public"], x))
    assert figures["advantage"] < 0.3, figures


@pytest.mark.parametrize("granted", [True, False], ids=["labels", "soft-labels"])
def test_a_batch_of_four_comes_back_as_four_matched_images(xrays, granted):
    rows = np.array([0, 1, 4, 5])
    x, y = xrays["images"][rows], xrays["labels"][rows]
    before, after = centre_update(leaky_net, LEAKY, x, y)
    update = ObservedUpdate(LEAKY, before, after, x.shape[1:], 4, y if granted else None)
    rec = invert_update(update, config=CALIBRATION, seed=0, build_net=leaky_net)
    figures = match_and_score(rec, x, floor=attacker_floor(xrays["public"], x))
    assert rec.shape == x.shape
    assert sorted(figures["matched"]) == [0, 1, 2, 3]
    assert figures["images"] == 4 and np.isfinite(figures["ssim"])


@pytest.mark.parametrize("victim", [0, 4], ids=["normal", "pneumonia"])
def test_idlg_reads_the_label_from_a_small_cnn_update(xrays, victim):
    """The federated classifier's features are non-negative, so the true class's row of
    the last layer's gradient is the one with a negative sum, dropout or not."""
    x, y = xrays["images"][victim:victim + 1], xrays["labels"][victim:victim + 1]
    before, after = centre_update(SmallCNN, SMALL_CNN, x, y)
    net = SmallCNN(**SMALL_CNN)
    delta = {k: before[k] - after[k] for k in before}  # -(after - before)
    target = [torch.from_numpy(delta[name]) for name, _ in net.named_parameters()]
    assert idlg_label(net, target) == int(y[0])


def test_small_cnn_inversion_is_seeded_boxed_and_leaves_global_rng_alone(xrays):
    x, y = xrays["images"][:2], xrays["labels"][:2]
    before, after = centre_update(SmallCNN, SMALL_CNN, x, y)
    update = ObservedUpdate(SMALL_CNN, before, after, x.shape[1:], 2, None)
    config = InversionConfig(iterations=8, restarts=2)
    state = torch.random.get_rng_state()
    first = invert_update(update, config=config, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(first, invert_update(update, config=config, seed=3))
    assert not np.array_equal(first, invert_update(update, config=config, seed=4))
    assert first.shape == x.shape and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_matching_undoes_any_order(xrays):
    truth = xrays["images"][:4]
    order = np.array([2, 0, 3, 1])
    figures = match_and_score(truth[order], truth, floor=0.5)
    assert figures["matched"] == order.tolist()
    assert figures["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert figures["advantage"] == pytest.approx(1.0, abs=1e-4)
    assert figures["psnr"] == pytest.approx(100.0)
    extra = match_and_score(np.concatenate([truth[order], truth[:1] * 0]), truth, floor=0.5)
    assert extra["images"] == 4 and extra["matched"][-1] == -1


def test_updates_that_cannot_be_inverted_are_refused(xrays):
    x, y = xrays["images"][:1], xrays["labels"][:1]
    before, after = centre_update(leaky_net, LEAKY, x, y)
    config = InversionConfig(iterations=1, restarts=1)
    with pytest.raises(ValueError, match="zero"):
        invert_update(ObservedUpdate(LEAKY, before, before, x.shape[1:], 1, y), config=config,
                      seed=0, build_net=leaky_net)
    with pytest.raises(ValueError, match="labels"):
        invert_update(ObservedUpdate(LEAKY, before, after, x.shape[1:], 2, y), config=config,
                      seed=0, build_net=leaky_net)
    with pytest.raises(ValueError):
        InversionConfig(iterations=0)
