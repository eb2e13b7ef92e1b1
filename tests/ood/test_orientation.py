"""The gate's orientation question on a tiny model: fitted on turned copies of in-distribution films
only, it withholds turned and inverted films (naming the turn) and passes upright ones, on its own
when the kind question lets a turned film through; it round-trips through the gate file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medcnn.models import create_model
from medcnn.ood import OODGate
from medcnn.ood import validate as v
from medcnn.ood.features import FeatureExtractor, default_layers
from medcnn.ood.orientation import ORIENTATIONS, OrientationCheck, reoriented
from medcnn.preprocess import Pipeline, default_config

from test_gate import as_image, chest_like, fitted_card  # noqa: F401 - fixture


def heart_left(rng: np.random.Generator) -> np.ndarray:
    """A chest-like film with an asymmetric, low 'heart' so that every turn differs from upright."""
    img = chest_like(rng)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    img[((yy - 0.72) / 0.12) ** 2 + ((xx - 0.58) / 0.16) ** 2 < 1] = 200 + rng.normal(0, 5)
    img[:8] = 40  # a dark band above the shoulders
    return img


@pytest.fixture(scope="module")
def turned():
    torch.manual_seed(0)
    model = create_model("simplecnn", num_classes=2).eval()
    pipe = Pipeline.from_config(default_config("CXR", 64))
    extract = FeatureExtractor(model, default_layers("simplecnn"), grid=3)
    rng = np.random.default_rng(0)
    fit = [as_image(heart_left(rng)) for _ in range(80)]
    val = [as_image(heart_left(rng)) for _ in range(40)]
    test = [as_image(heart_left(rng)) for _ in range(30)]
    train = v.oriented_features(extract, pipe, fit)
    check = OrientationCheck.fit(train, v.features_of(extract, pipe, val), (1, 2), components=16, c=1.0)
    gate = OODGate.fit(train[0], v.features_of(extract, pipe, val), extract.layers, grid=3, components=16)
    gate.orientation = check
    return pipe, extract, gate, check, test


def test_oriented_features_start_upright_and_turn_the_input(turned):
    pipe, extract, _, _, test = turned
    per = v.oriented_features(extract, pipe, test[:5])
    assert len(per) == len(ORIENTATIONS) and all(len(p) == len(extract.layers) for p in per)
    np.testing.assert_allclose(per[0][0], v.features_of(extract, pipe, test[:5])[0], rtol=1e-5)
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert torch.equal(reoriented(x, 0), x) and torch.equal(reoriented(x, 4), -x)
    assert torch.equal(reoriented(reoriented(x, 1), 3), x) and torch.equal(reoriented(x, 2), x.flip(2, 3))


def test_upright_films_pass_and_each_turn_is_named(turned):
    pipe, extract, _, check, test = turned
    per = v.oriented_features(extract, pipe, test)
    assert np.mean([r is None for r in check.reasons(per[0])]) >= 0.9
    for k in range(1, len(ORIENTATIONS)):
        p = check.probabilities(per[k])
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-9)
        assert (p[:, 0] < check.threshold).mean() >= 0.9, ORIENTATIONS[k]
        assert (p.argmax(1) == k).mean() >= 0.8, ORIENTATIONS[k]
    reason = next(r for r in check.reasons(per[2]) if r)
    assert "upside down" in reason and "upright films only" in reason


def test_the_orientation_question_withholds_what_the_kind_question_lets_through(turned):
    pipe, extract, gate, _, test = turned
    lenient = OODGate(gate.stages, gate.layers, gate.grid, caution=1e9, refuse=1e9, orientation=gate.orientation)
    flipped = v.verdicts_of(lenient, extract, pipe, v.transformed(test, "rotated_180"))
    assert np.mean([r.withheld for r in flipped]) >= 0.9
    assert any("upside down" in " ".join(r.reasons) for r in flipped)
    upright = v.verdicts_of(lenient, extract, pipe, test)
    assert np.mean([r.withheld for r in upright]) <= 0.1
    without = OODGate(gate.stages, gate.layers, gate.grid, caution=1e9, refuse=1e9)
    assert not any(r.withheld for r in v.verdicts_of(without, extract, pipe, v.transformed(test, "rotated_180")))


def test_the_orientation_question_round_trips_through_the_gate_file(turned, tmp_path):
    pipe, extract, gate, check, test = turned
    again = OODGate.load(tmp_path / "g.pt", sha256=gate.save(tmp_path / "g.pt"))
    feats = v.features_of(extract, pipe, test[:6])
    assert again.orientation is not None and again.orientation.layer_index == (1, 2)
    np.testing.assert_allclose(again.orientation.probabilities(feats), check.probabilities(feats), atol=1e-5)
    assert again.orientation.threshold == pytest.approx(check.threshold)
    plain = OODGate(gate.stages, gate.layers, gate.grid, gate.caution, gate.refuse)
    assert OODGate.load(tmp_path / "p.pt", sha256=plain.save(tmp_path / "p.pt")).orientation is None


def test_fit_refuses_missing_orientations_and_too_few_films(turned):
    pipe, extract, _, _, test = turned
    per = v.oriented_features(extract, pipe, test[:10])
    with pytest.raises(ValueError, match="each of the 5 orientations"):
        OrientationCheck.fit(per[:4], per[0], (2,))
    with pytest.raises(ValueError, match="at least 20"):
        OrientationCheck.fit(per, per[0], (2,))


def test_fit_ood_records_the_orientation_question(fitted_card):  # noqa: F811 - fixture
    card_path, out = fitted_card
    section = json.loads(card_path.read_text())["ood"]
    assert section["orientation"]["layers"] == ["block2", "block3"]
    assert 0.0 < section["orientation"]["upright_threshold"] < 1.0
    assert "orientation question on block2, block3" in out
    gate = OODGate.load(card_path.with_name(section["file"]), sha256=section["sha256"])
    assert gate.orientation is not None and gate.orientation.layer_index == (1, 2)
    assert section["measured"]["outside"]["test films rotated 90"]["outside"] >= 0.9


def test_fit_ood_fits_the_orientation_question_by_default_only_with_variants():
    from argparse import Namespace

    from medcnn.cli.fit_ood import _orientation_layers

    layers = ("layer1", "layer2", "layer3", "layer4")
    assert _orientation_layers(Namespace(orientation_layers=None, variants=2), layers) == ["layer3", "layer4"]
    assert _orientation_layers(Namespace(orientation_layers=None, variants=0), layers) == []
    assert _orientation_layers(Namespace(orientation_layers=[], variants=2), layers) == []
    assert _orientation_layers(Namespace(orientation_layers=["layer4"], variants=0), layers) == ["layer4"]
    with pytest.raises(ValueError, match="not among the gate's layers"):
        _orientation_layers(Namespace(orientation_layers=["fc"], variants=2), layers)


def test_a_slice_its_header_turned_upright_is_not_asked_its_orientation(turned):
    """The header-upright flag skips the orientation question for that image only."""
    pipe, extract, gate, _, test = turned
    lenient = OODGate(gate.stages, gate.layers, gate.grid, caution=1e9, refuse=1e9, orientation=gate.orientation)
    flipped = v.transformed(test[:6], "rotated_180")
    x = torch.cat([pipe(img, keep_steps=False).tensor for img in flipped])
    asked = lenient.judge(extract, x)[1]
    assert sum(r.withheld for r in asked) >= 5
    marks = [True, False] * 3
    skipped = lenient.judge(extract, x, upright=marks)[1]
    assert [r.withheld for r, up in zip(skipped, marks) if up] == [False] * 3
    assert [r.withheld for r, up in zip(skipped, marks) if not up] == [r.withheld for r, up in zip(asked, marks) if not up]
    assert not any(pipe.upright_by_header(img.meta) for img in flipped)  # no orient step: always asked
