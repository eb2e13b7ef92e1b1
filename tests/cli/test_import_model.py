"""``python -m medcnn import-model``: the command, then ``predict`` and the app serving the import."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from medcnn.__main__ import main

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _png_bytes(size=96, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = (120 + 80 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 8, (size, size))).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("byo")
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), str(folder / "src.safetensors"))
    torch.set_num_threads(1)
    rc, out, err = _run(["import-model", "--arch", "torchvision:resnet18", "--weights", str(folder / "src.safetensors"),
                         "--labels", "NORMAL,PNEUMONIA", "--input-size", "64", "--check-images",
                         "--licence", "CC-BY-4.0 (as declared)", "--out", str(folder / "weights" / "byo.json")])
    assert rc == 0, err
    return folder, json.loads(out)


def test_import_model_prints_the_card_summary_and_writes_two_files(imported):
    folder, summary = imported
    assert sorted(p.name for p in (folder / "weights").iterdir()) == ["byo.json", "byo.safetensors"]
    assert summary["target_layer"] == "layer4" and summary["pixel_contract"]["normalize"] == "normalize_imagenet"
    assert "gradcam" in summary["explanations"]["passed"]
    card = json.loads((folder / "weights" / "byo.json").read_text())
    assert card["provenance"]["licence"] == "CC-BY-4.0 (as declared)"


def test_predict_serves_the_imported_card(imported, tmp_path):
    folder, _ = imported
    (tmp_path / "x.png").write_bytes(_png_bytes())
    rc, out, err = _run(["predict", str(tmp_path / "x.png"), "--model", str(folder / "weights" / "byo.json"),
                         "--json"])
    assert rc == 0, err
    assert "byo" in out and "PNEUMONIA" in out


def test_a_pickled_model_is_refused_with_the_reason(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None, num_classes=2), tmp_path / "whole.pt")
    rc, _, err = _run(["import-model", "--arch", "torchvision:resnet18", "--weights", str(tmp_path / "whole.pt"),
                       "--labels", "A,B", "--input-size", "64", "--out", str(tmp_path / "w" / "x.json")])
    assert rc == 2 and "--allow-pickle" in err and "arbitrary code" in err
    assert not (tmp_path / "w").exists()


def test_import_model_help_imports_no_torch():
    code = ("import sys\nfrom medcnn.__main__ import main\ntry:\n    main(['import-model', '--help'])\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "--allow-pickle" in out.stdout and out.stdout.strip().endswith("NO TORCH")


def test_the_analyze_page_serves_the_imported_model(imported):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    folder, _ = imported
    old = os.environ.get("MEDCNN_WEIGHTS_DIR")
    os.environ["MEDCNN_WEIGHTS_DIR"] = str(folder / "weights")
    try:
        at = AppTest.from_file(str(REPO / "pages/1_Analyze.py"), default_timeout=90)
        at.run()
        assert not at.exception, at.exception
        at.file_uploader[0].set_value(("chest.png", _png_bytes(), "image/png"))
        at.run()
        assert not at.exception, at.exception
        assert not at.error
        body = "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption]
                         + [m.label + " " + str(m.value) for m in at.metric])
        assert "byo" in body and "P(PNEUMONIA)" in body and "normalize_imagenet" in body
        assert any("Grad-CAM overlay" in c for img in at.image for c in img.captions)
    finally:
        if old is None:
            os.environ.pop("MEDCNN_WEIGHTS_DIR", None)
        else:
            os.environ["MEDCNN_WEIGHTS_DIR"] = old


def test_fit_ood_gates_the_imported_model_on_its_grad_cam_layer(imported, tmp_path):
    folder, _ = imported
    card = tmp_path / "byo.json"
    for name in ("byo.json", "byo.safetensors"):
        (tmp_path / name).write_bytes((folder / "weights" / name).read_bytes())
    lines = ["path,label,split"]
    for i in range(100):
        (tmp_path / f"i{i}.png").write_bytes(_png_bytes(64, seed=i))
        lines.append(f"i{i}.png,{'NORMAL' if i % 2 else 'PNEUMONIA'},{['train', 'train', 'val', 'test'][i % 4]}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    rc, _, err = _run(["fit-ood", "--model", str(card), "--data", str(tmp_path / "labels.csv"), "--components", "4",
                       "--n-transformed", "4", "--n-synthetic", "2"])
    assert rc == 0, err
    ood = json.loads(card.read_text())["ood"]
    assert ood["layers"] == ["layer4"] and (tmp_path / "byo.ood.pt").is_file()
