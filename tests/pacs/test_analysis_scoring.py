"""A PACS instance goes through the one scoring engine (:class:`medcnn.scoring.Scorer`): what it refuses
is the engine's error and stage on the analysis, what fails is raised as before. No PACS server needed."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import ct_instance
from medcnn.io import UnsupportedImageError
from medcnn.pacs.analysis import PredictorCache, analyze_instance
from medcnn.scoring import Scorer


def test_a_modality_the_named_model_does_not_read_is_the_engines_model_stage_refusal(tiny_weights):
    analysis = analyze_instance(ct_instance(generate_uid()), PredictorCache("cpu"), model="cxr_pneumonia",
                                weights_dir=tiny_weights)
    assert analysis.decision == "not analysed" and analysis.prediction is None
    assert "model 'cxr_pneumonia' accepts DICOM modalities CR, DX" in analysis.reason
    assert analysis.error == f"ValueError: {analysis.reason}" and analysis.error_stage == "model"
    assert analysis.card.name == "cxr_pneumonia" and analysis.meta.modality == "CT"


def test_no_such_model_is_a_model_stage_refusal_without_a_card(tiny_weights):
    analysis = analyze_instance(ct_instance(generate_uid()), PredictorCache("cpu"), model="no_such_model",
                                weights_dir=tiny_weights)
    assert analysis.decision == "not analysed" and analysis.card is None
    assert "not found" in analysis.reason and analysis.error_stage == "model"


def test_an_analysed_instance_has_no_error_and_reuses_the_loaded_model(tiny_weights):
    predictors = PredictorCache("cpu")
    first = analyze_instance(ct_instance(generate_uid()), predictors, weights_dir=tiny_weights, explain_result=False)
    second = analyze_instance(ct_instance(generate_uid()), predictors, weights_dir=tiny_weights, explain_result=False)
    assert first.card.name == "ct_covid" and first.prediction is not None
    assert (first.error, first.error_stage) == ("", "")
    assert second.card is first.card  # one Predictor per card, shared by the engine's scorers
    assert set(first.prediction.probabilities) == set(first.card.labels)


def test_pixels_that_cannot_be_decoded_are_raised_as_the_engines_read_error(tiny_weights):
    ds = pydicom.dcmread(io.BytesIO(ct_instance(generate_uid())))
    ds.PixelData = ds.PixelData[:10]  # truncated: the header promises far more
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(UnsupportedImageError):
        analyze_instance(buf.getvalue(), PredictorCache("cpu"), weights_dir=tiny_weights)
    scored = Scorer(weights_dir=tiny_weights).score([("x.dcm", buf.getvalue())])[0]
    assert scored.row["error_stage"] == "read" and isinstance(scored.exception, UnsupportedImageError)
    assert scored.row["error"] == f"UnsupportedImageError: {scored.exception}"
