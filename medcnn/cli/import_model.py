"""``python -m medcnn import-model``: serve, explain and gate your own 2-D CNN classifier.

Reads the weights (``.safetensors`` or a plain ``state_dict``; a pickled whole model only with
``--allow-pickle``), builds ``--arch`` through the registry, checks the weights, the outputs, the
Grad-CAM layer and Integrated Gradients completeness (:mod:`medcnn.models.importer`), and writes
``<name>.safetensors`` + ``<name>.json`` next to each other. Nothing is written when a check fails.

Then, as for a shipped model: ``fit-ood`` (the gate), ``recalibrate`` (temperature and operating
point on this site's labelled images) and ``evaluate`` (test metrics).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from medcnn.notices import collected

#: Methods whose failure refuses the import (the rest are recorded as failed).
REQUIRED = ("gradcam", "integrated_gradients")
#: Largest |sum(attributions) - (f(x) - f(baseline))| / |f(x) - f(baseline)| accepted for IG.
IG_MAX_REL_DELTA = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m medcnn import-model`` (imports no torch)."""
    parser.add_argument("--arch", required=True, metavar="ARCH_ID",
                        help="torchvision:<name> (resnet18, resnet50, densenet121, efficientnet_b0, convnext_tiny, ...), "
                             "timm:<name> or xrv:densenet121-res224|resnet50-res512 (timm / xrv: requirements-models.txt)")
    parser.add_argument("--weights", required=True, metavar="FILE", help=".safetensors or a torch.save'd state_dict")
    parser.add_argument("--labels", required=True, metavar="A,B[,..]", help="output names, in output order")
    parser.add_argument("--head", choices=("softmax", "sigmoid"), default=None,
                        help="softmax (one label per image) or sigmoid (multi-label); default: sigmoid for xrv:, "
                             "else softmax")
    parser.add_argument("--input-size", type=int, default=None, metavar="N", help="square input side (default 224)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="stem channels: 3 (RGB stem fed the grey image repeated; default) or 1 (xrv: 1)")
    parser.add_argument("--normalize", choices=("imagenet", "xrv", "unit"), default=None,
                        help="pixel contract (default: imagenet for 3 channels, xrv for xrv:, else unit)")
    parser.add_argument("--target-layer", default=None, metavar="NAME",
                        help="Grad-CAM layer, dotted name (default: the last spatial feature map, found automatically)")
    parser.add_argument("--modality", choices=("CXR", "CT"), default="CXR", help="model family (default: CXR)")
    parser.add_argument("--licence", default="", help="the licence the weights' source declares (recorded)")
    parser.add_argument("--source", default="", help="where the weights come from (default: the file name)")
    parser.add_argument("--check-images", nargs="*", default=None, metavar="IMAGE",
                        help="real images to check the outputs on (default: a few from ../shared/data when present)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="accept a pickled whole model: unpickled once in a separate process (runs its code: "
                             "trusted sources only) and converted to safetensors")
    parser.add_argument("--out", required=True, metavar="DIR/NAME.json", help="card to write (weights next to it)")


def check_explanations(model: Any, card: Any, x: Any) -> dict[str, Any]:
    """Run every method of :data:`medcnn.explain.METHODS` on the first check image.

    A method passes when its map is finite and not constant; Integrated Gradients (adaptive rule)
    must also hold completeness (``rel_delta <= IG_MAX_REL_DELTA``). Grad-CAM and IG are required.

    Returns:
        ``{"passed": [...], "failed": {method: reason}, "checked_on": ...}`` for the card.

    Raises:
        ExplanationCheckError: Grad-CAM or IG failed.
    """
    import numpy as np

    from medcnn.explain import METHODS, explain
    from medcnn.models.importer import ExplanationCheckError
    from medcnn.preprocess import Pipeline

    pipe, head = Pipeline.from_config(card.preprocessing), card.head_rule
    passed: list[str] = []
    failed: dict[str, str] = {}
    for method in METHODS:
        try:
            with collected():  # a method's notes: the check reports pass / fail per method
                # IG: the adaptive rule, which refines until completeness holds (tol 1 %, at most 512 steps)
                options = {"n_steps": None, "max_steps": 512} if method == "integrated_gradients" else {}
                e = explain(model, x[:1], head.positive_index, method, layer=card.target_layer, head=head,
                            pipeline=pipe, **options)
            a = e.attribution
            if not (np.isfinite(a).all() and np.isfinite(e.heatmap).all()):
                raise ValueError("the map has NaN or infinite values")
            if float(a.max() - a.min()) <= 0.0:
                raise ValueError(f"the map is constant (layer {card.target_layer!r})" if "gradcam" in method
                                 else "the map is constant")
            rel = e.params.get("rel_delta")
            if method == "integrated_gradients" and not (rel is not None and float(rel) <= IG_MAX_REL_DELTA):
                raise ValueError(f"completeness does not hold: |sum(attr) - (f(x) - f(baseline))| / "
                                 f"|f(x) - f(baseline)| = {rel} > {IG_MAX_REL_DELTA}")
            passed.append(method)
        except Exception as err:  # noqa: BLE001 - any failure of an optional method is recorded
            failed[method] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    for method in REQUIRED:
        if method in failed:
            raise ExplanationCheckError(f"{method} failed the import check: {failed[method]}"
                                        + (" (choose another --target-layer)" if method == "gradcam" else ""))
    return {"passed": passed, "failed": failed, "checked_on": "a synthetic ramp image, target "
            f"{card.positive_label!r}"}


def _shared_images(modality: str, n: int = 3) -> list[Path]:
    root = Path(os.environ.get("MEDCNN_SHARED_DATA") or "../shared/data")
    csv = root / ("covid_ct" if modality == "CT" else "cxr_other_sources") / "labels.csv"
    if not csv.is_file():
        return []
    rows = csv.read_text().splitlines()[1:1 + n]
    return [csv.parent / r.split(",", 1)[0] for r in rows if (csv.parent / r.split(",", 1)[0]).is_file()]


def run(args: argparse.Namespace) -> int:
    from medcnn.io import read_image
    from medcnn.models.importer import import_model

    files = _shared_images(args.modality) if args.check_images is None else [Path(p) for p in args.check_images]
    images = [read_image(p) for p in files]
    card = import_model(
        args.arch, args.weights, args.labels.split(","), args.out, head=args.head, input_size=args.input_size,
        channels=args.channels, normalize=args.normalize, target_layer=args.target_layer,
        allow_pickle=args.allow_pickle, modality=args.modality, licence=args.licence, source=args.source,
        images=images, check_explanations=check_explanations)
    print(json.dumps({"card": str(card.path), "weights": str(card.weights_path), "weights_sha256": card.weights_sha256,
                      "architecture": card.architecture, "labels": card.labels, "head": card.head,
                      "pixel_contract": card.pixel_contract, "target_layer": card.target_layer,
                      "checked_on_real_images": len(images), "explanations": card.explanations,
                      "unknown": card.unknown}, indent=2))
    return 0
