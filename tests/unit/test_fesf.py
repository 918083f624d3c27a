"""FESF: the image hidden module's Fourier algebra, keyed hosts, and the scheme's checks."""

from __future__ import annotations

import numpy as np
import pytest

from medveil.errors import ConfigError, DataError
from medveil.keys import Key
from medveil.schemes import create
from medveil.schemes.fesf import hide, low_frequency_mask


@pytest.fixture(scope="module")
def pair(cxr):
    test = cxr.split("test").images
    return np.ascontiguousarray(test[:4]), np.ascontiguousarray(test[4:8])


def _amplitude(images, mask):
    return np.abs(np.fft.fftshift(np.fft.fft2(images.astype(np.float64)), axes=(-2, -1)))[
        ..., mask > 0]


def test_mask_is_a_centred_square_of_the_named_size():
    mask = low_frequency_mask((64, 64), 0.1)
    assert mask.sum() == 13 * 13 and mask[32, 32] == 1 and mask[0, 0] == 0
    assert low_frequency_mask((64, 64), 0.001).sum() == 9  # at least one bin each way


def test_beta_zero_returns_the_host(pair):
    images, hosts = pair
    assert np.allclose(hide(images, hosts, alpha=0.1, beta=0.0), hosts, atol=1e-5)


def test_surrogate_carries_plaintext_low_frequencies_and_host_look(pair):
    images, hosts = pair
    surrogate = hide(images, hosts, alpha=0.1, beta=1.0)
    mask = low_frequency_mask(images.shape[-2:], 0.1)
    to_plain = np.abs(_amplitude(surrogate, mask) - _amplitude(images, mask)).mean()
    to_host = np.abs(_amplitude(surrogate, mask) - _amplitude(hosts, mask)).mean()
    assert to_plain < 0.5 * to_host
    # ... while the pixels follow the host's phase: the surrogate looks like the host
    for s, x, h in zip(surrogate, images, hosts, strict=True):
        assert np.corrcoef(s.ravel(), h.ravel())[0, 1] > np.corrcoef(s.ravel(), x.ravel())[0, 1]


def test_hosts_are_keyed_deterministic_and_never_the_image(cxr):
    train = cxr.split("train").head(40)
    scheme = create("fesf", use_iqem=False).fit(train, key=Key.generate(), seed=0,
                                                public=cxr.split("val"))
    key, other = Key.generate(), Key.generate()
    pool = scheme._hosts  # noqa: SLF001
    images = np.ascontiguousarray(pool[:6])  # the worst case: images from the pool itself
    a, b = scheme.hosts_for(images, key), scheme.hosts_for(images, key)
    assert np.array_equal(a, b)
    assert not any(np.array_equal(h, x) for h, x in zip(a, images, strict=True))
    assert not np.array_equal(a, scheme.hosts_for(images, other))


def test_bad_parameters_and_shapes_are_refused(cxr):
    with pytest.raises(ConfigError, match="alpha"):
        create("fesf", alpha=0.0)
    with pytest.raises(ConfigError, match="beta"):
        create("fesf", beta=1.5)
    key = Key.generate()
    scheme = create("fesf", use_iqem=False).fit(cxr.split("train").head(20), key=key,
                                                public=cxr.split("val"))
    with pytest.raises(DataError, match="--size"):
        scheme.protect(cxr.split("test").images[:1, :, :32, :32], key=key)


def test_low_frequency_amplitude_attack_reads_the_band_and_reports_chance(cxr):
    train = cxr.split("train")
    victims = np.ascontiguousarray(cxr.split("test").images[:12])
    key = Key.generate()
    scheme = create("fesf", use_iqem=False, beta=1.0).fit(train.head(80), key=key, seed=0,
                                                          public=cxr.split("val"))
    figures = scheme.extra_attacks(scheme.protect(victims, key=key), victims,
                                   leaked_views=victims[:0], leaked_images=train.images[:200],
                                   budget=None, seed=0)["low_frequency_amplitude"]
    assert {"ssim", "psnr", "chance_ssim", "chance_psnr"} <= set(figures)
    # with beta = 1 the band holds the plaintext's own amplitude: closer than the mean image
    assert figures["psnr"] > figures["chance_psnr"]
    assert scheme.extra_attacks(victims, victims, leaked_views=victims[:0],
                                leaked_images=victims[:0], budget=None, seed=0) == {}


def test_hosts_must_be_named_and_owner_hosts_warn(cxr):
    train = cxr.split("train").head(20)
    with pytest.raises(ConfigError, match="hosts=PATH"):
        create("fesf", use_iqem=False).fit(train, key=Key.generate())
    with pytest.warns(UserWarning, match="owner's own training patients"):
        create("fesf", use_iqem=False, hosts="owner").fit(train, key=Key.generate())


def test_third_party_attack_finds_owner_hosts_and_nothing_with_public_hosts(cxr):
    """With the owner's own patients as hosts every surrogate shows another patient; with
    a public host set (here the validation split) no owner patient shows beyond chance."""
    from medveil.attacks import third_parties

    train, test = cxr.split("train"), cxr.split("test")
    owner = np.concatenate([train.images, test.images])
    rows = len(train) + np.arange(len(test))
    key = Key.generate()
    with pytest.warns(UserWarning):
        own = create("fesf", use_iqem=False, hosts="owner").fit(train, key=key, seed=0)
    disclosed = third_parties(own.protect(test.images, key=key), owner, rows)
    assert disclosed["disclosure_ci95"][0] > 0.5 and disclosed["third_parties_disclosed"] > 20
    public = create("fesf", use_iqem=False).fit(train, key=key, seed=0, public=cxr.split("val"))
    clean = third_parties(public.protect(test.images, key=key), owner, rows)
    assert clean["disclosure_ci95"][0] <= clean["chance"]
    # plain views disclose their own patient only: third parties at chance
    plain = third_parties(test.images, owner, rows)
    assert plain["disclosure_ci95"][0] <= plain["chance"] <= plain["disclosure_ci95"][1]
