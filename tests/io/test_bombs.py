"""Decompression bombs: headers that announce huge images are refused fast, without allocating them.

Every file is built in memory: a PNG whose IHDR announces 100000 x 100000, a JPEG whose SOF
announces 65500 x 65500, DICOM wrappers of JPEG and JPEG 2000 frames whose codestream headers
(SOF / SIZ) announce far more than the DICOM Rows x Columns, and DICOM headers whose
Rows x Columns x Number of Frames is huge. Each must raise :class:`UnsupportedImageError` in under
a second with a traced peak allocation far below the announced size.
"""
from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000, SecondaryCaptureImageStorage, generate_uid

from medcnn.io import UnsupportedImageError, read_image
from medcnn.io.raster import codestream_size

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PEAK_LIMIT = 64 * 2**20  # bytes traced at most while refusing (the announced sizes are GBs)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_announcing(width: int, height: int) -> bytes:
    """A PNG with an IHDR of ``width`` x ``height`` (8-bit grey) and one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def jpeg_bytes(size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), 100, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def patch_sof(data: bytes, rows: int, cols: int) -> bytes:
    """Rewrite the first SOF0/SOF1 marker's Y and X."""
    at = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1))
    return data[: at + 5] + struct.pack(">HH", rows, cols) + data[at + 9:]


def patch_siz(data: bytes, rows: int, cols: int) -> bytes:
    """Rewrite a JPEG 2000 SIZ marker's Xsiz / Ysiz (offsets unchanged)."""
    at = data.find(b"\xff\x4f\xff\x51")
    assert at >= 0
    return data[: at + 8] + struct.pack(">II", cols, rows) + data[at + 16:]


def dicom_with(rows: int, cols: int, frames: int | None, pixel_data: bytes, tsyntax=ExplicitVRLittleEndian,
               encapsulated: bool = False) -> bytes:
    """A minimal secondary-capture DICOM with the given geometry and Pixel Data bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixel_data
    if encapsulated:
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_file_patched(name: str, patch) -> bytes:
    """A bundled pydicom file with its (single) compressed frame rewritten by ``patch``."""
    ds = pydicom.dcmread(TEST_FILES / name)
    frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = encapsulate([patch(frame)])
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _refused_fast_and_small(data: bytes, match: str) -> None:
    read_image(dicom_with(4, 4, None, bytes(range(16))))  # imports and lazy set-up happen before measuring
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(UnsupportedImageError, match=match):
            read_image(data)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 1.0, f"took {seconds:.2f} s to refuse"
    assert peak < PEAK_LIMIT, f"traced peak {peak / 2**20:.1f} MiB while refusing"


BOMBS = {
    "png_100000x100000": (lambda: png_announcing(100_000, 100_000), r"too large|over the budget"),
    "png_9000x9000_under_pillow_limit": (lambda: png_announcing(9000, 9000), r"over the budget"),
    "jpeg_sof_65500x65500": (lambda: patch_sof(jpeg_bytes(), 65500, 65500), r"too large|over the budget"),
    "jpeg_sof_8500x8500_under_pillow_limit": (lambda: patch_sof(jpeg_bytes(), 8500, 8500), r"over the budget"),
    "dicom_rows_cols_65535_frames_10000": (
        lambda: dicom_with(65535, 65535, 10000, b"\x00" * 64), r"over the budget"),
    "dicom_4096x4096_frames_10000": (
        lambda: dicom_with(4096, 4096, 10000, b"\x00" * 4096), r"10,000 frames of 4096x4096 .* over the budget"),
    "dicom_2x2_frames_2e9": (lambda: dicom_with(2, 2, 2_000_000_000, b"\x00" * 16), r"over the budget"),
    "dicom_j2k_frames_10000": (
        lambda: dicom_with(4096, 4096, 10000, encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60]), JPEG2000, True),
        r"over the budget"),
    "dicom_wrapping_j2k_siz_huge": (
        lambda: dicom_file_patched("JPEG2000.dcm", lambda f: patch_siz(f, 60000, 60000)),
        r"compressed frame announces 60000x60000"),
    "dicom_wrapping_jpeg_sof_huge": (
        lambda: dicom_file_patched("SC_rgb_jpeg_dcmtk.dcm", lambda f: patch_sof(f, 65500, 65500)),
        r"compressed frame announces 65500x65500"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_refused_fast_without_allocating(name):
    build, match = BOMBS[name]
    _refused_fast_and_small(build(), match)


def test_raw_j2k_codestream_is_not_accepted():
    data = (TEST_FILES / "JPEG2000.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
    _refused_fast_and_small(patch_siz(frame, 60000, 60000), r"not an image")


def test_codestream_size_reads_headers_of_real_files():
    for name, expected in (("JPEG2000.dcm", (1024, 256)), ("SC_rgb_jpeg_dcmtk.dcm", (100, 100)),
                           ("JPGExtended.dcm", (1024, 256)), ("693_J2KI.dcm", (512, 512))):
        ds = pydicom.dcmread(TEST_FILES / name)
        assert codestream_size(pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)) == expected, name
    assert codestream_size(jpeg_bytes(16)) == (16, 16)
    assert codestream_size(b"not a codestream") is None
    assert codestream_size(b"\xff\xd8\xff") is None  # truncated


def test_multiframe_within_budget_still_reads_and_budget_counts_frames():
    data = dicom_with(8, 8, 4, bytes(range(256)))
    assert read_image(data).pixels.shape == (8, 8)
    with pytest.raises(UnsupportedImageError, match=r"4 frames of 8x8 = 256 pixels, over the budget of 200"):
        read_image(data, max_pixels=200)
