"""Tests of medcnn.preprocess: VOI per PS3.3 C.11.2, steps, pipeline config round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medcnn.io import ImageMeta, MedImage
from medcnn.preprocess import (
    CT_PRESETS,
    STEPS,
    Pipeline,
    apply_window,
    auto_window,
    default_config,
    render,
    resolve_window,
)


def _ct(pixels: np.ndarray, **kw) -> MedImage:
    meta = ImageMeta(source_format="dicom", rows=pixels.shape[0], columns=pixels.shape[1],
                     modality="CT", bits_stored=12, rescale_type="HU", **kw)
    return MedImage(pixels.astype(np.float32), meta)


def _png(pixels: np.ndarray, bits: int = 8) -> MedImage:
    meta = ImageMeta(source_format="png", rows=pixels.shape[0], columns=pixels.shape[1], bits_stored=bits)
    return MedImage(pixels.astype(np.float32), meta)


# ----------------------------------------------------------------------------- VOI


@pytest.mark.parametrize("c,w", [(40.0, 400.0), (-600.0, 1500.0), (0.0, 2.0)])
def test_linear_window_matches_standard_formula(c, w):
    # PS3.3 C.11.2.1.2.1: x <= c-0.5-(w-1)/2 -> ymin; x > c-0.5+(w-1)/2 -> ymax;
    # else ((x-(c-0.5))/(w-1)+0.5) * (ymax-ymin) + ymin, with y in [0, 1].
    x = np.linspace(c - w, c + w, 1001, dtype=np.float32)[None]
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    expected = np.where(x <= lo, 0.0, np.where(x > hi, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5))
    np.testing.assert_allclose(apply_window(x, c, w, "LINEAR"), expected, atol=1e-5)


def test_linear_exact_and_sigmoid():
    x = np.array([[-100.0, 0.0, 50.0, 100.0, 200.0]], dtype=np.float32)
    np.testing.assert_allclose(apply_window(x, 50, 100, "LINEAR_EXACT"), [[0, 0, 0.5, 1, 1]], atol=1e-6)
    sig = apply_window(x, 50, 100, "SIGMOID")
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-4 * (x - 50) / 100)), atol=1e-6)
    assert sig[0, 2] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown VOI LUT function"):
        apply_window(x, 0, 10, "CUBIC")


def test_presets_change_ct_rendering_as_expected():
    hu = np.array([[-1000, -600, 40, 300, 1500]], dtype=np.float32)
    img = _ct(hu)
    lung, bone, brain = (render(img, p) for p in ("lung", "bone", "brain"))
    # lung window -600/1500 spans -1350..150 HU: air is dark grey, the window centre mid-grey
    assert lung[0, 0] == pytest.approx((-1000 + 600.5) / 1499 + 0.5, abs=1e-5)
    assert 0.45 < lung[0, 1] < 0.55 and lung[0, 4] == 1.0
    assert brain[0, 2] == pytest.approx(0.5, abs=0.01) and brain[0, 3] == 1.0  # bone saturates in brain
    assert bone[0, 3] < 1.0 and bone[0, 4] > bone[0, 3]  # bone window keeps bone contrast
    assert set(CT_PRESETS) >= {"lung", "mediastinum", "bone", "brain", "abdomen"}
    assert CT_PRESETS["lung"] == (-600.0, 1500.0) and CT_PRESETS["mediastinum"] == (40.0, 400.0)


def test_default_window_priority():
    px = np.arange(100, dtype=np.float32).reshape(10, 10)
    file_img = _ct(px, window_center=50.0, window_width=20.0)
    assert resolve_window(file_img.meta, px)["source"] == "file"
    ct = _ct(px)
    assert resolve_window(ct.meta, px, ct_preset="lung")["source"] == "preset:lung"
    assert resolve_window(ct.meta, px)["source"].startswith("auto")
    assert resolve_window(_png(px).meta, px) == {"source": "full_range", "center": 127.5, "width": 255.0,
                                                  "function": "LINEAR_EXACT"}
    # 16-bit PNG: the full 16-bit range, so depth is preserved, not stretched
    assert resolve_window(_png(px, 16).meta, px)["width"] == 65535.0


def test_window_errors_are_specific():
    px = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="Hounsfield"):
        resolve_window(_png(px).meta, px, "lung")
    with pytest.raises(ValueError, match="no window"):
        resolve_window(_png(px).meta, px, "file")
    with pytest.raises(ValueError, match="unknown window"):
        resolve_window(_png(px).meta, px, "sharp")
    with pytest.raises(ValueError, match="width"):
        resolve_window(_png(px).meta, px, (0, -5))


def test_voi_lut_sequence_is_applied():
    lut = np.linspace(0, 255, 64).astype(np.float32)[::-1].copy()  # a decreasing table
    meta = ImageMeta(source_format="dicom", rows=2, columns=2, modality="OT", voi_lut=(10.0, lut, 8))
    img = MedImage(np.array([[0, 10], [41, 500]], np.float32), meta)
    out = render(img)
    np.testing.assert_allclose(out, [[1.0, 1.0], [lut[31] / 255, 0.0]], atol=1e-6)


def test_auto_window_is_robust_to_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 10, (200, 200)).astype(np.float32)
    x[0, :5] = 1e6  # a few hot pixels must not flatten the image
    c, w = auto_window(x)
    assert 90 < c < 110 and 40 < w < 80


def test_monochrome1_inverted_after_voi():
    px = np.array([[0, 100], [200, 255]], np.float32)
    m1 = ImageMeta(source_format="dicom", rows=2, columns=2, modality="CR", bits_stored=8,
                   photometric_interpretation="MONOCHROME1", window_center=127.5, window_width=256)
    m2 = ImageMeta(**{**m1.__dict__, "photometric_interpretation": "MONOCHROME2"})
    np.testing.assert_allclose(render(MedImage(px, m1)), 1 - render(MedImage(px, m2)), atol=1e-6)


# ------------------------------------------------------------------------ pipeline


def test_pipeline_returns_tensor_display_and_every_step():
    img = _png(np.random.default_rng(1).uniform(0, 255, (300, 200)))
    pipe = Pipeline.from_config(default_config("CXR", 64))
    res = pipe(img)
    assert res.tensor.shape == (1, 1, 64, 64) and res.tensor.dtype == torch.float32
    assert res.display.shape == (64, 64) and res.display.dtype == np.float32
    assert 0.0 <= res.display.min() and res.display.max() <= 1.0
    assert [s.name for s in res.steps] == ["window", "invert", "crop_or_pad", "resize", "normalize"]
    assert res.steps[2].params["to"] == [300, 300] and res.steps[2].image.shape == (300, 300)
    # the tensor is exactly the normalised display image
    np.testing.assert_allclose(res.tensor[0, 0].numpy(), (res.display - 0.5) / 0.25, atol=1e-6)
    np.testing.assert_array_equal(res.steps[-1].image, res.tensor[0, 0].numpy())
    assert img.pixels.shape == (300, 200)  # input untouched


def test_config_is_json_and_rebuilds_identically():
    cfg = default_config("CT", 96)
    cfg["steps"].insert(2, {"name": "clahe", "clip_limit": 2.0, "tile_grid": 4})
    cfg["steps"].insert(2, {"name": "denoise", "method": "median", "ksize": 3, "sigma": 0.05})
    pipe = Pipeline.from_config(json.loads(json.dumps(cfg)))
    again = Pipeline.from_config(json.loads(json.dumps(pipe.config)))
    assert pipe.config == again.config == cfg
    img = _ct(np.random.default_rng(2).uniform(-1000, 400, (120, 100)))
    torch.testing.assert_close(pipe(img).tensor, again(img).tensor)
    assert pipe.input_size == (96, 96)


def test_window_override_per_call_does_not_change_pipeline():
    img = _ct(np.random.default_rng(3).uniform(-1000, 1000, (64, 64)))
    pipe = Pipeline.from_config(default_config("CT", 32))
    a = pipe(img)
    b = pipe(img, window="bone")
    c = pipe(img)
    assert b.window["source"] == "preset:bone" and a.window["source"] == "preset:lung"
    assert not torch.equal(a.tensor, b.tensor)
    torch.testing.assert_close(a.tensor, c.tensor)


def test_crop_mode_and_bad_configs():
    img = _png(np.random.default_rng(4).uniform(0, 255, (100, 60)))
    cfg = default_config("CXR", 32)
    cfg["steps"][2]["mode"] = "crop"
    res = Pipeline.from_config(cfg)(img)
    assert res.steps[2].image.shape == (60, 60)
    with pytest.raises(ValueError, match="unknown preprocessing step"):
        Pipeline.from_config({"steps": [{"name": "sharpen"}]})
    with pytest.raises(ValueError, match="must start with 'window'"):
        Pipeline.from_config({"steps": [{"name": "resize", "size": 32}, {"name": "normalize"}]})
    with pytest.raises(ValueError, match="bad parameters"):
        Pipeline.from_config({"steps": [{"name": "window", "colour": 1}]})
    assert set(STEPS) == {"window", "orient", "invert", "denoise", "clahe", "body_crop", "lung_crop", "crop_or_pad", "resize",
                          "normalize",
                          "normalize_imagenet", "normalize_xrv", "normalize_unit"}


def test_to_tensor_enforces_pixel_contract():
    pipe = Pipeline.from_config(default_config("CXR", 16))
    batch = pipe.to_tensor(np.full((3, 16, 16), 0.75, np.float32))
    assert batch.shape == (3, 1, 16, 16) and torch.allclose(batch, torch.ones_like(batch))
    with pytest.raises(ValueError, match=r"\[0, 1\].*max=255"):
        pipe.to_tensor(np.full((16, 16), 255.0, np.float32))
    with pytest.raises(ValueError, match="shape"):
        pipe.to_tensor(np.zeros((8, 8), np.float32))


def test_pipeline_accepts_non_contiguous_pixels():
    """A rotated view (np.rot90) is not C-contiguous; the window step must still run."""
    from medcnn.io import ImageMeta, MedImage
    from medcnn.preprocess import Pipeline, default_config

    pixels = np.rot90(np.tile(np.linspace(0, 255, 300, dtype=np.float32), (200, 1)))
    assert not pixels.flags["C_CONTIGUOUS"]
    out = Pipeline.from_config(default_config("CXR", 64))(
        MedImage(pixels, ImageMeta(source_format="png", rows=300, columns=200)))
    contiguous = Pipeline.from_config(default_config("CXR", 64))(
        MedImage(np.ascontiguousarray(pixels), ImageMeta(source_format="png", rows=300, columns=200)))
    assert torch.equal(out.tensor, contiguous.tensor)
