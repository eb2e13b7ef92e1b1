"""Preprocessing: the only package that windows, inverts, crops/pads, resizes and normalises.

``voi`` implements the DICOM VOI transform (PS3.3 C.11.2) and window presets; ``steps`` holds the
small callable steps; ``orient`` turns an axial CT slice to the standard view, ``body`` finds a CT slice's body for the ``body_crop`` step and ``lungs`` its lungs for the ``lung_crop`` step; ``pipeline``
chains them into the tensor *and* every step's display image.
"""
from __future__ import annotations

from medcnn.preprocess.voi import CT_PRESETS, resolve_window, apply_window, auto_window
from medcnn.preprocess.steps import Step, Window, Invert, Denoise, CLAHE, Orient, BodyCrop, LungCrop, CropOrPad, Resize, Normalize, STEPS
from medcnn.preprocess.pipeline import StepOutput, PipelineResult, Pipeline, default_config, render, check_unit_range

__all__ = ['CT_PRESETS', 'resolve_window', 'apply_window', 'auto_window', 'Step', 'Window', 'Invert', 'Denoise', 'CLAHE', 'Orient', 'BodyCrop', 'LungCrop', 'CropOrPad', 'Resize', 'Normalize', 'STEPS', 'StepOutput', 'PipelineResult', 'Pipeline', 'default_config', 'render', 'check_unit_range']
