"""The heat-map convention (medcnn.explain.normalize): sign step, percentile scaling, errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcnn.explain.normalize import evidence, normalize_heatmap

REPO = Path(__file__).resolve().parents[2]


def test_normalize_magnitude_and_positive_part():
    a = np.array([[-4.0, 2.0], [1.0, 0.0]])
    np.testing.assert_allclose(normalize_heatmap(a, clip_percentile=None), [[1, 0.5], [0.25, 0]])
    np.testing.assert_allclose(normalize_heatmap(a, signed=True, clip_percentile=None), [[0, 1], [0.5, 0]])
    out = normalize_heatmap(a)
    assert out.dtype == np.float32 and out.shape == (2, 2)


def test_normalize_percentile_clipping():
    a = np.linspace(0, 1, 1000).reshape(25, 40)
    a[0, 0] = 1000.0  # one outlier must not flatten the rest of the map
    h = normalize_heatmap(a, clip_percentile=99.0)
    assert h.max() == 1.0 and h[0, 0] == 1.0
    p99 = np.percentile(a, 99.0)
    np.testing.assert_allclose(h[10, 10], a[10, 10] / p99, rtol=1e-6)
    assert (h >= 1.0).sum() >= 10  # ~1 % of pixels saturate
    assert normalize_heatmap(a, clip_percentile=None)[10, 10] < 1e-3


def test_normalize_sparse_zero_and_errors():
    sparse = np.zeros((20, 20))
    sparse[3, 4] = 2.0  # 99.5th percentile is 0: fall back to the maximum
    assert normalize_heatmap(sparse)[3, 4] == 1.0
    assert not normalize_heatmap(np.zeros((4, 4))).any()
    assert not normalize_heatmap(-np.ones((4, 4)), signed=True).any()
    with pytest.raises(ValueError, match="NaN"):
        normalize_heatmap(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="clip_percentile"):
        normalize_heatmap(np.ones((2, 2)), clip_percentile=0)


def test_evidence_is_the_sign_step_of_normalize():
    a = np.array([[-4.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(evidence(a), [[4.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(evidence(a, signed=True), [[0.0, 2.0], [1.0, 0.0]])
    for signed in (False, True):  # normalize = evidence, then scaling (idempotent on evidence)
        np.testing.assert_array_equal(normalize_heatmap(evidence(a, signed=signed), signed=signed),
                                      normalize_heatmap(a, signed=signed))
    with pytest.raises(ValueError, match="NaN"):
        evidence(np.array([[np.inf]]))


def test_the_convention_imports_neither_matplotlib_nor_torch():
    code = ("import sys; import medcnn.explain.normalize\n"
            "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
