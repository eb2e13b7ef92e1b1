"""The Model card page opens on the default chest X-ray model and leads with a one-screen summary."""
from __future__ import annotations

import pytest

from test_findings_app import findings_card, save_findings_model
from test_pages import make_weights, page, weights_env


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("card_weights"))  # cxr_pneumonia, ct_covid
    save_findings_model(folder)  # cxr_findings, the chest X-ray default
    with weights_env(folder):
        yield folder


def test_default_card_comes_first_whatever_the_folder_order():
    from medcnn.app.card_summary import default_card_name, ordered_cards
    from medcnn.models.card import ModelCard

    def card(name, modality):
        return ModelCard(name=name, architecture="simplecnn", modality=modality, labels=["a", "b"],
                         positive_label="b", input_size=(8, 8), preprocessing={}, target_layer="x")

    cards = [card("ct_covid", "CT"), card("cxr_findings", "CXR"), card("cxr_pneumonia", "CXR")]
    assert default_card_name(cards) == "cxr_findings"
    assert [c.name for c in ordered_cards(cards)] == ["cxr_findings", "ct_covid", "cxr_pneumonia"]
    assert default_card_name([cards[0], cards[2]]) == "ct_covid"  # the CT default, when no CXR default
    assert default_card_name([card("other", "CT"), card("cxr_site", "CXR")]) == "cxr_site"


def test_summary_of_a_softmax_card_states_use_outputs_ci_operating_point_and_limits():
    from medcnn.app.card_summary import summary
    from medcnn.models.card import ModelCard

    card = ModelCard(name="cxr_pneumonia", architecture="simplecnn", modality="CXR", labels=["NORMAL", "PNEUMONIA"],
                     positive_label="PNEUMONIA", input_size=(8, 8), preprocessing={}, target_layer="x",
                     threshold=0.27, dicom_modalities=["CR", "DX"], intended_use="Teaching.",
                     limitations=["One hospital."], training={"date": "2026-11-24T11:22:42+00:00"},
                     metrics={"val": {"n": 50, "auc": 0.95, "recall": 0.9, "specificity": 0.9},
                              "test": {"n": 115, "auc": 0.892, "auc_ci": [0.81, 0.954], "recall": 0.854,
                                       "specificity": 0.776, "ci": {"recall": [0.733, 0.954],
                                                                    "specificity": [0.68, 0.871]}}})
    s = summary(card)
    assert s.intended_use == "Teaching."
    assert s.population.startswith("Adults (18 years and over); frontal chest radiographs (PA or AP)")
    assert "P(PNEUMONIA) is at or above the threshold 0.270" in s.outputs[1]
    assert s.performance[0] == {"set": "test", "images": "115", "AUC (95% CI)": "0.892 (95% CI 0.810-0.954)",
                                "sensitivity (95% CI)": "0.854 (95% CI 0.733-0.954)",
                                "specificity (95% CI)": "0.776 (95% CI 0.680-0.871)"}
    assert "calls 85% of PNEUMONIA images (sensitivity) and clears 78% of the others" in s.operating_points[0]
    assert "not a medical device" in s.must_not[0] and "One hospital." in s.must_not
    assert s.checked.startswith("2026-11-24")
    assert len(s.outputs) == 2  # no caveats: nothing more is said
    card.caveats = {"picture": "Measured on DICOM only."}
    assert summary(card).outputs[2] == "On a PNG or JPEG picture: Measured on DICOM only."


def test_summary_of_a_multilabel_card_lists_each_presented_finding():
    from medcnn.app.card_summary import summary

    s = summary(findings_card())
    assert [r["finding"] for r in s.performance] == ["Effusion", "Nodule", "Pneumothorax"]  # Hernia hidden
    assert any("Nodule: called at P ≥ 0.200" in line for line in s.operating_points)
    assert any(line.startswith("Not shown: Hernia") for line in s.outputs)


def test_summary_states_each_operating_point_purpose_and_rates_with_cis():
    from medcnn.app.card_summary import summary
    from medcnn.evaluation.operating_points import PURPOSE

    card = findings_card()
    card.findings["Nodule"].update(threshold=0.2, rule=PURPOSE, test={
        "n_pos": 20, "n_neg": 180, "sensitivity": 0.4, "sensitivity_ci": [0.2, 0.6], "specificity": 0.86,
        "specificity_ci": [0.81, 0.9], "predictive": {"validation": {"prevalence": 0.1, "ppv": 0.24,
                                                                     "ppv_ci": [0.12, 0.36]}}})
    line = next(x for x in summary(card).operating_points if x.startswith("Nodule"))
    assert line == ("Nodule: called at P ≥ 0.200, chosen for specificity >= 0.85 on validation. On test (20 with, "
                    "180 without): sensitivity 0.40 (95% CI 0.20-0.60), specificity 0.86 (95% CI 0.81-0.90); "
                    "PPV 0.24 (95% CI 0.12-0.36) at 10.0% prevalence (validation).")


def test_model_card_page_opens_on_the_default_model_with_the_summary_first(weights):
    at = page("pages/3_Model_card.py")
    assert not at.error
    tabs = at.tabs
    assert tabs[0].label == "cxr_findings"
    first = tabs[0]
    text = "\n".join(m.value for m in first.markdown)
    assert "**Intended use.**" in text and "**Population.**" in text and "**What the output means.**" in text
    assert "**Operating points.**" in text and "**Last checked:**" in text
    assert first.table[0].value.columns.tolist()[:2] == ["finding", "AUC (95% CI)"]
    # the developer detail is folded away
    labels = [e.label for e in first.expander]
    assert any(label.startswith("Training command") or label.startswith("Model fields") for label in labels)
