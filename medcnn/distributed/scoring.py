"""Batch scoring with the serving path: files in, one flat row per image out.

:class:`BatchScorer` reads each file with :func:`medcnn.io.read_image`, picks its model with
:func:`medcnn.inference.resolve_card` (or uses the one given) and runs
:meth:`medcnn.inference.Predictor.predict_batch`: the pipeline, network and
out-of-distribution gate of ``predict``, with the images of one model in one forward pass. Its
entries have the schema of ``predict --json`` entries; a file that cannot be read or predicted
gets an entry with its error, and the others still run.

:func:`entry_to_row` flattens an entry into the columns of :data:`ROW_COLUMNS` (one Parquet
row per image); a scorer is also callable on an Arrow table of paths, which is how a Ray actor
runs it (:mod:`medcnn.distributed.ray_engine`).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ENTRY_KEYS", "ROW_COLUMNS", "BatchScorer", "arrow_schema", "entry_to_row", "rows_table",
           "write_parquet"]

#: Keys of one entry (those of ``predict --json``).
ENTRY_KEYS = ("file", "ok", "error", "model", "probabilities", "label", "positive_prob", "above_threshold",
              "threshold", "seconds", "decision", "ood", "warnings")

#: Column -> Arrow type name of one result row. ``probabilities`` is a JSON object
#: ``{label: probability}`` (models of different label sets share one file).
ROW_COLUMNS: dict[str, str] = {
    "path": "string", "ok": "bool", "error": "string", "model": "string", "label": "string",
    "decision": "string", "probabilities": "string", "positive_prob": "float64", "threshold": "float64",
    "above_threshold": "bool", "ood_flagged": "bool", "ood_level": "string", "ood_score": "float64",
    "ood_reasons": "list<string>", "warnings": "list<string>", "seconds": "float64",
}


def _new_entry(path: str) -> dict[str, Any]:
    entry: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    entry.update(file=path, ok=False, warnings=[])
    return entry


def _messages(caught: Iterable[warnings.WarningMessage]) -> list[str]:
    return list(dict.fromkeys(str(w.message) for w in caught))


class BatchScorer:
    """Scores files in batches; one loaded :class:`medcnn.inference.Predictor` per model card.

    Args:
        model: Card path (``.json``) serving every file; None: chosen per image from its
            modality (:func:`medcnn.inference.resolve_card`).
        weights_dir: Folder of the cards for the automatic choice (default
            :func:`medcnn.inference.default_weights_dir`).
        device: ``cpu`` / ``cuda`` (default: ``MEDCNN_DEVICE``, else auto).
        threads: torch CPU threads of this process (None: leave as they are).
    """

    def __init__(self, model: str | Path | None = None, weights_dir: str | Path | None = None,
                 device: str | None = None, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.model = Path(model) if model else None
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.device = device
        self.predictors: dict[Path, Any] = {}

    def _predictor(self, card_path: Path) -> Any:
        from medcnn.inference import Predictor

        if card_path not in self.predictors:
            self.predictors[card_path] = Predictor(card_path, device=self.device)
        return self.predictors[card_path]

    def _prepare(self, entry: dict[str, Any]) -> tuple[Path, Any] | None:
        """Read one file and load its model; the error goes into ``entry`` (returns None)."""
        from medcnn.inference import resolve_card
        from medcnn.io import read_image

        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:  # reported per file
                warnings.simplefilter("always")
                img = read_image(entry["file"])
                card_path = self.model or resolve_card(img.meta, None, self.weights_dir)
                self._predictor(card_path)
        except (ValueError, OSError) as e:  # UnsupportedImageError / CardError are ValueErrors
            entry["error"] = f"{type(e).__name__}: {e}"
            return None
        finally:
            entry["warnings"] = _messages(caught)
        return card_path, img

    @staticmethod
    def _fill(entry: dict[str, Any], pred: Any) -> None:
        d = pred.to_dict()
        d.pop("logits")
        entry.update(d, ok=True)

    def _predict_group(self, predictor: Any, members: list[tuple[dict[str, Any], Any]]) -> None:
        """One forward pass for the images of one model; image by image when that pass fails or
        warns, so that each error and warning lands on its own file."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                preds = predictor.predict_batch([img for _, img in members], keep_steps=False)
            if not caught:
                for (entry, _), pred in zip(members, preds):
                    self._fill(entry, pred)
                return
        except (ValueError, OSError):
            pass
        for entry, img in members:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    pred = predictor.predict(img, keep_steps=False)
            except (ValueError, OSError) as e:
                entry["error"] = f"{type(e).__name__}: {e}"
                continue
            finally:
                entry["warnings"] = list(dict.fromkeys(entry["warnings"] + _messages(caught)))
            self._fill(entry, pred)

    def score(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """Entries (the schema of ``predict --json``) of ``paths``, in order.

        Args:
            paths: Image files (DICOM, PNG or JPEG, detected by content).

        Returns:
            One entry per path; ``ok`` False with ``error`` set for a file that failed.
        """
        entries = [_new_entry(str(p)) for p in paths]
        groups: dict[Path, list[tuple[dict[str, Any], Any]]] = {}
        for entry in entries:
            prepared = self._prepare(entry)
            if prepared is not None:
                groups.setdefault(prepared[0], []).append((entry, prepared[1]))
        for card_path, members in groups.items():
            self._predict_group(self.predictors[card_path], members)
        return entries

    def __call__(self, batch: Any) -> Any:
        """Score an Arrow table with a ``path`` column into a table of :data:`ROW_COLUMNS` (Ray's batch call)."""
        paths = [str(p) for p in batch.column("path").to_pylist()]
        return rows_table(entry_to_row(e) for e in self.score(paths))


def entry_to_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One entry -> one flat row (:data:`ROW_COLUMNS`); absent values are None."""
    ood = entry.get("ood") or {}
    probs = entry.get("probabilities")
    return {
        "path": entry["file"], "ok": bool(entry["ok"]), "error": entry.get("error"), "model": entry.get("model"),
        "label": entry.get("label"), "decision": entry.get("decision"),
        "probabilities": None if probs is None else json.dumps(probs),
        "positive_prob": entry.get("positive_prob"), "threshold": entry.get("threshold"),
        "above_threshold": entry.get("above_threshold"), "ood_flagged": ood.get("flagged"),
        "ood_level": ood.get("level"), "ood_score": ood.get("score"),
        "ood_reasons": list(ood["reasons"]) if ood.get("reasons") is not None else None,
        "warnings": list(entry.get("warnings") or []), "seconds": entry.get("seconds"),
    }


def arrow_schema() -> Any:
    """The ``pyarrow.Schema`` of :data:`ROW_COLUMNS`."""
    import pyarrow as pa

    types = {"string": pa.string(), "bool": pa.bool_(), "float64": pa.float64(),
             "list<string>": pa.list_(pa.string())}
    return pa.schema([(name, types[kind]) for name, kind in ROW_COLUMNS.items()])


def rows_table(rows: Iterable[dict[str, Any]]) -> Any:
    """A ``pyarrow.Table`` of rows (:func:`entry_to_row`) with the :func:`arrow_schema`."""
    import pyarrow as pa

    return pa.Table.from_pylist(list(rows), schema=arrow_schema())


def write_parquet(rows: Iterable[dict[str, Any]], out: str | Path) -> Path:
    """Write rows to one Parquet file atomically (a temporary file, then a rename).

    Returns:
        The path written.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    pq.write_table(rows_table(rows), tmp)
    tmp.replace(out)
    return out
