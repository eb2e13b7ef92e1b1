"""The one checkpoint naming rule (medcnn.models.card.card_file) and the code that uses it."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from medcnn.models.card import ModelCard, card_file


@pytest.mark.parametrize(("given", "expected"), [
    ("weights/x.pt", "weights/x.json"),
    ("weights/x.json", "weights/x.json"),
    ("weights/x", "weights/x.json"),
    ("site.v2", "site.v2.json"),  # a dot in the name is no suffix: it is kept
    ("site.v2.pt", "site.v2.json"),
    ("x.ood.pt", "x.ood.json"),
])
def test_card_file_names_the_card_of_any_checkpoint_path(given, expected):
    assert card_file(given) == Path(expected)
    assert card_file(Path(given)) == Path(expected)


def _card(name: str = "x") -> ModelCard:
    from medcnn.preprocess import default_config

    return ModelCard(name=name, architecture="simplecnn", modality="CXR", labels=["NORMAL", "PNEUMONIA"],
                     positive_label="PNEUMONIA", input_size=(32, 32),
                     preprocessing=default_config("CXR", size=32), target_layer="features")


def test_card_save_and_load_follow_the_rule(tmp_path):
    assert _card().save(tmp_path / "site.v2") == tmp_path / "site.v2.json"  # was site.json
    assert ModelCard.load(tmp_path / "site.v2").path == tmp_path / "site.v2.json"  # bare name: its card
    assert ModelCard.load(tmp_path / "site.v2.pt").path == tmp_path / "site.v2.json"


def test_save_checkpoint_keeps_a_dotted_name_whole(tmp_path):
    from medcnn.models import create_model, load_model, save_checkpoint

    path = save_checkpoint(create_model("simplecnn", num_classes=2, in_chans=1), _card(), tmp_path / "run.v2")
    assert path == tmp_path / "run.v2.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.v2.json", "run.v2.pt"]  # was run.json, run.pt
    model, card = load_model(path, device="cpu")
    assert card.name == "run.v2" and card.weights_path == tmp_path / "run.v2.pt"


def test_resolve_card_and_load_card_use_the_rule(tmp_path):
    from medcnn.inference import load_card, resolve_card
    from medcnn.models import create_model, save_checkpoint

    save_checkpoint(create_model("simplecnn", num_classes=2, in_chans=1), _card(), tmp_path / "cxr.pt")
    for model in (tmp_path / "cxr.pt", tmp_path / "cxr.json", "cxr", "elsewhere/cxr.pt"):
        assert resolve_card(None, model, tmp_path) == tmp_path / "cxr.json"
    assert load_card(tmp_path / "cxr").name == "cxr"
    with pytest.raises(ValueError, match="not found"):
        resolve_card(None, "cxr.v2", tmp_path)


def test_recalibration_output_names_follow_the_rule(tmp_path):
    from medcnn.cli.recalibrate import _out_path

    original = tmp_path / "cxr.json"
    args = argparse.Namespace(out=str(tmp_path / "cxr_site.pt"), overwrite=False)
    assert _out_path(args, original) == tmp_path / "cxr_site.json"  # was cxr_site.pt.json
    args.out = str(tmp_path / "cxr_site")
    assert _out_path(args, original) == tmp_path / "cxr_site.json"
