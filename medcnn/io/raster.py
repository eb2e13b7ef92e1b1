"""PNG and JPEG decoding for :func:`medcnn.io.read_image` (private).

Pixels are returned at full bit depth as float32: 0..255 for 8-bit, 0..65535 for
16-bit PNG. Pillow decodes; 16-bit colour PNG (which Pillow reduces to 8 bits) is
decoded with OpenCV instead. Colour becomes ITU-R BT.601 luma with a warning.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from medcnn.io.types import ImageMeta, error as _error

# ITU-R BT.601 luma weights (the same as Pillow's "L" conversion).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def decode_raster(data: bytes, fmt: str, *, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    """Decode PNG or JPEG bytes.

    Args:
        data: the file content; ``fmt`` was detected from it.
        fmt: ``"png"`` or ``"jpeg"``.
        max_pixels: pixel budget checked on the header size before decoding.

    Returns:
        (pixels float32 (H, W), meta).

    Raises:
        UnsupportedImageError: corrupt/truncated data, too large, too small.
    """
    label = fmt.upper()
    try:
        with warnings.catch_warnings():
            # Our budget replaces Pillow's global decompression-bomb limit below it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[label])
        width, height = im.size
    except Image.DecompressionBombError as e:
        raise _error(f"the {label} image is too large to decode safely ({e})") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types on corrupt headers
        raise _error(f"corrupt {label} header: {type(e).__name__}: {e}") from None
    if width * height > max_pixels:
        raise _error(
            f"the {label} image is {width}x{height} = {width * height:,} pixels, over the "
            f"budget of {max_pixels:,} pixels (max_pixels)"
        )
    if width < 2 or height < 2:
        raise _error(f"the {label} image is {height}x{width} pixels; at least 2x2 is required")
    meta = ImageMeta(source_format=fmt, rows=height, columns=width, modality="OT")
    try:
        if fmt == "png" and _png_is_16bit_colour(data):
            arr = _decode_png16_colour(data)
        else:
            arr = _decode_pillow(im, fmt, meta)
    except Exception as e:  # noqa: BLE001 - truncated/corrupt streams raise OSError, SyntaxError, zlib.error ...
        raise _error(f"truncated or corrupt {label} data: {type(e).__name__}: {e}") from None
    finally:
        im.close()
    pixels = _to_grey(arr, meta)
    meta.rows, meta.columns = pixels.shape
    return pixels, meta


def _png_is_16bit_colour(data: bytes) -> bool:
    """IHDR (always the first chunk, PNG spec 11.2.2): bit depth at byte 24, colour type at 25."""
    return len(data) > 25 and data[12:16] == b"IHDR" and data[24] == 16 and data[25] in (2, 4, 6)


def _decode_png16_colour(data: bytes) -> np.ndarray:
    """16-bit RGB(A) / grey+alpha PNG at full depth via OpenCV (returns RGB(A) order)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise OSError("OpenCV could not decode the 16-bit PNG")
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # BGR(A) -> RGB(A)
    return arr


def _decode_pillow(im: Image.Image, fmt: str, meta: ImageMeta) -> np.ndarray:
    """Decode with Pillow; returns uint8/uint16/int32 (H, W) or (H, W, C) in RGB(A) order."""
    if fmt == "jpeg":
        orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation
        im.load()
        if orientation not in (1, None):
            im = ImageOps.exif_transpose(im)
    else:
        im.load()
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        meta.photometric_interpretation = "PALETTE COLOR"
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "F":
        raise OSError("floating-point images are not supported")
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        arr = arr.astype(np.uint16, copy=False)
        meta.bits_stored = 16
    elif im.mode == "I":
        meta.bits_stored = 16 if int(arr.max(initial=0)) <= 65535 and int(arr.min(initial=0)) >= 0 else 32
    return arr


def _to_grey(arr: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """(H, W[, C]) -> float32 (H, W); colour to BT.601 luma with a meta warning."""
    if arr.dtype == np.uint16:
        meta.bits_stored = 16
    if arr.ndim == 2:
        return arr.astype(np.float32)
    channels = arr.shape[2]
    meta.original_channels = channels
    if channels in (2, 4):  # grey+alpha or RGBA: alpha is dropped, not composited
        meta.warnings.append("alpha channel dropped (transparency is not composited)")
    colour = arr[..., :3] if channels >= 3 else arr[..., :1]
    if meta.photometric_interpretation == "MONOCHROME2":
        meta.photometric_interpretation = "RGB" if channels >= 3 else "MONOCHROME2"
    if colour.shape[2] == 1:
        return colour[..., 0].astype(np.float32)
    if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2]):
        meta.warnings.append(
            f"{meta.photometric_interpretation} image converted to greyscale "
            "(its channels are identical: no information lost)"
        )
        return colour[..., 0].astype(np.float32)
    meta.warnings.append(
        f"{meta.photometric_interpretation} colour image converted to greyscale (ITU-R BT.601 luma)"
    )
    return colour.astype(np.float32) @ _LUMA
