"""Scale-out: batch scoring on a Ray cluster and data-parallel training under torchrun.

* :mod:`medcnn.distributed.sources` turns folders, globs and manifest CSVs into a file list;
  :mod:`medcnn.distributed.scoring` scores files in batches with the serving path
  (:class:`medcnn.inference.Predictor`: the same pipeline, model and out-of-distribution gate as
  ``predict``) into one flat row per image; :mod:`medcnn.distributed.ray_engine` runs that
  scorer in a pool of Ray actors and streams the rows to Parquet.
* :mod:`medcnn.distributed.ddp` and :mod:`medcnn.distributed.layers` are the hooks the training
  loop uses when ``torchrun`` starts it in several processes.

Ray is an optional extra (``pip install -r requirements-scale.txt``): nothing here imports it
until a Ray run starts, and asking for one without it raises :class:`RayUnavailableError`.
Names are imported lazily (PEP 562), so ``import medcnn.distributed`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ROW_COLUMNS": "medcnn.distributed.scoring",
    "BatchScorer": "medcnn.distributed.scoring",
    "entry_to_row": "medcnn.distributed.scoring",
    "write_parquet": "medcnn.distributed.scoring",
    "expand_sources": "medcnn.distributed.sources",
    "RayUnavailableError": "medcnn.distributed.ray_engine",
    "score_with_ray": "medcnn.distributed.ray_engine",
    "World": "medcnn.distributed.ddp",
    "current_world": "medcnn.distributed.ddp",
    "process_group": "medcnn.distributed.ddp",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medcnn.distributed' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
