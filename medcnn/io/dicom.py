"""DICOM decoding for :func:`medcnn.io.read_image` (private).

Order of operations follows the standard: decode one frame of stored values, then
the Modality LUT (PS3.3 C.11.1: Rescale Slope/Intercept, or a Modality LUT Sequence;
for Enhanced multi-frame objects the Pixel Value Transformation functional group,
C.7.6.16.2.9). The VOI step (C.11.2) is only *described* in the metadata here and
applied by :mod:`medcnn.preprocess`.

Only non-identifying attributes are copied into :class:`~medcnn.io.ImageMeta`; parse
warnings from pydicom are summarised, never repeated, since they may quote values.
"""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pydicom
from pydicom.datadict import keyword_dict
from pydicom.encaps import get_frame
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medcnn.io.types import ImageMeta, UnsupportedImageError, error as _error

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")

# Which pip package decodes which compressed transfer syntax (for the error message).
_JPEG = "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)"
_J2K = "pylibjpeg + pylibjpeg-openjpeg (or python-gdcm)"
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": _JPEG,  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": _JPEG,  # JPEG Extended
    "1.2.840.10008.1.2.4.57": _JPEG,  # JPEG Lossless P14
    "1.2.840.10008.1.2.4.70": _JPEG,  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls (or python-gdcm)",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls (or python-gdcm)",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": _J2K,
    "1.2.840.10008.1.2.4.91": _J2K,
    "1.2.840.10008.1.2.4.201": _J2K,  # HTJ2K
    "1.2.840.10008.1.2.4.202": _J2K,
    "1.2.840.10008.1.2.4.203": _J2K,
    "1.2.840.10008.1.2.5": "pylibjpeg + pylibjpeg-rle",  # RLE (numpy fallback is built in)
}


def decode_dicom(data: bytes, *, frame: int | None, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    """Decode one frame of a DICOM file into float32 modality values plus metadata.

    Args:
        data: the file content (with or without the 128-byte preamble).
        frame: 0-based frame, ``None`` for the middle one.
        max_pixels: budget on Rows x Columns x Number of Frames, checked before decoding.

    Returns:
        (pixels float32 (H, W), meta).

    Raises:
        UnsupportedImageError: see :func:`medcnn.io.read_image`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pixels, meta = _decode(data, frame, max_pixels)
        except UnsupportedImageError:
            raise
        except MemoryError:
            raise _error("not enough memory to decode this DICOM image") from None
        except Exception as e:  # noqa: BLE001 - pydicom/decoders raise many types on bad data
            raise _error(f"truncated or corrupt DICOM data ({type(e).__name__}: {_short(e)})") from None
        except BaseException as e:  # a Rust decoder's panic (pyo3 PanicException) is a BaseException
            if type(e).__name__ != "PanicException":
                raise
            raise _error(f"truncated or corrupt DICOM data (the pixel decoder failed: {_short(e)})") from None
    if caught:
        meta.warnings.append(
            f"pydicom reported {len(caught)} problem(s) with non-conforming elements of this file "
            "(details not shown: they may quote identifying values)"
        )
    return pixels, meta


def _short(e: BaseException, limit: int = 200) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(data: bytes, frame: int | None, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as e:  # noqa: BLE001
        raise _error(f"not a readable DICOM file ({type(e).__name__}: {_short(e)})") from None
    if not any(tag in ds for tag in _PIXEL_TAGS):
        if len(ds) == 0:  # pydicom gives up on the whole data set when an element runs past the end
            raise _error("truncated or corrupt DICOM: no data element could be read after the file header")
        if "Rows" in ds and "Columns" in ds:  # an image whose Pixel Data element was cut off
            raise _error(
                f"truncated or corrupt DICOM: the file describes an image ({_describe_object(ds)}) "
                "but its Pixel Data is missing or incomplete"
            )
        raise _error(f"DICOM file without pixel data: {_describe_object(ds)}; it is not an image")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 2 or cols < 2:
        raise _error(f"the DICOM image is {rows}x{cols} pixels (Rows x Columns); at least 2x2 is required")
    if rows * cols > max_pixels:
        raise _error(
            f"the DICOM image is {rows}x{cols} = {rows * cols:,} pixels, over the budget of "
            f"{max_pixels:,} pixels (max_pixels)"
        )
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames < 1:
        raise _error(f"the DICOM file declares {n_frames} frames (Number of Frames)")
    if rows * cols * n_frames > max_pixels:  # every frame counts: a viewer may step through all
        raise _error(
            f"the DICOM file holds {n_frames:,} frames of {rows}x{cols} = {rows * cols * n_frames:,} pixels, "
            f"over the budget of {max_pixels:,} pixels (max_pixels); export fewer frames or raise max_pixels"
        )
    if frame is None:
        frame = n_frames // 2
    elif not 0 <= frame < n_frames:
        raise _error(f"frame {frame} is out of range: this file has {n_frames} frame(s) (valid: 0..{n_frames - 1})")
    tsyntax = _transfer_syntax(ds)
    _check_decoder(tsyntax)

    meta = ImageMeta(source_format="dicom", rows=rows, columns=cols, n_frames=n_frames, frame=frame)
    _fill_meta(ds, meta, tsyntax)
    index = frame if n_frames > 1 else None
    if tsyntax.is_encapsulated:
        _check_codestream(ds, frame, n_frames, rows, cols)
    arr = pydicom.pixels.pixel_array(ds, index=index)
    pixels = _to_modality(arr, ds, meta)
    return pixels, meta


def _check_codestream(ds: Dataset, frame: int, n_frames: int, rows: int, cols: int) -> None:
    """Refuse a compressed frame whose own header announces more pixels than Rows x Columns.

    The JPEG / JPEG 2000 decoders allocate what the codestream's SOF / SIZ marker says, not
    what the DICOM header says, so a small header can wrap a huge codestream (decompression bomb).
    """
    from medcnn.io.raster import codestream_size

    if "PixelData" not in ds:
        return
    stream = get_frame(ds.PixelData, frame, number_of_frames=n_frames)
    size = codestream_size(stream)
    if size is not None and size[0] * size[1] > rows * cols:
        raise _error(
            f"the compressed frame announces {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels but the "
            f"DICOM header says {rows}x{cols}; the file is corrupt or hostile and was not decoded"
        )


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax; inferred from the encoding when the file meta lacks it."""
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not tsyntax:
        implicit, little = ds.original_encoding
        if implicit:
            tsyntax = ImplicitVRLittleEndian
        else:
            tsyntax = ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian
        ds.file_meta = file_meta if file_meta is not None else pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = tsyntax  # in memory only: lets pydicom pick the decoder
    return UID(str(tsyntax))


def _check_decoder(tsyntax: UID) -> None:
    """Raise a clear error when no installed plugin can decode ``tsyntax``."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise _error(
            f"the transfer syntax {tsyntax.name} ({tsyntax}) is not supported by any DICOM pixel decoder"
        ) from None
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(tsyntax), "python-gdcm")
        raise _error(
            f"no decoder is installed for the transfer syntax {tsyntax.name} ({tsyntax}); "
            f"install it with: pip install {package}"
        )


def _describe_object(ds: Dataset) -> str:
    """SOP class and modality of an object, e.g. 'Comprehensive SR Storage, modality SR'."""
    parts = []
    sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if sop:
        sop = UID(str(sop))
        parts.append(f"SOP class {sop.name}" if sop.name != str(sop) else f"SOP class {sop}")
    if ds.get("Modality"):
        parts.append(f"modality {ds.Modality}")
    return ", ".join(parts) if parts else "unknown object type"


# --------------------------------------------------------------------------------------
# Metadata (non-identifying only)
# --------------------------------------------------------------------------------------

def _functional_group(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """First item of ``sequence`` in the per-frame (preferred) or shared functional groups."""
    for groups, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq and idx < len(seq):
            inner = seq[idx].get(sequence)
            if inner:
                return inner[0]
    return None


def _values(ds: Dataset, keyword: str) -> list[str]:
    """String values of a text/number element, read from the raw bytes when not yet converted.

    Skipping pydicom's value conversion and validation (~10 us per element) matters on the
    benchmarked path; the values here are only display text and numbers we parse ourselves.
    """
    tag = keyword_dict.get(keyword)
    if tag is None or tag not in ds:
        return []
    value = ds.get_item(tag).value  # RawDataElement (bytes) or an already-converted DataElement
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        return [v.strip(" \x00") for v in text.split("\\")]
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v).strip() for v in value]
    return [str(value).strip()]


def _text(ds: Dataset, keyword: str) -> str | None:
    """First value of ``keyword`` as text, ``None`` when absent or empty."""
    values = _values(ds, keyword)
    return values[0] or None if values else None


_AGE_UNITS = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}


def _age_years(text: str | None) -> float | None:
    """Age String (PS3.5 6.2, ``nnnD|W|M|Y``; bare digits read as years, as some archives write
    them) -> years, capped at 90; ``None`` if absent or malformed."""
    text = (text or "").strip().upper()
    if text.isdigit() and len(text) <= 3:
        return min(float(text), 90.0)
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in _AGE_UNITS:
        return None
    return min(int(text[:3]) / _AGE_UNITS[text[3]], 90.0)


def _float(ds: Dataset, keyword: str) -> float | None:
    """First value of ``keyword`` as a finite float, ``None`` when absent or invalid."""
    values = _values(ds, keyword)
    try:
        out = float(values[0])
    except (IndexError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _orientation(ds: Dataset, frame: int) -> tuple[float, ...] | None:
    """Image Orientation (Patient) as 6 finite floats (also from an Enhanced object's Plane
    Orientation functional group), None when absent or malformed."""
    src = ds if "ImageOrientationPatient" in ds else _functional_group(ds, frame, "PlaneOrientationSequence")
    try:
        values = tuple(float(v) for v in (src.get("ImageOrientationPatient") if src is not None else None) or ())
    except (TypeError, ValueError):
        return None
    return values if len(values) == 6 and all(math.isfinite(v) for v in values) else None


def _fill_meta(ds: Dataset, meta: ImageMeta, tsyntax: UID) -> None:
    """Copy the non-identifying image attributes from ``ds`` into ``meta``."""
    meta.modality = _text(ds, "Modality") or "OT"
    meta.photometric_interpretation = _text(ds, "PhotometricInterpretation") or "MONOCHROME2"
    meta.bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    meta.pixel_representation = int(ds.get("PixelRepresentation") or 0)
    meta.transfer_syntax = tsyntax.name
    meta.manufacturer = _text(ds, "Manufacturer")
    meta.body_part = _text(ds, "BodyPartExamined")
    meta.orientation = _orientation(ds, meta.frame)
    meta.view_position = _text(ds, "ViewPosition")
    meta.age_years = _age_years(_text(ds, "PatientAge"))
    meta.original_channels = int(ds.get("SamplesPerPixel") or 1)

    # VOI LUT module (C.11.2), or the Frame VOI LUT functional group of Enhanced objects.
    voi_src = ds if ("WindowCenter" in ds or "VOILUTSequence" in ds) else (
        _functional_group(ds, meta.frame, "FrameVOILUTSequence"))
    if voi_src is not None:
        function = (_text(voi_src, "VOILUTFunction") or "LINEAR").upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            meta.warnings.append(f"unknown VOI LUT Function {function!r}; LINEAR used")
            function = "LINEAR"
        meta.voi_lut_function = function
        centre, width = _float(voi_src, "WindowCenter"), _float(voi_src, "WindowWidth")
        min_width = 1.0 if function == "LINEAR" else 0.0  # C.11.2.1.2.1: LINEAR needs width >= 1
        if centre is not None and width is not None and width >= min_width and width > 0:
            meta.window_center, meta.window_width = centre, width
            meta.window_explanation = _text(voi_src, "WindowCenterWidthExplanation")
        elif _values(voi_src, "WindowCenter"):
            meta.warnings.append("the file's window (centre/width) is invalid and was ignored")
        if voi_src.get("VOILUTSequence"):
            meta.voi_lut = _read_lut(voi_src.VOILUTSequence[0], ds)

    spacing = _values(ds, "PixelSpacing") or _values(ds, "ImagerPixelSpacing")
    if not spacing:
        measures = _functional_group(ds, meta.frame, "PixelMeasuresSequence")
        spacing = _values(measures, "PixelSpacing") if measures is not None else []
    try:
        if len(spacing) == 2 and all(math.isfinite(float(v)) and float(v) > 0 for v in spacing):
            meta.pixel_spacing = (float(spacing[0]), float(spacing[1]))
        elif spacing and any(float(v) != 0 for v in spacing):  # all-zero spacing means "unknown"
            raise ValueError(spacing)
    except ValueError:
        meta.warnings.append("the file's pixel spacing is invalid and was ignored")


def _read_lut(item: Dataset, ds: Dataset) -> tuple[float, np.ndarray, int]:
    """(first mapped value, LUT entries float32, bits per entry) of a LUT item (PS3.3 C.11.1/C.11.2)."""
    n_entries, first, bits = (int(v) for v in item.LUTDescriptor)
    n_entries = n_entries or 65536
    if first >= 32768 and int(ds.get("PixelRepresentation") or 0) == 1:
        first -= 65536  # US/SS ambiguity: signed pixel data means a signed first-mapped value
    elem = item["LUTData"]
    if isinstance(elem.value, (bytes, bytearray)):
        little = ds.original_encoding[1] is not False
        lut = np.frombuffer(elem.value, dtype="<u2" if little else ">u2")
    else:
        lut = np.asarray(elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value])
    lut = lut[:n_entries].astype(np.float32)
    if lut.size == 0:
        raise _error("the file's LUT has no entries (LUT Data is empty)")
    return float(first), lut, bits


# --------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------

def _to_modality(arr: np.ndarray, ds: Dataset, meta: ImageMeta) -> np.ndarray:
    """Stored values of one frame -> float32 (H, W) modality values (PS3.3 C.11.1)."""
    photometric = meta.photometric_interpretation
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        arr = pydicom.pixels.apply_color_lut(arr, ds)
    if arr.ndim == 3:
        channels = arr.shape[2]
        meta.original_channels = channels
        meta.warnings.append(
            f"{photometric} colour image converted to greyscale (ITU-R BT.601 luma); "
            "the window/rescale tags do not apply to it"
        )
        return np.ascontiguousarray(arr[..., :3].astype(np.float32) @ _LUMA)
    if photometric in _COLOUR:
        meta.warnings.append(f"photometric interpretation {photometric} with one sample per pixel read as greyscale")

    if ds.get("ModalityLUTSequence"):
        first, lut, _bits = _read_lut(ds.ModalityLUTSequence[0], ds)
        idx = arr.astype(np.int64) - int(first)
        np.clip(idx, 0, lut.size - 1, out=idx)
        return lut[idx]

    slope, intercept = _float(ds, "RescaleSlope"), _float(ds, "RescaleIntercept")
    rescale_type = _text(ds, "RescaleType")
    if slope is None and intercept is None:
        group = _functional_group(ds, meta.frame, "PixelValueTransformationSequence")
        if group is not None:
            slope, intercept = _float(group, "RescaleSlope"), _float(group, "RescaleIntercept")
            rescale_type = _text(group, "RescaleType")
    if ("RescaleSlope" in ds and slope is None) or ("RescaleIntercept" in ds and intercept is None):
        meta.warnings.append("invalid Rescale Slope/Intercept ignored (identity used)")
    slope = 1.0 if slope is None or slope == 0 else slope
    intercept = 0.0 if intercept is None else intercept
    meta.rescale_slope, meta.rescale_intercept = slope, intercept
    meta.rescale_type = rescale_type or ("HU" if meta.modality == "CT" else None)

    # One conversion, then in place (faster than a mixed-type ufunc); pydicom's buffer is untouched.
    pixels = arr.astype(np.float32)
    if slope != 1.0:
        pixels *= np.float32(slope)
    if intercept != 0.0:
        pixels += np.float32(intercept)
    return pixels
