"""Benchmark every registered architecture: training and inference throughput on CPU.

For each name in :data:`medcnn.models.MODELS` (1 input channel, 2 classes, weights=None):

* params (millions) and the size of its fp32 checkpoint (``torch.save(state_dict)``, MB = 10^6 bytes);
* train: images/s of forward + cross-entropy backward + ``AdamW.step`` on random
  ``(B, 1, S, S)`` batches (B = ``--train-batch``, default 16), model in train mode;
* infer b1 / b32: images/s of a forward pass under ``torch.inference_mode`` (eval mode)
  at batch 1 and batch 32.

Each timing is the median over a fixed small number of iterations after warm-up
(``--quick`` uses fewer). The ratio columns divide each throughput by that of the
textbook baseline ``simplecnn`` measured in the same run (``x`` = times as fast as
simplecnn; below 1 = slower). ``os.getloadavg()`` is printed at start and end, and
``cpu/wall`` (process CPU time over wall time, median over the timed iterations; about
``--threads`` when the threads had the cores to themselves) shows how much other
processes took: on a shared machine compare ratios, not absolute numbers.

Usage:
    python benchmarks/bench_models.py [--size 224] [--threads 1] [--quick] [--json]
                                      [--arch resnet18 densenet121 ...]
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASELINE = "simplecnn"
#: (warm-up, timed) iterations per measurement; ``--quick`` uses the second table.
ITERS = {"train": (1, 4), "b1": (2, 10), "b32": (1, 3)}
QUICK_ITERS = {"train": (1, 2), "b1": (1, 4), "b32": (1, 1)}


def _timed(step: Callable[[], Any], warmup: int, iters: int) -> tuple[float, float]:
    """Median wall seconds and median process-CPU seconds of ``step`` over ``iters`` calls."""
    for _ in range(warmup):
        step()
    walls, cpus = [], []
    for _ in range(iters):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _checkpoint_mb(model) -> float:
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / 1e6


def train_throughput(model, size: int, batch: int, warmup: int, iters: int) -> tuple[float, float]:
    """Images/s of forward + cross-entropy backward + AdamW step, and the cpu/wall share."""
    import torch
    from torch import nn

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 2, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    wall, cpu = _timed(step, warmup, iters)
    return batch / wall, cpu / wall


def infer_throughput(model, size: int, batch: int, warmup: int, iters: int) -> tuple[float, float]:
    """Images/s of an eval-mode forward pass under ``torch.inference_mode``, and the cpu/wall share."""
    import torch

    model.eval()
    x = torch.randn(batch, 1, size, size)

    def step() -> None:
        with torch.inference_mode():
            model(x)

    wall, cpu = _timed(step, warmup, iters)
    return batch / wall, cpu / wall


def measure(name: str, size: int, train_batch: int, iters: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Params, checkpoint size and the three throughputs (images/s) of one architecture."""
    import torch

    from medcnn.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_chans=1)
    row: dict[str, Any] = {
        "arch": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "checkpoint_mb": _checkpoint_mb(model),
    }
    row["train_ips"], share_train = train_throughput(model, size, train_batch, *iters["train"])
    gc.collect()
    row["infer_b1_ips"], share_b1 = infer_throughput(model, size, 1, *iters["b1"])
    row["infer_b32_ips"], share_b32 = infer_throughput(model, size, 32, *iters["b32"])
    row["cpu_per_wall"] = statistics.median([share_train, share_b1, share_b32])
    del model
    gc.collect()
    return row


def add_ratios(rows: list[dict[str, Any]], baseline: str = BASELINE) -> None:
    """Add ``<metric>_x`` = throughput / baseline's throughput (same run) to every row."""
    base = next((r for r in rows if r["arch"] == baseline), None)
    for r in rows:
        for key in ("train_ips", "infer_b1_ips", "infer_b32_ips"):
            r[key.replace("_ips", "_x")] = r[key] / base[key] if base else None


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of the measured rows (Markdown-compatible)."""
    head = ["arch", "params M", "ckpt MB", "train img/s", "x", "infer b1 img/s", "x",
            "infer b32 img/s", "x", "cpu/wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in rows:
        cells = [r["arch"], f"{r['params_m']:.2f}", f"{r['checkpoint_mb']:.1f}",
                 f"{r['train_ips']:.1f}", ratio(r["train_x"]), f"{r['infer_b1_ips']:.1f}", ratio(r["infer_b1_x"]),
                 f"{r['infer_b32_ips']:.1f}", ratio(r["infer_b32_x"]), f"{r['cpu_per_wall']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="input side S of the (B, 1, S, S) batches")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--train-batch", type=int, default=16, help="training batch size B (default 16)")
    parser.add_argument("--arch", nargs="+", default=None,
                        help=f"architectures to measure (default: all; {BASELINE} is always added as baseline)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run, noisier)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.size < 32 or args.threads < 1 or args.train_batch < 1:
        parser.error("--size must be >= 32, --threads and --train-batch >= 1")

    import torch

    from medcnn.models import MODELS

    names = list(MODELS) if not args.arch else [BASELINE] + [a for a in args.arch if a != BASELINE]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown architecture(s) {', '.join(unknown)}; valid: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    iters = QUICK_ITERS if args.quick else ITERS
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    rows = []
    for name in names:
        rows.append(measure(name, args.size, args.train_batch, iters))
        if not args.json:
            print(f"  measured {name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    add_ratios(rows)
    load_end = os.getloadavg()
    info = {
        "size": args.size, "threads": args.threads, "train_batch": args.train_batch, "quick": args.quick,
        "iters": {k: {"warmup": w, "timed": n} for k, (w, n) in iters.items()},
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": load_end,
        "seconds": time.perf_counter() - t0, "baseline": BASELINE,
    }
    if args.json:
        print(json.dumps({**info, "rows": rows}, indent=2))
        return 0
    print(f"CPU, {args.threads} thread(s), input 1x{args.size}x{args.size}, train batch {args.train_batch}, "
          f"torch {torch.__version__}, {os.cpu_count()} cores"
          f"{' (quick)' if args.quick else ''}")
    print("load average (1/5/15 min) at start: " + " / ".join(f"{v:.2f}" for v in load_start)
          + ", at end: " + " / ".join(f"{v:.2f}" for v in load_end))
    print(format_table(rows))
    print(f"x = throughput / {BASELINE}'s in this run; medians over "
          + ", ".join(f"{k} {n}" for k, (_, n) in iters.items()) + f" timed iterations; "
          f"{info['seconds']:.0f} s in total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
