"""The method contract: declarations, one normalisation by declaration, one registry, baselines."""
from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medcnn.app.display import method_options
from medcnn.cli import explain as explain_command
from medcnn.explain import METHODS, black_value, explain
from medcnn.explain.base import DECLARATIONS, AttributionMethod, Context, Display, SignedMap, check_declaration
from medcnn.explain.ig import adaptive_ig, gauss_legendre
from medcnn.explain.methods import _registry
from medcnn.explain.normalize import normalize_heatmap, smooth
from medcnn.preprocess import Pipeline, default_config
from zoo import SmallCNN, linear

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
REPO = Path(__file__).resolve().parents[2]


def _image(seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.randn((1, 1, size, size), generator=torch.Generator().manual_seed(seed))


def _fixed_method(values: list[list[float]], display: Display) -> type[AttributionMethod]:
    """A registered-looking method that returns ``values`` as its signed map."""

    class Fixed(AttributionMethod):
        name = "fixed"
        label = "Fixed map"
        description = "Returns a map written in the test."
        needs_layer = False
        passes_randomisation_check = True

        def attribute(self, ctx: Context) -> SignedMap:
            return SignedMap(torch.tensor(values, dtype=torch.float32), {"source": "test"})

    Fixed.display = display
    return check_declaration(Fixed)


LINEAR = linear(16)  # any model with (N, 2) logits at 4 x 4


# ---------------------------------------------------------------- declarations


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_declares_the_contract(name):
    cls = METHODS[name]
    assert issubclass(cls, AttributionMethod) and check_declaration(cls) is cls
    assert cls.name == name
    for field, (kind, _) in DECLARATIONS.items():
        assert isinstance(getattr(cls, field), kind), field
    assert cls.label and cls.description and isinstance(cls.display, Display)
    # Options are keyword-only parameters (explain lists them when one is misspelt).
    params = list(inspect.signature(cls.attribute).parameters.values())[2:]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), params
    assert not hasattr(cls, "signed")  # the old, unused flag is gone


def test_declared_display_of_each_method():
    shown = {name: cls.display for name, cls in METHODS.items()}
    assert shown == {"gradcam": Display.POSITIVE, "integrated_gradients": Display.SMOOTHED_MAGNITUDE,
                     "smoothgrad": Display.SMOOTHED_MAGNITUDE, "occlusion": Display.POSITIVE,
                     "guided_gradcam": Display.MAGNITUDE}
    assert Display.POSITIVE.keeps_positive_part and not Display.MAGNITUDE.keeps_positive_part


def test_incomplete_declarations_are_rejected():
    class NoDisplay(AttributionMethod):
        name, label, description = "x", "X", "x"
        needs_layer, passes_randomisation_check = False, True

        def attribute(self, ctx: Context) -> SignedMap:
            raise NotImplementedError

    class Abstract(AttributionMethod):
        name, label, description = "y", "Y", "y"
        needs_layer, passes_randomisation_check, display = False, True, Display.MAGNITUDE

    with pytest.raises(TypeError, match=r"NoDisplay\.display must be a Display"):
        check_declaration(NoDisplay)
    NoDisplay.display, NoDisplay.label = Display.POSITIVE, ""
    with pytest.raises(TypeError, match=r"label must be a non-empty str"):
        check_declaration(NoDisplay)
    with pytest.raises(TypeError, match="does not implement"):
        check_declaration(Abstract)
    with pytest.raises(TypeError, match="not a subclass"):
        check_declaration(dict)
    with pytest.raises(TypeError, match="declared by"):
        _registry(METHODS["gradcam"], METHODS["gradcam"])


# ---------------------------------------------------------------- one registry


def test_registry_feeds_cli_choices_and_ui_options():
    parser = argparse.ArgumentParser()
    explain_command.add_arguments(parser)
    assert "{" + ",".join(METHODS) + "}" in parser.format_usage()
    options = method_options()
    assert list(options) == list(METHODS)
    assert all(options[n] is METHODS[n] for n in METHODS)


def test_registry_and_cli_arguments_import_no_torch():
    code = ("import argparse, sys; from medcnn.cli import explain as e; "
            "e.add_arguments(argparse.ArgumentParser()); "
            "from medcnn.explain.methods import METHODS; print(len(METHODS), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(METHODS)), "False"]


# ---------------------------------------------------------------- normalisation by declaration


@pytest.mark.parametrize("display,expected", [
    (Display.MAGNITUDE, [[1.0, 0.5], [0.25, 0.0]]),  # |a| / max |a|
    (Display.POSITIVE, [[0.0, 1.0], [0.5, 0.0]]),    # max(a, 0) / max a
])
def test_explain_normalises_per_declaration(monkeypatch, display, expected):
    monkeypatch.setitem(METHODS, "fixed", _fixed_method([[-4.0, 2.0], [1.0, 0.0]], display))
    e = explain(linear(4), torch.ones(1, 1, 2, 2), 1, "fixed",
                clip_percentile=None)
    np.testing.assert_array_equal(e.attribution, [[-4.0, 2.0], [1.0, 0.0]])
    np.testing.assert_allclose(e.heatmap, expected, atol=1e-7)
    assert e.heatmap.dtype == np.float32 and e.params["display"] == display.value
    assert e.params["source"] == "test"


def test_coarse_map_shows_its_part_before_upsampling(monkeypatch):
    # 2 x 2 map, 4 x 4 input: bilinear (align_corners=False) weights are 0.75 / 0.25.
    monkeypatch.setitem(METHODS, "fixed", _fixed_method([[-4.0, 2.0], [1.0, 0.0]], Display.POSITIVE))
    e = explain(LINEAR, torch.ones(1, 1, 4, 4), 1, "fixed", clip_percentile=None)
    assert e.attribution.shape == e.heatmap.shape == (4, 4)
    assert e.attribution[0, 0] == -4.0 and e.attribution[0, 3] == 2.0
    assert e.attribution[0, 1] == pytest.approx(0.75 * -4.0 + 0.25 * 2.0)
    # Positive part first (0, 2 / 1, 0), then upsampled: 0.25 * 2 = 0.5 of the maximum 2.
    assert e.heatmap[0, 1] == pytest.approx(0.25) and e.heatmap[0, 3] == 1.0
    assert e.heatmap[3, 0] == pytest.approx(0.5) and e.heatmap[0, 0] == 0.0


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_heatmap_is_the_declared_normalisation(name):
    model = SmallCNN().eval()
    x = _image(1)
    # layer c1 has the input's resolution, so no upsampling separates the two maps.
    e = explain(model, x, 1, name, layer="c1", clip_percentile=99.0)
    shown = e.attribution
    if METHODS[name].display.smooths:  # IG, SmoothGrad: |a| smoothed first (display only)
        sigma = float(re.search(r"sigma ([\d.]+) px", e.params["display_smoothing"]).group(1))
        shown = smooth(np.abs(shown), sigma)
    expected = normalize_heatmap(shown, signed=METHODS[name].display.keeps_positive_part, clip_percentile=99.0)
    np.testing.assert_allclose(e.heatmap, expected, atol=1e-6)


# ---------------------------------------------------------------- the default black baseline


@pytest.fixture()
def pipeline() -> Pipeline:
    return Pipeline.from_config(default_config("CXR", size=16))


@pytest.mark.parametrize("name", ["integrated_gradients", "occlusion"])
def test_default_black_baseline_is_black_value_of_the_pipeline(pipeline, name):
    model = SmallCNN().eval()
    grey = np.linspace(0.2, 0.8, 256, dtype=np.float32).reshape(16, 16)  # no black pixel
    x = pipeline.to_tensor(grey)
    black = black_value(pipeline)
    assert black == pytest.approx(-2.0) and float(x.min()) > black + 0.5
    e = explain(model, x, 1, name, pipeline=pipeline)
    assert e.params["baseline"] == "black" and e.params["black_from"] == "pipeline"
    assert e.params["baseline_value"] == black
    given = explain(model, x, 1, name, baseline_value=black)
    np.testing.assert_array_equal(e.attribution, given.attribution)
    assert given.params["black_from"] == "baseline_value"
    # Without a pipeline: the documented fallback, the darkest pixel of the input.
    alone = explain(model, x, 1, name)
    assert alone.params["baseline_value"] == float(x.min()) and alone.params["black_from"] == "input minimum"


def test_pipeline_is_accepted_by_every_method(pipeline):
    x = pipeline.to_tensor(np.full((16, 16), 0.5, np.float32))
    for name in METHODS:
        assert explain(SmallCNN().eval(), x, 0, name, pipeline=pipeline).heatmap.shape == (16, 16)


# ---------------------------------------------------------------- IG pieces and warning


def test_ig_warning_points_at_the_caller_of_explain():
    with pytest.warns(UserWarning, match="did not reach tol") as record:
        explain(SmallCNN().eval(), _image(2) * 3, 1, "integrated_gradients", tol=1e-9, max_steps=8, n_steps=None)
    assert [Path(w.filename) for w in record if "did not reach tol" in str(w.message)] == [Path(__file__)]


def test_adaptive_ig_reports_rather_than_warns():
    model = SmallCNN().eval()
    x = _image(2) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = adaptive_ig(lambda t: model(t)[:, 1], x, torch.zeros_like(x), batch=4, tol=1e-9, max_steps=8)
    assert info["converged"] is False and info["steps"] == 16  # the first 4 panels x 4 nodes always run


def test_gauss_legendre_rule():
    for n in (1, 3, 6):
        nodes, weights = gauss_legendre(n)
        assert np.all(np.diff(nodes) > 0) and 0 < nodes[0] and nodes[-1] < 1
        for degree in range(2 * n):  # exact up to degree 2n - 1 on [0, 1]
            assert float(np.sum(weights * nodes**degree)) == pytest.approx(1.0 / (degree + 1), abs=1e-12)
    nodes, weights = gauss_legendre(2)
    np.testing.assert_allclose(nodes, [0.5 - 0.5 / np.sqrt(3), 0.5 + 0.5 / np.sqrt(3)])
    np.testing.assert_allclose(weights, [0.5, 0.5])
    with pytest.raises(ValueError, match="at least 1 node"):
        gauss_legendre(0)


# ---------------------------------------------------------------- layer names in errors


def test_unknown_layer_lists_close_names_and_blocks():
    model = nn.Sequential(OrderedDict(
        block1=nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()),
        block2=nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)),
    )).eval()
    with pytest.raises(ValueError, match=r"'block3' not found .*closest names: block2, block1, block2.1; "
                                         r"last blocks: block1, block2, head$"):
        explain(model, _image(0, 8), 0, "gradcam", layer="block3")
    with pytest.raises(ValueError, match=r"last module names: c1, r1, c2, r2, fc$"):
        explain(SmallCNN().eval(), _image(0, 8), 0, "gradcam", layer="zzz")
