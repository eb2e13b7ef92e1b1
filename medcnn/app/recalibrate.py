"""Recalibrate page helpers: a site's labelled uploads -> refitted temperature / threshold -> new card.

Two ways to upload a site's labelled images, both read in memory (ZIPs through
:class:`medcnn.io.archive.UploadSet`, with its zip-bomb guards and one decompression budget for
all the ZIPs of the upload, never extracted; a member is expanded only when its row is used, and
through the session's cache, :func:`medcnn.app.batch.session_cache`, only once per session):

* a ZIP with one folder per class name (``NORMAL/...``, ``PNEUMONIA/...``; a wrapper folder
  above them is fine; class names match case-insensitively);
* a ``labels.csv`` (``path,label[,split][,patient_id]``, paths relative to the ZIP's root)
  plus a ZIP of the images.

The model runs through the shared cached :class:`~medcnn.inference.Predictor`, one compute slot
per batch (:func:`medcnn.app.compute.slotted`: other sessions' analyses get in between); what is
refitted is decided by :func:`medcnn.evaluation.site.recalibrate` on held-out folds, and images
the model does not analyse (withheld by the gate, ...) are counted per class. A multi-label card
needs a labels CSV and the label that marks the chosen finding. The new card (:func:`site_card`) is offered as
a download together with how to install it by hand, and, to a signed-in user, installed from the page
(:mod:`medcnn.app.install`: who may, when, and the audit row).
"""
from __future__ import annotations

import functools
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from medcnn.app.compute import slotted
from medcnn.app.state import get_predictor
from medcnn.evaluation.site import (RecalibrationError, binary_names, component_rows, left_out_rows, recalibrate,
                                   summary_rows)
from medcnn.evaluation.site_card import file_sha256, recalibrated_card, site_data_sha256
from medcnn.io.archive import ArchiveMemberError, ExpansionCache, UploadSet
from medcnn.models.card import ModelCard

__all__ = ["SiteImages", "SiteResult", "card_bytes", "card_json", "collect_site", "install_instructions",
           "read_site_csv", "recalibrate_site", "site_card", "site_targets"]

SKIP_NO_CLASS = "not inside a folder named after a class"
SKIP_NOT_IN_ZIP = "listed in the CSV but not found in the ZIP"
SKIP_ZIP = "could not be taken from the ZIP"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class SiteImages:
    """A site's labelled images, in memory.

    Attributes:
        data: Image bytes, one per row.
        labels: Class name of each row (one of the model's labels).
        groups: Patient id of each row, or None (the bootstrap then resamples images).
        skipped: Reason -> count of uploaded files left out before scoring.
        key: SHA-256 over the rows, labels and groups (:func:`medcnn.evaluation.site_card.site_data_sha256`):
            the cache key of the results, and what the card records of the site data (never a
            file name).
    """

    data: list[bytes]
    labels: list[str]
    groups: list[str] | None
    skipped: dict[str, int] = field(default_factory=dict)
    key: str = ""


@dataclass
class SiteResult:
    """What the page shows: report, tables (held-out ``rows``, ``components``, ``left_out`` per class),
    figures (PNG bytes; none without held-out evidence) and what the card needs."""

    report: dict[str, Any]
    fields: dict[str, Any]
    rows: list[dict[str, str]]
    skipped: dict[str, int]
    n_listed: int
    figures: dict[str, bytes]
    weights_sha256: str
    components: list[dict[str, str]] = field(default_factory=list)
    left_out: list[dict[str, str]] = field(default_factory=list)


def _split_uploads(files: Sequence[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    csvs = [(n, d) for n, d in files if n.lower().endswith(".csv")]
    return csvs, [(n, d) for n, d in files if not n.lower().endswith(".csv")]


def read_site_csv(files: Sequence[tuple[str, bytes]]) -> Any:
    """The uploaded labels CSV as a DataFrame (all columns text), or None when none was uploaded.

    Raises:
        RecalibrationError: more than one CSV, an unparsable one, or no ``path`` / ``label`` column.
    """
    import pandas as pd

    csvs, _ = _split_uploads(files)
    if not csvs:
        return None
    if len(csvs) > 1:
        raise RecalibrationError(f"upload one labels CSV, not {len(csvs)}")
    try:
        df = pd.read_csv(io.BytesIO(csvs[0][1]), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RecalibrationError(f"cannot read {csvs[0][0]} as CSV: {e}") from None
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise RecalibrationError(f"{csvs[0][0]} lacks column(s) {', '.join(missing)}; expected "
                                 "path,label[,split][,patient_id]")
    return df.dropna(subset=["path", "label"]).reset_index(drop=True)


_Member = tuple[str, Callable[[], bytes]]  # (path inside its ZIP, or a plain file's name; reads its bytes)


def _members(archives: Sequence[tuple[str, bytes]], skipped: Counter, cache: ExpansionCache | None) -> list[_Member]:
    """Every listed member, unexpanded (one budget for all the archives: ArchiveBudgetError over it)."""
    uploads = UploadSet(archives, cache=cache)
    out = []
    for entry in uploads.entries:
        if entry.error:
            skipped[SKIP_ZIP] += 1
        else:
            out.append((entry.path or entry.name, functools.partial(uploads.read, entry)))
    return out


def _read(member: _Member, skipped: Counter) -> bytes | None:
    """The member's bytes (expanded now), or None counted as skipped when it cannot be read."""
    try:
        return member[1]()
    except ArchiveMemberError:
        skipped[SKIP_ZIP] += 1
        return None


def _by_folder(members: list[_Member], labels: Sequence[str], skipped: Counter) -> tuple[list, list]:
    names = {lab.lower(): lab for lab in labels}
    data, classes = [], []
    for member in members:
        label = next((names[p.lower()] for p in member[0].split("/")[:-1] if p.lower() in names), None)
        if label is None:
            skipped[SKIP_NO_CLASS] += 1
            continue
        content = _read(member, skipped)
        if content is not None:
            data.append(content)
            classes.append(label)
    return data, classes


def _by_csv(members: list[_Member], df: Any, labels: Sequence[str], group_column: str | None,
            split: str | None, skipped: Counter) -> tuple[list, list, list | None]:
    if split:
        if "split" not in df.columns:
            raise RecalibrationError("the CSV has no split column to select rows by")
        df = df[df["split"].str.strip().str.lower() == split.lower()]
    counts = df["label"].str.strip().value_counts()
    unknown = {k: int(v) for k, v in counts.items() if k not in labels}
    if unknown:
        listed = ", ".join(f"{k} ({v} rows)" for k, v in sorted(unknown.items()))
        raise RecalibrationError(f"labels the model does not know: {listed}; its labels are {', '.join(labels)}")
    if group_column and group_column not in df.columns:
        raise RecalibrationError(f"the CSV has no column {group_column!r}")
    exact = dict(members)
    data, classes, groups = [], [], []
    for i, row in enumerate(df.to_dict("records")):
        want = re.sub(r"^(\./)+", "", str(row["path"]).strip().replace("\\", "/"))
        found = exact.get(want) or next((read for p, read in members if p.endswith("/" + want)), None)
        if found is None:
            skipped[SKIP_NOT_IN_ZIP] += 1
            continue
        content = _read((want, found), skipped)
        if content is None:
            continue
        data.append(content)
        classes.append(str(row["label"]).strip())
        value = row[group_column] if group_column else None
        groups.append(f"row {i}" if value is None or value != value else str(value))
    return data, classes, (groups if group_column else None)


def collect_site(files: Sequence[tuple[str, bytes]], labels: Sequence[str], group_column: str | None = None,
                 split: str | None = None, cache: ExpansionCache | None = None) -> SiteImages:
    """A site's labelled images from the page's uploads (class-folder ZIP, or labels CSV + ZIP).

    Args:
        files: (file name, bytes) of every upload.
        labels: The model's class names.
        group_column: With a CSV: its patient column (whole patients are resampled).
        split: With a CSV: use only rows of this split.
        cache: The session's cache of expanded ZIP members (:func:`medcnn.app.batch.session_cache`),
            so a rerun expands nothing again; None expands every time.

    Raises:
        ArchiveBudgetError: the ZIPs together would expand to more than the upload budget
            (nothing was expanded).
        RecalibrationError: no images, several CSVs, a CSV without path / label, labels the
            model does not know, or a missing group / split column.
    """
    skipped: Counter = Counter()
    df = read_site_csv(files)
    csvs, archives = _split_uploads(files)
    if not archives:
        raise RecalibrationError("no images uploaded: add a ZIP of the images" + (" the CSV lists" if csvs else ""))
    members = _members(archives, skipped, cache)
    if df is None:
        data, classes = _by_folder(members, labels, skipped)
        groups = None
    else:
        data, classes, groups = _by_csv(members, df, labels, group_column, split, skipped)
    return SiteImages(data, classes, groups, dict(skipped), site_data_sha256(data, classes, groups))


def _held_out_figure(report: dict[str, Any]) -> Any:
    """Held-out before / after with 95 % CIs, one row per quantity (a forest plot)."""
    from matplotlib.figure import Figure

    held = report["held_out"]
    keys = [("sensitivity", "sensitivity"), ("specificity", "specificity"),
            ("balanced_accuracy", "balanced accuracy"), ("ece", "ECE")]
    fig = Figure(figsize=(5.2, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for row, (key, _) in enumerate(keys):
        for side, dy, style in (("before", 0.15, "s"), ("after", -0.15, "o")):
            value, ci = held[side][key], held[side][f"{key}_ci"]
            if value is None:
                continue
            err = None if ci is None else [[value - ci[0]], [ci[1] - value]]
            ax.errorbar([value], [row + dy], xerr=err, fmt=style, color="C0" if side == "before" else "C1",
                        capsize=3, label=f"{side} ({'shipped' if side == 'before' else 'written'})" if row == 0 else None)
    ax.set_yticks(range(len(keys)), [t for _, t in keys])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="held-out value (95% CI)", title=f"Held-out folds ({held['folds']}-fold)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _figures(fields: dict[str, Any], report: dict[str, Any]) -> dict[str, bytes]:
    """Held-out figures as PNG bytes: before / after with CIs, reliability of the held-out probabilities."""
    from medcnn.visualize import plots

    scores = fields.get("held_out_scores")
    if not scores:
        return {}
    y = np.asarray(scores["y"])
    figs = {"held_out": _held_out_figure(report),
            "reliability_before": plots.reliability_figure(y, np.asarray(scores["before"]),
                                                           title="Reliability before (held-out)"),
            "reliability_after": plots.reliability_figure(y, np.asarray(scores["after"]),
                                                          title="Reliability after (held-out)")}
    out = {}
    for name, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out[name] = buf.getvalue()
    return out


def site_targets(card: ModelCard, labels: Sequence[str], finding: str | None,
                 positive: str | None) -> tuple[np.ndarray, list[str]]:
    """(N,) 0/1 target of each site label and the (negative, positive) class names.

    Args:
        card: The card.
        labels: The site label of each image.
        finding: The label recalibrated (None: the card's positive label).
        positive: The site label that marks positives (a multi-label card); None: the card's
            positive label.
    """
    names = binary_names(card, finding, positive)
    want = positive or card.positive_label
    return np.asarray([int(v == want) for v in labels], dtype=np.int64), names


@st.cache_data(show_spinner=False, max_entries=8)
def recalibrate_site(key: str, _site: SiteImages, card_path: str, mtime: float, min_per_class: int,
                     n_boot: int, finding: str | None = None, positive: str | None = None) -> SiteResult:
    """Score the site's images with the cached model and decide what to refit (cached by ``key`` =
    ``_site.key`` and the other arguments).

    Args:
        finding: The label recalibrated (a multi-label card's finding; default the positive label).
        positive: The site label marking positives for it (default: the card's positive label).

    Raises:
        InsufficientSiteDataError: too few usable images of a class (the message says how many
            and what was left out).
        CardError: the card or its weights are unreadable.
    """
    from medcnn.scoring import Scorer, left_out_by_class

    predictor = get_predictor(card_path)
    card = predictor.card
    y_all, names = site_targets(card, _site.labels, finding, positive)
    sources = [(f"site image {i}", data) for i, data in enumerate(_site.data)]
    logits, kept, left_out = left_out_by_class(Scorer(slotted(predictor)), sources, [names[v] for v in y_all])
    groups = None if _site.groups is None else [_site.groups[i] for i in kept]
    fields, report = recalibrate(card, logits, y_all[kept], groups, min_per_class, finding=finding, names=names,
                                 left_out=left_out, n_boot=n_boot)
    skipped = dict(_site.skipped)
    for reasons in left_out.values():
        for reason, n in reasons.items():
            skipped[reason] = skipped.get(reason, 0) + n
    return SiteResult(report, fields, summary_rows(report), skipped,
                      len(_site.data) + sum(_site.skipped.values()), _figures(fields, report),
                      file_sha256(card.weights_path), component_rows(report), left_out_rows(report))


def site_card(card: ModelCard, result: SiteResult, name: str, data_sha256: str) -> ModelCard:
    """The recalibrated card named ``name``: what the page offers to download and to install.

    Raises:
        RecalibrationError: ``name`` is not a plain file name or is the original's; nothing was
            refitted (the held-out folds do not show that a refit helps).
    """
    if not _NAME.match(name or ""):
        raise RecalibrationError(f"{name!r} is not a usable card name: letters, digits, '_', '-' and '.' only")
    return recalibrated_card(card, result.fields, result.report, name, weights_sha256=result.weights_sha256,
                             data_sha256=data_sha256, command="medcnn app, Recalibrate page", skipped=result.skipped,
                             extra={"n_listed": result.n_listed})


def card_bytes(card: ModelCard) -> bytes:
    """A card as the JSON bytes of its download."""
    return (json.dumps(card.to_dict(), indent=2) + "\n").encode()


def card_json(card: ModelCard, result: SiteResult, name: str, data_sha256: str) -> bytes:
    """:func:`site_card` as JSON bytes (the download).

    Raises:
        RecalibrationError: see :func:`site_card`.
    """
    return card_bytes(site_card(card, result, name, data_sha256))


def install_instructions(card: ModelCard, name: str, sha256: str) -> str:
    """Markdown: how to install the downloaded card by hand, next to a byte-identical copy of the weights."""
    gate = (f"\n    cp weights/{card.ood['file']} weights/{name}.ood.pt" if card.ood.get("file") else "")
    return (
        f"**Install by hand**: save the download as "
        f"`weights/{name}.json` and put a byte-identical copy of the weights next to it, so the card "
        f"finds `{name}.pt`:\n\n    cp weights/{card.name}.pt weights/{name}.pt{gate}\n    "
        f"sha256sum weights/{name}.pt   # must print {sha256}\n\n"
        f"(`weights/` is the folder in `MEDCNN_WEIGHTS_DIR` when that is set.) Or run the same refit from "
        f"the command line, which copies and checks the weights itself: `python -m medcnn recalibrate "
        f"--model weights/{card.name}.json --data LABELS.csv --out weights/{name}.json`."
    )
