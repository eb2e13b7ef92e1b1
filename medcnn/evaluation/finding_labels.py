"""Finding labels of a multi-label (findings) model: which finding each image shows, and which are unknown.

A label set rarely knows every finding for every image (RSNA's radiologists read "Lung Opacity";
NIH's text-mined labels list fourteen findings; neither knows the other's). Targets are therefore
a float matrix (N, C) with 1 / 0 where a finding is known and NaN where it is not.

Findings are named as ``NAME`` (present iff NAME is in the ``|``-separated findings column, e.g.
NIH's ``finding_labels_v2020``; an empty column = unknown) or ``NAME=COLUMN`` (a 0/1 column such
as RSNA's ``rsna_target``; empty = unknown). Training and evaluation select rows the same way
(:func:`prepare_rows`: excluded rows and duplicate images removed from every split).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["FindingSpec", "dedupe", "exclude_rows", "finding_counts", "finding_targets", "parse_findings",
           "prepare_rows", "specs_from_card"]

_TRUE = {"1", "1.0", "true", "yes", "y", "positive"}
_FALSE = {"0", "0.0", "false", "no", "n", "negative"}


@dataclass(frozen=True)
class FindingSpec:
    """One output of a multi-label model: its name and where its label comes from."""

    name: str
    column: str | None = None  # a 0/1 column; None: presence of ``name`` in the findings column

    @property
    def source(self) -> str:
        return f"column {self.column!r} (0/1)" if self.column else "findings list"


def parse_findings(items: Sequence[str]) -> list[FindingSpec]:
    """``["Atelectasis", "Lung Opacity=rsna_target"]`` -> specs.

    Raises:
        ValueError: empty or repeated names.
    """
    specs = []
    for item in items:
        name, sep, column = (s.strip() for s in str(item).partition("="))
        if not name or (sep and not column):
            raise ValueError(f"finding {item!r}: expected NAME or NAME=COLUMN")
        specs.append(FindingSpec(name, column or None))
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"a multi-label model needs >= 2 distinct findings, got {names}")
    return specs


def _binary(value: Any, column: str) -> float:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    s = str(value).strip().lower()
    if s in ("", "nan", "na"):
        return np.nan
    if s in _TRUE:
        return 1.0
    if s in _FALSE:
        return 0.0
    raise ValueError(f"column {column!r}: value {value!r} is not 0/1 (or empty for unknown)")


def finding_targets(df: pd.DataFrame, specs: Sequence[FindingSpec], findings_column: str | None) -> np.ndarray:
    """Targets (N, C) float32: 1 present, 0 absent, NaN unknown.

    Raises:
        ValueError: a named column is missing, or a 0/1 column holds other values.
    """
    out = np.full((len(df), len(specs)), np.nan, dtype=np.float32)
    lists = None
    if any(s.column is None for s in specs):
        if not findings_column or findings_column not in df.columns:
            raise ValueError(f"findings named without =COLUMN are read from the findings column, but "
                             f"{findings_column!r} is not in the labels; columns: {', '.join(map(str, df.columns))}")
        lists = [None if (v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip())
                 else {x.strip() for x in str(v).split("|")} for v in df[findings_column]]
    for j, spec in enumerate(specs):
        if spec.column is not None:
            if spec.column not in df.columns:
                raise ValueError(f"finding {spec.name!r}: column {spec.column!r} is not in the labels")
            out[:, j] = [_binary(v, spec.column) for v in df[spec.column]]
        else:
            out[:, j] = [np.nan if s is None else float(spec.name in s) for s in lists]
    return out


def finding_counts(targets: np.ndarray, splits: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{finding: {split: {"pos", "neg", "unknown"}}}`` (JSON-ready)."""
    splits = np.asarray(splits)
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        col = targets[:, j]
        out[name] = {str(s): {"pos": int(np.sum(col[splits == s] == 1)), "neg": int(np.sum(col[splits == s] == 0)),
                              "unknown": int(np.sum(np.isnan(col[splits == s])))} for s in sorted(set(splits))}
    return out


def _image_key(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        return None
    return PurePosixPath(str(value).replace("\\", "/")).name


def dedupe(df: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Drop rows showing an image already listed (first occurrence kept: order the CSVs by preference).

    The key of a row is the file name in the first non-empty of ``columns`` (e.g. the NIH image
    index, or a source path ending in it), so one image listed by two folders is trained and
    tested once.

    Raises:
        ValueError: no listed column exists; a duplicate crosses splits (a patient-split leak).
    """
    present = [c for c in columns if c in df.columns]
    if not present:
        raise ValueError(f"--dedupe-by: none of {list(columns)} is a column of the labels")
    keys = pd.Series([None] * len(df), index=df.index, dtype=object)
    for c in present:
        fill = df[c].map(_image_key)
        keys = keys.where(keys.notna(), fill)
    keys = keys.where(keys.notna(), df["path"])
    dup = keys.duplicated(keep="first")
    split_per_key = df.groupby(keys)["split"].nunique()
    leaking = split_per_key[split_per_key > 1]
    if len(leaking):
        raise ValueError(f"{len(leaking)} image(s) appear in two splits (e.g. {list(leaking.index[:3])}): "
                         f"the folders do not share one patient split")
    return df[~dup].reset_index(drop=True), int(dup.sum())


def exclude_rows(df: pd.DataFrame, rules: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop rows matching any rule ``COL=VALUE[&COL=VALUE...]``; returns the table and rows dropped per rule.

    Raises:
        ValueError: a malformed rule or an unknown column.
    """
    counts: dict[str, int] = {}
    keep = np.ones(len(df), dtype=bool)
    for rule in rules:
        hit = np.ones(len(df), dtype=bool)
        for cond in str(rule).split("&"):
            col, sep, val = (s.strip() for s in cond.partition("="))
            if not sep or not col:
                raise ValueError(f"--exclude {rule!r}: expected COLUMN=VALUE[&COLUMN=VALUE...]")
            if col not in df.columns:
                raise ValueError(f"--exclude {rule!r}: column {col!r} is not in the labels")
            hit &= df[col].astype(str).to_numpy() == val
        counts[str(rule)] = int((hit & keep).sum())
        keep &= ~hit
    return df[keep].reset_index(drop=True), counts


def prepare_rows(df: pd.DataFrame, exclude: Sequence[str], dedupe_by: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int], int]:
    """Excluded rows and duplicate images removed (every split), as training and evaluation both do."""
    df, excluded = exclude_rows(df, exclude) if exclude else (df, {})
    df, dups = dedupe(df, dedupe_by) if dedupe_by else (df, 0)
    return df, excluded, dups


def specs_from_card(training: dict[str, Any]) -> tuple[list[FindingSpec], str | None, list[str], list[str]]:
    """``(specs, findings column, exclude rules, dedupe columns)`` recorded by a multi-label training run.

    Raises:
        ValueError: the card does not record its findings' label sources.
    """
    rec = training.get("findings") or {}
    if not rec.get("specs"):
        raise ValueError("the model card does not record where its finding labels come from "
                         "(training.findings.specs)")
    list_column = (training.get("hyperparameters") or {}).get("findings_column")

    def kind(s: dict[str, Any]) -> str:
        return s.get("kind") or ("list" if s.get("column") == list_column else "binary")

    specs = [FindingSpec(s["name"], s.get("column") if kind(s) == "binary" else None) for s in rec["specs"]]
    column = next((s.get("column") for s in rec["specs"] if kind(s) == "list"), list_column)
    return specs, column, list(rec.get("exclude") or []), list(rec.get("dedupe_by") or [])
