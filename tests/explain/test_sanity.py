"""Tests for medcnn.explain.sanity on a tiny CNN trained here on synthetic blobs.

Task: class 1 = the image contains a bright Gaussian blob (anywhere), class 0 = noise
only. A faithful map of class 1 must point at the blob.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medcnn.explain import explain
from medcnn.explain.sanity import default_layers, deletion_insertion, randomisation_test, rank_correlation, ssim

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
SIZE = 32


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    x = g.normal(0, 0.3, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    y = np.arange(n) % 2
    centres = g.integers(6, SIZE - 6, size=(n, 2))
    for i in np.flatnonzero(y):
        cy, cx = centres[i]
        x[i, 0] += 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
    return torch.from_numpy(x), torch.from_numpy(y), centres


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.r2 = nn.ReLU()
        self.c3 = nn.Conv2d(16, 16, 3, padding=1)
        self.r3 = nn.ReLU()
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        h = self.r3(self.c3(self.r2(self.c2(self.r1(self.c1(x))))))
        return self.fc(h.amax(dim=(2, 3)))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y, _ = blobs(512, seed=1)
    for step in range(80):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    xt, yt, ct = blobs(64, seed=2)
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == yt).float().mean())
    assert acc > 0.9, f"tiny model did not learn the blob task (accuracy {acc})"
    pos = [i for i in range(len(xt)) if yt[i] == 1][:4]
    return net, [(xt[i : i + 1], ct[i]) for i in pos]


def test_ssim_and_rank_correlation_basics():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, rng.random((32, 32))) < 0.2
    assert ssim(a, 1 - a) < 0
    assert rank_correlation(a, a**3) == pytest.approx(1.0)
    assert rank_correlation(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="equal shape"):
        ssim(a, a[:5])


def test_default_layers_output_side_first():
    assert default_layers(Net()) == ["fc", "c3", "c2", "c1"]


def test_gradcam_points_at_the_blob(trained):
    net, samples = trained
    for x, (cy, cx) in samples:
        h = explain(net, x, 1, "gradcam", layer="r3").heatmap
        py, px = np.unravel_index(np.argmax(h), h.shape)
        assert abs(py - cy) <= 4 and abs(px - cx) <= 4


def test_randomisation_tells_trained_from_random(trained):
    net, samples = trained
    x, _ = samples[0]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    res = randomisation_test(net, x, 1, "gradcam", layer="r3")
    assert [s["layer"] for s in res["steps"]] == ["fc", "c3", "c2", "c1"]
    assert res["passes"] and abs(res["final_spearman"]) < 0.5
    assert res["final_ssim"] < 0.5
    for k, v in net.state_dict().items():  # randomisation happened on a deep copy
        assert torch.equal(v, state[k])


def test_randomisation_rejects_a_map_that_ignores_the_weights(trained):
    net, samples = trained
    x, _ = samples[0]
    # Randomising nothing that matters (an unused module) keeps the map: must fail.
    net2 = Net()
    net2.load_state_dict(net.state_dict())
    net2.unused = nn.Linear(3, 3)
    res = randomisation_test(net2.eval(), x, 1, "gradcam", layer="r3", layers=["unused"])
    assert not res["passes"] and res["final_spearman"] == pytest.approx(1.0)


def test_guided_gradcam_randomisation_is_reported(trained):
    net, samples = trained
    res = randomisation_test(net, samples[0][0], 1, "guided_gradcam", layer="r3")
    print("guided_gradcam randomisation:", [(s["layer"], round(s["spearman"], 3)) for s in res["steps"]])
    assert len(res["steps"]) == 4 and isinstance(res["passes"], bool)
    assert all(-1 <= s["spearman"] <= 1 and -1 <= s["ssim"] <= 1 for s in res["steps"])


def test_deletion_auc_beats_random(trained):
    net, samples = trained
    for x, _ in samples[:2]:
        h = explain(net, x, 1, "gradcam", layer="r3").heatmap
        res = deletion_insertion(net, x, 1, h, steps=16, baseline="blur", sigma=4.0)
        assert res["deletion_auc"] < res["random_deletion_auc"]
        assert res["insertion_auc"] > res["random_insertion_auc"]
        assert len(res["deletion_curve"]) == 17 == len(res["fractions"])
        # first point = the unchanged image, last point = the baseline
        with torch.no_grad():
            p = torch.softmax(net(x), 1)[0, 1].item()
        assert res["deletion_curve"][0] == pytest.approx(p, abs=1e-5)
        assert res["insertion_curve"][-1] == pytest.approx(p, abs=1e-5)


def test_deletion_insertion_errors(trained):
    net, samples = trained
    x = samples[0][0]
    with pytest.raises(ValueError, match="shape"):
        deletion_insertion(net, x, 1, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="baseline"):
        deletion_insertion(net, x, 1, np.zeros((SIZE, SIZE)), baseline="white")
