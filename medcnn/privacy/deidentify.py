"""De-identification of DICOM data sets: the Basic Application Level Confidentiality Profile.

Implements DICOM PS3.15 Annex E (E.2, E.3.1) with the attribute table of
:mod:`medcnn.privacy.profile` (Table E.1-1, edition 2023b, as data):

* every attribute the table lists gets its action, at any depth: the walk enters every sequence
  item (the ``K`` of the table "cleaned for sequences");
* private attributes are removed, as are group lengths; a public attribute the table does not
  list is kept if the data dictionary knows it and removed if not (an unknown tag, or a VR still
  UN), see :func:`~medcnn.privacy.profile.unlisted_action`;
* UIDs (``U``) are replaced consistently within one :class:`Deidentifier`: the new UID is a keyed
  hash of the old one (``pydicom.uid.generate_uid`` with a random per-run key among its entropy
  sources), so study / series / instance structure and references survive, and the old UID cannot
  be recovered without the key, which is never stored. UIDs defined by the standard itself
  (``1.2.840.10008.*``) identify nothing and are kept;
* Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063) and
  De-identification Method Code Sequence (0012,0064) = (113100, DCM, "Basic Application
  Confidentiality Profile") (CID 7050) are set, Longitudinal Temporal Information Modified
  (0028,0303) = REMOVED, and the file meta Media Storage SOP Instance UID is kept equal to the new
  SOP Instance UID.

Two options (arguments of :class:`Deidentifier`, :func:`deidentify_bytes` and the CLI):

* ``clean_descriptors``: the Clean Descriptors Option (PS3.15 E.3.5, CID 7050 code 113105): the
  descriptors Table E.1-1 marks ``C`` are kept and cleaned instead of removed, and every Code
  Meaning is cleaned (:mod:`medcnn.privacy.descriptors`);
* ``remove_unlisted``: every public attribute the table does not list is removed unless it is
  needed to display the image (the ``strict`` reading of
  :func:`~medcnn.privacy.profile.unlisted_action`). The file meta keeps its usual cleaning.

Pixel values are never changed: the Basic Profile does not clean pixels, so burned-in text stays;
:mod:`medcnn.privacy.burned_in` warns about it. Comment segments inside compressed pixel data
(JPEG COM, JPEG 2000 COM) are removed without touching the coded image, and a compressed image
whose comments cannot be checked is refused (:mod:`medcnn.privacy.codestream`). The summary
counts actions; it never holds values.
"""
from __future__ import annotations

import io
import secrets
from dataclasses import dataclass, field, fields

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from medcnn.notices import quiet
from medcnn.io import UnsupportedImageError, detect_format
from medcnn.privacy.codestream import CodestreamError, strip_pixel_comments
from medcnn.privacy.descriptors import DescriptorCleaner, clean_descriptor_tags
from medcnn.privacy.marking import mark_deidentified
from medcnn.privacy.profile import action_for, resolve, unlisted_action

__all__ = ["DeidSummary", "DeidentificationError", "Deidentifier", "deidentify_bytes", "deidentify_dataset"]

_STANDARD_UID_ROOT = "1.2.840.10008."  # UIDs defined by DICOM itself (PS3.6 Annex A)
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Non-zero length dummy values per VR for action D (PS3.15 Table E.1-1a).
_DUMMIES: dict[str, object] = {
    "AE": "ANONYMIZED", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DS": "0",
    "DT": "19000101000000", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED", "PN": "ANONYMOUS",
    "SH": "ANONYMIZED", "ST": "ANONYMIZED", "TM": "000000", "UC": "ANONYMIZED",
    "UR": "urn:uuid:00000000-0000-0000-0000-000000000000", "UT": "ANONYMIZED",
    "AT": 0, "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "SV": 0, "UL": 0, "US": 0, "UV": 0,
    "OB": b"\x00\x00", "OD": b"\x00" * 8, "OF": b"\x00" * 4, "OL": b"\x00" * 4, "OV": b"\x00" * 8,
    "OW": b"\x00\x00", "UN": b"\x00\x00",
}
# pydicom raises these while converting a malformed raw element.
_CONVERSION_ERRORS = (ValueError, TypeError, KeyError, NotImplementedError, OverflowError, AttributeError)


class DeidentificationError(ValueError):
    """A DICOM file that was read but cannot be de-identified (the message says why and what to do)."""


@dataclass
class DeidSummary:
    """What one or more de-identifications did, as counts only (never a value).

    Attributes:
        removed: elements removed (action X, and the rules: group lengths, unchecked UN elements).
        emptied: elements replaced by a zero-length value (action Z).
        dummied: elements replaced by a dummy value (action D).
        uids_replaced: UID values replaced (action U; one element may hold several).
        private_removed: private elements removed (a private sequence counts once).
        cleaned: descriptors cleaned (action C, Clean Descriptors Option).
        comments_removed: comment segments removed from compressed pixel data.
        files: data sets de-identified.
        warnings: messages for the user, e.g. burned-in text the profile does not clean.
    """

    removed: int = 0
    emptied: int = 0
    dummied: int = 0
    uids_replaced: int = 0
    private_removed: int = 0
    cleaned: int = 0
    comments_removed: int = 0
    files: int = 0
    warnings: list[str] = field(default_factory=list)

    def add(self, other: DeidSummary) -> None:
        """Add ``other``'s counts and warnings to this summary (in place)."""
        for f in fields(self):
            if f.name != "warnings":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.warnings.extend(other.warnings)

    def describe(self) -> str:
        """One line, e.g. ``"removed 34 (X), emptied 6 (Z), dummy 0 (D), UIDs replaced 5 (U), private 12"``."""
        text = (f"removed {self.removed} (X), emptied {self.emptied} (Z), dummy {self.dummied} (D), "
                f"UIDs replaced {self.uids_replaced} (U), private removed {self.private_removed}")
        if self.cleaned:
            text += f", cleaned {self.cleaned} (C)"
        if self.comments_removed:
            text += f", image comments removed {self.comments_removed}"
        return text


class Deidentifier:
    """Applies the Basic Profile; one instance is one "run" with one consistent UID mapping.

    Use one instance for all files of a study or folder (same input UID -> same new UID), and a new
    one for unrelated exports. Not thread-safe: give each thread its own.

    Args:
        key: secret mixed into every new UID; default 32 random bytes, never written anywhere.
        clean_descriptors: apply the Clean Descriptors Option (module docstring).
        remove_unlisted: remove unlisted public attributes not needed to display the image.
    """

    def __init__(self, key: bytes | None = None, *, clean_descriptors: bool = False,
                 remove_unlisted: bool = False) -> None:
        self._key = (key if key is not None else secrets.token_bytes(32)).hex()
        self._uids: dict[str, str] = {}
        self.clean_descriptors, self.remove_unlisted = clean_descriptors, remove_unlisted
        self._cleaner: DescriptorCleaner | None = None

    @property
    def uids_mapped(self) -> int:
        """Number of distinct UIDs replaced so far in this run."""
        return len(self._uids)

    def new_uid(self, old: str) -> str:
        """The replacement of UID ``old`` in this run (the same every time it is asked).

        Empty values and UIDs defined by the standard (``1.2.840.10008.*``) are returned unchanged.
        """
        old = str(old).strip().rstrip("\x00")
        if not old or old.startswith(_STANDARD_UID_ROOT):
            return old
        new = self._uids.get(old)
        if new is None:
            new = str(generate_uid(entropy_srcs=[self._key, old]))
            self._uids[old] = new
        return new

    def deidentify_dataset(self, ds: Dataset) -> DeidSummary:
        """De-identify ``ds`` in place, file meta included.

        Args:
            ds: a data set as read by :func:`pydicom.dcmread` (or built in memory).

        Returns:
            the counts of what was done (``files`` = 1).

        Raises:
            DeidentificationError: ``ds`` is a DICOMDIR (its records point at files by name), or
                its compressed pixel data may hold comments that cannot be removed safely.
        """
        meta = getattr(ds, "file_meta", None)
        sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
        if str(sop_class or "") == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            raise DeidentificationError(
                "this is a DICOMDIR (a media index that names patients and files); it is not "
                "de-identified: de-identify the image files and create a new DICOMDIR from them")
        summary = DeidSummary(files=1)
        enhanced = "SharedFunctionalGroupsSequence" in ds
        with quiet(Warning, reason="pydicom's value warnings quote the (identifying) values"):
            try:
                summary.comments_removed = strip_pixel_comments(ds)
            except CodestreamError as e:
                raise DeidentificationError(
                    f"the compressed image may carry text that cannot be removed safely: {e}; nothing was saved: "
                    "decompress the file (e.g. to Explicit VR Little Endian) and de-identify it again") from None
            if summary.comments_removed:
                summary.warnings.append(
                    f"removed {summary.comments_removed} comment segment(s) from the compressed image data "
                    "(JPEG / JPEG 2000 comments can hold text such as a name); the image itself is unchanged")
            self._cleaner = DescriptorCleaner(ds) if self.clean_descriptors else None
            try:
                self._clean(ds, summary, top_level=True, enhanced=enhanced)
            finally:
                summary.cleaned, self._cleaner = (self._cleaner.cleaned if self._cleaner else 0), None
            mark_deidentified(ds, clean_descriptors=self.clean_descriptors)
            self._fix_file_meta(ds, summary)
        return summary

    def deidentify_bytes(self, data: bytes, *, check_pixels: bool = True) -> tuple[bytes, DeidSummary]:
        """De-identify the bytes of one DICOM file; the input is not modified.

        Args:
            data: a DICOM file (Part 10, or a bare data set).
            check_pixels: decode the image and look for bright text in its margins (slower; the
                BurnedInAnnotation attribute is checked either way).

        Returns:
            (bytes of the de-identified DICOM file, summary). The pixel data are byte-identical,
            except that comment segments of compressed pixel data are removed (same pixels).

        Raises:
            UnsupportedImageError: ``data`` is not DICOM, or too damaged to read.
            DeidentificationError: a DICOMDIR, compressed pixel data whose comments cannot be
                checked, or the result could not be written.
        """
        from medcnn.privacy.burned_in import burned_in_warnings

        ds = _read(data)
        pixel_warnings = burned_in_warnings(ds, data if check_pixels else None)
        summary = self.deidentify_dataset(ds)
        summary.warnings.extend(pixel_warnings)
        return _write(ds), summary

    # ----------------------------------------------------------------------------- the walk
    def _clean(self, ds: Dataset, summary: DeidSummary, *, top_level: bool, enhanced: bool,
               meta: bool = False) -> None:
        """Apply the profile to every element of ``ds`` and, recursively, of its sequence items."""
        descriptors = clean_descriptor_tags() if self._cleaner is not None else frozenset()
        for tag in list(ds.keys()):
            if tag.is_private:
                del ds[tag]
                summary.private_removed += 1
                continue
            try:
                elem = ds[tag]
            except _CONVERSION_ERRORS:  # cannot be parsed, so cannot be checked: remove it
                del ds[tag]
                summary.removed += 1
                continue
            if int(tag) in descriptors:  # C: kept and cleaned (a C sequence is kept, items cleaned)
                if self._cleaner.clean_element(ds, tag):
                    continue
                if elem.VR == "SQ":
                    self._apply(ds, elem, "K", summary, enhanced=enhanced)
                    continue
            code = action_for(tag)
            if code is None:
                strict = self.remove_unlisted and not meta
                self._apply(ds, elem, unlisted_action(elem.keyword, elem.VR, strict=strict), summary,
                            enhanced=enhanced)
                continue
            action = resolve(code, elem.keyword, enhanced=enhanced, top_level=top_level)
            self._apply(ds, elem, action, summary, enhanced=enhanced)

    def _apply(self, ds: Dataset, elem: DataElement, action: str, summary: DeidSummary, *,
               enhanced: bool) -> None:
        """Carry out one resolved action (``X``, ``Z``, ``D``, ``U`` or ``K``) on ``elem``."""
        vr = _plain_vr(elem.VR)
        if action == "X":
            del ds[elem.tag]
            summary.removed += 1
        elif action == "Z":
            ds[elem.tag] = DataElement(elem.tag, vr, Sequence() if vr == "SQ" else None)
            summary.emptied += 1
        elif action == "D" or (action == "U" and vr != "UI"):
            ds[elem.tag] = DataElement(elem.tag, vr, self._dummy(elem, vr))
            summary.dummied += 1
        elif action == "U":
            values = elem.value if isinstance(elem.value, (list, tuple, pydicom.multival.MultiValue)) else [elem.value]
            new = [self.new_uid(v) for v in values if v]
            summary.uids_replaced += sum(1 for v in values if v)
            ds[elem.tag] = DataElement(elem.tag, "UI", new if len(new) > 1 else (new[0] if new else None))
        elif vr == "SQ":  # K: keep, cleaned item by item
            for item in elem.value:
                self._clean(item, summary, top_level=False, enhanced=enhanced)

    def _dummy(self, elem: DataElement, vr: str) -> object:
        """Non-zero length dummy value for ``elem`` (D): a mapped UID for UI, one empty item for SQ."""
        if vr == "SQ":
            return Sequence([Dataset()])
        if vr == "UI":
            value = elem.value[0] if isinstance(elem.value, pydicom.multival.MultiValue) else elem.value
            return self.new_uid(str(value)) if value else str(generate_uid())
        return _DUMMIES.get(vr, b"\x00\x00")

    def _fix_file_meta(self, ds: Dataset, summary: DeidSummary) -> None:
        """Clean the file meta with the same table and keep its SOP UIDs equal to the data set's."""
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            meta = FileMetaDataset()
            ds.file_meta = meta
        self._clean(meta, summary, top_level=False, enhanced=False, meta=True)
        if "TransferSyntaxUID" not in meta:
            implicit, little = ds.original_encoding if ds.original_encoding[0] is not None else (False, True)
            meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit
                                      else ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        if ds.get("SOPInstanceUID"):
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if ds.get("SOPClassUID"):
            meta.MediaStorageSOPClassUID = ds.SOPClassUID


def _plain_vr(vr: str) -> str:
    """``"US or SS"`` -> ``"US"`` (ambiguous VRs of the dictionary); other VRs unchanged."""
    return vr.split(" or ")[0]


def _read(data: bytes) -> Dataset:
    """Parse DICOM bytes, raising :class:`UnsupportedImageError` with a value-free message."""
    if not data:
        raise UnsupportedImageError("the file is empty (0 bytes); nothing to de-identify")
    if detect_format(data) != "dicom":
        fmt = detect_format(data)
        what = f"a {fmt.upper()} image" if fmt else "not a DICOM file"
        raise UnsupportedImageError(
            f"{what}: only DICOM files can be de-identified (PNG and JPEG carry no DICOM header)")
    with quiet(Warning, reason="pydicom's parse warnings may quote identifying values"):
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception as e:  # noqa: BLE001 - pydicom raises many types on damaged input
            raise UnsupportedImageError(
                f"unreadable DICOM ({type(e).__name__}); the file is truncated or corrupt") from None
    if len(ds) == 0:
        raise UnsupportedImageError("truncated or corrupt DICOM: no data element could be read")
    return ds


def _write(ds: Dataset) -> bytes:
    """Encode ``ds`` as a DICOM Part 10 file and check that it reads back.

    An object without SOP Class / Instance UIDs (not a composite instance) cannot have valid
    file meta; it is written with the meta it has instead.
    """
    buf = io.BytesIO()
    meta = ds.file_meta
    complete = bool(meta.get("MediaStorageSOPClassUID")) and bool(meta.get("MediaStorageSOPInstanceUID"))
    with quiet(Warning, reason="pydicom's write warnings may quote identifying values"):
        try:
            pydicom.dcmwrite(buf, ds, enforce_file_format=complete)
            pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
        except Exception as e:  # noqa: BLE001 - encoder errors come in many types
            raise DeidentificationError(
                f"the de-identified data set could not be written ({type(e).__name__}); "
                "nothing was saved") from None
    return buf.getvalue()


def deidentify_dataset(ds: Dataset, deidentifier: Deidentifier | None = None) -> DeidSummary:
    """De-identify ``ds`` in place with the Basic Profile (module docstring).

    Args:
        ds: the data set.
        deidentifier: the run (UID mapping) to use; default a new one.

    Returns:
        the counts of what was done.
    """
    return (deidentifier or Deidentifier()).deidentify_dataset(ds)


def deidentify_bytes(data: bytes, *, check_pixels: bool = True, clean_descriptors: bool = False,
                     remove_unlisted: bool = False) -> tuple[bytes, DeidSummary]:
    """De-identify one DICOM file given as bytes, with fresh UIDs (for a download button).

    Args:
        data: the uploaded DICOM file.
        check_pixels: also look for bright burned-in text in the image margins.
        clean_descriptors: apply the Clean Descriptors Option (module docstring).
        remove_unlisted: remove unlisted public attributes not needed to display the image.

    Returns:
        (de-identified DICOM bytes, summary of counts and warnings).

    Raises:
        UnsupportedImageError: ``data`` is not a readable DICOM file.
        DeidentificationError: a DICOMDIR, compressed pixel data whose comments cannot be checked,
            or the result could not be written.
    """
    deid = Deidentifier(clean_descriptors=clean_descriptors, remove_unlisted=remove_unlisted)
    return deid.deidentify_bytes(data, check_pixels=check_pixels)
