"""Dataset shortcut audit: can the labels be predicted without looking at anatomy?

For every image, :mod:`medcnn.audit.features` computes non-anatomical features (file
size and format, pixel grid, DICOM header fields, intensity statistics, border and
corner intensity, sharpness, bright burned-in text in the margins) plus the CSV's
acquisition columns (:data:`~medcnn.audit.features.ACQUISITION_COLUMNS`: view position,
detector size, source size/format/mode; never the label or label-derived columns).
A standardised logistic regression (and a small gradient-boosting model) is
cross-validated with patient-grouped, stratified K-fold; the out-of-fold AUC comes with
a 95 % bootstrap CI (resampling patients). An AUC well above 0.5 means the labels are
predictable from acquisition alone: the data is confounded and a CNN's test AUC on it
overstates what it learned about disease.

Feature sets scored: ``all`` (image + CSV metadata; the verdict), ``image_only`` (what
a network could see in the pixels and file; only when CSV metadata was used: the
difference shows how much of the confound lives in metadata such as ``view_position``)
and ``acquisition_only`` (``all`` without the :data:`CONTENT_GROUPS`).

Global intensity and sharpness statistics are not purely acquisition: ground-glass
opacity changes a CT slice's histogram, a large consolidation brightens a film. So the
report also gives ``acquisition_only`` and the cross-validated AUC of each feature group
alone (``features.group_cv_auc``); a high AUC from ``size``, ``file``, ``format``,
``border``, ``corner``, ``text`` or ``metadata`` features is the clearest sign of a
shortcut, while ``intensity`` or ``sharpness`` alone is a hint to check (the warning
says so).

The report also gives each feature's single-feature AUC and the logistic regression's
standardised coefficients, and the label balance within every subgroup column present
(view, sex, age band, source, detector, split, format), with a chi-square test.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medcnn.notices import quiet
from medcnn.audit.balance import label_balance
from medcnn.audit.features import (
    ACQUISITION_COLUMNS,
    LABEL_DERIVED_COLUMNS,
    encode_features,
    extract_features,
    feature_group,
    metadata_features,
)
from medcnn.audit.table import load_table
from medcnn.evaluation.metrics import auc_ci, roc_auc

__all__ = [
    "CONFOUND_CI_LOW",
    "CONTENT_GROUPS",
    "audit_dataset",
    "extract_features",
    "format_summary",
    "label_balance",
    "load_table",
]

#: A CI lower bound above this flags the data as confounded.
CONFOUND_CI_LOW = 0.6
#: Feature groups that can also move with the pathology itself (left out of ``acquisition_only``).
CONTENT_GROUPS = ("intensity", "sharpness")
_NEGATIVE_NAMES = re.compile(r"^(normal|no[_ -]?finding|non[-_ ]?\w*|neg\w*|no|0|false|healthy|benign)$", re.I)


# ------------------------------------------------------------------------ models
def _models(seed: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic_regression": make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                                             LogisticRegression(C=1.0, max_iter=5000)),
        "gradient_boosting": HistGradientBoostingClassifier(max_iter=100, max_depth=3, learning_rate=0.1,
                                                            min_samples_leaf=10, random_state=seed),
    }


def _cross_validate(x: pd.DataFrame, y: np.ndarray, groups: np.ndarray, folds: int, seed: int,
                    n_boot: int, models: Sequence[str] | None = None) -> dict[str, Any]:
    """Out-of-fold AUC (+ bootstrap CI) of each model, patient-grouped stratified K-fold."""
    from medcnn.training.data import grouped_kfold

    splits = grouped_kfold(pd.DataFrame({"label": y, "group": groups}), folds, seed)
    out: dict[str, Any] = {}
    for name, model in _models(seed).items():
        if models is not None and name not in models:
            continue
        oof = np.full(len(y), np.nan)
        for tr, va in splits:
            with quiet(Warning, reason="sklearn's convergence chatter on tiny folds"):
                model.fit(x.iloc[tr].to_numpy(), y[tr])
            oof[va] = model.predict_proba(x.iloc[va].to_numpy())[:, 1]
        out[name] = {"auc": roc_auc(y, oof), "auc_ci": auc_ci(y, oof, groups=groups, n_boot=n_boot, seed=seed)}
    return out


def _group_aucs(x: pd.DataFrame, y: np.ndarray, groups: np.ndarray, folds: int, seed: int,
                n_boot: int) -> dict[str, Any]:
    """Cross-validated logistic-regression AUC of each feature group alone."""
    by: dict[str, list[str]] = {}
    for c in x.columns:
        by.setdefault(feature_group(c), []).append(c)
    out = {}
    for g, cols in by.items():
        r = _cross_validate(x[cols], y, groups, folds, seed, n_boot, models=["logistic_regression"])
        out[g] = {"n_features": len(cols), **r["logistic_regression"]}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["auc"]))


def _feature_ranking(x: pd.DataFrame, y: np.ndarray, top: int) -> dict[str, Any]:
    """Single-feature AUCs and standardised LR coefficients (fit on all rows)."""
    from sklearn.linear_model import LogisticRegression

    single = []
    for name in x.columns:
        v = x[name].to_numpy()
        m = np.isfinite(v)
        if m.sum() < 4 or y[m].min() == y[m].max():
            continue
        auc = roc_auc(y[m], v[m])
        a, b = v[m][y[m] == 1], v[m][y[m] == 0]
        sd = math.sqrt((a.var() + b.var()) / 2)
        diff = float(a.mean() - b.mean())
        d = diff / sd if sd > 1e-12 else (math.copysign(math.inf, diff) if diff else 0.0)
        single.append({"feature": name, "group": feature_group(name), "auc": round(auc, 4),
                       "strength": round(abs(auc - 0.5), 4), "effect_size_d": d,
                       "higher_in": "positive" if diff > 0 else "negative"})
    # rank by |AUC - 0.5|, ties broken by the standardised mean difference
    single.sort(key=lambda r: (r["strength"], abs(r["effect_size_d"])), reverse=True)
    for r in single:
        r["effect_size_d"] = None if math.isinf(r["effect_size_d"]) else round(r["effect_size_d"], 3)
    xs = x.fillna(x.median()).to_numpy()
    sd = xs.std(0)
    xs = (xs - xs.mean(0)) / np.where(sd > 0, sd, 1.0)
    with quiet(Warning, reason="sklearn's convergence chatter: the coefficients only rank features"):
        lr = LogisticRegression(C=1.0, max_iter=5000).fit(xs, y)
    coefs = sorted(({"feature": n, "group": feature_group(n), "coef": round(float(c), 4)}
                    for n, c in zip(x.columns, lr.coef_[0])), key=lambda r: abs(r["coef"]), reverse=True)
    return {"single_feature_auc": single[:top], "lr_coefficients": coefs[:top]}


# ---------------------------------------------------------------------------- audit
def _choose_positive(labels: list[str], positive: str | None) -> str:
    """The positive label: ``positive`` when given, else the one of two labels not named like "normal"."""
    if positive is not None:
        if str(positive) not in labels:
            raise ValueError(f"positive label {positive!r} is not among the labels {labels}")
        return str(positive)
    if len(labels) != 2:
        raise ValueError(f"{len(labels)} labels {labels}: pass classes (two of them) or the positive "
                         "label (positive vs rest)")
    neg = [c for c in labels if _NEGATIVE_NAMES.match(c)]
    return next(c for c in labels if c not in neg) if len(neg) == 1 else sorted(labels)[1]


def audit_dataset(
    data: pd.DataFrame | str | os.PathLike | Sequence[str | os.PathLike],
    *,
    label_column: str = "label",
    positive: str | None = None,
    classes: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    max_images: int | None = None,
    split: str | None = None,
    meta: str | os.PathLike | None = None,
    n_boot: int = 1000,
    top: int = 10,
    progress: bool = False,
) -> dict[str, Any]:
    """Shortcut audit of a labelled image set (see the module docstring).

    Args:
        data: DataFrame (``path``, label column, optional ``group``) or labels.csv path(s).
        label_column: column holding the label.
        positive: positive label; default: the non-"normal"-looking one of two labels.
            With more than two labels it is scored positive vs rest.
        classes: keep only these labels.
        folds: cross-validation folds (grouped by patient / group, stratified).
        seed: seed of the folds, subsampling and bootstrap.
        max_images: random stratified subsample of this many images (speed).
        split: restrict to one split (default: all splits; more data, tighter CI).
        meta: extra per-image metadata CSV joined on ``path`` (e.g. view_positions.csv).
        n_boot: bootstrap resamples for the AUC CI.
        top: number of features listed in the rankings.
        progress: show a progress bar.

    Returns:
        JSON-ready dict: ``n``, ``labels``, ``positive``, ``feature_sets`` (``all``,
        ``image_only`` when CSV metadata was used, ``acquisition_only``; each with
        per-model out-of-fold ``auc`` / ``auc_ci`` and ``n_features``), ``best`` (the
        highest CI lower bound among ``all`` / ``image_only``),
        ``confounded`` (bool), ``warning`` (str or None), ``features`` (rankings),
        ``metadata_columns`` (CSV columns used as features), ``label_balance``,
        ``n_failed``, ``errors`` and ``seconds``.

    Raises:
        ValueError: fewer than two labels, too few images or groups for the folds.
    """
    import time

    t0 = time.perf_counter()
    df, labels, pos = _audit_table(data, label_column, positive, classes, split, meta, max_images, seed)
    raw, ok, errors = extract_features(df, progress=progress)
    df = df[ok].reset_index(drop=True)
    y = (df["label"] == pos).to_numpy().astype(int)
    if y.sum() < folds or (1 - y).sum() < folds:
        raise ValueError(f"too few images per class for {folds}-fold cross-validation "
                         f"({int(y.sum())} positive, {int((1 - y).sum())} other)")
    meta_cols, sets = _feature_sets(df, raw)
    groups = df["group"].astype(str).to_numpy() if "group" in df.columns else df["path"].to_numpy()
    results: dict[str, Any] = {}
    for name, x in sets.items():
        results[name] = {"n_features": int(x.shape[1]), **_cross_validate(x, y, groups, folds, seed, n_boot)}
    best_set, best_model, best = _best(results)
    confounded = bool(_ci_low(best) > CONFOUND_CI_LOW)
    ranking = _feature_ranking(sets["all"], y, top)
    ranking["group_cv_auc"] = _group_aucs(sets["all"], y, groups, folds, seed, max(200, n_boot // 5))
    return {
        "n": int(len(df)), "labels": labels, "positive": pos,
        "n_positive": int(y.sum()), "n_negative": int(len(y) - y.sum()),
        "n_groups": int(len(np.unique(groups))), "folds": int(folds), "seed": int(seed),
        "feature_sets": results,
        "best": {"feature_set": best_set, "model": best_model, **best},
        "confounded": confounded,
        "warning": _confound_warning(best_set, best_model, best, ranking, results) if confounded else None,
        "features": ranking, "metadata_columns": meta_cols,
        "label_balance": _label_balance(df, raw, pos),
        "n_failed": int((~ok).sum()), "errors": errors[:3],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _audit_table(data: Any, label_column: str, positive: str | None, classes: Sequence[str] | None,
                 split: str | None, meta: Any, max_images: int | None,
                 seed: int) -> tuple[pd.DataFrame, list[str], str]:
    """The rows to audit (label column renamed, stratified subsample), the labels and the positive one."""
    df = load_table(data, classes=classes, split=split, meta=meta)
    if label_column != "label":
        if label_column not in df.columns:
            raise ValueError(f"label column {label_column!r} not in the table")
        df["label"] = df[label_column].astype(str)
    labels = sorted(df["label"].unique())
    pos = _choose_positive(labels, positive)
    if max_images is not None and len(df) > max_images:
        from sklearn.model_selection import train_test_split

        df, _ = train_test_split(df, train_size=int(max_images), stratify=df["label"], random_state=seed)
        df = df.reset_index(drop=True)
    return df, labels, pos


def _feature_sets(df: pd.DataFrame, raw: pd.DataFrame) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """CSV acquisition columns used, and the design matrices ``all`` / ``image_only`` / ``acquisition_only``."""
    meta_cols = [c for c in ACQUISITION_COLUMNS if c in df.columns and c not in LABEL_DERIVED_COLUMNS
                 and df[c].nunique(dropna=True) > 1]
    meta_raw = pd.DataFrame([metadata_features(r, meta_cols) for r in df.to_dict("records")])
    x_img = encode_features(raw)
    x_all = encode_features(pd.concat([raw, meta_raw], axis=1)) if meta_cols else x_img
    sets = {"all": x_all}
    if meta_cols:
        sets["image_only"] = x_img
    acq = [c for c in x_all.columns if feature_group(c) not in CONTENT_GROUPS]
    if acq and len(acq) < x_all.shape[1]:
        sets["acquisition_only"] = x_all[acq]
    return meta_cols, sets


def _label_balance(df: pd.DataFrame, raw: pd.DataFrame, pos: str) -> dict[str, Any]:
    """Label balance per subgroup column, with the files' format and channel count as subgroups too."""
    bal_df = df.copy()
    bal_df["format"] = raw["format_"].to_numpy() if "format_" in raw else None
    bal_df["channels"] = raw["channels_"].to_numpy() if "channels_" in raw else None
    return label_balance(bal_df, pos)


def _ci_low(r: dict[str, Any]) -> float:
    """Lower CI bound of a model's AUC (the AUC itself when the CI is undefined)."""
    return (r["auc_ci"] or [r["auc"]])[0]


def _best(results: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(feature set, model, result) with the highest AUC CI lower bound, ``acquisition_only`` left out."""
    return max(((s, m, r) for s, res in results.items() for m, r in res.items()
                if isinstance(r, dict) and s != "acquisition_only"), key=lambda t: _ci_low(t[2]))


def _confound_warning(best_set: str, best_model: str, best: dict[str, Any], ranking: dict[str, Any],
                      results: dict[str, Any]) -> str:
    """The plain-language warning of a confounded set, naming the strongest features and groups."""
    feats = ", ".join(r["feature"] for r in ranking["single_feature_auc"][:3])
    strong = ", ".join(f"{g} {r['auc']:.2f}" for g, r in list(ranking["group_cv_auc"].items())[:3])
    warn = (f"WARNING: labels can be predicted without anatomy: confounded. {best_model} on "
            f"{best_set} non-anatomical features reaches AUC {best['auc']:.2f} "
            f"(95% CI lower bound {_ci_low(best):.2f} > {CONFOUND_CI_LOW}); strongest features: {feats}; "
            f"feature groups alone: {strong}.")
    acq_res = results.get("acquisition_only", {})
    acq_low = max((_ci_low(r) for r in acq_res.values() if isinstance(r, dict)), default=None)
    if acq_low is not None and acq_low <= CONFOUND_CI_LOW:
        warn += (" Without global intensity and sharpness statistics (which disease can change "
                 f"too) the CI lower bound is {acq_low:.2f}: check whether the signal is pathology.")
    return warn


def format_summary(report: dict[str, Any]) -> str:
    """Short human-readable summary of :func:`audit_dataset`'s report."""
    lines = [f"dataset audit: {report['n']} images ({report['n_positive']} {report['positive']} vs "
             f"{report['n_negative']} other), {report['n_groups']} groups, {report['folds']}-fold grouped CV"]
    for name, res in report["feature_sets"].items():
        parts = []
        for model, r in res.items():
            if isinstance(r, dict):
                ci = r["auc_ci"]
                parts.append(f"{model} AUC {r['auc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"  {name} ({res['n_features']} features): " + "; ".join(parts))
    if report["metadata_columns"]:
        lines.append(f"  CSV metadata used as features: {', '.join(report['metadata_columns'])}")
    groups = report["features"].get("group_cv_auc", {})
    if groups:
        lines.append("  AUC of each feature group alone: " + ", ".join(
            f"{g} {r['auc']:.2f}" for g, r in list(groups.items())[:8]))
    lines.append("  strongest single features (AUC):")
    for r in report["features"]["single_feature_auc"][:6]:
        lines.append(f"    {r['feature']:<28} {r['auc']:.3f}  (higher in {r['higher_in']})")
    skewed = [(k, v) for k, v in report["label_balance"].items() if v["chi2_p"] is not None and v["chi2_p"] < 0.01]
    for k, v in skewed:
        shares = ", ".join(f"{g}: {d['positive_share']:.0%} of {d['n']}" for g, d in list(v["groups"].items())[:6])
        lines.append(f"  label balance differs by {k} (p={v['chi2_p']:.1g}): share {report['positive']} {shares}")
    if report["n_failed"]:
        lines.append(f"  {report['n_failed']} image(s) could not be read and were skipped")
    lines.append(report["warning"] or "  no strong shortcut found (AUC CI lower bound <= "
                 f"{CONFOUND_CI_LOW}); this does not prove the data is free of confounds")
    return "\n".join(lines)
