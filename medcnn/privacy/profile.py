"""The attribute table of the Basic Application Level Confidentiality Profile, as data.

DICOM PS3.15 Annex E, Table E.1-1 ("Application Level Confidentiality Profile Attributes"),
Basic Profile column, edition 2023b, lives in ``basic_profile.csv`` beside this module: one row
per attribute with its tag, keyword, name, action code and source (see the file's header). The
action codes are those of Table E.1-1a:

* ``D`` replace with a non-zero length dummy value consistent with the VR;
* ``Z`` replace with a zero length value;
* ``X`` remove;
* ``K`` keep (the profile's default for attributes it does not list; sequences are still
  cleaned item by item);
* ``U`` replace the UID with one that is internally consistent within the set of instances;
* combined codes ``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``: the first action unless a later
  one is needed to keep the object conformant with its IOD.

How :func:`resolve` reads the combined codes (the strictest reading that keeps the images medcnn
reads conformant): the first action always, except that the four attributes that are Type 1 in
the Multi-frame Functional Groups and Enhanced General Equipment modules (Content Date, Content
Time, Acquisition DateTime, Device Serial Number) get their ``D`` in Enhanced multi-frame objects
(those with a Shared Functional Groups Sequence). So ``X/...`` removes, ``Z/D`` empties, and
``X/Z/U*`` removes the whole reference sequence.

Not rows but rules (PS3.15 E.1-1 and our stricter additions, applied by
:mod:`medcnn.privacy.deidentify`): every private attribute (odd group) is removed; group lengths
(gggg,0000) are removed (retired outside the file meta, which pydicom recomputes).

Public attributes the table does not list (:func:`unlisted_action`): Table E.1-1 is the standard's
review of the data dictionary, and an attribute of the dictionary that it does not list was judged
safe to keep (``K``). An attribute the dictionary does not know (an even-group tag with no
keyword, or an element whose VR is still UN after parsing) was never reviewed and its content
cannot be checked, so it is removed. The stricter ``strict`` reading (the option "remove unlisted
attributes") removes every unlisted attribute that can hold a name, a date or free text, keeping
only what a viewer needs to read and display the image: values that cannot carry text (numbers,
code strings, UIDs, tags: the Image Pixel, Image Plane, Modality / VOI LUT, Multi-frame and
functional-group attributes), sequences (whose items are cleaned the same way), the code
attributes of a code sequence, and the binary pixel, LUT and ICC data listed in :data:`KEEP_BINARY`.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "ACTIONS",
    "BASIC_PROFILE_EDITION",
    "PROFILE_TABLE",
    "ProfileRule",
    "action_for",
    "profile_rules",
    "resolve",
    "unlisted_action",
]

#: Edition of PS3.15 whose Table E.1-1 the CSV transcribes.
BASIC_PROFILE_EDITION = "2023b"
#: The CSV file holding the table.
PROFILE_TABLE = Path(__file__).with_name("basic_profile.csv")
#: Every action code that may appear in the table's ``action`` column.
ACTIONS = ("D", "Z", "X", "K", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*")

# Type 1 in the Multi-frame Functional Groups module (PS3.3 C.7.6.16: Content Date/Time), the
# Enhanced CT/MR/XA image modules (Acquisition DateTime, 1C for ORIGINAL images) and the Enhanced
# General Equipment module (C.7.5.2: Device Serial Number).
_TYPE1_IN_ENHANCED = frozenset({"ContentDate", "ContentTime", "AcquisitionDateTime", "DeviceSerialNumber"})
# VRs whose values cannot hold a name, a date or free text (PS3.5 6.2: numbers, code strings of
# at most 16 upper-case characters, UIDs, attribute tags), and sequences.
_SAFE_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "AT", "CS", "UI", "SQ"})
#: Binary attributes kept by the strict reading: pixel data and what decodes or colours it.
KEEP_BINARY = frozenset({
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
    "LUTData", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "AlphaPaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "ICCProfile",
})
# The code attributes of the Code Sequence Macro (PS3.3 Table 8.8-1) that name a concept, not a person.
_CODE_TEXT = frozenset({"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "LongCodeValue", "URNCodeValue"})


@dataclass(frozen=True)
class ProfileRule:
    """One row of Table E.1-1.

    Attributes:
        tag: eight hex digits, ``x`` for any digit (``60xx3000``: Overlay Data of every plane).
        keyword: pydicom keyword (empty for a pattern that spans several attributes).
        name: attribute name.
        action: Basic Profile action code, one of :data:`ACTIONS`.
        source: ``"E.1-1"``, ``"E.1-1 (2013)"`` or ``"medcnn"`` (see the CSV header).
    """

    tag: str
    keyword: str
    name: str
    action: str
    source: str

    def matches(self, tag: int) -> bool:
        """True when the 32-bit ``tag`` (group << 16 | element) is covered by this row."""
        mask, value = _pattern(self.tag)
        return (tag & mask) == value


def _pattern(tag: str) -> tuple[int, int]:
    """``"60xx3000"`` -> (mask, value) with the wildcard digits zeroed in both."""
    mask = int("".join("0" if c == "x" else "F" for c in tag), 16)
    value = int(tag.replace("x", "0"), 16)
    return mask, value


@cache
def profile_rules() -> tuple[ProfileRule, ...]:
    """All rows of the table, in file order.

    Raises:
        RuntimeError: the CSV is missing or malformed (a broken installation).
    """
    try:
        text = PROFILE_TABLE.read_text(encoding="utf-8")
    except OSError as e:
        raise RuntimeError(f"cannot read the de-identification table {PROFILE_TABLE}: {e}") from None
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rules = []
    for row in csv.DictReader(lines):
        tag = row["tag"].strip()
        action = row["action"].strip()
        if len(tag) != 8 or action not in ACTIONS:
            raise RuntimeError(f"malformed row in {PROFILE_TABLE.name}: {row}")
        rules.append(ProfileRule(tag, row["keyword"].strip(), row["name"].strip(), action, row["source"].strip()))
    return tuple(rules)


@cache
def _tables() -> tuple[dict[int, ProfileRule], tuple[ProfileRule, ...]]:
    """(exact tag -> rule, wildcard rules with the most specific first)."""
    exact = {int(r.tag, 16): r for r in profile_rules() if "x" not in r.tag}
    patterns = sorted((r for r in profile_rules() if "x" in r.tag), key=lambda r: r.tag.count("x"))
    return exact, tuple(patterns)


def action_for(tag: int) -> str | None:
    """The Basic Profile action code of an attribute, ``None`` when the table does not list it.

    Private attributes are not looked up here (they are removed by rule).

    Args:
        tag: 32-bit tag, e.g. ``0x00100010`` or a :class:`pydicom.tag.Tag`.

    Returns:
        the code from the table (possibly combined, e.g. ``"X/Z/D"``), or ``None`` (keep).
    """
    exact, patterns = _tables()
    rule = exact.get(int(tag))
    if rule is not None:
        return rule.action
    for rule in patterns:
        if rule.matches(int(tag)):
            return rule.action
    return None


def resolve(code: str, keyword: str = "", *, enhanced: bool = False, top_level: bool = True) -> str:
    """The single action (``D``, ``Z``, ``X``, ``K`` or ``U``) applied for a table code.

    Args:
        code: the table's code, simple or combined.
        keyword: the attribute's keyword (decides the Enhanced multi-frame exception).
        enhanced: the object is an Enhanced multi-frame one (has a Shared Functional Groups Sequence).
        top_level: the attribute is in the top-level data set (the exception applies there only).

    Returns:
        one of ``"D"``, ``"Z"``, ``"X"``, ``"K"``, ``"U"``.

    Raises:
        ValueError: ``code`` is not one of :data:`ACTIONS`.
    """
    if code not in ACTIONS:
        raise ValueError(f"unknown action code {code!r}; expected one of {', '.join(ACTIONS)}")
    if "/" not in code:
        return code
    if enhanced and top_level and keyword in _TYPE1_IN_ENHANCED and "D" in code.split("/"):
        return "D"
    return code.split("/")[0]


def unlisted_action(keyword: str, vr: str, *, strict: bool = False) -> str:
    """``"K"`` or ``"X"`` for a public attribute that the table does not list (module docstring).

    Args:
        keyword: the attribute's keyword in pydicom's dictionary; empty when the tag is unknown.
        vr: its value representation as parsed (``"UN"`` when it could not be resolved).
        strict: remove everything that can carry text except what is needed to display the image.

    Returns:
        ``"X"`` (remove) or ``"K"`` (keep; a sequence is cleaned item by item).
    """
    if not keyword or vr == "UN":
        return "X"
    if not strict:
        return "K"
    vr = vr.split(" or ")[0]
    return "K" if vr in _SAFE_VRS or keyword in KEEP_BINARY or keyword in _CODE_TEXT else "X"
