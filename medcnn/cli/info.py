"""``python -m medcnn info FILE``: non-identifying metadata of an image.

Patient identifiers never reach :class:`medcnn.io.ImageMeta`, so they cannot be printed.
"""
from __future__ import annotations

import argparse
import json

from medcnn.notices import collected
from medcnn.io import read_image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="DICOM (any or no extension), PNG or JPEG")
    parser.add_argument("--frame", type=int, default=None, help="frame of a multi-frame DICOM (default: middle)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    with collected():  # the same notes are reported through meta.warnings below
        img = read_image(args.file, frame=args.frame)
    d = img.meta.to_dict()
    d["pixel_min"] = float(img.pixels.min())
    d["pixel_max"] = float(img.pixels.max())
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    width = max(len(k) for k in d)
    for key, value in d.items():
        if value in (None, [], ""):
            continue
        print(f"{key:<{width}}  {value}")
    return 0
