"""Pixels are scaled by the file's bit depth: PNG sBIT / IHDR, DICOM BitsStored and palettes.

PNGs are generated (Pillow, or a plain zlib encoder for the 16-bit colour PNGs Pillow
cannot write); DICOMs are pydicom-data's real files, some with their bit depth edited.
"""

from __future__ import annotations

import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, PngImagePlugin

from medveil.data import load_dataset
from medveil.errors import DataError

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
SIDE = 16  # the smallest image medveil reads (MIN_IMAGE_SIZE)


def dicom(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom-data")
    return Path(path)


def save_grey16(path: Path, values: np.ndarray, sbit: int | None = None) -> Path:
    """A 16-bit greyscale PNG written by Pillow, with an sBIT chunk when given."""
    info = PngImagePlugin.PngInfo()
    if sbit is not None:
        info.add(b"sBIT", bytes([sbit]))
    Image.fromarray(values.astype(np.uint16)).save(path, pnginfo=info)
    return path


def png_bytes(values: np.ndarray, *, depth: int, colour_type: int,
              sbit: bytes | None = None, width: int | None = None) -> bytes:
    """A PNG from its chunks (filter 0 on every row), for layouts Pillow cannot write;
    ``values`` holds each row's packed samples where ``depth`` is below 8."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    height, width = values.shape[0], width or values.shape[1]
    dtype = ">u2" if depth == 16 else "u1"
    rows = b"".join(b"\x00" + np.ascontiguousarray(row).astype(dtype).tobytes()
                    for row in values)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + (chunk(b"sBIT", sbit) if sbit else b"")
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def read_one(path: Path, **options) -> np.ndarray:
    """The image medveil reads from a folder holding just ``path``."""
    return load_dataset(path.parent, **options).images[0]


def grey16(bits: int):
    return arrays(np.uint16, (SIDE, SIDE), elements=st.integers(0, 2**bits - 1))


# ----------------------------------------------------------------------------- PNG
@SETTINGS
@given(bits=st.integers(9, 15), data=st.data())
def test_png_raw_values_under_sbit_are_scaled_by_sbit(bits, data):
    """12-bit data in a 16-bit PNG that says sBIT 12 reads as value / 4095, for any depth."""
    values = data.draw(grey16(bits))
    with tempfile.TemporaryDirectory() as tmp:
        image = read_one(save_grey16(Path(tmp) / "x.png", values, sbit=bits))
    assert np.allclose(image[0], values / (2**bits - 1), atol=1e-6)
    assert 0.0 <= image.min() and image.max() <= 1.0


@SETTINGS
@given(bits=st.integers(9, 15), data=st.data())
def test_png_values_scaled_up_as_the_spec_asks_keep_the_declared_depth(bits, data):
    """A writer that follows the PNG spec scales sBIT-bit data to the full 16 bits: it is
    read by the declared depth, which gives the original values back."""
    original = data.draw(grey16(bits))
    scaled = np.round(original * (65535 / (2**bits - 1))).astype(np.uint16)
    assume(scaled.max() >= 2**bits)  # else indistinguishable from raw data (see the rule)
    with tempfile.TemporaryDirectory() as tmp:
        image = read_one(save_grey16(Path(tmp) / "x.png", scaled, sbit=bits))
    assert np.allclose(image[0], scaled / 65535, atol=1e-6)
    assert np.allclose(image[0], original / (2**bits - 1), atol=1e-4)


@SETTINGS
@given(values=arrays(np.uint16, (SIDE, SIDE), elements=st.integers(0, 65535)))
def test_png_without_sbit_is_scaled_by_its_declared_16_bits(values):
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_one(save_grey16(Path(tmp) / "x.png", values))
    assert np.allclose(image[0], values / 65535, atol=1e-6)
    dark = [w for w in caught if "sBIT" in str(w.message)]
    assert len(dark) == (1 if values.max() < 4096 else 0)  # said, once, when it reads dark


@SETTINGS
@given(values=arrays(np.uint8, (SIDE, SIDE)), sbit=st.one_of(st.none(), st.integers(1, 8)))
def test_png_8_bit_is_scaled_by_255_or_its_sbit(values, sbit):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        info = PngImagePlugin.PngInfo()
        if sbit is not None:
            info.add(b"sBIT", bytes([sbit]))
        Image.fromarray(values).save(path, pnginfo=info)
        image = read_one(path)
    fits = sbit is not None and values.max() < 2**sbit
    expected = values / (2**sbit - 1) if fits else values / 255
    assert np.allclose(image[0], expected, atol=1e-6)


def test_a_12_bit_export_is_no_longer_read_dark(tmp_path, cxr):
    """The reported case: real X-ray pixels as 12-bit data in a 16-bit PNG with sBIT 12."""
    twelve = np.round(cxr.images[0, 0] * 4095).astype(np.uint16)
    image = read_one(save_grey16(tmp_path / "xray.png", twelve, sbit=12))
    assert image.max() == pytest.approx(twelve.max() / 4095)
    assert np.allclose(image[0], cxr.images[0, 0], atol=0.5 / 4095 + 1e-6)


def test_a_12_bit_export_without_sbit_reads_dark_with_a_word(tmp_path, cxr):
    twelve = np.round(cxr.images[0, 0] * 4095).astype(np.uint16)
    for i in range(3):
        save_grey16(tmp_path / f"xray{i}.png", twelve)
    with pytest.warns(UserWarning, match=r"3 16-bit PNG\(s\).*no sBIT chunk.*12 bits.*dark"):
        data = load_dataset(tmp_path)
    assert data.images.max() <= 4095 / 65535 + 1e-6


def test_a_16_bit_colour_png_holding_12_bit_values_is_refused(tmp_path):
    values = np.random.default_rng(0).integers(0, 4096, (SIDE, SIDE, 3)).astype(np.uint16)
    (tmp_path / "c.png").write_bytes(png_bytes(values, depth=16, colour_type=2,
                                               sbit=bytes([12, 12, 12])))
    with pytest.raises(DataError, match="c.png is a 16-bit colour PNG holding 12-bit.*8-bit RGB"):
        load_dataset(tmp_path, color="rgb")


def test_a_16_bit_colour_png_is_read_by_its_declared_depth(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, (SIDE, SIDE, 3)).astype(np.uint16)
    (tmp_path / "c.png").write_bytes(png_bytes(values, depth=16, colour_type=2))
    image = read_one(tmp_path / "c.png", color="rgb")
    assert np.allclose(np.moveaxis(image, 0, -1), values / 65535, atol=1 / 255)


def test_low_bit_grey_png_is_scaled_to_its_full_range(tmp_path):
    """A 4-bit grey PNG (values 0..15) spans 0..1, whatever its sBIT says."""
    values = np.tile(np.arange(16, dtype=np.uint8), (SIDE, 1))
    packed = np.packbits(np.unpackbits(values[..., None], axis=-1)[..., 4:].reshape(SIDE, -1),
                         axis=-1)
    (tmp_path / "g.png").write_bytes(png_bytes(packed, depth=4, colour_type=0,
                                               sbit=bytes([4]), width=SIDE))
    image = read_one(tmp_path / "g.png")
    assert np.allclose(image[0], values / 15, atol=1e-6)


def test_16_bit_tiff_is_scaled_by_65535(tmp_path):
    values = np.random.default_rng(1).integers(0, 256, (SIDE, SIDE)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "t.tif")
    image = read_one(tmp_path / "t.tif")
    assert np.allclose(image[0], values / 65535, atol=1e-6)  # not stretched min-max


# ----------------------------------------------------------------------------- DICOM
def test_dicom_colour_is_scaled_by_bits_stored(tmp_path):
    """RGB with BitsAllocated 16 / BitsStored 12: divided by 4095, not 65535."""
    import pydicom

    ds = pydicom.dcmread(dicom("SC_rgb_16bit.dcm"))
    twelve = (ds.pixel_array >> 4).astype(np.uint16)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = twelve.tobytes()
    ds.save_as(tmp_path / "rgb12.dcm")
    image = load_dataset(tmp_path / "rgb12.dcm", color="rgb").images[0]
    assert np.allclose(np.moveaxis(image, 0, -1), twelve / 4095, atol=1e-6)
    assert image.max() == pytest.approx(1.0)


def test_dicom_signed_12_bit_grey_reads_like_the_plain_file(tmp_path):
    """Signed 12-bit values with other bits set above BitsStored read as the same image:
    the sign comes from BitsStored and PixelRepresentation, then the rescale and window."""
    import pydicom

    ds = pydicom.dcmread(dicom("CT_small.dcm"))
    assert ds.PixelRepresentation == 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.save_as(tmp_path / "plain.dcm")
    values = ds.pixel_array.astype(np.int32) - 1024  # within 12-bit two's complement
    ds.BitsStored, ds.HighBit = 12, 11
    ds.RescaleIntercept = 0
    ds.PixelData = ((values & 0x0FFF) | 0xA000).astype(np.uint16).tobytes()  # junk above bit 11
    ds.save_as(tmp_path / "twelve.dcm")
    for window in ("minmax", "voi"):
        plain = load_dataset(tmp_path / "plain.dcm", window=window).images
        twelve = load_dataset(tmp_path / "twelve.dcm", window=window).images
        assert np.allclose(plain, twelve, atol=1e-6), window


@pytest.mark.parametrize("name,frames", [("OBXXXX1A.dcm", 1), ("OBXXXX1A_2frame.dcm", 2)])
def test_palette_colour_dicom_goes_through_its_lut(name, frames):
    import pydicom

    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_color_lut

    path = dicom(name)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    rgb = apply_color_lut(ds.pixel_array, ds).reshape(frames, ds.Rows, ds.Columns, 3)
    expected = rgb / float(2 ** (8 * rgb.dtype.itemsize) - 1)
    colour = load_dataset(path, color="rgb").images
    assert colour.shape == (frames, 3, ds.Rows, ds.Columns)
    assert np.allclose(np.moveaxis(colour, 1, -1), expected, atol=1e-6)
    grey = load_dataset(path).images
    luma = expected @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(grey[:, 0], luma, atol=1e-5)
    indices = ds.pixel_array.reshape(frames, ds.Rows, ds.Columns).astype(np.float64)
    assert not np.allclose(grey[:, 0], (indices - indices.min()) / np.ptp(indices), atol=0.05)
    green = load_dataset(path, color="green").images
    assert np.allclose(green[:, 0], expected[..., 1], atol=1e-6)
