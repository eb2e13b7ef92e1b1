"""The model catalogue: which cards a weights folder holds, and which one serves an image.

Torch-free, so the app can list its models on every page rerun without loading a network.

* :func:`load_card` parses a card's contract once per file version (path, modification time and
  size) and hands out a fresh :class:`~medcnn.models.card.ModelCard` whose report (metrics,
  experiments, audits, training record) is read from the file only when first used
  (:attr:`ModelCard.report`); :func:`load_report` reads just the report.
* :func:`list_cards` finds the valid cards (``<name>.json`` with its weights) of a folder.
* :func:`resolve_card` is the one answer to "which model card serves this image" (app, command
  line and library; :mod:`medcnn.inference` re-exports it), with :func:`choose_model` for the
  choice by modality. The ``.pt -> .json`` rule is :func:`medcnn.models.card.card_file`.
"""
from __future__ import annotations

import copy
import functools
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcnn.models.card import CardError, ModelCard, card_file, read_card_json
from medcnn.models.contract import REPORT_FIELDS, CardReport

if TYPE_CHECKING:
    from medcnn.io import ImageMeta

__all__ = [
    "AUTO",
    "CARD_FAMILIES",
    "DEFAULT_CARDS",
    "WEIGHTS_ENV",
    "choose_model",
    "default_weights_dir",
    "list_cards",
    "load_card",
    "load_report",
    "resolve_card",
]

#: Environment variable naming the weights folder.
WEIGHTS_ENV = "MEDCNN_WEIGHTS_DIR"
#: The value of a model choice meaning "pick by the image's modality".
AUTO = "auto"
#: DICOM Modality -> model family (card.modality). "OT" is what io reports for PNG/JPEG.
CARD_FAMILIES: dict[str, str] = {"CT": "CT", "CR": "CXR", "DX": "CXR", "OT": "CXR"}
#: Preferred card of each family in the weights folder.
DEFAULT_CARDS: dict[str, str] = {"CXR": "cxr_findings", "CT": "ct_covid"}


def default_weights_dir() -> Path:
    """The weights folder: ``$MEDCNN_WEIGHTS_DIR`` if set, else ``weights`` in the working
    directory (the repository root when started as the README says)."""
    return Path(os.environ.get(WEIGHTS_ENV) or "weights")


@functools.lru_cache(maxsize=64)
def _contract(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """The contract keys of one version of a card file, checked by building its card once."""
    data = read_card_json(Path(path))
    contract = {k: v for k, v in data.items() if k not in REPORT_FIELDS}
    ModelCard.from_contract(copy.deepcopy(contract), Path(path))  # raises CardError on a bad card
    return contract


def load_card(path: str | Path) -> ModelCard:
    """A card whose contract is parsed once per file version (cached by path, modification time
    and size) and whose report is read from the file when first used. A new card is returned
    each call, so callers may change it freely.

    Args:
        path: The card's ``.json``, its ``.pt`` or the bare checkpoint path (:func:`card_file`).

    Raises:
        CardError: missing or malformed card.
    """
    path = card_file(path)
    try:
        st = path.stat()
    except OSError:
        raise CardError(f"model card not found: {path} (expected <name>.json next to <name>.pt)") from None
    contract = _contract(str(path), st.st_mtime_ns, st.st_size)
    return ModelCard.from_contract(copy.deepcopy(contract), path)


def load_report(path: str | Path) -> CardReport:
    """The report of a card file (training record, metrics, experiments, audits, intended use,
    limitations), read now; fields the file lacks take their defaults.

    Raises:
        CardError: missing or malformed card.
    """
    data = read_card_json(card_file(path))
    return CardReport(**{k: v for k, v in data.items() if k in REPORT_FIELDS})


def list_cards(weights_dir: str | Path | None = None) -> list[ModelCard]:
    """Every valid model card (``*.json`` with its weights) in ``weights_dir``, by name.

    Cards that do not parse are skipped with a warning.
    """
    cards = []
    for path in sorted(Path(weights_dir or default_weights_dir()).glob("*.json")):
        try:
            card = load_card(path)
        except (CardError, TypeError) as e:
            warnings.warn(f"skipping {path}: {e}", stacklevel=2)
            continue
        if card.weights_path.is_file():
            cards.append(card)
    return cards


def choose_model(meta: ImageMeta, weights_dir: str | Path | None = None) -> Path:
    """Card path of the model for an image, from its modality.

    CT -> the CT model; CR, DX and PNG/JPEG (``"OT"``) -> the chest X-ray model. Within a
    family, the default card (``cxr_findings`` / ``ct_covid``) is preferred, else the
    first by name.

    Raises:
        ValueError: the modality is not supported (MR, US, NM, ...), or no card of the
            needed family is in ``weights_dir``.
    """
    weights_dir = weights_dir or default_weights_dir()
    modality = (meta.modality or "OT").upper()
    family = CARD_FAMILIES.get(modality)
    if family is None:
        raise ValueError(
            f"no model for modality {modality}: supported are CT (CT model) and CR, DX and "
            f"PNG/JPEG (chest X-ray model)"
        )
    cards = [c for c in list_cards(weights_dir) if c.modality.upper() == family]
    if not cards:
        raise ValueError(f"no {family} model card (<name>.json + <name>.pt) found in {weights_dir}")
    preferred = [c for c in cards if c.name == DEFAULT_CARDS[family]]
    card = (preferred or cards)[0]
    return card.path  # type: ignore[return-value]


def resolve_card(meta: ImageMeta | None = None, model: str | Path | None = None,
                 weights_dir: str | Path | None = None) -> Path:
    """The one answer to "which model card serves this image" (app, CLI and library).

    Args:
        meta: The image's metadata (needed when the model is chosen automatically).
        model: ``None`` or ``"auto"``: by modality (:func:`choose_model`); a card name in
            ``weights_dir`` (``"ct_covid"``); or the path of a ``.json`` / ``.pt`` file.
        weights_dir: Folder of the cards (default :func:`default_weights_dir`).

    Returns:
        Path of the card's ``.json``.

    Raises:
        ValueError: unsupported modality, or no such card (the message lists the cards).
    """
    weights_dir = Path(weights_dir or default_weights_dir())
    if model is None or str(model).lower() == AUTO:
        if meta is None:
            raise ValueError("choosing a model by modality needs the image's metadata")
        return Path(choose_model(meta, weights_dir))
    p = Path(model)
    names_a_file = card_file(p).stem != p.name  # ``x.pt`` / ``x.json``, not a card name
    if names_a_file and p.is_file():
        return card_file(p)
    candidate = weights_dir / card_file(p.name if names_a_file else model)
    if candidate.is_file() and load_card(candidate).weights_path.is_file():
        return candidate
    names = sorted(c.name for c in list_cards(weights_dir))
    raise ValueError(f"model {str(model)!r} not found (no file {p} nor {candidate} with its .pt); "
                     f"models in {weights_dir}: {', '.join(names) or 'none'}")
