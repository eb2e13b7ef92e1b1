"""Image input: the only package that knows file formats and DICOM tags.

``read_image`` (reader) detects the format by content and dispatches to ``dicom`` or ``raster``;
``types`` holds what every reader returns (``MedImage``, ``ImageMeta``) and the one error;
``archive`` lists and expands the ZIP archives of an upload under one decompression budget.
"""
from __future__ import annotations

from medcnn.io.types import UnsupportedImageError, ImageMeta, MedImage, DEFAULT_MAX_PIXELS, ACCEPTED, INPUT_KINDS
from medcnn.io.reader import read_image, detect_format
from medcnn.io.archive import ArchiveBudgetError, ArchiveMemberError, ExpansionCache, UploadSet

__all__ = ['UnsupportedImageError', 'ImageMeta', 'MedImage', 'DEFAULT_MAX_PIXELS', 'ACCEPTED', 'INPUT_KINDS', 'read_image', 'detect_format',
           'ArchiveBudgetError', 'ArchiveMemberError', 'ExpansionCache', 'UploadSet']
