"""Tests for medcnn.explain: hand-computed Grad-CAM, IG completeness, safety, concurrency."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcnn import models
from medcnn.explain import METHODS, Explanation, explain
from medcnn.explain.normalize import normalize_heatmap
from zoo import RegionMean, linear

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")


class TinyCNN(nn.Module):
    """conv-relu-conv(stride 2)-bn-relu-conv-relu-GAP-linear; in-place ReLUs on purpose."""

    def __init__(self, n_classes: int = 2, width: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(1, width, 3, padding=1)
        self.r1 = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(2 * width)
        self.r2 = nn.ReLU(inplace=True)
        self.c3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.r3 = nn.ReLU()
        self.fc = nn.Linear(2 * width, n_classes)
        with torch.no_grad():  # non-trivial BN statistics so train/eval modes differ
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        h = self.r3(self.c3(self.r2(self.bn(self.c2(self.r1(self.c1(x)))))))
        return self.fc(h.mean(dim=(2, 3)))


def _image(seed: int = 0, size: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, 1, size, size), generator=g)


def _state(model: nn.Module) -> dict:
    """Everything explaining must leave untouched."""
    hooks = {}
    for name, m in model.named_modules():
        hooks[name] = {k: list(v.keys()) if isinstance(v, dict) else v
                       for k, v in vars(m).items() if "hook" in k}
    return {
        "hooks": hooks,
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grads": {k: p.grad for k, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")},
    }


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["hooks"] == b["hooks"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["training"] == b["training"]
    assert a["inplace"] == b["inplace"]
    assert all(g is None for g in b["grads"].values())
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k


# ---------------------------------------------------------------- Grad-CAM by hand


class HandCAM(nn.Module):
    """conv(1->2, 3x3, no padding) -> GAP -> linear(2->3), weights written below."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, bias=True)
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]],
                                                 [[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=torch.float32))
            self.conv.bias.copy_(torch.tensor([0.5, -0.25]))
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0], [-0.5, 3.0], [1.0, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_gradcam_matches_hand_computation():
    model = HandCAM().eval()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 5, size=(6, 6)).astype(np.float32)
    x = torch.from_numpy(img).view(1, 1, 6, 6)
    w = model.conv.weight.detach().numpy()[:, 0]
    b = model.conv.bias.detach().numpy()
    # A_k = valid cross-correlation, written out: 4x4 layer map.
    A = np.zeros((2, 4, 4), np.float64)
    for k in range(2):
        for i in range(4):
            for j in range(4):
                A[k, i, j] = (img[i:i + 3, j:j + 3] * w[k]).sum() + b[k]
    for target in range(3):
        # d logit_t / d A_kij = W_fc[t, k] / 16 everywhere, so alpha_k = W_fc[t, k] / 16.
        alpha = model.fc.weight.detach().numpy()[target] / 16.0
        cam = (alpha[:, None, None] * A).sum(0)  # signed, before ReLU
        up = F.interpolate(torch.from_numpy(cam).float().view(1, 1, 4, 4), size=(6, 6),
                           mode="bilinear", align_corners=False)[0, 0].numpy()
        up_relu = F.interpolate(torch.from_numpy(np.maximum(cam, 0)).float().view(1, 1, 4, 4),
                                size=(6, 6), mode="bilinear", align_corners=False)[0, 0].numpy()
        e = explain(model, x, target, "gradcam", layer="conv", objective="logit")
        np.testing.assert_allclose(e.attribution, up, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(e.heatmap, normalize_heatmap(up_relu, signed=True), atol=1e-5)
        assert e.target == target and e.params["layer"] == "conv"
        assert e.params["layer_map_size"] == [4, 4]


# ---------------------------------------------------------------- Integrated Gradients


@pytest.mark.parametrize("baseline", ["black", "blur", "mean"])
@pytest.mark.parametrize("n_classes,target", [(2, 1), (5, 3)])
def test_ig_completeness(baseline, n_classes, target):
    model = TinyCNN(n_classes=n_classes).eval()
    x = _image(1)
    e = explain(model, x, target, "integrated_gradients", baseline=baseline, tol=0.01, n_steps=None, objective="logit")
    b = {"black": torch.full_like(x, float(x.min())), "mean": torch.zeros_like(x)}.get(baseline)
    if b is None:
        from medcnn.explain.ig import gaussian_blur
        b = gaussian_blur(x, e.params["sigma"])
    with torch.no_grad():
        gap = float(model(x)[0, target] - model(b)[0, target])
    total = float(e.attribution.astype(np.float64).sum())
    assert abs(total - gap) <= 0.01 * abs(gap) + 1e-5
    assert e.delta == pytest.approx(total - gap, abs=1e-4)
    assert e.params["converged"] and e.params["steps"] <= 256


def test_ig_linear_model_is_exact():
    lin = linear(64)
    x = _image(2, size=8)
    e = explain(lin, x, 1, "integrated_gradients", baseline="mean", baseline_value=0.5, n_steps=None,
                objective="logit")
    expected = ((x - 0.5).view(-1) * lin[1].weight[1].detach()).view(8, 8).numpy()
    np.testing.assert_allclose(e.attribution, expected, atol=1e-5)
    assert abs(e.delta) < 1e-4 and e.params["steps"] == 16  # converged on the first panels (4 x 4 nodes)


def test_ig_fixed_steps_equals_captum():
    from captum.attr import IntegratedGradients

    model = TinyCNN().eval()
    x = _image(4)
    b = torch.full_like(x, -1.0)
    ref = IntegratedGradients(model).attribute(x, baselines=b, target=0, n_steps=20,
                                               method="gausslegendre")
    e = explain(model, x, 0, "integrated_gradients", baseline=-1.0, n_steps=20, objective="logit")
    np.testing.assert_allclose(e.attribution, ref[0, 0].numpy(), atol=1e-5)
    assert e.params["steps"] == 20


def test_ig_adaptive_refines_until_tolerance():
    model = TinyCNN(width=8).eval()
    x = _image(5) * 3
    loose = explain(model, x, 1, "integrated_gradients", tol=0.2, n_steps=None)
    tight = explain(model, x, 1, "integrated_gradients", tol=1e-3, max_steps=512, n_steps=None)
    assert tight.params["rel_delta"] <= 1e-3
    assert tight.params["steps"] >= loose.params["steps"]


def test_ig_warns_when_budget_too_small():
    model = TinyCNN(width=8).eval()
    with pytest.warns(UserWarning, match="did not reach tol"):
        e = explain(model, _image(5) * 3, 1, "integrated_gradients", tol=1e-9, max_steps=8, n_steps=None)
    assert not e.params["converged"]


def test_memory_budget_bounds_batch():
    model = TinyCNN().eval()
    small = explain(model, _image(0), 1, "integrated_gradients", memory_budget=1)
    big = explain(model, _image(0), 1, "integrated_gradients")
    assert small.params["internal_batch_size"] == 1 < big.params["internal_batch_size"]
    np.testing.assert_allclose(small.attribution, big.attribution, atol=1e-5)


# ---------------------------------------------------------------- every method


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("n_classes", [2, 4])
def test_every_method_shape_dtype_range_and_no_side_effects(method, n_classes):
    model = TinyCNN(n_classes=n_classes)
    model.train()  # the caller's mode must be kept (explanations run in eval mode)
    x = _image(7)
    x_before = x.clone()
    before = _state(model)
    e = explain(model, x, n_classes - 1, method)
    _assert_same_state(before, _state(model))
    assert torch.equal(x, x_before) and not x.requires_grad
    assert isinstance(e, Explanation) and e.method == method
    for a in (e.heatmap, e.attribution):
        assert a.shape == (24, 24) and a.dtype == np.float32 and np.isfinite(a).all()
    assert 0.0 <= e.heatmap.min() and e.heatmap.max() in (0.0, 1.0)  # 0: no positive evidence
    assert e.params["empty_map"] == (e.heatmap.max() == 0.0)
    assert e.seconds > 0 and (e.delta is None) == (method != "integrated_gradients")
    # Eval-mode result regardless of the caller's mode.
    model.eval()
    e2 = explain(model, x, n_classes - 1, method)
    np.testing.assert_allclose(e.attribution, e2.attribution, atol=1e-6)
    assert METHODS[method].label and METHODS[method].description


def test_registry_flags_guided_gradcam():
    assert METHODS["guided_gradcam"].passes_randomisation_check is False
    assert all(METHODS[m].passes_randomisation_check for m in METHODS if m != "guided_gradcam")


class Boom(nn.Module):
    """Raises during a gradient-enabled forward (after Captum registered its hooks)."""

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam", "integrated_gradients", "smoothgrad"])
def test_state_restored_after_error(method):
    model = TinyCNN()
    model.fc = nn.Sequential(Boom(), model.fc)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, _image(0), 1, method, layer="c3")
    _assert_same_state(before, _state(model))


def test_target_by_label_and_errors():
    model = TinyCNN(n_classes=3).eval()
    x = _image(0)
    e = explain(model, x, "c", labels=["a", "b", "c"])
    assert e.target == 2
    with pytest.raises(ValueError, match="not one of"):
        explain(model, x, "z", labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="labels="):
        explain(model, x, "a")
    with pytest.raises(ValueError, match="out of range"):
        explain(model, x, 3)
    with pytest.raises(ValueError, match="unknown method"):
        explain(model, x, 0, "lime")
    with pytest.raises(ValueError, match="unknown option"):
        explain(model, x, 0, "gradcam", n_steps=3)
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        explain(model, x[0], 0)
    with pytest.raises(ValueError, match="not found"):
        explain(model, x, 0, "gradcam", layer="nope.conv")
    with pytest.raises(ValueError, match="baseline"):
        explain(model, x, 0, "integrated_gradients", baseline="white")


def test_default_layer_and_model_attribute():
    model = TinyCNN().eval()
    assert explain(model, _image(0), 0).params["layer"] == "r3"  # last spatial module
    model.target_layer = "c2"
    assert explain(model, _image(0), 0).params["layer"] == "c2"


def test_smoothgrad_seeded_and_leaves_global_rng_alone():
    model = TinyCNN().eval()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = explain(model, _image(0), 1, "smoothgrad", n_samples=6, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    b = explain(model, _image(0), 1, "smoothgrad", n_samples=6, seed=5)
    c = explain(model, _image(0), 1, "smoothgrad", n_samples=6, seed=6)
    np.testing.assert_array_equal(a.attribution, b.attribution)
    assert not np.allclose(a.attribution, c.attribution)


def test_occlusion_finds_the_region():
    x = torch.ones(1, 1, 32, 32)
    region = np.zeros((32, 32), bool)
    region[:8, :8] = True  # logit 1 = mean of the top-left 8x8 region
    e = explain(RegionMean(region), x, 1, "occlusion", window=4, baseline=0.0)
    assert e.params["perturbations"] == 64
    assert (e.attribution[:8, :8] > 0).all() and np.allclose(e.attribution[8:, :], 0)
    assert (e.heatmap[:8, :8] > 0.99).all()


# ---------------------------------------------------------------- concurrency


class Sleep(nn.Module):
    """Releases the GIL inside forward so that threads really interleave."""

    def forward(self, x):
        time.sleep(0.002)
        return x


def test_threads_get_what_they_get_alone():
    model = TinyCNN(n_classes=3, width=8).eval()
    model.r3 = nn.Sequential(Sleep(), nn.ReLU(), Sleep())  # hooks on c3 would see other threads
    jobs = [(m, s, t) for m in ("gradcam", "integrated_gradients", "guided_gradcam", "smoothgrad")
            for s, t in ((0, 0), (1, 2))]
    expected = {j: explain(model, _image(j[1]), j[2], j[0], n_samples=8) if j[0] == "smoothgrad"
                else explain(model, _image(j[1]), j[2], j[0]) for j in jobs}
    results, errors = {}, []
    barrier = threading.Barrier(len(jobs))

    def work(job):
        try:
            barrier.wait()
            opts = {"n_samples": 8} if job[0] == "smoothgrad" else {}
            for _ in range(3):
                results.setdefault(job, []).append(explain(model, _image(job[1]), job[2], job[0], **opts))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    before = _state(model)
    threads = [threading.Thread(target=work, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    _assert_same_state(before, _state(model))
    for job, outs in results.items():
        for e in outs:
            np.testing.assert_allclose(e.attribution, expected[job].attribution, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(e.heatmap, expected[job].heatmap, atol=1e-6)


# ---------------------------------------------------------------- DenseNet (in-place ReLU)


def _densenet() -> nn.Module:
    """Stock torchvision DenseNet-121 (forward applies F.relu(inplace=True) after norm5)."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.densenet121(weights=None, num_classes=2)
    m.features.conv0 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m


def test_densenet_gradcam_on_norm5_with_inplace_relu():
    model = _densenet().eval()
    x = _image(0, size=64)
    before = _state(model)
    e = explain(model, x, 1, "gradcam", layer="features.norm5", objective="logit")
    _assert_same_state(before, _state(model))
    # By hand: A = norm5 output (before the in-place F.relu of DenseNet.forward).
    with torch.no_grad():
        A = model.features(x).clone()
    A.requires_grad_(True)
    logit = model.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(A), 1), 1))[0, 1]
    (g,) = torch.autograd.grad(logit, A)
    cam = (g.mean(dim=(2, 3), keepdim=True) * A).sum(1, keepdim=True).detach()
    up = F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(e.attribution, up, rtol=1e-4, atol=1e-6)
    e4 = explain(model, x, 1, "gradcam", layer="features.denseblock4")
    assert e4.heatmap.shape == (64, 64) and np.isfinite(e4.attribution).all()


def test_every_registered_model_explains_at_its_default_layer():
    x = _image(0, size=64)
    for name in models.MODELS:
        torch.manual_seed(0)
        model = models.create_model(name, num_classes=2, in_chans=1).eval()
        before = _state(model)
        e = explain(model, x, 1, "gradcam", layer=models.default_target_layer(name))
        _assert_same_state(before, _state(model))
        assert e.heatmap.shape == (64, 64) and np.isfinite(e.attribution).all(), name
