"""Bootstrap resampling: i.i.d. rows or whole clusters (patients), and percentile intervals.

Images of one patient (or slices of one scan) are correlated, so an i.i.d. bootstrap over
images gives intervals that are too narrow; the cluster bootstrap resamples whole groups
with replacement (Field & Welsh 2007, "Bootstrapping clustered data", JRSS B 69(3)).
The interval is the percentile interval (Efron & Tibshirani 1993, ch. 13).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["mean_ci", "percentile_ci", "resample_indices", "statistic_ci"]


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
