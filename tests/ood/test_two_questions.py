"""The gate's two questions on a tiny model: kind (fitted with acquisition variants, may withhold)
and style (the films alone, only cautions); their persistence and their words."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medcnn.models import create_model
from medcnn.ood import OODGate, OODResult
from medcnn.ood import validate as v
from medcnn.ood.augment import ACQUISITION, acquisition_variant, apply_change
from medcnn.ood.features import FeatureExtractor, default_layers
from medcnn.ood.gate import Answer
from medcnn.preprocess import Pipeline, default_config
from medcnn.visualize import presentation as pr

from test_gate import as_image, chest_like


@pytest.fixture(scope="module")
def two():
    torch.manual_seed(0)
    model = create_model("simplecnn", num_classes=2).eval()
    pipe = Pipeline.from_config(default_config("CXR", 64))
    extract = FeatureExtractor(model, default_layers("simplecnn"), grid=3)
    rng = np.random.default_rng(0)
    fit = [as_image(chest_like(rng)) for _ in range(120)]
    val = [as_image(chest_like(rng)) for _ in range(60)]
    test = [as_image(chest_like(rng)) for _ in range(40)]
    feats = lambda images: v.features_of(extract, pipe, images)  # noqa: E731
    gate = OODGate.fit(feats(fit), feats(val), extract.layers, grid=3, components=16,
                       train_variants=feats(v.acquisition_variants(fit, 2, seed=0)),
                       val_variants=feats(v.acquisition_variants(val, 1, seed=1)))
    one = OODGate.fit(feats(fit), feats(val), extract.layers, grid=3, components=16)
    return pipe, extract, gate, one, test


def test_every_acquisition_change_keeps_shape_range_and_is_seeded():
    pixels = chest_like(np.random.default_rng(3), side=128)
    for name in ACQUISITION:
        out = apply_change(pixels, name, np.random.default_rng(0))
        assert out.dtype == np.float32 and out.ndim == 2, name
        assert pixels.min() - 1e-3 <= out.min() and out.max() <= pixels.max() + 1e-3, name
        np.testing.assert_array_equal(out, apply_change(pixels, name, np.random.default_rng(0)))
    assert not np.array_equal(acquisition_variant(pixels, np.random.default_rng(1)), pixels)
    with pytest.raises(KeyError):
        apply_change(pixels, "lateral view", np.random.default_rng(0))


def test_a_two_question_verdict_has_both_parts_and_style_only_cautions(two):
    pipe, extract, gate, _, test = two
    assert gate.style_caution is not None and 1.0 < gate.caution <= gate.refuse
    verdict = gate.assess(0.5, style_score=gate.style_caution * 100)  # far from the films' look, right kind
    assert verdict.level == "unusual" and not verdict.withheld
    assert verdict.kind.level == "ok" and verdict.style.level == "unusual"
    assert "scanner, exposure or processing" in verdict.style.reasons[0]
    withheld = gate.assess(gate.refuse * 2, style_score=0.5)
    assert withheld.withheld and withheld.kind.level == "outside" and withheld.style.level == "ok"
    with pytest.raises(ValueError, match="only cautions"):
        withheld.escalate("outside", "x", question="style")
    served = v.verdicts_of(gate, extract, pipe, test[:8])
    assert all(r.kind is not None and r.style is not None for r in served)
    d = served[0].to_dict()
    assert set(d["kind"]) == set(d["style"]) == {"level", "score", "threshold", "refuse_threshold", "reasons"}


def test_kind_question_withholds_other_kinds_and_reads_changed_acquisitions(two):
    pipe, extract, gate, _, test = two
    rates = lambda images: v.flag_rates(v.verdicts_of(gate, extract, pipe, images))  # noqa: E731
    assert rates(v.transformed(test, "inverted"))["outside"] >= 0.9
    assert rates(v.transformed(test, "rotated_90"))["outside"] >= 0.9
    assert rates(v.synthetic_images("noise", 12, side=96))["outside"] == 1.0
    changed = rates(v.acquisition_variants(test, 1, seed=7))
    assert changed["outside"] <= 0.1 and changed["kind_flagged"] <= 0.15


def test_two_question_gate_round_trips_and_one_question_files_still_load(two, tmp_path):
    pipe, extract, gate, one, test = two
    feats = v.features_of(extract, pipe, test[:6])
    again = OODGate.load(tmp_path / "g.pt", sha256=gate.save(tmp_path / "g.pt"))
    np.testing.assert_allclose(again.score(feats), gate.score(feats), rtol=1e-5)
    np.testing.assert_allclose(again.style_score(feats), gate.style_score(feats), rtol=1e-5)
    assert (again.style_caution, again.kind_index) == (gate.style_caution, gate.kind_index)
    old = OODGate.load(tmp_path / "o.pt", sha256=one.save(tmp_path / "o.pt"))
    assert old.style_score(feats) is None and old.assess(0.5).style is None
    many = [np.tile(f, (4, 1)) for f in feats]
    part = OODGate.fit(many, many, extract.layers, grid=3, components=2, kind_layers=extract.layers[1:],
                       train_variants=feats, val_variants=feats)
    assert part.kind_index == (1, 2) and len(part.stages) == 2
    assert OODGate.load(tmp_path / "p.pt", sha256=part.save(tmp_path / "p.pt")).kind_index == (1, 2)
    with pytest.raises(ValueError, match="neither"):
        OODGate.fit(many, many, extract.layers, grid=3, train_variants=feats)


def _pred(ood):
    return SimpleNamespace(ood=ood)


@pytest.mark.parametrize("kind,style,title", [
    ("ok", "unusual", "Caution: acquired differently from the training films: results may be less reliable."),
    ("unusual", "ok", "Caution: this may not be the kind of image this model reads."),
    ("unusual", "unusual", "Caution: this may not be the kind of image this model reads."),
    ("outside", "unusual", "Not analysed: this image is outside what the model reads."),
])
def test_the_message_names_the_question_that_spoke(kind, style, title):
    r = OODResult(kind=Answer(), style=Answer())
    if kind != "ok":
        r.escalate(kind, "kind reason")
    if style != "ok":
        r.escalate(style, "style reason", question="style")
    heading, reasons = pr.ood_heading(r)
    assert heading == title
    assert pr.caution_text(_pred(r)).startswith(title)
    assert "unusual" not in pr.caution_text(_pred(r)).lower()
    if kind == "ok":
        assert reasons == ["style reason"]


def test_a_verdict_without_parts_keeps_the_old_words():
    r = OODResult(level="unusual", reasons=["the image is darker"])
    assert pr.caution_text(_pred(r)) == "Caution: this image is unusual for this model. The image is darker."
    assert pr.ood_heading(OODResult()) == (None, [])
