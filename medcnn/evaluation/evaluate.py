"""Evaluation of a model card on labelled data: batched inference, metrics, calibration.

The metric functions live in :mod:`medcnn.evaluation.metrics` (re-exported here). This module runs a
model over a labels.csv through the card's own preprocessing pipeline, so evaluation sees
exactly what the app feeds the network.

Calibration (temperature, Youden threshold) is fitted **only on the validation split**
(:func:`calibrate_card`); test metrics are reported, never tuned on.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medcnn.evaluation.labels import read_labels
from medcnn.evaluation.metrics import (
    SCALAR_METRICS,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    metrics_by_group,
    softmax_t,
    youden_threshold,
)
from medcnn.evaluation.predict import CardRows, TensorBatches, predict_dataset
from medcnn.models.card import ModelCard

__all__ = [
    "SCALAR_METRICS",
    "Scores",
    "TensorBatches",
    "calibrate_card",
    "compute_metrics",
    "evaluate_model",
    "expected_calibration_error",
    "fit_temperature",
    "metrics_by_group",
    "metrics_from_scores",
    "predict_dataset",
    "score_dataset",
    "softmax_t",
    "store_metrics",
    "stored_scores",
    "youden_threshold",
]

PathList = Sequence[str | Path] | str | Path


@dataclass
class Scores:
    """Model outputs on a labelled table.

    Attributes:
        card: The model card.
        df: The evaluated rows (``path``, ``label``, ``split``, ``group``, other columns).
        logits: float32 (N, C) raw logits in ``card.labels`` order.
        y: int64 (N,) label index in ``card.labels``.
        ood_levels: Out-of-distribution level per row (``ok`` / ``unusual`` / ``outside``),
            ``None`` when the card has no image gate.
    """

    card: ModelCard
    df: Any
    logits: np.ndarray
    y: np.ndarray
    ood_levels: list[str] | None = None  # the gate's level per row, when the card has a gate

    @property
    def y_pos(self) -> np.ndarray:
        """(N,) 1 where the row's label is the card's positive label."""
        return (self.y == self.card.positive_index).astype(np.int64)

    def prob(self, temperature: float | None = None) -> np.ndarray:
        """(N,) calibrated probability of the positive label (card temperature by default)."""
        t = self.card.temperature if temperature is None else temperature
        return softmax_t(self.logits, t)[:, self.card.positive_index]

    def subset(self, mask: np.ndarray) -> "Scores":
        levels = None if self.ood_levels is None else [lv for lv, m in zip(self.ood_levels, mask) if m]
        return Scores(self.card, self.df[mask].reset_index(drop=True), self.logits[mask], self.y[mask], levels)

    def ood_rates(self) -> dict[str, Any] | None:
        """Share of rows the gate flags (either level) and does not analyse; ``None`` without a gate."""
        if self.ood_levels is None:
            return None
        n = len(self.ood_levels)
        return {"n": n, "flagged": round(sum(lv != "ok" for lv in self.ood_levels) / max(n, 1), 4),
                "outside": round(sum(lv == "outside" for lv in self.ood_levels) / max(n, 1), 4)}

    @property
    def binary_labels(self) -> tuple[str, str]:
        """(negative name, positive name) for the positive-vs-rest metrics."""
        card = self.card
        if len(card.labels) == 2:
            return (card.labels[1 - card.positive_index], card.positive_label)
        return (f"not {card.positive_label}", card.positive_label)


def _as_list(paths: PathList) -> list[Path]:
    return [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]


def _select_rows(df: Any, card: ModelCard, classes: Sequence[str] | None) -> Any:
    """Keep the ``classes`` rows; any remaining label the model does not know is an error."""
    if classes:
        classes = [str(c).strip() for c in classes if str(c).strip()]
        bad = [c for c in classes if c not in card.labels]
        if bad:
            raise ValueError(
                f"--classes {', '.join(bad)} not known to model {card.name!r} "
                f"(its labels: {', '.join(card.labels)})"
            )
        df = df[df["label"].astype(str).isin(classes)]
    counts = df["label"].astype(str).value_counts()
    unknown = {k: int(v) for k, v in counts.items() if k not in card.labels}
    if unknown:
        listed = ", ".join(f"{k} ({v} rows)" for k, v in sorted(unknown.items()))
        raise ValueError(
            f"labels in the data that model {card.name!r} does not know: {listed}; the model's "
            f"labels are {', '.join(card.labels)}. Select known labels with "
            f"--classes {','.join(card.labels)}"
        )
    if len(df) == 0:
        raise ValueError("no rows to evaluate after selecting split and classes")
    return df.reset_index(drop=True)


def score_dataset(
    card: ModelCard | str | Path,
    csv_paths: PathList,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    device: Any = None,
    batch_size: int = 32,
    progress: bool = False,
    relabel: dict[str, str] | None = None,
) -> Scores:
    """Load the card's model and run it over the rows of labels.csv file(s) / class folders.

    Images go through the card's own pipeline (``Pipeline.from_config(card.preprocessing)``).

    Args:
        card: Card or path of ``<name>.json``.
        csv_paths: labels.csv file(s) or class-folder root(s) (see :func:`medcnn.evaluation.labels.read_labels`).
        split: Keep only this split (``None``: every row).
        classes: Keep only rows with these labels (each must be a model label).
        device: Device (default :func:`medcnn.models.get_device`).
        batch_size: Images per forward pass.
        progress: Print progress on stderr.
        relabel: ``{old: new}`` applied to every row's label first (e.g. ``CAP`` and ``NORMAL``
            patients as ``NonCOVID`` for a COVID model); the original label stays in
            ``label_original`` so ``--by label_original`` reports each.

    Raises:
        ValueError: labels the model does not know (listed), or no rows left.
    """
    from medcnn.models import load_model
    from medcnn.preprocess import Pipeline

    model, card = load_model(card, device=device)
    df = read_labels([str(p) for p in _as_list(csv_paths)], split=split)
    if relabel:
        df = df.assign(label_original=df["label"], label=df["label"].replace(relabel))
    df = _select_rows(df, card, classes)
    if progress:
        print(f"evaluating {card.name} on {len(df)} images"
              + (f" (split {split})" if split else ""), file=sys.stderr)
    rows = CardRows(df["path"].astype(str).tolist(), Pipeline.from_config(card.preprocessing))
    logits = predict_dataset(model, rows, batch_size=batch_size)
    y = df["label"].astype(str).map({c: i for i, c in enumerate(card.labels)}).to_numpy(dtype=np.int64)
    return Scores(card, df, logits, y, _ood_levels(model, card, rows, batch_size))


def _ood_levels(model: Any, card: ModelCard, rows: CardRows, batch_size: int) -> list[str] | None:
    """The card's gate run over ``rows`` (a second, feature-returning pass), or ``None``."""
    if card.ood_path is None:
        return None
    from medcnn.ood import OODGate
    from medcnn.ood.features import FeatureExtractor

    gate = OODGate.load(card.ood_path, sha256=card.ood.get("sha256"))
    extract = FeatureExtractor(model, gate.layers, gate.grid)
    levels: list[str] = []
    for start in range(0, len(rows), batch_size):
        batch = range(start, min(start + batch_size, len(rows)))
        x = rows.tensor_batch(batch)  # as served: a slice its header turned upright is not asked its orientation
        _, verdicts = gate.judge(extract, x, upright=[rows.upright[i] for i in batch])
        levels.extend(v.level for v in verdicts)
    return levels


def metrics_from_scores(
    scores: Scores, by: str | None = None, n_boot: int = 1000, seed: int = 0,
    threshold: float | None = None, temperature: float | None = None,
) -> dict[str, Any]:
    """Metrics of :class:`Scores` at the card's threshold / temperature (or the given ones).

    The bootstrap resamples the ``group`` column (patient / scan) when it has fewer distinct
    values than rows (cluster bootstrap); otherwise rows.

    Returns:
        :func:`compute_metrics` output plus ``model``; with ``by``,
        ``by = {"column": by, "groups": {value: metrics}}``.

    Raises:
        ValueError: ``by`` is not a column of the data (the message lists the columns).
    """
    card = scores.card
    thr = card.threshold if threshold is None else float(threshold)
    prob = scores.prob(temperature)
    groups = None
    if "group" in scores.df.columns:
        g = scores.df["group"].astype(str).to_numpy()
        groups = g if len(set(g)) < len(g) else None
    kw = dict(labels=scores.binary_labels, n_boot=n_boot, seed=seed)
    out = {"model": card.name, **compute_metrics(scores.y_pos, prob, thr, groups=groups, **kw)}
    if scores.ood_levels is not None:
        out["ood"] = scores.ood_rates()
    if by:
        if by not in scores.df.columns:
            raise ValueError(f"--by column {by!r} is not in the data; columns: "
                             f"{', '.join(map(str, scores.df.columns))}")
        out["by"] = {"column": by, "groups": metrics_by_group(
            scores.y_pos, prob, scores.df[by].to_numpy(dtype=object), thr, groups=groups, **kw)}
    return out


def evaluate_model(
    card_path: ModelCard | str | Path,
    csv_paths: PathList,
    split: str | None = None,
    by: str | None = None,
    n_boot: int = 1000,
    classes: Sequence[str] | None = None,
    device: Any = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Metrics of a model card on labelled data, at the card's temperature and threshold.

    See :func:`score_dataset` (arguments, errors) and :func:`metrics_from_scores` (output).
    """
    scores = score_dataset(card_path, csv_paths, split, classes, device, batch_size)
    out = metrics_from_scores(scores, by=by, n_boot=n_boot)
    out["split"] = split
    return out


def _nll(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, softmax_t(logits, t), labels=list(range(logits.shape[1]))))


def calibrate_card(
    card_path: ModelCard | str | Path,
    csv_paths: PathList,
    by: str | None = None,
    classes: Sequence[str] | None = None,
    n_boot: int = 1000,
    write: bool = True,
    device: Any = None,
    batch_size: int = 32,
) -> ModelCard:
    """Fit temperature and Youden threshold on the **val** split; report val and test metrics.

    The test split (when present) is only scored, with the threshold and temperature
    fitted on val: nothing is tuned on test. The card gets ``temperature``, ``threshold``,
    ``metrics["val"]``, ``metrics["test"]`` (each with its per-image ``scores``, see
    :func:`stored_scores`), ``metrics["calibration"]`` and, with ``by``,
    ``metrics["val_by_<by>"]`` / ``metrics["test_by_<by>"]``; other metrics are kept.

    Args:
        card_path: Card or path of ``<name>.json``.
        csv_paths: labels.csv file(s) with a ``split`` column containing ``val`` rows.
        by: Optional column for per-group metrics (e.g. ``view_position``).
        classes: Rows to keep (see :func:`score_dataset`).
        n_boot: Bootstrap resamples for the CIs.
        write: Save the card in place.
        device, batch_size: See :func:`score_dataset`.

    Returns:
        The updated card.

    Raises:
        ValueError: no val rows, or val has a single class.
    """
    scores = score_dataset(card_path, csv_paths, None, classes, device, batch_size, progress=True)
    card = scores.card
    split = scores.df["split"].astype(str).str.lower().to_numpy()
    if not (split == "val").any():
        raise ValueError("calibration needs rows with split 'val' in the data (it never fits on test)")
    val = scores.subset(split == "val")
    temperature = fit_temperature(val.logits, val.y)
    threshold = youden_threshold(val.y_pos, val.prob(temperature))
    card.temperature, card.threshold = temperature, threshold
    card.metrics["calibration"] = {
        "fitted_on": "val", "n_val": int(len(val.y)), "temperature": temperature,
        "threshold": threshold, "threshold_rule": "Youden's J on calibrated val probabilities",
        "nll_val_uncalibrated": _nll(val.logits, val.y, 1.0),
        "nll_val_calibrated": _nll(val.logits, val.y, temperature),
        "data": [_short(p) for p in _as_list(csv_paths)],
    }
    for name in ("val", "test"):
        mask = split == name
        if not mask.any():
            print(f"no {name} rows: metrics[{name!r}] not updated", file=sys.stderr)
            continue
        print(f"metrics on {name} ({int(mask.sum())} images)", file=sys.stderr)
        m = metrics_from_scores(scores.subset(mask), by=by, n_boot=n_boot)
        m["scores"] = stored_scores(scores.subset(mask))
        if by:
            card.metrics[f"{name}_by_{by}"] = m.pop("by")
        card.metrics[name] = m
    if write:
        card.save(card.path)
    return card


def stored_scores(scores: Scores) -> dict[str, list]:
    """Per-image outcome and probability at the card's temperature, for the card (ROC / PR / reliability
    curves without the data). Sorted by probability, so the list order does not follow the
    data's row order; no file names or identifiers.

    Returns:
        ``{"y": [0/1 ...], "prob": [float ...]}``. Probabilities are stored exactly (not
        rounded): the operating threshold is itself one of the val probabilities, and
        rounding would move images across it.
    """
    prob = scores.prob()
    order = np.lexsort((scores.y_pos, -prob))
    return {"y": [int(v) for v in scores.y_pos[order]],
            "prob": [float(v) for v in prob[order]]}


def store_metrics(card_path: str | Path, key: str, metrics: dict[str, Any]) -> ModelCard:
    """Save ``metrics`` into ``card.metrics[key]`` (e.g. an outside-dataset check).

    Raises:
        ValueError: ``key`` is one that :func:`calibrate_card` owns (val / test / calibration).
    """
    if key in ("val", "test", "calibration"):
        raise ValueError(f"metrics key {key!r} is reserved for --calibrate; pick another name")
    card = ModelCard.load(card_path)
    card.metrics[key] = metrics
    card.save(card.path)
    return card


def _short(path: Path) -> str:
    """Dataset path without the machine-specific prefix (``<folder>/labels.csv``)."""
    p = Path(path)
    return str(Path(p.parent.name) / p.name) if p.suffix else p.name
