"""Before/after: does the out-of-distribution gate tell another hospital's chest film from another
kind of image?

For each set, the share of images *analysed* (no message), *cautioned by the kind question* (may
not be the kind of image the model reads), *cautioned by the style question only* (acquired
differently from the training films) and *withheld* (not analysed), under two gates of the same
model: ``--before`` (by default the gate shipped at ``--before-rev``) and ``--after`` (the card's
current gate). A one-question gate has no style part: its cautions count as kind cautions.

Sets: the validation films (they set the thresholds), the test films, ``cxr_other_sources`` (adult
frontal films of many hospitals, per source site: they should be analysed), and every kind the
model must not read: ``ood_samples`` (per category), CT slices, rotated / inverted validation
films, synthetic images (they should be withheld). Only measurement: nothing here fits anything.

    python benchmarks/bench_gate_kinds.py [--model weights/cxr_findings.json] [--before-rev REV]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"
#: The last commit whose cxr gates are the one-question gates (2026-12-06).
BEFORE_REV = "425ee3d"
_SITES = ("radiopaedia.org", "sirm.org", "sciencedirect.com", "eurorad.org", "pubs.rsna.org")


class _Memo:
    """The extractor, remembering its last batch so two gates judge one forward pass."""

    def __init__(self, extract):
        self.extract, self.last = extract, None

    def __call__(self, x):
        if self.last is None or self.last[0] is not x:
            self.last = (x, self.extract(x))
        return self.last[1]


def _shares(verdicts) -> tuple[float, float, float, float]:
    n = max(len(verdicts), 1)
    withheld = sum(r.withheld for r in verdicts)
    kind = sum(r.flagged and not r.withheld and (r.kind is None or r.style is None or r.kind.flagged)
               for r in verdicts)
    style = sum(r.flagged and not r.withheld for r in verdicts) - kind
    return (len(verdicts) - withheld - kind - style) / n, kind / n, style / n, withheld / n


def _sets(csvs: list[Path]) -> dict[str, list]:
    import pandas as pd

    from medcnn.ood import validate as v

    out: dict[str, list] = {}
    val = [img for c in csvs for img in v.read_table_images(c, "val")["all"]]
    out["in-distribution: validation films (set the thresholds)"] = val
    out["in-distribution: test films"] = [img for c in csvs for img in v.read_table_images(c, "test")["all"]]
    other_csv = DATA / "cxr_other_sources" / "labels.csv"
    other = v.read_table_images(other_csv)["all"]
    urls = pd.read_csv(other_csv)["url"].fillna("")
    sites = [next((s for s in _SITES if s in u), "other sites") for u in urls]
    out["other hospitals: all"] = other
    for site in (*_SITES, "other sites"):
        out[f"other hospitals: {site}"] = [img for img, s in zip(other, sites) if s == site]
    for cat, imgs in v.read_table_images(DATA / "ood_samples" / "labels.csv", group="category").items():
        out[f"other kind: {cat}"] = imgs
    for name in ("sarscov2_ct", "covid_ct"):
        out[f"other kind: CT slices ({name} test)"] = v.read_table_images(DATA / name / "labels.csv", "test")["all"]
    for name in v.TRANSFORMS:
        out[f"other kind: validation films {name.replace('_', ' ')}"] = v.transformed(val[:60], name)
    for i, name in enumerate(v.SYNTHETIC):
        out[f"other kind: synthetic {name.replace('_', ' ')}"] = v.synthetic_images(name, 20, seed=i)
    return out


def _gate_at(rev: str, rel: str, folder: Path) -> Path:
    path = folder / f"before-{re.sub(r'[^0-9a-zA-Z]', '_', rev)}.ood.pt"
    path.write_bytes(subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=REPO, check=True,
                                    capture_output=True).stdout)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/cxr_findings.json")
    parser.add_argument("--before", default=None, help=".ood.pt of the 'before' gate (default: --before-rev's)")
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--after", default=None, help=".ood.pt of the 'after' gate (default: the card's)")
    args = parser.parse_args()

    import torch

    from medcnn.models import load_model
    from medcnn.ood import OODGate
    from medcnn.ood import validate as v
    from medcnn.ood.features import FeatureExtractor
    from medcnn.preprocess import Pipeline

    torch.set_num_threads(2)
    model, card = load_model(REPO / args.model, device="cpu")
    pipe = Pipeline.from_config(card.preprocessing)
    with tempfile.TemporaryDirectory() as tmp:
        rel = str(card.ood_path.relative_to(REPO))
        before = OODGate.load(args.before or _gate_at(args.before_rev, rel, Path(tmp)))
    after = OODGate.load(args.after or card.ood_path)
    if (before.layers, before.grid) != (after.layers, after.grid):
        raise SystemExit("the two gates pool different layers; run them separately")
    extract = _Memo(FeatureExtractor(model, after.layers, after.grid))
    csvs = [REPO / c if not Path(c).is_absolute() else Path(c) for c in card.training["data"]]
    print(f"model {card.name}; before: {args.before or args.before_rev}; after: {args.after or rel}")
    print(f"{'set':<58}{'n':>5} | before: analysed caution withheld | after: analysed kind-caution "
          "style-caution withheld")
    for name, images in _sets(csvs).items():
        if not images:
            continue
        verdicts = {"before": [], "after": []}
        for start in range(0, len(images), 32):
            x = torch.cat([pipe(img, keep_steps=False).tensor for img in images[start:start + 32]])
            for label, gate in (("before", before), ("after", after)):
                verdicts[label].extend(gate.judge(extract, x)[1])
        b, a = _shares(verdicts["before"]), _shares(verdicts["after"])
        print(f"{name:<58}{len(images):>5} | {100 * b[0]:>6.1f}% {100 * (b[1] + b[2]):>6.1f}% {100 * b[3]:>6.1f}%"
              f" | {100 * a[0]:>6.1f}% {100 * a[1]:>6.1f}% {100 * a[2]:>6.1f}% {100 * a[3]:>6.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
