"""Benchmark medcnn.explain: IG vs Captum's default call, Grad-CAM vs pytorch-grad-cam,
time and peak memory of every method.

    python benchmarks/bench_explain.py --model weights/cxr_pneumonia.json [--image FILE]
    python benchmarks/bench_explain.py --arch smallresnet --size 256     # no weights yet

Every measurement runs in its own subprocess; peak memory is the growth of the
process's maximum resident set size (``resource.getrusage(...).ru_maxrss``) over the
state after building the model and one warm-up forward pass. Times are the minimum over
``--repeat`` runs (this CPU is shared). Without ``--image`` the input is a synthetic
smooth image (two Gaussian blobs). Captum IG is called exactly as
``IntegratedGradients(model).attribute(x, target=t, n_steps=50, internal_batch_size=None,
return_convergence_delta=True)`` (baseline = zeros); ours uses the same zero baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _setup(spec: dict):
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model_path = spec.get("model")
    layer = None
    if model_path and Path(model_path).is_file():
        from medcnn.models import load_model
        from medcnn.preprocess import Pipeline

        model, card = load_model(model_path, device="cpu")
        size = tuple(card.input_size)
        layer = card.target_layer
        target = card.positive_index
        if spec.get("image"):
            from medcnn.io import read_image

            x = Pipeline.from_config(card.preprocessing)(read_image(spec["image"]), keep_steps=False).tensor
        else:
            x = None
    else:
        from medcnn.models import create_model, default_target_layer

        model = create_model(spec["arch"], num_classes=2, in_chans=1)
        size = (spec["size"], spec["size"])
        layer = default_target_layer(spec["arch"])
        target, x = 1, None
    model.eval()
    if x is None:
        yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
        img = np.exp(-((xx - 0.6) ** 2 + (yy - 0.4) ** 2) / 0.01) + 0.5 * np.exp(
            -((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.2)
        x = torch.from_numpy(((img / img.max() - 0.5) / 0.25).astype(np.float32)).view(1, 1, *size)
    with torch.no_grad():
        model(x)
    return model, x, target, layer


def worker(name: str, spec: dict) -> dict:
    import torch

    model, x, t, layer = _setup(spec)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, extra, out_map = [], {}, None
    for _ in range(spec["repeat"]):
        t0 = time.perf_counter()
        if name == "captum_ig":
            from captum.attr import IntegratedGradients

            a, d = IntegratedGradients(model).attribute(
                x, target=t, n_steps=50, internal_batch_size=None, return_convergence_delta=True)
            with torch.no_grad():
                gap = float(model(x)[0, t] - model(torch.zeros_like(x))[0, t])
            extra = {"delta": float(d), "rel_delta": abs(float(d)) / abs(gap), "steps": 50}
            out_map = a[0, 0].detach().numpy()
        elif name == "pgc_gradcam":
            from pytorch_grad_cam import GradCAM
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
                out_map = cam(input_tensor=x, targets=[ClassifierOutputTarget(t)])[0]
        else:
            from medcnn.explain import explain

            method, opts = {
                "ours_ig": ("integrated_gradients", {"baseline": "mean", "baseline_value": 0.0}),
                "ours_ig_matched": ("integrated_gradients", {"baseline": "mean", "baseline_value": 0.0,
                                                             "tol": spec.get("tol", 0.01), "max_steps": 1024}),
                "ours_gradcam": ("gradcam", {"layer": layer}),
                "smoothgrad": ("smoothgrad", {}),
                "occlusion": ("occlusion", {}),
                "guided_gradcam": ("guided_gradcam", {"layer": layer}),
            }[name]
            e = explain(model, x, t, method, **opts)
            out_map = e.heatmap if method == "gradcam" else e.attribution
            if e.delta is not None:
                extra = {"delta": e.delta, "rel_delta": e.params["rel_delta"], "steps": e.params["steps"],
                         "batch": e.params["internal_batch_size"], "floor": e.params["precision_floor"]}
        times.append(time.perf_counter() - t0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if spec.get("map_out"):
        np.save(spec["map_out"], np.asarray(out_map, dtype=np.float32))
    return {"name": name, "seconds": min(times), "peak_mb": (rss1 - rss0) / 1024.0, **extra}


def measure(name: str, spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    r = subprocess.run([sys.executable, __file__, "--_worker", name, "--_spec", json.dumps(spec)],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="weights/<name>.json (random init if absent)")
    p.add_argument("--arch", default="smallresnet", help="architecture when no weights exist")
    p.add_argument("--size", type=int, default=256, help="input size when no weights exist")
    p.add_argument("--image", default=None, help="image file (default: synthetic)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._worker:
        print(json.dumps(worker(args._worker, json.loads(args._spec))))
        return 0
    if args.model and not Path(args.model).is_file():
        print(f"note: {args.model} not found; using a randomly initialised {args.arch} "
              f"at {args.size}x{args.size}", file=sys.stderr)
    spec = {"model": args.model, "arch": args.arch, "size": args.size, "image": args.image,
            "threads": args.threads, "repeat": args.repeat}
    tmp = Path(tempfile.mkdtemp(prefix="bench_explain_"))
    rows = {}
    for name in ("captum_ig", "ours_ig", "ours_gradcam", "pgc_gradcam", "smoothgrad",
                 "occlusion", "guided_gradcam"):
        rows[name] = measure(name, {**spec, "map_out": str(tmp / f"{name}.npy")})
    rows["ours_ig_matched"] = measure("ours_ig_matched", {**spec, "tol": rows["captum_ig"]["rel_delta"],
                                                          "map_out": str(tmp / "m.npy")})
    ours, pgc = np.load(tmp / "ours_gradcam.npy"), np.load(tmp / "pgc_gradcam.npy")
    r_cam = float(np.corrcoef(ours.ravel(), pgc.ravel())[0, 1])
    ig_a, ig_c = np.load(tmp / "ours_ig.npy"), np.load(tmp / "captum_ig.npy")
    r_ig = float(np.corrcoef(ig_a.ravel(), ig_c.ravel())[0, 1])
    src = args.model if args.model and Path(args.model).is_file() else f"{args.arch} (random init)"
    print(f"\nmodel: {src}, threads {args.threads}, min of {args.repeat} runs\n")
    print(f"{'method':<18}{'seconds':>9}{'peak MB':>9}{'|delta|/gap':>13}{'steps':>7}")
    for name, r in rows.items():
        rd = f"{r['rel_delta']:.2e}" if "rel_delta" in r else "-"
        print(f"{name:<18}{r['seconds']:>9.3f}{r['peak_mb']:>9.0f}{rd:>13}{r.get('steps', '-'):>7}")
    c, o, m = rows["captum_ig"], rows["ours_ig"], rows["ours_ig_matched"]
    print(f"\nIG speed-up (ours default tol=0.01 vs Captum n_steps=50): {c['seconds'] / o['seconds']:.2f}x, "
          f"|delta| ours {abs(o['delta']):.2e} vs Captum {abs(c['delta']):.2e}; map Pearson {r_ig:.4f}")
    cmp = "<=" if abs(m["delta"]) <= abs(c["delta"]) else ">"
    print(f"IG speed-up with tol = Captum's relative delta ({c['rel_delta']:.2e}): "
          f"{c['seconds'] / m['seconds']:.2f}x, |delta| {abs(m['delta']):.2e} {cmp} Captum's "
          f"(float32 floor 1e-6*max|logit| = {m['floor']:.1e}), {m['steps']} steps")
    print(f"Grad-CAM time ratio pytorch-grad-cam / ours: "
          f"{rows['pgc_gradcam']['seconds'] / rows['ours_gradcam']['seconds']:.2f}x; map Pearson {r_cam:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
