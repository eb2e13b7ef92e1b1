"""The analysis record (:mod:`medcnn.analysis`): stages in order, maps computed once per key, shared
arrays read-only, torch-free. Plain objects stand in for the card, the prediction and the maps."""
from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from medcnn.analysis import MAX_EXPLANATIONS, Analysis, StageError, StepView, step_views

KEY = "ab" * 32


class FakeHead:
    """Answers what the record asks a card's head: the targets in menu order and the default one."""

    def explain_targets(self, prediction):
        return ["PNEUMONIA", "NORMAL"]

    def default_target(self, prediction):
        return prediction.label


def prediction(withheld: bool = False) -> SimpleNamespace:
    display = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    return SimpleNamespace(label="NORMAL", ood=SimpleNamespace(withheld=withheld, level="ok"),
                           pipeline_result=SimpleNamespace(display=display, tensor=None, steps=[]))


def predicted(withheld: bool = False) -> Analysis:
    card = SimpleNamespace(name="m", head_rule=FakeHead())
    views = [StepView("resize", {"size": 4}, np.zeros((4, 4), np.float32), (4, 4))]
    return Analysis(KEY, "m.json").with_image(SimpleNamespace(rows=8, columns=8)).with_prediction(
        card, prediction(withheld), views)


def a_map(value: float = 0.5) -> SimpleNamespace:
    return SimpleNamespace(heatmap=np.full((4, 4), value, np.float32), attribution=np.zeros((4, 4), np.float32))


class Counting:
    """A ``compute`` that counts its calls and returns a new map each time."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return a_map(self.calls / 10)


# --------------------------------------------------------------------------- stages
def test_stages_are_filled_in_order():
    meta, card, pred = SimpleNamespace(rows=8), SimpleNamespace(head_rule=FakeHead()), prediction()
    record = Analysis(KEY, "m.json", frame=None, window="lung")
    assert record.stage == "started"
    with pytest.raises(StageError, match="image stage"):
        record.with_prediction(card, pred)  # no image yet
    with pytest.raises(StageError, match="prediction stage"):
        record.explanation("gradcam", "NORMAL", "auto", Counting())
    with pytest.raises(StageError, match="prediction stage"):
        record.verdict  # noqa: B018 - the property raises
    assert record.with_image(meta) is record and record.stage == "image" and record.meta is meta
    with pytest.raises(StageError, match="already filled"):
        record.with_image(meta)
    assert record.with_prediction(card, pred, []) is record and record.stage == "prediction"
    assert (record.card, record.prediction, record.verdict) == (card, pred, pred.ood)
    with pytest.raises(StageError, match="already filled"):
        record.with_prediction(card, pred)
    assert (record.key, record.card_path, record.frame, record.window) == (KEY, "m.json", None, "lung")


def test_targets_and_default_target_come_from_the_cards_head():
    record = predicted()
    assert record.targets == ["PNEUMONIA", "NORMAL"]
    assert record.default_target == "NORMAL"  # the prediction's own label, as the head says


def test_a_withheld_image_gets_no_map_and_no_sanity_check():
    record = predicted(withheld=True)
    compute = Counting()
    assert record.withheld
    with pytest.raises(ValueError, match="withholds"):
        record.explanation("gradcam", "NORMAL", "auto", compute)
    with pytest.raises(ValueError, match="withholds"):
        record.sanity("gradcam", "NORMAL", "auto", compute)
    assert compute.calls == 0


# --------------------------------------------------------------------------- memoised maps
def test_an_explanation_is_computed_once_per_key():
    record, compute = predicted(), Counting()
    first = record.explanation("gradcam", "NORMAL", "auto", compute)
    assert record.explanation("gradcam", "NORMAL", "auto", compute) is first
    assert compute.calls == 1
    record.explanation("gradcam", "PNEUMONIA", "auto", compute)  # another target
    record.explanation("gradcam", "NORMAL", "logit", compute)  # another objective
    record.explanation("ig", "NORMAL", "auto", compute)  # another method
    assert compute.calls == 4
    assert set(record.explanations) == {("gradcam", "NORMAL", "auto"), ("gradcam", "PNEUMONIA", "auto"),
                                        ("gradcam", "NORMAL", "logit"), ("ig", "NORMAL", "auto")}
    record.sanity("gradcam", "NORMAL", "auto", compute)  # sanity checks have their own store
    record.sanity("gradcam", "NORMAL", "auto", compute)
    assert compute.calls == 5


def test_a_failed_explanation_is_not_memoised():
    record, compute = predicted(), Counting()

    def failing():
        raise ValueError("no such layer")

    with pytest.raises(ValueError, match="no such layer"):
        record.explanation("gradcam", "NORMAL", "auto", failing)
    record.explanation("gradcam", "NORMAL", "auto", compute)
    assert compute.calls == 1 and len(record.explanations) == 1


def test_the_least_recently_used_map_is_dropped_past_the_bound():
    record, compute = predicted(), Counting()
    for i in range(MAX_EXPLANATIONS):
        record.explanation("gradcam", f"t{i}", "auto", compute)
    record.explanation("gradcam", "t0", "auto", compute)  # t0 used again: t1 is now the oldest
    record.explanation("gradcam", "new", "auto", compute)
    assert compute.calls == MAX_EXPLANATIONS + 1 and len(record.explanations) == MAX_EXPLANATIONS
    assert ("gradcam", "t1", "auto") not in record.explanations
    record.explanation("gradcam", "t0", "auto", compute)  # still kept
    assert compute.calls == MAX_EXPLANATIONS + 1


def test_two_sessions_asking_at_once_share_one_computation():
    record = predicted()
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow():
        calls.append(1)
        started.set()
        release.wait(10)
        return a_map()

    results = []
    first = threading.Thread(target=lambda: results.append(record.explanation("gradcam", "NORMAL", "auto", slow)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(record.explanation("gradcam", "NORMAL", "auto", slow)))
    second.start()
    release.set()
    first.join(10), second.join(10)
    assert len(calls) == 1 and len(results) == 2 and results[0] is results[1]


def test_shared_arrays_are_read_only():
    record = predicted()
    made = record.explanation("gradcam", "NORMAL", "auto", Counting())
    for array in (record.display, made.heatmap, made.attribution):
        with pytest.raises(ValueError, match="read-only"):
            array[0, 0] = 1.0


# --------------------------------------------------------------------------- step views, import
def test_step_views_downscale_and_scale_the_tensor_step():
    steps = [SimpleNamespace(name="read", params={"a": 1}, image=np.full((800, 400), 0.5, np.float32)),
             SimpleNamespace(name="tensor", params={}, image=np.array([[-2.0, 2.0], [0.0, 0.0]], np.float32))]
    views = step_views(steps, max_side=100)
    assert views[0].image.shape == (100, 50) and views[0].shape == (800, 400)
    assert views[1].shape == (1, 1, 2, 2)
    np.testing.assert_allclose(views[1].image, [[0.0, 1.0], [0.5, 0.5]])


def test_the_record_module_does_not_import_torch():
    code = "import sys, medcnn.analysis; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
