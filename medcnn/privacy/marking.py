"""The attributes that say a data set was de-identified, and how (PS3.15 E.3.1, PS3.3 C.7.1.1).

Patient Identity Removed = YES; De-identification Method lists the profile edition, the options
applied and medcnn's version; De-identification Method Code Sequence holds CID 7050 codes (113100
Basic Application Confidentiality Profile, 113105 Clean Descriptors Option); Longitudinal Temporal
Information Modified = REMOVED. Earlier methods and codes in the data set are kept, ours are added
once.
"""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medcnn.privacy.profile import BASIC_PROFILE_EDITION

__all__ = ["mark_deidentified"]

_CODE_VALUE, _CODE_SCHEME, _CODE_MEANING = "113100", "DCM", "Basic Application Confidentiality Profile"
_CLEAN_DESCRIPTORS_CODE = ("113105", "DCM", "Clean Descriptors Option")  # PS3.16 CID 7050


def mark_deidentified(ds: Dataset, *, clean_descriptors: bool = False) -> None:
    """Set the De-identification attributes of PS3.15 E.3.1 / PS3.3 C.7.1.1 on the top level.

    Args:
        ds: the de-identified data set (changed in place).
        clean_descriptors: the Clean Descriptors Option was applied (its method and code are added).
    """
    from medcnn import __version__

    ds.PatientIdentityRemoved = "YES"
    old = ds.get("DeidentificationMethod")
    methods = [] if not old else [str(old)] if isinstance(old, str) else [str(v) for v in old]
    ours = [f"DICOM PS3.15 {BASIC_PROFILE_EDITION} Table E.1-1 Basic Profile"]
    ours += ["Clean Descriptors Option"] if clean_descriptors else []
    ours += [f"medcnn {__version__}"]
    ds.DeidentificationMethod = methods + [m for m in ours if m not in methods]
    wanted = [(_CODE_VALUE, _CODE_SCHEME, _CODE_MEANING)]
    wanted += [_CLEAN_DESCRIPTORS_CODE] if clean_descriptors else []
    codes = Sequence([item for item in ds.get("DeidentificationMethodCodeSequence") or Sequence()
                      if (item.get("CodeValue"), item.get("CodingSchemeDesignator")) not in {w[:2] for w in wanted}])
    for value, scheme, meaning in wanted:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = "REMOVED"
