"""The card catalogue: contracts parsed once per file version, reports read only when asked."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from medcnn.models import catalogue
from medcnn.models.card import CardError, ModelCard
from medcnn.models.catalogue import list_cards, load_card, load_report, resolve_card
from medcnn.models.contract import REPORT_FIELDS, CardReport, FindingPoint

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SHIPPED = sorted(WEIGHTS.glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_card_contract_is_its_json(path: Path):
    data = json.loads(path.read_text())
    card = load_card(path)
    c = card.contract
    assert c == ModelCard.load(path).contract
    assert (c.name, c.architecture, c.modality, list(c.labels), c.positive_label) == (
        data["name"], data["architecture"], data["modality"], data["labels"], data["positive_label"])
    assert (c.temperature, c.threshold) == (data.get("temperature", 1.0), data.get("threshold", 0.5))
    assert (c.preprocessing, list(c.input_size), c.target_layer) == (
        data["preprocessing"], data["input_size"], data["target_layer"])
    assert (c.scope, c.ood, c.head) == (data.get("scope", {}), data.get("ood", {}), data.get("head", "softmax"))
    if c.head == "sigmoid":
        assert [n for n, _ in c.findings] == data["labels"]
        for name, point in c.findings:
            assert point.threshold == data["findings"][name]["threshold"]
            assert point.temperature == data["findings"][name]["temperature"]
    # the report, read when asked, is the file's; the whole card equals the eagerly loaded one
    assert card.metrics == data["metrics"] and card.training == data["training"]
    assert card == ModelCard.load(path)
    assert load_report(path) == CardReport(**{k: data[k] for k in REPORT_FIELDS if k in data})


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A weights folder with a copy of the shipped pneumonia card (its weights an empty stand-in)."""
    shutil.copy(WEIGHTS / "cxr_pneumonia.json", tmp_path / "cxr_pneumonia.json")
    (tmp_path / "cxr_pneumonia.pt").write_bytes(b"")
    return tmp_path


def test_report_is_not_read_until_asked_and_contract_parsed_once(folder: Path, monkeypatch):
    loads = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda s, *a, **k: loads.append(1) or real(s, *a, **k))
    catalogue._contract.cache_clear()
    for _ in range(5):  # what page reruns do
        cards = list_cards(folder)
        path = resolve_card(model="cxr_pneumonia", weights_dir=folder)
    assert len(loads) == 1 and path == folder / "cxr_pneumonia.json"
    card = cards[0]
    assert card.__dict__.get("_report", {}) == {}  # nothing of the report held yet
    assert card.threshold == pytest.approx(json.loads(path.read_text())["threshold"])
    loads.clear()
    assert card.metrics["test"]["n"] > 0 and len(loads) == 1  # first use reads the file once ...
    assert card.audit and card.experiments and card.limitations and len(loads) == 1  # ... for the whole report
    assert not set(REPORT_FIELDS) & set(catalogue._contract(str(path), *_stamp(path)))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def test_a_card_changed_on_disk_is_read_again(folder: Path):
    path = folder / "cxr_pneumonia.json"
    before = load_card(path)
    data = json.loads(path.read_text())
    data["threshold"], data["metrics"] = 0.25, {"val": {"auc": 0.5}}
    path.write_text(json.dumps(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version even on a coarse clock
    after = load_card(path)
    assert after.threshold == 0.25 and before.threshold != 0.25
    assert after.metrics == {"val": {"auc": 0.5}}


def test_each_load_is_a_new_card(folder: Path):
    first = load_card(folder / "cxr_pneumonia.pt")
    first.preprocessing["steps"].clear()
    first.metrics.clear()
    second = load_card(folder / "cxr_pneumonia")
    assert second.preprocessing["steps"] and second.metrics


def test_a_lazy_card_saved_elsewhere_keeps_its_report(folder: Path, tmp_path: Path):
    card = load_card(folder / "cxr_pneumonia.json")
    card.threshold = 0.3
    out = card.save(tmp_path / "copy" / "site.json")
    saved = json.loads(out.read_text())
    original = json.loads((folder / "cxr_pneumonia.json").read_text())
    assert saved["threshold"] == 0.3 and saved["metrics"] == original["metrics"]
    assert saved["audit"] == original["audit"]


def test_cards_built_in_memory_have_default_reports():
    card = ModelCard(name="x", architecture="simplecnn", modality="CXR", labels=["a", "b"], positive_label="b",
                     input_size=(8, 8), preprocessing={}, target_layer="features", metrics={"val": {"auc": 0.9}})
    assert card.report == CardReport(metrics={"val": {"auc": 0.9}})
    other = dataclasses.replace(card, limitations=["small"])
    assert other.metrics == {"val": {"auc": 0.9}} and other.limitations == ["small"] and card.limitations == []
    assert "metrics" not in repr(card)


def test_sigmoid_operating_points_are_typed():
    findings = {"A": {"temperature": 2.0, "threshold": 0.3, "shown": False, "reason": "too few"}, "B": {}}
    card = ModelCard(name="m", architecture="simplecnn", modality="CXR", labels=["A", "B"], positive_label="A",
                     input_size=(8, 8), preprocessing={}, target_layer="features", head="sigmoid", findings=findings)
    assert card.contract.findings == (("A", FindingPoint(2.0, 0.3, False, "too few")), ("B", FindingPoint()))
    assert list(card.finding_thresholds()) == [0.3, 0.5] and card.shown_findings() == ["B"]


def test_a_broken_card_is_skipped_with_a_warning(folder: Path):
    (folder / "broken.json").write_text('{"name": "broken"}')
    (folder / "broken.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match="broken.json.*lacks required fields"):
        names = [c.name for c in list_cards(folder)]
    assert names == ["cxr_pneumonia"]
    with pytest.raises(CardError, match="not found"):
        load_card(folder / "absent.json")
