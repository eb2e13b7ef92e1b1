"""Image input: bytes / path / file-like -> pixels (float32) + metadata (format detected by content).

Pixel contract of :class:`MedImage` ``pixels``:
    float32, shape (H, W), finite. For DICOM these are *modality values*: the stored
    values after the Modality LUT (PS3.3 C.11.1; Rescale Slope/Intercept or Modality
    LUT Sequence), so CT is in Hounsfield units. For PNG/JPEG they are the stored
    values at full bit depth (0..255 or 0..65535). The VOI step (window/level) and the
    MONOCHROME1 inversion are *not* applied here: they are the first steps of
    :mod:`medcnn.preprocess`, which reads the window information from ``meta``.
"""
from __future__ import annotations

import operator
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from medcnn.io.types import ACCEPTED, DEFAULT_MAX_PIXELS, ImageMeta, MedImage, UnsupportedImageError
from medcnn.io.types import error as _error

__all__ = [
    "UnsupportedImageError",
    "ImageMeta",
    "MedImage",
    "read_image",
    "DEFAULT_MAX_PIXELS",
    "ACCEPTED",
    "detect_format",
]

# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
# Signatures of common non-image uploads, only used to make the error message specific.
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"RIFF", "a RIFF container (e.g. WebP)"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 file (not wrapped in DICOM)"),
)
# First tag of a DICOM data set written without preamble/file meta (PS3.10 7.1):
# group 0x0002 (file meta) or 0x0008 (identification), little- or big-endian.
_BARE_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _read_bytes(source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO) -> tuple[bytes, str]:
    """Return the raw bytes of ``source`` and a short description (for messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "bytes"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), f"file {path.name!r}"
        except FileNotFoundError:
            raise _error(f"file not found: {str(path)!r}") from None
        except IsADirectoryError:
            raise _error(f"{str(path)!r} is a directory, not an image file") from None
        except OSError as e:
            raise _error(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    getvalue = getattr(source, "getvalue", None)  # io.BytesIO, Streamlit UploadedFile
    read = getattr(source, "read", None)
    if callable(getvalue) or callable(read):
        try:
            data = getvalue() if callable(getvalue) else read()
        except (OSError, ValueError) as e:  # closed or unreadable stream
            raise _error(f"cannot read the file-like object: {e}") from None
        if isinstance(data, str):
            raise _error("the file-like object is open in text mode; open it in binary mode ('rb')")
        name = getattr(source, "name", None)
        return bytes(data), f"upload {Path(str(name)).name!r}" if name else "file-like object"
    raise TypeError(
        f"read_image() expects bytes, a path or a binary file-like object, not {type(source).__name__}"
    )


def _describe_unknown(head: bytes) -> str:
    """Human description of non-image content, from its first bytes."""
    for sig, what in _OTHER_SIGNATURES:
        if head.startswith(sig):
            return what
    sample = head[:512]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "text"
    try:
        sample.decode("utf-8")
        if b"\x00" not in sample:
            return "text"
    except UnicodeDecodeError:
        pass
    return "an unrecognised format"


def detect_format(data: bytes) -> str | None:
    """Detect the image format from content (never from a file name).

    Args:
        data: the file's bytes.

    Returns:
        ``"dicom"``, ``"png"``, ``"jpeg"``, or ``None`` when not recognised.
    """
    if data[128:132] == b"DICM":  # PS3.10 7.1: 128-byte preamble + "DICM"
        return "dicom"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SOI):
        return "jpeg"
    if _looks_like_bare_dicom(data):
        return "dicom"
    return None


def _looks_like_bare_dicom(data: bytes) -> bool:
    """True when ``data`` starts like a DICOM data set without the 128-byte preamble.

    The first element must be in group 0x0002 or 0x0008 (either byte order), followed
    by an explicit VR (two upper-case letters) or an implicit-VR length that fits.
    """
    if len(data) < 8 or data[:2] not in _BARE_DICOM_GROUPS:
        return False
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    length = int.from_bytes(data[4:8], "little" if data[0] else "big")
    return length < len(data)


def _check_frame(frame: int | None) -> int | None:
    if frame is None:
        return None
    if isinstance(frame, bool):
        raise TypeError("frame must be an int or None, not bool")
    try:
        return operator.index(frame)
    except TypeError:
        raise TypeError(f"frame must be an int or None, not {type(frame).__name__}") from None


def read_image(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    frame: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MedImage:
    """Read a DICOM, PNG or JPEG image into modality values plus metadata.

    The format is detected from the content, so an upload named ``image`` with no
    extension works. DICOM pixels get the Modality LUT (PS3.3 C.11.1: Rescale
    Slope/Intercept or Modality LUT Sequence), so CT is in Hounsfield units; the
    VOI step and MONOCHROME1 inversion are left to :mod:`medcnn.preprocess`, which
    reads the file's window / VOI LUT from ``meta``. Colour images (RGB, RGBA, YBR,
    PALETTE COLOR) become greyscale luma (ITU-R BT.601) with a warning.

    Args:
        source: file content as bytes, a path, or a binary file-like object (for a
            stream with ``getvalue()``, such as ``io.BytesIO`` or a Streamlit upload,
            the whole buffer is read; otherwise ``read()`` from its position).
        frame: frame of a multi-frame DICOM to return (0-based); default the middle
            frame ``n_frames // 2``.
        max_pixels: pixel budget (rows x columns x frames for DICOM, rows x columns for
            PNG/JPEG), checked from the headers before anything is decoded (decompression
            bombs); a compressed DICOM frame whose own codestream header announces more
            pixels than Rows x Columns is refused too.

    Returns:
        :class:`MedImage` with ``pixels`` float32 (H, W), finite, and ``meta``.

    Raises:
        UnsupportedImageError: for any input that is not a readable image (not an
            image, empty, no pixel data, missing decoder, truncated or corrupt data,
            over the pixel budget, fewer than 2 rows or columns, non-finite pixels,
            frame out of range). The message says what was wrong and what is accepted.
        TypeError: ``source`` or ``frame`` of the wrong type (a programming error).
    """
    frame = _check_frame(frame)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 4:
        raise ValueError(f"max_pixels must be an int >= 4, got {max_pixels!r}")
    data, where = _read_bytes(source)
    if not data:
        raise _error(f"{where} is empty (0 bytes)")
    fmt = detect_format(data)
    if fmt == "dicom":
        from medcnn.io import dicom as _dicom

        pixels, meta = _dicom.decode_dicom(data, frame=frame, max_pixels=max_pixels)
    elif fmt in ("png", "jpeg"):
        from medcnn.io import raster as _raster

        if frame not in (None, 0):
            raise _error(f"frame {frame} is out of range: a {fmt.upper()} image has 1 frame (valid: 0)")
        pixels, meta = _raster.decode_raster(data, fmt, max_pixels=max_pixels)
    else:
        raise _error(f"{where} is not an image: it looks like {_describe_unknown(data[:4096])}")
    _check_pixels(pixels, meta)
    for message in meta.warnings:
        warnings.warn(message, UserWarning, stacklevel=2)
    return MedImage(pixels=pixels, meta=meta)


def _check_pixels(pixels: np.ndarray, meta: ImageMeta) -> None:
    """Enforce the pixel contract: float32, (H, W) with H, W >= 2, finite; warn if constant."""
    if pixels.ndim != 2 or pixels.dtype != np.float32:  # internal invariant of the decoders
        raise RuntimeError(f"decoder returned {pixels.dtype} {pixels.shape}, expected float32 (H, W)")
    rows, cols = pixels.shape
    if rows < 2 or cols < 2:
        raise _error(f"the image is {rows}x{cols} pixels; at least 2x2 is required")
    lo, hi = float(pixels.min()), float(pixels.max())  # NaN propagates; +-inf shows up here
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise _error(f"the image has non-finite pixel values (min {lo}, max {hi}); the data are corrupt")
    if lo == hi:
        meta.warnings.append(f"constant image: every pixel is {lo:g}; nothing to see or classify")
