"""Bring your own model: turn a 2-D CNN classifier's weights into a checked medcnn checkpoint.

:func:`import_model` reads the weights (``.safetensors`` or a ``state_dict`` saved with
``torch.save``; a pickled whole model only with ``allow_pickle``, unpickled once in a separate
process and converted), builds the architecture through the registry, and checks, before anything
is written, each failure with its own exception:

1. strict load: no missing or unexpected keys, no shape mismatch (:class:`WeightsMismatchError`),
   one output per label (:class:`LabelCountError`);
2. the outputs on a few images (synthetic, plus real ones the caller passes) are finite
   (:class:`NonFiniteOutputError`) and not the same for every image (:class:`ConstantOutputError`);
3. the Grad-CAM layer exists (:class:`TargetLayerError`);
4. the caller's explanation checks (``check_explanations``: the command line runs Grad-CAM and
   Integrated Gradients completeness, :mod:`medcnn.cli.import_model`; explanation code lives above
   this package).

Then it writes ``<name>.safetensors`` and ``<name>.json`` (a :class:`ModelCard` with the pixel
contract, ``provenance``, ``unknown`` and ``explanations``). The card is served like a shipped one.
"""
from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcnn.io import MedImage
from medcnn.models.card import ModelCard, card_file
from medcnn.models.checkpoint import build_from_card, file_sha256, read_state_dict
from medcnn.models.families import XRV_MODELS
from medcnn.models.registry import find_target_layer
from medcnn.preprocess import Pipeline, default_config
from medcnn.preprocess.steps import NORMALIZATIONS

__all__ = ["ImportCheckError", "PickledModelError", "WeightsMismatchError", "LabelCountError",
           "NonFiniteOutputError", "ConstantOutputError", "TargetLayerError", "ExplanationCheckError",
           "UNKNOWN_AFTER_IMPORT", "import_model", "read_source_weights", "sample_tensors"]

#: What an imported card does not know, until the named command has run.
UNKNOWN_AFTER_IMPORT = [
    "no test metrics until evaluate has run on labelled images",
    "no calibration: temperature 1 until recalibrate has run on this site's labelled images",
    "no out-of-distribution gate until fit-ood has run: every image is analysed",
    "training data, population and intended use as declared by the source only (not verified here)",
]


class ImportCheckError(ValueError):
    """An imported model failed a check; nothing was written."""


class PickledModelError(ImportCheckError):
    """The weights file is a pickled object (a whole model), not a state_dict."""


class WeightsMismatchError(ImportCheckError):
    """The weights do not fit the architecture (missing / unexpected keys, shapes)."""


class LabelCountError(ImportCheckError):
    """The model's number of outputs is not the number of labels."""


class NonFiniteOutputError(ImportCheckError):
    """The model gives NaN or infinite outputs."""


class ConstantOutputError(ImportCheckError):
    """The model gives the same outputs for every image."""


class TargetLayerError(ImportCheckError):
    """The Grad-CAM layer does not exist or gives no spatial map."""


class ExplanationCheckError(ImportCheckError):
    """A required explanation check (Grad-CAM map, IG completeness) failed."""


# --------------------------------------------------------------------------- reading the weights
_UNPICKLE = """
import sys, torch
from safetensors.torch import save_file
obj = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
state = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    sys.exit(f"the pickled object is a {type(obj).__name__}, neither a torch.nn.Module nor a state_dict")
save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, sys.argv[2])
"""


def _unpickle_once(path: Path) -> dict[str, torch.Tensor]:
    """Unpickle ``path`` in a separate Python process; its state_dict comes back as safetensors."""
    warnings.warn(f"unpickling {path.name} runs code from that file: do this only for a file whose source "
                  f"you trust; it is done once, in a separate process, and converted to safetensors",
                  UserWarning, stacklevel=3)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "state.safetensors"
        proc = subprocess.run([sys.executable, "-c", _UNPICKLE, str(path), str(out)], capture_output=True,
                              text=True, timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise PickledModelError(f"could not unpickle {path}: {last}")
        return read_state_dict(out)


def read_source_weights(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict of a weights file given to ``import-model``, and the file's format.

    ``.safetensors`` and ``torch.save`` state_dicts (read with ``weights_only=True``; a
    ``{"state_dict": {...}}`` wrapper is unwrapped) are read directly. A pickled whole model is
    refused unless ``allow_pickle``; then it is unpickled once in a separate process, with a warning.

    Returns:
        ``(state_dict, format)``, format ``"safetensors"``, ``"state_dict"`` or ``"pickled model"``.

    Raises:
        FileNotFoundError: no such file.
        PickledModelError: a pickled object without ``allow_pickle``, or it failed to unpickle.
        WeightsMismatchError: the file holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return read_state_dict(path), "safetensors"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the unpickler refuses objects with several error types
        if not allow_pickle:
            raise PickledModelError(
                f"{path} is not a plain state_dict: loading it would unpickle Python objects (a whole model), "
                f"which can run arbitrary code ({type(e).__name__}). Save model.state_dict() or safetensors "
                f"instead, or pass --allow-pickle if you trust the file's source (it is then unpickled once, "
                f"in a separate process, and converted to safetensors)") from None
        return _unpickle_once(path), "pickled model"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatchError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")
    return obj, "state_dict"


# --------------------------------------------------------------------------- checks
def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], n_labels: int, arch: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)}
    head = {k: s for k, s in shapes.items() if s[1] and s[1][0] == n_labels and s[0][1:] == s[1][1:]}
    if head and len(head) == len(shapes) and not missing and not unexpected:
        outputs = sorted({s[0][0] for s in head.values()})
        raise LabelCountError(f"the weights have {', '.join(map(str, outputs))} output(s) ({', '.join(head)}) "
                              f"but {n_labels} labels were given: give one label per output, in output order")
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:5])}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): " + ", ".join(
                f"{k} {list(a)} in the file vs {list(b)} in {arch}" for k, (a, b) in list(shapes.items())[:5]))
        raise WeightsMismatchError(f"the weights do not fit {arch}: " + "; ".join(parts)
                                   + " (check --arch, --channels and the number of labels)")
    model.load_state_dict(state, strict=True)


def _synthetic(size: tuple[int, int], n: int = 6) -> np.ndarray:
    """``n`` distinct [0, 1] images (H, W): ramps, a disc, a checkerboard and seeded noise."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    imgs = [xx / max(w - 1, 1), yy / max(h - 1, 1),
            ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2).astype(np.float32),
            (((xx // 8) + (yy // 8)) % 2).astype(np.float32)]
    imgs += [rng.uniform(0, 1, (h, w)).astype(np.float32) for _ in range(max(0, n - len(imgs)))]
    return np.stack(imgs[:n]).astype(np.float32)


def sample_tensors(pipeline: Pipeline, images: Sequence[MedImage] = ()) -> torch.Tensor:
    """The check images as network inputs: six synthetic ones, then ``images`` through the pipeline.

    Returns:
        float32 (N, 1, H, W).
    """
    x = pipeline.to_tensor(_synthetic(pipeline.input_size))
    real = [pipeline(img, keep_steps=False).tensor for img in images]
    return torch.cat([x, *real]) if real else x


def _check_outputs(model: nn.Module, x: torch.Tensor, n_labels: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model(x)
    if out.dim() != 2 or out.shape[1] != n_labels:
        raise LabelCountError(f"the model gives outputs of shape {tuple(out.shape)} for {len(x)} images: "
                              f"expected ({len(x)}, {n_labels}), one output per label")
    if not torch.isfinite(out).all():
        raise NonFiniteOutputError(f"the model gives NaN or infinite outputs on {int((~torch.isfinite(out)).any(1).sum())} "
                                   f"of {len(x)} check images: wrong weights or pixel contract (--normalize)")
    spread = float((out.max(0).values - out.min(0).values).max())
    if spread <= 1e-6 * (1.0 + float(out.abs().max())):
        raise ConstantOutputError(f"the model gives the same outputs ({[round(float(v), 4) for v in out[0]]}) for all "
                                  f"{len(x)} check images: it does not look at the image (untrained or broken "
                                  f"weights, or a wrong architecture)")
    return out


def _check_layer(model: nn.Module, layer: str | None, size: tuple[int, int]) -> str:
    if layer is None:
        try:
            return find_target_layer(model, size)
        except ValueError as e:
            raise TargetLayerError(str(e)) from None
    try:
        model.get_submodule(layer)
    except AttributeError:
        blocks = [n for n, m in model.named_modules() if n and any(True for _ in m.children())]
        raise TargetLayerError(f"Grad-CAM layer {layer!r} not found in the model; its blocks: "
                               f"{', '.join(blocks[-12:])}") from None
    return layer


# --------------------------------------------------------------------------- the import
def _contract(arch: str, modality: str, input_size: int | None, channels: int | None,
              normalize: str | None) -> tuple[int, int, str, dict[str, Any]]:
    xrv = arch.startswith("xrv:")
    size = int(input_size or XRV_MODELS.get(arch.partition(":")[2], 224))
    channels = int(channels or (1 if xrv else 3))
    normalize = normalize or ("xrv" if xrv else "imagenet" if channels == 3 else "unit")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {normalize!r}; valid: {', '.join(NORMALIZATIONS)}")
    config = default_config(modality, size)
    step = NORMALIZATIONS[normalize]()
    config["steps"][-1] = {"name": step.name, **step.config()}
    if xrv:  # TorchXRayVision's XRayCenterCrop: the centred square, not a padded one
        for s in config["steps"]:
            if s["name"] == "crop_or_pad":
                s["mode"] = "crop"
    step.channel_affine(channels)  # raises for a contract the stem cannot read
    return size, channels, normalize, config


def _sigmoid_findings(labels: Sequence[str], op_threshs: torch.Tensor | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    ops = None if op_threshs is None else [float(v) for v in op_threshs.flatten()]
    for i, name in enumerate(labels):
        t = ops[i] if ops is not None and i < len(ops) else None
        if t is not None and 0.0 < t < 1.0:
            out[name] = {"temperature": 1.0, "threshold": t, "shown": True,
                         "reason": "operating point from the source weights (op_threshs)"}
        elif ops is not None:
            out[name] = {"temperature": 1.0, "threshold": 0.5, "shown": False,
                         "reason": "the source weights give no operating point for this output"}
        else:
            out[name] = {"temperature": 1.0, "threshold": 0.5, "shown": True,
                         "reason": "no operating point known: 0.5 until recalibrate has run"}
    return out


def import_model(arch: str, weights: str | Path, labels: Sequence[str], out: str | Path, *,
                 head: str | None = None, input_size: int | None = None, channels: int | None = None,
                 normalize: str | None = None, target_layer: str | None = None, allow_pickle: bool = False,
                 modality: str = "CXR", licence: str = "", source: str = "",
                 images: Sequence[MedImage] = (),
                 check_explanations: Callable[[nn.Module, ModelCard, torch.Tensor], dict[str, Any]] | None = None,
                 ) -> ModelCard:
    """Check a model's weights and write ``<name>.safetensors`` + ``<name>.json`` (module docstring).

    Args:
        arch: Architecture id (``torchvision:resnet18``, ``timm:...``, ``xrv:densenet121-res224``).
        weights: ``.safetensors`` or ``torch.save`` state_dict (or a pickled model, ``allow_pickle``).
        labels: Output names, in output order.
        out: The card to write, ``<folder>/<name>.json``.
        head: ``"softmax"`` or ``"sigmoid"`` (default: sigmoid for ``xrv:``, else softmax).
        input_size: Square input side (default 224; ``xrv:`` its resolution).
        channels: Stem channels, 1 or 3 (default 3; ``xrv:`` 1).
        normalize: Pixel contract, ``imagenet``, ``xrv`` or ``unit`` (default per family / channels).
        target_layer: Grad-CAM layer (default: found with hooks, :func:`find_target_layer`).
        allow_pickle: Accept a pickled whole model (see :func:`read_source_weights`).
        modality: ``"CXR"`` or ``"CT"``.
        licence: The licence the weights' source declares (recorded, not verified).
        source: Where the weights come from (default: the file name).
        images: Real images the outputs are also checked on.
        check_explanations: ``f(model, card, x) -> {"passed": [...], "failed": {...}}``, raising
            :class:`ExplanationCheckError` for a required method; its result is the card's ``explanations``.

    Returns:
        The written card (``card.path`` set).

    Raises:
        ImportCheckError: a subclass per failed check (module docstring); ValueError for bad options.
    """
    labels = [str(v).strip() for v in labels]
    if len(labels) < 2 or len(set(labels)) != len(labels) or not all(labels):
        raise ValueError(f"--labels needs two or more distinct names, got {labels}")
    modality = modality.upper()
    size, channels, normalize, config = _contract(arch, modality, input_size, channels, normalize)
    head = head or ("sigmoid" if arch.startswith("xrv:") else "softmax")
    path = card_file(out)
    weights = Path(weights)
    state, fmt = read_source_weights(weights, allow_pickle)
    state = dict(state)
    op_threshs = state.pop("op_threshs", None) if arch.startswith("xrv:") else None
    card = ModelCard(
        name=path.stem, architecture=arch, modality=modality, labels=labels, positive_label=labels[-1],
        input_size=(size, size), preprocessing=config, target_layer=target_layer or "",
        dicom_modalities=["CT"] if modality == "CT" else ["CR", "DX"], head=head,
        findings=_sigmoid_findings(labels, op_threshs) if head == "sigmoid" else {}, channels=channels,
        intended_use="Imported model: research use only, until evaluated on this site's labelled images.",
        limitations=["Imported weights: nothing about them was measured here beyond the import checks."],
        provenance={"source": source or weights.name, "sha256": file_sha256(weights),
                    "licence": licence or "not declared", "format": fmt, "imported": _dt.date.today().isoformat()},
        unknown=list(UNKNOWN_AFTER_IMPORT),
    )
    model = build_from_card(card)
    _load_strict(model, state, len(labels), arch)
    model.eval()
    card.target_layer = _check_layer(model, target_layer, (size, size))
    x = sample_tensors(Pipeline.from_config(config), images)
    _check_outputs(model, x, len(labels))
    if check_explanations is not None:
        card.explanations = check_explanations(model, card, x)
    path.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    wpath = path.with_name(f"{path.stem}.safetensors")
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}, str(wpath))
    card.weights_file, card.weights_sha256 = wpath.name, file_sha256(wpath)
    card.save(path)
    return card
