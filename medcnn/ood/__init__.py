"""Knowing when not to answer: the out-of-distribution gate and header scope checks.

``features`` pools a model's own stage activations in one forward pass; ``gate`` scores them
against statistics fitted on the training images (probabilistic-PCA Mahalanobis) with thresholds
set on validation images; ``scope`` checks the DICOM header against what the card declares (and
an image's size against the network's input);
``validate`` measures the gate on out-of-distribution sets, transformed films and synthetic inputs.
"""
from __future__ import annotations

from medcnn.ood.gate import CAUTION_QUANTILE, LEVELS, REFUSE_QUANTILE, OODGate, OODResult
from medcnn.ood.scope import DEFAULT_SCOPES, check_resolution, check_scope, resolve_scope

__all__ = ["CAUTION_QUANTILE", "LEVELS", "REFUSE_QUANTILE", "OODGate", "OODResult",
           "DEFAULT_SCOPES", "check_resolution", "check_scope", "resolve_scope", "FeatureExtractor", "default_layers"]


def __getattr__(name: str):
    if name in ("FeatureExtractor", "default_layers"):  # torch-dependent: imported on use
        from medcnn.ood import features

        return getattr(features, name)
    raise AttributeError(f"module 'medcnn.ood' has no attribute {name!r}")
