"""The gate's fixed detail rule: flat fields and smooth gradients are withheld, films are not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medcnn.ood import OODGate
from medcnn.ood import validate as v
from medcnn.ood.detail import MIN_DETAIL, detail, featureless

from test_gate import chest_like, tiny  # noqa: F401 - fixture


def _batch(*images: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.ascontiguousarray(i), dtype=torch.float32)[None] for i in images])


def test_ramps_blanks_and_vignettes_have_no_detail_films_and_noise_do():
    side = 128
    ramp = np.tile(np.linspace(-2, 2, side), (side, 1))
    yy, xx = np.mgrid[0:side, 0:side] / side - 0.5
    vignette = 1.0 - 3 * (xx ** 2 + yy ** 2)
    flat = [np.rot90(ramp, k) for k in range(4)] + [np.full((side, side), 0.3), vignette, 5 * ramp + 7]
    d = detail(_batch(*flat))
    assert (d < MIN_DETAIL).all(), d
    assert all(r and "no detail" in r for r in featureless(_batch(*flat)))
    rng = np.random.default_rng(0)
    busy = [chest_like(rng, side) / 255.0 for _ in range(4)] + [rng.normal(size=(side, side))]
    d = detail(_batch(*busy))
    assert (d > 5 * MIN_DETAIL).all(), d
    assert featureless(_batch(*busy)) == [None] * len(busy)


def test_a_ramp_the_kind_question_would_read_is_withheld(tiny):  # noqa: F811 - fixture
    _, pipe, extract, gate, test = tiny
    lenient = OODGate(gate.stages, gate.layers, gate.grid, caution=1e9, refuse=1e9)
    ramps = v.verdicts_of(lenient, extract, pipe, v.synthetic_images("ramp", 4, side=96))
    assert all(r.withheld and "no detail" in " ".join(r.reasons) for r in ramps)
    assert not any(r.withheld for r in v.verdicts_of(lenient, extract, pipe, test[:10]))


def test_detail_is_per_image_and_scale_free():
    rng = np.random.default_rng(1)
    film = chest_like(rng, 96) / 255.0
    d = detail(_batch(film, 10 * film + 3, np.full((96, 96), 1.0)))
    assert d[0] == pytest.approx(d[1], rel=1e-6) and d[2] == 0.0
