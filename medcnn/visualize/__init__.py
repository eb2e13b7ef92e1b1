"""Visualisation: the one heat-map normalisation, overlays, metric figures and the PDF report.
"""
from __future__ import annotations

from medcnn.visualize.heatmap import (DEFAULT_CMAP, colorbar_image, figure_side_by_side, heatmap_rgb, normalize_heatmap,
                                      overlay, to_png_bytes, to_uint8)

__all__ = ['DEFAULT_CMAP', 'to_uint8', 'normalize_heatmap', 'overlay', 'heatmap_rgb', 'colorbar_image',
           'figure_side_by_side', 'to_png_bytes']
