"""An image smaller than half the network's input is cautioned, whatever its format."""
from __future__ import annotations

from pathlib import Path

import pytest

from medcnn.ood import OODResult, check_resolution
from medcnn.ood.scope import MIN_SIDE_FRACTION

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
ENLARGED = "enlarged"


@pytest.mark.parametrize("shape, level", [
    ((96, 110), "unusual"),      # a figure crop: enlarged about 2.7-fold to 256
    ((127, 512), "unusual"),     # the shorter side decides
    ((128, 128), "ok"),          # exactly half the input
    ((256, 256), "ok"),
    ((2048, 2500), "ok"),
])
def test_the_shorter_side_against_half_the_input(shape, level):
    result = check_resolution(shape, (256, 256), OODResult())
    assert result.level == level
    assert (ENLARGED in " ".join(result.reasons)) == (level == "unusual")


def test_the_reason_names_both_sizes_and_the_enlargement():
    reason = check_resolution((96, 110), (256, 256), OODResult()).reasons[0]
    assert "110 x 96 pixels" in reason and "256 x 256" in reason and "about 3-fold" in reason


def test_it_never_withholds_and_never_lowers_a_verdict():
    withheld = OODResult()
    withheld.escalate("outside", "not a chest")
    result = check_resolution((20, 20), (224, 224), withheld)
    assert result.level == "outside" and len(result.reasons) == 2
    assert check_resolution((20, 20), (224, 224), OODResult()).level == "unusual"


def test_the_rule_follows_the_models_input_size():
    assert MIN_SIDE_FRACTION == 0.5
    assert check_resolution((100, 100), (224, 224), OODResult()).level == "unusual"
    assert check_resolution((100, 100), (192, 192), OODResult()).level == "ok"


def test_the_shipped_ct_model_cautions_small_figure_crops_and_no_training_size_slice(shared_data):
    """Real pictures through the serving path: every covid_ct figure crop under 128 px is cautioned
    with the size reason; no sarscov2_ct test slice (137 px and up) gets it."""
    import pandas as pd

    from medcnn.inference import Predictor
    from medcnn.io import read_image

    predictor = Predictor(WEIGHTS / "ct_covid.json", device="cpu")
    small, large = [], []
    for folder in ("covid_ct", "sarscov2_ct"):
        table = pd.read_csv(shared_data / folder / "labels.csv")
        for path in table[table.split == "test"].path:
            image = read_image(shared_data / folder / path)
            (small if min(image.pixels.shape) < 128 else large).append(image)
    assert len(small) >= 10 and len(large) >= 100
    for image in small:
        verdict = predictor.predict(image, keep_steps=False).ood
        assert verdict.level in ("unusual", "outside") and any(ENLARGED in r for r in verdict.reasons)
    reasons = [r for image in large for r in predictor.predict(image, keep_steps=False).ood.reasons]
    assert not any(ENLARGED in r for r in reasons)


def test_on_a_two_question_gate_it_is_the_acquisition_that_speaks():
    """A chest X-ray gate's verdict has kind and style parts: a small film is an acquisition
    matter, so the page's title is the style caution, not "may not be the kind of image"."""
    from types import SimpleNamespace

    from medcnn.ood.gate import Answer
    from medcnn.visualize.presentation import caution_text

    result = check_resolution((100, 90), (224, 224), OODResult(kind=Answer(), style=Answer()))
    assert result.style.level == "unusual" and result.kind.level == "ok"
    text = caution_text(SimpleNamespace(ood=result))
    assert text.startswith("Caution: acquired differently") and "90 x 100 pixels" in text
