"""Tests of medcnn.evaluation.labels: labels.csv files, class folders, splits, groups, image detection."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medcnn.audit.table import load_table
from medcnn.evaluation.labels import SPLIT_ALIASES, STANDARD_SPLITS, is_image_file, read_labels
from medcnn.io import read_image


def test_read_labels_keeps_columns_and_resolves_paths(csv_set):
    df = read_labels(csv_set)
    assert len(df) == 5
    assert {"path", "label", "split", "group", "source", "view_position", "patient_id"} <= set(df.columns)
    assert all(p.startswith(str(csv_set.parent)) for p in df["path"])
    assert df["group"].iloc[0] == "00000000"  # leading zeros kept (string IDs)
    assert set(df["source"]) == {"setA"}


def test_read_labels_filters_classes_and_split(csv_set):
    df = read_labels([csv_set], classes=["NORMAL", "PNEUMONIA"])
    assert set(df["label"]) == {"NORMAL", "PNEUMONIA"} and len(df) == 4
    assert len(read_labels(csv_set, split="val")) == 1
    with pytest.raises(ValueError, match="available labels: NORMAL, OTHER, PNEUMONIA"):
        read_labels(csv_set, classes=["NORMAL", "COVID"])


def test_read_labels_concatenates_sources(csv_set, tmp_path, png):
    other = tmp_path / "setB"
    png(other / "x.png")
    pd.DataFrame([{"path": "x.png", "label": "NORMAL", "split": "train", "group_id": "g1"}]).to_csv(
        other / "labels.csv", index=False)
    df = read_labels([csv_set, other / "labels.csv"])
    assert len(df) == 6 and df["source"].tolist()[-1] == "setB" and df["group"].iloc[-1] == "g1"
    assert pd.isna(df["view_position"].iloc[-1])


def test_missing_file_and_extra_split_names(tmp_path, png):
    root = tmp_path / "s"
    root.mkdir()
    (root / "labels.csv").write_text("path,label,split\nnope.png,A,train\n")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_labels(root / "labels.csv")
    png(root / "a.png")
    # extra split names (nih_cxr_pneumonia's fullres_demo) are kept, selectable, never aliased to train
    (root / "labels.csv").write_text("path,label,split\na.png,A,fullres_demo\na.png,A,Validation\n")
    df = read_labels(root / "labels.csv")
    assert list(df["split"]) == ["fullres_demo", "val"]
    assert len(read_labels(root / "labels.csv", split="fullres_demo")) == 1
    (root / "labels.csv").write_text("file,label\na.png,A\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_labels(root / "labels.csv")


def test_folder_mode(tmp_path, png):
    for split in ("train", "val"):
        for lab in ("COVID", "NonCOVID"):
            png(tmp_path / "ds" / split / lab / "a.png")
    df = read_labels(tmp_path / "ds")
    assert len(df) == 4 and set(df["split"]) == {"train", "val"} and set(df["label"]) == {"COVID", "NonCOVID"}
    png(tmp_path / "flat" / "A" / "1.png")
    png(tmp_path / "flat" / "B" / "1.jpg")
    df = read_labels(tmp_path / "flat")
    assert sorted(df["label"]) == ["A", "B"] and set(df["split"]) == {"train"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no labels.csv"):
        read_labels(tmp_path / "empty")


def test_folder_mode_finds_images_by_content_not_by_name(tmp_path, png):
    root = tmp_path / "ds"
    png(root / "A" / "1.png")
    (root / "B").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "B" / "IM0001")  # DICOM without an extension
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "B" / "x.bmp")  # io cannot read BMP
    (root / "B" / "fake.png").write_text("not an image")  # a name does not make an image
    (root / "B" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files are skipped silently
    with pytest.warns(UserWarning, match=r"skipping 2 file\(s\) that are not DICOM, PNG or JPEG"):
        df = read_labels(root)
    assert sorted(Path(p).name for p in df["path"]) == ["1.png", "IM0001"]
    dicom = df.loc[df["label"] == "B", "path"].item()
    assert read_image(dicom).meta.source_format == "dicom"  # what was found, io reads
    assert is_image_file(dicom) and is_image_file(root / "A" / "1.png")
    assert not is_image_file(root / "B" / "x.bmp") and not is_image_file(root / "B" / "fake.png")
    assert not is_image_file(root / "missing.png")


def test_folder_mode_bmp_only_folder_is_an_error(tmp_path):
    (tmp_path / "A").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "A" / "x.bmp")
    with pytest.warns(UserWarning, match="x.bmp"), pytest.raises(FileNotFoundError, match="DICOM, PNG or JPEG"):
        read_labels(tmp_path)


def test_split_names_have_one_owner(csv_set, tmp_path):
    assert set(SPLIT_ALIASES.values()) == set(STANDARD_SPLITS)
    df = pd.read_csv(csv_set)
    df.loc[0, "split"] = "fullres_demo"
    df.loc[1, "split"] = "Validation"
    df["path"] = [str(csv_set.parent / p) for p in df["path"]]
    df.to_csv(tmp_path / "labels.csv", index=False)
    assert sorted(read_labels(tmp_path / "labels.csv")["split"]) == ["fullres_demo", "test", "train", "val", "val"]
    with pytest.warns(UserWarning, match=r"skipping 1 row\(s\) with split \['fullres_demo'\]"):
        kept = read_labels(tmp_path / "labels.csv", drop_other_splits=True)
    assert sorted(kept["split"]) == ["test", "train", "val", "val"]
    with pytest.warns(UserWarning, match="fullres_demo"):
        assert load_table(tmp_path / "labels.csv")["path"].tolist() == kept["path"].tolist()
