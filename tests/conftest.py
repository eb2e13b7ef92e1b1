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


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (the 2 cores are shared), restoring the setting after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
