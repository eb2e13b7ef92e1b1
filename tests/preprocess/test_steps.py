"""Every registered preprocessing step, one table: the input is never changed, the output's values
are in the range the step documents, and the parameters used are recorded as plain data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medcnn.io import ImageMeta
from medcnn.preprocess import STEPS, Pipeline, Window, default_config

CT_META = ImageMeta(source_format="dicom", rows=64, columns=48, modality="CT", bits_stored=12, rescale_type="HU",
                    photometric_interpretation="MONOCHROME1")


def _hu() -> np.ndarray:
    """A CT-like slice in HU: air around a body of soft tissue with a bright spine."""
    x = np.full((64, 48), -1000.0, np.float32)
    x[12:52, 8:40] = 40.0
    x[30:40, 20:28] = 900.0
    return x


def _unit() -> np.ndarray:
    """A [0, 1] image with both ends and a body on a black background (what follows the window)."""
    rng = np.random.default_rng(0)
    x = np.zeros((64, 48), np.float32)
    x[12:52, 8:40] = rng.uniform(0.2, 1.0, (40, 32)).astype(np.float32)
    x[0, 0], x[63, 47] = 0.0, 1.0
    return x


#: step name -> (settings, keys the recorded parameters must hold). Every name in STEPS has a row.
TABLE: dict[str, tuple[dict, set[str]]] = {
    "window": ({"window": "default", "ct_preset": "lung"}, {"source", "center", "width"}),
    "orient": ({}, {"orientation", "transposed", "flipped_rows", "flipped_columns"}),
    "invert": ({"mode": "monochrome1"}, {"mode", "inverted"}),
    "denoise": ({"method": "median", "ksize": 7}, {"method", "ksize", "sigma"}),
    "clahe": ({"clip_limit": 2.0, "tile_grid": 4}, {"clip_limit", "tile_grid"}),
    "body_crop": ({}, {"threshold", "margin", "from", "to", "offset", "level"}),
    "lung_crop": ({}, {"margin", "min_lung", "kernel", "max_aspect", "from", "to", "offset"}),
    "crop_or_pad": ({"aspect": 1.0, "mode": "pad"}, {"aspect", "mode", "fill", "from", "to", "offset"}),
    "resize": ({"size": [32, 40]}, {"size"}),
    "normalize": ({"mean": 0.5, "std": 0.25}, {"mean", "std"}),
    "normalize_imagenet": ({}, {"mean", "std", "channels"}),
    "normalize_xrv": ({"scale": 1024.0}, {"scale"}),
    "normalize_unit": ({}, set()),
}


def test_the_table_covers_every_registered_step():
    assert set(TABLE) == set(STEPS)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_step_contract(name: str):
    settings, keys = TABLE[name]
    step = STEPS[name](**settings)
    x = _hu() if step.input_range is None else _unit()
    before = x.copy()

    out, params = step.apply(x, CT_META)

    np.testing.assert_array_equal(x, before)  # never in place
    assert out.dtype == np.float32 and out.ndim == 2
    lo, hi = step.output_range()
    assert lo - 1e-5 <= float(out.min()) and float(out.max()) <= hi + 1e-5, (name, out.min(), out.max(), lo, hi)
    assert keys <= set(params) and json.loads(json.dumps(params)) == params  # recorded as plain data
    for key, value in step.config().items():  # the settings used are the step's own
        if key in params:
            assert params[key] == value
    np.testing.assert_array_equal(step(x, CT_META), out)  # calling the step is its one hook's image
    assert STEPS[name](**step.config()).config() == step.config()  # the config rebuilds the step


def test_a_call_window_rebuilds_only_the_window_step():
    pipe = Pipeline.from_config(default_config("CT", size=32))
    window = pipe.steps[0].with_settings(window=[40, 400])
    assert isinstance(window, Window) and window.window == (40, 400) and window.ct_preset == "lung"
    assert all(s.with_settings(window=[40, 400]) is s for s in pipe.steps[1:])
