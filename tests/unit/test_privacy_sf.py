"""privacy_sf: keyed transforms, sequence augmentation, the client/server split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medveil.data import load_dataset
from medveil.errors import ConfigError, DataError, KeyMismatchError
from medveil.keys import Key
from medveil.protocols.mapping_server import EncodedPairs, MappingServer, sequence_augment
from medveil.schemes import create
from medveil.schemes.privacy_sf import (
    copy_transforms,
    flipped_copies,
    keyed_orthogonal,
)

SMALL = {"steps": 30, "map_steps": 30, "crop": 32}


@pytest.fixture(scope="module")
def fundus():
    return load_dataset("chase-demo", size=64)


@pytest.fixture(scope="module")
def owner(fundus):
    key = Key.generate()
    return create("privacy_sf", **SMALL).fit(fundus.split("train"), key=key, seed=0), key


def test_keyed_transform_is_orthogonal_deterministic_and_per_key():
    key = Key.generate()
    q, b = keyed_orthogonal(key, "t", 16)
    assert np.allclose(q @ q.T, np.eye(16), atol=1e-5) and b.shape == (16,)
    assert np.array_equal(q, keyed_orthogonal(key, "t", 16)[0])
    assert not np.allclose(q, keyed_orthogonal(Key.generate(), "t", 16)[0])


def test_sequence_augmentation_acts_on_tokens_and_keeps_pairs_consistent():
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(4 * 10 * 3, dtype=torch.float32).reshape(4, 10, 3) + 1
    masks = images[..., :2] * 10
    dropped, same = sequence_augment(images, masks, gen, drop=0.5, mix=0.0)
    zero = (dropped == 0).all(-1)
    assert zero.any() and torch.equal(same, masks)  # tokens dropped, masks untouched
    assert torch.equal(dropped[~zero], images[~zero])
    mixed_images, mixed_masks = sequence_augment(images, masks, gen, drop=0.0, mix=1.0)
    assert not torch.equal(mixed_images, images)
    # wherever a token came from another image, its mask token came from the same one
    assert torch.equal(mixed_images[..., :2] * 10, mixed_masks)
    # positions never move: a token at position t is some image's token t
    for i in range(4):
        for t in range(10):
            assert any(torch.equal(mixed_images[i, t], images[j, t]) for j in range(4))


def test_client_encodes_server_maps_client_decodes(owner, fundus):
    scheme, key = owner
    train, test = fundus.split("train"), fundus.split("test")
    views = scheme.protect(train.images, key=key)
    masks = scheme.protect_masks(train.masks, key=key)
    assert views.shape == (len(train), 64, scheme.params["image_dim"])
    assert masks.shape == (len(train), 64, scheme.params["mask_dim"])
    # the server half: the release's parameters and image shape, no scheme, no key
    server = MappingServer(scheme.params, train.image_shape)
    net = server.train([EncodedPairs(views, masks)], seed=0)
    predicted = server.map_tokens(net, scheme.protect(test.images, key=key))
    decoded = scheme.decode_masks(predicted, key=key)
    assert decoded.shape == test.masks.shape and set(np.unique(decoded)) <= {0, 1}
    with pytest.raises(KeyMismatchError):
        scheme.decode_masks(predicted, key=Key.generate())
    # two centres under different keys share one server network
    other = create("privacy_sf", **SMALL).fit(train, key=(k2 := Key.generate()), seed=1)
    pooled = server.train([EncodedPairs(views, masks), EncodedPairs(
        other.protect(train.images, key=k2), other.protect_masks(train.masks, key=k2))], seed=0)
    assert server.map_tokens(pooled, views[:2], centre=1).shape == masks[:2].shape


def test_flipped_copies_are_the_dihedral_group_of_each_image():
    square = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    copies = flipped_copies(square, "dihedral")
    assert copies.shape == (16, 1, 3, 3)
    assert np.array_equal(copies[:2], square)
    # eight distinct versions of an asymmetric image, each a permutation of its pixels
    assert len({c.tobytes() for c in copies[::2]}) == 8
    assert all(sorted(c.ravel()) == sorted(square[0].ravel()) for c in copies[::2])
    assert flipped_copies(np.zeros((2, 1, 3, 4), np.float32), "dihedral").shape[0] == 8
    assert flipped_copies(square, "none") is square


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (2, 1, 4, 6)])
def test_every_copy_transform_is_undone_by_its_inverse(shape):
    images = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    pairs = copy_transforms("dihedral", shape)
    assert len(pairs) == (8 if shape[-1] == shape[-2] else 4)
    for forward, inverse in pairs:
        np.testing.assert_array_equal(inverse(forward(images)), images)
    assert len(copy_transforms("none", shape)) == 1


def test_segment_averages_the_test_copies_into_a_flip_equivariant_mask(owner, fundus):
    scheme, key = owner
    train, test = fundus.split("train"), fundus.split("test").head(2)
    mapping = MappingServer(scheme.params, train.image_shape)
    net = mapping.train([scheme.training_pairs(train.images, train.masks, key=key)], seed=0)
    server = lambda tokens: mapping.map_tokens(net, tokens)  # noqa: E731
    single = scheme.segment(test.images, server, key=key, copies="none")
    np.testing.assert_array_equal(single, scheme.decode_masks(
        server(scheme.protect(test.images, key=key)), key=key))
    averaged = scheme.segment(test.images, server, key=key)
    assert averaged.shape == test.masks.shape and set(np.unique(averaged)) <= {0, 1}
    # averaged over the whole group, flipping the input flips the mask (up to rounding)
    mirrored = scheme.segment(np.ascontiguousarray(test.images[..., ::-1]), server, key=key)
    assert np.mean(mirrored[..., ::-1] != averaged) < 1e-3
    with pytest.raises(KeyMismatchError):
        scheme.segment(test.images, server, key=Key.generate())
    with pytest.raises(ConfigError, match="copies"):
        scheme.segment(test.images, server, key=key, copies="rotate")


def test_training_pairs_carry_the_copies_and_start_with_the_images(owner, fundus):
    scheme, key = owner
    train = fundus.split("train").head(2)
    pairs = scheme.training_pairs(train.images, train.masks, key=key)
    assert len(pairs.images) == len(pairs.masks) == 8 * len(train)
    np.testing.assert_array_equal(pairs.images[:2], scheme.protect(train.images, key=key))
    with pytest.raises(ConfigError, match="client_copies"):
        create("privacy_sf", client_copies="rotate")


def test_the_reader_view_is_a_picture_on_the_token_grid(owner, fundus):
    scheme, key = owner
    picture = scheme.view_as_image(scheme.protect(fundus.split("test").images, key=key))
    assert picture.shape[1:] == (1, 8, 8) and picture.min() >= 0 and picture.max() <= 1


def test_bad_input_is_refused(fundus, cxr):
    with pytest.raises(DataError, match="masks"):
        create("privacy_sf", **SMALL).fit(cxr.split("train").head(8), key=Key.generate())
    with pytest.raises(ConfigError, match="multiple of patch"):
        create("privacy_sf", crop=30)
    with pytest.raises(ConfigError, match="augment"):
        create("privacy_sf", augment="pixels")
    odd = load_dataset("chase-demo", size=60)
    with pytest.raises(DataError, match="divisible by patch"):
        create("privacy_sf", **SMALL).fit(odd.split("train"), key=Key.generate())


def test_bench_refuses_a_segmentation_scheme_on_classification_data(tmp_path):
    from medveil.bench import run_bench

    with pytest.raises(ConfigError, match="segmentation"):
        run_bench(schemes="privacy_sf", out=tmp_path, progress=False)


def test_centres_partition_the_data_and_each_gets_pooled_and_alone_figures(fundus):
    from medveil.multicentre import split_into_centres
    from medveil.workflow import multicentre_table, run_multicentre

    parts = split_into_centres(fundus, 2, seed=0)
    ids = np.concatenate([p.ids for p in parts])
    assert sorted(ids) == sorted(fundus.ids) and all(len(p.split("test")) for p in parts)
    with pytest.raises(ConfigError, match="fewer"):
        split_into_centres(fundus, 50, seed=0)
    record = run_multicentre(fundus, centres=2, seed=0, params=SMALL, budget="smoke")
    assert [r["centre"] for r in record["rows"]] == [0, 1]
    assert "dice pooled" in multicentre_table(record)
    for row, part in zip(record["rows"], parts, strict=True):
        assert 0 <= row["pooled"]["dice"] <= 1 and 0 <= row["alone"]["dice"] <= 1
        assert row["n_train"] == len(part.split("train"))
        assert row["n_pairs"] == 8 * row["n_train"]  # the client's dihedral copies


def test_a_store_carries_encoded_masks_never_plaintext_masks(tmp_path, fundus):
    from medveil.workflow import protect_dataset

    key = Key.generate()
    protect_dataset(fundus, scheme="privacy_sf", key=key, out=tmp_path / "store", params=SMALL,
                    state=tmp_path / "state")
    names = sorted(p.name for p in (tmp_path / "store").glob("*.npy"))
    assert not any(n.endswith(".masks.npy") for n in names)
    assert "train.encoded_masks.npy" in names and "test.encoded_masks.npy" not in names
    from medveil.store import open_store

    store = open_store(tmp_path / "store", key=key)
    assert store.arrays["train"]["encoded_masks"].shape[-1] == SMALL.get("mask_dim", 16)


def test_token_windows_cut_the_same_window_from_image_and_mask_grids():
    from medveil.protocols.mapping_server import token_windows

    gen = torch.Generator().manual_seed(0)
    grid = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 36, 1)
    x, y, window = token_windows(grid, grid * 2, (6, 6), 4, gen)
    assert window == (4, 4) and x.shape == (2, 16, 1) and torch.equal(y, x * 2)
    for i in range(2):  # rows of a window are consecutive runs of the full grid's rows
        rows = x[i, :, 0].reshape(4, 4)
        assert torch.all(rows[:, 1:] - rows[:, :-1] == 1)
        assert torch.all(rows[1:, 0] - rows[:-1, 0] == 6)
    same = token_windows(grid, grid, (6, 6), 16, gen)
    assert same[2] == (6, 6) and torch.equal(same[0], grid)
