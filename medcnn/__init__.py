"""medcnn: chest X-ray and CT classification with faithful saliency maps.

Research and teaching tool, not a medical device.

Public names are imported lazily (PEP 562) so ``import medcnn`` stays light and the
command line starts fast; ``from medcnn import read_image`` works as usual.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CardError": "medcnn.card",
    "ModelCard": "medcnn.card",
    "ImageMeta": "medcnn.io",
    "MedImage": "medcnn.io",
    "UnsupportedImageError": "medcnn.io",
    "read_image": "medcnn.io",
    "Pipeline": "medcnn.preprocess",
    "PipelineResult": "medcnn.preprocess",
    "default_config": "medcnn.preprocess",
    "render": "medcnn.preprocess",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medcnn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
