"""The same checks for every registered scheme: add a scheme, get these tests for free."""

from __future__ import annotations

import base64
import io
import json
import pickle

import numpy as np
import pytest

from medveil.data import load_dataset
from medveil.errors import KeyMismatchError, NotInvertibleError
from medveil.keys import Key
from medveil.metrics import image_similarity
from medveil.schemes import available_schemes, create, get_scheme_class
from tests.conftest import key_secret

#: schemes that make a view (federated keeps the images home: its protocol's tests)
SCHEMES = [n for n in available_schemes() if get_scheme_class(n).releases_view]


@pytest.fixture(scope="module")
def cxr_crops_pair(cxr):
    """Real chest X-ray crops: train for fitting, test for protecting."""
    train = cxr.split("train").head(64)
    return train, np.ascontiguousarray(cxr.split("test").images[:6])


@pytest.fixture(scope="module")
def fundus_crops_pair():
    """Real CHASE_DB1 images and vessel masks at 64x64, for segmentation-only schemes."""
    data = load_dataset("chase-demo", size=64)
    test = data.split("test").images
    return data.split("train"), np.ascontiguousarray(np.concatenate([test, test[:, :, ::-1]]))


@pytest.fixture()
def crops(request, cxr_crops_pair, fundus_crops_pair):
    """The real images each scheme serves: chest X-rays, or fundus images with masks."""
    name = request.node.callspec.params["name"]
    return cxr_crops_pair if "classification" in get_scheme_class(name).tasks else \
        fundus_crops_pair


@pytest.fixture(scope="module")
def key():
    return Key.generate()


@pytest.fixture(scope="module")
def other_key():
    return Key.generate()


_FITTED: dict[tuple[str, str], object] = {}


def fitted(name, train, key, seed=0, *, fresh=False):
    """A fitted instance; cached per (scheme, key) unless ``fresh`` (fitting can be slow).
    Schemes that take public images (fesf's hosts) get the training crops as such."""
    params = get_scheme_class(name).contract_params
    if fresh:
        return create(name, **params).fit(train, key=key, seed=seed, public=train)
    cache_key = (name, key.fingerprint)
    if cache_key not in _FITTED:
        _FITTED[cache_key] = create(name, **params).fit(train, key=key, seed=seed,
                                                        public=train)
    return _FITTED[cache_key]


@pytest.mark.parametrize("name", SCHEMES)
def test_same_key_and_seed_give_the_same_view(name, crops, key):
    train, images = crops
    if not create(name).deterministic_views:
        # Probabilistic encryption: equal views would leak equal images. Two
        # encryptions differ, and both decrypt to the same image.
        scheme = fitted(name, train, key)
        a, b = scheme.protect(images[:2], key=key), scheme.protect(images[:2], key=key)
        assert not np.array_equal(a, b)
        assert np.allclose(scheme.recover(a, key=key), scheme.recover(b, key=key), atol=1e-3)
        return
    a = fitted(name, train, key).protect(images, key=key)
    b = fitted(name, train, key, fresh=True).protect(images, key=key)
    assert np.array_equal(a, b)
    # and in another batch: a view does not depend on its neighbours
    assert np.array_equal(fitted(name, train, key).protect(images[2:4], key=key), a[2:4])


@pytest.mark.parametrize("name", SCHEMES)
def test_views_have_the_declared_shape_and_dtype(name, crops, key):
    train, images = crops
    scheme = fitted(name, train, key)
    view = scheme.protect(images, key=key)
    shape, dtype = scheme.view_spec(images.shape[1:])
    assert view.shape == (len(images), *shape) and view.dtype == np.dtype(dtype)


@pytest.mark.parametrize("name", SCHEMES)
def test_the_view_is_never_the_input(name, crops, key):
    if name == "plain":
        pytest.skip("plain's view is the image by definition: it is the baseline")
    train, images = crops
    view = fitted(name, train, key).protect(images, key=key)
    assert view.shape != images.shape or not np.allclose(view, images, atol=1e-3)


@pytest.mark.parametrize("name", SCHEMES)
def test_a_different_key_gives_a_different_view(name, crops, key, other_key):
    train, images = crops
    a = fitted(name, train, key).protect(images, key=key)
    b = fitted(name, train, other_key).protect(images, key=other_key)
    if create(name).keyed:
        assert not np.array_equal(a, b)
    else:
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", SCHEMES)
def test_the_wrong_key_is_refused(name, crops, key, other_key):
    train, images = crops
    scheme = fitted(name, train, key)
    if not scheme.keyed:
        pytest.skip(f"{name} uses no key")
    with pytest.raises(KeyMismatchError):
        scheme.protect(images, key=other_key)
    if scheme.invertible:
        view = scheme.protect(images, key=key)
        with pytest.raises(KeyMismatchError):
            scheme.recover(view, key=other_key)


@pytest.mark.parametrize("name", SCHEMES)
def test_state_dict_holds_no_key_bytes(name, crops, key):
    train, _ = crops
    state = fitted(name, train, key).state_dict()
    secret = key_secret(key)
    blob = pickle.dumps(state)
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(blob, np.uint8))
    text = json.dumps(state, default=str)
    for needle in (secret, secret.hex().encode(), base64.b64encode(secret)):
        assert needle not in blob and needle.decode("latin1") not in text
    assert state["scheme"] == name and "params" in state


@pytest.mark.parametrize("name", SCHEMES)
def test_invertible_schemes_recover_and_others_refuse(name, crops, key):
    train, images = crops
    scheme = fitted(name, train, key)
    view = scheme.protect(images, key=key)
    if scheme.invertible:
        recovered = scheme.recover(view, key=key)
        assert recovered.shape == images.shape
        assert image_similarity(images, recovered)["ssim"] > scheme.contract_recovery_ssim
    else:
        with pytest.raises(NotInvertibleError):
            scheme.recover(view, key=key)


@pytest.mark.parametrize("name", SCHEMES)
def test_state_dict_round_trip_gives_the_same_views(name, crops, key):
    train, images = crops
    scheme = fitted(name, train, key)
    clone = create(name, **get_scheme_class(name).contract_params).load_state_dict(
        scheme.state_dict())
    if not scheme.deterministic_views:  # the clone decrypts the original's views
        view = scheme.protect(images[:2], key=key)
        assert np.allclose(clone.recover(view, key=key), images[:2], atol=1e-3)
        return
    assert np.array_equal(clone.protect(images, key=key), scheme.protect(images, key=key))
