"""Data-parallel training: ``torchrun --nproc_per_node=2 -m medcnn train`` (gloo, CPU) trains the
model a single process trains, for the same global batch and seed.

The runs use SGD: its update is linear in the gradient, so the float-rounding differences of the
two runs (gradients all-reduced in another order) stay at rounding level. Adam divides by
sqrt(v), which turns rounding noise in near-zero gradients into updates of size ``lr``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medcnn.__main__ import main
from medcnn.distributed.ddp import World, share_scale

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    """24 train + 8 val noisy 40x40 PNGs, PNEUMONIA brighter, two view positions."""
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    rows = ["path,label,split,patient_id,view_position"]
    (root / "img").mkdir()
    for i in range(32):
        label = "PNEUMONIA" if i % 3 == 0 else "NORMAL"
        arr = rng.integers(0, 150, (40, 40)) + (40 if label == "PNEUMONIA" else 0)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{label},{'val' if i >= 24 else 'train'},p{i},{'AP' if i % 4 < 2 else 'PA'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _args(root: Path, out: str, extra: list[str], labels: tuple[str, ...] = ("--classes", "NORMAL,PNEUMONIA"),
          quiet: bool = True) -> list[str]:
    return ["train", "--data", str(root / "labels.csv"), *labels, "--arch", "simplecnn",
            "--size", "32", "--epochs", "2", "--n-boot", "20", *(["--quiet"] if quiet else []), "--patience", "0",
            "--threads", "1", "--optimizer", "sgd", "--lr", "0.01", "--seed", "3", "--out", str(root / out / "m.pt"),
            "--json-out", str(root / out / "result.json"), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    ["--batch-size", "8", "--imbalance", "oversample"],  # the label-balanced sampler
    ["--batch-size", "7", "--imbalance", "class_weight", "--balance-by", "view_position"],  # grouped, odd shares
], ids=["balanced-sampler", "grouped-sampler-odd-batch"])
def test_torchrun_two_processes_train_the_single_process_model(tiny_set, extra, monkeypatch):
    name = "-".join(extra[1::2])
    monkeypatch.chdir(tiny_set)
    assert main(_args(tiny_set, f"one-{name}", extra)) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "medcnn", *_args(tiny_set, f"two-{name}", extra)]
    proc = subprocess.run(cmd, cwd=tiny_set, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = tiny_set / f"one-{name}", tiny_set / f"two-{name}"
    # rank 0 alone wrote the checkpoint and the card, and said so once
    assert sorted(p.name for p in two.iterdir()) == ["m.json", "m.pt", "result.json"]
    assert proc.stdout.count("wrote ") == 1, proc.stdout[-3000:]
    a = torch.load(one / "m.pt", weights_only=True)
    b = torch.load(two / "m.pt", weights_only=True)
    assert sorted(a) == sorted(b)  # the registry's plain layers: the same checkpoint keys
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-4, msg=f"weight {k}")
    ha, hb = (json.loads((d / "result.json").read_text()) for d in (one, two))
    assert ha["best_epoch"] == hb["best_epoch"]
    for ra, rb in zip(ha["history"], hb["history"], strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
    ca, cb = (json.loads((d / "m.json").read_text()) for d in (one, two))
    assert cb["threshold"] == pytest.approx(ca["threshold"], abs=1e-4)
    assert cb["temperature"] == pytest.approx(ca["temperature"], rel=1e-3)


@pytest.fixture(scope="module")
def findings_set(tmp_path_factory) -> Path:
    """24 train + 8 val noisy 40x40 PNGs with two findings: 'Bright' (a brighter film, in a '|'-list
    column) and 'Bar' (a bright band, a 0/1 column left empty, i.e. unknown, for every third train row)."""
    root = tmp_path_factory.mktemp("ddp_findings")
    rng = np.random.default_rng(1)
    rows = ["path,label,findings,bar,split,patient_id"]
    (root / "img").mkdir()
    for i in range(32):
        bright, bar = i % 2 == 1, (i // 2) % 2 == 1
        arr = rng.integers(0, 150, (40, 40)) + (40 if bright else 0)
        if bar:
            arr[:, 6:12] += 60
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        split = "val" if i >= 24 else "train"
        known = split == "val" or i % 3
        rows.append(f"img/{i}.png,X,{'Bright' if bright else 'No Finding'},{int(bar) if known else ''},{split},p{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


#: ``sitecustomize`` of the torchrun processes: an audit hook (PEP 578) that logs, per rank, every file
#: opened for writing (and every rename) under a watched folder.
_WRITE_LOG = """\
import os, sys

_LOG, _WATCH = os.environ["MEDCNN_TEST_WRITE_LOG"], os.environ["MEDCNN_TEST_WATCH"]


def _log_writes(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
        writes = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
    elif event == "os.rename":
        path, writes = os.fsdecode(args[1]), True
    else:
        return
    if writes and path.startswith(_WATCH):
        with open(_LOG, "a") as f:
            f.write(os.environ.get("RANK", "-") + " " + os.path.relpath(path, _WATCH) + "\\n")


sys.addaudithook(_log_writes)
"""


@pytest.mark.slow
def test_torchrun_two_processes_train_the_single_process_findings_model(findings_set, monkeypatch):
    """A multi-label (sigmoid) run under torchrun: rank 0 alone writes the checkpoint, the card and the
    progress, and the two processes train the model one process trains.

    Tolerance: the two runs differ only in how float32 gradients are summed (each rank's share, then
    the all-reduce), about 1e-7 relative per step; SGD's update is linear in the gradient, so over the
    run's 8 steps the weights stay within 1e-4 (a thousand times that rounding). One share of a batch
    weighted wrongly (by its rows instead of its known labels) moves weights by about lr * gradient,
    1e-3 and more, and fails the comparison.
    """
    root = findings_set
    monkeypatch.chdir(root)
    labels = ("--findings", "Bright,Bar=bar", "--findings-column", "findings")
    extra = ["--batch-size", "7", "--imbalance", "class_weight", "--device", "cpu"]  # odd shares (4 + 3 rows)
    assert main(_args(root, "one", extra, labels)) == 0
    two_args = _args(root, "two", extra, labels, quiet=False)  # with progress bars
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_WRITE_LOG)
    writes = root / "writes.log"
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1",
           "MEDCNN_TEST_WRITE_LOG": str(writes), "MEDCNN_TEST_WATCH": str(root / "two")}
    logs = root / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--log-dir", str(logs), "--redirects", "3", "-m", "medcnn", *two_args]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    out = {p.parent.name: p.read_text() for p in logs.rglob("stdout.log")}
    err = {p.parent.name: p.read_text() for p in logs.rglob("stderr.log")}
    assert proc.returncode == 0, (proc.stderr[-2000:], err)
    one, two = root / "one", root / "two"
    # rank 0 alone wrote the checkpoint, the card and the summary, each once, and said so once
    assert sorted(p.name for p in two.iterdir()) == ["m.json", "m.pt", "result.json"]
    # (torch.save opens m.pt in C++, unseen by the hook; the card is written right after it, by the same call)
    written = sorted(writes.read_text().splitlines())
    assert written == ["0 m.json", "0 result.json"], written
    assert sorted(out) == ["0", "1"]
    assert out["0"].count("wrote ") == 1 and out["0"].count("epoch   2/2") == 1, out["0"][-3000:]
    assert "mean val AUC over findings" in out["0"]
    assert "decode" in err["0"]  # rank 0's image-decoding progress bar
    assert out["1"] == "", out["1"][-3000:]  # no progress lines, no summary
    assert "decode" not in err["1"] and "wrote" not in err["1"], err["1"][-3000:]
    a = torch.load(one / "m.pt", weights_only=True)
    b = torch.load(two / "m.pt", weights_only=True)
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-4, msg=f"weight {k}")
    ha, hb = (json.loads((d / "result.json").read_text()) for d in (one, two))
    assert ha["best_epoch"] == hb["best_epoch"]
    for ra, rb in zip(ha["history"], hb["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_auc", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
    ca, cb = (json.loads((d / "m.json").read_text()) for d in (one, two))
    assert cb["head"] == ca["head"] == "sigmoid" and list(cb["findings"]) == ["Bright", "Bar"]
    for name in ("Bright", "Bar"):
        assert cb["findings"][name]["threshold"] == pytest.approx(ca["findings"][name]["threshold"], abs=1e-4)
        assert cb["findings"][name]["temperature"] == pytest.approx(ca["findings"][name]["temperature"], rel=1e-3)


@pytest.mark.parametrize("n,size,expected", [
    (8, 2, [(0, 4), (4, 8)]), (7, 2, [(0, 4), (4, 7)]), (3, 2, [(0, 2), (2, 3)]), (10, 3, [(0, 4), (4, 7), (7, 10)]),
])
def test_shares_are_contiguous_and_cover_the_batch(n, size, expected):
    assert [World(r, size).share(n) for r in range(size)] == expected


def test_share_scales_make_ddp_average_the_global_mean():
    """sum over ranks of scale_r * mean_r / size == the global batch's mean loss."""
    torch.manual_seed(0)
    logits, y = torch.randn(7, 2), torch.tensor([0, 1, 1, 0, 0, 0, 1])
    for loss_fn in (torch.nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(weight=torch.tensor([0.7, 2.0]))):
        total = 0.0
        for r in range(2):
            w = World(r, 2)
            s, e = w.share(7)
            total += share_scale(loss_fn, y.numpy(), s, e, w) * float(loss_fn(logits[s:e], y[s:e])) / 2
        assert total == pytest.approx(float(loss_fn(logits, y)), rel=1e-6)
    assert share_scale(torch.nn.CrossEntropyLoss(), [0, 1], 0, 1, World()) == 1.0


def test_share_scales_of_the_masked_loss_count_known_labels():
    """The masked multi-label loss is a mean over known labels: a share's weight is its known-label
    count, not its row count (rank 0's 4 rows hold 3 known labels, rank 1's 3 rows hold 5)."""
    from medcnn.training.multilabel import MaskedBCE

    nan = float("nan")
    y = torch.tensor([[1, nan], [nan, nan], [0, nan], [1, nan], [0, 1], [1, 0], [nan, 1]])
    logits = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    for loss_fn in (MaskedBCE(), MaskedBCE(torch.tensor([2.0, 0.5]))):
        scales = [share_scale(loss_fn, y.numpy(), *World(r, 2).share(7), World(r, 2)) for r in range(2)]
        assert scales == pytest.approx([2 * 3 / 8, 2 * 5 / 8])
        total = sum(sc * float(loss_fn(logits[s:e], y[s:e])) / 2
                    for sc, (s, e) in zip(scales, (World(0, 2).share(7), World(1, 2).share(7))))
        assert total == pytest.approx(float(loss_fn(logits, y)), rel=1e-6)
    # no known label in the batch: no rank's loss counts
    assert share_scale(MaskedBCE(), np.full((4, 2), np.nan), 0, 2, World(0, 2)) == 0.0
