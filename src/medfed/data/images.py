"""Decoding image files into uint8 arrays.

Supported: TIFF (tifffile), PNG and JPEG (Pillow, detected by content, not by suffix) and DICOM
``.dcm`` (pydicom, when installed). Grey and RGB, 8- and 16-bit.

Bit depth: 8-bit data is kept as is. 16-bit integer data is mapped linearly from the full
0..65535 range to 0..255 (``round(v / 257)``, the exact inverse of 8-to-16-bit expansion), so
brightness stays comparable between images. DICOM pixel data (after the modality rescale)
and any other integer or float data are min-max scaled per image to 0..255, because their
value range differs between scanners.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medfed.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm",)
HAS_PYDICOM = importlib.util.find_spec("pydicom") is not None
IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES + (DICOM_SUFFIXES if HAS_PYDICOM else ())
_PIL_16BIT = {"I;16", "I;16B", "I;16L", "I", "F"}  # Pillow modes wider than 8 bits
_PIL_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}
_PIL_GREY = {"1", "L", "LA", "La"} | _PIL_16BIT


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says: size, channels and bits per sample."""

    width: int
    height: int
    channels: int
    bit_depth: int
    format: str


class ImageReadError(DataError):
    """An image file cannot be read or decoded; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def is_image_file(path: Path) -> bool:
    """True for a non-hidden file with a supported suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def probe_image(path: Path) -> ImageInfo:
    """Read the header and check the pixel data is all there, without decoding it.

    Raises DataError naming the file when it cannot be read or is truncated.
    """
    try:
        if path.stat().st_size == 0:
            raise ValueError("empty file")
        suffix = path.suffix.lower()
        if suffix in TIFF_SUFFIXES:
            return _probe_tiff(path)
        if suffix in DICOM_SUFFIXES:
            return _probe_dicom(path)
        return _probe_pil(path)
    except DataError:
        raise
    except Exception as exc:  # each library raises its own error types
        raise ImageReadError(path, f"cannot read image ({_reason(exc)})") from None


def load_image(path: Path) -> np.ndarray:
    """Decode a file into a uint8 array of shape (H, W, C), C being 1 or 3 (alpha dropped)."""
    try:
        suffix = path.suffix.lower()
        if suffix in TIFF_SUFFIXES:
            array = to_uint8(_first_tiff_page(path))
        elif suffix in DICOM_SUFFIXES:
            array = _read_dicom(path)
        else:
            with Image.open(path) as image:
                array = _pil_to_array(image)
    except DataError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"cannot decode image ({_reason(exc)})") from None
    return _as_hwc(array, path)


def load_resized(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode, convert to ``channels`` (1 grey, 3 RGB) and resize to ``size`` x ``size``.

    Returns uint8 (C, H, W). Resizing is Pillow's antialiased bilinear filter; the aspect
    ratio is not kept. JPEGs are decoded at a reduced scale first when much larger than needed.
    """
    try:
        if path.suffix.lower() in PIL_SUFFIXES:
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft("L" if channels == 1 else "RGB", (size, size))
                image = _pil_with_channels(image, channels)
                resized = image.resize((size, size), Image.Resampling.BILINEAR)
                array = np.asarray(resized)
        else:
            array = _resize_array(load_image(path), size, channels)
    except DataError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"cannot decode image ({_reason(exc)})") from None
    return array.reshape(size, size, channels).transpose(2, 0, 1)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Map pixel data to uint8 as the module docstring describes."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # either byte order
        return np.round(array / 257.0).astype(np.uint8)
    return min_max_uint8(array)


def min_max_uint8(array: np.ndarray) -> np.ndarray:
    """Scale the smallest value to 0 and the largest to 255 (a constant image becomes 0)."""
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _resize_array(array: np.ndarray, size: int, channels: int) -> np.ndarray:
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    image = _pil_with_channels(image, channels)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def _pil_with_channels(image: Image.Image, channels: int) -> Image.Image:
    """Grey ("L") or "RGB", converting 16-bit grey with :func:`to_uint8` rather than clipping."""
    if image.mode in _PIL_16BIT:
        image = Image.fromarray(to_uint8(np.asarray(image)))
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode in _PIL_16BIT:
        return to_uint8(np.asarray(image))
    if image.mode in ("L", "RGB"):
        return np.asarray(image)
    return np.asarray(image.convert("L" if image.mode in _PIL_GREY else "RGB"))


def _first_tiff_page(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        array = page.asarray()
        planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    if planar and array.ndim == 3:
        array = np.moveaxis(array, 0, -1)
    return array


def _as_hwc(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and array.shape[2] in (1, 3):
        return array
    if array.ndim == 3 and array.shape[2] in (2, 4):  # grey + alpha, RGB + alpha
        return np.ascontiguousarray(array[..., : array.shape[2] - 1])
    raise ImageReadError(
        path, f"unsupported image shape {array.shape}; expected grey (H, W) or RGB (H, W, 3)"
    )


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    dataset = pydicom.dcmread(path)
    pixels = apply_modality_lut(dataset.pixel_array, dataset)
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8:
        return pixels
    grey = min_max_uint8(pixels)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 255 - grey
    return grey


def _probe_tiff(path: Path) -> ImageInfo:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        size = path.stat().st_size
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if not ends or max(ends) > size or 0 in page.databytecounts:
            raise ImageReadError(path, "truncated TIFF (pixel data runs past the end of the file)")
        samples = page.samplesperpixel - (1 if page.extrasamples else 0)
        return ImageInfo(
            width=page.imagewidth,
            height=page.imagelength,
            channels=samples,
            bit_depth=page.bitspersample,
            format="TIFF",
        )


def _probe_pil(path: Path) -> ImageInfo:
    with Image.open(path) as image:
        width, height = image.size
        mode, kind = image.mode, image.format or "?"
    _check_trailer(path, kind)
    return ImageInfo(
        width=width,
        height=height,
        channels=1 if mode in _PIL_GREY else 3,
        bit_depth=_PIL_BITS.get(mode, 8),
        format=kind,
    )


def _check_trailer(path: Path, kind: str) -> None:
    """A JPEG ends with its EOI marker and a PNG with its IEND chunk; a cut file does not."""
    markers = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
    if kind not in markers:
        return
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64))
        tail = handle.read()
    if markers[kind] not in tail:
        raise ImageReadError(path, f"truncated {kind} (its end marker is missing)")


def _probe_dicom(path: Path) -> ImageInfo:
    import pydicom

    dataset = pydicom.dcmread(path)
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples, bits = int(dataset.SamplesPerPixel), int(dataset.BitsAllocated)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    expected = rows * columns * samples * frames * bits // 8
    if not dataset.file_meta.TransferSyntaxUID.is_compressed and len(dataset.PixelData) < expected:
        raise ImageReadError(path, "truncated DICOM (pixel data shorter than its header says)")
    return ImageInfo(columns, rows, samples, int(dataset.BitsStored), "DICOM")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
