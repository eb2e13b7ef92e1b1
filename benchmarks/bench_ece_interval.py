"""Coverage of bootstrap intervals of the expected calibration error (ECE) on simulated models.

Claim (``medcnn/evaluation/bootstrap.py``): the plug-in ECE is biased upwards, the percentile
interval covers the true ECE far less often than 95 %, BC / BCa do not mend it, and the basic
interval (widened to contain its estimate, :func:`medcnn.evaluation.bootstrap.basic_ci`) does.

Method: a model's probabilities ``p ~ Beta(a, b)`` and outcomes ``y ~ Bernoulli(c(p))`` for a known
calibration map ``c``; the true (population) ECE with the package's 10 equal-width bins is
computed from 4 million draws. For each of ``--datasets`` data sets of ``n`` images, ``--boot``
i.i.d. resamples give the intervals; coverage = share of data sets whose interval contains the true
ECE, "contains est." = share containing the data set's own plug-in ECE. BC / BCa (Efron &
Tibshirani 1993, ch. 14; acceleration from the jackknife) are computed here for comparison only.
Baseline: the percentile interval (what the package used before); the ratio is the basic
interval's coverage over the percentile interval's.

Usage::

    python benchmarks/bench_ece_interval.py [--datasets 200] [--boot 500]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcnn.evaluation.bootstrap import basic_ci, percentile_ci  # noqa: E402
from medcnn.evaluation.metrics import expected_calibration_error as ece  # noqa: E402

#: name -> (calibration map c(p), Beta a, Beta b)
SCENARIOS = {
    "calibrated": (lambda p: p, 2, 5),
    "mildly miscalibrated": (lambda p: p ** 1.25, 2, 5),
    "over-confident": (lambda p: 0.5 + 0.6 * (p - 0.5), 2, 3),
    "strongly miscalibrated": (lambda p: p ** 2, 2, 2),
}


def true_ece(calib, a: float, b: float, n: int = 4_000_000, seed: int = 123) -> float:
    """Population ECE (10 equal-width bins): sum over bins of |E[c(p) - p; bin]|."""
    p = np.random.default_rng(seed).beta(a, b, n)
    idx = np.clip((p * 10).astype(np.int64), 0, 9)
    return float(np.abs(np.bincount(idx, calib(p), 10) - np.bincount(idx, p, 10)).sum() / n)


def bc_bca(boots: np.ndarray, est: float, jack: np.ndarray, alpha: float = 0.05) -> dict[str, tuple]:
    frac = min(max((np.sum(boots < est) + 0.5 * np.sum(boots == est)) / boots.size, 0.5 / boots.size),
               1 - 0.5 / boots.size)
    z0, z = norm.ppf(frac), norm.ppf([alpha / 2, 1 - alpha / 2])
    d = jack.mean() - jack
    acc = float((d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5)) if (d ** 2).sum() > 0 else 0.0
    return {"BC": tuple(np.quantile(boots, norm.cdf(2 * z0 + z))),
            "BCa": tuple(np.quantile(boots, norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))))}


def run(n: int, datasets: int, n_boot: int) -> None:
    for name, (calib, a, b) in SCENARIOS.items():
        truth = true_ece(calib, a, b)
        rng = np.random.default_rng(0)
        tally: dict[str, list[float]] = {}
        for _ in range(datasets):
            p = rng.beta(a, b, n)
            y = (rng.random(n) < calib(p)).astype(np.int64)
            est = ece(y, p)
            boots = np.array([ece(y[i], p[i]) for i in (rng.integers(0, n, n) for _ in range(n_boot))])
            jack = np.array([ece(np.delete(y, i), np.delete(p, i)) for i in range(n)])
            intervals = {"percentile": tuple(percentile_ci(boots, n_boot)),
                         **bc_bca(boots, est, jack),
                         "basic (basic_ci)": tuple(basic_ci(boots, est, n_boot, bounds=(0.0, 1.0)))}
            for k, (lo, hi) in intervals.items():
                tally.setdefault(k, []).append((lo <= truth <= hi, lo <= est <= hi, hi - lo))
        print(f"n={n}  {name}: true ECE {truth:.4f}")
        for k, rows in tally.items():
            cov, contains, width = (float(np.mean(c)) for c in zip(*rows))
            print(f"    {k:17s} coverage {cov:.3f}   contains est. {contains:.3f}   mean width {width:.4f}")
        cov = {k: float(np.mean([r[0] for r in rows])) for k, rows in tally.items()}
        if cov["percentile"] > 0:
            print(f"    ratio coverage basic / percentile: {cov['basic (basic_ci)'] / cov['percentile']:.2f}")
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--boot", type=int, default=500)
    ap.add_argument("--n", type=int, nargs="+", default=[100, 300])
    args = ap.parse_args()
    for n in args.n:
        run(n, args.datasets, args.boot)


if __name__ == "__main__":
    main()
