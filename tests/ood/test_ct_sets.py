"""Reformats and header-less copies built from axial slices (the CT gate's check sets)."""
from __future__ import annotations

import numpy as np
import pytest

from medcnn.io import ImageMeta, MedImage
from medcnn.ood.ct_sets import PLANES, reformat, without_header
from medcnn.preprocess.orient import axial_transform


def _stack(n: int = 5, side: int = 8):
    """n axial slices 4 mm apart at 2 mm pixels; slice k is filled with the value k (k=0 lowest)."""
    meta = ImageMeta(source_format="dicom", rows=side, columns=side, modality="CT", body_part="CHEST",
                     orientation=(1, 0, 0, 0, 1, 0), pixel_spacing=(2.0, 2.0))
    slices = [MedImage(np.full((side, side), float(k), np.float32), meta) for k in range(n)]
    return slices, [4.0 * k for k in range(n)]


@pytest.mark.parametrize("plane", list(PLANES))
def test_reformat_puts_the_head_on_top_at_square_pixels(plane):
    slices, z = _stack()
    image = reformat(slices[::-1], z[::-1], plane)  # the order given does not matter
    assert image.pixels.shape == (9, 8)  # 16 mm of body axis at 2 mm: 9 rows; 8 columns
    assert image.pixels[0, 0] == 4 and image.pixels[-1, 0] == 0  # the highest slice first
    assert image.pixels[1, 3] == pytest.approx(3.5)  # linear between slices
    assert image.meta.orientation == PLANES[plane] and image.meta.body_part is None
    assert plane in axial_transform(image.meta.orientation)[1]
    assert slices[0].meta.orientation == (1, 0, 0, 0, 1, 0)  # the source is not modified


def test_reformat_refuses_what_is_not_one_series():
    slices, z = _stack()
    with pytest.raises(ValueError, match="at least 3"):
        reformat(slices[:2], z[:2], "coronal")
    with pytest.raises(ValueError, match="plane"):
        reformat(slices, z, "oblique")
    odd = slices[:-1] + [MedImage(np.zeros((4, 4), np.float32), slices[0].meta)]
    with pytest.raises(ValueError, match="shape"):
        reformat(odd, z, "coronal")


def test_without_header_keeps_the_pixels_and_drops_plane_and_body_part():
    slices, _ = _stack()
    bare = without_header(slices[2])
    assert bare.pixels is slices[2].pixels
    assert bare.meta.orientation is None and bare.meta.body_part is None and bare.meta.modality == "CT"
    assert slices[2].meta.orientation is not None
