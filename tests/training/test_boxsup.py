"""Box supervision: masks in display geometry, the auxiliary loss, mask-aware augmentation."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medcnn.training.augment import Augment
from medcnn.training.boxsup import BoxSupervision, box_masks
from medcnn.models import create_model
from medcnn.preprocess import Pipeline, default_config


def _png(path, h, w):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w), dtype=np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return str(path)


def _fit_box_loss(model, sup, x, masks, steps, lr):
    """Optimise the box loss alone for a few steps; returns the loss per step."""
    opt = torch.optim.Adam(list(model.parameters()) + list(sup.parameters()), lr=lr)
    losses = []
    with sup:
        for _ in range(steps):
            opt.zero_grad()
            model(x)
            loss = sup.loss(masks)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def test_box_masks_follow_pad_and_resize(tmp_path):
    # a 100 (H) x 50 (W) image padded to 100 x 100 (25 px left), resized to 50 x 50 (scale 0.5);
    # boxes are given in the file's own pixel grid (ref_size = the file size)
    df = pd.DataFrame({"path": [_png(tmp_path / "a.png", 100, 50), _png(tmp_path / "b.png", 100, 50)],
                       "boxes": ["10 20 20 40", ""]})
    pipe = Pipeline.from_config(default_config("CXR", 50))
    masks = box_masks(df, "boxes", pipe, ref_size=(100, 50))
    assert masks.shape == (2, 50, 50) and masks.dtype == np.float32
    assert masks[1].sum() == 0  # no box: an all-zero target (NORMAL images teach "nothing here")
    ys, xs = np.nonzero(masks[0])
    # x: (10 + 25) * 0.5 = 17.5 .. (30 + 25) * 0.5 = 27.5 ; y: 20 * 0.5 = 10 .. 60 * 0.5 = 30
    assert 17 <= xs.min() <= 18 and 26 <= xs.max() <= 27
    assert 10 <= ys.min() <= 11 and 29 <= ys.max() <= 30
    assert masks[0].sum() == pytest.approx(10 * 20, rel=0.15)
    with pytest.raises(ValueError, match="box column 'nope'"):
        box_masks(df, "nope", pipe)


def test_box_supervision_learns_the_mask_and_leaves_no_trace():
    torch.manual_seed(0)
    model = create_model("simplecnn", 2)
    keys = set(model.state_dict())
    sup = BoxSupervision(model, "block3", weight=1.0)
    x = torch.randn(4, 1, 64, 64)
    masks = torch.zeros(4, 64, 64)
    masks[:2, 8:40, 8:40] = 1.0
    losses = _fit_box_loss(model, sup, x, masks, steps=30, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    # the auxiliary head is not part of the model: checkpoint and hooks unchanged
    assert set(model.state_dict()) == keys
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="forward pass"):
        sup.loss(masks)
    with pytest.raises(ValueError, match=">= 0"):
        BoxSupervision(model, "block3", weight=-1)


@pytest.mark.parametrize("training", [True, False])
def test_channel_probe_restores_the_mode_and_hooks_when_the_forward_raises(training):
    model = create_model("simplecnn", 2).train(training)

    def broken(module, inputs):
        raise RuntimeError("forward failed")

    h = model.block1.register_forward_pre_hook(broken)
    with pytest.raises(RuntimeError, match="forward failed"):
        BoxSupervision(model, "block3", mode="mask")
    h.remove()
    assert all(m.training is training for m in model.modules())
    assert not model.block3._forward_hooks  # the probe's hook is gone too
    # and without an error the probe leaves the mode as it found it
    assert BoxSupervision(model, "block3").head.in_channels == 128
    assert all(m.training is training for m in model.modules())


def test_augment_moves_masks_with_images():
    img = torch.zeros(3, 48, 48)
    img[:, 10:30, 12:20] = 1.0
    geo = Augment(rotate=15, scale=0.1, translate=0.1)
    out, mk = geo(img, torch.Generator().manual_seed(3), masks=img.clone())
    torch.testing.assert_close(out, mk.clamp(0, 1))  # same geometric transform
    assert not torch.equal(out, img)
    # intensity augmentation touches the image only, and the image stream is unchanged by masks
    full = Augment(rotate=15, brightness=0.2, noise=0.05)
    a = full(img, torch.Generator().manual_seed(4))
    b, m = full(img, torch.Generator().manual_seed(4), masks=img.clone())
    torch.testing.assert_close(a, b)
    assert set(torch.unique((m > 0.5).float()).tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="masks shape"):
        full(img, None, masks=torch.zeros(2, 48, 48))


def _positive_cam(model, x):
    """Class activation map of class 1 on layer4 (eval mode): (N, h, w)."""
    feats = {}
    with torch.no_grad():
        model.eval()
        h = model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
        try:
            model(x)
        finally:
            h.remove()
        return torch.einsum("nkhw,k->nhw", feats["a"], model.fc.weight[1])


def test_cam_mode_makes_the_positive_cam_the_box_mask():
    torch.manual_seed(0)
    model = create_model("smallresnet", 2)
    sup = BoxSupervision(model, "layer4", weight=1.0, mode="cam", classifier="fc", target=1)
    # no extra head: the classifier's own CAM is supervised (plus one learned offset)
    assert [p.numel() for p in sup.parameters()] == [1]
    x = torch.randn(4, 1, 64, 64)
    masks = torch.zeros(4, 64, 64)
    masks[:, :32, :32] = 1.0  # top-left quadrant = one 2x2 cell of the 2x2 feature map... of 4
    model.train()
    losses = _fit_box_loss(model, sup, x, masks, steps=25, lr=3e-3)
    assert 0.0 <= losses[-1] < 0.5 * losses[0]
    # the positive class's CAM is now higher inside the box than outside
    cam = _positive_cam(model, x)
    assert (cam[:, 0, 0] > cam[:, 1, 1]).all()
    with pytest.raises(ValueError, match="nn.Linear"):
        BoxSupervision(model, "layer4", mode="cam", classifier="layer4")
    with pytest.raises(ValueError, match="mask, cam"):
        BoxSupervision(model, "layer4", mode="attention")


def test_cam_difference_mode_supervises_the_positive_minus_negative_map():
    torch.manual_seed(0)
    model = create_model("smallresnet", num_classes=2).train()
    feats = torch.rand(2, model.fc.in_features, 4, 4)
    masks = torch.zeros(2, 16, 16)
    masks[:, :8] = 1.0
    diff = BoxSupervision(model, "layer4", mode="cam_difference", target=1)
    single = BoxSupervision(model, "layer4", mode="cam", target=1)
    w = model.fc.weight.detach()
    expected_cam = torch.einsum("nkhw,k->nhw", feats, w[1] - w[0])
    target = torch.nn.functional.adaptive_avg_pool2d(masks[:, None], (4, 4))[:, 0]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(expected_cam - 2.0, target)
    assert diff._cam_loss(feats, masks).item() == pytest.approx(expected.item(), rel=1e-5)
    assert diff._cam_loss(feats, masks).item() != pytest.approx(single._cam_loss(feats, masks).item())
    with pytest.raises(ValueError, match="cam_difference"):
        BoxSupervision(model, "layer4", mode="nope")


def test_rows_without_a_box_label_are_left_out_of_the_box_loss():
    """Multi-label rows whose boxed finding is unknown carry NaN masks: the loss is the loss of the other rows."""
    torch.manual_seed(0)
    model = create_model("simplecnn", 2).eval()
    sup = BoxSupervision(model, "block3", weight=1.0)
    x = torch.randn(4, 1, 64, 64)
    masks = torch.zeros(4, 64, 64)
    masks[0, 8:40, 8:40] = 1.0
    with sup:
        model(x[[0, 2]])
        known_only = sup.loss(masks[[0, 2]])
        model(x)
        masks[[1, 3]] = float("nan")
        with_unknown = sup.loss(masks)
        assert torch.isfinite(with_unknown)
        assert with_unknown.item() == pytest.approx(known_only.item(), rel=1e-5)
        masks[:] = float("nan")
        assert sup.loss(masks).item() == 0.0


def test_boxes_follow_the_body_crop_and_the_pad():
    """A box drawn on the original slice lands on the same pixels after body_crop + lung_crop + pad + resize."""
    from medcnn.io import MedImage
    from medcnn.io.types import ImageMeta
    from medcnn.preprocess import Pipeline, default_config
    from medcnn.training.boxes import boxes_mask, boxes_to_display

    yy, xx = np.mgrid[:200, :300]
    body = ((yy - 90) / 70.0) ** 2 + ((xx - 170) / 110.0) ** 2 <= 1  # an off-centre body in air
    pixels = np.where(body, 0.6, 0.0).astype(np.float32)
    for cx in (115, 225):  # two dark lungs, so that lung_crop cuts the body wall away
        pixels[((yy - 90) / 40.0) ** 2 + ((xx - cx) / 38.0) ** 2 <= 1] = 0.1
    pixels[80:100, 150:190] = 1.0  # a bright lesion
    img = MedImage(pixels=pixels * 255, meta=ImageMeta(source_format="png", rows=200, columns=300, bits_stored=8))
    res = Pipeline.from_config(default_config("CT", 64))(img, keep_steps=True)
    assert [s.name for s in res.steps][:6] == ["window", "orient", "invert", "body_crop", "lung_crop", "crop_or_pad"]
    lung = res.steps[4].params
    assert "note" not in lung and lung["to"] != lung["from"]  # the lung crop did cut
    box = boxes_to_display([(150, 80, 40, 20)], pixels.shape, res.steps, ref_size=(200, 300))
    mask = boxes_mask(res.display.shape, box)
    inside = res.display[mask > 0]
    assert inside.size and inside.mean() > 0.95  # the box covers the lesion in the display image


def test_cam_positive_mode_keeps_the_offset_at_or_below_zero_so_boxes_get_a_positive_map():
    """With a free offset c, ``CAM + c`` can match the mask while the CAM is negative inside the boxes
    too (c > 0), and Grad-CAM (the positive part) is empty; "cam_positive" uses c = -softplus(r) <= 0."""
    torch.manual_seed(0)
    model = create_model("smallresnet", 2).train()
    feats = torch.rand(2, model.fc.in_features, 4, 4)
    masks = torch.zeros(2, 16, 16)
    masks[:, :8] = 1.0
    sup = BoxSupervision(model, "layer4", mode="cam_positive", target=1)
    free = BoxSupervision(model, "layer4", mode="cam", target=1)
    assert sup._cam_loss(feats, masks).item() == pytest.approx(free._cam_loss(feats, masks).item(), rel=1e-5)  # c = -2
    cam = torch.einsum("nkhw,k->nhw", feats, model.fc.weight.detach()[1])
    target = torch.nn.functional.adaptive_avg_pool2d(masks[:, None], (4, 4))[:, 0]
    with torch.no_grad():
        sup.offset.fill_(10.0)  # however far training pushes r, c stays <= 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(cam - torch.nn.functional.softplus(
        torch.tensor(10.0)), target)
    assert sup._cam_loss(feats, masks).item() == pytest.approx(expected.item(), rel=1e-5)

    x = torch.randn(4, 1, 64, 64)
    big = torch.zeros(4, 64, 64)
    big[:, :32, :32] = 1.0
    sup = BoxSupervision(model, "layer4", weight=1.0, mode="cam_positive", target=1)
    losses = _fit_box_loss(model, sup, x, big, steps=25, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]
    assert -torch.nn.functional.softplus(sup.offset).item() <= 0.0
    cam = _positive_cam(model, x)
    assert (cam[:, 0, 0] > 0).all() and (cam[:, 0, 0] > cam[:, 1, 1]).all()  # positive inside the box
