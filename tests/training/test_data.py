"""Tests of medcnn.training.data (grouped K-fold, cached dataset) and medcnn.training.augment.

Reading labels.csv files and class folders is tested with its owner, in tests/evaluation/test_labels.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import medcnn.evaluation.labels as labels_module
from medcnn.io import UnsupportedImageError, read_image
from medcnn.preprocess import Pipeline, default_config
from medcnn.training.augment import Augment
from medcnn.training.data import DisplayCache, ImageDataset, grouped_kfold, read_labels


def test_read_labels_is_the_evaluation_one():
    # one owner of the labelled-set policy; this import path stays for callers
    assert read_labels is labels_module.read_labels


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
    ref = pipe(read_image(df["path"][1])).tensor[0]
    assert torch.allclose(x, ref, atol=1e-3)  # uint16 cache is (nearly) lossless
    batch = ds.display_batch([0, 1])
    assert batch.shape == (2, 32, 32) and 0 <= batch.min() and batch.max() <= 1
    # the model input of a batch is the stacked items (what predict_dataset feeds the network)
    tensors = ds.tensor_batch([0, 1])
    assert tensors.shape == (2, 1, 32, 32) and torch.allclose(tensors[1], x, atol=1e-6)


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


def test_augment_acquisition_share_keeps_geometry_and_masks():
    """Another scanner's look on about the stated share of films, never moving a pixel's place."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, 64).repeat(200, 1, 1) * 0.6 + 0.2
    masks = torch.zeros(200, 64, 64)
    masks[:, 20:40, 10:30] = 1.0
    out, mk = Augment(acquisition=0.3)(x, g, masks=masks)
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert 0.2 < float(changed.float().mean()) < 0.4
    assert torch.equal(mk, masks)  # in-frame changes only: labels drawn on the film stay put
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    again, _ = Augment(acquisition=0.3)(x, torch.Generator().manual_seed(0), masks=masks)
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="acquisition"):
        Augment(acquisition=1.5)


def test_in_frame_acquisition_changes_keep_size():
    import numpy as np

    from medcnn.ood.augment import IN_FRAME, acquisition_variant

    assert "crop" not in IN_FRAME and "rotation" not in IN_FRAME
    img = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    for seed in range(20):
        assert acquisition_variant(img, np.random.default_rng(seed), changes=IN_FRAME).shape == img.shape
    with pytest.raises(KeyError, match="unknown"):
        acquisition_variant(img, np.random.default_rng(0), changes=("tilt",))
