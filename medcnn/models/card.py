"""Model card: the metadata that travels with a checkpoint.

A checkpoint is two files in ``weights/``: ``<name>.pt`` (a ``state_dict``, loaded with
``torch.load(..., weights_only=True)``) and ``<name>.json`` (this card). The card holds
everything needed to rebuild the model *and* its exact preprocessing, so train and
serve can never drift apart (the timm / TorchXRayVision pattern). :func:`card_file` is the one
rule that names a checkpoint's card from any of its paths.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from medcnn.models.head import HEAD_KINDS, Head

__all__ = ["ModelCard", "CardError", "card_file"]

#: Suffixes that name one of a checkpoint's two files: the weights and the card.
_CHECKPOINT_SUFFIXES = (".pt", ".json")


class CardError(ValueError):
    """A model card is missing, malformed or inconsistent with its weights."""


def card_file(path: str | Path) -> Path:
    """The card (``.json``) of a checkpoint named by any of its paths: the one ``.pt -> .json`` rule.

    ``weights/x.pt``, ``weights/x.json`` and ``weights/x`` all give ``weights/x.json``. Only ``.pt``
    and ``.json`` count as the checkpoint's suffix; any other name is the checkpoint's full name and
    gets ``.json`` appended (``site.v2`` -> ``site.v2.json``, its weights ``site.v2.pt``).

    Args:
        path: Card, weights or bare checkpoint path.

    Returns:
        Path of the card, in the same folder.
    """
    p = Path(path)
    if p.suffix in _CHECKPOINT_SUFFIXES:
        p = p.with_suffix("")
    return p.with_name(p.name + ".json")


@dataclass
class ModelCard:
    """Model card (JSON) of one shipped or trained model.

    Attributes:
        name: Checkpoint name; weights live next to the card as ``<name>.pt``.
        architecture: Registry name in :mod:`medcnn.models` (e.g. ``"resnet18"``).
        modality: Task family, ``"CXR"`` (chest X-ray) or ``"CT"``.
        dicom_modalities: DICOM Modality values this model accepts (``["CR", "DX"]``).
        labels: Class names in output (logit) order.
        positive_label: The label whose probability the operating threshold applies to.
        input_size: (H, W) of the network input.
        preprocessing: :class:`medcnn.preprocess.Pipeline` config (plain JSON).
        target_layer: Dotted module name used for Grad-CAM.
        threshold: Operating threshold on the calibrated probability of ``positive_label``
            (Youden's J on validation).
        temperature: Temperature for calibration (softmax(logits / T)), fitted on validation.
        training: Dataset, citation, licence, split counts, command, commit, date, hyper-parameters.
        metrics: ``{"val": {...}, "test": {...}, ...}`` with 95% bootstrap CIs.
        intended_use: One paragraph.
        limitations: Bullet points.
        experiments: Table of what was tried (command, val AUC overall and per subgroup).
        audit: Shortcut / saliency-location audit results, when available.
        scope: What the model reads, checked against DICOM headers (body parts, view
            positions, minimum age, photometric interpretations); empty = the family default
            of :mod:`medcnn.ood.scope`.
        ood: The out-of-distribution gate: statistics file (``<name>.ood.pt``) and its SHA-256,
            layers, thresholds, the data it was fitted on and its measured rates; empty = no
            image-based gate (written by ``python -m medcnn fit-ood``).
        head: ``"softmax"`` (one label per image; probabilities ``softmax(logits / T)``) or
            ``"sigmoid"`` (multi-label: one independent finding per output; probabilities
            ``sigmoid(logit / T_f)`` per finding).
        findings: Sigmoid heads only: per finding ``{"temperature", "threshold", "shown",
            "reason"}``. ``threshold`` is the finding's operating point on its calibrated
            probability (chosen on validation); ``shown`` is False for findings the model cannot
            measure honestly (``reason`` says why), which are kept in the output but not presented.
    """

    name: str
    architecture: str
    modality: str
    labels: list[str]
    positive_label: str
    input_size: tuple[int, int]
    preprocessing: dict[str, Any]
    target_layer: str
    dicom_modalities: list[str] = field(default_factory=list)
    threshold: float = 0.5
    temperature: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)
    head: str = "softmax"
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        if len(self.input_size) != 2:
            raise CardError(f"input_size must be (H, W), got {self.input_size!r}")
        if self.positive_label not in self.labels:
            raise CardError(
                f"positive_label {self.positive_label!r} is not one of labels {self.labels!r}"
            )
        if len(set(self.labels)) != len(self.labels) or len(self.labels) < 2:
            raise CardError(f"labels must be >= 2 distinct names, got {self.labels!r}")
        if self.head not in HEAD_KINDS:
            raise CardError(f"head must be one of {', '.join(HEAD_KINDS)}, got {self.head!r}")
        if self.head == "sigmoid":
            missing = [name for name in self.labels if name not in self.findings]
            if missing:
                raise CardError(f"a sigmoid card needs a 'findings' entry (temperature, threshold) for every "
                                f"label; missing: {', '.join(missing)}")
            for name, f in self.findings.items():
                t = f.get("threshold", 0.5)
                if not 0.0 < float(t) < 1.0 or float(f.get("temperature", 1.0)) <= 0:
                    raise CardError(f"finding {name!r}: threshold must be in (0, 1) and temperature > 0, "
                                    f"got {t!r} and {f.get('temperature')!r}")

    @property
    def head_rule(self) -> Head:
        """The card's decision rule (:class:`medcnn.models.head.Head`), built from its current fields
        (so a recalibrated temperature or threshold is always the one applied)."""
        if self.head == "sigmoid":
            return Head.sigmoid(self.labels, self.positive_label, self.findings)
        return Head.softmax(self.labels, self.positive_label, self.temperature, self.threshold)

    @property
    def multilabel(self) -> bool:
        """True for a sigmoid (multi-label, one output per finding) head."""
        return self.head == "sigmoid"

    def finding_thresholds(self) -> np.ndarray:
        """Operating point of every label, in label order (sigmoid cards; softmax: the one threshold)."""
        if not self.multilabel:
            return np.full(len(self.labels), float(self.threshold))
        return np.array([float(self.findings[n].get("threshold", 0.5)) for n in self.labels])

    def finding_temperatures(self) -> np.ndarray:
        """Calibration temperature of every output, in label order."""
        if not self.multilabel:
            return np.full(len(self.labels), float(self.temperature))
        return np.array([float(self.findings[n].get("temperature", 1.0)) for n in self.labels])

    def shown_findings(self) -> list[str]:
        """Labels presented as findings (sigmoid cards: ``shown`` ones; softmax: all)."""
        if not self.multilabel:
            return list(self.labels)
        return [n for n in self.labels if self.findings[n].get("shown", True)]

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)

    @property
    def ood_path(self) -> Path | None:
        """Path of the gate's statistics next to the card, ``None`` when the card has no gate."""
        if not self.ood.get("file") or self.path is None:
            return None
        return self.path.parent / self.ood["file"]

    @property
    def weights_path(self) -> Path:
        """Path of the ``.pt`` state_dict next to the card."""
        if self.path is None:
            raise CardError(f"card {self.name!r} was not loaded from or saved to a file")
        return self.path.with_suffix(".pt")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d["input_size"] = list(self.input_size)
        return d

    def save(self, path: str | Path) -> Path:
        """Write the card to :func:`card_file` of ``path``; returns that path."""
        path = card_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        """Load a card from ``<name>.json`` (the ``.pt`` or bare ``<name>`` path too: :func:`card_file`).

        Raises:
            CardError: the file is missing, not JSON, or lacks required fields.
        """
        path = card_file(path)
        if not path.is_file():
            raise CardError(f"model card not found: {path} (expected <name>.json next to <name>.pt)")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CardError(f"model card {path} is not valid JSON: {e}") from None
        known = {f.name for f in fields(cls)} - {"path"}
        missing = [
            f.name for f in fields(cls)
            if f.name in known and f.name not in data
            and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise CardError(f"model card {path} lacks required fields: {', '.join(missing)}")
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.path = path
        return card
