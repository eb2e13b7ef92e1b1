"""``python -m medcnn predict`` routes like the app: a CT slice exported as JPEG, with no ``--model``,
is read by the shipped CT model (the chest X-ray model's gate finds it outside its scope), and the
entry's ``routed`` says so; a chest film stays with the chest X-ray model; ``--model`` is never
rerouted. Needs the real data (``../shared/data``) and the shipped weights; skips without them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcnn.__main__ import main

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights"
REROUTED = ("auto-chosen: the chest X-ray model's gate found this image outside its scope; the CT model "
            "reads it")


def predict_json(capsys, *argv: str) -> list[dict]:
    rc = main(["predict", *argv, "--json", "--weights-dir", str(WEIGHTS), "--device", "cpu"])
    results = json.loads(capsys.readouterr().out)["results"]
    assert rc == 0, results
    return results


@pytest.fixture(scope="module")
def files(shared_data: Path) -> dict[str, Path]:
    found = {"slice": shared_data / "sarscov2_ct" / "test" / "COVID" / "covid_0803.jpg",
             "slice2": shared_data / "sarscov2_ct" / "test" / "NonCOVID" / "noncovid_0803.jpg"}
    films = sorted((shared_data / "rsna_cxr_pneumonia").rglob("*.jpg"))
    for name, path in found.items():
        if not path.is_file():
            pytest.skip(f"{path} not found: the sarscov2_ct test slices live in ../shared/data (present in CI)")
    if not films:
        pytest.skip("no rsna_cxr_pneumonia films in ../shared/data (present in CI)")
    for card in ("cxr_findings", "ct_covid"):
        if not (WEIGHTS / f"{card}.ood.pt").is_file():
            pytest.skip(f"shipped weights {card} with its gate not found in {WEIGHTS}")
    return {**found, "film": films[0]}


def test_ct_slice_jpeg_under_auto_is_read_by_the_ct_model(files, capsys):
    auto = predict_json(capsys, str(files["slice"]), str(files["slice2"]), str(files["film"]))
    assert [r["model"] for r in auto] == ["ct_covid", "ct_covid", "cxr_findings"]
    assert [r["routed"] for r in auto] == [REROUTED, REROUTED, "auto-chosen for PNG/JPEG"]
    assert all(r["ok"] and r["decision"] != "not analysed" for r in auto)
    named = predict_json(capsys, str(files["slice"]), str(files["slice2"]), "--model", "ct_covid")
    assert [r["routed"] for r in named] == ["named by the caller"] * 2
    for a, n in zip(auto, named):  # the CT model's own answer, as if it had been named
        assert a["probabilities"] == pytest.approx(n["probabilities"], abs=1e-6)
        assert (a["decision"], a["ood"]["level"]) == (n["decision"], n["ood"]["level"])


def test_a_named_chest_xray_model_is_never_rerouted(files, capsys):
    (r,) = predict_json(capsys, str(files["slice"]), "--model", "cxr_findings")
    assert (r["model"], r["decision"], r["routed"]) == ("cxr_findings", "not analysed", "named by the caller")


def test_the_printed_line_names_the_rerouting(files, capsys):
    assert main(["predict", str(files["slice"]), "--weights-dir", str(WEIGHTS), "--device", "cpu"]) == 0
    assert f"model ct_covid ({REROUTED})" in capsys.readouterr().out
