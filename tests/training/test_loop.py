"""Tests of medcnn.training.loop and ``python -m medcnn train`` on a tiny synthetic set."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medcnn.__main__ import main
from medcnn.io import read_image
from medcnn.models import load_model
from medcnn.preprocess import Pipeline
from medcnn.training.loop import TrainConfig, cross_validate, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """36 PNGs 32x32: class BLOB has a bright Gaussian blob, NONE is noise only; plus a test split."""
    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    rows = []
    for i in range(36):
        label = "BLOB" if i % 2 else "NONE"
        img = rng.normal(70, 12, (32, 32))
        if label == "BLOB":
            cy, cx = rng.integers(9, 23, 2)
            img += 140 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{i}.png")
        split = "train" if i < 24 else ("val" if i < 32 else "test")
        rows.append({"path": f"{i}.png", "label": label, "split": split, "patient_id": f"p{i // 2:03d}",
                     "view": "AP" if i % 4 < 2 else "PA"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _cfg(csv, tmp_path, **kw):
    base = dict(data=[str(csv)], classes=["NONE", "BLOB"], positive="BLOB", arch="simplecnn", size=32,
                epochs=2, batch_size=8, lr=3e-3, schedule="fixed", progress=False, n_boot=50,
                out=str(tmp_path / "w" / "blob.pt"), val_by="view")
    base.update(kw)
    return TrainConfig(**base)


def test_train_lowers_loss_and_roundtrips(blobs, tmp_path):
    res = train(_cfg(blobs, tmp_path))
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    card_path = tmp_path / "w" / "blob.json"
    assert res.card_path == card_path and (tmp_path / "w" / "blob.pt").is_file()
    assert not (tmp_path / "w" / "blob.state.pt").exists()  # only with save_state
    card = json.loads(card_path.read_text())
    assert card["labels"] == ["NONE", "BLOB"] and card["positive_label"] == "BLOB"
    assert card["input_size"] == [32, 32] and card["target_layer"] == "block3"
    assert card["training"]["split_counts"] == {"train": {"BLOB": 12, "NONE": 12}, "val": {"BLOB": 4, "NONE": 4}}
    assert card["training"]["test_rows_excluded"] == 4
    assert card["metrics"]["val"]["auc"] is not None and "by_view" in card["metrics"]["val"]
    assert len(card["training"]["history"]) == 2 and "val_auc_by" in card["training"]["history"][0]
    # simplecnn trains channels-last on the CPU; the returned model carries no trace of it
    assert res.model.block2[0].weight.is_contiguous()
    assert not [k for k in vars(res.model) if k.startswith("_medcnn")]

    model, loaded_card = load_model(card_path, device="cpu")
    pipe = Pipeline.from_config(loaded_card.preprocessing)
    x = torch.cat([pipe(read_image(blobs.parent / f"{i}.png")).tensor for i in range(32, 36)])
    with torch.no_grad():
        assert torch.equal(model(x), res.model(x))


def test_training_is_deterministic(blobs, tmp_path):
    kw = dict(epochs=1, out=None)
    a = train(_cfg(blobs, tmp_path, augment={"rotate": 10, "noise": 0.02}, imbalance="oversample", **kw))
    b = train(_cfg(blobs, tmp_path, augment={"rotate": 10, "noise": 0.02}, imbalance="oversample", **kw))
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_resume_continues(blobs, tmp_path):
    full = train(_cfg(blobs, tmp_path, epochs=2, out=str(tmp_path / "full.pt"), save_state=True,
                      patience=0))
    part = train(_cfg(blobs, tmp_path, epochs=1, out=str(tmp_path / "part.pt"), save_state=True,
                      patience=0))
    assert (tmp_path / "part.state.pt").is_file()
    resumed = train(_cfg(blobs, tmp_path, epochs=2, out=str(tmp_path / "res.pt"),
                         resume=str(tmp_path / "part.state.pt"), patience=0))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-5)
    assert part.history[0]["train_loss"] == full.history[0]["train_loss"]


@pytest.mark.parametrize("imbalance,schedule,optimizer", [
    ("class_weight", "exponential", "sgd"), ("focal", "onecycle", "adam"),
    ("none", "warm_restarts", "adamw"), ("none", "inverse_time", "adamw"),
])
def test_options_run(blobs, tmp_path, imbalance, schedule, optimizer):
    res = train(_cfg(blobs, tmp_path, epochs=1, out=None, imbalance=imbalance, schedule=schedule,
                     optimizer=optimizer, balance_by="view", arch="tinyresnet"))
    assert np.isfinite(res.history[0]["train_loss"])


def test_cross_validate(blobs, tmp_path):
    out = cross_validate(_cfg(blobs, tmp_path, epochs=1, folds=3, out=None))
    assert len(out["folds"]) == 3 and sum(f["n_val"] for f in out["folds"]) == 32  # test rows untouched
    assert {"mean", "sd"} <= set(out["summary"]["auc"])


def test_cli_train_and_errors(blobs, tmp_path, capsys):
    out = tmp_path / "cli" / "m.pt"
    rc = main(["train", "--data", str(blobs), "--classes", "NONE,BLOB", "--positive", "BLOB", "--arch", "simplecnn",
               "--size", "32", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--quiet",
               "--aug-rotate", "5", "--n-boot", "20"])
    assert rc == 0 and out.with_suffix(".json").is_file()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["augmentation"] == {"rotate": 5.0}
    assert "--aug-rotate" in card["training"]["command"]
    assert "best epoch" in capsys.readouterr().out

    assert main(["train", "--data", str(blobs), "--classes", "NONE,CAT", "--out", str(out), "--quiet"]) == 2
    assert "CAT" in capsys.readouterr().err
    assert main(["train", "--data", str(blobs), "--arch", "resnet19", "--out", str(out), "--quiet"]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(out), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err


def test_monitor_last_keeps_the_final_epoch(blobs, tmp_path):
    """An epoch count chosen by cross-validation: no choice on the validation split."""
    res = train(_cfg(blobs, tmp_path, epochs=3, monitor="last", patience=0, out=None))
    assert res.best_epoch == 3 and len(res.history) == 3
