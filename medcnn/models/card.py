"""Model card: the metadata that travels with a checkpoint.

A checkpoint is two files in ``weights/``: ``<name>.pt`` (a ``state_dict``, loaded with
``torch.load(..., weights_only=True)``) and ``<name>.json`` (this card). The card holds
everything needed to rebuild the model *and* its exact preprocessing, so train and
serve can never drift apart (the timm / TorchXRayVision pattern). :func:`card_file` is the one
rule that names a checkpoint's card from any of its paths.

A card is a small typed serving contract (:attr:`ModelCard.contract`) and a large report
(:attr:`ModelCard.report`: metrics, experiments, audits, training record), split by
:data:`~medcnn.models.contract.REPORT_FIELDS`. :meth:`ModelCard.load` reads both;
:meth:`ModelCard.from_contract` (what :mod:`medcnn.models.catalogue` serves) reads the report from
the card's file only when one of its fields is first used. The JSON on disk is the same either way.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from medcnn.io import INPUT_KINDS
from medcnn.models.contract import REPORT_FIELDS, CardContract, CardReport, FindingPoint
from medcnn.models.head import HEAD_KINDS, Head

__all__ = ["ModelCard", "CardError", "card_file", "file_sha256", "read_card_json"]

#: Suffixes that name one of a checkpoint's two files: the weights and the card.
_CHECKPOINT_SUFFIXES = (".pt", ".json")
#: Weights formats a card may name in ``weights_file``.
_WEIGHTS_SUFFIXES = (".pt", ".safetensors")


class CardError(ValueError):
    """A model card is missing, malformed or inconsistent with its weights."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (weights, gate statistics), read in 1 MiB blocks: the checksum cards record."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def read_card_json(path: Path) -> dict[str, Any]:
    """The JSON object of a card file.

    Raises:
        CardError: the file is missing or not a JSON object.
    """
    if not path.is_file():
        raise CardError(f"model card not found: {path} (expected <name>.json next to <name>.pt)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CardError(f"model card {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CardError(f"model card {path} is not a JSON object")
    return data


class _ReportField:
    """A report field of :class:`ModelCard` (descriptor-typed dataclass field).

    A value given or assigned is kept on the card. A card from :meth:`ModelCard.from_contract`
    reads every report field it lacks from its file on first use; any other card starts with the
    field's default. The descriptor itself is the dataclass default, meaning "not given".
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, card: "ModelCard | None", owner: type | None = None) -> Any:
        if card is None:
            return self
        values = card.__dict__.setdefault("_report", {})
        if self.name not in values:
            card._read_report()
        return values[self.name]

    def __set__(self, card: "ModelCard", value: Any) -> None:
        if value is not self:
            card.__dict__.setdefault("_report", {})[self.name] = value


def _report_field(name: str) -> Any:
    return field(default=_ReportField(name), repr=False)


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
        wording: Decided label -> how it is said (:attr:`CardContract.wording`); empty = the labels.
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
        channels: Input channels of the network's stem (1, or 3 for an RGB stem that reads the
            grey tensor repeated, see :meth:`medcnn.preprocess.Normalize.channel_affine`).
        weights_file: File name of the weights next to the card: ``""`` means ``<name>.pt`` (a
            ``state_dict``); a ``.safetensors`` name is read with ``safetensors``.
        weights_sha256: SHA-256 of the weights file; when set, loading refuses any other file.
        provenance: Where imported weights came from: ``source``, ``sha256`` of the file given,
            ``licence`` as declared (not verified), ``imported`` (date, command).
        unknown: What is not known about the model, in plain words (e.g. "no test metrics until
            evaluate has run"); shown on the Model card page.
        explanations: Which explanation methods passed the import checks:
            ``{"passed": [...], "failed": {method: reason}}``.
        caveats: Input kind (:data:`medcnn.io.INPUT_KINDS`) -> what is said beside a result on it.

    Fields after ``findings`` are written to the JSON only when set, so cards without them keep
    their exact files. ``training`` ... ``audit`` form the :attr:`report`: on a card from
    :meth:`from_contract` they are read from its file when one of them is first used.
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
    training: dict[str, Any] = _report_field("training")
    metrics: dict[str, Any] = _report_field("metrics")
    intended_use: str = _report_field("intended_use")
    limitations: list[str] = _report_field("limitations")
    experiments: list[dict[str, Any]] = _report_field("experiments")
    audit: dict[str, Any] = _report_field("audit")
    scope: dict[str, Any] = field(default_factory=dict)
    wording: dict[str, str] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)
    head: str = "softmax"
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: int = 1
    weights_file: str = ""
    weights_sha256: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    explanations: dict[str, Any] = field(default_factory=dict)
    caveats: dict[str, str] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if "_report_from" not in self.__dict__:  # a card built in memory: defaults for what was not given
            self._fill_report({})
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        if len(self.input_size) != 2:
            raise CardError(f"input_size must be (H, W), got {self.input_size!r}")
        if self.positive_label not in self.labels:
            raise CardError(
                f"positive_label {self.positive_label!r} is not one of labels {self.labels!r}"
            )
        if len(set(self.labels)) != len(self.labels) or len(self.labels) < 2:
            raise CardError(f"labels must be >= 2 distinct names, got {self.labels!r}")
        if set(self.caveats) - set(INPUT_KINDS):
            raise CardError(f"caveats are keyed by input kind ({', '.join(INPUT_KINDS)}), got {sorted(self.caveats)}")
        if int(self.channels) not in (1, 3):
            raise CardError(f"channels must be 1 or 3, got {self.channels!r}")
        self.channels = int(self.channels)
        if self.weights_file and (Path(self.weights_file).name != self.weights_file
                                  or Path(self.weights_file).suffix not in _WEIGHTS_SUFFIXES):
            raise CardError(f"weights_file must be a file name next to the card ending in "
                            f"{' or '.join(_WEIGHTS_SUFFIXES)}, got {self.weights_file!r}")
        if self.head not in HEAD_KINDS:
            raise CardError(f"head must be one of {', '.join(HEAD_KINDS)}, got {self.head!r}")
        if self.head == "sigmoid":
            missing = [name for name in self.labels if name not in self.findings]
            if missing:
                raise CardError(f"a sigmoid card needs a 'findings' entry (temperature, threshold) for every "
                                f"label; missing: {', '.join(missing)}")
            for name, f in self.findings.items():
                try:
                    FindingPoint.from_dict(name, f)
                except ValueError as e:
                    raise CardError(str(e)) from None

    def _fill_report(self, data: dict[str, Any]) -> None:
        """Set every report field not set yet from ``data``, else its default."""
        values = self.__dict__.setdefault("_report", {})
        for f in fields(CardReport):
            if f.name not in values:
                values[f.name] = data[f.name] if f.name in data else (
                    f.default if f.default is not MISSING else f.default_factory())  # type: ignore[misc]

    def _read_report(self) -> None:
        source = self.__dict__.get("_report_from")
        self._fill_report({k: v for k, v in read_card_json(source).items() if k in REPORT_FIELDS}
                          if source is not None else {})

    @property
    def report(self) -> CardReport:
        """Training record, metrics, experiments, audits, intended use and limitations (the same
        objects as the card's fields: changing one changes the card). A card from
        :meth:`from_contract` reads them from its file now, once."""
        return CardReport(**{name: getattr(self, name) for name in REPORT_FIELDS})

    @property
    def contract(self) -> CardContract:
        """What serving reads (:class:`~medcnn.models.contract.CardContract`), typed; never reads
        the report."""
        findings = tuple((n, FindingPoint.from_dict(n, self.findings[n])) for n in self.labels) \
            if self.multilabel else ()
        return CardContract(
            name=self.name, architecture=self.architecture, modality=self.modality,
            dicom_modalities=tuple(self.dicom_modalities), head=self.head, labels=tuple(self.labels),
            positive_label=self.positive_label, temperature=float(self.temperature),
            threshold=float(self.threshold), findings=findings, preprocessing=self.preprocessing,
            input_size=tuple(self.input_size), channels=self.channels,  # type: ignore[arg-type]
            target_layer=self.target_layer, scope=self.scope, wording=self.wording, ood=self.ood,
            weights_file=self.weights_file, weights_sha256=self.weights_sha256)

    def _points(self) -> list[FindingPoint]:
        return [FindingPoint.from_dict(n, self.findings[n]) for n in self.labels]

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
        return np.array([p.threshold for p in self._points()])

    def finding_temperatures(self) -> np.ndarray:
        """Calibration temperature of every output, in label order."""
        if not self.multilabel:
            return np.full(len(self.labels), float(self.temperature))
        return np.array([p.temperature for p in self._points()])

    def shown_findings(self) -> list[str]:
        """Labels presented as findings (sigmoid cards: ``shown`` ones; softmax: all)."""
        if not self.multilabel:
            return list(self.labels)
        return [n for n, p in zip(self.labels, self._points()) if p.shown]

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
        """Path of the weights next to the card: ``weights_file``, else the ``.pt`` state_dict."""
        if self.path is None:
            raise CardError(f"card {self.name!r} was not loaded from or saved to a file")
        return self.path.parent / self.weights_file if self.weights_file else self.path.with_suffix(".pt")

    @property
    def pixel_contract(self) -> dict[str, Any]:
        """What the network reads: ``{"input_size", "channels", "normalize"}`` (the pipeline's last
        step name: ``normalize``, ``normalize_imagenet``, ``normalize_xrv`` or ``normalize_unit``)."""
        steps = (self.preprocessing or {}).get("steps") or [{}]
        return {"input_size": list(self.input_size), "channels": self.channels,
                "normalize": steps[-1].get("name", "?")}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d["input_size"] = list(self.input_size)
        for name in _OPTIONAL_FIELDS:  # written only when set: older cards keep their exact files
            if d[name] == _DEFAULTS[name]:
                d.pop(name)
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
        return cls.from_dict(read_card_json(path), path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelCard":
        """A card from its JSON object (unknown keys ignored), loaded from ``path`` if given.

        Raises:
            CardError: required fields are missing or inconsistent.
        """
        card = cls(**_init_args(data, path, report=True))
        card.path = path
        return card

    @classmethod
    def from_contract(cls, contract: dict[str, Any], path: Path) -> "ModelCard":
        """A card from the contract keys of the card file ``path``; its report fields are read from
        that file when first used (:attr:`report`).

        Raises:
            CardError: required fields are missing or inconsistent.
        """
        card = cls.__new__(cls)
        card.__dict__["_report_from"] = path  # read by __post_init__ and _read_report
        card.__init__(**_init_args(contract, path, report=False), path=path)  # type: ignore[misc]
        return card


def _init_args(data: dict[str, Any], path: Path | None, report: bool) -> dict[str, Any]:
    """The keyword arguments of :class:`ModelCard` in a card's JSON ``data`` (the report's too
    when ``report``).

    Raises:
        CardError: a required field is missing.
    """
    required = [f.name for f in fields(ModelCard) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise CardError(f"model card {path} lacks required fields: {', '.join(missing)}")
    known = {f.name for f in fields(ModelCard)} - {"path"} - (set() if report else set(REPORT_FIELDS))
    return {k: v for k, v in data.items() if k in known}


#: Card fields added for imported models, with their defaults (omitted from the JSON when unset).
_OPTIONAL_FIELDS = ("channels", "weights_file", "weights_sha256", "provenance", "unknown", "explanations", "wording",
                    "caveats")
_DEFAULTS = {f.name: (f.default if f.default is not MISSING else f.default_factory())  # type: ignore[misc]
             for f in fields(ModelCard) if f.name in _OPTIONAL_FIELDS}
