"""Tests for medcnn.io: format detection, DICOM photometry inputs, PNG/JPEG depth, bad input.

Real DICOM files come from pydicom's bundled test files and ../shared/data/dicom_samples
(skipped with a reason when absent). PNG/JPEG fixtures are built in memory with Pillow.
"""
from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medcnn.io import DEFAULT_MAX_PIXELS, MedImage, UnsupportedImageError, read_image

MONO2_CXR = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
ACCEPTED_RE = r"Accepted: DICOM \(\.dcm or no extension\), PNG, JPEG"


@pytest.fixture(scope="module")
def samples(dicom_samples: Path) -> Path:
    """../shared/data/dicom_samples (conftest skips when ../shared/data is absent)."""
    if not dicom_samples.is_dir():
        pytest.skip(f"DICOM samples not found at {dicom_samples}")
    return dicom_samples


def pydicom_file(name: str) -> str:
    return pydicom.data.get_testdata_file(name)


def read_quiet(source, **kw) -> MedImage:
    """read_image with its (expected) warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_image(source, **kw)


def png_bytes(arr: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG", **save) if mode else Image.fromarray(arr).save(
        buf, format="PNG", **save)
    return buf.getvalue()


def make_dicom(**attrs) -> bytes:
    """A minimal DICOM Part 10 file with the given attributes (no patient data)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = attrs.pop("SOPClassUID", SecondaryCaptureImageStorage)
    ds.SOPInstanceUID = generate_uid()
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def mono_dicom(arr: np.ndarray, **attrs) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint16)
    return make_dicom(Modality="OT", Rows=arr.shape[0], Columns=arr.shape[1], SamplesPerPixel=1,
                      PhotometricInterpretation="MONOCHROME2", BitsAllocated=16, BitsStored=16, HighBit=15,
                      PixelRepresentation=0, PixelData=arr.tobytes(), **attrs)


# --------------------------------------------------------------------------------------
# Every real file: decodes to finite float32 (H, W) or raises UnsupportedImageError
# --------------------------------------------------------------------------------------

def _sweep(paths: list[Path]) -> tuple[int, list[tuple[str, str]], list[tuple[str, str]]]:
    decoded, raised, escaped = 0, [], []
    for path in paths:
        try:
            img = read_quiet(path)
        except UnsupportedImageError as e:
            raised.append((path.name, str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - this is what the test is looking for
            escaped.append((path.name, f"{type(e).__name__}: {e}"))
            continue
        px = img.pixels
        if not (px.dtype == np.float32 and px.ndim == 2 and min(px.shape) >= 2 and np.isfinite(px).all()):
            escaped.append((path.name, f"bad pixels {px.dtype} {px.shape}"))
        decoded += 1
    return decoded, raised, escaped


def _report(title: str, decoded: int, raised: list[tuple[str, str]], capsys) -> None:
    lines = [f"\n{title}: {decoded} decoded, {len(raised)} raised UnsupportedImageError:"]
    lines += [f"  {name:42s} {reason[:150]}" for name, reason in raised]
    with capsys.disabled():  # listed in the test output even without -s
        print("\n".join(lines))


def test_every_pydicom_test_file_decodes_or_raises_our_error(capsys):
    paths = sorted(Path(p) for p in pydicom.data.get_testdata_files() if os.path.isfile(p))
    decoded, raised, escaped = _sweep(paths)
    _report("pydicom test files", decoded, raised, capsys)
    assert not escaped, escaped
    assert all(reason.strip() for _, reason in raised)
    assert decoded >= 80  # the sweep really decodes (dicomdir images, MR/CT/SC/RT files)
    names = {name for name, _ in raised}
    assert {"CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "examples_palette.dcm"}.isdisjoint(names)
    assert {"rtplan.dcm", "test-SR.dcm", "MR_truncated.dcm", "README.txt"} <= names
    reasons = dict(raised)
    # no preamble, no file meta, big-endian: still recognised as DICOM (an RT Ion Plan)
    assert "without pixel data: SOP class RT Ion Plan Storage" in reasons["ExplVR_BigEndNoMeta.dcm"]


def test_every_shared_sample_decodes_or_raises_our_error(samples, capsys):
    paths = sorted(p for p in samples.iterdir() if p.is_file())
    decoded, raised, escaped = _sweep(paths)
    _report("shared/data/dicom_samples", decoded, raised, capsys)
    assert not escaped, escaped
    dicoms = [p for p in paths if p.suffix == ".dcm"]
    assert decoded == len(dicoms), raised  # every real image sample decodes with the declared decoders


# --------------------------------------------------------------------------------------
# DICOM content
# --------------------------------------------------------------------------------------

EMRI_PAIRS = ["emri_small_RLE", "emri_small_jpeg_2k_lossless", "emri_small_jpeg_ls_lossless",
              "emri_small_big_endian"]


@pytest.mark.parametrize("other", EMRI_PAIRS)
def test_lossless_emri_variants_identical(samples, other):
    for frame in (0, 5, 9):
        ref = read_image(samples / "emri_small.dcm", frame=frame).pixels
        got = read_image(samples / f"{other}.dcm", frame=frame).pixels
        assert np.array_equal(ref, got), (other, frame)
    assert not np.array_equal(read_image(samples / "emri_small.dcm", frame=0).pixels,
                              read_image(samples / "emri_small.dcm", frame=9).pixels)


@pytest.mark.parametrize("a,b", [("693_UNCR", "693_J2KR"), ("MR2_UNCR", "MR2_J2KR")])
def test_lossless_j2k_pairs_identical(samples, a, b):
    x, y = read_image(samples / f"{a}.dcm"), read_image(samples / f"{b}.dcm")
    assert x.pixels.shape == y.pixels.shape and np.array_equal(x.pixels, y.pixels)
    assert x.pixels.std() > 0


def test_pydicom_mr_small_variants_identical():
    ref = read_image(pydicom_file("MR_small.dcm")).pixels
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm"):
        assert np.array_equal(read_image(pydicom_file(name)).pixels, ref), name


def test_multiframe_default_middle_and_frame_choice(samples):
    img = read_image(samples / "emri_small.dcm")
    assert (img.meta.n_frames, img.meta.frame) == (10, 5)
    raw = pydicom.dcmread(samples / "emri_small.dcm").pixel_array
    assert np.array_equal(img.pixels, raw[5].astype(np.float32))
    assert np.array_equal(read_image(samples / "emri_small.dcm", frame=9).pixels, raw[9].astype(np.float32))
    with pytest.raises(UnsupportedImageError, match=r"frame 10 is out of range.*10 frame.*valid: 0\.\.9"):
        read_image(samples / "emri_small.dcm", frame=10)
    with pytest.raises(UnsupportedImageError, match=r"frame -1 is out of range"):
        read_image(samples / "emri_small.dcm", frame=-1)


def test_fake_monochrome1_renders_as_inverse_of_original(samples):
    from medcnn.preprocess import render

    mono1, mono2 = read_image(samples / "Fake_MONOHR1.dcm"), read_image(samples / MONO2_CXR)
    assert mono1.meta.photometric_interpretation == "MONOCHROME1"
    assert mono2.meta.photometric_interpretation == "MONOCHROME2"
    assert np.array_equal(mono1.pixels, mono2.pixels)  # io leaves photometry to the VOI step
    r1, r2 = render(mono1), render(mono2)
    assert r1.std() > 0.1
    np.testing.assert_allclose(r1, 1.0 - r2, atol=1e-6)


def test_ct_small_hounsfield_units_and_meta():
    img = read_image(pydicom_file("CT_small.dcm"))
    m, px = img.meta, img.pixels
    assert (m.modality, m.source_format, m.rescale_type) == ("CT", "dicom", "HU")
    assert (m.rescale_slope, m.rescale_intercept) == (1.0, -1024.0)
    assert m.pixel_representation == 1 and m.bits_stored == 16
    assert m.pixel_spacing == pytest.approx((0.661468, 0.661468))
    raw = pydicom.dcmread(pydicom_file("CT_small.dcm")).pixel_array
    assert np.array_equal(px, raw.astype(np.float32) - 1024.0)
    top_corners = np.concatenate([px[:8, :8].ravel(), px[:8, -8:].ravel()])
    assert -1100 < top_corners.mean() < -800 and top_corners.max() < -700  # air above the body
    assert -100 < np.median(px) < 100  # soft tissue
    assert px.max() > 700  # bone


def test_ct_presets_change_rendering_as_expected():
    from medcnn.preprocess import CT_PRESETS, render

    img = read_image(pydicom_file("CT_small.dcm"))
    px = img.pixels
    for name in ("lung", "mediastinum", "bone", "brain", "abdomen"):
        centre, width = CT_PRESETS[name]
        expected = np.clip((px - (centre - width / 2)) / width, 0, 1)
        # 0.02: LINEAR (PS3.3 C.11.2.1.2.1) differs from this plain ramp by up to 1/(width - 1)
        np.testing.assert_allclose(render(img, window=name), expected, atol=0.02, err_msg=name)
    air = px < -800
    assert render(img, window="lung")[air].mean() > 0.05  # lung window shows air-filled structures
    assert render(img, window="mediastinum")[air].max() == 0.0
    bone = px > 500
    assert render(img, window="bone")[bone].mean() < render(img, window="mediastinum")[bone].mean()


def test_enhanced_ct_reads_functional_groups(samples):
    img = read_image(samples / "eCT_Supplemental.dcm")
    m = img.meta
    assert (m.n_frames, m.frame) == (2, 1)
    assert (m.window_center, m.window_width) == (49.0, 102.0)
    assert (m.rescale_slope, m.rescale_intercept) == (1.0, -1024.0)
    assert m.pixel_spacing == pytest.approx((0.388672, 0.388672))
    raw = pydicom.dcmread(samples / "eCT_Supplemental.dcm").pixel_array[1]
    assert np.array_equal(img.pixels, raw.astype(np.float32) - 1024.0)


def test_voi_lut_sequence_and_modality_lut_sequence(samples):
    from pydicom.pixels import apply_modality_lut

    v = read_image(samples / "vlut_04.dcm")
    first, lut, bits = v.meta.voi_lut
    assert (first, bits, lut.dtype, lut.shape) == (0.0, 16, np.float32, (256,))
    assert v.meta.to_dict()["has_voi_lut"] is True
    ds = pydicom.dcmread(samples / "mlut_18.dcm")
    m = read_image(samples / "mlut_18.dcm")
    assert np.array_equal(m.pixels, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


def test_window_first_value_and_meta_fields():
    img = read_image(pydicom_file("MR_small.dcm"))
    assert (img.meta.window_center, img.meta.window_width) == (600.0, 1600.0)
    assert img.meta.transfer_syntax == "Explicit VR Little Endian"
    d = img.meta.to_dict()
    json.dumps(d)  # JSON-serialisable
    assert d["rows"] == d["columns"] == 64


def test_invalid_file_window_is_ignored_with_warning():
    data = mono_dicom(np.arange(16).reshape(4, 4), WindowCenter="40", WindowWidth="0.5")
    with pytest.warns(UserWarning, match="window .* is invalid and was ignored"):
        img = read_image(data)
    assert img.meta.window_center is None and img.meta.window_width is None
    ok = read_image(mono_dicom(np.arange(16).reshape(4, 4), WindowCenter=["40", "400"], WindowWidth=["80", "2000"],
                               VOILUTFunction="SIGMOID"))
    assert (ok.meta.window_center, ok.meta.window_width, ok.meta.voi_lut_function) == (40.0, 80.0, "SIGMOID")


def test_meta_never_holds_patient_identifiers():
    identifying = ("PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "InstitutionName",
                   "InstitutionAddress", "ReferringPhysicianName", "AccessionNumber", "StudyDate",
                   "StudyID", "OperatorsName", "PerformingPhysicianName", "StudyInstanceUID")
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm"):
        ds = pydicom.dcmread(pydicom_file(name))
        values = [str(ds.get(k)) for k in identifying if str(ds.get(k) or "").strip()]
        assert values, name  # the file really has identifiers to leak
        meta = read_image(pydicom_file(name)).meta.to_dict()
        dumped = json.dumps(meta)
        for value in values:
            assert json.dumps(value) not in dumped, (name, value)  # no meta string equals an identifier
            assert not any(isinstance(v, str) and value in v for k, v in meta.items() if k != "manufacturer")


@pytest.mark.parametrize("name", ["examples_rgb_color.dcm", "examples_ybr_color.dcm", "examples_palette.dcm"])
def test_colour_dicom_becomes_grey_with_warning(name):
    with pytest.warns(UserWarning, match="converted to greyscale"):
        img = read_image(pydicom_file(name))
    assert img.pixels.ndim == 2 and img.meta.original_channels == 3
    assert any("greyscale" in w for w in img.meta.warnings)


def test_rgb_dicom_luma_values():
    ds = pydicom.dcmread(pydicom_file("examples_rgb_color.dcm"))
    rgb = ds.pixel_array[ds.get("NumberOfFrames", 1) // 2] if ds.get("NumberOfFrames", 1) > 1 else ds.pixel_array
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(read_quiet(pydicom_file("examples_rgb_color.dcm")).pixels, expected, atol=1e-3)


# --------------------------------------------------------------------------------------
# PNG / JPEG
# --------------------------------------------------------------------------------------

def test_png_8bit_and_16bit_keep_exact_values():
    rng = np.random.default_rng(0)
    a8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    img = read_image(png_bytes(a8))
    assert img.meta.source_format == "png" and img.meta.modality == "OT" and img.meta.bits_stored == 8
    assert np.array_equal(img.pixels, a8.astype(np.float32)) and img.pixels.dtype == np.float32
    a16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    a16[0, 0] = 65535
    assert Image.fromarray(a16).mode == "I;16"
    img = read_image(png_bytes(a16))
    assert img.meta.bits_stored == 16 and img.pixels.max() == 65535.0
    assert np.array_equal(img.pixels, a16.astype(np.float32))


def test_png_16bit_rgb_keeps_depth():
    import cv2

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 65536, (12, 16, 3), dtype=np.uint16)
    ok, enc = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV writes BGR
    assert ok
    with pytest.warns(UserWarning, match="converted to greyscale"):
        img = read_image(enc.tobytes())
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(img.pixels, expected, rtol=1e-5)
    assert img.meta.bits_stored == 16 and img.pixels.max() > 255


def test_png_rgb_and_rgba_become_grey_with_warning():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="RGB colour image converted to greyscale"):
        img = read_image(png_bytes(rgb))
    assert img.pixels.shape == (10, 12) and img.meta.original_channels == 3
    np.testing.assert_allclose(img.pixels, np.asarray(Image.fromarray(rgb).convert("L"), np.float32), atol=1.0)
    rgba = np.dstack([rgb, np.full((10, 12), 7, np.uint8)])
    with pytest.warns(UserWarning) as record:
        img2 = read_image(png_bytes(rgba))
    messages = " | ".join(str(w.message) for w in record)
    assert "alpha channel dropped" in messages and "RGB colour image converted" in messages
    assert img2.meta.original_channels == 4 and np.array_equal(img.pixels, img2.pixels)


def test_grey_stored_as_rgb_and_palette_png_are_exact():
    grey = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    with pytest.warns(UserWarning, match="no information lost"):
        img = read_image(png_bytes(np.dstack([grey] * 3)))
    assert np.array_equal(img.pixels, grey.astype(np.float32))
    pal = Image.fromarray(grey).convert("P")  # greyscale palette
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert np.array_equal(read_quiet(buf.getvalue()).pixels, np.asarray(pal.convert("L"), np.float32))


def test_jpeg_exif_orientation_is_applied():
    upright = np.zeros((40, 24), np.uint8)
    upright[:10, :] = 255  # bright band at the top of the upright image
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 24 rows x 40 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    img = read_image(buf.getvalue())
    assert img.meta.source_format == "jpeg"
    assert img.pixels.shape == (40, 24) and (img.meta.rows, img.meta.columns) == (40, 24)
    assert img.pixels[:8].mean() > 200 and img.pixels[14:].mean() < 30


def test_jpeg_grey_and_colour():
    rng = np.random.default_rng(3)
    grey = (np.add.outer(np.arange(32), np.arange(32)) * 4).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=100)
    img = read_image(buf.getvalue())
    assert img.pixels.shape == (32, 32) and np.abs(img.pixels - grey).max() <= 8 and not img.meta.warnings
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG")
    with pytest.warns(UserWarning, match="converted to greyscale"):
        assert read_image(buf.getvalue()).pixels.shape == (16, 16)


def test_constant_image_warns_but_returns():
    with pytest.warns(UserWarning, match="constant image: every pixel is 7"):
        img = read_image(png_bytes(np.full((8, 8), 7, np.uint8)))
    assert img.pixels.max() == 7.0 and any("constant" in w for w in img.meta.warnings)


# --------------------------------------------------------------------------------------
# Sources and content detection
# --------------------------------------------------------------------------------------

def test_sources_bytes_path_str_filelike(tmp_path):
    data = Path(pydicom_file("CT_small.dcm")).read_bytes()
    ref = read_image(data).pixels
    path = tmp_path / "image"  # upload named 'image', no extension
    path.write_bytes(data)
    assert np.array_equal(read_image(path).pixels, ref)
    assert np.array_equal(read_image(str(path)).pixels, ref)
    with open(path, "rb") as f:
        assert np.array_equal(read_image(f).pixels, ref)
    stream = io.BytesIO(data)
    stream.seek(500)  # getvalue() streams (BytesIO, Streamlit UploadedFile) are read whole
    assert np.array_equal(read_image(stream).pixels, ref)
    assert np.array_equal(read_image(bytearray(data)).pixels, ref)

    class ReadOnly:
        def read(self):
            return data

    assert np.array_equal(read_image(ReadOnly()).pixels, ref)
    with pytest.raises(TypeError, match="expects bytes, a path or a binary file-like"):
        read_image(12345)


def test_format_detected_by_content_not_name(tmp_path):
    png = png_bytes(np.arange(64, dtype=np.uint8).reshape(8, 8))
    (tmp_path / "scan.dcm").write_bytes(png)
    assert read_image(tmp_path / "scan.dcm").meta.source_format == "png"
    dcm = Path(pydicom_file("MR_small.dcm")).read_bytes()
    (tmp_path / "photo.png").write_bytes(dcm)
    assert read_image(tmp_path / "photo.png").meta.source_format == "dicom"


def test_dicom_without_preamble():
    data = Path(pydicom_file("CT_small.dcm")).read_bytes()
    assert data[128:132] == b"DICM"
    bare = data[132:]  # no preamble, no magic: starts with the (0002,xxxx) file meta group
    assert np.array_equal(read_image(bare).pixels, read_image(data).pixels)


# --------------------------------------------------------------------------------------
# Bad input: one error type, specific messages
# --------------------------------------------------------------------------------------

def _tiny_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with no image data (decompression-bomb probe)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _sr_dicom() -> bytes:
    from pydicom.uid import ComprehensiveSRStorage

    return make_dicom(SOPClassUID=ComprehensiveSRStorage, Modality="SR")


BAD_INPUTS = {
    "empty": (lambda: b"", r"empty \(0 bytes\)"),
    "text": (lambda: b"patient,label\nA,1\n" * 10, r"not an image: it looks like text"),
    "pdf": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", r"not an image: it looks like a PDF"),
    "zip": (lambda: b"PK\x03\x04" + bytes(100), r"not an image: it looks like a ZIP"),
    "sr_no_pixels": (_sr_dicom, r"without pixel data: SOP class Comprehensive SR Storage, modality SR"),
    "rtplan_no_pixels": (lambda: Path(pydicom_file("rtplan.dcm")).read_bytes(),
                         r"without pixel data: SOP class RT Plan Storage, modality RTPLAN"),
    "truncated_dicom": (lambda: Path(pydicom_file("CT_small.dcm")).read_bytes()[:30000], r"truncated or corrupt DICOM"),
    "truncated_j2k": (lambda: Path(pydicom_file("MR_small_jp2klossless.dcm")).read_bytes()[:-1500],
                      r"truncated or corrupt DICOM"),
    "truncated_png": (lambda: png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:600],
                      r"truncated or corrupt PNG"),
    "truncated_jpeg": (lambda: _jpeg_bytes()[:400], r"truncated or corrupt JPEG"),
    "png_garbage_header": (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 4, r"corrupt PNG header"),
    "png_bomb_header": (lambda: _tiny_png_header(100_000, 100_000), r"10,000,000,000 pixels|too large"),
    "png_one_pixel": (lambda: png_bytes(np.zeros((1, 1), np.uint8)), r"1x1 pixels; at least 2x2"),
    "png_one_row": (lambda: png_bytes(np.zeros((1, 50), np.uint8)), r"1x50 pixels; at least 2x2"),
    "dicom_one_pixel": (lambda: mono_dicom(np.zeros((1, 1))), r"1x1 pixels \(Rows x Columns\); at least 2x2"),
    "dicom_zero_size": (lambda: make_dicom(Rows=0, Columns=0, BitsAllocated=16, PixelRepresentation=0,
                                           PixelData=b""), r"0x0 pixels"),
    "dicom_nan_pixels": (
        lambda: make_dicom(Rows=2, Columns=2, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                           BitsAllocated=32, FloatPixelData=np.array([1, np.nan, 2, 3], np.float32).tobytes()),
        r"non-finite pixel values"),
}


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_specific_error(case):
    make, pattern = BAD_INPUTS[case]
    with pytest.raises(UnsupportedImageError, match=pattern) as info:
        read_quiet(make())
    assert isinstance(info.value, ValueError)
    assert pytest.approx(0) != len(str(info.value)) and info.match(ACCEPTED_RE)


def test_pixel_budget_checked_before_decoding():
    with pytest.raises(UnsupportedImageError, match=r"64x64 = 4,096 pixels, over the budget of 1,000"):
        read_image(png_bytes(np.zeros((64, 64), np.uint8)), max_pixels=1000)
    with pytest.raises(UnsupportedImageError, match=r"128x128 = 16,384 pixels, over the budget of 1,000"):
        read_image(pydicom_file("CT_small.dcm"), max_pixels=1000)
    assert DEFAULT_MAX_PIXELS >= 4096 * 4096  # a large CR fits the default budget


@pytest.mark.parametrize("name,package", [
    ("MR_small_jp2klossless.dcm", r"pip install pylibjpeg \+ pylibjpeg-openjpeg"),
    ("MR_small_jpeg_ls_lossless.dcm", r"pip install pyjpegls"),
    ("JPGExtended.dcm", r"pip install pylibjpeg \+ pylibjpeg-libjpeg"),
])
def test_missing_decoder_names_the_package(monkeypatch, name, package):
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: not self.UID.is_encapsulated))
    with pytest.raises(UnsupportedImageError, match=rf"no decoder is installed for the transfer syntax .*{package}"):
        read_image(pydicom_file(name))
    read_image(pydicom_file("MR_small.dcm"))  # native (uncompressed) data needs no plugin


def test_png_frame_out_of_range():
    with pytest.raises(UnsupportedImageError, match=r"frame 1 is out of range: a PNG image has 1 frame"):
        read_image(png_bytes(np.zeros((4, 4), np.uint8)), frame=1)


def test_missing_file_is_our_error(tmp_path):
    with pytest.raises(UnsupportedImageError, match=r"file not found"):
        read_image(tmp_path / "nope.dcm")


def test_corrupted_bytes_never_escape_other_exceptions(samples):
    """Seeded fuzz: flipped bytes and cuts in real files give an image or our error, nothing else."""
    rng = np.random.default_rng(1234)
    sources = [Path(pydicom_file("CT_small.dcm")), Path(pydicom_file("MR_small_jp2klossless.dcm")),
               Path(pydicom_file("MR_small_RLE.dcm")), Path(pydicom_file("JPEGLSNearLossless_16.dcm")),
               samples / "emri_small_jpeg_ls_lossless.dcm", samples / "JPEG-LL.dcm"]
    blobs = [p.read_bytes() for p in sources] + [png_bytes(rng.integers(0, 255, (32, 32), np.uint8)), _jpeg_bytes()]
    for blob in blobs:
        for _ in range(12):
            data = bytearray(blob)
            pos = rng.integers(0, len(data), size=int(rng.integers(1, 8)))
            for p, v in zip(pos.tolist(), rng.integers(0, 256, size=pos.size).tolist()):
                data[p] = v
            if rng.random() < 0.3:
                data = data[: int(rng.integers(1, len(data)))]
            try:
                img = read_quiet(bytes(data))
            except UnsupportedImageError as e:
                assert str(e)
            else:
                assert img.pixels.dtype == np.float32 and np.isfinite(img.pixels).all()
