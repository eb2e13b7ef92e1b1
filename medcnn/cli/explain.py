"""``python -m medcnn explain FILE``: saliency map of one image, optionally with sanity checks.

The model is the one ``predict`` would use (``--model`` or chosen from the image's
modality: CT -> ``ct_covid``, CR/DX/PNG/JPEG -> ``cxr_findings``), loaded as a
:class:`medcnn.inference.Predictor`, so the probabilities printed are the card's
calibrated ones. The map explains ``--target`` (default: the card's positive label)
through ``--objective`` (default ``auto``: the logit difference that sets a softmax head's
probability; ``logit``: the single logit; see :mod:`medcnn.explain.objective`). The JSON
says what was explained (``objective``) and whether the model calls the target
(``called``, ``operating_point``, ``notice``). The overlay is drawn on the preprocessed display image and written only when
``--out`` is given. ``--method`` accepts the names of :data:`medcnn.explain.METHODS`.

An image the model's out-of-distribution gate withholds gets what ``predict`` and the app give it:
"not analysed" with the gate's reasons, no probabilities, no map, and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m medcnn explain`` (imports no torch)."""
    from medcnn.explain.methods import METHODS

    parser.add_argument("file", metavar="FILE", help="DICOM, PNG or JPEG image")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS), help="default: gradcam")
    parser.add_argument("--out", default=None, metavar="PNG", help="write the overlay here (PNG)")
    parser.add_argument("--model", default=None, metavar="NAME|PATH",
                        help="card name in --weights-dir or path of <name>.json "
                             "(default: cxr_findings, or ct_covid for CT images)")
    parser.add_argument("--weights-dir", default="weights", metavar="DIR", help="default: weights")
    parser.add_argument("--target", default=None, metavar="LABEL",
                        help="label to explain (default: the card's positive label)")
    parser.add_argument("--layer", default=None, help="CAM layer (default: the card's target_layer)")
    parser.add_argument("--objective", default="auto", choices=("auto", "difference", "logit"),
                        help="what the map explains: auto (default; the logit difference of a softmax "
                             "head, which sets the probability), difference, or logit (the single logit)")
    parser.add_argument("--baseline", default="black", choices=("black", "blur", "mean"),
                        help="IG / occlusion baseline (default: black, a black image after the "
                             "model's normalisation)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="IG: Gauss-Legendre nodes (default 50, the rule of Captum's default call)")
    parser.add_argument("--tol", type=float, default=None,
                        help="IG: use the adaptive rule instead, refining until the completeness delta is "
                             "within this fraction of |f(x) - f(baseline)| (faster, but its map is coarser)")
    parser.add_argument("--alpha", type=float, default=0.4, help="overlay opacity (default 0.4)")
    parser.add_argument("--cmap", default="inferno",
                        help="matplotlib colormap (default inferno, perceptually uniform; jet still accepted)")
    parser.add_argument("--contour", type=float, default=None, metavar="PCT",
                        help="outline the top PCT %% of the map")
    parser.add_argument("--scale-by-prob", action="store_true",
                        help="scale the map by the target's probability (confident negatives stay dark)")
    parser.add_argument("--sanity", action="store_true",
                        help="also run the model-randomisation test and deletion/insertion curves")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")


def _options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Method options given on the command line (the baseline value comes from the pipeline)."""
    if method == "integrated_gradients":
        if args.tol is not None and args.steps is not None:
            raise ValueError("give --steps (a fixed rule) or --tol (the adaptive rule), not both")
        if args.tol is not None:
            return {"baseline": args.baseline, "tol": args.tol, "n_steps": None}
        return {"baseline": args.baseline, **({"n_steps": args.steps} if args.steps is not None else {})}
    if method == "occlusion":
        return {"baseline": args.baseline}
    return {}


def run(args: argparse.Namespace) -> int:
    """Explain one image; print a summary (or JSON) and write the overlay if asked.

    Raises:
        ValueError: unreadable image, unknown target label, unsupported modality or a bad
            option (``medcnn.__main__`` prints it as one ``error:`` line).
    """
    from medcnn.cli.predict import resolve_card_path
    from medcnn.explain import METHODS, explain, judged_by_head
    from medcnn.explain.ig import completeness_text
    from medcnn.inference import Predictor, choose_model
    from medcnn.io import read_image
    from medcnn.visualize import overlay, to_png_bytes

    img = read_image(args.file)
    card_path = resolve_card_path(args.model, args.weights_dir) if args.model else choose_model(
        img.meta, args.weights_dir)
    predictor = Predictor(card_path, device=args.device)
    card, head = predictor.card, predictor.card.head_rule
    label = args.target or card.positive_label
    if label not in card.labels:
        raise ValueError(f"--target {label!r} is not one of the model's labels {card.labels}")
    target = head.index(label)
    pred = predictor.predict(img, keep_steps=False)
    if pred.ood.withheld:  # as everywhere: no probabilities and no map for an image it does not read
        return _withheld(args, card.name, pred.ood.to_dict())
    res = pred.pipeline_result
    x = res.tensor.to(predictor.device)
    spec = METHODS[args.method]
    opts = _options(args, args.method)
    layer = (args.layer or card.target_layer) if spec.needs_layer else None
    exp = explain(predictor.model, x, target, args.method, layer=layer, pipeline=predictor.pipeline,
                  head=head, objective=args.objective, **opts)
    exp = judged_by_head(exp, head, pred, label)
    rgb = overlay(res.display, exp.heatmap, cmap=args.cmap, alpha=args.alpha,
                  contour_top_percent=args.contour,
                  scale=pred.probabilities[label] if args.scale_by_prob else None)
    if args.out:
        Path(args.out).write_bytes(to_png_bytes(rgb))
    result: dict[str, Any] = {
        "file": args.file, "model": card.name, "method": args.method,
        "method_label": spec.label,
        "passes_randomisation_check": spec.passes_randomisation_check,
        "target": label, "objective": exp.params["objective"], "probabilities": pred.probabilities,
        "operating_point": exp.operating_point, "called": exp.called, "notice": exp.notice,
        "seconds": exp.seconds, "delta": exp.delta, "params": exp.params, "out": args.out,
    }
    if exp.delta is not None:  # what the page's caption says about the map's quadrature error
        result["completeness"] = {"rel_delta": exp.params.get("rel_delta"),
                                  "rel_local_error": exp.params.get("rel_local_error"),
                                  "steps": exp.params.get("steps"), "rule": exp.params.get("rule"),
                                  "text": completeness_text(exp.params)}
    if args.sanity:
        from medcnn.explain.sanity import deletion_insertion, randomisation_test

        rt = randomisation_test(predictor.model, x, target, args.method, layer=layer,
                                pipeline=predictor.pipeline, objective=args.objective, head=head, **opts)
        di = deletion_insertion(predictor.model, x, target, exp.heatmap, pipeline=predictor.pipeline)
        result["sanity"] = {"randomisation": rt, "deletion_insertion": {
            k: v for k, v in di.items() if not k.endswith("curve") and k != "fractions"}}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print(result)
    return 0


def _withheld(args: argparse.Namespace, model: str, ood: dict[str, Any]) -> int:
    """Report an image the out-of-distribution gate withholds; nothing is written. Returns 1."""
    from medcnn.models.head import NOT_ANALYSED

    reasons = "; ".join(ood.get("reasons") or [])
    if args.json:
        print(json.dumps({"file": args.file, "model": model, "method": args.method,
                          "decision": NOT_ANALYSED, "ood": ood, "out": None}, indent=2, default=str))
    else:
        print(f"{args.file}: NOT ANALYSED - outside what model {model} reads: {reasons}. No map was made"
              + (f" and {args.out} was not written" if args.out else "") + ".", file=sys.stderr)
    return 1


def _print(r: dict[str, Any]) -> None:
    """Human-readable summary of ``run``'s result (warnings on stderr)."""
    probs = ", ".join(f"{k} {v:.3f}" for k, v in r["probabilities"].items())
    print(f"{r['file']}: {r['method_label']} of the {r['objective']} ({probs}), model {r['model']}, "
          f"{r['seconds']:.2f} s")
    if r["notice"]:
        print(f"  note: {r['notice']}")
    if r["delta"] is not None:
        print(f"  IG convergence delta {r['delta']:.3g} ({r['params']['steps']} steps, "
              f"relative {r['params']['rel_delta']:.3g}; sum of |local errors| "
              f"{r['params']['rel_local_error']:.3g} of the score change)")
    if not r["passes_randomisation_check"]:
        print("  warning: this method fails the model-randomisation sanity check "
              "(Adebayo et al. 2018); do not read it as what the model used", file=sys.stderr)
    if r["out"]:
        print(f"  overlay written to {r['out']}")
    s = r.get("sanity")
    if s:
        rt, di = s["randomisation"], s["deletion_insertion"]
        if rt.get("testable") is False:
            print(f"  randomisation test: not testable ({rt['reason']})")
        else:
            print(f"  randomisation test: final Spearman {rt['final_spearman']:.3f}, SSIM "
                  f"{rt['final_ssim']:.3f} -> {'passes' if rt['passes'] else 'FAILS'}")
        print(f"  deletion AUC {di['deletion_auc']:.3f} (random {di['random_deletion_auc']:.3f}), "
              f"insertion AUC {di['insertion_auc']:.3f} (random {di['random_insertion_auc']:.3f})")
