"""Readers on real files: the bundled sets, pydicom-data's DICOM, nibabel's NIfTI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest
from PIL import Image

from medveil.data import load_dataset
from medveil.data.bundled import BUNDLED
from medveil.errors import ConfigError, DataError, DataNotFoundError


def dicom(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom-data")
    return Path(path)


NIFTI = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


def test_npz_demo_layout_and_val_carving(cxr):
    assert cxr.images.dtype == np.float32 and cxr.images.shape[1:] == (1, 64, 64)
    assert 0.0 <= cxr.images.min() and cxr.images.max() <= 1.0
    assert cxr.task == "classification" and cxr.labels.dtype == np.int64
    assert cxr.split_names == ["train", "val", "test"]
    assert (cxr.splits == "test").sum() == 160  # the file's own test split is kept
    again = load_dataset("cxr-demo")
    assert np.array_equal(again.splits, cxr.splits)  # the carving is deterministic
    other = load_dataset("cxr-demo", seed=5)
    assert not np.array_equal(other.splits, cxr.splits)


def test_npz_labels_shaped_n1_and_resize(tmp_path, cxr):
    train = cxr.split("train")
    path = tmp_path / "medmnist.npz"
    np.savez(path, train_images=(train.images[:20, 0] * 255).astype(np.uint8),
             train_labels=train.labels[:20, None])
    data = load_dataset(path, size=32, val_fraction=0, test_fraction=0.25)
    assert data.images.shape == (20, 1, 32, 32) and data.labels.shape == (20,)
    assert (data.splits == "test").sum() == 5


def test_segmentation_pairs_by_naming_rule(chase):
    assert chase.task == "segmentation"
    assert chase.images.shape == (8, 1, 256, 256) and chase.masks.shape == (8, 1, 256, 256)
    assert set(np.unique(chase.masks)) == {0, 1}
    assert 0.03 < chase.masks.mean() < 0.15  # vessels are a small share of the fundus
    # held-out images are the last ones in name order: whole children stay together
    assert list(chase.split("test").ids) == ["Image_04L", "Image_04R"]


def test_images_and_masks_sibling_folders(tmp_path):
    src = BUNDLED["chase-demo"].path
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for stem in ("Image_01L", "Image_01R", "Image_02L"):
        shutil.copy(src / f"{stem}.jpg", tmp_path / "images" / f"{stem}.jpg")
        shutil.copy(src / f"{stem}_1stHO.png", tmp_path / "masks" / f"{stem}.png")
    data = load_dataset(tmp_path, size=64, color="green")
    assert data.masks.shape == (3, 1, 64, 64) and data.task == "segmentation"
    rgb = load_dataset(tmp_path, size=64, color="rgb")
    assert rgb.images.shape[1] == 3


def _class_folder(tmp_path: Path, cxr, fmt: str = "png") -> Path:
    root = tmp_path / "classes"
    for label, name in enumerate(("normal", "pneumonia")):
        (root / name).mkdir(parents=True)
        idx = np.nonzero(cxr.labels == label)[0][:6]
        for i in idx:
            Image.fromarray((cxr.images[i, 0] * 255).astype(np.uint8)).save(
                root / name / f"img{i}.{fmt}")
    return root


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif", "gif"])
def test_class_per_subfolder(tmp_path, cxr, fmt):
    data = load_dataset(_class_folder(tmp_path, cxr, fmt), test_fraction=0.3, val_fraction=0)
    assert data.class_names == ["normal", "pneumonia"]
    assert len(data) == 12 and np.bincount(data.labels).tolist() == [6, 6]
    assert (data.splits == "test").sum() == 4  # stratified: 2 per class


def test_rgb_images_gray_by_default_or_kept(tmp_path, cxr):
    root = tmp_path / "rgb" / "a"
    root.mkdir(parents=True)
    img = (cxr.images[0, 0] * 255).astype(np.uint8)
    Image.fromarray(np.stack([img, img // 2, img // 3], -1)).save(root / "x.png")
    assert load_dataset(root.parent).images.shape[1] == 1
    assert load_dataset(root.parent, color="rgb").images.shape[1] == 3
    with pytest.raises(ConfigError, match="Did you mean 'rgb'"):
        load_dataset(root.parent, color="rgbb")


def test_split_subfolders_are_used(tmp_path, cxr):
    for split in ("train", "test"):
        _class_folder(tmp_path / split, cxr)
        shutil.move(tmp_path / split / "classes", tmp_path / "data" / split)
    data = load_dataset(tmp_path / "data", val_fraction=0)
    assert data.split_names == ["train", "test"] and (data.splits == "test").sum() == 12


@pytest.mark.parametrize("name,shape", [("CT_small.dcm", (1, 128, 128)),
                                        ("MR_small.dcm", (1, 64, 64)),
                                        ("RG1_UNCI.dcm", (1, 1955, 1841)),
                                        ("US1_UNCI.dcm", (1, 480, 640))])
def test_dicom_files(name, shape):
    data = load_dataset(dicom(name))
    assert data.images.shape == (1, *shape)
    assert data.images.min() == 0.0 and data.images.max() == 1.0


def test_dicom_monochrome1_is_inverted():
    import pydicom

    path = dicom("RG1_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = ds.pixel_array.astype(np.float64)
    image = load_dataset(path).images[0, 0]
    # high raw values are dark in MONOCHROME1: the brightest raw pixel reads as black
    assert image.flat[np.argmax(raw)] == pytest.approx(0.0, abs=1e-6)


def test_dicom_rescale_is_applied_before_the_voi_window(tmp_path):
    import pydicom

    ds = pydicom.dcmread(dicom("CT_small.dcm"))
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400  # a soft-tissue window, in Hounsfield units
    ds.save_as(tmp_path / "ct.dcm")
    hu = ds.pixel_array.astype(np.float64) - 1024
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    voi = load_dataset(tmp_path / "ct.dcm", window="voi").images[0, 0]
    assert np.allclose(voi, expected, atol=1e-5)
    minmax = load_dataset(tmp_path / "ct.dcm").images[0, 0]
    assert minmax.min() == 0 and minmax.max() == 1 and not np.allclose(minmax, voi)


def test_dicom_voi_window_of_the_file():
    path = dicom("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600
    voi = load_dataset(path, window="voi").images
    assert not np.allclose(voi, load_dataset(path).images)
    with pytest.raises(ConfigError, match="window"):
        load_dataset(path, window="soft")


def test_dicom_multiframe_and_folder(tmp_path):
    data = load_dataset(dicom("emri_small.dcm"))
    assert len(data) > 1 and data.ids[1].endswith("#1")
    folder = tmp_path / "dcm"
    folder.mkdir()
    shutil.copy(dicom("CT_small.dcm"), folder / "a.dcm")
    shutil.copy(dicom("MR_small.dcm"), folder / "b.dcm")
    with pytest.raises(DataError, match="different sizes.*--size"):
        load_dataset(folder)
    assert load_dataset(folder, size=64).images.shape == (2, 1, 64, 64)


def test_nifti_slices_along_axis():
    volume = nibabel.load(str(NIFTI)).shape
    for axis in (0, 1, 2):
        data = load_dataset(NIFTI, axis=axis)
        assert len(data) == volume[axis]
    assert load_dataset(NIFTI, size=32).images.shape[1:] == (1, 32, 32)


# ----------------------------------------------------------------------------- bad input
def test_missing_path():
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset("/no/such/place")


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path)


def test_non_image_file_among_images(tmp_path, cxr):
    root = _class_folder(tmp_path, cxr)
    (root / "normal" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="notes.txt is not an image file"):
        load_dataset(root)


def test_corrupt_image_file(tmp_path, cxr):
    root = _class_folder(tmp_path, cxr)
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        load_dataset(root)


def test_truncated_dicom(tmp_path):
    data = dicom("CT_small.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.dcm is a truncated or unreadable DICOM"):
        load_dataset(tmp_path / "cut.dcm")


def test_nifti_that_is_not_one(tmp_path):
    (tmp_path / "fake.nii").write_bytes(b"this is not a volume" * 50)
    with pytest.raises(DataError, match="fake.nii is not a readable NIfTI"):
        load_dataset(tmp_path / "fake.nii")


def test_mixed_sizes_without_resize(tmp_path, cxr):
    root = _class_folder(tmp_path, cxr)
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(root / "normal" / "odd.png")
    with pytest.raises(DataError, match="different sizes.*--size"):
        load_dataset(root)
    assert load_dataset(root, size=48).image_shape == (1, 48, 48)


def test_nan_pixels(tmp_path, cxr):
    images = cxr.split("train").images[:10, 0].copy()
    images[3, 5, 5] = np.nan
    np.savez(tmp_path / "nan.npz", train_images=images, train_labels=np.zeros(10, np.int64))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(tmp_path / "nan.npz")


def test_mask_size_not_matching_image(tmp_path):
    src = BUNDLED["chase-demo"].path
    shutil.copy(src / "Image_01L.jpg", tmp_path / "Image_01L.jpg")
    mask = Image.open(src / "Image_01L_1stHO.png").resize((100, 100))
    mask.save(tmp_path / "Image_01L_1stHO.png")
    with pytest.raises(DataError, match="must match their images"):
        load_dataset(tmp_path)


def test_unreadable_npz_and_wrong_layout(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a readable npz"):
        load_dataset(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", pixels=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="MedMNIST"):
        load_dataset(tmp_path / "y.npz")


def test_bundled_data_stays_small():
    total = sum(f.stat().st_size for entry in BUNDLED.values()
                for f in ([entry.path] if entry.path.is_file() else entry.path.iterdir()))
    assert total < 5 * 2**20
    assert all(os.access(entry.path, os.R_OK) for entry in BUNDLED.values())


# ----------------------------------------------------------------------------- DICOM kinds
def test_a_dicomdir_is_named_and_skipped_in_its_folder(tmp_path):
    index = dicom("DICOMDIR")
    with pytest.raises(DataError, match="DICOMDIR is a DICOMDIR index, not an image: pass the "
                                        "folder it indexes"):
        load_dataset(index)
    disc = tmp_path / "disc"
    (disc / "IMAGES").mkdir(parents=True)
    shutil.copy(index, disc / "DICOMDIR")
    shutil.copy(dicom("CT_small.dcm"), disc / "IMAGES" / "IM0001")  # no extension, as on discs
    data = load_dataset(disc)
    assert data.meta["format"] == "dicom" and list(data.ids) == ["IM0001"]
    (disc / "IMAGES" / "IM0001").unlink()
    with pytest.raises(DataError, match="DICOMDIR index but none of the images"):
        load_dataset(disc)


@pytest.mark.parametrize("name,kind", [("test-SR.dcm", "Comprehensive SR"),
                                       ("rtplan.dcm", "RT Plan")])
def test_a_dicom_without_pixel_data_says_so(name, kind):
    with pytest.raises(DataError, match=f"{name} holds no image \\(its SOP class is {kind}"):
        load_dataset(dicom(name))


def test_a_dicom_without_pixel_data_among_images_is_named(tmp_path):
    shutil.copy(dicom("CT_small.dcm"), tmp_path / "a.dcm")
    shutil.copy(dicom("test-SR.dcm"), tmp_path / "b.dcm")
    with pytest.raises(DataError, match="b.dcm holds no image.*remove it"):
        load_dataset(tmp_path)


def test_an_image_dicom_cut_before_its_pixels_is_truncated(tmp_path):
    data = dicom("CT_small.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:data.index(b"\xe0\x7f\x10\x00")])  # (7FE0,0010)
    with pytest.raises(DataError, match="cut.dcm is a CT Image Storage file without its pixel "
                                        "data .*re-export"):
        load_dataset(tmp_path / "cut.dcm")


def test_a_compressed_dicom_without_its_decoder_names_syntax_and_package():
    import pydicom

    from medveil.errors import MedveilError, MissingDependencyError

    path = dicom("MR_small_jpeg_ls_lossless.dcm")
    syntax = pydicom.dcmread(path).file_meta.TransferSyntaxUID
    try:
        from pydicom.pixels.decoders.base import get_decoder

        if get_decoder(syntax).is_available:
            pytest.skip("a JPEG-LS decoder is installed here")
    except ImportError:  # pydicom < 3: the failure itself says so
        pass
    with pytest.raises(MissingDependencyError, match=r"compressed as JPEG-LS Lossless .*"
                                                     r"1\.2\.840\.10008\.1\.2\.4\.80.*"
                                                     r"pip install pyjpegls") as caught:
        load_dataset(path)
    assert isinstance(caught.value, MedveilError) and "truncated" not in str(caught.value)


# ----------------------------------------------------------------------------- layouts
def _splits(tmp_path: Path, cxr, classes: dict[str, tuple[str, ...]]) -> Path:
    """SPLIT/CLASS/images from real chest X-rays, with the given classes per split."""
    root = tmp_path / "data"
    for split, names in classes.items():
        for label, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for i in np.nonzero(cxr.labels == label % 2)[0][:3]:
                Image.fromarray((cxr.images[i, 0] * 255).astype(np.uint8)).save(
                    root / split / name / f"img{i}.png")
    return root


def test_a_folder_beside_the_splits_is_refused(tmp_path, cxr):
    root = _splits(tmp_path, cxr, {"train": ("a", "b"), "test": ("a", "b"),
                                   "extra": ("a", "b")})
    with pytest.raises(DataError, match=r"extra/, which is no split and would be ignored.*"
                                        r"SPLIT/CLASS/images.*train\|training.*"
                                        r"val\|valid\|validation.*test\|testing"):
        load_dataset(root)
    shutil.rmtree(root / "extra")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "stray.png")
    with pytest.raises(DataError, match="stray.png lies beside the split folders"):
        load_dataset(root)
    (root / "stray.png").unlink()
    (root / "README.txt").write_text("a data set's notes are fine")
    assert load_dataset(root).split_names[0] == "train"


def test_a_split_nested_in_its_own_name_is_refused(tmp_path, cxr):
    root = _splits(tmp_path, cxr, {"train": ("train",), "test": ("a",)})
    with pytest.raises(DataError, match=r"train is a split folder inside the train split.*"
                                        r"nested one level too deep"):
        load_dataset(root)


def test_pointing_one_level_above_the_splits_names_the_right_folder(tmp_path, cxr):
    inner = _splits(tmp_path / "outer" / "chest_xray", cxr,
                    {"train": ("a", "b"), "test": ("a", "b")})
    with pytest.raises(DataError, match=f"holds split folders.*point at {inner}"):
        load_dataset(inner.parent)


def test_splits_with_different_classes_are_refused(tmp_path, cxr):
    root = _splits(tmp_path, cxr, {"train": ("a", "b", "c"), "test": ("a", "b")})
    with pytest.raises(DataError, match="different class folders \\(test/ lacks c\\).*an empty "
                                        "one is fine"):
        load_dataset(root)
    (root / "test" / "c").mkdir()  # the fix the message gives
    data = load_dataset(root, val_fraction=0)
    assert data.class_names == ["a", "b", "c"] and (data.splits == "test").sum() == 6


def test_split_folders_without_class_folders_are_refused(tmp_path, cxr):
    root = _splits(tmp_path, cxr, {"train": ("a",), "test": ("a",)})
    for split in ("train", "test"):
        for file in (root / split / "a").iterdir():
            shutil.move(file, root / split / file.name)
        (root / split / "a").rmdir()
    with pytest.raises(DataError, match="no class folders in them; the layout is SPLIT/CLASS"):
        load_dataset(root)


# ----------------------------------------------------------------------------- sizes
def test_the_minimum_sizes_are_what_the_networks_need():
    """16 px is the least the classifier takes, 32 px the least the U-Net takes."""
    import torch

    from medveil.data.readers import MIN_IMAGE_SIZE, MIN_SEGMENTATION_SIZE
    from medveil.nets.classifier import SmallCNN
    from medveil.nets.segmenter import build_unet

    net, unet = SmallCNN(width=4).eval(), build_unet(channels=(4, 4, 4, 4, 4)).eval()
    small, seg = MIN_IMAGE_SIZE, MIN_SEGMENTATION_SIZE
    with torch.no_grad():
        assert net(torch.zeros(1, 1, small, small)).shape == (1, 2)
        assert unet(torch.zeros(1, 1, seg, seg)).shape == (1, 1, seg, seg)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 1, small - 1, small - 1))
        with pytest.raises(ValueError):
            unet(torch.zeros(1, 1, seg // 2, seg // 2))


def test_segmentation_images_below_the_unets_size_are_refused():
    with pytest.raises(DataError, match="segmentation images .* are 16x16 .*32x32.*--size 32"):
        load_dataset("chase-demo", size=16)
    assert load_dataset("chase-demo", size=32).image_shape == (1, 32, 32)


def test_tiny_images_and_sizes_are_refused(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((1, 1), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match=r"are 1x1 \(e.g. 0.png\), smaller than the 16x16.*"
                                        r"--size 16"):
        load_dataset(tmp_path)
    with pytest.raises(ConfigError, match="at least 16 .*got 4$"):
        load_dataset(tmp_path, size=4)
    assert load_dataset(tmp_path, size=16).image_shape == (1, 16, 16)
    np.savez(tmp_path / "small.npz", train_images=np.zeros((4, 8, 8), np.uint8),
             train_labels=np.arange(4) % 2)
    with pytest.raises(DataError, match="are 8x8 .*'train_images'.*--size 16"):
        load_dataset(tmp_path / "small.npz")
    volume = nibabel.Nifti1Image(np.random.default_rng(0).random((32, 32, 4)), np.eye(4))
    nibabel.save(volume, tmp_path / "thin.nii")
    with pytest.raises(DataError, match="are 32x4 .*axis 0 slices.*--size"):
        load_dataset(tmp_path / "thin.nii", axis=0)
    assert len(load_dataset(tmp_path / "thin.nii")) == 4
