"""Fixtures of the scale-out tests: a folder of images with a broken file among good ones."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """``imgs/``: 6 PNGs of different sizes, a PNG named ``scan.dat`` (found by content), two PNGs in
    ``sub/``, a truncated PNG (an error row), ``photo.jpg`` holding text (named like an image: an
    error row, never silently left out), a CT and an MR DICOM from pydicom's bundled files (the CT
    model; an unsupported modality) and ``notes.txt`` (not an image: not scored)."""
    import pydicom.data

    root = tmp_path_factory.mktemp("scale") / "imgs"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:96, 0:96]
    for i in range(6):  # smooth shapes plus noise
        arr = 120 + 80 * np.sin(xx / (6 + i)) * np.cos(yy / 9) + rng.normal(0, 10, (96, 96))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)[: 80 + 3 * i]).save(root / f"g{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64)).astype(np.uint8)).save(root / "sub" / f"s{i}.png")
    (root / "scan.dat").write_bytes((root / "g1.png").read_bytes())
    (root / "broken.png").write_bytes((root / "g0.png").read_bytes()[:60])
    (root / "notes.txt").write_text("not an image\n")
    (root / "photo.jpg").write_text("a text file with an image's name\n")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), root / name)
    return root


@pytest.fixture(scope="session")
def shipped_weights() -> Path:
    """The shipped weights folder (both models, with their out-of-distribution gates)."""
    weights = REPO / "weights"
    if not (weights / "cxr_pneumonia.pt").is_file() or not (weights / "ct_covid.pt").is_file():
        pytest.skip(f"shipped weights not found in {weights}")
    return weights
