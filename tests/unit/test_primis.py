"""PRIMIS: sparse codes, keyed ambiguisation, the sealed support, texture agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medveil.errors import ConfigError, IntegrityError
from medveil.keys import Key
from medveil.metrics import image_similarity, texture_agreement
from medveil.nets.sparse_ae import sparsify
from medveil.schemes import create


@pytest.fixture(scope="module")
def owner_key():
    return Key.generate()


@pytest.fixture(scope="module")
def fitted(cxr, owner_key):
    """A codec fitted on 96 real training images (seconds on two cores)."""
    scheme = create("primis", epochs=4, min_steps=0)
    return scheme.fit(cxr.split("train").head(96), key=owner_key, seed=0)


@pytest.fixture(scope="module")
def images(cxr):
    return np.ascontiguousarray(cxr.split("test").images[:8])


def test_sparsify_keeps_k_positive_and_k_negative_values():
    code = torch.randn(5, 64)
    sparse, mask = sparsify(code, 4)
    assert (mask.sum(1) == 8).all()
    assert ((sparse > 0).sum(1) == 4).all() and ((sparse < 0).sum(1) == 4).all()
    # the kept positives are the four largest entries
    assert torch.equal(torch.sort(sparse.clamp(min=0), 1).values[:, -4:],
                       torch.sort(code, 1).values[:, -4:])


def test_key_holder_recovers_the_image(fitted, images, owner_key):
    recovered = fitted.recover(fitted.protect(images, key=owner_key), key=owner_key)
    # 4 epochs on 96 images: 22.3 to 26.1 dB over fit seeds 0-4 (measured before and after
    # seeds were derived by purpose: the same spread), so the bar sits below the spread
    assert image_similarity(images, recovered)["psnr"] > 21


def test_ambiguised_codes_hide_the_support_by_magnitude(fitted, images, owner_key):
    codes, masks = fitted.sparse_codes(images[:2])
    view = fitted.protect(images[:2], key=owner_key)
    public, _ = fitted._split_view(view)  # noqa: SLF001
    for i in range(2):
        assert np.array_equal(public[i][masks[i]], codes[i][masks[i]])  # true values kept
        for row in range(public.shape[1]):
            true = np.abs(codes[i, row][masks[i, row]])
            off = np.abs(public[i, row][~masks[i, row]])
            assert np.all(off > 0)  # dense: every coordinate carries a value
            # noise_spread = 0: every off-support magnitude is one of the row's true ones
            assert np.isin(off, true).all()


def test_noise_spread_puts_noise_at_or_above_true_magnitudes(fitted, images, owner_key):
    codes, masks = fitted.sparse_codes(images[:1])
    wide = create("primis", noise_spread=1.0)
    noisy = wide._ambiguise(codes[0], masks[0], owner_key, "d")  # noqa: SLF001
    for row in range(len(noisy)):
        true = np.abs(codes[0, row][masks[0, row]])
        assert np.abs(noisy[row][~masks[0, row]]).min() >= true.min() - 1e-7


def test_view_size_is_declared_and_support_is_sealed(fitted, images, owner_key):
    view = fitted.protect(images[:2], key=owner_key)
    assert view.shape[1:] == fitted.view_spec(images.shape[1:])[0]
    _, masks = fitted.sparse_codes(images[:2])
    _, envelopes = fitted._split_view(view)  # noqa: SLF001
    plain_bits = np.packbits(masks[0].reshape(-1)).tobytes()
    assert plain_bits not in envelopes[0]


def test_tampered_codes_or_support_are_detected(fitted, images, owner_key):
    view = fitted.protect(images[:1], key=owner_key)
    changed = view.copy()
    changed[0, 10] += 0.5
    with pytest.raises(IntegrityError, match="support tag"):
        fitted.recover(changed, key=owner_key)
    flipped = view.copy()
    flipped[0, -20] = (flipped[0, -20] + 1) % 256
    with pytest.raises(IntegrityError):
        fitted.recover(flipped, key=owner_key)


def test_an_attackers_own_key_decodes_no_better_than_the_mean_image(cxr, fitted, images,
                                                                    owner_key):
    view = fitted.protect(images, key=owner_key)
    good = image_similarity(images, fitted.recover(view, key=owner_key))["ssim"]
    bad = image_similarity(images, fitted.recover_bypassing_check(view, Key.generate()))["ssim"]
    # chance: the population's mean image, which anyone can guess without the view
    mean = np.broadcast_to(cxr.split("train").images.mean(0), images.shape)
    assert bad < image_similarity(images, mean)["ssim"] < good


@pytest.mark.slow  # 45 s; the bench-row test checks the same attacks are reported
def test_code_attacks_are_reported(cxr, fitted, images, owner_key):
    from medveil.attacks import AttackBudget

    view = fitted.protect(images, key=owner_key)
    leaked = cxr.split("train").images[:16]
    figures = fitted.extra_attacks(view, images, leaked_views=fitted.protect(leaked, key=owner_key),
                                   leaked_images=leaked, budget=AttackBudget.quick(), seed=0)
    assert figures["magnitude_support"]["rule"] in {"top_k_signed", "largest_2k", "all"}
    tiles = fitted.attack_inverters()["tiles"](fitted.protect(leaked, key=owner_key), leaked,
                                               budget=AttackBudget.quick(), seed=0)
    assert tiles.invert(view).shape == images.shape
    recovered = image_similarity(images, fitted.recover(view, key=owner_key))["ssim"]
    assert figures["magnitude_support"]["ssim"] < recovered


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="patch"):
        create("primis", patch=7)
    with pytest.raises(ConfigError, match="2k"):
        create("primis", k=80, code_dim=128)


def test_texture_agreement_on_real_images(images):
    same = texture_agreement(images, images)
    assert set(same) == {"contrast", "homogeneity", "energy", "correlation"}
    assert all(v["mean_abs_rel_error"] == 0 and v["pearson"] == pytest.approx(1.0)
               for v in same.values())
    blurred = images.copy()
    blurred[..., 1:, :] = 0.5 * (images[..., 1:, :] + images[..., :-1, :])
    changed = texture_agreement(images, blurred)
    assert changed["contrast"]["mean_abs_rel_error"] > 0.05
