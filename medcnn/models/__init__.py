"""Models: architectures and their registry, devices and the checkpoint format, the model card.

``registry`` is the one factory (``create_model``, the timm pattern); ``checkpoint`` saves and loads
state_dict weights (``weights_only=True``) next to their JSON ``card``. Names are resolved lazily
(PEP 562) so reading a model card does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelCard": "card", "CardError": "card",
    "MODELS": "registry", "SimpleCNN": "registry", "SmallResNet": "registry",
    "create_model": "registry", "default_target_layer": "registry",
    "get_device": "checkpoint", "prepare_for_device": "checkpoint",
    "load_model": "checkpoint", "save_checkpoint": "checkpoint",
    "softmax_t": "outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medcnn.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"medcnn.models.{module}"), name)


def __dir__() -> list[str]:
    return __all__
