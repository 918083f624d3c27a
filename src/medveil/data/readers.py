"""Readers for real medical image formats, all producing one :class:`ImageSet`.

The table :data:`READERS` maps a format name to its reader (MONAI-style), and
:func:`load_dataset` picks one from the path. Every failure the user can cause
(a missing path, a corrupt file, mixed sizes) is a :class:`DataError` that
names the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.errors import ConfigError, DataError, DataNotFoundError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SPLIT_FOLDERS = ("train", "val", "test")
COLOR_MODES = ("gray", "rgb", "green")
WINDOW_MODES = ("minmax", "voi")
MASK_SUFFIXES = ("_1stHO", "_mask", "_seg", "_gt", "_label")
MASK_FOLDERS = ("masks", "mask", "labels", "gt", "annotations")

Size = int | tuple[int, int] | None


def look_up_option(value: str, options: Sequence[str], *, what: str) -> str:
    """Return ``value`` if it is one of ``options``, else a clear error naming them."""
    if value in options:
        return value
    import difflib

    near = difflib.get_close_matches(str(value), list(options), n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    raise ConfigError(f"unknown {what} '{value}'; choose one of: {', '.join(options)}.{hint}")


# ----------------------------------------------------------------------------- helpers
def _to_unit_range(array: np.ndarray) -> np.ndarray:
    """Integer pixels by their type's range (uint8 / 255), other types by min-max."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16 and array.max() > 255:
        return array.astype(np.float32) / 65535.0
    return _minmax(array.astype(np.float32))


def _minmax(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        return array  # ImageSet reports NaNs with the file names
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return (array - low) / (high - low)


def _channels(array: np.ndarray, color: str) -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W) in the requested colour mode."""
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3:
        if array.shape[-1] == 4:  # drop alpha
            array = array[..., :3]
        if array.shape[-1] == 1:
            array = array[..., 0][None]
        elif color == "gray":
            weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
            array = (array.astype(np.float32) @ weights)[None]
        elif color == "green":
            array = array[..., 1][None]
        else:
            array = np.moveaxis(array, -1, 0)
    else:
        raise DataError(f"cannot interpret a pixel array shaped {array.shape}")
    return array.astype(np.float32)


def _resize(batch: np.ndarray, size: tuple[int, int], *, masks: bool = False) -> np.ndarray:
    """Resize (N, C, H, W); anti-aliased bilinear for images, thresholded for masks."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if batch.shape[-2:] == size:
        return batch
    out = []
    for start in range(0, len(batch), 256):
        chunk = torch.from_numpy(np.ascontiguousarray(batch[start:start + 256], dtype=np.float32))
        chunk = F.interpolate(chunk, size=size, mode="bilinear", antialias=True,
                              align_corners=False)
        out.append(chunk.numpy())
    result = np.concatenate(out) if out else batch.astype(np.float32)
    if masks:
        return (result >= 0.5).astype(np.uint8)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def _normalise_size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 4:
        raise ConfigError(f"size must be one int or (height, width) of at least 4, got {size}")
    return int(size[0]), int(size[1])


def _stack(arrays: list[np.ndarray], names: list[str], *, size: tuple[int, int] | None,
           source: Path, masks: bool = False) -> np.ndarray:
    """Stack per-image (C, H, W) arrays, resizing each when a working size is set."""
    if not arrays:
        raise DataError(f"no images found in {source}")
    if size is None:
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            examples = []
            seen: set[tuple[int, ...]] = set()
            for arr, name in zip(arrays, names, strict=True):
                if arr.shape not in seen:
                    seen.add(arr.shape)
                    examples.append(f"{name}: {arr.shape[1]}x{arr.shape[2]}")
                if len(examples) == 2:
                    break
            raise DataError(
                f"images in {source} have different sizes ({', '.join(examples)}); "
                "pass --size H (or size=...) to resize them to one working size"
            )
        return np.stack(arrays)
    return np.concatenate([_resize(a[None], size, masks=masks) for a in arrays])


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataNotFoundError(
            f"{path} does not exist; give a path to an npz file, an image folder, a DICOM file "
            "or folder, a NIfTI file, or a bundled set name (see `medveil data list`)"
        )


# ----------------------------------------------------------------------------- npz
def read_npz(path: Path, *, size: Size = None, **_: Any) -> ImageSet:
    """An npz in the MedMNIST layout: ``{split}_images``, ``{split}_labels`` (and masks)."""
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path} is not a readable npz archive ({exc}); re-download it") from None
    images, labels, masks, splits, ids = [], [], [], [], []
    for split in SPLIT_FOLDERS:
        key = f"{split}_images"
        if key not in keys:
            continue
        try:
            arr = archive[key]
        except Exception as exc:  # noqa: BLE001 - truncated member
            raise DataError(f"{path}: cannot read '{key}' ({exc}); the file may be truncated") \
                from None
        if arr.ndim == 3:
            arr = arr[:, None]
        elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = np.moveaxis(arr, -1, 1)
        elif arr.ndim != 4:
            raise DataError(f"{path}: '{key}' is shaped {arr.shape}; expected (N, H, W[, C])")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        else:
            arr = arr.astype(np.float32)
            if np.isfinite(arr).all() and (arr.min() < 0 or arr.max() > 1):
                arr = _minmax(arr)
        images.append(arr)
        splits.append(np.full(len(arr), split))
        ids.append(np.array([f"{split}/{i}" for i in range(len(arr))]))
        if f"{split}_labels" in keys:
            lab = archive[f"{split}_labels"]
            if lab.ndim == 2 and lab.shape[1] != 1:
                raise DataError(
                    f"{path}: '{split}_labels' is multi-label {lab.shape}; "
                    "medveil classifies one label per image"
                )
            lab = lab.reshape(-1)
            if len(lab) != len(arr):
                raise DataError(f"{path}: {len(lab)} labels for {len(arr)} {split} images")
            labels.append(lab.astype(np.int64))
        if f"{split}_masks" in keys:
            m = archive[f"{split}_masks"]
            masks.append((m.reshape(len(arr), 1, *m.shape[-2:]) > 0).astype(np.uint8))
    if not images:
        raise DataError(
            f"{path} has no 'train_images' / 'test_images' arrays (found: "
            f"{', '.join(sorted(keys)) or 'nothing'}); expected the MedMNIST npz layout"
        )
    if labels and len(labels) != len(images):
        raise DataError(f"{path}: some splits have labels and some do not")
    all_images = np.concatenate(images)
    all_masks = np.concatenate(masks) if masks else None
    norm = _normalise_size(size)
    if norm is not None:
        all_images = _resize(all_images, norm)
        if all_masks is not None:
            all_masks = _resize(all_masks.astype(np.float32), norm, masks=True)
    return ImageSet(
        images=all_images, splits=np.concatenate(splits), ids=np.concatenate(ids),
        labels=np.concatenate(labels) if labels else None, masks=all_masks,
        meta={"reader": "npz"},
    )


# ----------------------------------------------------------------------------- images
def _read_picture(path: Path, color: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P" or img.mode == "LA" or img.mode == "PA":
                img = img.convert("RGBA" if "A" in img.mode else "RGB")
            if img.mode == "CMYK" or img.mode == "YCbCr":
                img = img.convert("RGB")
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path} is not a readable image ({type(exc).__name__}); remove it from the folder "
            "or replace it with a valid PNG/JPEG/TIFF/GIF"
        ) from None
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    unit = _to_unit_range(array)
    return _channels(unit, color)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"mask {path} is not a readable image ({type(exc).__name__})") from None
    peak = float(array.max())
    return (array > (0.5 * peak if peak > 0 else 0)).astype(np.uint8)[None]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _reject_non_images(files: list[Path], folder: Path) -> None:
    for path in files:
        if not _is_image_file(path):
            raise DataError(
                f"{path} is not an image file (expected {', '.join(IMAGE_EXTENSIONS)}); "
                f"move it out of {folder}"
            )


def _find_mask_pairs(folder: Path, mask_suffix: str | None) -> list[tuple[Path, Path]] | None:
    """Image/mask pairs by a naming rule, or None when the folder is not a segmentation set."""
    # Rule 1: sibling folders images/ + masks/ (same stem).
    for mask_dir_name in MASK_FOLDERS:
        mask_dir, image_dir = folder / mask_dir_name, folder / "images"
        if mask_dir.is_dir() and image_dir.is_dir():
            images = _files(image_dir)
            _reject_non_images(images, image_dir)
            masks = {p.stem: p for p in _files(mask_dir)}
            pairs = []
            for img in images:
                stem = img.stem
                mask = masks.get(stem) or masks.get(f"{stem}{mask_suffix or '_mask'}")
                if mask is None:
                    raise DataError(f"image {img} has no mask in {mask_dir} (same file stem)")
                pairs.append((img, mask))
            return pairs
    # Rule 2: X.ext beside X{suffix}.ext (CHASE_DB1: Image_01L.jpg + Image_01L_1stHO.png).
    files = _files(folder)
    stems = {p.stem: p for p in files}
    suffixes = (mask_suffix,) if mask_suffix else MASK_SUFFIXES
    for suffix in suffixes:
        masks = {p.stem[: -len(suffix)]: p for p in files if p.stem.endswith(suffix)}
        if not masks:
            continue
        _reject_non_images(files, folder)
        pairs = []
        for stem, mask in sorted(masks.items()):
            image = stems.get(stem)
            if image is None:
                raise DataError(f"mask {mask} has no image named {stem}.* in {folder}")
            pairs.append((image, mask))
        return pairs
    return None


def read_folder(path: Path, *, size: Size = None, color: str = "gray",
                mask_suffix: str | None = None, **_: Any) -> ImageSet:
    """Class-per-subfolder images (optionally under train/val/test), or image/mask pairs."""
    look_up_option(color, COLOR_MODES, what="colour mode")
    norm = _normalise_size(size)
    pairs = _find_mask_pairs(path, mask_suffix)
    if pairs is not None:
        images = [_read_picture(img, color) for img, _ in pairs]
        masks = [_read_mask(mask) for _, mask in pairs]
        names = [img.name for img, _ in pairs]
        for (img, mask), im, mk in zip(pairs, images, masks, strict=True):
            if im.shape[1:] != mk.shape[1:]:
                raise DataError(
                    f"mask {mask.name} is {mk.shape[1]}x{mk.shape[2]} but its image {img.name} is "
                    f"{im.shape[1]}x{im.shape[2]}; masks must match their images' size"
                )
        return ImageSet(
            images=_stack(images, names, size=norm, source=path),
            masks=_stack(masks, names, size=norm, source=path, masks=True),
            splits=np.full(len(pairs), "train"), ids=np.array([img.stem for img, _ in pairs]),
            meta={"reader": "folder", "layout": "image/mask pairs"},
        )
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_FOLDERS]
    layout = {d.name.lower(): d for d in split_dirs} if split_dirs else {"train": path}
    class_names = sorted({c.name for root in layout.values() for c in root.iterdir()
                          if c.is_dir() and not c.name.startswith(".")})
    if not class_names:
        loose = _files(path)
        if not loose:
            raise DataError(f"{path} is empty; put images in one subfolder per class")
        _reject_non_images(loose, path)
        images = [_read_picture(p, color) for p in loose]
        return ImageSet(images=_stack(images, [p.name for p in loose], size=norm, source=path),
                        splits=np.full(len(loose), "train"), ids=np.array([p.stem for p in loose]),
                        meta={"reader": "folder", "layout": "unlabelled images"})
    images, labels, splits, ids, names = [], [], [], [], []
    for split, root in layout.items():
        for label, cls in enumerate(class_names):
            folder = root / cls
            if not folder.is_dir():
                continue
            files = _files(folder)
            _reject_non_images(files, folder)
            for file in files:
                images.append(_read_picture(file, color))
                labels.append(label)
                splits.append(split)
                ids.append(f"{split}/{cls}/{file.stem}" if split_dirs else f"{cls}/{file.stem}")
                names.append(str(file.relative_to(path)))
    if not images:
        raise DataError(f"{path} has class folders ({', '.join(class_names)}) but no images")
    return ImageSet(images=_stack(images, names, size=norm, source=path), labels=np.array(labels),
                    splits=np.array(splits), ids=np.array(ids), class_names=class_names,
                    meta={"reader": "folder", "layout": "class per subfolder"})


# ----------------------------------------------------------------------------- DICOM
def _dicom_frames(path: Path, *, color: str, window: str) -> list[np.ndarray]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except InvalidDicomError:
        raise DataError(f"{path} is not a DICOM file; remove it or point at the DICOM files only") \
            from None
    except Exception as exc:  # noqa: BLE001 - truncated files fail in many ways
        raise DataError(
            f"{path} is a truncated or unreadable DICOM file ({type(exc).__name__}: {exc}); "
            "re-export it from the PACS"
        ) from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    frames_n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames_n == 1:
        pixels = pixels[None]
    out = []
    for frame in pixels:
        if samples == 1:
            values = apply_modality_lut(frame, ds).astype(np.float64)
            if window == "voi" and "WindowCenter" in ds and "WindowWidth" in ds:
                unit = _voi_window(values, ds)
            else:
                unit = _minmax(values)
            if photometric == "MONOCHROME1":
                unit = 1.0 - unit
            out.append(unit[None].astype(np.float32))
        else:
            out.append(_channels(_to_unit_range(np.asarray(frame)), color))
    return out


def _first(value: Any) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _voi_window(values: np.ndarray, ds: Any) -> np.ndarray:
    """The file's linear VOI window (DICOM PS3.3 C.11.2.1.2), in modality units, to [0, 1]."""
    center, width = _first(ds.WindowCenter), max(_first(ds.WindowWidth), 1.0)
    scaled = (values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _looks_like_dicom(path: Path) -> bool:
    if path.name.lower().endswith(DICOM_EXTENSIONS):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
        return head[128:132] == b"DICM"
    except OSError:
        return False


def read_dicom(path: Path, *, size: Size = None, color: str = "gray", window: str = "minmax",
               **_: Any) -> ImageSet:
    """A DICOM file or a folder of them; each frame becomes one image."""
    look_up_option(window, WINDOW_MODES, what="window")
    look_up_option(color, COLOR_MODES, what="colour mode")
    files = [path] if path.is_file() else [p for p in sorted(path.rglob("*"))
                                           if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise DataError(f"{path} is empty; it should hold DICOM files")
    arrays, ids = [], []
    for file in files:
        frames = _dicom_frames(file, color=color, window=window)
        for index, frame in enumerate(frames):
            arrays.append(frame)
            ids.append(file.stem if len(frames) == 1 else f"{file.stem}#{index}")
    images = _stack(arrays, ids, size=_normalise_size(size), source=path)
    return ImageSet(images=images, splits=np.full(len(images), "train"), ids=np.array(ids),
                    meta={"reader": "dicom", "window": window})


# ----------------------------------------------------------------------------- NIfTI
def read_nifti(path: Path, *, size: Size = None, axis: int = 2, **_: Any) -> ImageSet:
    """2D slices of a 3D (or 4D) NIfTI volume along ``axis``, min-max over the volume."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        volume = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except (ImageFileError, OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable NIfTI file ({type(exc).__name__}); check that it is a "
            ".nii / .nii.gz volume and not truncated"
        ) from None
    if volume.ndim == 2:
        volume = volume[..., None]
    if volume.ndim == 4:
        volumes = [volume[..., t] for t in range(volume.shape[3])]
    elif volume.ndim == 3:
        volumes = [volume]
    else:
        raise DataError(f"{path} has {volume.ndim} dimensions; medveil reads 2D to 4D NIfTI")
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis must be 0, 1 or 2 for a 3D volume, got {axis}")
    images, ids = [], []
    for t, vol in enumerate(volumes):
        unit = _minmax(vol)
        slices = np.moveaxis(unit, axis, 0)
        images.append(slices[:, None])
        ids.extend(f"t{t}/slice{z}" if len(volumes) > 1 else f"slice{z}"
                   for z in range(len(slices)))
    stack = np.concatenate(images).astype(np.float32)
    norm = _normalise_size(size)
    if norm is not None:
        stack = _resize(stack, norm)
    return ImageSet(images=stack, splits=np.full(len(stack), "train"), ids=np.array(ids),
                    meta={"reader": "nifti", "axis": axis})


READERS: dict[str, Callable[..., ImageSet]] = {
    "npz": read_npz,
    "folder": read_folder,
    "dicom": read_dicom,
    "nifti": read_nifti,
}


def detect_format(path: Path) -> str:
    """Which reader handles ``path``, from its name, its bytes and its contents."""
    _check_exists(path)
    name = path.name.lower()
    if path.is_file():
        if name.endswith(".npz"):
            return "npz"
        if name.endswith(NIFTI_EXTENSIONS):
            return "nifti"
        if _looks_like_dicom(path):
            return "dicom"
        raise DataError(
            f"{path} is not a format medveil reads (npz, DICOM, NIfTI); for single pictures "
            "point at their folder"
        )
    entries = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if not entries:
        raise DataError(f"{path} is empty; put images in it (one subfolder per class)")
    if all(_looks_like_dicom(p) for p in entries):
        return "dicom"
    if any(_looks_like_dicom(p) for p in entries) and not any(_is_image_file(p) for p in entries):
        return "dicom"  # the reader names the non-DICOM file
    return "folder"


# ----------------------------------------------------------------------------- splits
def _carve(imageset: ImageSet, *, source: str, target: str, fraction: float, seed: int,
           ordered: bool) -> ImageSet:
    """Move a fraction of ``source`` rows to ``target``, deterministically.

    Classification is stratified by label from a seeded permutation; ``ordered``
    takes the last rows in sorted id order instead (whole subjects stay together
    where ids sort by subject, as in CHASE_DB1).
    """
    idx = np.nonzero(imageset.splits == source)[0]
    if fraction <= 0 or len(idx) < 2:
        return imageset
    splits = imageset.splits.copy()
    if ordered:
        order = idx[np.argsort(imageset.ids[idx], kind="stable")]
        take = max(1, int(round(fraction * len(order))))
        splits[order[len(order) - take:]] = target
    else:
        rng = np.random.default_rng(seed)
        groups = [idx] if imageset.labels is None else \
            [idx[imageset.labels[idx] == c] for c in np.unique(imageset.labels[idx])]
        for group in groups:
            take = int(round(fraction * len(group)))
            if take and take < len(group):
                splits[rng.permutation(group)[:take]] = target
    out = imageset.subset(np.arange(len(imageset)))
    out.splits = splits
    return out


def load_dataset(source: str | os.PathLike[str], *, size: Size = None, color: str = "gray",
                 window: str = "minmax", axis: int = 2, mask_suffix: str | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.3,
                 seed: int = 0) -> ImageSet:
    """Read a bundled set name or a path into an :class:`ImageSet`.

    Args:
        source: a bundled set name (``medveil data list``) or a path.
        size: working size; images are resized to it (required for mixed sizes).
        color: "gray" (luma), "rgb" (kept) or "green" (the vessel-contrast channel).
        window: DICOM intensity window: "minmax" per image or "voi" (the file's window).
        axis: NIfTI slicing axis.
        mask_suffix: segmentation naming rule (``X.jpg`` + ``X{suffix}.png``); auto when None.
        val_fraction: share of train carved into "val" when the source has none.
        test_fraction: share carved into "test" for labelled sources without a test split.
        seed: makes the carving reproducible.
    """
    from medveil.data.bundled import resolve_bundled

    bundled = resolve_bundled(str(source))
    options: dict[str, Any] = {}
    if bundled is not None:
        path, defaults = bundled
        options.update(defaults)
        name = str(source)
    else:
        path = Path(source).expanduser()
        name = path.name
    options.setdefault("size", size)
    if size is not None:
        options["size"] = size
    options.setdefault("color", color)
    options.setdefault("mask_suffix", mask_suffix)
    fmt = detect_format(path)
    imageset = READERS[fmt](path, window=window, axis=axis, **options)
    if imageset.task != "none":
        if "test" not in imageset.split_names:
            imageset = _carve(imageset, source="train", target="test", fraction=test_fraction,
                              seed=seed, ordered=imageset.task == "segmentation")
        if "val" not in imageset.split_names:
            imageset = _carve(imageset, source="train", target="val", fraction=val_fraction,
                              seed=seed + 1, ordered=False)
    imageset.meta.update({"name": name, "source": str(path), "format": fmt,
                          "options": {k: v for k, v in options.items() if v is not None},
                          "seed": seed})
    return imageset
