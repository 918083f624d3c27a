"""Readers for real medical image formats, all producing one :class:`ImageSet`.

The table :data:`READERS` maps a format name to its reader (MONAI-style), and
:func:`load_dataset` picks one from the path. Every failure the user can cause
(a missing path, a corrupt file, mixed sizes) is a :class:`DataError` that
names the file and the fix.

Bit depth (pictures): integer pixels are divided by the largest value the file's
significant bits can hold, never stretched per image. For a PNG the significant bits
are its ``sBIT`` chunk's when it has one and every pixel fits in them (raw 12-bit
data in a 16-bit file, as medical exports write it: divided by 4095); otherwise the
depth its header declares (a 16-bit PNG without ``sBIT``, or one whose values are
scaled up to the full 16-bit range as the PNG specification asks: divided by 65535).
A 16-bit grey PNG without ``sBIT`` whose values all fit in 12 bits is read as 16-bit
(dark, at most 0.0625) with a warning saying so. A 16-bit colour PNG is read by its
top 8 bits (all Pillow gives), and refused when its sBIT says those are empty. Other
16-bit pictures (TIFF) are divided by 65535, 8-bit ones by 255; 32-bit and float
pictures are min-max scaled.

Bit depth (DICOM): grey images go through the modality LUT (RescaleSlope /
RescaleIntercept, signed pixels per PixelRepresentation and BitsStored) and then the
window (``minmax`` per image, or the file's ``voi`` window); colour images are divided
by ``2**BitsStored - 1`` (not BitsAllocated); PALETTE COLOR images go through their
colour LUT first and are divided by the LUT's range.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medveil.data.imageset import ImageSet
from medveil.data.sizes import MIN_IMAGE_SIZE, MIN_SEGMENTATION_SIZE
from medveil.errors import ConfigError, DataError, DataNotFoundError, MissingDependencyError
from medveil.seeds import derive_seed

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SPLIT_FOLDERS = ("train", "val", "test")
#: Split folder names as public data sets spell them.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
IMAGE_FOLDERS = ("images", "image", "imgs")
COLOR_MODES = ("gray", "rgb", "green")
WINDOW_MODES = ("minmax", "voi")
MASK_SUFFIXES = ("_1stHO", "_mask", "_seg", "_gt", "_label")


def _layout_help() -> str:
    """The split-folder layout, in words, from :data:`SPLIT_ALIASES`."""
    names: dict[str, list[str]] = {}
    for alias, split in SPLIT_ALIASES.items():
        names.setdefault(split, []).append(alias)
    return ("the layout is SPLIT/CLASS/images with SPLIT one of "
            + ", ".join("|".join(aliases) for aliases in names.values()))

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
def _to_unit_range(array: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Integer pixels divided by ``2**bits - 1`` (the file's significant bits, where the
    caller knows them), else by their type's range (8 and 16 bits); other types min-max."""
    if bits is not None and array.dtype.kind in "ui":
        return np.clip(array.astype(np.float32) / float(2**bits - 1), 0.0, 1.0)
    if array.dtype.kind == "u" and array.dtype.itemsize in (1, 2):
        return array.astype(np.float32) / float(2 ** (8 * array.dtype.itemsize) - 1)
    return _minmax(array.astype(np.float32))


def _minmax(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        return array  # ImageSet reports NaNs with the file names
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return (array - low) / (high - low)


def _channels(array: np.ndarray, color: str, where: object = "the image") -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W) in the requested colour mode; a colour mode a gray
    image cannot give is refused, never ignored."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        if color != "gray":
            raise ConfigError(f"{where} is a single-channel (gray) image; --color {color} "
                              "needs colour images: use --color gray")
        array = array[None]
    elif array.ndim == 3:
        if array.shape[-1] == 4:  # drop alpha
            array = array[..., :3]
        if array.shape[-1] != 3:
            raise DataError(f"{where} has {array.shape[-1]} channels; medveil reads gray or RGB")
        if color == "gray":
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
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or min(pair) < MIN_IMAGE_SIZE:
        raise ConfigError(f"size must be one int or (height, width) of at least "
                          f"{MIN_IMAGE_SIZE} (medveil's networks halve an image four times), "
                          f"got {size}")
    return int(pair[0]), int(pair[1])


def _check_min_size(shape: tuple[int, ...], source: object, example: str, *,
                    minimum: int = MIN_IMAGE_SIZE, what: str = "images") -> None:
    """Images the networks can take: both sides at least ``minimum``."""
    height, width = int(shape[-2]), int(shape[-1])
    if min(height, width) < minimum:
        raise DataError(
            f"{what} in {source} are {height}x{width} (e.g. {example}), smaller than the "
            f"{minimum}x{minimum} medveil's networks need; pass --size {minimum} or more "
            "to resize them (or use larger images)")


def _check_segmentation_size(images: np.ndarray, source: object, example: str) -> None:
    _check_min_size(images.shape, source, example, minimum=MIN_SEGMENTATION_SIZE,
                    what="segmentation images (the U-Net's input)")


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
        _check_min_size(arrays[0].shape, source, names[0])
        return np.stack(arrays)
    return np.concatenate([_resize(a[None], size, masks=masks) for a in arrays])


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataNotFoundError(
            f"{path} does not exist; give a path to an npz file, an image folder, a DICOM file "
            "or folder, a NIfTI file, or a bundled set name (see `medveil data list`)"
        )


# ----------------------------------------------------------------------------- labels
#: More classes than this is a mistake (ids or measurements read as labels), not a task.
MAX_CLASSES = 1000


def check_labels(labels: np.ndarray, *, where: str, count: int) -> np.ndarray:
    """Class labels as int64: integers (or whole-valued floats), non-negative, fewer than
    :data:`MAX_CLASSES`, exactly one per image; anything else is a clear error."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DataError(f"{where} is multi-label {labels.shape}; medveil classifies one label "
                        "per image")
    labels = labels.reshape(-1) if labels.ndim else labels.reshape(1)
    if len(labels) != count:
        raise DataError(f"{where} has {len(labels)} labels for {count} images; give one label "
                        "per image")
    if labels.dtype.kind not in "iub" and labels.dtype.kind != "f":
        raise DataError(f"{where} holds {labels.dtype} values, not integer class labels; "
                        "encode the classes as 0, 1, 2, ...")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not np.all(labels == np.round(labels)):
            raise DataError(f"{where} holds non-integer labels (e.g. "
                            f"{labels[labels != np.round(labels)][:1]}); class labels must be "
                            "whole numbers 0, 1, 2, ...")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where} holds negative labels ({labels.min()}); class labels must be "
                        "0, 1, 2, ...")
    if len(labels) and labels.max() >= MAX_CLASSES:
        raise DataError(f"{where} holds label {labels.max()}, more than {MAX_CLASSES} classes; "
                        "these are not class labels (ids or measurements?)")
    return labels.astype(np.int64)


def _npz_channels(arr: np.ndarray, color: str, *, where: str) -> np.ndarray:
    """(N, C, H, W) pixels in the requested colour mode; a mode the pixels cannot give is
    refused, never ignored."""
    channels = arr.shape[1]
    if channels == 1:
        if color != "gray":
            raise ConfigError(f"{where} holds single-channel (gray) images; --color {color} "
                              "needs colour images: use --color gray")
        return arr
    if channels != 3:
        raise DataError(f"{where} has {channels} channels; medveil reads 1 (gray) or 3 (RGB)")
    if color == "gray":
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.einsum("nchw,c->nhw", arr, weights)[:, None].astype(np.float32)
    if color == "green":
        return arr[:, 1:2]
    return arr


# ----------------------------------------------------------------------------- npz
def read_npz(path: Path, *, size: Size = None, color: str = "gray", **_: Any) -> ImageSet:
    """An npz in the MedMNIST layout: ``{split}_images``, ``{split}_labels`` (and masks).

    A split without labels (or masks) while others have them is read with its truth
    ``withheld`` (a key holder's recovered set: the test truth stays with the owner).
    """
    from medveil.data.imageset import from_splits

    look_up_option(color, COLOR_MODES, what="colour mode")
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path} is not a readable npz archive ({type(exc).__name__}); "
                        "re-download it") from None

    def member(key: str) -> np.ndarray:
        try:
            return archive[key]
        except Exception as exc:  # noqa: BLE001 - truncated member, pickled objects
            raise DataError(f"{path}: cannot read '{key}' ({type(exc).__name__}); the file "
                            "may be truncated or hold pickled objects") from None

    parts = []
    for split in SPLIT_FOLDERS:
        key = f"{split}_images"
        if key not in keys:
            continue
        arr = member(key)
        if arr.ndim == 3:
            arr = arr[:, None]
        elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = np.moveaxis(arr, -1, 1)
        elif arr.ndim != 4:
            raise DataError(f"{path}: '{key}' is shaped {arr.shape}; expected (N, H, W[, C])")
        if arr.dtype.kind not in "uif" or arr.dtype.kind == "b":
            raise DataError(f"{path}: '{key}' holds {arr.dtype} values, not pixels")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        else:
            arr = arr.astype(np.float32)
            if not np.isfinite(arr).all():
                bad = np.unique(np.nonzero(~np.isfinite(arr))[0])[:3]
                raise DataError(f"{path}: '{key}' has NaN or infinite pixels (images "
                                f"{', '.join(map(str, bad))}); clean or drop those images")
            if arr.min() < 0 or arr.max() > 1:
                arr = _minmax(arr)
        arr = _npz_channels(arr, color, where=f"{path}: '{key}'")
        labels = masks = None
        if f"{split}_labels" in keys:
            labels = check_labels(member(f"{split}_labels"), where=f"{path}: '{split}_labels'",
                                  count=len(arr))
        if f"{split}_masks" in keys:
            m = member(f"{split}_masks")
            if m.ndim not in (3, 4) or len(m) != len(arr) or m.shape[-2:] != arr.shape[-2:] \
                    or (m.ndim == 4 and m.shape[1] != 1):
                raise DataError(f"{path}: '{split}_masks' is shaped {m.shape} for {len(arr)} "
                                f"images of {arr.shape[-2]}x{arr.shape[-1]}; give one mask "
                                "per image, of its size")
            masks = (m.reshape(len(arr), 1, *m.shape[-2:]) > 0).astype(np.uint8)
        parts.append((split, arr, labels, masks))
    if not parts:
        raise DataError(
            f"{path} has no 'train_images' / 'test_images' arrays (found: "
            f"{', '.join(sorted(keys)[:8]) or 'nothing'}); expected the MedMNIST npz layout"
        )
    shapes = {p[1].shape[1:] for p in parts}
    if len(shapes) > 1 and size is None:
        raise DataError(f"{path}: the splits' images differ in shape ({sorted(shapes)}); pass "
                        "--size H to resize them to one working size")
    norm = _normalise_size(size)
    if norm is None:
        _check_min_size(parts[0][1].shape, path, f"'{parts[0][0]}_images'")
    if norm is not None:
        parts = [(s, _resize(i, norm), lab,
                  None if m is None else _resize(m.astype(np.float32), norm, masks=True))
                 for s, i, lab, m in parts]
    if any(p[3] is not None for p in parts):
        _check_segmentation_size(parts[0][1], path, f"'{parts[0][0]}_images'")
    truth = [p for p in parts if p[2] is not None or p[3] is not None]
    if truth and "train" in {p[0] for p in parts} and all(p[0] != "train" for p in truth):
        raise DataError(f"{path}: the train split has no labels or masks while others do")
    return from_splits(parts, meta={"reader": "npz"})


# ----------------------------------------------------------------------------- images
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Colour channels a PNG colour type's sBIT chunk gives before any alpha byte.
_PNG_SBIT_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}


def _png_header(path: Path) -> tuple[int, int, bytes | None] | None:
    """A PNG's declared bit depth, colour type and ``sBIT`` chunk (None when it has none),
    from the chunks before its image data; None when it cannot be read as a PNG."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != _PNG_SIGNATURE:
                return None
            header: tuple[int, int] | None = None
            sbit = None
            for _ in range(10_000):  # a PNG's chunks before IDAT are few
                head = handle.read(8)
                if len(head) < 8 or head[4:] in (b"IDAT", b"IEND"):
                    break
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if kind in (b"IHDR", b"sBIT") and length <= 64:
                    data = handle.read(length)
                    if kind == b"IHDR" and len(data) >= 10:
                        header = (data[8], data[9])
                    elif kind == b"sBIT":
                        sbit = data
                else:
                    handle.seek(length, os.SEEK_CUR)
                handle.seek(4, os.SEEK_CUR)  # the chunk's CRC
    except OSError:
        return None
    return None if header is None else (header[0], header[1], sbit)


def _png_bits(path: Path, array: np.ndarray, dark: list[tuple[Path, int]] | None) -> int | None:
    """The bits a PNG's pixels (as Pillow gives them) are divided by (the module's rule).

    ``sBIT`` is honoured when every pixel fits in it (raw values in a wider file); when
    pixels exceed it they were scaled up to the declared depth, as the PNG specification
    asks, and the declared depth applies. A 16-bit grey PNG without ``sBIT`` whose pixels
    all fit in 12 bits is added to ``dark`` (it reads dark; the caller warns).
    """
    header = _png_header(path)
    if header is None:
        return None
    depth, colour_type, sbit = header
    channels = _PNG_SBIT_CHANNELS.get(colour_type, 1)
    significant = max(sbit[:channels]) if sbit and len(sbit) >= channels else None
    colour = array[..., :-1] if array.ndim == 3 and array.shape[-1] in (2, 4) else array
    peak = int(colour.max()) if colour.size else 0  # alpha has no say
    if depth == 16 and colour_type != 0:
        # Pillow keeps the top byte of 16-bit colour (and grey + alpha): 8-bit values
        if significant is not None and 1 <= significant < 16 \
                and peak <= (2**significant - 1) >> 8:
            raise DataError(
                f"{path} is a 16-bit colour PNG holding {significant}-bit values (its sBIT "
                "chunk); medveil reads 16-bit colour PNGs by their top 8 bits, which are "
                "empty here: re-export it as 8-bit RGB or as 16-bit grey")
        return 8
    if depth < 8 and colour_type in (0, 4):
        return 8  # Pillow scales 1-, 2- and 4-bit grey to 0..255
    container = 16 if depth == 16 else 8
    if significant is not None and 1 <= significant < container and peak < 2**significant:
        return significant
    if container == 16 and significant is None and peak < 2**12 and dark is not None:
        dark.append((path, peak))
    return container


def _warn_dark(dark: list[tuple[Path, int]], source: Path) -> None:
    """One warning for the 16-bit PNGs without sBIT whose values fit in 12 bits or fewer."""
    if not dark:
        return
    peak = max(value for _, value in dark)
    bits = next(b for b in (8, 10, 12) if peak < 2**b)
    warnings.warn(
        f"{len(dark)} 16-bit PNG(s) in {source} (e.g. {dark[0][0].name}) have no sBIT chunk "
        f"and values that fit in {bits} bits: read as 16-bit they come out dark (at most "
        f"{peak / 65535:.3f}); if they hold {bits}-bit data, save them with an sBIT chunk "
        f"of {bits} (PNG significant bits) and medveil divides by {2**bits - 1}",
        UserWarning, stacklevel=3)


def _read_picture(path: Path, color: str,
                  dark: list[tuple[Path, int]] | None = None) -> np.ndarray:
    """One picture as (C, H, W) in [0, 1], scaled by its bit depth (the module's rule)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            is_png = img.format == "PNG"
            if img.mode == "P" or img.mode == "LA" or img.mode == "PA":
                img = img.convert("RGBA" if "A" in img.mode else "RGB")
            if img.mode == "CMYK" or img.mode == "YCbCr":
                img = img.convert("RGB")
            array = np.asarray(img)
    except Exception as exc:  # noqa: BLE001 - a corrupt file fails in many ways inside PIL
        raise DataError(
            f"{path} is not a readable image ({type(exc).__name__}); remove it from the folder "
            "or replace it with a valid PNG/JPEG/TIFF/GIF"
        ) from None
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    bits = _png_bits(path, array, dark) if is_png else None
    unit = _to_unit_range(array, bits)
    return _channels(unit, color, path)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L"), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - a corrupt file fails in many ways inside PIL
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


def _pair_key(stem: str) -> str | None:
    """The subject number a stem starts with (DRIVE: ``21_training`` / ``21_manual1``)."""
    match = re.match(r"^\D*?(\d+)", stem)
    return match.group(1) if match else None


def _pair(images: list[Path], masks: list[Path]) -> list[tuple[Path, Path]] | None:
    """Each image's mask: the same stem, the stem plus a suffix, or the same leading subject
    number; None unless every image finds exactly one."""
    by_stem = {m.stem: m for m in masks}
    pairs = []
    for image in images:
        mask = by_stem.get(image.stem)
        if mask is None:
            longer = [m for m in masks if m.stem.startswith(image.stem)]
            if len(longer) == 1:
                mask = longer[0]
        if mask is None:
            key = _pair_key(image.stem)
            same = [m for m in masks if key is not None and _pair_key(m.stem) == key]
            if len(same) == 1 and sum(_pair_key(i.stem) == key for i in images) == 1:
                mask = same[0]
        if mask is None:
            return None
        pairs.append((image, mask))
    return pairs if pairs and len({m for _, m in pairs}) == len(pairs) else None


def _image_folder(folder: Path) -> Path | None:
    for name in IMAGE_FOLDERS:
        if (folder / name).is_dir():
            return folder / name
    return None


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _glob_pairs(folder: Path, pattern: str) -> list[tuple[Path, Path]]:
    """Masks are the files matching ``pattern``; each image is the file whose stem the
    mask's stem starts with (longest such stem)."""
    files = _files(folder)
    masks = [p for p in files if fnmatch.fnmatch(p.name, pattern)]
    if not masks:
        raise DataError(f"--masks {pattern!r} matches no file in {folder}; give the folder "
                        "name of the annotations or a pattern such as '*_1stHO.png'")
    mask_set = set(masks)
    others = [p for p in files if p not in mask_set]
    pairs = []
    for mask in masks:
        heads = [p for p in others if mask.stem.startswith(p.stem) and p.stem != mask.stem]
        if not heads:
            raise DataError(f"mask {mask} has no image whose name it extends in {folder}")
        pairs.append((max(heads, key=lambda p: len(p.stem)), mask))
    _reject_non_images([p for pair in pairs for p in pair], folder)
    return sorted(pairs)


def _find_mask_pairs(folder: Path, mask_suffix: str | None, masks: str | None = None
                     ) -> list[tuple[Path, Path]] | None:
    """Image/mask pairs of a segmentation folder, or None when ``folder`` is not one.

    Layouts: ``images/`` beside an annotation folder (the same stem, stem + suffix, or the
    same subject number), or ``X.ext`` beside ``X{suffix}.ext`` (CHASE_DB1). ``masks``
    names the annotation folder or a file pattern; where several candidates fit and
    none is named, the error lists them: medveil never guesses a training target.
    """
    if masks is not None and any(c in masks for c in "*?["):
        return _glob_pairs(folder, masks)
    image_dir = _image_folder(folder)
    if image_dir is not None:
        images = _files(image_dir)
        _reject_non_images(images, image_dir)
        others = [d for d in _subfolders(folder) if d != image_dir]
        if masks is not None:
            chosen = folder / masks
            if not chosen.is_dir():
                raise DataError(f"--masks {masks!r}: {folder} has no such folder (it has "
                                f"{', '.join(d.name for d in others) or 'none'})")
            pairs = _pair(images, _files(chosen))
            if pairs is None:
                raise DataError(f"--masks {masks!r}: the files in {chosen} do not pair one to "
                                f"one with the images in {image_dir} (same name or subject "
                                "number)")
            return pairs
        candidates = {d.name: pairs for d in others
                      if (pairs := _pair(images, _files(d))) is not None}
        if len(candidates) == 1:
            return next(iter(candidates.values()))
        if len(candidates) > 1:
            raise DataError(f"{folder} has several folders that could be the segmentation "
                            f"target ({', '.join(sorted(candidates))}); name the annotations "
                            f"with --masks NAME (e.g. --masks {sorted(candidates)[-1]})")
        if others:
            raise DataError(f"{folder} looks like an image/mask layout ({image_dir.name}/ "
                            f"beside {', '.join(d.name for d in others)}/) but no folder pairs "
                            "with the images; name the annotations with --masks NAME")
        return None
    if masks is not None:
        raise DataError(f"--masks {masks!r}: {folder} has no images/ folder; give a file "
                        "pattern such as '*_1stHO.png' for images and masks side by side")
    files = _files(folder)
    stems = {p.stem: p for p in files}
    suffixes = (mask_suffix,) if mask_suffix else MASK_SUFFIXES
    found = {suffix: {p.stem[: -len(suffix)]: p for p in files
                      if p.stem.endswith(suffix) and p.stem[: -len(suffix)] in stems}
             for suffix in suffixes}
    found = {k: v for k, v in found.items() if v}
    if len(found) > 1:
        raise DataError(f"{folder} has masks named by several rules ({', '.join(found)}); "
                        "name the annotations with --masks, e.g. --masks "
                        f"'*{next(iter(found))}.png'")
    if not found:
        return None
    _reject_non_images(files, folder)
    return [(stems[stem], mask) for stem, mask in sorted(next(iter(found.values())).items())]


def _read_pairs(pairs: list[tuple[Path, Path]], color: str,
                dark: list[tuple[Path, int]] | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    images = [_read_picture(img, color, dark) for img, _ in pairs]
    masks = [_read_mask(mask) for _, mask in pairs]
    for (img, mask), im, mk in zip(pairs, images, masks, strict=True):
        if im.shape[1:] != mk.shape[1:]:
            raise DataError(
                f"mask {mask.name} is {mk.shape[1]}x{mk.shape[2]} but its image {img.name} is "
                f"{im.shape[1]}x{im.shape[2]}; masks must match their images' size"
            )
    return images, masks, [img.name for img, _ in pairs]


def _split_folders(path: Path) -> dict[str, Path]:
    """Split folders under ``path`` by their usual names (training/train, validation/val,
    testing/test). Two folders for one split, a folder beside them that is no split, or
    images lying beside them (all of which would be ignored) are errors."""
    layout: dict[str, Path] = {}
    others: list[Path] = []
    for folder in _subfolders(path):
        split = SPLIT_ALIASES.get(folder.name.lower())
        if split is None:
            others.append(folder)
            continue
        if split in layout:
            raise DataError(f"{path} has two folders for the {split} split ({layout[split].name}, "
                            f"{folder.name}); keep one")
        layout[split] = folder
    if layout and others:
        raise DataError(f"{path} has split folders ({', '.join(f.name for f in layout.values())})"
                        f" and {others[0].name}/, which is no split and would be ignored: "
                        f"rename it or move it out ({_layout_help()})")
    loose = [p for p in _files(path) if _is_image_file(p)] if layout else []
    if loose:
        raise DataError(f"{loose[0]} lies beside the split folders "
                        f"({', '.join(f.name for f in layout.values())}) and would be ignored: "
                        f"move it into a class folder of a split ({_layout_help()})")
    return layout


def _check_class_layout(path: Path, layout: dict[str, Path], split_dirs: bool) -> None:
    """Class folders that hold images only, are no split folders, and are the same in
    every split; anything else is refused with the layout explained."""
    for root in layout.values():
        for cls in _subfolders(root):
            if split_dirs and cls.name.lower() in SPLIT_ALIASES:
                raise DataError(f"{cls} is a split folder inside the {root.name} split, not a "
                                f"class: the data set is nested one level too deep; remove the "
                                f"extra {cls.name}/ level ({_layout_help()})")
            inner = _subfolders(cls)
            nested = [f.name for f in inner if f.name.lower() in SPLIT_ALIASES]
            if nested:
                raise DataError(f"{cls} holds split folders ({', '.join(nested)}): point at "
                                f"{cls} itself ({_layout_help()})")
            if inner:
                raise DataError(f"class folder {cls} holds folders of its own "
                                f"({inner[0].name}/); a class folder holds images "
                                f"only: check the layout ({_layout_help()})")
    if split_dirs:
        per_split = {root.name: {c.name for c in _subfolders(root)} for root in layout.values()}
        every = set().union(*per_split.values())
        if any(classes != every for classes in per_split.values()):
            lacks = [f"{name}/ lacks {', '.join(sorted(every - classes))}"
                     for name, classes in per_split.items() if classes != every]
            raise DataError(f"{path}: the splits have different class folders ({'; '.join(lacks)}"
                            "); give every split the same class folders (an empty one is fine) "
                            f"or remove the extra ones ({_layout_help()})")


def read_folder(path: Path, *, size: Size = None, color: str = "gray",
                mask_suffix: str | None = None, masks: str | None = None,
                **_: Any) -> ImageSet:
    """Image/mask pairs (optionally under split folders), or class-per-subfolder images
    (optionally under split folders), or loose unlabelled images.

    Split folders are named train|training, val|valid|validation, test|testing; beside
    them nothing else may lie, and every split holds the same class folders.
    """
    look_up_option(color, COLOR_MODES, what="colour mode")
    norm = _normalise_size(size)
    split_dirs = _split_folders(path)
    layout = split_dirs or {"train": path}
    dark: list[tuple[Path, int]] = []
    seg = {split: _find_mask_pairs(folder, mask_suffix, masks) for split, folder in
           layout.items()}
    if any(pairs is not None for pairs in seg.values()):
        missing = [s for s, pairs in seg.items() if pairs is None]
        if missing:
            raise DataError(f"{path}: the {', '.join(missing)} folder(s) hold no image/mask "
                            "pairs while the others do; lay every split out the same way")
        images, mask_list, names, splits, ids = [], [], [], [], []
        for split, pairs in seg.items():
            im, mk, nm = _read_pairs(pairs, color, dark)
            images += im
            mask_list += mk
            names += nm
            splits += [split] * len(pairs)
            ids += [f"{split}/{img.stem}" if split_dirs else img.stem for img, _ in pairs]
        _warn_dark(dark, path)
        stack = _stack(images, names, size=norm, source=path)
        _check_segmentation_size(stack, path, names[0])
        return ImageSet(
            images=stack,
            masks=_stack(mask_list, names, size=norm, source=path, masks=True),
            splits=np.array(splits), ids=np.array(ids),
            meta={"reader": "folder", "layout": "image/mask pairs"},
        )
    if masks is not None:
        raise DataError(f"--masks {masks!r} was given but {path} holds no image/mask layout")
    class_names = sorted({c.name for root in layout.values() for c in _subfolders(root)})
    layout_like = [c for c in class_names if c.lower() in IMAGE_FOLDERS]
    if layout_like:
        raise DataError(f"{path} has a '{layout_like[0]}' folder among its class folders: it "
                        "looks like an image/mask layout, not classes; point at the folder "
                        "holding images/ and the annotations, with --masks NAME")
    if not class_names and split_dirs:
        named = ", ".join(f.name for f in split_dirs.values())
        raise DataError(f"{path} has split folders ({named}) but no class folders in them; "
                        f"{_layout_help()}")
    if not class_names:
        loose = _files(path)
        if not loose:
            raise DataError(f"{path} is empty; put images in one subfolder per class")
        _reject_non_images(loose, path)
        images = [_read_picture(p, color, dark) for p in loose]
        _warn_dark(dark, path)
        return ImageSet(images=_stack(images, [p.name for p in loose], size=norm, source=path),
                        splits=np.full(len(loose), "train"), ids=np.array([p.stem for p in loose]),
                        meta={"reader": "folder", "layout": "unlabelled images"})
    _check_class_layout(path, layout, bool(split_dirs))
    images, labels, splits, ids, names = [], [], [], [], []
    for split, root in layout.items():
        for label, cls in enumerate(class_names):
            folder = root / cls
            if not folder.is_dir():
                continue
            files = _files(folder)
            _reject_non_images(files, folder)
            for file in files:
                images.append(_read_picture(file, color, dark))
                labels.append(label)
                splits.append(split)
                ids.append(f"{split}/{cls}/{file.stem}" if split_dirs else f"{cls}/{file.stem}")
                names.append(str(file.relative_to(path)))
    if not images:
        raise DataError(f"{path} has class folders ({', '.join(class_names)}) but no images")
    _warn_dark(dark, path)
    return ImageSet(images=_stack(images, names, size=norm, source=path), labels=np.array(labels),
                    splits=np.array(splits), ids=np.array(ids), class_names=class_names,
                    meta={"reader": "folder", "layout": "class per subfolder"})


# ----------------------------------------------------------------------------- DICOM
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: What to install to decode a compressed transfer syntax, by UID (pydicom's plugins).
_DECODER_HINTS = {
    **dict.fromkeys(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
                    "pip install pyjpegls (or: pip install pylibjpeg pylibjpeg-libjpeg)"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                     "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"),
                    "pip install pylibjpeg pylibjpeg-libjpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                     "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                     "1.2.840.10008.1.2.4.203"),
                    "pip install pylibjpeg pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.5": "pip install pylibjpeg pylibjpeg-rle",
}
_DECODER_FALLBACK = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"


def _is_dicomdir(path: Path, ds: Any = None) -> bool:
    if path.name.upper() == "DICOMDIR":
        return True
    if ds is None:
        return False
    meta = getattr(ds, "file_meta", None)
    sop = str(getattr(meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    return sop == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds


def _transfer_syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None)


def _missing_decoder(path: Path, ds: Any) -> MissingDependencyError:
    syntax = _transfer_syntax(ds)
    name = getattr(syntax, "name", None) or str(syntax)
    hint = _DECODER_HINTS.get(str(syntax), _DECODER_FALLBACK)
    return MissingDependencyError(
        f"{path} is compressed as {name} ({syntax}) and no decoder for it is installed: "
        f"{hint}; or re-export the study uncompressed")


def _decoder_available(ds: Any) -> bool | None:
    """Whether pydicom can decode the file's transfer syntax here; None when unknown
    (pydicom < 3 says so only when decoding fails)."""
    syntax = _transfer_syntax(ds)
    try:
        if syntax is None or not syntax.is_compressed:
            return True
    except ValueError:  # a private UID that is no transfer syntax pydicom knows
        return None
    try:
        from pydicom.pixels.decoders.base import get_decoder
    except ImportError:  # pydicom < 3
        return None
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:  # no decoder exists for it at all
        return False


def _no_decoder_error(exc: Exception) -> bool:
    """A pixel-decoding failure that says a decoder is missing (pydicom 2 and 3 wording)."""
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, NotImplementedError)) and any(
        words in text for words in ("missing dependencies", "missing required dependencies",
                                    "no pixel data handlers", "no pixel data decoders"))


def _stored_bits(ds: Any, frame: np.ndarray) -> int:
    """BitsStored where it is valid, else BitsAllocated, else the array's own width."""
    width = 8 * frame.dtype.itemsize
    allocated = int(ds.get("BitsAllocated", width) or width)
    stored = int(ds.get("BitsStored", allocated) or allocated)
    return stored if 1 <= stored <= allocated else min(allocated, width)


def _colour_unit(frame: np.ndarray, bits: int) -> np.ndarray:
    """(H, W, 3) colour pixels to [0, 1] by their stored bits (signed ones shifted up)."""
    values = frame.astype(np.float64)
    if frame.dtype.kind == "i":  # PixelRepresentation 1: -2**(bits-1) .. 2**(bits-1) - 1
        values += 2 ** (bits - 1)
    return np.clip(values / float(2**bits - 1), 0.0, 1.0).astype(np.float32)


def _dicom_frames(path: Path, *, color: str, window: str) -> list[np.ndarray]:
    """Each frame of one DICOM file as (C, H, W) in [0, 1] (the module's bit-depth rule)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_color_lut, apply_modality_lut

    def unreadable(exc: Exception) -> DataError:
        return DataError(
            f"{path} is a truncated or unreadable DICOM file ({type(exc).__name__}: {exc}); "
            "re-export it from the PACS")

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DataError(f"{path} is not a DICOM file; remove it or point at the DICOM files only") \
            from None
    except Exception as exc:  # noqa: BLE001 - truncated files fail in many ways
        raise unreadable(exc) from None
    if _is_dicomdir(path, ds):
        raise DataError(f"{path} is a DICOMDIR index, not an image: pass the folder it indexes "
                        f"({path.parent})")
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        sop = ds.get("SOPClassUID")
        kind = getattr(sop, "name", "") if sop is not None else ""
        if "Image" in kind:
            raise DataError(f"{path} is a {kind} file without its pixel data (truncated?); "
                            "re-export it from the PACS")
        what = f"its SOP class is {kind}" if kind and kind != str(sop) else \
            "a structured report / presentation state?"
        raise DataError(f"{path} holds no image ({what}); remove it or point at the image "
                        "files only")
    if _decoder_available(ds) is False:
        raise _missing_decoder(path, ds)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - truncated files fail in many ways
        if _no_decoder_error(exc):
            raise _missing_decoder(path, ds) from None
        raise unreadable(exc) from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    frames_n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    bits = _stored_bits(ds, np.asarray(pixels))
    if photometric == "PALETTE COLOR" and samples == 1:
        try:
            pixels = apply_color_lut(pixels, ds)
        except Exception as exc:  # noqa: BLE001 - a broken LUT fails in many ways
            raise DataError(f"{path} is a PALETTE COLOR image whose colour table cannot be "
                            f"applied ({type(exc).__name__}: {exc}); re-export it as RGB") \
                from None
        samples, bits = 3, 8 * pixels.dtype.itemsize  # the LUT's entries are 8 or 16 bits
    if frames_n == 1:
        pixels = pixels[None]
    out = []
    for frame in pixels:
        if samples == 1:
            if color != "gray":
                raise ConfigError(f"{path} is a single-channel (gray) DICOM image; --color "
                                  f"{color} needs colour images: use --color gray")
            values = apply_modality_lut(frame, ds).astype(np.float64)
            if window == "voi" and "WindowCenter" in ds and "WindowWidth" in ds:
                unit = _voi_window(values, ds)
            else:
                unit = _minmax(values)
            if photometric == "MONOCHROME1":
                unit = 1.0 - unit
            out.append(unit[None].astype(np.float32))
        else:
            out.append(_channels(_colour_unit(np.asarray(frame), bits), color, path))
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
    """A DICOM file or a folder of them (a disc's DICOMDIR is skipped); each frame becomes
    one image. A DICOMDIR itself, a file with no pixel data, and a compressed file whose
    decoder is not installed are each refused with their own message."""
    look_up_option(window, WINDOW_MODES, what="window")
    look_up_option(color, COLOR_MODES, what="colour mode")
    if path.is_file():
        files = [path]
    else:  # a disc's DICOMDIR indexes the images beside it: they are read, not the index
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
        files = [p for p in found if not _is_dicomdir(p)]
        if found and not files:
            raise DataError(f"{path} holds a DICOMDIR index but none of the images it lists; "
                            "copy the whole disc (the folders beside the DICOMDIR)")
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
def read_nifti(path: Path, *, size: Size = None, axis: int = 2, color: str = "gray",
               **_: Any) -> ImageSet:
    """2D slices of a 3D (or 4D) NIfTI volume along ``axis``, min-max over the volume."""
    look_up_option(color, COLOR_MODES, what="colour mode")
    if color != "gray":
        raise ConfigError(f"{path} is a NIfTI volume of gray values; --color {color} needs "
                          "colour images: use --color gray")
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        volume = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except (ImageFileError, Exception) as exc:  # noqa: BLE001 - corrupt volumes fail many ways
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
    else:
        _check_min_size(stack.shape, path, f"axis {axis} slices")
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
    for marker, what in (("manifest.json", "release or results set"),
                         ("state.json", "owner-state folder")):
        if (path / marker).is_file():
            raise DataError(f"{path} is a medveil {what}, not a plaintext data set; point "
                            "at the original images (the command takes a release where it "
                            "says so)")
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


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_label(label: str) -> str:
    """A data-set label: letters, digits, ``._-``, at most 64 characters."""
    if not _LABEL.match(str(label)):
        raise ConfigError(f"--label {str(label)[:40]!r} must be 1 to 64 letters, digits, '.', "
                          "'_' or '-' (it names the data set in everything that leaves you; "
                          "never use a patient's name)")
    return str(label)


def load_dataset(source: str | os.PathLike[str], *, size: Size = None, color: str = "gray",
                 window: str = "minmax", axis: int = 2, mask_suffix: str | None = None,
                 masks: str | None = None, label: str | None = None,
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
        masks: the annotation folder's name, or a file pattern (``*_1stHO.png``), where a
            segmentation layout offers several candidates.
        label: the data set's name in everything that leaves (manifests, models,
            scorecards). A path's file or folder name can identify a patient, so it is
            never used: without a label, a path is named ``data-`` plus a digest of its
            pixels; a bundled set keeps its public name.
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
        name = None
    if label is not None:
        name = check_label(label)
    options.setdefault("size", size)
    if size is not None:
        options["size"] = size
    options.setdefault("color", color)
    options.setdefault("mask_suffix", mask_suffix)
    fmt = detect_format(path)
    if masks is not None:
        if fmt != "folder":
            raise ConfigError(f"--masks names annotations in an image folder; {path} is "
                              f"{fmt} data, which carries its masks itself: drop --masks")
        options["masks"] = masks
    imageset = READERS[fmt](path, window=window, axis=axis, **options)
    if imageset.task != "none":
        if "test" not in imageset.split_names:
            imageset = _carve(imageset, source="train", target="test", fraction=test_fraction,
                              seed=derive_seed(seed, "data/carve-test"),
                              ordered=imageset.task == "segmentation")
        if "val" not in imageset.split_names:
            imageset = _carve(imageset, source="train", target="val", fraction=val_fraction,
                              seed=derive_seed(seed, "data/carve-val"), ordered=False)
    if name is None:
        name = "data-" + hashlib.sha256(np.ascontiguousarray(imageset.images).data
                                        ).hexdigest()[:12]
    imageset.meta.update({"name": name, "source": str(path), "format": fmt,
                          "options": {k: v for k, v in options.items() if v is not None},
                          "seed": seed})
    return imageset
