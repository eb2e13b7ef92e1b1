"""The randomisation check needs a map to compare: an empty or constant map is "not testable"."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medcnn.explain import explain
from medcnn.explain.sanity import randomisation_test

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")


class Blind(nn.Module):
    """Both logits are the same function of the image, so their difference (the explained score)
    never changes: every saliency map of it is empty."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight[1] = self.fc.weight[0]
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_an_empty_map_is_not_testable_and_never_passes():
    net = Blind().eval()
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    assert float(explain(net, x, 1, "gradcam", layer="act").heatmap.max()) == 0.0  # the premise
    res = randomisation_test(net, x, 1, "gradcam", layer="act")
    assert res["testable"] is False and res["passes"] is None
    assert res["steps"] == [] and res["final_ssim"] is None and res["final_spearman"] is None
    assert "empty" in res["reason"]


def test_a_testable_result_says_so():
    net = Blind().eval()
    with torch.no_grad():
        net.fc.weight[1] = -net.fc.weight[0]  # now the difference depends on the image
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = randomisation_test(net, x, 1, "gradcam", layer="act")
    assert res["testable"] is True and res["reason"] is None and isinstance(res["passes"], bool)
    assert len(res["steps"]) == 2
