"""Evaluation: metrics, bootstrap confidence intervals and calibration (the only home of AUC).

``metrics`` computes metric sets with cluster-bootstrap CIs (``bootstrap``) and holds the one
ROC AUC; ``calibration`` fits temperature and threshold on validation; ``labels`` reads labelled
image sets; ``evaluate`` scores a model on a labelled set and writes the results into its card.
"""
from __future__ import annotations

from medcnn.evaluation.metrics import (
    SCALAR_METRICS,
    auc_ci,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    metrics_by_group,
    roc_auc,
    softmax_t,
    youden_threshold,
)

__all__ = ['SCALAR_METRICS', 'auc_ci', 'compute_metrics', 'expected_calibration_error', 'fit_temperature',
           'metrics_by_group', 'roc_auc', 'softmax_t', 'youden_threshold']
