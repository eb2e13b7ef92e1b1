"""Batch scoring for the local and Ray engines: files in, one flat Parquet row per image out.

The scoring itself is :class:`medcnn.scoring.Scorer`, the one engine every path uses (read, choose
the model, one forward pass per model and chunk, errors into rows). :class:`BatchScorer` is that
engine as a Ray actor runs it: callable on an Arrow table of paths. :func:`entry_to_row` flattens
a row of the engine into the columns of :data:`ROW_COLUMNS` (one Parquet row per image).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medcnn.scoring import ROW_KEYS, Scorer

__all__ = ["ENTRY_KEYS", "ROW_COLUMNS", "BatchScorer", "arrow_schema", "entry_to_row", "rows_table",
           "write_parquet"]

#: Keys of one entry: the engine's row (those of ``predict --json``).
ENTRY_KEYS = ROW_KEYS

#: Column -> Arrow type name of one result row. ``probabilities`` is a JSON object
#: ``{label: probability}`` (models of different label sets share one file); ``called`` the JSON
#: list of the labels the decision names (null when not analysed).
ROW_COLUMNS: dict[str, str] = {
    "path": "string", "ok": "bool", "error": "string", "error_stage": "string", "model": "string",
    "label": "string", "decision": "string", "called": "string", "probabilities": "string",
    "positive_prob": "float64", "threshold": "float64", "above_threshold": "bool", "ood_flagged": "bool",
    "ood_level": "string", "ood_score": "float64", "ood_reasons": "list<string>", "warnings": "list<string>",
    "seconds": "float64", "routed": "string",
}


class BatchScorer:
    """The scoring engine in one process (a Ray actor, or ``--engine local``).

    Args:
        model: Card path (``.json``) serving every file; None: chosen per image by the one routing
            rule (:func:`medcnn.routing.route`: the modality's family; a PNG/JPEG the chest X-ray
            gate withholds is asked of the CT model), said in the row's ``routed``.
        weights_dir: Folder of the cards for the automatic choice.
        device: ``cpu`` / ``cuda`` (default: ``MEDCNN_DEVICE``, else auto).
        threads: torch CPU threads of this process (None: leave as they are).
        batch_size: Images per forward pass.
    """

    def __init__(self, model: str | Path | None = None, weights_dir: str | Path | None = None,
                 device: str | None = None, threads: int | None = None, batch_size: int = 16):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.engine = Scorer(model, weights_dir=weights_dir, device=device, batch_size=batch_size)

    def score(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """Rows (the schema of ``predict --json``) of ``paths``, in order.

        Args:
            paths: Image files (DICOM, PNG or JPEG, detected by content).

        Returns:
            One row per path; ``ok`` False with ``error`` set for a file that failed.
        """
        return self.engine.rows([str(p) for p in paths])

    def __call__(self, batch: Any) -> Any:
        """Score an Arrow table with a ``path`` column into a table of :data:`ROW_COLUMNS` (Ray's batch call)."""
        paths = [str(p) for p in batch.column("path").to_pylist()]
        return rows_table(entry_to_row(e) for e in self.score(paths))


def entry_to_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One entry -> one flat row (:data:`ROW_COLUMNS`); absent values are None."""
    ood = entry.get("ood") or {}
    probs = entry.get("probabilities")
    return {
        "path": entry["file"], "ok": bool(entry["ok"]), "error": entry.get("error"),
        "error_stage": entry.get("error_stage"), "model": entry.get("model"),
        "label": entry.get("label"), "decision": entry.get("decision"),
        "called": None if entry.get("called") is None else json.dumps(entry["called"]),
        "probabilities": None if probs is None else json.dumps(probs),
        "positive_prob": entry.get("positive_prob"), "threshold": entry.get("threshold"),
        "above_threshold": entry.get("above_threshold"), "ood_flagged": ood.get("flagged"),
        "ood_level": ood.get("level"), "ood_score": ood.get("score"),
        "ood_reasons": list(ood["reasons"]) if ood.get("reasons") is not None else None,
        "warnings": list(entry.get("warnings") or []), "seconds": entry.get("seconds"),
        "routed": entry.get("routed"),
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
