"""Golden outputs: the shipped chest X-ray models on real films give the recorded numbers and words.

For ``cxr_pneumonia`` and ``cxr_findings`` on two films of the rsna_cxr_pneumonia test split, the
scoring engine's probabilities (to 1e-5), decision and called labels, one Grad-CAM explanation's
summary (map mean and peak value to 1e-4, empty or not, the peak's position) and the PDF report's
decision line and map notice must equal ``tests/fixtures/golden/golden.json``. A refactor that moves
any of them changed behaviour. When a change is meant to move them, regenerate the file with
``tests/fixtures/golden/make_golden.py`` (its docstring says when that is legitimate).

Needs the real data (``../shared/data``) and skips without it.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "fixtures" / "golden"
REGENERATE = "python tests/fixtures/golden/make_golden.py"


def _maker() -> Any:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _maker()


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads((GOLDEN_DIR / "golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def actual(shared_data: Path) -> dict[str, Any]:
    for film in make_golden.FILMS:
        if not (shared_data / film).is_file():
            pytest.skip(f"golden film {film} not found under {shared_data}")
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_golden.golden_outputs(shared_data)
    finally:
        torch.set_num_threads(n)


def _case(outputs: dict[str, Any], model: str, film: str) -> dict[str, Any]:
    return next(c for c in outputs["cases"] if (c["model"], c["film"]) == (model, film))


def test_the_fixture_covers_the_chest_models_and_not_the_one_being_retrained(expected):
    assert sorted(expected["weights"]) == sorted(make_golden.MODELS) == ["cxr_findings", "cxr_pneumonia"]
    assert {(c["model"], c["film"]) for c in expected["cases"]} == {
        (m, f) for m in make_golden.MODELS for f in make_golden.FILMS}


def test_the_weights_are_the_ones_the_fixture_was_made_with(actual, expected):
    changed = [m for m in expected["weights"] if actual["weights"][m] != expected["weights"][m]]
    assert not changed, (f"weights/{{{', '.join(changed)}}}.pt changed since the golden outputs were made: if "
                         f"that is intended, regenerate them ({REGENERATE}) in the same commit")


@pytest.mark.parametrize("model", make_golden.MODELS)
@pytest.mark.parametrize("film", make_golden.FILMS, ids=["pneumonia_film", "normal_film"])
def test_prediction_matches(actual, expected, model, film):
    got, want = _case(actual, model, film), _case(expected, model, film)
    assert list(got["probabilities"]) == list(want["probabilities"])
    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
    assert (got["decision"], got["called"]) == (want["decision"], want["called"])


@pytest.mark.parametrize("model", make_golden.MODELS)
@pytest.mark.parametrize("film", make_golden.FILMS, ids=["pneumonia_film", "normal_film"])
def test_explanation_matches(actual, expected, model, film):
    got, want = _case(actual, model, film)["explanation"], _case(expected, model, film)["explanation"]
    for key in ("method", "target", "called", "shape", "empty", "peak"):
        assert got[key] == want[key], f"{key}: {got[key]!r} != golden {want[key]!r}"
    assert got["map_mean"] == pytest.approx(want["map_mean"], abs=1e-4)
    assert got["peak_value"] == pytest.approx(want["peak_value"], abs=1e-4)


@pytest.mark.parametrize("model", make_golden.MODELS)
@pytest.mark.parametrize("film", make_golden.FILMS, ids=["pneumonia_film", "normal_film"])
def test_report_text_matches(actual, expected, model, film):
    # golden_outputs also checks that the PDF's own text prints these lines
    assert _case(actual, model, film)["report"] == _case(expected, model, film)["report"]

