"""medcnn: chest X-ray and CT classification with faithful saliency maps.

Research and teaching tool, not a medical device.

One subpackage per stage of an upload's path, plus the offline tools::

    io -> preprocess -> models -> inference -> explain -> visualize -> app
    cli (commands), evaluation (metrics, CIs, calibration), training, audit

Imports flow down that path; no module imports a private name of another subpackage.

Public names are imported lazily (PEP 562) so ``import medcnn`` stays light and the
command line starts fast; ``from medcnn import read_image`` works as usual.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
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


# Module paths of the flat first layout -> their home now. ``import medcnn.card`` keeps working
# (the same module object, with a DeprecationWarning naming the new path).
_MOVED = {
    "medcnn.card": "medcnn.models.card",
    "medcnn.metrics": "medcnn.evaluation.metrics",
    "medcnn.evaluate": "medcnn.evaluation.evaluate",
    "medcnn.sanity": "medcnn.explain.sanity",
    "medcnn.plots": "medcnn.visualize.plots",
    "medcnn.report": "medcnn.visualize.report",
    "medcnn.data": "medcnn.training.data",
    "medcnn.augment": "medcnn.training.augment",
    "medcnn.boxsup": "medcnn.training.boxsup",
    "medcnn.train": "medcnn.training.loop",
    "medcnn.saliency_audit": "medcnn.audit.saliency",
    "medcnn.saliency_regions": "medcnn.audit.regions",
    "medcnn.audit_features": "medcnn.audit.features",
    "medcnn.audit_balance": "medcnn.audit.balance",
    "medcnn.audit_table": "medcnn.audit.table",
    "medcnn.appstate": "medcnn.app.state",
    "medcnn.app_display": "medcnn.app.display",
    "medcnn.app_batch": "medcnn.app.batch",
    "medcnn.app_cards": "medcnn.app.cards",
    "medcnn.commands": "medcnn.cli",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve an old module path to the module at its new path (one object, two names)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in _MOVED or fullname.rpartition(".")[0] == "medcnn.commands":
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> Any:
        name = spec.name
        new = _MOVED.get(name) or "medcnn.cli." + name.rpartition(".")[2]
        warnings.warn(f"{name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        """The module was executed under its new name already."""


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medcnn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
