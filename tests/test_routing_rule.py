"""The routing rule (:func:`medcnn.routing.route`), table-driven: which model answers, how, and why not.

Each row is a weights folder (which families have a card, which cards have a gate), an image's
modality, each family's gate verdict and the model named (if any); the expected answer is the
family whose card answers, the models asked in order, the exact ``how`` and ``reason`` texts, and
whether the image was rerouted. The cards are real card files (no network is loaded: the rule reads
cards only); ``predict`` is a stand-in that returns the row's verdict, so the rule is tested alone.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from medcnn.io import ImageMeta
from medcnn.ood import OODResult
from medcnn.routing import NAMED, Route, candidates, decide, first_card, next_to_ask, route, unread_reason

NAME = {"CXR": "cxr_pneumonia", "CT": "ct_covid"}
FAMILY = {v: k for k, v in NAME.items()}
REROUTED = ("auto-chosen: the chest X-ray model's gate found this image outside its scope; the CT model "
            "reads it")
LOOKS_CT = ("no model's gate finds this image within its scope. It looks more like a CT slice: if it is "
            "one, choose the CT model")
LOOKS_CXR = ("no model's gate finds this image within its scope. It looks more like a chest X-ray: if it "
             "is one, choose the chest X-ray model")
MR = "no model here reads MR images: the CT model reads CT, the chest X-ray model CR, DX, PNG and JPEG"


def write_cards(folder: Path, cards: dict[str, bool]) -> Path:
    """Card files (``.json`` + an empty ``.pt``) of the families in ``cards`` (family -> has a gate)."""
    from medcnn.models.card import ModelCard
    from medcnn.preprocess import default_config

    folder.mkdir(parents=True, exist_ok=True)
    for fam, gated in cards.items():
        labels = ["NORMAL", "PNEUMONIA"] if fam == "CXR" else ["NonCOVID", "COVID"]
        card = ModelCard(name=NAME[fam], architecture="simplecnn", modality=fam, labels=labels,
                         positive_label=labels[1], input_size=(64, 64), preprocessing=default_config(fam, 64),
                         target_layer="block3", dicom_modalities=["CR", "DX"] if fam == "CXR" else ["CT"],
                         threshold=0.5,
                         ood={"file": f"{NAME[fam]}.ood.pt", "sha256": "0" * 64, "caution_threshold": 2.0,
                              "refuse_threshold": 4.0} if gated else {})
        card.save(folder / f"{NAME[fam]}.json")
        (folder / f"{NAME[fam]}.pt").write_bytes(b"")
    return folder


def meta(modality: str | None = None) -> ImageMeta:
    """Metadata of a 64 x 64 image: a DICOM of ``modality``, or a PNG (no modality) when None."""
    return ImageMeta(source_format="dicom" if modality else "png", rows=64, columns=64, modality=modality or "OT")


def verdict(v: str | tuple[float, float]) -> SimpleNamespace:
    """A stand-in prediction: ``"ok"``, or withheld with ``(score, refuse threshold)``."""
    if v == "ok":
        return SimpleNamespace(ood=OODResult(level="ok", score=1.0, refuse_threshold=4.0))
    return SimpleNamespace(ood=OODResult(level="outside", score=v[0], refuse_threshold=v[1]))


BOTH = {"CXR": True, "CT": True}
OUT_CT_CLOSER = {"CXR": (10.0, 4.0), "CT": (3.0, 2.0)}  # 2.5 vs 1.5 times the refusal line
OUT_CXR_CLOSER = {"CXR": (10.0, 4.0), "CT": (9.0, 2.0)}  # 2.5 vs 4.5

# cards, modality, verdicts, named model -> answering family, families asked, how, reason, rerouted
CASES = {
    "png accepted by the chest X-ray gate": (BOTH, None, {"CXR": "ok", "CT": "ok"}, None,
                                             "CXR", ["CXR"], "auto-chosen for PNG/JPEG", "", False),
    "png withheld by the X-ray gate, read by the CT model": (BOTH, None, {"CXR": (9.0, 4.0), "CT": "ok"}, None,
                                                             "CT", ["CXR", "CT"], REROUTED, "", True),
    "png no gate accepts, closer to CT": (BOTH, None, OUT_CT_CLOSER, None,
                                          "CXR", ["CXR", "CT"], "auto-chosen for PNG/JPEG", LOOKS_CT, False),
    "png no gate accepts, closer to X-ray": (BOTH, None, OUT_CXR_CLOSER, None,
                                             "CXR", ["CXR", "CT"], "auto-chosen for PNG/JPEG", LOOKS_CXR, False),
    "png, CT model without a gate is no fallback": ({"CXR": True, "CT": False}, None, {"CXR": (9.0, 4.0)}, None,
                                                    "CXR", ["CXR"], "auto-chosen for PNG/JPEG", "", False),
    "png, only a chest X-ray model": ({"CXR": True}, None, {"CXR": (9.0, 4.0)}, None,
                                      "CXR", ["CXR"], "auto-chosen for PNG/JPEG", "", False),
    "png, no chest X-ray model: the CT model first": ({"CT": False}, None, {"CT": "ok"}, None,
                                                      "CT", ["CT"], "auto-chosen for PNG/JPEG", "", False),
    "CT DICOM withheld is never asked of the X-ray model": (BOTH, "CT", OUT_CT_CLOSER, None,
                                                            "CT", ["CT"], "auto-chosen for CT", "", False),
    "DX DICOM withheld is never asked of the CT model": (BOTH, "DX", OUT_CT_CLOSER, None,
                                                         "CXR", ["CXR"], "auto-chosen for DX", "", False),
    "MR DICOM: no model reads it": (BOTH, "MR", {}, None, None, [], "auto", MR, False),
    "named model is never rerouted": (BOTH, None, OUT_CT_CLOSER, "cxr_pneumonia",
                                      "CXR", ["CXR"], NAMED, "", False),
    "named CT model on a png": (BOTH, None, {"CXR": "ok", "CT": (9.0, 4.0)}, "ct_covid",
                                "CT", ["CT"], NAMED, "", False),
    "auto spelled out": (BOTH, None, {"CXR": (9.0, 4.0), "CT": "ok"}, "auto",
                         "CT", ["CXR", "CT"], REROUTED, "", True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_route_table(case, tmp_path):
    cards, modality, verdicts, model, answers, asked, how, reason, rerouted = CASES[case]
    folder = write_cards(tmp_path / "weights", cards)
    calls: list[str] = []

    def predict(card_path: str):
        fam = FAMILY[Path(card_path).stem]
        calls.append(fam)
        return verdict(verdicts[fam])

    r = route(meta(modality), predict, model, folder)
    assert isinstance(r, Route)
    assert calls == asked
    assert (r.how, r.reason, r.rerouted) == (how, reason, rerouted)
    if answers is None:
        assert (r.card_path, r.prediction) == ("", None)
    else:
        assert r.card_path == str(folder / f"{NAME[answers]}.json")
        assert r.prediction.ood is not None and r.prediction.ood.withheld == bool(reason or verdicts[answers] != "ok")
    assert r.describe() == (f"{how}; {reason}" if reason else how)


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][3] in (None, "auto")])
def test_the_two_passes_ask_and_route_as_route_does(case, tmp_path):
    """A batch asks next_to_ask until it names nothing, predicting what it names, then decide routes."""
    cards, modality, verdicts, _, answers, asked, how, reason, rerouted = CASES[case]
    folder = write_cards(tmp_path / "weights", cards)
    plan = candidates(meta(modality), folder)
    predictions, named = {}, []
    while (path := next_to_ask(plan, predictions)) is not None:
        named.append(FAMILY[Path(path).stem])
        predictions[path] = verdict(verdicts[named[-1]])
    assert named == asked
    r = decide(meta(modality), plan, predictions, folder)
    assert (r.how, r.reason, r.rerouted) == (how, reason, rerouted)
    assert r.card_path == ("" if answers is None else str(folder / f"{NAME[answers]}.json"))
    assert r.prediction is (None if answers is None else predictions[r.card_path])


def test_decide_refuses_to_route_before_the_prediction_it_needs(tmp_path):
    folder = write_cards(tmp_path, BOTH)
    plan = candidates(meta(), folder)
    withheld = {plan[0][1]: verdict((9.0, 4.0))}
    assert next_to_ask(plan, {}) == plan[0][1] and next_to_ask(plan, withheld) == plan[1][1]
    assert next_to_ask(plan, {plan[0][1]: verdict("ok")}) is None  # the X-ray gate accepts: decided
    with pytest.raises(ValueError, match="needs this image's prediction with .*ct_covid.json first"):
        decide(meta(), plan, withheld, folder)


def test_the_app_names_where_a_model_was_chosen(tmp_path):
    folder = write_cards(tmp_path, BOTH)
    r = route(meta(), lambda p: verdict("ok"), "ct_covid", folder,
              named="chosen in the sidebar")
    assert (Path(r.card_path).stem, r.how) == ("ct_covid", "chosen in the sidebar")


@pytest.mark.parametrize("cards, modality, model, message", [
    ({"CXR": True}, "CT", None, "no CT model card"),
    (BOTH, None, "nope", "model 'nope' not found"),
])
def test_what_the_resolver_refuses_is_raised_with_its_message(tmp_path, cards, modality, model, message):
    folder = write_cards(tmp_path, cards)
    with pytest.raises(ValueError, match=message):
        route(meta(modality), lambda p: verdict("ok"), model, folder)


@pytest.mark.parametrize("cards, modality, first", [
    (BOTH, None, "cxr_pneumonia"), ({"CT": False}, None, "ct_covid"), (BOTH, "CT", "ct_covid"),
    (BOTH, "CR", "cxr_pneumonia"),
])
def test_first_card_is_the_model_route_asks_first(tmp_path, cards, modality, first):
    folder = write_cards(tmp_path, cards)
    assert first_card(meta(modality), folder) == folder / f"{first}.json"
    assert candidates(meta(modality), folder)[0] == (FAMILY[first], str(folder / f"{first}.json"))


def test_candidates_pass_over_a_fallback_without_a_gate_and_a_modality_no_model_reads(tmp_path):
    both = write_cards(tmp_path / "both", BOTH)
    assert candidates(meta(), both) == [("CXR", str(both / "cxr_pneumonia.json")), ("CT", str(both / "ct_covid.json"))]
    ungated = write_cards(tmp_path / "ungated", {"CXR": True, "CT": False})
    assert candidates(meta(), ungated) == [("CXR", str(ungated / "cxr_pneumonia.json"))]
    assert candidates(meta("MR"), both) == []
    assert (unread_reason(meta("MR")), unread_reason(meta("CT")), unread_reason(meta())) == (MR, "", "")


def test_first_card_refuses_a_modality_no_model_reads(tmp_path):
    with pytest.raises(ValueError, match="no model for modality MR"):
        first_card(meta("MR"), write_cards(tmp_path, BOTH))
