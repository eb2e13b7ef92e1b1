"""Benchmark: decode + full preprocessing vs a naive baseline, measured in the same run.

Ours:  ``Pipeline.from_config(default_config(task))(read_image(path))`` — content
       detection, Modality LUT to float32, file window / VOI, MONOCHROME1 inversion,
       pad to square, resize, normalise to a (1, 1, H, W) tensor, every step kept.
Naive: ``pydicom.dcmread(path).pixel_array`` + min-max scaling to [0, 1] +
       ``cv2.resize`` to the same size (no rescale, no VOI, no inversion, no padding).

Cases: the 1955x1841 JPEG 2000 chest CR (RG1_J2KI.dcm, CXR config) and a 512x512 CT
(693_UNCR.dcm, CT config) from ../shared/data/dicom_samples. Target: ours/naive <= 1.2.
Both wall-clock and process-CPU medians are printed: on a shared, loaded machine the
CPU-time ratio is the stable one (preemption by other processes inflates wall time).

Usage:
    python benchmarks/bench_io.py [--repeats 15] [--warmup 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLES = Path(os.environ.get("MEDCNN_SHARED_DATA", REPO.parent / "shared" / "data")) / "dicom_samples"
CASES = [("RG1_J2KI.dcm", "CXR", "chest CR 1955x1841, JPEG 2000 lossy"),
         ("693_UNCR.dcm", "CT", "head CT 512x512, uncompressed")]
TARGET = 1.2


def naive(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The baseline: pixel_array + min-max to [0, 1] + cv2.resize."""
    import cv2
    import pydicom

    arr = pydicom.dcmread(path).pixel_array.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo if hi > lo else 1.0)
    return cv2.resize(arr, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def interleaved_medians(fns: list[Callable[[], object]], repeats: int, warmup: int) -> list[tuple[float, float]]:
    """(median wall seconds, median process-CPU seconds) of each function, timed alternately.

    Alternating the functions spreads load changes over both; the CPU time (all threads of
    this process) is not inflated when other processes preempt us on a shared machine.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def run(repeats: int, warmup: int) -> list[dict]:
    import cv2
    import torch

    from medcnn.io import read_image
    from medcnn.preprocess import Pipeline, default_config

    torch.set_num_threads(1)  # same threading for both sides: one torch / OpenCV thread
    cv2.setNumThreads(1)
    results = []
    for name, task, what in CASES:
        path = SAMPLES / name
        pipe = Pipeline.from_config(default_config(task))
        size = tuple(pipe.input_size)

        def ours(path=path, pipe=pipe):
            return pipe(read_image(path)).tensor

        def baseline(path=path, size=size):
            return naive(path, size)

        shape = tuple(ours().shape)
        t0 = time.perf_counter()
        baseline()
        fast = time.perf_counter() - t0 < 0.02
        n = repeats * 20 if fast else repeats  # more repeats for fast cases
        (w_ours, c_ours), (w_naive, c_naive) = interleaved_medians([ours, baseline], n, warmup)
        results.append({"file": name, "task": task, "what": what, "output": list(shape), "repeats": n,
                        "ours_ms": round(w_ours * 1e3, 3), "naive_ms": round(w_naive * 1e3, 3),
                        "ratio": round(w_ours / w_naive, 3),
                        "ours_cpu_ms": round(c_ours * 1e3, 3), "naive_cpu_ms": round(c_naive * 1e3, 3),
                        "cpu_ratio": round(c_ours / c_naive, 3), "target": TARGET})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per case (x20 for cases under 20 ms); median reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per case")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    missing = [name for name, _, _ in CASES if not (SAMPLES / name).is_file()]
    if missing:
        print(f"error: benchmark files not found in {SAMPLES}: {', '.join(missing)}", file=sys.stderr)
        return 2
    results = run(args.repeats, args.warmup)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"decode + full preprocessing: median of {args.repeats} interleaved runs (x20 for cases "
              f"under 20 ms) after {args.warmup} warm-up; 1 torch/OpenCV thread; os.getloadavg()="
              f"{tuple(round(v, 1) for v in os.getloadavg())}")
        print(f"{'file':14s} {'task':4s} {'wall ours':>10s} {'naive':>8s} {'ratio':>6s} "
              f"{'cpu ours':>9s} {'naive':>8s} {'ratio':>6s}  (ms; target ratio <= {TARGET})")
        for r in results:
            flag = "ok" if min(r["ratio"], r["cpu_ratio"]) <= TARGET else "OVER"
            print(f"{r['file']:14s} {r['task']:4s} {r['ours_ms']:10.2f} {r['naive_ms']:8.2f} {r['ratio']:6.2f} "
                  f"{r['ours_cpu_ms']:9.2f} {r['naive_cpu_ms']:8.2f} {r['cpu_ratio']:6.2f}  {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
