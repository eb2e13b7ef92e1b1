"""Label balance within subgroups (view, sex, age band, detector, source, format, ...).

Part of the dataset audit (:mod:`medcnn.audit`): a subgroup whose positive share differs
from the rest (chi-square test, Cramer's V) is a shortcut a network can learn, and the
per-subgroup metrics of ``evaluate --by`` are only comparable when each group has both
labels.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["label_balance", "subgroup_columns"]

_MAX_SUBGROUPS = 10  # subgroup values listed per column (rest -> "other")


def _age_band(v: Any) -> str:
    try:
        a = float(v)
    except (TypeError, ValueError):
        return "missing"
    if math.isnan(a):
        return "missing"
    return "<40" if a < 40 else ("40-60" if a < 60 else "60+")


def subgroup_columns(df: pd.DataFrame) -> dict[str, pd.Series]:
    out: dict[str, pd.Series] = {}
    for col in ("view_position", "sex", "patient_sex"):
        if col in df.columns:
            out[col] = df[col]
    for col in ("age", "patient_age"):
        if col in df.columns:
            out[f"{col}_band"] = df[col].map(_age_band)
    for a, b in (("nih_orig_width", "nih_orig_height"), ("orig_width", "orig_height")):
        if a in df.columns and b in df.columns:
            out["detector" if a.startswith("nih") else "orig_size"] = (
                df[a].astype(str).str.replace(r"\.0$", "", regex=True) + "x"
                + df[b].astype(str).str.replace(r"\.0$", "", regex=True))
    for col in ("detector", "source", "split", "mode", "orig_format", "modality", "manufacturer"):
        if col in df.columns and col not in out:
            out[col] = df[col]
    return out


def label_balance(df: pd.DataFrame, positive: str, min_count: int = 1) -> dict[str, Any]:
    """Label counts and positive share per value of every subgroup column present.

    Args:
        df: table with ``label`` and metadata columns (plus ``format`` / ``channels``
            from the images when added by the audit).
        positive: the positive label.

    Returns:
        ``{column: {"groups": {value: {"n", "counts", "positive_share"}}, "chi2_p",
        "cramers_v"}}``; columns with a single value are left out.
    """
    from scipy.stats import chi2_contingency

    cols = subgroup_columns(df)
    for extra in ("format", "channels"):
        if extra in df.columns:
            cols[extra] = df[extra]
    out: dict[str, Any] = {}
    for name, s in cols.items():
        s = s.fillna("missing").astype(str)
        if s.nunique() < 2:
            continue
        counts = s.value_counts()
        if counts.iloc[:_MAX_SUBGROUPS].sum() < 0.5 * len(s):
            continue  # mostly unique values (e.g. image sizes of figure crops): no subgroups
        s = s.where(s.isin(counts.index[:_MAX_SUBGROUPS]), "other")
        tab = pd.crosstab(s, df["label"])
        tab = tab.loc[tab.sum(axis=1).sort_values(ascending=False, kind="stable").index]
        groups = {}
        for value, row in tab.iterrows():
            n = int(row.sum())
            if n < min_count:
                continue
            groups[str(value)] = {"n": n, "counts": {str(k): int(v) for k, v in row.items()},
                                  "positive_share": round(float(row.get(positive, 0)) / n, 4)}
        entry: dict[str, Any] = {"groups": groups, "chi2_p": None, "cramers_v": None}
        if tab.shape[0] > 1 and tab.shape[1] > 1:
            chi2, p, _, _ = chi2_contingency(tab.to_numpy())
            k = min(tab.shape) - 1
            entry["chi2_p"] = float(p)
            entry["cramers_v"] = round(math.sqrt(chi2 / (tab.to_numpy().sum() * k)), 4)
        out[name] = entry
    return out
