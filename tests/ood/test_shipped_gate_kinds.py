"""The shipped chest X-ray gates on real films (needs ../shared/data): the kind verdict does not move
under any single acquisition change, other hospitals' adult frontal films are read, and turned,
inverted and other-anatomy films are still withheld, through the serving path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcnn.io import ImageMeta, MedImage
from medcnn.ood import validate as v
from medcnn.ood.augment import ACQUISITION, apply_change

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
FILMS = ("rsna_cxr_pneumonia", "nih_cxr_pneumonia")


@pytest.fixture(scope="module", params=["cxr_findings", "cxr_pneumonia"])
def served(request, shared_data):
    from medcnn.inference import Predictor

    predictor = Predictor(WEIGHTS / f"{request.param}.json", device="cpu", check=False)
    if predictor.gate is None or predictor.gate.style_stages is None:
        pytest.skip(f"{request.param} ships a one-question gate (no kind/style split to check)")
    val = [img for name in FILMS for img in v.read_table_images(shared_data / name / "labels.csv", "val")["all"][:20]]
    return predictor, val


def _verdicts(predictor, images):
    return [p.ood for start in range(0, len(images), 32) for p in predictor.predict_batch(images[start:start + 32])]


def _changed(images, name: str, seed: int) -> list[MedImage]:
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        p = apply_change(img.pixels, name, rng)
        out.append(MedImage(p, ImageMeta(source_format="png", rows=p.shape[0], columns=p.shape[1])))
    return out


@pytest.mark.parametrize("change", sorted(ACQUISITION))
def test_one_acquisition_change_does_not_move_the_kind_verdict(served, change):
    predictor, val = served
    before = _verdicts(predictor, val)
    after = _verdicts(predictor, _changed(val, change, seed=11))
    moved = sum(a.withheld and not b.withheld for a, b in zip(after, before))
    assert moved / len(val) <= 0.1, f"{change}: {moved} of {len(val)} films newly withheld"


def test_other_hospitals_films_are_read(served, shared_data):
    predictor, _ = served
    other = v.read_table_images(shared_data / "cxr_other_sources" / "labels.csv")["all"]
    verdicts = _verdicts(predictor, other)
    assert np.mean([r.withheld for r in verdicts]) <= 0.05
    assert np.mean([r.flagged for r in verdicts]) <= 0.10


@pytest.mark.parametrize("transform", sorted(v.TRANSFORMS))
def test_turned_and_inverted_films_are_withheld(served, transform):
    predictor, val = served
    verdicts = _verdicts(predictor, v.transformed(val, transform))
    assert np.mean([r.withheld for r in verdicts]) >= 0.95, transform


def test_knee_films_are_withheld(served, shared_data):
    predictor, _ = served
    knees = v.read_table_images(shared_data / "ood_samples" / "labels.csv", group="category")["knee_xray"]
    assert np.mean([r.withheld for r in _verdicts(predictor, knees)]) >= 0.95
