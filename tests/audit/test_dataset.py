"""Dataset shortcut audit on synthetic sets with and without a planted non-anatomical cue."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from medcnn.audit import audit_dataset, format_summary, label_balance
from medcnn.audit.features import encode_features, feature_group, image_features
from medcnn.audit.table import load_table

N_PER_CLASS = 40


def _anatomy(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random 'anatomy' in [0.2, 0.8] (same distribution for every class)."""
    coarse = rng.random((6, 6)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 0.03, (h, w)).astype(np.float32)
    return np.clip(0.2 + 0.6 * img, 0, 1)


def _write_set(root: Path, kind: str, seed: int = 0, extra_cols: bool = False) -> Path:
    """labels.csv + PNGs; ``kind``: 'corner' (marker in positives), 'size' or 'null'."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("NORMAL", "PNEUMONIA"):
        pos = label == "PNEUMONIA"
        for i in range(N_PER_CLASS):
            h, w = (64, 80) if (kind == "size" and pos) else (64, 64)
            img = _anatomy(rng, h, w)
            if kind == "corner" and pos:
                img[:7, :7] = rng.uniform(0.85, 1.0)  # bright marker filling the top-left corner
            rel = f"{label}/{i:03d}.png"
            (root / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), np.round(img * 255).astype(np.uint8))
            row = {"path": rel, "label": label, "split": ("train", "val", "test")[i % 3],
                   "patient_id": f"{label[0]}{i // 2}"}
            if extra_cols:
                row.update(view_position="AP" if (pos and i % 5) or (not pos and i % 5 == 0) else "PA",
                           age=25 + (i * 7) % 60, sex="MF"[i % 2], rsna_target=int(pos),
                           finding_labels="Pneumonia" if pos else "No Finding")
            rows.append(row)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


@pytest.fixture(scope="module")
def corner_csv(tmp_path_factory) -> Path:
    return _write_set(tmp_path_factory.mktemp("corner"), "corner")


@pytest.fixture(scope="module")
def null_report(tmp_path_factory) -> dict:
    csv = _write_set(tmp_path_factory.mktemp("null"), "null", seed=1, extra_cols=True)
    return audit_dataset(csv, n_boot=300)


def test_corner_marker_is_found_and_named(corner_csv):
    rep = audit_dataset(corner_csv, n_boot=300)
    lr = rep["feature_sets"]["all"]["logistic_regression"]
    assert lr["auc"] > 0.9 and lr["auc_ci"][0] > 0.6
    assert rep["confounded"] and rep["warning"].startswith("WARNING: labels can be predicted without anatomy")
    top = rep["features"]["single_feature_auc"][0]
    assert top["feature"] == "corner_tl" and top["higher_in"] == "positive"
    assert rep["positive"] == "PNEUMONIA" and rep["n"] == 2 * N_PER_CLASS
    assert "corner_tl" in format_summary(rep)


def test_size_per_class_is_found_and_named(tmp_path):
    rep = audit_dataset(_write_set(tmp_path, "size"), n_boot=300)
    assert rep["best"]["auc"] > 0.9 and rep["confounded"]
    top = rep["features"]["single_feature_auc"][0]
    assert feature_group(top["feature"]) == "size", top
    assert next(iter(rep["features"]["group_cv_auc"])) in ("size", "file")


def test_no_planted_cue_gives_chance_auc(null_report):
    # the pixels carry no cue (only the CSV's view_position does, see the next test)
    for model, r in null_report["feature_sets"]["image_only"].items():
        if isinstance(r, dict):
            lo, hi = r["auc_ci"]
            assert lo < 0.5 < hi and abs(r["auc"] - 0.5) < 0.2, (model, r)


def test_metadata_columns_and_label_derived_columns(null_report):
    rep = null_report
    # view_position is an acquisition column; age/sex are subgroups but not features;
    # rsna_target and finding_labels are label-derived and never used
    assert rep["metadata_columns"] == ["view_position"]
    names = {r["feature"] for r in rep["features"]["single_feature_auc"]} | {
        r["feature"] for r in rep["features"]["lr_coefficients"]}
    assert not any("rsna" in n or "finding" in n or n.startswith("meta_age") for n in names)
    # view was planted as confounded: the "all" set beats the image-only set
    assert rep["feature_sets"]["all"]["logistic_regression"]["auc"] > 0.7
    bal = rep["label_balance"]
    assert set(bal["view_position"]["groups"]) == {"AP", "PA"}
    assert bal["view_position"]["chi2_p"] < 0.01
    assert set(bal["age_band"]["groups"]) <= {"<40", "40-60", "60+"}
    assert sum(g["n"] for g in bal["split"]["groups"].values()) == 2 * N_PER_CLASS


def test_label_balance_counts_and_age_bands():
    df = pd.DataFrame({"label": ["P", "N", "P", "N", "P"], "age": [30, 45, 70, None, 59.9],
                       "view_position": ["AP", "PA", "AP", "PA", "PA"]})
    bal = label_balance(df, "P")
    assert bal["age_band"]["groups"]["<40"] == {"n": 1, "counts": {"N": 0, "P": 1}, "positive_share": 1.0}
    assert bal["age_band"]["groups"]["40-60"]["n"] == 2 and bal["age_band"]["groups"]["missing"]["n"] == 1
    assert bal["view_position"]["groups"]["PA"]["positive_share"] == pytest.approx(1 / 3, abs=1e-4)


def test_image_features_of_one_png(tmp_path):
    img = np.full((40, 50), 100, np.uint8)
    img[:4, 46:] = 255
    cv2.imwrite(str(tmp_path / "a.png"), img)
    f = image_features(tmp_path / "a.png")
    assert (f["width"], f["height"], f["format_"], f["channels_"]) == (50.0, 40.0, "png", "1")
    assert f["aspect"] == pytest.approx(1.25)
    assert f["corner_tr"] > f["corner_tl"] == pytest.approx(100 / 255, abs=1e-3)
    assert f["int_frac_white"] > 0 and f["int_p50"] == pytest.approx(100 / 255, abs=1e-3)


def test_encode_one_hot_and_duplicates():
    raw = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 4.0, 6.0, 8.0], "c": [5.0] * 4,
                        "format_": ["png", "png", "jpeg", "png"], "m": ["x", "y", "z", "z"]})
    x = encode_features(raw)
    assert list(x.columns) == ["a", "format=jpeg", "m=x", "m=y", "m=z"]


def test_non_standard_split_rows_are_skipped(corner_csv, tmp_path):
    df = pd.read_csv(corner_csv)
    df["path"] = [str(corner_csv.parent / p) for p in df["path"]]
    df.loc[0, "split"] = "fullres_demo"
    df.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.warns(UserWarning, match="fullres_demo"):
        table = load_table(tmp_path / "labels.csv")
    assert len(table) == len(df) - 1 and set(table["split"]) == {"train", "val", "test"}
    assert table["group"].iloc[0] == str(df["patient_id"].iloc[1])


def test_errors_are_clear(corner_csv):
    with pytest.raises(ValueError, match="not among the labels"):
        audit_dataset(corner_csv, positive="COVID")
    with pytest.raises(ValueError, match="not in the labels"):
        audit_dataset(corner_csv, classes=["NORMAL", "COVID"])


def test_command_json_and_text(corner_csv, capsys):
    from medcnn.__main__ import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["audit", "--data", str(corner_csv), "--json", "--max-images", "60", "--folds", "3"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n"] == 60 and rep["confounded"] is True and rep["folds"] == 3
    assert main(["audit", "--data", str(corner_csv), "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "corner_tl" in out
    assert main(["audit", "--data", str(corner_csv), "--saliency"]) == 2


@pytest.mark.parametrize("name, group", [
    ("width", "size"), ("aspect", "size"), ("file_bytes", "file"), ("format=jpeg", "format"),
    ("channels=4", "format"), ("dicom_manufacturer=ACME", "dicom"), ("int_p50", "intensity"),
    ("border_minus_centre", "border"), ("corner_br", "corner"), ("sharpness_log", "sharpness"),
    ("text_top", "text"), ("meta_view_position=AP", "metadata"), ("mystery", "other"),
])
def test_feature_groups(name, group):
    assert feature_group(name) == group
