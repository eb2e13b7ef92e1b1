"""``python -m medcnn export-dicom FILE --out DIR``: the PACS results of a local DICOM, written as files.

Offline twin of ``dicomweb analyze --send``: the same analysis (:mod:`medcnn.pacs.analysis`) and the
same checked objects (:mod:`medcnn.pacs.objects`): a structured report, a secondary capture of the
overlay and the PDF report as Encapsulated PDF, in a new series of the file's study (only the
report when the image is not analysed). Files are named by kind and their new SOP Instance UID,
never after the source file. ``--confirmed-by`` records the reviewer; without it the report says
it was not confirmed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

_KIND = {"SR": "sr", "OT": "sc", "DOC": "pdf"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m medcnn export-dicom`` (imports no torch)."""
    from medcnn.explain.methods import METHODS

    parser.add_argument("file", metavar="FILE", help="a DICOM image")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the result objects")
    parser.add_argument("--model", default=None, metavar="CARD", help="card name or path (default: by modality)")
    parser.add_argument("--weights-dir", default=None, metavar="DIR",
                        help="folder with <name>.json + <name>.pt (default: $MEDCNN_WEIGHTS_DIR, else weights)")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS), help="explanation method (default gradcam)")
    parser.add_argument("--confirmed-by", default="", metavar="NAME", help="the reviewer who confirmed the result")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Analyse FILE and write its result objects into ``--out``; prints one line per file written.

    Raises:
        ValueError: not a DICOM image, or an object failed its check.
    """
    from medcnn.io import detect_format
    from medcnn.pacs.analysis import PredictorCache, analyze_instance
    from medcnn.pacs.objects import build_results

    data = Path(args.file).read_bytes()
    if detect_format(data) != "dicom":
        raise ValueError("export-dicom needs a DICOM file: the results join the file's study")
    analysis = analyze_instance(data, PredictorCache(args.device), model=args.model, weights_dir=args.weights_dir,
                                method=args.method)
    results = build_results(analysis, " ".join(args.confirmed_by.split()))
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for ds in results.objects:
        path = args.out / f"{_KIND.get(str(ds.Modality), 'obj')}_{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(str(path))
    if args.json:
        print(json.dumps({**analysis.to_dict(), "files": written, "sent": results.summary()}))
    else:
        print(f"decision: {analysis.decision}" + (f" ({analysis.reason})" if analysis.reason else ""))
        for path in written:
            print(path)
    return 0
