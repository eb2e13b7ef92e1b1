"""The two halves of a model card: the typed serving contract and the documentary report.

A card's JSON (:mod:`medcnn.models.card`) holds both in one flat object, unchanged on disk:

* the **contract** (:class:`CardContract`): what serving needs to rebuild the model and read an
  image exactly as in training: architecture, the head (labels, temperature and threshold, per
  finding operating points), the pixel pipeline (preprocessing, input size, channels), the scope
  and the image gate (``ood``), the weights file and its hash. A few kilobytes.
* the **report** (:class:`CardReport`): what a reader needs to judge the model: training record,
  metrics, experiments, audits, intended use and limitations. Hundreds of kilobytes for a
  well-documented model, so :mod:`medcnn.models.catalogue` reads it only when asked.

:data:`REPORT_FIELDS` is the one list of the report's JSON keys; every other key is the contract's.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REPORT_FIELDS", "CardContract", "CardReport", "FindingPoint"]

#: JSON keys of a card that form its report (read lazily); the others form its contract.
REPORT_FIELDS: tuple[str, ...] = ("training", "metrics", "intended_use", "limitations", "experiments", "audit")


@dataclass(frozen=True)
class FindingPoint:
    """Calibration and operating point of one output of a sigmoid head.

    Attributes:
        temperature: Calibration temperature of the finding's logit (``sigmoid(z / T)``), > 0.
        threshold: Operating point on the calibrated probability, in (0, 1).
        shown: False for a finding the model cannot measure honestly: kept, not presented.
        reason: Why a finding is not shown (empty when shown).
    """

    temperature: float = 1.0
    threshold: float = 0.5
    shown: bool = True
    reason: str = ""

    @classmethod
    def from_dict(cls, name: str, entry: Mapping[str, Any]) -> "FindingPoint":
        """The point of a card's ``findings[name]`` entry (missing keys take the defaults above).

        Raises:
            ValueError: the threshold is outside (0, 1) or the temperature is not positive.
        """
        point = cls(temperature=float(entry.get("temperature", cls.temperature)),
                    threshold=float(entry.get("threshold", cls.threshold)),
                    shown=bool(entry.get("shown", True)), reason=str(entry.get("reason") or ""))
        if not 0.0 < point.threshold < 1.0 or point.temperature <= 0:
            raise ValueError(f"finding {name!r}: threshold must be in (0, 1) and temperature > 0, "
                             f"got {entry.get('threshold')!r} and {entry.get('temperature')!r}")
        return point


@dataclass(frozen=True)
class CardContract:
    """What serving reads from a card (module docstring); equal for equal cards.

    Attributes:
        name: Checkpoint name.
        architecture: Registry name of the network.
        modality: Task family (``"CXR"`` or ``"CT"``).
        dicom_modalities: DICOM Modality values accepted.
        head: ``"softmax"`` or ``"sigmoid"``.
        labels: Output names in logit order.
        positive_label: The label whose probability the operating point applies to.
        temperature: Softmax head: calibration temperature.
        threshold: Softmax head: operating point on ``P(positive_label)``.
        findings: Sigmoid head: ``(label, FindingPoint)`` per output, in label order; softmax: ``()``.
        preprocessing: :class:`medcnn.preprocess.Pipeline` config.
        input_size: ``(H, W)`` of the network input.
        channels: Input channels of the stem (1 or 3).
        target_layer: Dotted module name used for Grad-CAM.
        scope: What the model reads, checked against DICOM headers.
        wording: How a decided label is said to a clinician, where the label alone would claim
            more than the model can (a CT slice's "NonCOVID" is not a negative finding about the
            patient); labels not listed are said as they are.
        ood: The image gate's section (statistics file, hash, thresholds).
        weights_file: Weights file name next to the card (``""``: ``<name>.pt``).
        weights_sha256: SHA-256 the weights must have (``""``: not checked).
    """

    name: str
    architecture: str
    modality: str
    dicom_modalities: tuple[str, ...]
    head: str
    labels: tuple[str, ...]
    positive_label: str
    temperature: float
    threshold: float
    findings: tuple[tuple[str, FindingPoint], ...]
    preprocessing: dict[str, Any] = field(hash=False)
    input_size: tuple[int, int] = (0, 0)
    channels: int = 1
    target_layer: str = ""
    scope: dict[str, Any] = field(default_factory=dict, hash=False)
    wording: dict[str, str] = field(default_factory=dict, hash=False)
    ood: dict[str, Any] = field(default_factory=dict, hash=False)
    weights_file: str = ""
    weights_sha256: str = ""


@dataclass
class CardReport:
    """What a reader needs to judge a model (module docstring); the same objects as the card's.

    Attributes:
        training: Dataset, citation, licence, split counts, command, commit, date, hyper-parameters,
            history.
        metrics: ``{"val": {...}, "test": {...}, ...}`` with 95% bootstrap CIs.
        intended_use: One paragraph.
        limitations: Bullet points.
        experiments: Table of what was tried.
        audit: Shortcut / saliency-location audit results.
    """

    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
