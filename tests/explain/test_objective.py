"""What a map explains: the logit difference that sets the probability, or the single logit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medcnn.explain import METHODS, OBJECTIVES, explain
from medcnn.explain.objective import ObjectiveHead, describe_objective, objective_scores, resolve_objective
from zoo import SmallCNN, multilabel_cnn

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")


class LowersNormal(nn.Module):
    """conv 1x1 (weight 1, bias 0) - ReLU - GAP - linear(1 -> 2), written by hand.

    ``z_NORMAL = -mean(A) + 0.5`` and ``z_PNEUMONIA = 0 * mean(A) - 0.25``: the film's
    evidence only *lowers* the NORMAL logit; the PNEUMONIA logit is a constant.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[-1.0], [0.0]]))
            self.fc.bias.copy_(torch.tensor([0.5, -0.25]))

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def _film() -> torch.Tensor:
    """4 x 4 film: an 'opacity' of 3 at (1, 2), a fainter 1 at (2, 1), negative elsewhere."""
    x = torch.full((1, 1, 4, 4), -1.0)
    x[0, 0, 1, 2], x[0, 0, 2, 1] = 3.0, 1.0
    return x


LABELS = ["NORMAL", "PNEUMONIA"]


def test_single_logit_gradcam_is_empty_difference_map_is_not():
    model, x = LowersNormal().eval(), _film()
    with torch.no_grad():
        z = model(x)[0]
    assert float(z[1] - z[0]) == pytest.approx(4 / 16 - 0.75)  # mean(A) = 4/16
    single = explain(model, x, 1, "gradcam", layer="relu", labels=LABELS, objective="logit", clip_percentile=None)
    assert single.params["empty_map"] and single.empty and single.heatmap.max() == 0.0
    np.testing.assert_array_equal(single.attribution, np.zeros((4, 4), np.float32))
    diff = explain(model, x, 1, "gradcam", layer="relu", labels=LABELS, clip_percentile=None)
    # d(z_P - z_N)/dA_ij = 1/16 everywhere, so alpha = mean_ij 1/16 = 1/16 and CAM = A / 16.
    expected = np.zeros((4, 4), np.float32)
    expected[1, 2], expected[2, 1] = 3 / 16, 1 / 16
    np.testing.assert_allclose(diff.attribution, expected, atol=1e-7)
    np.testing.assert_allclose(diff.heatmap, expected / expected.max(), atol=1e-6)
    assert not diff.params["empty_map"] and diff.objective == "difference"
    assert diff.params["objective"] == "logit difference (PNEUMONIA - NORMAL)"
    assert single.objective == "logit" and single.params["objective"] == "PNEUMONIA logit"
    # The other class's difference map is the negation: no evidence FOR NORMAL here.
    normal = explain(model, x, 0, "gradcam", layer="relu", labels=LABELS, clip_percentile=None)
    np.testing.assert_allclose(normal.attribution, -expected, atol=1e-7)
    assert normal.params["empty_map"] and normal.params["objective"] == "logit difference (NORMAL - PNEUMONIA)"


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_shows_the_hidden_evidence(method):
    model, x = LowersNormal().eval(), _film()
    opts = {"baseline": -1.0} if method in ("integrated_gradients", "occlusion") else {}
    if method == "occlusion":
        opts["window"] = 1
    single = explain(model, x, 1, method, layer="relu", objective="logit", **opts)
    diff = explain(model, x, 1, method, layer="relu", **opts)
    assert np.abs(single.attribution).max() == 0.0 and single.params["empty_map"], method
    assert np.abs(diff.attribution).max() > 0 and not diff.params["empty_map"], method
    assert diff.heatmap[1, 2] == diff.heatmap.max() == 1.0, method  # the opacity is the peak


class Differenced(nn.Module):
    """Outputs the objective columns by hand, so its *logit* map is the difference map."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.m = inner

    def forward(self, x):
        z = self.m(x)
        if z.shape[1] == 2:
            return torch.stack([z[:, 0] - z[:, 1], z[:, 1] - z[:, 0]], 1)
        cols = [z[:, t] - torch.logsumexp(torch.cat([z[:, :t], z[:, t + 1:]], 1), 1) for t in range(z.shape[1])]
        return torch.stack(cols, 1)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("method", list(METHODS))
def test_difference_map_equals_the_logit_map_of_the_differenced_model(method, n_classes):
    model = SmallCNN(n_classes, width=6).eval()
    x = _x(1)
    opts = {"n_samples": 4} if method == "smoothgrad" else {"n_steps": 24} if method == "integrated_gradients" else {}
    ours = explain(model, x, n_classes - 1, method, layer="r2", **opts)
    ref = explain(Differenced(model).eval(), x, n_classes - 1, method, layer="m.r2", objective="logit", **opts)
    np.testing.assert_allclose(ours.attribution, ref.attribution, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.heatmap, ref.heatmap, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_classes,target", [(2, 1), (2, 0), (4, 2)])
@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_ig_completeness_for_the_difference(n_classes, target, baseline):
    model = SmallCNN(n_classes, width=6, seed=3).eval()
    x = _x(2)
    e = explain(model, x, target, "integrated_gradients", baseline=baseline, tol=0.01, n_steps=None)
    if baseline == "black":
        b = torch.full_like(x, float(x.min()))
    else:
        from medcnn.explain.ig import gaussian_blur

        b = gaussian_blur(x, e.params["sigma"])

    def f_diff(inp: torch.Tensor) -> float:
        with torch.no_grad():
            z = model(inp)[0].double().numpy()
        others = np.delete(z, target)
        return float(z[target] - np.log(np.exp(others).sum()))  # = z_t - z_o for two classes

    gap = f_diff(x) - f_diff(b)
    total = float(e.attribution.astype(np.float64).sum())
    assert abs(total - gap) <= 0.01 * abs(gap) + 1e-5
    assert e.params["f_x"] == pytest.approx(f_diff(x), abs=1e-4)
    assert e.params["f_baseline"] == pytest.approx(f_diff(b), abs=1e-4)
    assert e.delta == pytest.approx(total - gap, abs=1e-4) and e.params["converged"]


def test_objective_scores_exact_values():
    z = torch.tensor([[1.0, 3.0], [-2.0, 0.5]])
    torch.testing.assert_close(objective_scores(z, "difference"), torch.tensor([[-2.0, 2.0], [-2.5, 2.5]]))
    assert objective_scores(z, "logit") is z
    z3 = torch.tensor([[0.0, np.log(2.0), np.log(3.0)]])
    # class 0: 0 - log(2 + 3); class 2: log 3 - log(1 + 2) = 0
    torch.testing.assert_close(objective_scores(z3, "difference"),
                               torch.tensor([[-np.log(5.0), np.log(2.0) - np.log(4.0), 0.0]]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="difference"):
        objective_scores(torch.zeros(2, 1), "difference")
    with pytest.raises(ValueError, match="objective kind"):
        ObjectiveHead(nn.Identity(), "probability")


def test_auto_objective_by_head_and_errors():
    from medcnn.models.head import Head

    assert OBJECTIVES == ("auto", "difference", "logit")
    softmax, sigmoid = SmallCNN(2, width=6), multilabel_cnn(3)
    multi = Head.sigmoid(["a", "b", "c"], "a")  # the head is passed, never read off the network
    assert resolve_objective("auto", Head.softmax(["n", "p"], "p"), 2) == "difference"
    assert resolve_objective("auto", None, 2) == "difference"  # a bare network: softmax
    assert resolve_objective("auto", multi, 3) == "logit"
    assert resolve_objective("auto", None, 1) == "logit"
    e = explain(sigmoid.eval(), _x(0), "c", "gradcam", head=multi)  # labels come from the head
    assert e.objective == "logit" and e.params["objective"] == "c logit"
    with pytest.raises(ValueError, match="sigmoid"):
        explain(sigmoid.eval(), _x(0), 2, "gradcam", objective="difference", head=multi)
    with pytest.raises(ValueError, match="gives 3 outputs but its head names 2 labels"):
        explain(sigmoid.eval(), _x(0), 1, "gradcam", head=Head.softmax(["n", "p"], "p"))
    with pytest.raises(ValueError, match="unknown objective 'probability'"):
        explain(softmax.eval(), _x(0), 1, "gradcam", objective="probability")
    assert describe_objective("difference", 1, 2) == "logit difference (class 1 - class 0)"
    assert describe_objective("difference", 0, 3, ["a", "b", "c"]).startswith("log-odds (a logit")


@pytest.mark.parametrize("method", list(METHODS))
def test_objective_is_recorded_in_params_for_every_method(method):
    model = SmallCNN(2, width=6).eval()
    opts = {"n_samples": 2} if method == "smoothgrad" else {"n_steps": 4} if method == "integrated_gradients" else {}
    e = explain(model, _x(0), "PNEUMONIA", method, labels=LABELS, **opts)
    assert e.params["objective"] == "logit difference (PNEUMONIA - NORMAL)" and e.objective == "difference"
    e = explain(model, _x(0), 1, method, objective="logit", **opts)
    assert e.params["objective"] == "class 1 logit" and e.objective == "logit"
