"""IG and SmoothGrad are displayed smoothed at the network's feature-cell scale (display only).

A per-pixel path or gradient map is a dot pattern over the whole image; their declared display
(``Display.SMOOTHED_MAGNITUDE``) blurs ``|a|`` with a Gaussian of sigma = a quarter of one cell of
the network's last feature map before scaling. ``Explanation.attribution`` is unchanged, and the
displayed map still passes the model-randomisation sanity check and the localisation audit.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medcnn.explain import explain
from medcnn.explain.base import Display
from medcnn.explain.methods import METHODS
from medcnn.explain.normalize import normalize_heatmap, smooth
from medcnn.explain.sanity import randomisation_test
from test_sanity import SIZE, trained  # noqa: F401 - the tiny trained blob model (fixture)

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")


def test_smooth_keeps_the_mass_and_spreads_a_dot():
    dot = np.zeros((21, 21))
    dot[10, 10] = 1.0
    out = smooth(dot, 2.0)
    assert out.sum() == pytest.approx(1.0) and out[10, 10] == out.max() < 0.05
    assert out[10, 12] == pytest.approx(out[10, 10] * np.exp(-0.5), rel=1e-6)  # Gaussian, sigma 2 px
    np.testing.assert_array_equal(smooth(dot, 0), dot)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        smooth(dot, -1)


def test_ig_and_smoothgrad_declare_the_smoothed_display():
    assert METHODS["integrated_gradients"].display is Display.SMOOTHED_MAGNITUDE
    assert METHODS["smoothgrad"].display is Display.SMOOTHED_MAGNITUDE
    assert Display.SMOOTHED_MAGNITUDE.smooths and not Display.SMOOTHED_MAGNITUDE.keeps_positive_part
    assert not Display.MAGNITUDE.smooths and not Display.POSITIVE.smooths


def test_only_the_display_is_smoothed(trained, monkeypatch):  # noqa: F811
    net, cases = trained
    x = cases[0][0]
    shown = explain(net, x, 1, "integrated_gradients", n_steps=16)
    # The blob net's last spatial layer (r3) is 16 x 16 at 32 px: a 2-px cell, sigma 0.5 px.
    assert shown.params["display_smoothing"] == ("Gaussian, sigma 0.5 px (a quarter of the network's 2-px feature "
                                                 "cell); display only, the attribution is unchanged")
    assert shown.params["display"] == "absolute value, smoothed at the network's feature-cell scale"
    monkeypatch.setattr(METHODS["integrated_gradients"], "display", Display.MAGNITUDE)
    raw = explain(net, x, 1, "integrated_gradients", n_steps=16)
    np.testing.assert_array_equal(shown.attribution, raw.attribution)
    assert shown.delta == raw.delta and "display_smoothing" not in raw.params
    np.testing.assert_allclose(shown.heatmap, normalize_heatmap(smooth(np.abs(raw.attribution), 0.5)), atol=1e-6)


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad"])
def test_smoothed_map_still_passes_the_randomisation_check(trained, method):  # noqa: F811
    # measured, final Spearman on the 4 images: IG -0.12/0.17/0.34/0.17 unsmoothed, -0.20/0.18/0.37/0.23
    # smoothed; SmoothGrad 0.28/0.12/0.29/0.33 unsmoothed, 0.40/0.14/0.41/0.46 smoothed (sigma cell/2: 2 fail)
    net, cases = trained
    for x, _ in cases:
        res = randomisation_test(net, x, 1, method)
        assert res["passes"] and abs(res["final_spearman"]) < 0.5, res


def _peak_distance(heat: np.ndarray, centre) -> float:
    py, px = np.unravel_index(np.argmax(heat), heat.shape)
    return float(np.hypot(py - centre[0], px - centre[1]))


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad"])
def test_smoothed_map_points_at_the_blob(trained, method):  # noqa: F811
    """Pointing game: the map's maximum lies on the blob the model detects (radius 2 sigma = 4 px)."""
    net, cases = trained
    hits = [_peak_distance(explain(net, x, 1, method).heatmap, centre) <= 4 for x, centre in cases]
    assert sum(hits) == len(cases) and SIZE == 32, hits


class _ConvRegion(nn.Module):
    """A conv net whose PNEUMONIA logit is the mean of its 4-px feature cells inside ``region``: it
    attends there by construction, with an 8 x 8 feature map at 32 px (a 4-px cell: sigma 1 px)."""

    def __init__(self, region: np.ndarray):
        super().__init__()
        self.pool = nn.Conv2d(1, 1, 4, stride=4, bias=False)
        nn.init.constant_(self.pool.weight, 1 / 16)
        cells = torch.from_numpy(region.astype(np.float32)).reshape(8, 4, 8, 4).mean((1, 3))
        self.register_buffer("cells", cells)

    def forward(self, x):
        s = (torch.tanh(self.pool(x))[:, 0] * self.cells).sum((1, 2)) / self.cells.sum()
        return torch.stack([-s, s], 1)


def localisation_audit(tmp_path, method: str = "integrated_gradients"):
    """The saliency-location audit (:func:`medcnn.audit.saliency.audit_saliency`) of IG on 8 synthetic
    chest films, half with an RSNA-style box where the model looks."""
    import cv2
    import pandas as pd

    from medcnn.audit.saliency import audit_saliency, boxes_mask
    from medcnn.models.card import ModelCard
    from medcnn.preprocess import default_config

    img = np.full((64, 64), 0.05, np.float32)
    cv2.ellipse(img, (32, 38), (27, 29), 0, 0, 360, 0.75, -1)
    for cx in (20, 44):
        cv2.ellipse(img, (cx, 32), (8, 16), 0, 0, 360, 0.25, -1)
    img += np.random.default_rng(0).normal(0, 0.02, img.shape).astype(np.float32)
    rows = []
    for i in range(8):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
        rows.append({"path": f"{i}.png", "label": "PNEUMONIA" if i % 2 == 0 else "NORMAL", "split": "test",
                     "patient_id": str(i), "rsna_boxes_1024": "256 320 256 384" if i % 2 == 0 else ""})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    card = ModelCard(name="region", architecture="none", modality="CXR", labels=["NORMAL", "PNEUMONIA"],
                     positive_label="PNEUMONIA", input_size=(32, 32), preprocessing=default_config("CXR", 32),
                     target_layer="")
    model = _ConvRegion(boxes_mask((32, 32), [(8, 10, 8, 12)]))
    return audit_saliency(model, tmp_path / "labels.csv", card=card, method=method, n_random=5)


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad"])
def test_smoothed_map_passes_the_localisation_audit(tmp_path, method):
    # measured mass in the box, unsmoothed -> smoothed: IG 0.742 -> 0.649, SmoothGrad 0.840 -> 0.763 (random
    # maps 0.094); pointing game 1.0 -> 1.0; outside the thorax 0.0 -> 0.0
    m = localisation_audit(tmp_path, method)["metrics"]
    assert m["pointing"]["mean"] == 1.0 and m["outside_thorax"]["mean"] < 0.01
    assert m["in_box"]["mean"] > 0.6 > 6 * m["in_box"]["random_area"]
