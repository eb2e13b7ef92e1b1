"""Tests of the ``body_crop`` step (medcnn.preprocess.body / BodyCrop) and the CT default pipeline.

Synthetic slices in lung-window display values (air 0.23, lung 0.33, soft tissue 0.9), then the
real HU slices of ../shared/data when present: the model input should look like the training
slices (tensor mean / std, no grey air, no table).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from medcnn.io import ImageMeta, MedImage, read_image
from medcnn.preprocess import STEPS, BodyCrop, Pipeline, default_config

REPO = Path(__file__).resolve().parents[2]
AIR, LUNG, TISSUE, TABLE = (np.float32(v) for v in (0.23, 0.33, 0.9, 0.85))
META = ImageMeta(source_format="png", rows=1, columns=1)


def _slice(size: int = 320, table_gap: int = 25, table_thickness: int = 4) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A lung-windowed slice: body ellipse with two lungs, a thin table bar below, air around.

    Returns:
        (image float32 (size, size), body mask bool, table bar rows (top, bottom)).
    """
    x = np.full((size, size), AIR, np.float32)
    body = np.zeros((size, size), np.uint8)
    centre, axes = (size // 2, size // 2 - 10), (int(size * 0.36), int(size * 0.24))
    cv2.ellipse(body, centre, axes, 0, 0, 360, 1, -1)
    x[body > 0] = TISSUE
    for dx in (-1, 1):  # lungs, with a few vessels
        cv2.ellipse(x, (centre[0] + dx * axes[0] // 2, centre[1]), (axes[0] // 3, int(axes[1] * 0.7)),
                    0, 0, 360, float(LUNG), -1)
        for k in range(4):
            cv2.circle(x, (centre[0] + dx * (axes[0] // 2 + 6 * k - 9), centre[1] + 5 * k - 8), 1, 0.8, -1)
    top = centre[1] + axes[1] + table_gap
    x[top:top + table_thickness, size // 10: size - size // 10] = TABLE
    return x, body > 0, (top, top + table_thickness)


def _box(params: dict) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the crop in the input, from the step's parameters."""
    (oy, ox), (h, w) = params["offset"], params["to"]
    return -oy, -ox, -oy + h, -ox + w


@pytest.mark.parametrize("gap", [25, 0])  # table apart from, and touching, the body
def test_synthetic_slice_crop_keeps_body_drops_table_and_air(gap):
    x, body, (t0, t1) = _slice(table_gap=gap)
    out, params = BodyCrop().apply(x, META)
    y0, x0, y1, x1 = _box(params)
    assert out.shape == tuple(params["to"]) and out.dtype == np.float32 and "note" not in params
    ys, xs = np.nonzero(body)
    assert y0 <= ys.min() and x0 <= xs.min() and y1 > ys.max() and x1 > xs.max()  # whole ellipse kept
    pad = round(0.02 * 320)
    assert ys.min() - y0 <= pad + 1 and x1 - 1 - xs.max() <= pad + 1  # ... and not much more
    inner = cv2.erode(body.astype(np.uint8), np.ones((7, 7), np.uint8))[y0:y1, x0:x1] > 0
    outer = cv2.dilate(body.astype(np.uint8), np.ones((7, 7), np.uint8))[y0:y1, x0:x1] > 0
    np.testing.assert_array_equal(out[inner], x[y0:y1, x0:x1][inner])  # lungs and vessels untouched
    left = np.count_nonzero(out[~outer])  # air (and the table, where inside the box) set to 0 ...
    assert left == 0 if gap else left < 0.01 * np.count_nonzero(~outer)  # ... but where it meets the body
    bar = np.zeros_like(body)
    bar[t0:t1, 40:80] = bar[t0:t1, 240:280] = True  # the bar away from the body's bottom
    inside = bar[y0:y1, x0:x1]
    assert not np.any(out[inside]) and 0.1 < params["body_fraction"] < 0.5
    again, params2 = BodyCrop().apply(x, META)
    assert params2 == params and np.array_equal(again, out)  # deterministic
    assert not np.shares_memory(out, x) and x[0, 0] == AIR  # input untouched


def test_mask_outside_false_keeps_pixels_and_fixed_threshold():
    x, _, _ = _slice()
    a, pa = BodyCrop().apply(x, META)
    b, pb = BodyCrop(mask_outside=False, threshold=0.5).apply(x, META)
    assert pa["to"] == pb["to"] and pb["level"] == pytest.approx(0.5, abs=1e-3)
    y0, x0, y1, x1 = _box(pb)
    np.testing.assert_array_equal(b, x[y0:y1, x0:x1])
    assert np.count_nonzero(a == 0) > 1000 and np.count_nonzero(b == 0) == 0


def test_lung_open_to_the_image_edge_is_kept():
    """A training-style crop: the body fills the frame, one lung runs out of the right edge."""
    x = np.full((220, 300), TISSUE, np.float32)
    cv2.ellipse(x, (90, 110), (50, 70), 0, 0, 360, float(LUNG), -1)
    cv2.ellipse(x, (270, 110), (60, 70), 0, 0, 360, float(LUNG), -1)  # cut by the right edge
    x[:12, :12] = x[-12:, -12:] = 0.0  # black corners, as the training JPEGs have
    out, params = BodyCrop().apply(x, META)
    assert out.shape == x.shape and "note" not in params
    np.testing.assert_array_equal(out[x == LUNG], LUNG)


@pytest.mark.parametrize("image, why", [
    (np.zeros((64, 64), np.float32), "constant"),
    (np.ones((64, 64), np.float32), "constant"),
    (np.full((30, 50), 0.4, np.float32), "constant"),
    (np.random.default_rng(0).uniform(0, 1, (128, 128)).astype(np.float32), "no single body region"),
    (np.clip(np.random.default_rng(1).normal(0.5, 0.01, (128, 128)), 0, 1).astype(np.float32), "no contrast"),
    (np.pad(np.ones((4, 4), np.float32), 60), "largest region"),
    (np.where(np.random.default_rng(2).uniform(size=(128, 128)) < 0.005, 0.0, 1.0).astype(np.float32),
     "bright almost everywhere"),
])
def test_no_plausible_body_returns_input_unchanged_with_a_note(image, why):
    out, params = BodyCrop().apply(image, META)
    assert out is image and why in params["note"]
    assert params["to"] == params["from"] == list(image.shape) and params["offset"] == [0, 0]
    assert "body_fraction" not in params


@pytest.mark.parametrize("shape", [(1, 1), (2, 40), (3, 3), (7, 300), (16, 16)])
def test_never_raises_on_small_or_thin_images(shape):
    x = np.random.default_rng(3).uniform(0, 1, shape).astype(np.float32)
    out, params = BodyCrop().apply(x, META)
    assert out.ndim == 2 and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert out.size <= x.size and params["from"] == list(shape)


def test_config_round_trip_and_validation():
    step = BodyCrop(threshold=0.4, margin=0.05, mask_outside=False, kernel=0.03, min_area=0.1)
    cfg = json.loads(json.dumps(step.config()))
    assert BodyCrop(**cfg).config() == step.config() and "body_crop" in STEPS
    pipe = Pipeline.from_config({"steps": [{"name": "window"}, {"name": "body_crop", **cfg},
                                           {"name": "resize", "size": 32}, {"name": "normalize"}]})
    assert pipe.config["steps"][1] == {"name": "body_crop", **cfg}
    for bad in ({"threshold": "mean"}, {"threshold": 1.5}, {"margin": -0.1}, {"kernel": 0}, {"min_area": 1}):
        with pytest.raises(ValueError, match="body_crop"):
            BodyCrop(**bad)
    with pytest.raises(ValueError, match="bad parameters"):
        Pipeline.from_config({"steps": [{"name": "window"}, {"name": "body_crop", "size": 3},
                                        {"name": "resize", "size": 32}, {"name": "normalize"}]})


def test_default_ct_config_has_body_and_lung_crop_cxr_does_not():
    ct = [s["name"] for s in default_config("CT", 64)["steps"]]
    assert ct == ["window", "orient", "invert", "body_crop", "lung_crop", "crop_or_pad", "resize",
                     "normalize"]
    assert default_config("CT", 64)["steps"][0] == {"name": "window", "window": "default", "ct_preset": "lung",
                                                   "preset_first": True}
    cxr = default_config("CXR", 64)["steps"]
    assert [s["name"] for s in cxr] == ["window", "invert", "crop_or_pad", "resize", "normalize"]
    assert cxr[0] == {"name": "window", "window": "default", "ct_preset": None}


def _hu_slice(window: tuple[float, float] | None = (40.0, 400.0)) -> MedImage:
    """The synthetic slice in Hounsfield units, as CT DICOM with (by default) a mediastinal file window."""
    x, body, _ = _slice()
    hu = np.select([x == AIR, x == LUNG, x == TABLE], [-1000.0, -850.0, 200.0], 40.0).astype(np.float32)
    c, w = window if window else (None, None)
    meta = ImageMeta(source_format="dicom", rows=hu.shape[0], columns=hu.shape[1], modality="CT",
                     bits_stored=12, rescale_type="HU", window_center=c, window_width=w)
    return MedImage(hu, meta)


def test_ct_pipeline_shows_body_crop_step_and_lung_window_over_file_window():
    image = _hu_slice()
    res = Pipeline.from_config(default_config("CT", 96))(image)
    names = [s.name for s in res.steps]
    assert names == ["window", "orient", "invert", "body_crop", "lung_crop", "crop_or_pad", "resize",
                     "normalize"]
    step = {s.name: s for s in res.steps}
    crop, pad = step["body_crop"], step["lung_crop"]
    assert crop.image.shape == tuple(crop.params["to"]) == tuple(pad.params["from"])
    assert crop.params["body_fraction"] > 0.1 and "note" not in crop.params
    assert res.window["source"] == "preset:lung"  # not the file's mediastinal window
    assert Pipeline.from_config(default_config("CT", 96))(image, window="file").window["source"] == "file"
    assert res.tensor.shape == (1, 1, 96, 96)


#: The pipeline stored by CT cards made before the body crop (the first shipped CT model's).
LEGACY_CT = {"steps": [{"name": "window", "window": "default", "ct_preset": "lung"},
                       {"name": "invert", "mode": "monochrome1"},
                       {"name": "crop_or_pad", "aspect": 1.0, "mode": "pad", "fill": 0.0},
                       {"name": "resize", "size": [384, 384]}, {"name": "normalize", "mean": 0.5, "std": 0.25}]}


def test_a_stored_pipeline_from_before_the_body_crop_rebuilds_as_it_was():
    pipe = Pipeline.from_config(LEGACY_CT)
    assert pipe.config == LEGACY_CT
    assert [s.name for s in pipe.steps] == ["window", "invert", "crop_or_pad", "resize", "normalize"]
    assert pipe(_hu_slice()).window["source"] == "file"  # as before: the file's window wins there
    assert pipe(_hu_slice(None)).window["source"] == "preset:lung"


def test_the_shipped_ct_card_reads_hu_slices_through_the_body_crop():
    stored = json.loads((REPO / "weights" / "ct_covid.json").read_text())["preprocessing"]
    pipe = Pipeline.from_config(stored)
    assert [s.name for s in pipe.steps][:6] == ["window", "orient", "invert", "body_crop", "lung_crop", "crop_or_pad"]
    assert pipe(_hu_slice()).window["source"] == "preset:lung"  # the lung preset over the file's window


# ------------------------------------------------------------------------- real data

def _table_pixels(x: np.ndarray) -> np.ndarray:
    """Coordinates (N, 2) of the table in a lung-windowed slice, found independently of body_crop:
    bright regions apart from the body that are wide (> 30 % of the width), thin (< 30 % of their
    box) and lie in the lower half."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((x > 0.6).astype(np.uint8), connectivity=8)
    body = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    h, w = x.shape
    table = [i for i in range(1, n) if i != body and stats[i, 2] > 0.3 * w
             and stats[i, 4] < 0.3 * stats[i, 2] * stats[i, 3] and stats[i, 1] + stats[i, 3] / 2 > h / 2]
    return np.argwhere(np.isin(labels, table))


@pytest.fixture(scope="module")
def training_reference(shared_data):
    """Per-image tensor mean / std and grey-air fraction of every 4th sarscov2_ct train JPEG."""
    import pandas as pd

    df = pd.read_csv(shared_data / "sarscov2_ct" / "labels.csv")
    paths = [shared_data / "sarscov2_ct" / p for p in df.loc[df["split"] == "train", "path"]][::4]
    pipe = Pipeline.from_config(default_config("CT", 384))
    rows = []
    for p in paths:
        res = pipe(read_image(p), keep_steps=False)
        rows.append((float(res.tensor.mean()), float(res.tensor.std()), _grey_air(res.display)))
    return np.array(rows)


def _grey_air(display: np.ndarray) -> float:
    """Share of the model input at the grey of air in the lung window (about -1080..-950 HU)."""
    return float(np.mean((display > 0.18) & (display < 0.27)))


def test_real_hu_slices_reach_the_training_range_without_table(shared_data, training_reference):
    paths = sorted((shared_data / "ood_samples" / "chest_ct_dicom").glob("*.dcm"))
    assert len(paths) == 16
    pipe = Pipeline.from_config(default_config("CT", 384))
    shipped = Pipeline.from_config(LEGACY_CT)
    means, stds, air, old_means, kept = [], [], [], [], []
    for p in paths:
        image = read_image(p)
        res = pipe(image)
        means.append(float(res.tensor.mean()))
        stds.append(float(res.tensor.std()))
        air.append(_grey_air(res.display))
        old_means.append(float(shipped(image, keep_steps=False).tensor.mean()))
        step = {s.name: s for s in res.steps}
        crop = step["body_crop"]
        assert "note" not in crop.params, (p.name, crop.params)
        table = _table_pixels(step["invert"].image)
        if len(table):
            y0, x0, y1, x1 = _box(crop.params)
            ys, xs = table[:, 0], table[:, 1]
            inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
            kept.append(np.count_nonzero(crop.image[ys[inside] - y0, xs[inside] - x0]) / len(table))
    tr_mean, tr_std, tr_air = training_reference.T
    lo, hi = np.percentile(tr_mean, [5, 95])
    # The average input looks like an average training slice: its mean inside the middle 90 % of
    # the training images' means, its contrast within 25 % of theirs ...
    assert lo < np.mean(means) < hi, (np.mean(means), lo, hi)
    assert abs(np.mean(stds) / tr_std.mean() - 1) < 0.25, (np.mean(stds), tr_std.mean())
    # ... which the pipeline of the earlier CT card (the file's mediastinal window: black lungs) is not
    assert np.mean(old_means) < lo
    # the grey air around the body is gone (training slices are black there)
    assert np.median(air) < 0.05 and np.median(air) <= np.median(tr_air) + 0.02
    # the table: found in most slices, and removed from all but at most one (where the body
    # reaches the bottom and side edges, the corners between them are kept; see body._fill_holes)
    assert len(kept) >= 12
    assert sum(k < 0.05 for k in kept) >= len(kept) - 1, kept


def test_edge_contact_says_where_the_body_meets_the_image_edges():
    """An axial slice has air in front of the body (top free); a body cut off by the frame
    above and below (a reformat, a crop) covers both edges."""
    x, _, _ = _slice()
    edges = BodyCrop().apply(x, None)[1]["edges"]
    assert set(edges) == {"top", "bottom", "left", "right"}
    assert edges["top"] == 0.0 and edges["bottom"] < 0.05  # the thin table is opened away
    tall = np.full((300, 200), AIR, np.float32)
    tall[:, 40:160] = TISSUE  # a torso running off the top and the bottom
    tall[60:240, 55:95] = tall[60:240, 105:145] = LUNG
    edges = BodyCrop().apply(tall, None)[1]["edges"]
    assert edges["top"] == pytest.approx(0.6, abs=0.03) and edges["bottom"] == pytest.approx(0.6, abs=0.03)
    assert edges["left"] == 0.0 and edges["right"] == 0.0
