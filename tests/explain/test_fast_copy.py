"""The BN-folded, channels-last copy that path methods (IG, SmoothGrad, occlusion) run on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medcnn.explain.isolate import fast_copy, isolated_copy
from medcnn.explain.ig import adaptive_ig
from medcnn.explain import explain


class ConvBN(nn.Module):
    """conv-bn-relu x2 (one strided) - GAP - linear, with non-trivial BN statistics."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1, self.b1 = nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.c2, self.b2 = nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            for bn in (self.b1, self.b2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.3, 3.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        h = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.fc(h.mean(dim=(2, 3)))


class DataDependent(ConvBN):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def forward(self, x):
        if float(x.detach().mean()) > 100:  # never true here; only there to defeat tracing
            return -super().forward(x)
        return super().forward(x)


def _x(seed: int = 0, size: int = 20) -> torch.Tensor:
    return torch.randn((1, 1, size, size), generator=torch.Generator().manual_seed(seed))


def _logit(net: nn.Module, t: int):
    return lambda inp: net(inp)[:, t]


def test_fast_copy_folds_batchnorm_and_keeps_logits():
    model = ConvBN().eval()
    x = _x()
    fast = fast_copy(model, isolated_copy(model), x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    batch = torch.randn(5, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(fast(batch), model(batch), rtol=1e-4, atol=1e-5)
    assert all(not p.requires_grad for p in fast.parameters())
    assert all(p.requires_grad for p in model.parameters())  # caller's model untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_ig_on_fast_copy_equals_ig_on_the_unfused_model():
    model = ConvBN().eval()
    x = _x(1)
    iso = isolated_copy(model)
    b = torch.zeros_like(x)
    plain, _ = adaptive_ig(_logit(iso, 2), x, b, batch=8, n_steps=24)
    e = explain(model, x, 2, "integrated_gradients", baseline=0.0, n_steps=24, objective="logit")
    np.testing.assert_allclose(e.attribution, plain.sum(dim=(0, 1)).numpy(), rtol=1e-4, atol=1e-6)


def test_fast_copy_is_cached_and_rebuilt_when_weights_change():
    model = ConvBN().eval()
    x = _x(2)
    first = fast_copy(model, isolated_copy(model), x)
    assert fast_copy(model, isolated_copy(model), x) is first
    before = explain(model, x, 0, "integrated_gradients", n_steps=16).attribution
    with torch.no_grad():
        model.c2.weight.mul_(-1.0)  # in-place torch op: bumps the version counter
    second = fast_copy(model, isolated_copy(model), x)
    assert second is not first
    flipped = explain(model, x, 0, "integrated_gradients", n_steps=16).attribution
    assert not np.allclose(before, flipped, atol=1e-4)
    model.b1.running_mean.data.add_(0.25)  # through .data: no version bump, sums change
    third = fast_copy(model, isolated_copy(model), x)
    assert third is not second
    with torch.no_grad():
        torch.testing.assert_close(third(x), model(x), rtol=1e-4, atol=1e-5)


def test_untraceable_model_falls_back_to_the_isolated_copy():
    model = DataDependent().eval()
    x = _x(3)
    iso = isolated_copy(model)
    assert fast_copy(model, iso, x) is iso
    e = explain(model, x, 1, "integrated_gradients", n_steps=None)
    assert e.params["converged"] and e.heatmap.shape == (20, 20)


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "occlusion"])
def test_path_methods_leave_no_state_and_match_across_calls(method):
    model = ConvBN().eval()
    x = _x(4)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    a = explain(model, x, 1, method).attribution
    b = explain(model, x, 1, method).attribution
    np.testing.assert_array_equal(a, b)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, keys[k], rtol=0, atol=0)
    assert not model._forward_hooks and not model.c1._forward_hooks


def test_every_registered_architecture_gets_an_exact_fast_copy():
    """torch.fx traces every architecture we ship code for; IG on the fast copy equals IG on
    the unfused model (random BN statistics, so folding is not a no-op)."""
    from medcnn.models import MODELS, create_model

    x = _x(5, size=64)
    for name in MODELS:
        torch.manual_seed(0)
        model = create_model(name, num_classes=2, in_chans=1).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
        iso = isolated_copy(model)
        fast = fast_copy(model, iso, x)
        assert fast is not iso, f"{name}: no fast copy (fx could not trace it?)"
        plain, _ = adaptive_ig(_logit(iso, 1), x, torch.zeros_like(x), batch=4, n_steps=4)
        ours, _ = adaptive_ig(_logit(fast, 1), x, torch.zeros_like(x), batch=4, n_steps=4)
        scale = float(plain.abs().max())
        torch.testing.assert_close(ours, plain, rtol=1e-3, atol=1e-4 * scale, msg=name)
