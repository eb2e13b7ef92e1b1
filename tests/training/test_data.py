"""Tests of medcnn.training.data (labels, folders, grouped K-fold, cached dataset) and medcnn.training.augment."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medcnn.training.augment import Augment
from medcnn.training.data import DisplayCache, ImageDataset, grouped_kfold, read_labels
from medcnn.io import UnsupportedImageError
from medcnn.preprocess import Pipeline, default_config


def _png(path, value=100, size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size), value, np.uint8)
    arr[: size // 2] = 255 - value
    Image.fromarray(arr).save(path)


@pytest.fixture
def csv_set(tmp_path):
    root = tmp_path / "setA"
    rows = []
    for i, (lab, split) in enumerate([("NORMAL", "train"), ("PNEUMONIA", "train"), ("OTHER", "train"),
                                      ("NORMAL", "val"), ("PNEUMONIA", "test")]):
        _png(root / "img" / f"{i}.png", 20 * i + 10)
        rows.append({"path": f"img/{i}.png", "label": lab, "split": split,
                     "patient_id": f"{i:08d}", "view_position": "AP" if i % 2 else "PA"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


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


def test_read_labels_concatenates_sources(csv_set, tmp_path):
    other = tmp_path / "setB"
    _png(other / "x.png")
    pd.DataFrame([{"path": "x.png", "label": "NORMAL", "split": "train", "group_id": "g1"}]).to_csv(
        other / "labels.csv", index=False)
    df = read_labels([csv_set, other / "labels.csv"])
    assert len(df) == 6 and df["source"].tolist()[-1] == "setB" and df["group"].iloc[-1] == "g1"
    assert pd.isna(df["view_position"].iloc[-1])


def test_missing_file_and_extra_split_names(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    (root / "labels.csv").write_text("path,label,split\nnope.png,A,train\n")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_labels(root / "labels.csv")
    _png(root / "a.png")
    # extra split names (nih_cxr_pneumonia's fullres_demo) are kept, selectable, never aliased to train
    (root / "labels.csv").write_text("path,label,split\na.png,A,fullres_demo\na.png,A,Validation\n")
    df = read_labels(root / "labels.csv")
    assert list(df["split"]) == ["fullres_demo", "val"]
    assert len(read_labels(root / "labels.csv", split="fullres_demo")) == 1
    (root / "labels.csv").write_text("file,label\na.png,A\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_labels(root / "labels.csv")


def test_folder_mode(tmp_path):
    for split in ("train", "val"):
        for lab in ("COVID", "NonCOVID"):
            _png(tmp_path / "ds" / split / lab / "a.png")
    df = read_labels(tmp_path / "ds")
    assert len(df) == 4 and set(df["split"]) == {"train", "val"} and set(df["label"]) == {"COVID", "NonCOVID"}
    _png(tmp_path / "flat" / "A" / "1.png")
    _png(tmp_path / "flat" / "B" / "1.jpg")
    df = read_labels(tmp_path / "flat")
    assert sorted(df["label"]) == ["A", "B"] and set(df["split"]) == {"train"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no labels.csv"):
        read_labels(tmp_path / "empty")


def test_grouped_kfold_keeps_groups_apart_and_stratifies():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 3)  # 60 patients x 3 images
    labels = np.where(rng.random(60) < 0.3, "P", "N")[groups]
    df = pd.DataFrame({"label": labels, "group": groups.astype(str)})
    folds = grouped_kfold(df, 5, seed=1)
    assert len(folds) == 5
    all_val = np.concatenate([va for _, va in folds])
    assert sorted(all_val) == list(range(len(df)))  # every row validated exactly once
    overall = (df["label"] == "P").mean()
    for tr, va in folds:
        assert not set(df["group"].iloc[tr]) & set(df["group"].iloc[va])
        assert abs((df["label"].iloc[va] == "P").mean() - overall) < 0.12
    assert [v.tolist() for _, v in grouped_kfold(df, 5, seed=1)] == [v.tolist() for _, v in folds]
    with pytest.raises(ValueError, match="fewer folds"):
        grouped_kfold(df.iloc[:6], 5)


def test_dataset_items_and_cache(csv_set):
    pipe = Pipeline.from_config(default_config("CXR", 32))
    df = read_labels(csv_set, classes=["NORMAL", "PNEUMONIA"])
    ds = ImageDataset(df, pipe, ["NORMAL", "PNEUMONIA"])
    ds.prefill(progress=False)
    assert len(ds.cache) == len(df)
    x, y = ds[1]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == 1
    ref = pipe(__import__("medcnn.io", fromlist=["read_image"]).read_image(df["path"][1])).tensor[0]
    assert torch.allclose(x, ref, atol=1e-3)  # uint16 cache is (nearly) lossless
    batch = ds.display_batch([0, 1])
    assert batch.shape == (2, 32, 32) and 0 <= batch.min() and batch.max() <= 1


def test_dataset_unknown_label_and_bad_image(csv_set, tmp_path):
    pipe = Pipeline.from_config(default_config("CXR", 32))
    df = read_labels(csv_set)
    with pytest.raises(ValueError, match="OTHER"):
        ImageDataset(df, pipe, ["NORMAL", "PNEUMONIA"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UnsupportedImageError, match="bad.png"):
        DisplayCache(pipe).get(str(bad))


def test_augment_shape_range_determinism():
    aug = Augment(rotate=10, scale=0.1, translate=0.05, brightness=0.1, contrast=0.1, gamma=0.1,
                  noise=0.02, blur=0.8)
    x = torch.rand(4, 48, 40)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert aug(x[0], torch.Generator().manual_seed(0)).shape == (48, 40)
    assert torch.equal(Augment()(x), x)  # all off: identity


def test_augment_geometry_moves_content():
    x = torch.zeros(1, 33, 33)
    x[0, 16, 20] = 1.0
    rot = Augment(rotate=90)(x.repeat(16, 1, 1), torch.Generator().manual_seed(0))
    # rotations about the centre keep the blob's distance from the centre, and move it
    assert not torch.allclose(rot, x.repeat(16, 1, 1))
    flip = Augment(hflip=True)(x.repeat(64, 1, 1), torch.Generator().manual_seed(0))
    flipped = flip[:, 16, 12] > 0.5
    assert 10 < int(flipped.sum()) < 54  # about half of the batch is mirrored


def test_augment_rejects_bad_settings():
    with pytest.raises(ValueError, match="rotate"):
        Augment(rotate=-1)
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=1.5)
