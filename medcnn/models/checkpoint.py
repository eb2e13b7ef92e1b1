"""Devices, the batch forward pass and the checkpoint format.

A checkpoint is two files: ``<name>.pt`` (a ``state_dict`` only, loaded with
``torch.load(..., weights_only=True)``) and ``<name>.json`` (the
:class:`~medcnn.models.card.ModelCard` holding architecture, labels, preprocessing, Grad-CAM
layer, threshold and temperature). An imported model's card names its weights instead
(``weights_file``, a ``.safetensors`` file) and their SHA-256 (``weights_sha256``), which
:func:`load_model` checks before reading a byte of them as tensors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcnn.models.card import CardError, ModelCard, card_file, file_sha256
from medcnn.models.registry import create_model

__all__ = ["WeightsIntegrityError", "build_from_card", "file_sha256", "get_device", "prepare_for_device",
           "predict_logits", "read_state_dict", "save_checkpoint", "load_model"]


class WeightsIntegrityError(CardError):
    """A weights file is not the one its card names (SHA-256 mismatch)."""


# --------------------------------------------------------------------------- devices
def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Pick the compute device.

    Order: ``prefer`` if given, else the ``MEDCNN_DEVICE`` environment variable, else
    CUDA when available, else CPU.

    Raises:
        ValueError: the requested device is not available or not a device name.
    """
    choice = prefer if prefer is not None else os.environ.get("MEDCNN_DEVICE") or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as e:
        raise ValueError(f"invalid device {choice!r} (use 'cpu', 'cuda' or 'cuda:N'): {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available; use 'cpu'")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {choice!r}; use 'cpu' or 'cuda'")
    return device


def prepare_for_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device``; channels_last on CUDA (faster convolutions)."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def predict_logits(model: nn.Module, tensor: torch.Tensor, device: Any = None) -> torch.Tensor:
    """Raw logits of a batch, computed under ``torch.inference_mode``.

    Args:
        model: Network in eval mode, ``(N, 1, H, W) -> (N, C)``.
        tensor: float32 (N, 1, H, W) pipeline output.
        device: Device to run on (default: the model's).

    Returns:
        float32 (N, C) tensor on the CPU.
    """
    if device is None:
        device = next(model.parameters()).device
    with torch.inference_mode():
        x = tensor.to(device, non_blocking=True)
        if torch.device(device).type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x).float().cpu()


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(model: nn.Module, card: ModelCard, path: str | Path) -> Path:
    """Write ``<stem>.pt`` (state_dict, CPU, contiguous) and ``<stem>.json`` (card).

    Args:
        model: Trained model whose architecture matches ``card.architecture``.
        card: Its model card; ``card.name`` is set to the file stem.
        path: ``weights/<name>.pt`` (``.json`` or no suffix accepted: :func:`~medcnn.models.card.card_file`).

    Returns:
        Path of the written card (``.json``), the argument :func:`load_model` takes.
    """
    card_path = card_file(path)
    card_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    card.name = card_path.stem
    torch.save(state, card_path.with_suffix(".pt"))
    return card.save(card_path)


def load_model(
    card_or_path: str | Path | ModelCard, device: str | torch.device | None = None
) -> tuple[nn.Module, ModelCard]:
    """Rebuild a model from its card and weights.

    Args:
        card_or_path: A :class:`ModelCard` or the path of ``<name>.json`` / ``<name>.pt``.
        device: Target device (default: :func:`get_device`).

    Returns:
        ``(model, card)``, the model in eval mode on ``device``.

    Raises:
        CardError: card or weights missing, unreadable, or the weights do not match
            the card's architecture / label count.
    """
    card = card_or_path if isinstance(card_or_path, ModelCard) else ModelCard.load(card_or_path)
    model = build_from_card(card)
    wpath = card.weights_path
    if not wpath.is_file():
        raise CardError(f"weights not found: {wpath} (expected next to the card {card.path})")
    if card.weights_sha256:
        actual = file_sha256(wpath)
        if actual != card.weights_sha256.lower():
            raise WeightsIntegrityError(
                f"weights {wpath} do not match the card {card.name!r}: SHA-256 {actual} but the card names "
                f"{card.weights_sha256}; the file was changed or replaced: restore it or re-import the model")
    state = read_state_dict(wpath)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[:4]
        raise CardError(
            f"weights {wpath} do not match architecture {card.architecture!r} with "
            f"{len(card.labels)} labels: {' '.join(first)}"
        ) from None
    model = prepare_for_device(model, get_device(device)).eval()
    return model, card


def build_from_card(card: ModelCard) -> nn.Module:
    """The card's network with random weights, via the registry: its architecture, one output per
    label, its stem channels and (for an RGB stem) its pixel contract's per-channel affine.

    Raises:
        CardError: unknown architecture or a pixel contract the stem cannot read.
    """
    from medcnn.preprocess import Pipeline

    try:
        if ":" not in card.architecture:
            return create_model(card.architecture, num_classes=len(card.labels), in_chans=1)
        affine = Pipeline.from_config(card.preprocessing).normalizer.channel_affine(card.channels)
        return create_model(card.architecture, num_classes=len(card.labels), in_chans=1,
                            stem_chans=card.channels, input_affine=affine if card.channels == 3 else None)
    except ValueError as e:
        raise CardError(f"model card {card.name!r}: {e}") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``state_dict`` from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``).

    Raises:
        CardError: unreadable file, or not a mapping of names to tensors (a pickled whole model
            is refused by ``weights_only=True`` and reported here).
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch / safetensors raise many types for bad files
        raise CardError(f"cannot read weights {path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CardError(f"weights {path} are not a state_dict of tensors (got {type(state).__name__})")
    return state
