"""Benchmark medcnn.explain: IG vs Captum's default call, Grad-CAM vs pytorch-grad-cam,
time and peak memory of every method.

    python benchmarks/bench_explain.py --model weights/cxr_pneumonia.json [--image FILE ...]
    python benchmarks/bench_explain.py --model weights/cxr_pneumonia.json \
        --labels ../shared/data/rsna_cxr_pneumonia/labels.csv --split test --per-class 3
    python benchmarks/bench_explain.py --arch smallresnet --size 256     # no weights yet

IG is compared on every image; the other methods on the first one. Besides time and the
convergence delta, each IG result is compared with a reference computed on the same
image (``--reference-steps`` Gauss-Legendre nodes, default 1024): the relative L2 error of
the attribution map, which is what the delta is meant to stand for. With ``--labels`` the
images are the first ``--per-class`` rows of each label in file order (no selection).

Every measurement runs in its own subprocess; peak memory is the growth of the
process's maximum resident set size (``resource.getrusage(...).ru_maxrss``) over the
state after building the model and one warm-up forward pass. Times are the minimum over
``--repeat`` runs (this CPU is shared). Without ``--image`` the input is a synthetic
smooth image (two Gaussian blobs). Captum IG is called exactly as
``IntegratedGradients(model).attribute(x, target=t, n_steps=50, internal_batch_size=None,
return_convergence_delta=True)`` (baseline = zeros); ours uses the same zero baseline.
Both comparisons are against tools that explain one logit, so ours runs with
``objective="logit"`` here (the app's default objective, the logit difference, costs
the same: one extra subtraction on the output; see the saliency benchmark).
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
            out_map = a[0].detach().sum(0).numpy()
        elif name == "pgc_gradcam":
            from pytorch_grad_cam import GradCAM
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
                out_map = cam(input_tensor=x, targets=[ClassifierOutputTarget(t)])[0]
        else:
            from medcnn.explain import explain

            method, opts = {
                "ours_ig": ("integrated_gradients", {"baseline": "mean", "baseline_value": 0.0}),
                "ours_ig_50": ("integrated_gradients", {"baseline": "mean", "baseline_value": 0.0, "n_steps": 50}),
                "reference_ig": ("integrated_gradients", {"baseline": "mean", "baseline_value": 0.0,
                                                          "n_steps": spec.get("reference_steps", 1024)}),
                "ours_gradcam": ("gradcam", {"layer": layer}),
                "smoothgrad": ("smoothgrad", {}),
                "occlusion": ("occlusion", {}),
                "guided_gradcam": ("guided_gradcam", {"layer": layer}),
            }[name]
            e = explain(model, x, t, method, objective="logit", **opts)
            out_map = e.heatmap if method == "gradcam" else e.attribution
            if e.delta is not None:
                extra = {"delta": e.delta, "rel_delta": e.params["rel_delta"], "steps": e.params["steps"],
                         "batch": e.params["internal_batch_size"], "floor": e.params["precision_floor"],
                         "rel_local_error": e.params["rel_local_error"]}
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


def _images_from_labels(path: str, split: str, per_class: int, first: str | None) -> list[str]:
    """First ``per_class`` rows of each label in file order; label ``first`` leads (the
    Grad-CAM comparison needs a film with positive evidence: an empty map has no correlation)."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str)
    df = df[df["split"] == split]
    labels = sorted(df["label"].unique(), key=lambda lab: (lab != first, lab))
    picks = [df[df["label"] == lab].head(per_class) for lab in labels]
    root = Path(path).parent
    return [str(root / p) for p in pd.concat(picks)["path"]]


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-30))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="weights/<name>.json (random init if absent)")
    p.add_argument("--arch", default="smallresnet", help="architecture when no weights exist")
    p.add_argument("--size", type=int, default=256, help="input size when no weights exist")
    p.add_argument("--image", action="append", default=None, help="image file (repeatable; default: synthetic)")
    p.add_argument("--labels", default=None, help="labels.csv to take images from (see --split, --per-class)")
    p.add_argument("--split", default="test")
    p.add_argument("--per-class", type=int, default=3)
    p.add_argument("--reference-steps", type=int, default=1024)
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
    images = list(args.image or [])
    if args.labels:
        positive = None
        if args.model and Path(args.model).is_file():
            positive = json.loads(Path(args.model).read_text()).get("positive_label")
        images += _images_from_labels(args.labels, args.split, args.per_class, positive)
    images = images or [None]
    spec = {"model": args.model, "arch": args.arch, "size": args.size, "threads": args.threads,
            "repeat": args.repeat, "reference_steps": args.reference_steps}
    tmp = Path(tempfile.mkdtemp(prefix="bench_explain_"))
    src = args.model if args.model and Path(args.model).is_file() else f"{args.arch} (random init)"
    print(f"model: {src}, threads {args.threads}, min of {args.repeat} runs, {len(images)} image(s)")

    first = {**spec, "image": images[0]}
    rows = {name: measure(name, {**first, "map_out": str(tmp / f"{name}.npy")})
            for name in ("ours_gradcam", "pgc_gradcam", "smoothgrad", "occlusion", "guided_gradcam")}
    ours, pgc = np.load(tmp / "ours_gradcam.npy"), np.load(tmp / "pgc_gradcam.npy")
    if ours.std() == 0 or pgc.std() == 0:  # an empty (constant) map: Pearson is undefined, compare directly
        same = bool(np.allclose(ours, pgc, atol=1e-6))
        agreement = f"both maps empty: {'identical' if same else 'NOT identical'}"
    else:
        agreement = f"map Pearson {float(np.corrcoef(ours.ravel(), pgc.ravel())[0, 1]):.4f}"
    print(f"\nother methods on {Path(images[0]).name if images[0] else 'a synthetic image'}:")
    print(f"{'method':<18}{'seconds':>9}{'peak MB':>9}")
    for name, r in rows.items():
        print(f"{name:<18}{r['seconds']:>9.3f}{r['peak_mb']:>9.0f}")
    print(f"Grad-CAM time ratio pytorch-grad-cam / ours: "
          f"{rows['pgc_gradcam']['seconds'] / rows['ours_gradcam']['seconds']:.2f}x; {agreement}")

    print(f"\nIntegrated Gradients (zero baseline); error = relative L2 distance of the map to a "
          f"{args.reference_steps}-node reference")
    print("ours = the interactive default (Captum's 50 Gauss-Legendre nodes: the same map); loc = sum of |local "
          "errors| / gap; 50 = an explicit n_steps=50 call, a second timing of the same computation (the gap "
          "between the two columns is timing noise)")
    print(f"{'image':<14}{'captum s':>9}{'ours s':>8}{'speed-up':>9}{'capt |d|':>10}{'ours |d|':>10}"
          f"{'ours loc':>10}{'steps':>6}{'capt err':>10}{'ours err':>10}{'ours MB':>8}{'capt MB':>8}"
          f"{'50 s':>7}{'50 x':>7}{'50 err':>8}")
    summary = []
    for k, img in enumerate(images):
        sp = {**spec, "image": img}
        c = measure("captum_ig", {**sp, "map_out": str(tmp / f"c{k}.npy")})
        o = measure("ours_ig", {**sp, "map_out": str(tmp / f"o{k}.npy")})
        f50 = measure("ours_ig_50", {**sp, "map_out": str(tmp / f"f{k}.npy")})
        measure("reference_ig", {**sp, "repeat": 1, "map_out": str(tmp / f"r{k}.npy")})
        ref = np.load(tmp / f"r{k}.npy")
        ce, oe = _rel_err(np.load(tmp / f"c{k}.npy"), ref), _rel_err(np.load(tmp / f"o{k}.npy"), ref)
        fe = _rel_err(np.load(tmp / f"f{k}.npy"), ref)
        summary.append((c["seconds"] / o["seconds"], c["rel_delta"], o["rel_delta"], ce, oe,
                        c["seconds"] / f50["seconds"]))
        name = Path(img).name[:12] if img else "synthetic"
        print(f"{name:<14}{c['seconds']:>9.2f}{o['seconds']:>8.2f}{c['seconds'] / o['seconds']:>8.2f}x"
              f"{c['rel_delta']:>10.1e}{o['rel_delta']:>10.1e}{o['rel_local_error']:>10.1e}{o['steps']:>6}"
              f"{ce:>10.3f}{oe:>10.3f}{o['peak_mb']:>8.0f}{c['peak_mb']:>8.0f}"
              f"{f50['seconds']:>7.2f}{c['seconds'] / f50['seconds']:>6.2f}x{fe:>8.3f}", flush=True)
    s = np.asarray(summary)
    med = np.median(s, axis=0)
    print(f"\nmedian over {len(images)}: speed-up {med[0]:.2f}x (min {s[:, 0].min():.2f}x), "
          f"|delta|/gap Captum {med[1]:.1e} vs ours {med[2]:.1e}, map error Captum {med[3]:.3f} vs ours {med[4]:.3f}; "
          f"ours delta <= Captum's on {int((s[:, 2] <= s[:, 1]).sum())}/{len(images)}, "
          f"map error <= Captum's (+1e-3, float rounding) on {int((s[:, 4] <= s[:, 3] + 1e-3).sum())}/{len(images)}; "
          f"at Captum's 50 nodes (equal map) ours is {med[5]:.2f}x faster (min {s[:, 5].min():.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
