"""Shared test fixtures. Real data is read from ../shared/data (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDCNN_SHARED_DATA", REPO.parent / "shared" / "data"))
WEIGHTS = REPO / "weights"

# Tests share 2 CPU cores with everything else: keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The app's computations (medcnn.app.compute) run with this many torch threads: one, like the tests.
os.environ.setdefault("MEDCNN_TORCH_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data, or skip when it is absent (a user's fresh clone)."""
    if not (SHARED_DATA / "DATASETS.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data is only present in CI "
                    "and on the developers' machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dicom_samples(shared_data: Path) -> Path:
    return shared_data / "dicom_samples"


def write_png(path: Path, value: int = 100, size: int = 32) -> Path:
    """A greyscale PNG: the top half ``255 - value``, the bottom half ``value``."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size), value, np.uint8)
    arr[: size // 2] = 255 - value
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def png():
    """:func:`write_png`, for tests that build image folders."""
    return write_png


@pytest.fixture
def csv_set(tmp_path: Path) -> Path:
    """``setA/labels.csv``: 5 PNGs (NORMAL, PNEUMONIA, OTHER in train; NORMAL val; PNEUMONIA test)."""
    import pandas as pd

    root = tmp_path / "setA"
    rows = []
    for i, (lab, split) in enumerate([("NORMAL", "train"), ("PNEUMONIA", "train"), ("OTHER", "train"),
                                      ("NORMAL", "val"), ("PNEUMONIA", "test")]):
        write_png(root / "img" / f"{i}.png", 20 * i + 10)
        rows.append({"path": f"img/{i}.png", "label": lab, "split": split,
                     "patient_id": f"{i:08d}", "view_position": "AP" if i % 2 else "PA"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (the 2 cores are shared), restoring the setting after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test starts with one torch thread (2 shared cores) and leaves the setting as it found it,
    so no test module changes global state for the others."""
    import sys

    if "torch" not in sys.modules:  # tests that never import torch pay nothing
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

