"""Concurrency: 8 threads share one Predictor (as the app's ``st.cache_resource`` model is shared by
every session) and each gets bit-for-bit the result it gets alone: prediction, Grad-CAM and
Integrated Gradients (through ``medcnn.explain.explain`` with ``pipeline=predictor.pipeline``)."""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_pages import make_weights, png_bytes  # noqa: E402

THREADS = 8
ROUNDS = 2  # every thread analyses its image twice, interleaved with the others


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from medcnn.inference import Predictor

    folder = make_weights(tmp_path_factory.mktemp("load_weights"))
    return Predictor(folder / "cxr_pneumonia.json")


def analyse(predictor, data: bytes) -> dict:
    """Prediction + Grad-CAM + IG of one image, as the Analyze page computes them."""
    from medcnn.explain import explain
    from medcnn.io import read_image

    pred = predictor.predict(read_image(data), keep_steps=False)
    x = pred.pipeline_result.tensor
    target = predictor.card.labels.index(pred.label)
    out = {"tensor": x.clone(), "logits": list(pred.logits), "probabilities": dict(pred.probabilities),
           "label": pred.label, "ood": pred.ood.level}
    for method in ("gradcam", "integrated_gradients"):
        e = explain(predictor.model, x, target, method, layer=predictor.card.target_layer,
                    pipeline=predictor.pipeline)
        out[method] = (e.heatmap.copy(), e.attribution.copy())
    return out


def assert_identical(a: dict, b: dict, what: str) -> None:
    assert torch.equal(a["tensor"], b["tensor"]), what
    assert a["logits"] == b["logits"] and a["probabilities"] == b["probabilities"], what
    assert (a["label"], a["ood"]) == (b["label"], b["ood"]), what
    for method in ("gradcam", "integrated_gradients"):
        assert np.array_equal(a[method][0], b[method][0]), f"{what}: {method} heat map differs"
        assert np.array_equal(a[method][1], b[method][1]), f"{what}: {method} attribution differs"


def test_eight_threads_on_one_predictor_match_sequential_bit_for_bit(predictor, one_torch_thread):
    images = [png_bytes(64 + 8 * i, seed=i) for i in range(THREADS)]
    sequential = [analyse(predictor, data) for data in images]
    assert len({r["label"] for r in sequential}) >= 1
    hooks_before = {name: (len(m._forward_hooks), len(m._backward_hooks)) for name, m in predictor.model.named_modules()}

    def work(i: int) -> list[dict]:
        return [analyse(predictor, images[i]) for _ in range(ROUNDS)]

    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(work, range(THREADS)))
    for i, results in enumerate(concurrent):
        for r, result in enumerate(results):
            assert_identical(result, sequential[i], f"image {i}, round {r}")
    hooks_after = {name: (len(m._forward_hooks), len(m._backward_hooks)) for name, m in predictor.model.named_modules()}
    assert hooks_after == hooks_before  # explanations leave no hooks on the shared model
    assert all(not p.requires_grad or p.grad is None for p in predictor.model.parameters())
