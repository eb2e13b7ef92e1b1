"""The Clean Descriptors Option (DICOM PS3.15 E.3.5): descriptions kept, with identifying text removed.

The Basic Profile removes descriptive attributes (Study Description, Protocol Name, comments ...)
because they may hold a name. With this option, the attributes that Table E.1-1 marks ``C`` in its
Clean Descriptors column (``clean_descriptors.csv`` beside this module) are kept and *cleaned*:
"replace with values of similar meaning known not to contain identifying information" (Table
E.1-1a). Code Meaning (0008,0104), which the Basic Profile keeps verbatim in every code sequence,
is cleaned as well (our addition, marked ``medcnn`` in the CSV): a code's value and scheme name a
concept, not a person, but its meaning is free text that can say "John Smith's lesion".

"Known not to contain identifying information" is read strictly, as an allow-list rather than a
search for names (a name the cleaner has never seen cannot be recognised):

* a Code Meaning whose (scheme, value) is a concept of pydicom's bundled code dictionaries
  (DCM, SCT, LN, UCUM, RadLex, NCIt, ...) becomes that dictionary's meaning;
* any other text keeps only its *known* words: words written in lower case inside those concepts'
  meanings (which leaves out eponyms and other proper names), acronyms of two or more capitals
  from them, words of DICOM attribute names, and a short list of radiology abbreviations
  (:data:`EXTRA_WORDS`); numbers of up to three digits and letter-digit tokens of up to four
  characters (``T1``, ``3D``, ``5mm``); dates (``01/02/1970``), longer numbers and everything
  else are replaced by ``*`` (one per run of removed words);
* a word that is part of a value the profile removes from the same data set (the patient's name,
  IDs, the institution ...) is removed even when it is a known word, as E.3.5 requires.

So "John Smith's lesion" becomes "* lesion" and "CHEST PA" stays "CHEST PA". Cleaning never
lengthens a word; a value whose words are all removed becomes ``*``. Non-text attributes marked
``C`` (e.g. Maker Note, OB) keep their Basic Profile action; ``C`` sequences are kept and their
items cleaned like any other sequence.
"""
from __future__ import annotations

import csv
import re
from functools import cache
from pathlib import Path

from pydicom.dataset import Dataset

from medcnn.privacy.profile import action_for

__all__ = ["CLEAN_DESCRIPTORS_TABLE", "CODE_MEANING", "DescriptorCleaner", "EXTRA_WORDS", "clean_descriptor_tags"]

#: The CSV of the option's column of Table E.1-1.
CLEAN_DESCRIPTORS_TABLE = Path(__file__).with_name("clean_descriptors.csv")
#: Code Meaning (0008,0104).
CODE_MEANING = 0x00080104
#: Radiology words and abbreviations missing from the code dictionaries (lower case).
EXTRA_WORDS = frozenset("""
    adc angio ax axi bw contr cor cxr cta dwi dx fat flair fse gre haste iv kv kvp lat localizer
    mip mpr mprage pneumonia portable pd sag scout sat stir swi tof topogram tse upright w wo
""".split())
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_WORD = re.compile(r"[^\W_]+(?:'s)?", re.IGNORECASE)
_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")
_REMOVED_RUN = re.compile(r"\*(?:[\s,;:'^.-]*\*)+")
_IDENTIFYING_VRS = TEXT_VRS | {"PN", "AE", "UR", "DA", "DT", "TM", "AS", "CS"}


@cache
def clean_descriptor_tags() -> frozenset[int]:
    """Tags marked ``C`` in the option's column (plus Code Meaning).

    Raises:
        RuntimeError: the CSV is missing or malformed (a broken installation).
    """
    try:
        text = CLEAN_DESCRIPTORS_TABLE.read_text(encoding="utf-8")
    except OSError as e:
        raise RuntimeError(f"cannot read the Clean Descriptors table {CLEAN_DESCRIPTORS_TABLE}: {e}") from None
    rows = list(csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")))
    try:
        return frozenset(int(row["tag"], 16) for row in rows)
    except (KeyError, ValueError):
        raise RuntimeError(f"malformed row in {CLEAN_DESCRIPTORS_TABLE.name}") from None


@cache
def _code_index() -> tuple[dict[tuple[str, str], str], frozenset[str]]:
    """((scheme, code value) -> meaning, known words) from pydicom's bundled code dictionaries."""
    from pydicom.datadict import DicomDictionary
    from pydicom.sr._concepts_dict import concepts

    meanings: dict[tuple[str, str], str] = {}
    words: set[str] = set(EXTRA_WORDS)
    for scheme, by_name in concepts.items():
        for codes in by_name.values():
            for value, (meaning, _cids) in codes.items():
                meanings.setdefault((scheme, str(value)), meaning)
                for word in re.findall(r"[^\W\d_]+", meaning):
                    if word.islower() or (word.isupper() and len(word) > 1):
                        words.add(word.lower())
    for entry in DicomDictionary.values():
        words.update(w.lower() for w in re.findall(r"[^\W\d_]+", entry[2]))
    return meanings, frozenset(words)


class DescriptorCleaner:
    """Cleans descriptors of one data set (action ``C``); build it before the data set is changed.

    Args:
        ds: the original data set: the words of every value the profile removes or replaces
            (names, IDs, dates, institution ...) are collected from it, at any depth.
    """

    def __init__(self, ds: Dataset) -> None:
        self._identifying = frozenset(self._collect(ds, clean_descriptor_tags()))
        self.cleaned = 0

    def _collect(self, ds: Dataset, descriptors: frozenset[int]) -> set[str]:
        """Words (lower case, two or more characters) of the values the profile removes from ``ds``."""
        found: set[str] = set()
        for tag in list(ds.keys()):
            try:
                elem = ds[tag]
            except (ValueError, TypeError, KeyError, NotImplementedError, OverflowError, AttributeError):
                continue  # unparseable: the de-identifier removes it
            if elem.VR == "SQ":
                for item in elem.value:
                    found |= self._collect(item, descriptors)
            elif elem.VR in _IDENTIFYING_VRS and int(tag) not in descriptors and (
                    tag.is_private or action_for(tag) is not None):
                values = elem.value if elem.VM > 1 else [elem.value]
                for value in values:
                    found.update(w.lower() for w in _WORD.findall(str(value or "")) if len(w) > 1)
        return found

    def _known(self, word: str) -> bool:
        """True when ``word`` may stay in a cleaned text (module docstring)."""
        low = word.lower()
        if low.endswith("'s"):
            low = low[:-2]
        if low in self._identifying or word.lower() in self._identifying:
            return False
        if low.isdigit():
            return len(low) <= 3
        if not low.isalpha():
            return len(low) <= 4
        return len(low) == 1 or low in _code_index()[1]

    def clean_text(self, text: str) -> str:
        """``text`` with every word not known to be safe replaced by ``*`` (runs merged)."""
        out = _DATE.sub("*", text)
        out = _WORD.sub(lambda m: m.group() if self._known(m.group()) else "*", out)
        out = _REMOVED_RUN.sub("*", out)
        if not _WORD.search(out):
            out = "*" if text.strip() else text
        return out

    def clean_element(self, ds: Dataset, tag: int) -> bool:
        """Clean the text attribute ``tag`` of ``ds`` in place; False if its VR holds no text.

        A Code Meaning becomes the dictionary meaning of its item's code when there is one.
        """
        elem = ds[tag]
        if elem.VR not in TEXT_VRS:
            return False
        if tag == CODE_MEANING:
            meaning = _code_index()[0].get((str(ds.get("CodingSchemeDesignator", "")), str(ds.get("CodeValue", ""))))
            if meaning:
                elem.value = meaning
                self.cleaned += 1
                return True
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        cleaned = [self.clean_text(str(v)) if v else v for v in values]
        elem.value = cleaned if elem.VM > 1 else cleaned[0]
        self.cleaned += 1
        return True
