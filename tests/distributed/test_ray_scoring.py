"""Batch scoring: the batched scorer and a local Ray cluster give ``predict --json``'s results.

Every row is compared with the entry the local command prints for the same file: the same model,
label, decision, out-of-distribution verdict, warnings and error, and the same probabilities and
scores within float tolerance (images of one model share a forward pass when batched).
"""
from __future__ import annotations

import json
import sys

import pytest

from medcnn.__main__ import main
from medcnn.distributed.scoring import BatchScorer, entry_to_row
from medcnn.distributed.sources import expand_sources

SAME = ("ok", "error", "model", "label", "decision", "above_threshold", "ood_flagged", "ood_level", "ood_reasons",
        "warnings")
CLOSE = ("positive_prob", "threshold", "ood_score")


def local_entries(capsys, files: list[str], weights) -> list[dict]:
    """``predict FILE... --json`` entries, as the local command prints them."""
    rc = main(["predict", *files, "--json", "--weights-dir", str(weights), "--device", "cpu"])
    assert rc == 1  # the broken file, the text named .jpg and the MR fail
    return json.loads(capsys.readouterr().out)["results"]


def assert_rows_match(rows: list[dict], entries: list[dict]) -> None:
    assert [r["path"] for r in rows] == [e["file"] for e in entries]
    for row, want in zip(rows, (entry_to_row(e) for e in entries)):
        for key in SAME:
            assert row[key] == want[key], (row["path"], key)
        for key in CLOSE:
            if want[key] is None:
                assert row[key] is None, (row["path"], key)
            else:
                assert row[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (row["path"], key)
        if want["probabilities"] is None:
            assert row["probabilities"] is None
        else:
            got, exp = json.loads(row["probabilities"]), json.loads(want["probabilities"])
            assert list(got) == list(exp)
            assert list(got.values()) == pytest.approx(list(exp.values()), abs=1e-6), row["path"]


def read_rows(path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def check_outcome(rows: list[dict], folder) -> None:
    """Both models ran; the broken PNG, the text file named .jpg and the MR are error rows (one row
    per file named or recognised as an image); notes.txt was never scored."""
    by_name = {r["path"][len(str(folder)) + 1:]: r for r in rows}
    assert "notes.txt" not in by_name and "scan.dat" in by_name
    assert "truncated or corrupt PNG" in by_name["broken.png"]["error"] and not by_name["broken.png"]["ok"]
    assert "no model for modality MR" in by_name["MR_small.dcm"]["error"]
    assert by_name["CT_small.dcm"]["model"] == "ct_covid" and by_name["g0.png"]["model"] == "cxr_findings"
    assert by_name["g0.png"]["routed"].startswith("auto-chosen for PNG/JPEG") and by_name["MR_small.dcm"]["routed"] is None
    assert "is not an image: it looks like text" in by_name["photo.jpg"]["error"] and not by_name["photo.jpg"]["ok"]
    assert sum(not r["ok"] for r in rows) == 3 and len(rows) == 13


def test_batched_scorer_gives_the_local_predict_results(image_folder, shipped_weights, capsys):
    files = expand_sources([image_folder])
    entries = local_entries(capsys, files, shipped_weights)
    scored = BatchScorer(weights_dir=shipped_weights, device="cpu").score(files)
    assert [list(e) for e in scored] == [list(e) for e in entries]  # the same keys, in order
    rows = [entry_to_row(e) for e in scored]
    assert_rows_match(rows, entries)
    check_outcome(rows, image_folder)


def test_local_engine_writes_the_same_rows_to_parquet(image_folder, shipped_weights, capsys, tmp_path):
    entries = local_entries(capsys, expand_sources([image_folder]), shipped_weights)
    out = tmp_path / "local.parquet"
    rc = main(["predict", "--engine", "local", str(image_folder), "--out", str(out),
               "--weights-dir", str(shipped_weights), "--device", "cpu"])
    assert rc == 1
    assert "scored 13 images (3 errors" in capsys.readouterr().out
    assert_rows_match(read_rows(out), entries)


@pytest.mark.slow
def test_a_local_ray_cluster_scores_a_folder_like_local_predict(image_folder, shipped_weights, capsys, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-scale.txt")
    import ray

    entries = local_entries(capsys, expand_sources([image_folder]), shipped_weights)
    out = tmp_path / "ray.parquet"
    rc = main(["predict", "--engine", "ray", str(image_folder), "--out", str(out), "--workers", "2",
               "--weights-dir", str(shipped_weights), "--device", "cpu", "--json"])
    assert not ray.is_initialized()  # the local cluster it started is gone
    assert rc == 1  # some files failed; the run went on
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {**summary, "rows": 13, "errors": 3, "workers": 2, "out": str(out)}
    rows = read_rows(out)
    assert_rows_match(rows, entries)
    check_outcome(rows, image_folder)


def test_ray_engine_without_ray_says_how_to_install_it(image_folder, shipped_weights, capsys, tmp_path,
                                                        monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, installed or not
    rc = main(["predict", "--engine", "ray", str(image_folder), "--out", str(tmp_path / "x.parquet"),
               "--weights-dir", str(shipped_weights)])
    assert rc == 2
    assert "pip install -r requirements-scale.txt" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_ray_options_need_the_ray_engine(image_folder, capsys):
    assert main(["predict", str(image_folder / "g0.png"), "--workers", "2"]) == 2
    assert "--engine ray" in capsys.readouterr().err
