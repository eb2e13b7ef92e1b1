"""The compute policy (medcnn.app.compute): slots bound concurrency, env values are checked, the
torch thread count is applied in each computing thread, and results do not change under it."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from medcnn.app import compute
from medcnn.app.compute import ComputeConfigError, ComputePolicy, ComputeSlots
from test_pages import make_weights, png_bytes


class Notices:
    """A ``waiting`` factory that counts how often a computation had to wait."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self):
        with self._lock:
            self.count += 1
        yield


def no_threads(n: int) -> None:
    """``set_threads`` that leaves torch alone (the bound tests need no torch)."""


# ----------------------------------------------------------------------------- the bound
@pytest.mark.parametrize("slots", [1, 2, 3])
def test_slots_bound_the_computations_running_at_once(slots):
    workers = 8
    notices = Notices()
    pool = ComputeSlots(ComputePolicy(threads=1, slots=slots), waiting=notices, set_threads=no_threads)
    inside, peak, lock = [0], [0], threading.Lock()
    start = threading.Barrier(workers)

    def work(i: int) -> int:
        start.wait()  # every worker asks at once
        with pool.slot():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1
        return i

    with ThreadPoolExecutor(workers) as ex:
        done = list(ex.map(work, range(workers)))
    assert done == list(range(workers))  # everyone got through: waiting is never an error
    assert peak[0] == pool.peak == slots  # never more than the slots, and all of them were used
    assert pool.admitted == workers and pool.active == 0
    assert pool.waited == notices.count >= workers - slots  # every waiter saw the notice


def test_a_slot_is_released_on_an_exception_and_reentered_without_a_second_one():
    pool = ComputeSlots(ComputePolicy(threads=1, slots=1), waiting=Notices(), set_threads=no_threads)
    with pytest.raises(RuntimeError):
        with pool.slot():
            raise RuntimeError("boom")
    assert pool.active == 0
    with pool.slot():  # one slot only: a second acquire in this thread would block forever
        with pool.slot():
            assert pool.active == 1
        assert pool.active == 1
    assert pool.active == 0 and pool.admitted == 2 and pool.waited == 0


def test_the_policy_threads_are_set_in_the_computing_thread():
    pool = ComputeSlots(ComputePolicy(threads=1, slots=1), waiting=Notices())
    seen = {}

    def work() -> None:
        torch.set_num_threads(2)  # this thread has another count before it is admitted
        with pool.slot():
            seen["inside"] = torch.get_num_threads()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["inside"] == 1


def test_slotted_predictor_takes_one_slot_per_call_and_passes_the_rest_through():
    calls = []

    class Fake:
        card = "the card"

        def predict(self, x, keep_steps=True):
            calls.append(("predict", pool.active))
            return x

        def predict_batch(self, xs):
            calls.append(("batch", pool.active))
            return list(xs)

    pool = ComputeSlots(ComputePolicy(threads=1, slots=1), waiting=Notices(), set_threads=no_threads)
    p = compute.slotted(Fake(), pool)
    assert p.card == "the card" and p.predict(3, keep_steps=False) == 3 and p.predict_batch((1, 2)) == [1, 2]
    assert calls == [("predict", 1), ("batch", 1)] and pool.admitted == 2 and pool.active == 0


# ----------------------------------------------------------------------------- the environment
@pytest.mark.parametrize("env, cores, expected", [
    ({}, 2, (2, 1)),                                     # defaults: every core, one at a time
    ({}, 16, (16, 1)),
    ({"MEDCNN_TORCH_THREADS": "1"}, 2, (1, 2)),          # one thread each: one slot per core
    ({"MEDCNN_TORCH_THREADS": "4"}, 16, (4, 4)),
    ({"MEDCNN_TORCH_THREADS": "3"}, 2, (3, 1)),          # more threads than cores: still one slot
    ({"MEDCNN_MAX_CONCURRENT": "4"}, 2, (2, 4)),         # an explicit bound wins
    ({"MEDCNN_TORCH_THREADS": " 2 ", "MEDCNN_MAX_CONCURRENT": "3"}, 8, (2, 3)),
    ({"MEDCNN_TORCH_THREADS": "", "MEDCNN_MAX_CONCURRENT": "  "}, 4, (4, 1)),  # blank = unset
])
def test_policy_from_the_environment(env, cores, expected):
    policy = ComputePolicy.from_env(env, cores=cores)
    assert (policy.threads, policy.slots) == expected


@pytest.mark.parametrize("name", ["MEDCNN_TORCH_THREADS", "MEDCNN_MAX_CONCURRENT"])
@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "2 threads"])
def test_bad_values_are_refused_with_the_variable_and_the_value(name, value):
    with pytest.raises(ComputeConfigError) as e:
        ComputePolicy.from_env({name: value}, cores=2)
    message = str(e.value)
    assert name in message and repr(value) in message and "whole number of at least 1" in message
    assert isinstance(e.value, ValueError)  # the pages show ValueErrors as they are


def test_process_wide_slots_come_from_the_environment_once(monkeypatch):
    monkeypatch.setattr(compute, "_PROCESS_SLOTS", [])
    monkeypatch.setenv("MEDCNN_TORCH_THREADS", "1")
    monkeypatch.setenv("MEDCNN_MAX_CONCURRENT", "3")
    first = compute.compute_slots()
    monkeypatch.setenv("MEDCNN_MAX_CONCURRENT", "5")
    assert compute.compute_slots() is first and first.policy == ComputePolicy(1, 3)
    assert first.policy.describe() == "1 thread, 3 compute slots"
    monkeypatch.setattr(compute, "_PROCESS_SLOTS", [])
    monkeypatch.setenv("MEDCNN_MAX_CONCURRENT", "many")
    with pytest.raises(ComputeConfigError, match="MEDCNN_MAX_CONCURRENT"):
        compute.compute_slot()


def test_available_cores_is_at_least_one():
    assert compute.available_cores() >= 1


# ----------------------------------------------------------------------------- results unchanged
@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from medcnn.inference import Predictor

    return Predictor(make_weights(tmp_path_factory.mktemp("compute_weights")) / "cxr_pneumonia.json")


def analyse(predictor, data: bytes) -> tuple:
    """Prediction + Grad-CAM + Integrated Gradients of one image, as the app computes them."""
    from medcnn.explain import explain
    from medcnn.io import read_image

    pred = predictor.predict(read_image(data), keep_steps=False)
    x, target = pred.pipeline_result.tensor, predictor.card.labels.index(pred.label)
    maps = [explain(predictor.model, x, target, m, layer=predictor.card.target_layer,
                    pipeline=predictor.pipeline).heatmap for m in ("gradcam", "integrated_gradients")]
    return list(pred.logits), pred.label, maps


def test_results_through_the_slots_are_bit_identical(predictor, one_torch_thread):
    images = [png_bytes(64 + 8 * i, seed=40 + i) for i in range(4)]
    alone = [analyse(predictor, d) for d in images]
    pool = ComputeSlots(ComputePolicy(threads=1, slots=2), waiting=Notices())

    def through_slot(data: bytes) -> tuple:
        with pool.slot():
            return analyse(predictor, data)

    with ThreadPoolExecutor(4) as ex:
        slotted = list(ex.map(through_slot, images * 2))
    assert pool.peak <= 2 and pool.admitted == 8
    for i, (logits, label, maps) in enumerate(slotted):
        a_logits, a_label, a_maps = alone[i % 4]
        assert logits == a_logits and label == a_label, i
        assert all(np.array_equal(m, a) for m, a in zip(maps, a_maps)), i


def test_app_computations_each_take_a_slot_and_never_nest(predictor, monkeypatch, one_torch_thread):
    """The record's prediction, then its map: two admissions, never two slots at once (with one
    slot and no re-entry that would deadlock)."""
    from medcnn.app import state

    notices = Notices()
    pool = ComputeSlots(ComputePolicy(threads=1, slots=1), waiting=notices)
    monkeypatch.setattr(compute, "_PROCESS_SLOTS", [pool])
    data = png_bytes(72, seed=4242)
    key = state.digest(data)
    card = str(predictor.card.path)
    record = state.analyze_upload(key, data, card)  # as the pages ask for it
    assert pool.admitted == 1
    state.explain_analysis(state.analyze_upload(key, data, card), "gradcam", record.prediction.label)
    assert pool.admitted == 2  # the prediction came from the cache; the map took one slot
    state.explain_analysis(state.analyze_upload(key, data, card), "gradcam", record.prediction.label)
    assert pool.admitted == 2  # a cache hit takes no slot
    assert pool.peak == 1 and notices.count == 0


def test_malloc_arenas_are_capped_once_unless_the_user_set_them():
    import platform

    from medcnn.app import compute

    assert compute.limit_malloc_arenas(environ={"MALLOC_ARENA_MAX": "4"}) is True  # the user's setting wins
    first = compute.limit_malloc_arenas(environ={})
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
    assert compute.limit_malloc_arenas(environ={}) is first  # applied once, then remembered
