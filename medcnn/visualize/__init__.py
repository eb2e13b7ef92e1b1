"""Visualisation: the one heat-map normalisation, overlays, metric figures and the PDF report.
"""
from __future__ import annotations

from medcnn.visualize.heatmap import to_uint8, normalize_heatmap, overlay, colorbar_image, figure_side_by_side, to_png_bytes

__all__ = ['to_uint8', 'normalize_heatmap', 'overlay', 'colorbar_image', 'figure_side_by_side', 'to_png_bytes']
