"""medcnn: chest X-ray and CT classification with faithful saliency maps.

Research and teaching tool, not a medical device.

One subpackage per stage of an upload's path, plus the offline tools. Imports run down the
layers, lowest first (``LAYERS`` in ``tests/test_architecture.py``, which checks it)::

    io < preprocess < models < ood, privacy < explain, evaluation < visualize < inference
       < distributed, pacs < training < audit < app, cli

No module imports a private name of another subpackage.

Public names are imported lazily (PEP 562) so ``import medcnn`` stays light and the
command line starts fast; ``from medcnn import read_image`` works as usual.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module defining it. A name equal to a submodule's (``explain``, ``train``)
# cannot be exported: importing ``medcnn.explain`` binds the *package* to ``medcnn.explain``,
# so the attribute would flip between function and module with import order. Use
# ``from medcnn.explain import explain`` and ``from medcnn.training import train`` instead.
_EXPORTS = {
    "audit_dataset": "medcnn.audit",
    "CardError": "medcnn.models.card",
    "ModelCard": "medcnn.models.card",
    "Explanation": "medcnn.explain",
    "METHODS": "medcnn.explain",
    "Prediction": "medcnn.inference",
    "Predictor": "medcnn.inference",
    "choose_model": "medcnn.inference",
    "ImageMeta": "medcnn.io",
    "MedImage": "medcnn.io",
    "UnsupportedImageError": "medcnn.io",
    "read_image": "medcnn.io",
    "compute_metrics": "medcnn.evaluation.metrics",
    "MODELS": "medcnn.models",
    "create_model": "medcnn.models",
    "load_model": "medcnn.models",
    "Pipeline": "medcnn.preprocess",
    "PipelineResult": "medcnn.preprocess",
    "default_config": "medcnn.preprocess",
    "render": "medcnn.preprocess",
    "audit_saliency": "medcnn.audit.saliency",
    "deletion_insertion": "medcnn.explain.sanity",
    "randomisation_test": "medcnn.explain.sanity",
    "TrainConfig": "medcnn.training.loop",
    "overlay": "medcnn.visualize",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medcnn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
