"""`python -m medcnn info` and `preview`: output, privacy and clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from medcnn.__main__ import main

CT_SMALL = pydicom.data.get_testdata_file("CT_small.dcm")
IDENTIFIERS = ("CompressedSamples", "CT1", "1CT1", "JFK IMAGING")


def test_info_prints_metadata_without_identifiers(capsys):
    assert main(["info", CT_SMALL]) == 0
    out = capsys.readouterr().out
    assert "modality" in out and "CT" in out and "rescale_intercept" in out
    assert not any(s in out for s in IDENTIFIERS)
    assert main(["info", CT_SMALL, "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["modality"] == "CT" and meta["rows"] == meta["columns"] == 128
    assert meta["pixel_min"] < -800  # Hounsfield units: air around the body (-896 here)
    assert not any(s in json.dumps(meta) for s in IDENTIFIERS)


def test_info_bad_input_is_one_clear_line_not_a_traceback(tmp_path):
    bad = tmp_path / "notes.dcm"
    bad.write_text("this is not an image")
    proc = subprocess.run([sys.executable, "-m", "medcnn", "info", str(bad)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "not an image" in proc.stderr and "Accepted:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_preview_writes_one_png_per_step(tmp_path, capsys):
    out = tmp_path / "steps"
    assert main(["preview", CT_SMALL, "--out", str(out), "--task", "CT", "--size", "64", "--window", "40,400"]) == 0
    manifest = json.loads((out / "steps.json").read_text())
    assert [m["step"] for m in manifest] == ["window", "orient", "invert", "body_crop", "lung_crop", "crop_or_pad", "resize",
                                                   "normalize"]
    assert manifest[0]["params"]["source"] == "manual" and manifest[0]["params"]["center"] == 40.0
    for m in manifest:
        png = np.asarray(Image.open(out / m["file"]))
        assert png.dtype == np.uint8 and png.shape == tuple(m["shape"][-2:])
    assert np.asarray(Image.open(out / manifest[-2]["file"])).shape == (64, 64)


def test_preview_rejects_a_preset_on_a_png(tmp_path, capsys):
    png = tmp_path / "image"  # no extension: detected by content
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(png, format="PNG")
    assert main(["preview", str(png), "--out", str(tmp_path / "o"), "--window", "lung"]) == 2
    assert "Hounsfield" in capsys.readouterr().err
