"""Batch scoring on Ray Data: a pool of actors, one loaded model each, rows streamed to Parquet.

The file list becomes a Ray dataset (``ray.data.from_items``); ``map_batches`` sends batches of
paths to a pool of actors, each holding one :class:`medcnn.distributed.scoring.BatchScorer`
(its Predictor is loaded once per actor, with one GPU per actor when the cluster has GPUs), which
reads the files and returns one row per image; the driver streams those rows into one Parquet
file. A file that fails becomes a row with its error: nothing stops the run.

Without an address a private local cluster is started (``ray.init(address="local",
num_cpus=...)``) and stopped afterwards; with ``--address`` or ``RAY_ADDRESS`` the run joins that
cluster. On a cluster of several machines, the images and the weights must be readable at the same
paths on every node (a shared file system), and medcnn with its requirements must be installed on
every node; the Parquet file is written on the driver's machine.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_BATCH", "RayUnavailableError", "ScoreSummary", "connect", "score_with_ray"]

#: Images per actor call (one forward pass per model within it).
DEFAULT_BATCH = 16
#: Object store of a local cluster: paths and result rows are small.
_LOCAL_OBJECT_STORE = 256 * 1024 * 1024
_INSTALL = "pip install -r requirements-scale.txt"


class RayUnavailableError(ImportError):
    """Ray Data is not installed (it is an optional extra)."""


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is the ray[data] extra)
    except ImportError as e:
        raise RayUnavailableError(f"--engine ray needs the optional Ray extra: {_INSTALL} ({e})") from None
    return ray


@dataclass
class ScoreSummary:
    """Outcome of a scoring run.

    Attributes:
        out: The Parquet file written.
        rows: Images scored (one row each).
        errors: Rows whose file could not be read or predicted.
        not_analysed: Rows the out-of-distribution gate withheld.
        workers: Size of the actor pool.
        seconds: Wall time from the first batch submitted to the file written (actor start-up included).
        images_per_s: Steady throughput: rows after the first batch over the time after it arrived
            (start-up excluded); None when everything came in one batch.
    """

    out: Path
    rows: int
    errors: int
    not_analysed: int
    workers: int
    seconds: float
    images_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        rate = None if self.images_per_s is None else round(self.images_per_s, 2)
        return {"out": str(self.out), "rows": self.rows, "errors": self.errors, "not_analysed": self.not_analysed,
                "workers": self.workers, "seconds": round(self.seconds, 3), "images_per_s": rate}


class _RayScorer:
    """The actor: a :class:`~medcnn.distributed.scoring.BatchScorer` working in the driver's folder,
    so relative paths and their error messages read as they do in ``predict``."""

    def __init__(self, workdir: str | None = None, **kwargs: Any):
        from medcnn.distributed.scoring import BatchScorer

        if workdir and os.path.isdir(workdir):
            os.chdir(workdir)
        self.scorer = BatchScorer(**kwargs)

    def __call__(self, batch: Any) -> Any:
        return self.scorer(batch)


def _code_path() -> str:
    """The folder holding the ``medcnn`` package (put on the workers' import path)."""
    return str(Path(__file__).resolve().parents[2])


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray for the length of a run: join ``address`` (or ``RAY_ADDRESS``), else start a local cluster.

    A Ray session the caller already started is used as it is and left running.

    Args:
        address: Cluster address (``ray://host:10001`` or ``host:6379``); None: ``$RAY_ADDRESS``,
            else a new local cluster.
        num_cpus: CPUs of a new local cluster (default: this machine's).

    Yields:
        The ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed.
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level=logging.WARNING,
                 runtime_env={"py_modules": [str(Path(_code_path()) / "medcnn")]})
    else:
        path = os.pathsep.join(p for p in (_code_path(), os.environ.get("PYTHONPATH")) if p)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 logging_level=logging.WARNING,
                 object_store_memory=_LOCAL_OBJECT_STORE, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield ray
    finally:
        ray.shutdown()


def _pool(ray: Any, workers: int | None, device: str | None) -> tuple[int, dict[str, Any], str]:
    """Actor count, per-actor resources and device, from the cluster's CPUs and GPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus:
        n = workers or gpus
        return n, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    n = workers or cpus
    return n, {"num_cpus": max(1, cpus // n)}, "cpu"


def score_with_ray(paths: Sequence[str], out: str | Path, *, model: str | Path | None = None,
                   weights_dir: str | Path | None = None, device: str | None = None,
                   workers: int | None = None, batch_size: int = DEFAULT_BATCH,
                   progress: bool | None = None) -> ScoreSummary:
    """Score ``paths`` on the connected Ray cluster and write one Parquet row per image.

    Call it inside :func:`connect`.

    Args:
        paths: Image files, readable on every node (see :func:`medcnn.distributed.sources.expand_sources`).
        out: Parquet file to write (replaced atomically at the end).
        model: Card path serving every file (None: chosen per image by modality).
        weights_dir: Folder of the cards for the automatic choice.
        device: ``cpu`` keeps the actors off GPUs; otherwise one GPU per actor when the cluster has them.
        workers: Actors in the pool (default: one per GPU, else one per CPU).
        batch_size: Images per actor call.
        progress: Ray Data progress bars (default: when stderr is a terminal).

    Returns:
        A :class:`ScoreSummary`.

    Raises:
        ValueError: no paths, or a pool or batch size below 1.
    """
    import pyarrow.parquet as pq

    from medcnn.distributed.scoring import arrow_schema
    from medcnn.inference import NOT_ANALYSED, default_weights_dir

    if not paths:
        raise ValueError("nothing to score: no image files in the given sources")
    if (workers is not None and workers < 1) or batch_size < 1:
        raise ValueError(f"--workers and the batch size must be >= 1, got {workers} and {batch_size}")
    ray = _ray()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run INFO lines on stderr
    n, resources, actor_device = _pool(ray, workers, device)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows in the order of the file list
    ctx.enable_progress_bars = sys.stderr.isatty() if progress is None else progress
    blocks = min(len(paths), max(n, math.ceil(len(paths) / batch_size)), 4096)
    ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=blocks)
    ds = ds.map_batches(
        _RayScorer, batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=n),
        fn_constructor_kwargs={"workdir": os.getcwd(), "model": str(Path(model).resolve()) if model else None,
                               "weights_dir": str(Path(weights_dir or default_weights_dir()).resolve()),
                               "device": actor_device, "threads": resources.get("num_cpus", 1)},
        **resources,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    schema = arrow_schema()
    rows = errors = withheld = first_rows = 0
    t0 = t_first = time.perf_counter()
    with pq.ParquetWriter(tmp, schema) as writer:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            table = table.select(schema.names).cast(schema)
            writer.write_table(table)
            if not first_rows:
                first_rows, t_first = table.num_rows, time.perf_counter()
            rows += table.num_rows
            errors += table.num_rows - sum(bool(v) for v in table.column("ok").to_pylist())
            withheld += sum(v == NOT_ANALYSED for v in table.column("decision").to_pylist())
    tmp.replace(out)
    t_end = time.perf_counter()
    rate = (rows - first_rows) / (t_end - t_first) if rows > first_rows and t_end > t_first else None
    return ScoreSummary(out, rows, errors, withheld, n, t_end - t0, rate)
