"""Bounded, seeded fuzzing of :func:`medcnn.io.read_image` (no Hypothesis needed).

Real DICOM files bundled with pydicom (uncompressed CT and MR, JPEG 2000, JPEG baseline, RLE) and
small PNG / JPEG images made in memory are mutated with a seeded generator: bit flips, truncation,
inserted junk, overwritten runs, corrupted DICOM element lengths and tags, swapped transfer-syntax
UIDs and corrupted PNG chunk lengths. Every case must either decode to a finite float32 (H, W)
array or raise :class:`UnsupportedImageError`; anything else (another exception, a wrong array)
fails the test, and the input is saved to ``tests/io/fuzz_regressions/`` so that
:func:`test_fuzz_regressions_stay_fixed` replays it from then on.

The run stops at :data:`TARGET_CASES` or after :data:`TIME_BUDGET_S`, whichever comes first, and
must reach :data:`MIN_CASES` (the count reached is printed).
"""
from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medcnn.io import UnsupportedImageError, read_image

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
SEED = 20260501
TARGET_CASES = 10_000
MIN_CASES = 2000
TIME_BUDGET_S = 45.0
SLOW_CASE_S = 5.0  # one input may not take longer than this to accept or refuse
DICOM_SEEDS = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm")
TRANSFER_SYNTAXES = (
    b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.1.99",
    b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.70", b"1.2.840.10008.1.2.4.80",
    b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.4.201", b"1.2.840.10008.1.2.5", b"1.2.3.4", b"",
)
# Image Pixel module tags (little-endian group, element) whose values the mutator rewrites.
PIXEL_TAGS = tuple(struct.pack("<HH", 0x0028, e) for e in (0x0002, 0x0004, 0x0008, 0x0010, 0x0011, 0x0100,
                                                          0x0101, 0x0103, 0x1052, 0x1053)) + (
    struct.pack("<HH", 0x7FE0, 0x0010), struct.pack("<HH", 0x0002, 0x0010))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def seed_files() -> dict[str, bytes]:
    """The unmutated inputs: pydicom's bundled files plus small PNG / JPEG images."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    seeds = {name: (TEST_FILES / name).read_bytes() for name in DICOM_SEEDS}
    seeds["grey8.png"] = _png(grey)
    seeds["grey16.png"] = _png((grey.astype(np.uint16) * 257))
    seeds["rgb.png"] = _png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    seeds["grey.jpg"] = _jpeg(grey, quality=80)
    seeds["progressive.jpg"] = _jpeg(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), progressive=True)
    return seeds


class Mutator:
    """Seeded byte-level mutations, each aware of the container only as much as it must be."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ops = (self.bit_flips, self.truncate, self.insert_junk, self.overwrite_run, self.dicom_length,
                    self.dicom_tag_value, self.transfer_syntax, self.png_chunk_length, self.duplicate_run)

    def __call__(self, data: bytes) -> tuple[str, bytes]:
        op = self.rng.choice(self.ops)
        out = op(bytearray(data))
        if self.rng.random() < 0.2:  # sometimes stack a second mutation
            out = self.rng.choice(self.ops)(bytearray(out))
        return op.__name__, bytes(out)

    def _pos(self, data: bytearray) -> int:
        return self.rng.randrange(len(data)) if data else 0

    def bit_flips(self, data: bytearray) -> bytearray:
        for _ in range(self.rng.choice((1, 1, 2, 4, 16))):
            if data:
                data[self._pos(data)] ^= 1 << self.rng.randrange(8)
        return data

    def truncate(self, data: bytearray) -> bytearray:
        return data[: self.rng.randrange(len(data) + 1)]

    def insert_junk(self, data: bytearray) -> bytearray:
        junk = bytes(self.rng.randrange(256) for _ in range(self.rng.choice((1, 4, 16, 256))))
        at = self._pos(data)
        return data[:at] + junk + data[at:]

    def overwrite_run(self, data: bytearray) -> bytearray:
        at, n = self._pos(data), self.rng.choice((2, 4, 8, 64))
        data[at: at + n] = bytes([self.rng.choice((0x00, 0xFF, self.rng.randrange(256)))]) * n
        return data

    def duplicate_run(self, data: bytearray) -> bytearray:
        at, n = self._pos(data), self.rng.choice((4, 64, 1024))
        return data[: at + n] + data[at: at + n] + data[at + n:]

    def _tag_positions(self, data: bytearray) -> list[int]:
        found = []
        for tag in PIXEL_TAGS:
            at = data.find(tag)
            if at >= 0:
                found.append(at)
        return found

    def dicom_length(self, data: bytearray) -> bytearray:
        """Rewrite an element's length: explicit VR 2-byte (after the VR) or 4-byte (after 'OB\\0\\0')."""
        spots = self._tag_positions(data)
        if not spots:
            return self.bit_flips(data)
        at = self.rng.choice(spots)
        value = self.rng.choice((0, 1, 3, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, self.rng.randrange(1 << 32)))
        if data[at + 4: at + 6] in (b"OB", b"OW", b"OF", b"OD", b"UN", b"SQ", b"UT"):
            data[at + 8: at + 12] = struct.pack("<I", value)
        elif data[at + 4: at + 6].isalpha():
            data[at + 6: at + 8] = struct.pack("<H", value & 0xFFFF)
        else:  # implicit VR: 4-byte length right after the tag
            data[at + 4: at + 8] = struct.pack("<I", value)
        return data

    def dicom_tag_value(self, data: bytearray) -> bytearray:
        """Overwrite the first bytes of an Image Pixel element's value, or its tag itself."""
        spots = self._tag_positions(data)
        if not spots:
            return self.overwrite_run(data)
        at = self.rng.choice(spots)
        if self.rng.random() < 0.3:
            data[at: at + 4] = self.rng.choice(PIXEL_TAGS)
            return data
        start = at + (8 if data[at + 4: at + 6].isalpha() else 8)
        value = self.rng.choice((b"\x00\x00", b"\xff\xff", b"\x01\x00", b"\x00\x80", b"-1", b"1e9", b"NaN",
                                 b"MONOCHROME1", b"RGB ", b"PALETTE COLOR", b"\x10\x00", b"\x03\x00"))
        data[start: start + len(value)] = value
        return data

    def transfer_syntax(self, data: bytearray) -> bytearray:
        """Replace the Transfer Syntax UID value (same length, padded) with another one."""
        at = data.find(struct.pack("<HH", 0x0002, 0x0010))
        if at < 0 or data[at + 4: at + 6] != b"UI":
            return self.bit_flips(data)
        length = struct.unpack("<H", data[at + 6: at + 8])[0]
        uid = self.rng.choice(TRANSFER_SYNTAXES)[:length]
        data[at + 8: at + 8 + length] = uid + b"\x00" * (length - len(uid))
        return data

    def png_chunk_length(self, data: bytearray) -> bytearray:
        """Corrupt a PNG chunk's length (or, elsewhere, any 4 bytes)."""
        chunks = [i - 4 for kind in (b"IHDR", b"IDAT", b"IEND", b"PLTE") if (i := data.find(kind)) >= 4]
        at = self.rng.choice(chunks) if chunks else self._pos(data)
        data[at: at + 4] = struct.pack(">I", self.rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, self.rng.randrange(1 << 31))))
        return data


def check_case(data: bytes) -> str | None:
    """``None`` when ``data`` decodes correctly or is refused with UnsupportedImageError, else why not."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = read_image(data)
    except UnsupportedImageError:
        problem = None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the point of the test (Rust decoders panic with a BaseException)
        problem = f"{type(e).__name__}: {str(e)[:200]}"
    else:
        px = img.pixels
        if not (isinstance(px, np.ndarray) and px.dtype == np.float32 and px.ndim == 2
                and min(px.shape) >= 2 and np.isfinite(px).all()):
            problem = f"bad pixels: {getattr(px, 'dtype', None)} {getattr(px, 'shape', None)}"
        else:
            problem = None
    seconds = time.perf_counter() - start
    if problem is None and seconds > SLOW_CASE_S:
        problem = f"took {seconds:.1f} s"
    return problem


def save_regression(data: bytes) -> Path:
    REGRESSIONS.mkdir(exist_ok=True)
    path = REGRESSIONS / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def test_fuzz_read_image_accepts_or_refuses_cleanly():
    seeds = seed_files()
    for name, data in seeds.items():  # the unmutated files themselves decode
        assert check_case(data) is None, name
    mutate = Mutator(SEED)
    names = sorted(seeds)
    failures: list[str] = []
    count, deadline = 0, time.monotonic() + TIME_BUDGET_S
    while count < TARGET_CASES and time.monotonic() < deadline:
        name = names[count % len(names)]
        op, data = mutate(seeds[name])
        problem = check_case(data)
        if problem:
            failures.append(f"{name} / {op}: {problem} -> {save_regression(data).name}")
        count += 1
    print(f"fuzz: {count} mutated inputs checked, {len(failures)} failure(s)")
    assert not failures, "\n".join(failures[:20])
    assert count >= MIN_CASES, f"only {count} cases within {TIME_BUDGET_S:.0f} s (need {MIN_CASES})"


def test_fuzz_regressions_stay_fixed():
    files = sorted(REGRESSIONS.glob("*.bin")) if REGRESSIONS.is_dir() else []
    problems = [f"{p.name}: {problem}" for p in files if (problem := check_case(p.read_bytes()))]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ hand-made corpus
def _float_dicom(values: np.ndarray) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "OT", values.shape[0], values.shape[1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _header_only_dicom() -> bytes:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


CORPUS = {
    "empty": (lambda: b"", r"empty"),
    "one_byte": (lambda: b"\x89", r"not an image"),
    "png_1x1": (lambda: _png(np.zeros((1, 1), np.uint8)), r"at least 2x2"),
    "png_65535x1": (lambda: _png(np.zeros((1, 65535), np.uint8)), r"at least 2x2"),
    "dicom_float_nan": (lambda: _float_dicom(np.array([[0, 1], [np.nan, 2]], np.float32)), r"non-finite"),
    "dicom_float_inf": (lambda: _float_dicom(np.array([[0, np.inf], [1, 2]], np.float32)), r"non-finite"),
    "dicom_header_only": (_header_only_dicom, r"Pixel Data is missing|without pixel data"),
    "dicomdir": (lambda: (TEST_FILES / "dicomdirtests" / "DICOMDIR").read_bytes(), r"without pixel data"),
    "structured_report": (lambda: (TEST_FILES / "test-SR.dcm").read_bytes(), r"without pixel data"),
    "truncated_mr": (lambda: (TEST_FILES / "MR_truncated.dcm").read_bytes(), r"truncated or corrupt"),
    "preamble_only": (lambda: b"\x00" * 128 + b"DICM", r"DICOM"),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_hand_made_corpus_is_refused_with_a_clear_message(name):
    build, match = CORPUS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UnsupportedImageError, match=match):
            read_image(build())


def test_float_pixel_data_dicom_decodes_when_finite():
    values = np.array([[0.5, -1.25], [3.0, 2.0]], np.float32)
    img = read_image(_float_dicom(values))
    assert img.pixels.dtype == np.float32 and np.array_equal(img.pixels, values)
