"""Comment segments inside compressed pixel data (JPEG COM, JPEG 2000 COM) are removed, pixels kept."""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames, get_frame
from pydicom.uid import JPEGBaseline8Bit, MPEG2MPML, SecondaryCaptureImageStorage, generate_uid

from medcnn.privacy import DeidentificationError, deidentify_bytes
from medcnn.privacy.codestream import strip_pixel_comments

SECRET = b"Patient SMITH^JOHN 1970-01-02"


def read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name))


def frames_of(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data)).pixel_array


def jpeg_com(text: bytes) -> bytes:
    """A JPEG COM segment (ISO/IEC 10918-1 B.2.4.5): FFFE, length (counting itself), text."""
    return b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text


def j2k_com(text: bytes) -> bytes:
    """A JPEG 2000 COM segment (15444-1 A.9.2): FF64, Lcom, Rcom = 1 (Latin text), text."""
    return b"\xff\x64" + struct.pack(">HH", len(text) + 4, 1) + text


def with_jpeg_comment(frame: bytes, text: bytes = SECRET) -> bytes:
    return frame[:2] + jpeg_com(text) + frame[2:]  # right after SOI


def with_j2k_main_comment(frame: bytes, text: bytes = SECRET) -> bytes:
    siz_end = 4 + struct.unpack(">H", frame[4:6])[0]  # SOC, then SIZ (A.5.1)
    return frame[:siz_end] + j2k_com(text) + frame[siz_end:]


def first_sot(frame: bytes) -> int:
    at = 2
    while frame[at:at + 2] != b"\xff\x90":
        at += 2 + struct.unpack(">H", frame[at + 2:at + 4])[0]
    return at


def with_j2k_tile_comment(frame: bytes, text: bytes = SECRET) -> bytes:
    """The comment in the first tile-part header, its Psot grown to match (A.4.2)."""
    sot = first_sot(frame)
    psot = struct.unpack(">I", frame[sot + 6:sot + 10])[0]
    segment = j2k_com(text)
    new_psot = psot + len(segment) if psot else 0
    return frame[:sot + 6] + struct.pack(">I", new_psot) + frame[sot + 10:sot + 12] + segment + frame[sot + 12:]


def rebuilt(name: str, edit, *, frames=None, has_bot: bool = False) -> bytes:
    ds = read(name)
    chosen = frames if frames is not None else range(len(frames_of(ds)))
    new = [edit(f) if i in chosen else f for i, f in enumerate(frames_of(ds))]
    ds.PixelData = encapsulate(new, has_bot=has_bot)
    return to_bytes(ds)


def gradient_jpeg(comment: bytes, size: int = 64) -> bytes:
    """A real baseline JPEG written by Pillow with a COM segment."""
    y, x = np.mgrid[:size, :size]
    buf = io.BytesIO()
    Image.fromarray(((x * 3 + y * 2) % 256).astype(np.uint8)).save(buf, "JPEG", quality=90, comment=comment)
    return buf.getvalue()


def jpeg_dicom(frames: list[bytes], *, extended: bool = False) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "SMITH^JOHN", "12345", "OT"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(frames)
    if extended:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        ds.PixelData = encapsulate(frames, has_bot=len(frames) > 1)
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def check_removed(data: bytes, reference: np.ndarray, removed: int) -> bytes:
    out, summary = deidentify_bytes(data, check_pixels=False)
    assert SECRET in data and b"SMITH" not in out
    assert summary.comments_removed == removed
    assert any(f"removed {removed} comment segment(s)" in w for w in summary.warnings)
    assert np.array_equal(pixels(out), reference)
    return out


def test_pillow_jpeg_comment_is_removed_and_pixels_decode_identically():
    data = jpeg_dicom([gradient_jpeg(SECRET)])
    check_removed(data, pixels(data), 1)


@pytest.mark.parametrize("extended", [False, True])
def test_multi_frame_offsets_are_rebuilt(extended):
    plain = [gradient_jpeg(b""), gradient_jpeg(b"")]
    data = jpeg_dicom([gradient_jpeg(SECRET), plain[1]], extended=extended)
    out = check_removed(data, pixels(jpeg_dicom(plain)), 1)
    ds = pydicom.dcmread(io.BytesIO(out))
    if extended:  # the new Extended Offset Table points at each frame
        offsets = struct.unpack("<2Q", ds.ExtendedOffsetTable)
        lengths = struct.unpack("<2Q", ds.ExtendedOffsetTableLengths)
        got = list(generate_frames(ds.PixelData, extended_offsets=(list(offsets), list(lengths))))
    else:  # the Basic Offset Table is non-empty and correct
        assert ds.PixelData[4:8] == struct.pack("<I", 8)
        got = [get_frame(ds.PixelData, i) for i in range(2)]
    assert [g.rstrip(b"\x00") for g in got] == [p.rstrip(b"\x00") for p in plain]


@pytest.mark.parametrize("name, edit", [
    ("JPGExtended.dcm", with_jpeg_comment),  # JPEG extended (process 2 & 4)
    ("SC_rgb_jpeg_gdcm.dcm", with_jpeg_comment),  # JPEG lossless, first-order prediction
    ("MR_small_jpeg_ls_lossless.dcm", with_jpeg_comment),  # JPEG-LS lossless
    ("JPEG2000.dcm", with_j2k_main_comment),  # JPEG 2000, comment in the main header
    ("MR_small_jp2klossless.dcm", with_j2k_main_comment),
    ("JPEG2000.dcm", with_j2k_tile_comment),  # ... in a tile-part header (Psot shrinks back)
])
def test_comment_inserted_into_a_pydicom_file_is_removed(name, edit):
    original = to_bytes(read(name))
    out = check_removed(rebuilt(name, edit), pixels(original), 1)
    # exactly the original codestream again (a tile-part's Psot included)
    [got], [want] = (frames_of(pydicom.dcmread(io.BytesIO(d))) for d in (out, original))
    assert got.rstrip(b"\x00\xff") == want.rstrip(b"\x00\xff")


def test_comment_in_every_frame_of_a_multi_frame_jpeg():
    original = to_bytes(read("examples_ybr_color.dcm"))
    data = rebuilt("examples_ybr_color.dcm", with_jpeg_comment, frames={0, 4, 29}, has_bot=True)
    check_removed(data, pixels(original), 3)


def test_jpeg_comment_after_the_scan_and_trailing_text_are_removed():
    ds = read("JPGExtended.dcm")
    frame = frames_of(ds)[0].rstrip(b"\x00\xff")
    assert frame.endswith(b"\xff\xd9")
    ds.PixelData = encapsulate([frame[:-2] + jpeg_com(SECRET) + frame[-2:] + b"trailing " + SECRET])
    data = to_bytes(ds)
    check_removed(data, pixels(to_bytes(read("JPGExtended.dcm"))), 2)


def test_tile_part_comment_is_blanked_when_a_tlm_marker_lists_tile_part_lengths():
    ds = read("JPEG2000.dcm")
    frame = with_j2k_tile_comment(frames_of(ds)[0].rstrip(b"\x00"))
    sot = first_sot(frame)
    tlm = b"\xff\x55" + struct.pack(">HBB", 8, 0, 0x40) + frame[sot + 6:sot + 10]  # Ptlm = Psot, 32-bit
    ds.PixelData = encapsulate([frame[:sot] + tlm + frame[sot:]])
    data = to_bytes(ds)
    out = check_removed(data, pixels(to_bytes(read("JPEG2000.dcm"))), 1)
    assert len(pydicom.dcmread(io.BytesIO(out)).PixelData) == len(pydicom.dcmread(io.BytesIO(data)).PixelData)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "J2K_pixelrep_mismatch.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                  "MR_small_RLE.dcm", "CT_small.dcm"])
def test_encoder_signatures_and_comment_free_data_are_left_byte_identical(name):
    ds = read(name)
    before = ds.PixelData
    assert strip_pixel_comments(ds) == 0 and ds.PixelData == before


def test_unparseable_codestream_is_refused_with_what_to_do():
    ds = read("JPGExtended.dcm")
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xfe\xff\xff" + SECRET + b"\xff\xd9"])  # COM length past the end
    with pytest.raises(DeidentificationError, match="frame 1 is not a valid JPEG.*runs past the end.*decompress"):
        deidentify_bytes(to_bytes(ds), check_pixels=False)


@pytest.mark.parametrize("edit, match", [
    ("mpeg", "compressed as MPEG2.*cannot be checked"),
    ("jp2", "JP2 file"),
])
def test_codestreams_that_cannot_be_walked_are_refused(edit, match):
    if edit == "mpeg":
        ds = read("JPGExtended.dcm")
        ds.file_meta.TransferSyntaxUID = MPEG2MPML
    else:
        ds = read("GDCMJ2K_TextGBR.dcm")  # JPEG 2000 inside JP2 boxes
    with pytest.raises(DeidentificationError, match=match):
        deidentify_bytes(to_bytes(ds), check_pixels=False)
