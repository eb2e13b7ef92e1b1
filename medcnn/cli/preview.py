"""``python -m medcnn preview FILE --out DIR``: one PNG per preprocessing step."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from medcnn.notices import collected

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="DICOM (any or no extension), PNG or JPEG")
    parser.add_argument("--out", required=True, help="output folder (created)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="model card (weights/<name>.json) whose pipeline to use")
    src.add_argument("--task", choices=["CXR", "CT"], help="default pipeline of a task (default: by modality)")
    parser.add_argument("--size", type=int, default=256, help="input size for --task (default 256)")
    parser.add_argument("--window", help="default, file, auto, a CT preset (lung, mediastinum, bone, "
                                         "brain, abdomen) or CENTER,WIDTH")
    parser.add_argument("--frame", type=int, default=None, help="frame of a multi-frame DICOM")


def parse_window(text: str | None):
    """``"40,400"`` -> (40.0, 400.0); names pass through; None stays None."""
    if text is None:
        return None
    if re.fullmatch(r"\s*-?[\d.]+\s*,\s*[\d.]+\s*", text):
        c, w = (float(v) for v in text.split(","))
        return (c, w)
    return text


def to_png(image: np.ndarray) -> Image.Image:
    """float (H, W) -> 8-bit PNG image; [0, 1] images are kept as is, others min-max scaled."""
    import numpy as np
    from PIL import Image

    x = image.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8), mode="L")


def run(args: argparse.Namespace) -> int:
    from medcnn.io import read_image
    from medcnn.models.card import ModelCard
    from medcnn.preprocess import Pipeline, default_config

    with collected():  # decode notes: `medcnn info` reports them
        img = read_image(args.file, frame=args.frame)
    if args.model:
        config = ModelCard.load(args.model).preprocessing
    else:
        task = args.task or ("CT" if img.meta.modality == "CT" else "CXR")
        config = default_config(task, args.size)
    result = Pipeline.from_config(config)(img, window=parse_window(args.window))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for i, step in enumerate(result.steps):
        name = f"{i:02d}_{step.name}.png"
        to_png(step.image).save(out / name)
        manifest.append({"file": name, "step": step.name, "params": step.params,
                         "shape": list(step.image.shape)})
        print(f"{name:<22} {json.dumps(step.params, default=str)}")
    (out / "steps.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return 0
