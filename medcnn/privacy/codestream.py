"""Comment segments inside compressed pixel data: found, and removed without touching the image.

A compressed (encapsulated) Pixel Data element holds one codestream per frame, and codestreams
carry free-text comment segments that a DICOM attribute walk never sees:

* JPEG (ISO/IEC 10918-1 B.2.4.5: COM, marker ``FFFE``; baseline, extended, lossless) and
  JPEG-LS (ISO/IEC 14495-1, same marker syntax), anywhere between marker segments;
* JPEG 2000 and High-Throughput JPEG 2000 (ISO/IEC 15444-1 A.9.2 / 15444-15: COM, marker
  ``FF64``), in the main header or in a tile-part header.

:func:`strip_pixel_comments` walks each frame's marker segments (never the entropy-coded data)
and drops every comment except a short list of encoder signatures (``Kakadu-v7.3.3``, ``Created
by OpenJPEG version 2.3.0``, ``Creator: JasPer Version 1.701.0`` ...: text written by software,
never by a person, so files whose only comment is the encoder's name keep byte-identical Pixel
Data). Bytes after the end-of-image marker are dropped too (padding, ``00`` or ``FF``, is not
counted; re-encapsulation pads items to even length). Removing a segment shifts no entropy-coded
byte, so every frame decodes to the same pixels. A tile-part's own length (Psot, A.4.2) is
reduced by what was removed from its header; when a tile-part length marker (TLM) would also need
rewriting, the comment is blanked in place instead (same length, its text overwritten with
spaces). The frames are then re-encapsulated with one fragment per frame (PS3.5 A.4), with a
Basic Offset Table if the input had one, or with a new Extended Offset Table (7FE0,0001/0002) if
the input had that.

Fail closed: a frame that does not parse as its transfer syntax says, frames that cannot be told
apart, or an encapsulated transfer syntax whose codestream we cannot walk (MPEG, HEVC, JPEG XL, a
JPEG 2000 inside a JP2 file wrapper ...) raise :class:`CodestreamError`, so the caller refuses to
export rather than pass unchecked text through. RLE Lossless has no place for text and is left
as it is. JPEG application segments (APPn: JFIF, Exif, Adobe) are kept; see the note in
:data:`JPEG_SYNTAXES`.
"""
from __future__ import annotations

import re
import struct

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import UID

from medcnn.notices import raised

__all__ = ["CodestreamError", "J2K_SYNTAXES", "JPEG_LS_SYNTAXES", "JPEG_SYNTAXES", "strip_pixel_comments"]

_BASE = "1.2.840.10008.1.2."
#: JPEG (ISO/IEC 10918-1) process transfer syntaxes, retired ones included. APPn segments are kept:
#: APP14 (Adobe) decides the colour transform and APP0 (JFIF) the colour space, so they cannot be
#: dropped blindly, and encoders of medical images do not write Exif / XMP text into them.
JPEG_SYNTAXES = frozenset(f"{_BASE}4.{n}" for n in (*range(50, 67), 70))
#: JPEG-LS lossless and near-lossless (ISO/IEC 14495-1).
JPEG_LS_SYNTAXES = frozenset({f"{_BASE}4.80", f"{_BASE}4.81"})
#: JPEG 2000 (Part 1 and Part 2 multi-component) and High-Throughput JPEG 2000.
J2K_SYNTAXES = frozenset(f"{_BASE}4.{n}" for n in (90, 91, 92, 93, 201, 202, 203))
_RLE = f"{_BASE}5"

# Comments written by encoders, never by a person: kept. Whole-text matches only.
_ENCODER_SIGNATURES = tuple(re.compile(p) for p in (
    r"Kakadu-v?\d+(\.\d+)*[a-zA-Z]?",
    r"Created by (GDCM/)?OpenJPEG version \d+(\.\d+)*",
    r"CREATOR: gd-jpeg v\d+(\.\d+)* \(using IJG JPEG v\d+[a-z]?\)(, (default )?quality = \d+)?",
    r"LEAD Technologies Inc\. V\d+(\.\d+)*",
    r"Intel\(R\) JPEG Library, version \d+(\.\d+)*",
    r"Creator: JasPer Version \d+(\.\d+)*",
))
_SOI, _EOI, _COM, _SOS = 0xD8, 0xD9, 0xFE, 0xDA  # JPEG markers (second byte)
_SOC, _SOT, _SOD, _EOC, _J2K_COM, _TLM = b"\xff\x4f", b"\xff\x90", b"\xff\x93", b"\xff\xd9", b"\xff\x64", b"\xff\x55"


class CodestreamError(ValueError):
    """Compressed pixel data whose comment segments cannot be found safely (the message says why)."""


def _is_signature(text: bytes) -> bool:
    """True when a comment's text is exactly an encoder's signature (see module docstring)."""
    decoded = text.decode("latin-1").strip("\x00 \r\n")
    return any(p.fullmatch(decoded) for p in _ENCODER_SIGNATURES)


def _u16(data: bytes, at: int) -> int:
    if at + 2 > len(data):
        raise CodestreamError("it ends inside a marker segment")
    return struct.unpack_from(">H", data, at)[0]


def _trailing(data: bytes, end: int) -> int:
    """1 when bytes other than padding (00 or FF) follow the end of the codestream (they are dropped)."""
    return 1 if data[end:].strip(b"\x00\xff") else 0


def _scan_end(data: bytes, start: int, *, jpeg_ls: bool) -> int:
    """Index of the marker that ends the entropy-coded data starting at ``start`` (or ``len``).

    JPEG: ``FF 00`` is a stuffed byte and ``FF D0``..``FF D7`` are restart markers inside the scan.
    JPEG-LS (14495-1 A.1): ``FF`` followed by a byte below ``80`` is bit stuffing.
    """
    at = data.find(b"\xff", start)
    while 0 <= at < len(data) - 1:
        nxt = data[at + 1]
        inside = nxt < 0x80 if jpeg_ls else nxt == 0x00
        if not (inside or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF):
            return at
        at = data.find(b"\xff", at + (1 if nxt == 0xFF else 2))
    return len(data)


def _strip_jpeg(data: bytes, *, jpeg_ls: bool) -> tuple[bytes, int]:
    """(codestream without comment segments, number removed) of one JPEG / JPEG-LS frame."""
    if data[:2] != b"\xff\xd8":
        raise CodestreamError("it does not start with a JPEG start-of-image marker")
    out, at, removed = bytearray(data[:2]), 2, 0
    while at < len(data):
        if data[at] != 0xFF:
            if not data[at:].strip(b"\x00"):
                break  # zero padding after entropy data that ran to the end
            raise CodestreamError(f"a marker was expected at byte {at}")
        fill = at
        while fill + 1 < len(data) and data[fill + 1] == 0xFF:
            fill += 1
        if fill + 1 >= len(data):
            raise CodestreamError("it ends inside a marker")
        marker = data[fill + 1]
        if marker == _EOI:
            out += data[at:fill + 2]
            return bytes(out), removed + _trailing(data, fill + 2)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers (RSTn, TEM)
            out += data[at:fill + 2]
            at = fill + 2
            continue
        if marker in (0x00, _SOI):
            raise CodestreamError(f"an invalid marker FF{marker:02X} was found at byte {fill}")
        length = _u16(data, fill + 2)
        end = fill + 2 + length
        if length < 2 or end > len(data):
            raise CodestreamError(f"the FF{marker:02X} segment at byte {fill} runs past the end")
        if marker == _COM and not _is_signature(data[fill + 4:end]):
            removed += 1
        else:
            out += data[at:end]
        at = end
        if marker == _SOS:
            at_end = _scan_end(data, at, jpeg_ls=jpeg_ls)
            out += data[at:at_end]
            at = at_end
    return bytes(out), removed  # no end-of-image marker: the scan ran to the end of the frame


def _j2k_segment(data: bytes, at: int, limit: int) -> tuple[bytes, int]:
    """(marker, end) of the marker segment at ``at``, checked to end before ``limit``."""
    marker = data[at:at + 2]
    if len(marker) < 2 or marker[0] != 0xFF:
        raise CodestreamError(f"a marker was expected at byte {at}")
    end = at + 2 + _u16(data, at + 2)
    if end > limit or end <= at + 3:
        raise CodestreamError(f"the {marker.hex().upper()} segment at byte {at} runs past its end")
    return marker, end


def _strip_j2k(data: bytes) -> tuple[bytes, int]:
    """(codestream without comment segments, number removed or blanked) of one JPEG 2000 frame."""
    if data[:2] != _SOC:
        if data[4:8] == b"jP  ":
            raise CodestreamError("it is a JP2 file (boxes around the codestream), which DICOM does not allow")
        raise CodestreamError("it does not start with a JPEG 2000 start-of-codestream marker")
    stop = len(data.rstrip(b"\x00"))  # after the padding: the end-of-codestream marker should end here
    out, at, removed, has_tlm = bytearray(_SOC), 2, 0, False
    while data[at:at + 2] != _SOT:  # main header (A.5 - A.9)
        marker, end = _j2k_segment(data, at, stop)
        has_tlm |= marker == _TLM
        if marker == _J2K_COM and not _is_signature(data[at + 6:end]):
            removed += 1
        else:
            out += data[at:end]
        at = end
    while data[at:at + 2] == _SOT:  # tile-parts (A.4.2): SOT, header segments, SOD, bit stream
        psot = struct.unpack_from(">I", data, at + 6)[0] if at + 12 <= stop else -1
        tile_end = at + psot if psot else stop - 2
        if _u16(data, at + 2) != 10 or psot < 0 or tile_end > stop:
            raise CodestreamError(f"the tile-part at byte {at} has an invalid length")
        header, pos, dropped = bytearray(), at + 12, 0
        while data[pos:pos + 2] != _SOD:
            marker, end = _j2k_segment(data, pos, tile_end)
            if marker == _J2K_COM and not _is_signature(data[pos + 6:end]):
                removed += 1
                if has_tlm:  # tile-part lengths are listed in the main header: blank, keep the length
                    header += data[pos:pos + 6] + b" " * (end - pos - 6)
                else:
                    dropped += end - pos
            else:
                header += data[pos:end]
            pos = end
        out += data[at:at + 6] + struct.pack(">I", psot - dropped if psot else 0) + data[at + 10:at + 12]
        out += header + data[pos:tile_end]
        at = tile_end
    if data[at:at + 2] != _EOC:
        raise CodestreamError(f"the end-of-codestream marker was expected at byte {at}")
    out += _EOC
    return bytes(out), removed + _trailing(data, at + 2)


def _strip_frame(frame: bytes, syntax: str) -> tuple[bytes, int]:
    if syntax in J2K_SYNTAXES:
        return _strip_j2k(frame)
    return _strip_jpeg(frame, jpeg_ls=syntax in JPEG_LS_SYNTAXES)


def strip_pixel_comments(ds: Dataset) -> int:
    """Remove comment segments from every frame of ``ds``'s encapsulated Pixel Data, in place.

    Native (uncompressed) and RLE pixel data, and data sets without Pixel Data, are left alone.
    When no comment needs removing, Pixel Data is left byte-identical.

    Args:
        ds: the data set; its file meta gives the transfer syntax.

    Returns:
        the number of comment segments (and trailing data blocks) removed or blanked.

    Raises:
        CodestreamError: the pixel data are compressed in a way whose comments cannot be found
            safely (the message says why; decompressing the file first avoids it).
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if "PixelData" not in ds or not syntax or not UID(syntax).is_encapsulated or syntax == _RLE:
        return 0
    name = UID(syntax).name
    if syntax not in JPEG_SYNTAXES | JPEG_LS_SYNTAXES | J2K_SYNTAXES:
        raise CodestreamError(f"the image is compressed as {name}, whose codestream cannot be checked "
                              "for embedded text")
    data = ds.PixelData
    try:
        count = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise CodestreamError("its Number of Frames is not a number") from None
    extended = None
    if ds.get("ExtendedOffsetTable") and ds.get("ExtendedOffsetTableLengths"):
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        with raised(UserWarning):  # pydicom warns when it had to guess frame boundaries
            frames = list(generate_frames(data, number_of_frames=count, extended_offsets=extended))
    except (ValueError, struct.error, UserWarning, EOFError) as e:
        raise CodestreamError(
            f"the frames of the compressed image cannot be told apart ({type(e).__name__})") from None
    if len(frames) != count:
        raise CodestreamError(f"the compressed image holds {len(frames)} frames where {count} were declared")
    cleaned, removed = [], 0
    for index, frame in enumerate(frames, start=1):
        try:
            new, n = _strip_frame(frame, syntax)
        except CodestreamError as e:
            raise CodestreamError(f"frame {index} is not a valid {name} codestream: {e}") from None
        cleaned.append(new)
        removed += n
    if not removed:
        return 0
    if extended is not None:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(cleaned)
    else:
        ds.PixelData = encapsulate(cleaned, has_bot=data[4:8] != b"\x00\x00\x00\x00")
    ds["PixelData"].is_undefined_length = True
    return removed
