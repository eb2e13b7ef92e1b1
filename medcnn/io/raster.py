"""PNG and JPEG decoding for :func:`medcnn.io.read_image` (private).

Pixels are returned at full bit depth as float32: 0..255 for 8-bit, 0..65535 for
16-bit PNG. Pillow decodes; 16-bit colour PNG (which Pillow reduces to 8 bits) is
decoded with OpenCV instead. Colour becomes ITU-R BT.601 luma with a warning.

:func:`codestream_size` reads the image size announced by a JPEG (ISO/IEC 10918-1 B.2.2),
JPEG-LS (ISO/IEC 14495-1 C.2.2) or JPEG 2000 (ISO/IEC 15444-1 A.5.1) header without
decoding, so a DICOM frame whose compressed stream announces a huge image is refused
before a decoder allocates it.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from medcnn.notices import quiet
from medcnn.io.types import ImageMeta, error as _error

__all__ = ["codestream_size", "decode_raster"]

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
        with quiet(Image.DecompressionBombWarning,
                   reason="our pixel budget replaces Pillow's global decompression-bomb limit below it"):
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


# JPEG start-of-frame markers (B.1.1.3): SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC);
# plus JPEG-LS SOF55 (F7).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_HEADER_SCAN = 1 << 20  # markers are looked for in the first MiB only


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) announced by a JPEG / JPEG-LS / JPEG 2000 codestream header.

    Only the header is parsed (nothing is decoded or allocated), so this is safe to call on
    hostile input before handing it to a decoder.

    Args:
        data: a compressed frame: a JPEG or JPEG-LS stream (starts ``FF D8``) or a JPEG 2000
            codestream (``FF 4F FF 51``), optionally inside a JP2 file.

    Returns:
        (rows, columns), or ``None`` when the stream is not one of those or its header does
        not announce a size (e.g. a JPEG height of 0, defined later by a DNL marker).
    """
    head = bytes(data[:_HEADER_SCAN])
    if head.startswith(b"\xff\xd8"):
        return _jpeg_sof_size(head)
    at = head.find(_J2K_SOC_SIZ)
    if at < 0 or len(head) < at + 4 + 2 + 2 + 16:
        return None
    # SIZ (A.5.1): Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz (big-endian); the image is the
    # reference grid minus its offset.
    xsiz, ysiz, xo, yo = (int.from_bytes(head[at + 8 + 4 * i: at + 12 + 4 * i], "big") for i in range(4))
    return max(ysiz - yo, 0), max(xsiz - xo, 0)


def _jpeg_sof_size(head: bytes) -> tuple[int, int] | None:
    """Walk the marker segments after SOI up to the first SOF; its Y and X (B.2.2)."""
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte (B.1.1.2)
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers: no length
            i += 2
            continue
        length = int.from_bytes(head[i + 2: i + 4], "big")
        if marker in _SOF_MARKERS:
            if i + 9 > len(head):
                return None
            rows, cols = int.from_bytes(head[i + 5: i + 7], "big"), int.from_bytes(head[i + 7: i + 9], "big")
            return (rows, cols) if rows else None
        if marker == 0xDA or length < 2:  # start of scan before any SOF, or a broken length
            return None
        i += 2 + length
    return None


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
