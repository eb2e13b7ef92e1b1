"""Burned-in text: the header flags and the margin heuristic, on synthetic images."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from medcnn.privacy import burned_in_warnings, deidentify_bytes, text_region_mask, text_regions


def radiograph(size: int = 512, seed: int = 0) -> np.ndarray:
    """A smooth 'chest' (bright centre, dark border) with noise: float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    body = 0.75 * np.exp(-(((x - 0.5) / 0.3) ** 2 + ((y - 0.55) / 0.35) ** 2))
    return np.clip(body + rng.normal(0, 0.02, (size, size)), 0, 1).astype(np.float32)


def with_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.6) -> np.ndarray:
    ink = np.zeros(img.shape, np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(ink, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_8)
    return np.where(ink > 0, np.float32(1.0), img)


def test_text_in_a_margin_is_found_and_masked():
    img = with_text(radiograph(), "DOE JOHN 1970", (20, 30))
    regions = text_regions(img)
    assert regions.found and "top" in regions.flagged_bands and regions.glyphs >= 5
    text_pixels = img >= 0.99
    assert regions.mask.shape == img.shape and regions.mask.dtype == bool
    assert regions.mask[text_pixels].mean() > 0.95  # the mask covers the letters
    assert regions.mask[60:, :].sum() == 0  # and nothing far from them


def test_clean_image_and_a_single_marker_are_not_flagged():
    img = radiograph()
    assert not text_regions(img).found and not text_region_mask(img).any()
    marker = with_text(img, "R", (470, 40), scale=0.9)  # a lone L/R lead marker is not text
    regions = text_regions(marker)
    assert regions.glyphs == 1 and not regions.found


def test_text_in_the_middle_is_not_the_margin_heuristic():
    assert not text_regions(with_text(radiograph(), "DOE JOHN", (200, 260))).found


def test_large_image_is_analysed_at_working_size_and_mask_has_input_shape():
    big = cv2.resize(with_text(radiograph(), "PORTABLE AP", (20, 490)), (2048, 1536))
    regions = text_regions(np.clip(big, 0, 1))
    assert regions.found and regions.mask.shape == (1536, 2048) and "bottom" in regions.flagged_bands


@pytest.mark.parametrize("bad, match", [(np.zeros((4, 4, 3)), "greyscale"), (np.full((8, 8), 2.0), r"\[0, 1\]")])
def test_display_arrays_are_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        text_regions(bad)


def test_header_flags_are_reported():
    ds = Dataset()
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "YES"
    messages = burned_in_warnings(ds)
    assert len(messages) == 2
    assert "Burned In Annotation = YES" in messages[0] and "does not clean pixel data" in messages[0]
    ds.BurnedInAnnotation = "NO"
    del ds.RecognizableVisualFeatures
    assert burned_in_warnings(ds) == []


def test_deidentify_bytes_warns_on_burned_in_annotation():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    buf = io.BytesIO()
    ds.save_as(buf)
    out, summary = deidentify_bytes(buf.getvalue(), check_pixels=False)
    assert any("burned-in annotation" in w for w in summary.warnings)
    assert pydicom.dcmread(io.BytesIO(out)).BurnedInAnnotation == "YES"  # kept: it is still true


def test_undecodable_pixels_are_reported_not_fatal():
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))  # no image at all
    assert burned_in_warnings(ds, b"not an image") == [
        "the image could not be decoded, so its margins were not checked for burned-in text"]
