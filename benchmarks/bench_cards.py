"""Card listing cost on a page rerun: the catalogue (contract parsed once per file version, report
read only when asked) against the path before it (whole card parsed once per version, then the
whole card, report included, deep-copied on every load), on the same weights folder in the same run.

    python benchmarks/bench_cards.py [--weights weights] [--reruns 100] [--repeat 3]

One "rerun" is what a page does on every rerun: list the models, then resolve the card of a chest
X-ray by modality. Prints, for each path, the seconds for ``--reruns`` reruns (median of ``--repeat``
alternating runs, caches warm) and the peak traced memory (tracemalloc) of one batch of reruns, and
the ratios old / new (> 1: the catalogue is cheaper). Checks that both resolve the same card and
list equal cards.
"""
from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcnn.models import catalogue  # noqa: E402
from medcnn.models.card import CardError, ModelCard, card_file  # noqa: E402


# ----------------------------------------------------------------- the path before the catalogue
@functools.lru_cache(maxsize=64)
def _old_parse(path: str, mtime_ns: int) -> ModelCard:
    return ModelCard.load(path)


def old_load_card(path: str | Path) -> ModelCard:
    path = card_file(path)
    return copy.deepcopy(_old_parse(str(path), path.stat().st_mtime_ns))


def old_list_cards(weights_dir: Path) -> list[ModelCard]:
    cards = []
    for path in sorted(weights_dir.glob("*.json")):
        try:
            card = old_load_card(path)
        except (CardError, TypeError) as e:
            warnings.warn(f"skipping {path}: {e}", stacklevel=2)
            continue
        if card.weights_path.is_file():
            cards.append(card)
    return cards


def old_rerun(weights: Path, meta: SimpleNamespace) -> tuple[list[ModelCard], Path]:
    cards = old_list_cards(weights)
    family = catalogue.CARD_FAMILIES[meta.modality]
    chosen = [c for c in old_list_cards(weights) if c.modality.upper() == family]
    preferred = [c for c in chosen if c.name == catalogue.DEFAULT_CARDS[family]]
    return cards, (preferred or chosen)[0].path  # type: ignore[return-value]


def new_rerun(weights: Path, meta: SimpleNamespace) -> tuple[list[ModelCard], Path]:
    return catalogue.list_cards(weights), catalogue.resolve_card(meta, None, weights)


# ----------------------------------------------------------------- measurement
def timed(rerun: Callable, weights: Path, meta: SimpleNamespace, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        rerun(weights, meta)
    return time.perf_counter() - t0


def peak_bytes(rerun: Callable, weights: Path, meta: SimpleNamespace, n: int) -> int:
    tracemalloc.start()
    for _ in range(n):
        rerun(weights, meta)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=REPO / "weights")
    ap.add_argument("--reruns", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    meta = SimpleNamespace(modality="DX")

    old_cards, old_path = old_rerun(args.weights, meta)  # warm both caches; same answer
    new_cards, new_path = new_rerun(args.weights, meta)
    assert old_path == new_path and old_cards == new_cards, "the two paths disagree"

    runs: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.repeat):
        runs["old"].append(timed(old_rerun, args.weights, meta, args.reruns))
        runs["new"].append(timed(new_rerun, args.weights, meta, args.reruns))
    t_old, t_new = statistics.median(runs["old"]), statistics.median(runs["new"])
    m_old = peak_bytes(old_rerun, args.weights, meta, args.reruns)
    m_new = peak_bytes(new_rerun, args.weights, meta, args.reruns)

    print(f"{len(new_cards)} cards in {args.weights}, {args.reruns} reruns (list + resolve by modality), "
          f"median of {args.repeat}")
    print(f"old (whole card deep-copied per load): {t_old:8.3f} s   peak {m_old / 2**20:8.2f} MiB")
    print(f"new (catalogue, report on demand):     {t_new:8.3f} s   peak {m_new / 2**20:8.2f} MiB")
    print(f"ratio old/new: time {t_old / t_new:.1f}x, peak memory {m_old / max(m_new, 1):.1f}x")


if __name__ == "__main__":
    main()
