"""Bootstrap resampling: i.i.d. rows or whole clusters (patients), and the intervals built from it.

Images of one patient (or slices of one scan) are correlated, so an i.i.d. bootstrap over
images gives intervals that are too narrow; the cluster bootstrap resamples whole groups
with replacement (Field & Welsh 2007, "Bootstrapping clustered data", JRSS B 69(3)).

Two intervals:

* :func:`percentile_ci`, the percentile interval (Efron & Tibshirani 1993, *An Introduction to the
  Bootstrap*, ch. 13), for statistics the plug-in estimates without a bias worth the name (AUC,
  sensitivity, Brier score, ...).
* :func:`basic_ci` for a statistic with a known bias, such as the binned expected calibration error
  (ECE): a sum of absolute values, so sampling noise only ever adds to it and the plug-in
  overestimates the true ECE (Kumar, Liang & Ma 2019, "Verified uncertainty calibration",
  NeurIPS). A resample repeats images, has fewer distinct ones, and adds that noise again, so the
  resamples' ECEs sit above the estimate by about the bias ``b`` (Efron & Tibshirani 1993, ch. 10:
  the bootstrap estimate of bias). The percentile interval then sits near ``truth + 2b``, and where
  ``b`` exceeds its half-width it lies wholly above its own estimate (the shipped cards had such
  entries). The BC and BCa percentile intervals (Efron & Tibshirani 1993, ch. 14; DiCiccio & Efron
  1996, "Bootstrap confidence intervals", Statist. Sci. 11(3)) do not mend this: their end points
  are quantiles of the resamples at levels ``Phi(z0 + (z0 +- z) / (1 - a (z0 +- z)))``, which
  bracket the estimate's own level ``Phi(z0)`` exactly when ``|z0| <= z``, i.e. exactly when the
  percentile interval contains it; and, being quantiles of resampled ECEs, they can never reach a
  true ECE below every resample's (a well-calibrated model's 0). The basic bootstrap interval
  (Davison & Hinkley 1997, *Bootstrap Methods and their Application*, sec. 5.2) reads the
  resamples' spread around the estimate as the estimate's around the truth and so corrects the
  bias: ``[2 est - q_hi, 2 est - q_lo]``. It is kept within the statistic's range and, where the
  correction moves the whole interval past the (biased) estimate, widened to reach it, so the
  interval always contains the number printed beside it; widening can only raise coverage.
  Measured (``benchmarks/bench_ece_interval.py``: simulated models with a known population ECE,
  10 bins, n = 100, 200 data sets of 500 resamples; mildly miscalibrated / over-confident), share
  of data sets whose interval covers the true ECE: percentile 39 % / 14 %, BC 76 % / 65 %, BCa
  77 % / 65 %, basic 88 % / 86 %. For a calibrated model (true ECE 0, on the statistic's
  boundary, where no bootstrap interval is accurate): 0 %, 0 %, 0 %, 63 %.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["basic_ci", "mean_ci", "percentile_ci", "resample_indices", "statistic_ci"]


def resample_indices(n: int, n_boot: int, rng: np.random.Generator,
                     groups: Sequence[Any] | np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Index arrays of ``n_boot`` bootstrap resamples of ``n`` rows.

    Args:
        n: Number of rows.
        n_boot: Number of resamples.
        rng: Random generator (consumed: one ``integers`` draw per resample).
        groups: (N,) cluster id per row. When given, each resample draws as many groups as
            there are, with replacement, and takes all rows of each drawn group (in row
            order), so a resample may have more or fewer than ``n`` rows.

    Yields:
        int64 index arrays into the ``n`` rows.
    """
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(inverse.max() + 2))
    members = [order[bounds[g]:bounds[g + 1]] for g in range(len(bounds) - 1)]
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        yield np.concatenate([members[g] for g in pick])


def percentile_ci(values: Sequence[float], n_boot: int, alpha: float = 0.05) -> list[float] | None:
    """``[low, high]`` percentile interval of bootstrap ``values``, or None when too few are defined.

    Args:
        values: The statistic on each resample where it was defined.
        n_boot: Resamples drawn; fewer than half of them defined (or fewer than 2) gives None,
            since the interval would describe an unrepresentative subset of resamples.
        alpha: 1 - coverage (0.05: 95 % interval).
    """
    if n_boot == 0 or len(values) < max(2, n_boot // 2):
        return None
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def basic_ci(values: Sequence[float], estimate: float | None, n_boot: int, alpha: float = 0.05,
             bounds: tuple[float, float] = (-math.inf, math.inf)) -> list[float] | None:
    """``[low, high]`` basic bootstrap interval of a biased statistic, containing its ``estimate``.

    ``[2 est - q(1 - alpha/2), 2 est - q(alpha/2)]`` with ``q`` the quantiles of ``values``
    (Davison & Hinkley 1997, sec. 5.2), clipped to ``bounds`` and widened to ``estimate`` where the
    bias correction moved the whole interval past it (see the module docstring for why, and for
    why not BC / BCa).

    Args:
        values: The statistic on each resample where it was defined.
        estimate: The statistic on the whole sample (None: undefined, and so is the interval).
        n_boot: Resamples drawn (fewer than half of them defined gives None, as in :func:`percentile_ci`).
        alpha: 1 - coverage (0.05: 95 % interval).
        bounds: The statistic's range, e.g. ``(0, 1)`` for the ECE.

    Returns:
        The interval, or None.
    """
    ci = percentile_ci(values, n_boot, alpha)
    if ci is None or estimate is None:
        return None
    est = float(estimate)
    low = max(bounds[0], min(2 * est - ci[1], est))
    high = min(bounds[1], max(2 * est - ci[0], est))
    return [float(low), float(high)]


def statistic_ci(statistic: Callable[[np.ndarray], float | None], n: int, *, n_boot: int = 1000,
                 seed: int = 0, groups: Sequence[Any] | np.ndarray | None = None,
                 alpha: float = 0.05) -> list[float] | None:
    """Percentile bootstrap interval of ``statistic(indices)``; resamples where it is None are skipped.

    Args:
        statistic: Function of an index array into the ``n`` rows, returning the statistic
            of those rows or None where it is undefined (e.g. AUC of a one-class resample).
        n: Number of rows.
        n_boot: Resamples.
        seed: Seed of ``numpy.random.default_rng``.
        groups: Optional (N,) cluster ids: cluster bootstrap (see :func:`resample_indices`).
        alpha: 1 - coverage.

    Returns:
        ``[low, high]`` or None (see :func:`percentile_ci`).
    """
    rng = np.random.default_rng(seed)
    values = [v for idx in resample_indices(n, n_boot, rng, groups) if (v := statistic(idx)) is not None]
    return percentile_ci(values, n_boot, alpha)


def mean_ci(values: Sequence[float] | np.ndarray, rng: np.random.Generator, n_boot: int = 1000,
            alpha: float = 0.05) -> list[float]:
    """Percentile bootstrap interval of the mean of i.i.d. ``values`` (one row per image).

    Args:
        values: (N,) finite numbers, N >= 1 (a single value gives ``[v, v]``).
        rng: Random generator (consumed: one ``choice`` draw of ``(n_boot, N)``).
        n_boot: Resamples.
        alpha: 1 - coverage.

    Raises:
        ValueError: no values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("the bootstrap needs at least one value")
    boots = rng.choice(v, size=(n_boot, v.size), replace=True).mean(1) if v.size > 1 else v
    return [float(np.percentile(boots, 100 * alpha / 2)), float(np.percentile(boots, 100 * (1 - alpha / 2)))]
