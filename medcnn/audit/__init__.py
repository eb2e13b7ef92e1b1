"""Audits: can the labels be predicted without anatomy (``dataset``), and where does saliency fall
(``saliency``, with the thorax/box geometry in ``regions``).
"""
from __future__ import annotations

from medcnn.audit.balance import label_balance
from medcnn.audit.dataset import CONFOUND_CI_LOW, CONTENT_GROUPS, audit_dataset, format_summary
from medcnn.audit.features import extract_features
from medcnn.audit.table import load_table
from medcnn.audit.saliency import audit_saliency, format_saliency_summary, location_metrics, random_baseline

__all__ = ['label_balance', 'extract_features', 'load_table', 'CONFOUND_CI_LOW', 'CONTENT_GROUPS', 'audit_dataset',
           'format_summary', 'audit_saliency', 'format_saliency_summary', 'location_metrics', 'random_baseline']
