"""Saliency-location audit: regions, metrics, random baselines and the end-to-end audit."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medcnn.models.card import ModelCard
from medcnn.io import ImageMeta, MedImage
from medcnn.preprocess import Pipeline, default_config
from medcnn.audit.saliency import (
    audit_saliency,
    boxes_mask,
    boxes_to_display,
    format_saliency_summary,
    location_metrics,
    margin_mask,
    parse_boxes,
    random_baseline,
    thorax_mask,
)
from medcnn.models import create_model
from zoo import RegionMean

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _chest(h: int = 256, w: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic chest: bright body on dark air, two dark lung ellipses. Returns (image, lungs)."""
    img = np.full((h, w), 0.05, np.float32)
    cv2.ellipse(img, (w // 2, h // 2 + h // 10), (int(0.42 * w), int(0.45 * h)), 0, 0, 360, 0.75, -1)
    lungs = np.zeros((h, w), np.uint8)
    for cx in (0.32, 0.68):
        cv2.ellipse(lungs, (int(cx * w), int(0.5 * h)), (int(0.12 * w), int(0.25 * h)), 0, 0, 360, 1, -1)
    img[lungs > 0] = 0.25
    img += np.random.default_rng(0).normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0, 1), lungs.astype(bool)


def test_thorax_mask_covers_synthetic_lungs():
    img, lungs = _chest()
    mask, how = thorax_mask(img, return_method=True)
    assert how == "segmented" and mask.dtype == bool and mask.shape == img.shape
    assert mask[lungs].mean() > 0.95  # both lung fields inside
    assert mask[cv2.ellipse(np.zeros_like(lungs, np.uint8), (128, 128), (20, 40), 0, 0, 360, 1, -1) > 0].mean() > 0.9
    assert not mask[:10].any() and not mask[:, :10].any()  # air / border outside
    assert mask.mean() < 0.6


def test_thorax_mask_falls_back_to_prior():
    mask, how = thorax_mask(np.zeros((100, 120), np.float32), return_method=True)
    assert how == "prior" and mask.shape == (100, 120)
    assert 0.2 < mask.mean() < 0.7 and mask[47, 60] and not mask[0, 0]
    with pytest.raises(ValueError, match="2-D"):
        thorax_mask(np.zeros((4, 4, 3)))


def test_margin_and_boxes_masks():
    m = margin_mask((100, 200), frac=0.1)
    assert m.mean() == pytest.approx(1 - 0.8 * 0.8)
    b = boxes_mask((10, 10), [(2, 3, 4, 5), (8, 8, 10, 10)])
    assert b[3:8, 2:6].all() and b[8:, 8:].all() and b.sum() == 4 * 5 + 2 * 2
    assert parse_boxes("1 2 3 4; 5 6 7 8") == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert parse_boxes(float("nan")) == [] and parse_boxes("") == []
    with pytest.raises(ValueError, match="x y w h"):
        parse_boxes("1 2 3")


def test_in_box_mass_and_pointing():
    box = boxes_mask((64, 64), [(10, 20, 16, 12)])
    heat = box.astype(np.float32)
    r = location_metrics(heat, boxes=box, margin=margin_mask((64, 64)))
    assert r["in_box"] == pytest.approx(1.0) and r["pointing"] == 1.0
    assert r["margin_share"] == 0.0 and r["box_area"] == pytest.approx(16 * 12 / 64 ** 2)
    off = np.zeros((64, 64), np.float32)
    off[50, 50] = 1.0
    off[box] = 0.5
    r = location_metrics(off, boxes=box)
    assert r["pointing"] == 0.0 and r["in_box"] == pytest.approx(96 / 97)
    # a flat map: pointing = share of maximal pixels inside the box = the box's area share
    assert location_metrics(np.ones((64, 64)), boxes=box)["pointing"] == pytest.approx(r["box_area"])
    assert location_metrics(np.zeros((64, 64)), boxes=box)["in_box"] is None
    assert location_metrics(heat, boxes=np.zeros((64, 64), bool))["in_box"] is None
    with pytest.raises(ValueError, match="shape"):
        location_metrics(heat, boxes=np.zeros((32, 32), bool))


def test_random_map_gives_area_share():
    box = boxes_mask((128, 128), [(30, 30, 50, 40)])
    area = box.mean()
    r = location_metrics(np.random.default_rng(3).random((128, 128)), boxes=box)
    assert r["in_box"] == pytest.approx(area, abs=0.01)
    base = random_baseline((128, 128), {"boxes": box, "thorax": None}, n=30, seed=0)
    assert base["area"]["in_box"] == pytest.approx(area)
    assert base["uniform"]["in_box"] == pytest.approx(area, abs=0.005)
    assert base["smooth"]["in_box"] == pytest.approx(area, abs=0.05)
    assert 0 <= base["smooth"]["pointing"] <= 1 and "outside_thorax" not in base["area"]


@pytest.mark.parametrize("shape", [(512, 512), (256, 512), (600, 400)])
def test_boxes_follow_the_pipeline_geometry(shape):
    """A rectangle drawn in the file lands where boxes_to_display puts its box."""
    h, w = shape
    box_ref = (300.0, 400.0, 200.0, 150.0)  # in 1024 x 1024 reference coordinates
    fy, fx = h / 1024, w / 1024
    pixels = np.zeros(shape, np.float32)
    x0, y0 = round(box_ref[0] * fx), round(box_ref[1] * fy)
    pixels[y0:y0 + round(box_ref[3] * fy), x0:x0 + round(box_ref[2] * fx)] = 255
    img = MedImage(pixels, ImageMeta(source_format="png", rows=h, columns=w))
    res = Pipeline.from_config(default_config("CXR", 128))(img)
    shown = res.display > 0.5
    mask = boxes_mask(res.display.shape, boxes_to_display([box_ref], shape, res.steps))
    iou = (shown & mask).sum() / (shown | mask).sum()
    assert iou > 0.85, iou


def _grad_map(model, x, *, target, method, layer):
    x = x.clone().requires_grad_(True)
    model(x)[0, target].backward()
    return x.grad[0, 0].abs()


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """12 PNGs 64x64 of a chest, half with an RSNA-style box (1024 coordinates)."""
    root = tmp_path_factory.mktemp("sal")
    chest, _ = _chest(64, 64)
    rows = []
    for i in range(12):
        pos = i % 2 == 0
        cv2.imwrite(str(root / f"{i}.png"), np.round(chest * 255).astype(np.uint8))
        rows.append({"path": f"{i}.png", "label": "PNEUMONIA" if pos else "NORMAL", "split": "test",
                     "patient_id": str(i), "rsna_boxes_1024": "256 320 256 384" if pos else ""})
    rows.append({**rows[0], "label": "OTHER", "path": "0.png"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    card = ModelCard(name="region", architecture="none", modality="CXR", labels=["NORMAL", "PNEUMONIA"],
                     positive_label="PNEUMONIA", input_size=(32, 32),
                     preprocessing=default_config("CXR", 32), target_layer="")
    return root / "labels.csv", card


def test_audit_model_attending_to_the_box(tiny_set):
    csv, card = tiny_set
    region = boxes_mask((32, 32), [(8, 10, 8, 12)])  # the 1024-space box at 32 px
    rep = audit_saliency(RegionMean(region), csv, card=card, explain_fn=_grad_map, n_random=5)
    assert rep["n"] == 12 and rep["labels"] == ["NORMAL", "PNEUMONIA"]
    m = rep["metrics"]
    assert m["in_box"]["n"] == 6 and m["in_box"]["mean"] > 0.99 and m["pointing"]["mean"] == 1.0
    assert m["in_box"]["random_area"] == pytest.approx(region.mean(), abs=0.01)
    assert m["margin_share"]["mean"] == 0.0 and m["outside_thorax"]["n"] == 12
    assert set(rep["by_label"]) == {"NORMAL", "PNEUMONIA"} and "in_box" not in rep["by_label"]["NORMAL"]
    assert any(f.startswith("mass inside the radiologists' boxes: 100%") and "better than" in f
               for f in rep["flags"])
    assert "pointing-game hit rate" in format_saliency_summary(rep)


def test_audit_random_maps_match_baseline(tiny_set):
    csv, card = tiny_set
    rng = np.random.default_rng(0)
    rep = audit_saliency(RegionMean(np.ones((32, 32), bool)), csv, card=card, n_random=5,
                         explain_fn=lambda *a, **k: rng.random((32, 32)))
    for key in ("in_box", "margin_share", "outside_thorax"):
        m = rep["metrics"][key]
        assert m["mean"] == pytest.approx(m["random_area"], abs=0.03), key


def test_audit_with_gradcam(tiny_set):
    csv, card = tiny_set
    torch.manual_seed(0)
    model = create_model("simplecnn").eval()
    rep = audit_saliency(model, csv, card=card, n_random=2, max_images=4)
    assert rep["n"] == 4
    for m in rep["metrics"].values():
        assert m["mean"] is None or 0.0 <= m["mean"] <= 1.0



class _LowersNormalInRegion(nn.Module):
    """Pneumonia is expressed only by lowering the NORMAL logit with the region's mean; the
    PNEUMONIA logit is a constant (its single-logit map is empty on every film)."""

    def __init__(self, region: np.ndarray):
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        s = (x[:, 0] * self.region).sum((1, 2)) / self.region.sum() * self.scale
        return torch.stack([-s, torch.zeros_like(s)], 1)


def test_audit_counts_empty_maps_and_the_difference_fills_them(tiny_set):
    csv, card = tiny_set
    region = boxes_mask((32, 32), [(8, 10, 8, 12)])
    model = _LowersNormalInRegion(region)
    opts = dict(card=card, method="integrated_gradients", n_random=2)
    single = audit_saliency(model, csv, objective="logit", **opts)
    diff = audit_saliency(model, csv, **opts)
    assert single["objective"] == "PNEUMONIA logit"
    assert diff["objective"] == "logit difference (PNEUMONIA - NORMAL)"
    assert single["empty_maps"]["by_label"] == {"NORMAL": {"n": 6, "empty": 6}, "PNEUMONIA": {"n": 6, "empty": 6}}
    assert diff["empty_maps"]["by_label"]["PNEUMONIA"] == {"n": 6, "empty": 0}
    # empty maps count as misses in the "_all" figures and are left out of the others
    assert single["metrics"]["pointing_all"]["mean"] == 0.0 and single["metrics"]["pointing_all"]["n"] == 6
    assert "pointing" not in single["metrics"]
    assert diff["metrics"]["pointing_all"]["mean"] == diff["metrics"]["pointing"]["mean"] == 1.0
    assert diff["metrics"]["in_box_all"]["mean"] > 0.99
    em = diff["empty_maps"]
    assert em["above_operating_point"]["n"] + em["below_operating_point"]["n"] == 12
    row = diff["per_image"][0]
    assert 0.0 <= row["probability"] <= 1.0 and row["above_operating_point"] == (row["probability"] >= 0.5)
    assert "empty maps: NORMAL" in format_saliency_summary(diff)


def test_audit_command_writes_the_card(tiny_set, tmp_path, capsys):
    import json

    from medcnn.__main__ import main
    from medcnn.models import default_target_layer, save_checkpoint

    csv, card = tiny_set
    torch.manual_seed(0)
    card = ModelCard(**{**card.to_dict(), "name": "tiny", "architecture": "tinyresnet",
                        "target_layer": default_target_layer("tinyresnet")})
    path = save_checkpoint(create_model("tinyresnet", num_classes=2, in_chans=1), card, tmp_path / "tiny.pt")
    before = json.loads(path.read_text())
    args = ["audit", "--saliency", "--model", str(path), "--data", str(csv), "--max-images", "4", "--write-card"]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card_key"] == "saliency_test"
    assert main([*args, "--objective", "logit"]) == 0
    assert "audit.saliency_test_single_logit written" in capsys.readouterr().out
    after = json.loads(path.read_text())
    assert {k: v for k, v in after.items() if k != "audit"} == {k: v for k, v in before.items() if k != "audit"}
    entry, single = after["audit"]["saliency_test"], after["audit"]["saliency_test_single_logit"]
    assert entry["objective"] == "logit difference (PNEUMONIA - NORMAL)" and single["objective"] == "PNEUMONIA logit"
    assert entry["n"] == 4 and "per_image" not in entry and "empty_maps" in entry
    assert entry["command"].startswith("python -m medcnn audit --saliency --model ")
    assert "--objective auto" in entry["command"] and entry["command"].endswith("--write-card")
    assert main(["audit", "--data", str(csv), "--write-card"]) == 2
    assert "add --saliency" in capsys.readouterr().err
