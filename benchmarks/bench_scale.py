"""Benchmark: batch scoring throughput, local ``predict`` vs Ray with 1 and 2 workers, one run.

Each engine scores the same images (the first ``--n`` files of the RSNA chest X-ray folder, listed
in one manifest CSV) with the same model (``weights/cxr_pneumonia.json``, its gate included), as
the user runs it: ``python -m medcnn predict --engine ENGINE MANIFEST --out FILE.parquet`` in a
fresh process, so the wall time includes importing torch, starting Ray and loading the model.

Two numbers per engine, both from one run: the end-to-end wall time of the process, and the
steady throughput the command itself reports (``images_per_s``: images after the first result
over the time after it, so imports, Ray's start and the actors' model loading are excluded).
``start-up = wall - n / rate``; the crossover is the image count from which an engine is faster
end to end than the local baseline: ``(start-up - local start-up) / (1 / local rate - 1 / rate)``.
Ratios are against the local engine measured in this run. Threads: local uses torch's default
(one per core); Ray gives each of W actors ``cores / W`` CPUs and as many torch threads.

Usage:
    python benchmarks/bench_scale.py [--n 1024] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("MEDCNN_SHARED_DATA", REPO.parent / "shared" / "data")) / "rsna_cxr_pneumonia"
CARD = REPO / "weights" / "cxr_pneumonia.json"
ENGINES = [("local", ["--engine", "local"]), ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]),
           ("ray, 2 workers", ["--engine", "ray", "--workers", "2"])]


def score(manifest: Path, extra: list[str], out: Path) -> tuple[float, dict]:
    """Wall seconds of one ``predict`` process and its summary."""
    cmd = [sys.executable, "-m", "medcnn", "predict", str(manifest), "--model", str(CARD), "--device", "cpu",
           "--out", str(out), "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def run(n: int) -> dict:
    from medcnn.distributed.sources import expand_sources

    files = expand_sources([DATA])[:n]
    if len(files) < n:
        raise SystemExit(f"only {len(files)} images in {DATA}, asked for {n}")
    results = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("path\n" + "\n".join(files) + "\n")
        for name, extra in ENGINES:
            wall, summary = score(manifest, extra, Path(tmp) / "out.parquet")
            rate = summary["images_per_s"]
            results.append({"engine": name, "wall_s": round(wall, 2), "images_per_s_end_to_end": round(n / wall, 2),
                            "images_per_s": rate, "startup_s": round(wall - n / rate, 2),
                            "errors": summary["errors"]})
    base = results[0]
    for r in results:
        r["ratio_vs_local"] = round(r["images_per_s"] / base["images_per_s"], 3)
        r["end_to_end_ratio_vs_local"] = round(base["wall_s"] / r["wall_s"], 3)
        saved_per_image = 1 / base["images_per_s"] - 1 / r["images_per_s"]
        r["crossover_images"] = (None if r is base or saved_per_image <= 0
                                 else max(0, round((r["startup_s"] - base["startup_s"]) / saved_per_image)))
    return {"n": n, "cores": os.cpu_count(), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="images scored by each engine (default 1024)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir() or not CARD.is_file():
        print(f"skipped: needs {DATA} and {CARD} (../shared/data is only present in CI and on the "
              "developers' machines)")
        return 0
    try:
        import ray  # noqa: F401
    except ImportError:
        print("skipped: Ray is not installed (pip install -r requirements-scale.txt)")
        return 0
    res = run(args.n)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['n']} images, {res['cores']} cores, CPU only; load average {res['load_before']} before, "
          f"{res['load_after']} after")
    print(f"{'engine':16s} {'wall s':>8s} {'img/s e2e':>10s} {'img/s':>8s} {'start-up s':>11s} "
          f"{'ratio':>7s} {'e2e ratio':>10s} {'crossover':>10s}")
    for r in res["results"]:
        cross = "-" if r["crossover_images"] is None else f"{r['crossover_images']} img"
        print(f"{r['engine']:16s} {r['wall_s']:8.2f} {r['images_per_s_end_to_end']:10.2f} {r['images_per_s']:8.2f} "
              f"{r['startup_s']:11.2f} {r['ratio_vs_local']:7.3f} {r['end_to_end_ratio_vs_local']:10.3f} "
              f"{cross:>10s}")
    print("ratio = throughput / local throughput (start-up excluded); e2e ratio = local wall / engine wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
