"""Evaluation figures: ROC, precision-recall, reliability diagram, confusion matrix.

Built on :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot global state,
so figures are safe to make from several threads (the app) and never open windows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm

__all__ = ["confusion_figure", "pr_figure", "reliability_figure", "roc_figure", "save_plots"]


def _figure(size: tuple[float, float] = (4.2, 4.0)) -> tuple[Figure, object]:
    fig = Figure(figsize=size, dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _legend(ax, loc: str) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing labelled on degenerate (one-class) data
        ax.legend(loc=loc, fontsize=8)


def _operating_point(y: np.ndarray, prob: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(FPR, TPR = recall, precision) at ``prob >= threshold``."""
    pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    tpr = skm.recall_score(y, pred, zero_division=0)
    fpr = 1.0 - skm.recall_score(y, pred, pos_label=0, zero_division=0) if (tn + fp) else 0.0
    return fpr, tpr, skm.precision_score(y, pred, zero_division=0)


def roc_figure(y_true: np.ndarray, prob: np.ndarray, threshold: float | None = None,
               title: str = "ROC") -> Figure:
    """ROC curve of (N,) 0/1 labels and positive-class probabilities, with AUC and operating point."""
    y, p = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    fig, ax = _figure()
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = skm.roc_curve(y, p)
        from medcnn.evaluation import roc_auc

        ax.plot(fpr, tpr, lw=2, label=f"AUC = {roc_auc(y, p):.3f}")
        if threshold is not None:
            ofpr, otpr, _ = _operating_point(y, p, threshold)
            ax.plot([ofpr], [otpr], "o", color="C3", label=f"threshold {threshold:.3f}")
    else:
        ax.text(0.5, 0.5, "one class only: ROC undefined", ha="center")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title,
           xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    _legend(ax, "lower right")
    return fig


def pr_figure(y_true: np.ndarray, prob: np.ndarray, threshold: float | None = None,
              title: str = "Precision-recall") -> Figure:
    """Precision-recall curve with average precision, prevalence line and operating point."""
    y, p = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    fig, ax = _figure()
    if y.any():
        prec, rec, _ = skm.precision_recall_curve(y, p)
        ax.step(rec, prec, where="post", lw=2,
                label=f"AP = {skm.average_precision_score(y, p):.3f}")
        ax.axhline(y.mean(), ls="--", color="grey", lw=1, label=f"prevalence {y.mean():.2f}")
        if threshold is not None:
            _, orec, oprec = _operating_point(y, p, threshold)
            ax.plot([orec], [oprec], "o", color="C3", label=f"threshold {threshold:.3f}")
    else:
        ax.text(0.5, 0.5, "no positives: PR undefined", ha="center")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    _legend(ax, "lower left")
    return fig


def reliability_figure(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10,
                       title: str = "Reliability") -> Figure:
    """Reliability diagram: observed positive fraction vs mean predicted probability per bin.

    Equal-width bins, as in :func:`medcnn.evaluation.metrics.expected_calibration_error`; a histogram of
    the probabilities is drawn below the diagonal.
    """
    from medcnn.evaluation.metrics import expected_calibration_error

    y, p = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    fig, ax = _figure()
    from sklearn.calibration import calibration_curve

    frac, mean_p = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.plot(mean_p, frac, "o-", lw=2, label=f"model (ECE = {expected_calibration_error(y, p, n_bins):.3f})")
    counts, edges = np.histogram(p, bins=n_bins, range=(0, 1))
    ax.bar(edges[:-1], 0.25 * counts / max(counts.max(), 1), width=1 / n_bins, align="edge",
           alpha=0.25, color="C0", label="share of images (scaled)")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive fraction", title=title,
           xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    _legend(ax, "upper left")
    return fig


def confusion_figure(cm: Sequence[Sequence[int]], labels: Sequence[str],
                     title: str = "Confusion matrix") -> Figure:
    """Confusion matrix (rows = truth, columns = prediction) with counts and row shares."""
    m = np.asarray(cm, dtype=float)
    fig, ax = _figure((4.2, 3.8))
    row = m.sum(axis=1, keepdims=True)
    share = np.divide(m, row, out=np.zeros_like(m), where=row > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n({share[i, j]:.0%})", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black")
    ticks = range(len(labels))
    ax.set_xticks(list(ticks), labels=list(labels))
    ax.set_yticks(list(ticks), labels=list(labels))
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def save_plots(y_true: np.ndarray, prob: np.ndarray, threshold: float, labels: Sequence[str],
               out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write ``roc.png``, ``pr.png``, ``reliability.png`` and ``confusion.png`` to ``out_dir``.

    Args:
        y_true: (N,) 0/1 labels, 1 = ``labels[1]``.
        prob: (N,) calibrated positive-class probabilities.
        threshold: Operating threshold.
        labels: (negative name, positive name).
        out_dir: Output folder (created).
        title: Prefix of each title (e.g. the model name).

    Returns:
        ``{"roc": path, "pr": path, "reliability": path, "confusion": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y, p = np.asarray(y_true).astype(int), np.asarray(prob, dtype=float)
    pre = f"{title}: " if title else ""
    cm = skm.confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    figs = {
        "roc": roc_figure(y, p, threshold, f"{pre}ROC"),
        "pr": pr_figure(y, p, threshold, f"{pre}precision-recall"),
        "reliability": reliability_figure(y, p, title=f"{pre}reliability"),
        "confusion": confusion_figure(cm, labels, f"{pre}confusion (thr {threshold:.3f})"),
    }
    paths = {}
    for name, fig in figs.items():
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name])
    return paths
