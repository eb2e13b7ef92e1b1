"""Real-browser latency of the Analyze page: upload finished -> probabilities + Grad-CAM overlay visible.

Target (issue 4): at most 3 s for a 2k x 2k chest radiograph on the 2-core CPU.

Method: ``streamlit run app.py`` on a free port (shipped weights when present, else
random-init stand-ins of the same architecture and input size: the output says which), Debian's chromium driven by Playwright. Each run
uploads a *different* 2048 x 2048 PNG made in memory by upscaling a real chest X-ray of
``../shared/data/rsna_cxr_pneumonia`` (so no cache hit), and the clock runs from the HTTP
response of the upload to the moment the decision text and the decoded overlay image of
that file are in the page. Run 1 is the first upload in a fresh page (the browser still
loads the chart code); the headline is the median of the later runs. The real CR DICOM
``RG1_J2KI.dcm`` (1955 x 1841, JPEG 2000) is timed once as well, and so are the six full-size
scanner CT slices of ``../shared/data/ct_hu/original_dicom`` (512 x 512, Hounsfield units, JPEG
Lossless; routed to the CT model), reported as their median after the first.

Baseline, measured in the same run: the same work without browser or Streamlit
(``read_image`` + ``Predictor.predict`` + Grad-CAM + overlay, in this process); the ratio
browser / baseline is the cost of the web app around the computation.

Usage::

    python benchmarks/bench_app_latency.py [--runs 6] [--weights DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))
DATA = Path(os.environ.get("MEDCNN_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET_S = 3.0


def chest_pngs(n: int, size: int = 2048) -> list[tuple[str, bytes]]:
    """``n`` distinct size x size 8-bit PNGs upscaled (bicubic) from real RSNA chest X-rays."""
    sources = sorted((DATA / "rsna_cxr_pneumonia" / "test").rglob("*.jpg"))[:n]
    if len(sources) < n:
        raise SystemExit(f"need {n} chest X-rays under {DATA / 'rsna_cxr_pneumonia' / 'test'}")
    out = []
    for src in sources:
        img = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
        out.append((f"cxr_{size}_{src.stem[:8]}.png", cv2.imencode(".png", big)[1].tobytes()))
    return out


def random_weights(folder: Path, arch: str, size: int) -> Path:
    """CXR + CT cards with randomly initialised ``arch`` at ``size`` px: the same compute as
    trained weights of that architecture (used while no shipped weights exist)."""
    import torch

    from medcnn.models.card import ModelCard
    from medcnn.models import create_model, default_target_layer, save_checkpoint
    from medcnn.preprocess import default_config

    torch.manual_seed(0)
    for name, task, labels, mods in (("cxr_pneumonia", "CXR", ["NORMAL", "PNEUMONIA"], ["CR", "DX"]),
                                     ("ct_covid", "CT", ["NonCOVID", "COVID"], ["CT"])):
        card = ModelCard(name=name, architecture=arch, modality=task, labels=labels, positive_label=labels[1],
                         input_size=(size, size), preprocessing=default_config(task, size),
                         target_layer=default_target_layer(arch), dicom_modalities=mods)
        save_checkpoint(create_model(arch).eval(), card, folder / name)
    return folder


def baseline_seconds(weights: Path, files: list[tuple[str, bytes]]) -> list[float]:
    """In-process time of decode + predict + Grad-CAM + overlay per file (no browser)."""
    from medcnn.explain import explain
    from medcnn.inference import Predictor, choose_model
    from medcnn.io import read_image
    from medcnn.visualize import overlay

    times = []
    predictor = None
    for _, data in files:
        t0 = time.perf_counter()
        img = read_image(data)
        if predictor is None:
            predictor = Predictor(choose_model(img.meta, weights))
            t0 = time.perf_counter()
            img = read_image(data)
        pred = predictor.predict(img)
        head = predictor.card.head_rule  # the page's default target: the decided label or the top finding
        target = head.default_target(pred)
        expl = explain(predictor.model, pred.pipeline_result.tensor, target, "gradcam", head=head,
                       layer=predictor.card.target_layer)
        overlay(pred.pipeline_result.display, expl.heatmap)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="2k x 2k uploads (distinct images)")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: shipped, else tiny)")
    parser.add_argument("--arch", default="resnet18",
                        help="architecture of random-weight stand-ins when no shipped weights exist")
    parser.add_argument("--size", type=int, default=256, help="input size of the stand-ins")
    parser.add_argument("--screenshots", type=Path, default=Path(tempfile.gettempdir()) / "medcnn_bench_shots")
    args = parser.parse_args()

    from browser_helpers import CHROMIUM, chromium_page, open_analyze, shipped_weights, streamlit_server, upload_and_wait

    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium")
    weights = args.weights or shipped_weights()
    kind = "shipped" if weights is not None and args.weights is None else "given"
    if weights is None:
        weights = random_weights(Path(tempfile.mkdtemp(prefix="medcnn_bench_w")), args.arch, args.size)
        kind = f"random-init {args.arch} at {args.size} px (no shipped weights yet)"
    files = chest_pngs(args.runs)
    dicom = DATA / "dicom_samples" / "RG1_J2KI.dcm"
    ct_files = [(p.stem, p.read_bytes()) for p in sorted((DATA / "ct_hu" / "original_dicom").glob("*.dcm"))]
    print(f"weights: {weights} ({kind}); {len(files)} uploads of 2048x2048 PNG "
          f"({np.mean([len(d) for _, d in files]) / 2**20:.1f} MiB each); cpu cores: {os.cpu_count()}; "
          f"load average: {os.getloadavg()[0]:.2f}")

    base = baseline_seconds(weights, files)
    ct_base = baseline_seconds(weights, ct_files) if ct_files else []
    results = []
    args.screenshots.mkdir(parents=True, exist_ok=True)
    with streamlit_server(weights) as url, chromium_page() as page:
        open_analyze(page, url)
        for i, (name, data) in enumerate(files, start=1):
            r = upload_and_wait(page, name, data, "image/png")
            results.append(r)
            print(f"run {i}: {r['after_upload']:.2f} s after upload ({r['total']:.2f} s incl. upload)")
        page.screenshot(path=str(args.screenshots / "bench_last.png"))
        dicom_r = None
        if dicom.is_file():
            dicom_r = upload_and_wait(page, "RG1_J2KI", dicom.read_bytes(), "application/octet-stream")
            print(f"RG1_J2KI.dcm (1955x1841 CR, JPEG 2000): {dicom_r['after_upload']:.2f} s after upload")
        ct = [upload_and_wait(page, name, data, "application/octet-stream")["after_upload"] for name, data in ct_files]
        for (name, _), seconds in zip(ct_files, ct):
            print(f"{name} (512x512 CT, Hounsfield units, JPEG Lossless): {seconds:.2f} s after upload")
    warm = [r["after_upload"] for r in results[1:]] or [results[0]["after_upload"]]
    med, base_med = statistics.median(warm), statistics.median(base[1:] or base)
    summary = {
        "first_upload_s": round(results[0]["after_upload"], 3), "median_s": round(med, 3),
        "max_s": round(max(warm), 3), "baseline_compute_median_s": round(base_med, 3),
        "ratio_browser_vs_compute": round(med / base_med, 2), "ratio_vs_target_3s": round(med / TARGET_S, 2),
        "dicom_rg1_s": round(dicom_r["after_upload"], 3) if dicom_r else None, "weights": kind,
        "load_average": round(os.getloadavg()[0], 2),
        "ct_dicom_median_s": round(statistics.median(ct[1:] or ct), 3) if ct else None,
        "ct_dicom_max_s": round(max(ct), 3) if ct else None,
        "ct_baseline_compute_median_s": round(statistics.median(ct_base[1:] or ct_base), 3) if ct_base else None,
    }
    print(f"median {med:.2f} s (max {max(warm):.2f} s) upload -> probabilities + overlay visible; "
          f"first upload in a fresh page {results[0]['after_upload']:.2f} s; in-process compute "
          f"{base_med:.2f} s; browser/compute = {med / base_med:.1f}x; vs 3 s target = {med / TARGET_S:.2f}")
    if ct:
        print(f"CT slices: median {summary['ct_dicom_median_s']:.2f} s (max {max(ct):.2f} s); in-process compute "
              f"{summary['ct_baseline_compute_median_s']:.2f} s")
    print(json.dumps(summary))
    return 0 if med <= TARGET_S and (not ct or summary["ct_dicom_median_s"] <= TARGET_S) else 1


if __name__ == "__main__":
    raise SystemExit(main())
