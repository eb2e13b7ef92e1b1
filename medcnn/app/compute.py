"""How many heavy computations run at once in the app's process, and with how many torch threads.

Every Streamlit session runs its page script in a thread of one server process, and every
prediction, Grad-CAM, Integrated Gradients map, sanity check or scoring run is a torch call in
that thread. Left to its defaults, each such call uses one intra-op thread per core: four
sessions computing at once on two cores run eight busy compute threads, oversubscribed four times,
and every one of them gets slower (the soak test in BENCHMARKS.md measured it).

The policy, for the whole process:

* **Admission.** A process-wide semaphore admits at most ``S`` heavy computations at once
  (``MEDCNN_MAX_CONCURRENT``; default ``max(1, cores // T)``). A session whose computation finds
  no free slot waits, with a spinner saying so; it never gets an error and has no time limit.
* **Threads.** Every admitted computation runs with ``T`` torch intra-op threads
  (``MEDCNN_TORCH_THREADS``; default: the cores this process may run on). With the defaults,
  ``S x T <= cores``: the machine is never asked for more compute threads than it has.

Why not fewer threads per computation when more sessions are busy: torch has no per-call or
per-session thread setting. ``torch.set_num_threads`` sets the process-wide default, and with the
OpenMP backend of the released wheels each OS thread keeps the team size it had when it last set
it or first ran a parallel op (measured: a thread that ran an op with 2 threads still has 2 after
another thread sets 1; a new thread starts with 1). Re-dividing threads while other computations
run would therefore change nothing for them, and a thread count that followed the load would
also make numbers depend on how busy the server is. So ``T`` is fixed for the process and applied
in each computing thread when it is admitted (Streamlit runs scripts in threads it starts and ends,
so a thread-local setting made once would not reach the next one), and the load is bounded by
admission instead. The results of a computation do not depend on whether it
waited or on how many others run (tested).

Why these defaults: one analysis at a time with every core gives a single user, the usual case
for this app, the whole machine, and under load the work queues instead of thrashing. Small CNNs
parallelise imperfectly inside one call, so several one-thread computations can give more total
throughput: with 4 browser sessions on 2 shared cores, 1 thread x 2 slots matched the throughput
of unbounded computation and 2 threads x 1 slot lost 8 to 13 % (BENCHMARKS.md, soak test). That
is the operator's trade: a server for many simultaneous users sets ``MEDCNN_TORCH_THREADS=1``
(then ``S`` defaults to one per core). On a GPU, kernels queue on the device anyway; the bound then also caps GPU
memory, and ``MEDCNN_MAX_CONCURRENT`` can be raised.

Where the slot is held: around the library call only (``Predictor.predict``, ``explain``, the
randomisation test, scoring) inside the cached functions of :mod:`medcnn.app.state` and the other
app modules, so a cache hit never waits, and a slot is never held while waiting for another
cached value. A computation that calls another one in the same thread does not take a second slot
(re-entrant per thread), so nesting can never deadlock the process.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import streamlit as st

__all__ = ["limit_malloc_arenas", "MAX_CONCURRENT_ENV", "TORCH_THREADS_ENV", "WAIT_MESSAGE", "ComputeConfigError", "ComputePolicy",
           "ComputeSlots", "available_cores", "compute_slot", "compute_slots", "slotted"]

MAX_CONCURRENT_ENV = "MEDCNN_MAX_CONCURRENT"
TORCH_THREADS_ENV = "MEDCNN_TORCH_THREADS"
#: The spinner text of a session whose computation waits for a slot.
WAIT_MESSAGE = "Waiting for a free compute slot (other sessions are computing)..."


class ComputeConfigError(ValueError):
    """``MEDCNN_MAX_CONCURRENT`` or ``MEDCNN_TORCH_THREADS`` is not a positive whole number."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """``environ[name]`` as a whole number >= 1; ``default`` when unset or blank.

    Raises:
        ComputeConfigError: any other value (the message names the variable and the value).
    """
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ComputeConfigError(f"{name} must be a whole number of at least 1 (or unset for the default "
                                 f"{default}), got {raw!r}")
    return value


@dataclass(frozen=True)
class ComputePolicy:
    """Torch intra-op threads per computation and the number of computations admitted at once.

    Attributes:
        threads: ``T``, the torch intra-op threads of every computation.
        slots: ``S``, the most computations running at once.
    """

    threads: int
    slots: int

    def __post_init__(self) -> None:
        if self.threads < 1 or self.slots < 1:
            raise ComputeConfigError(f"threads and slots must be at least 1, got {self.threads} and {self.slots}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cores: int | None = None) -> ComputePolicy:
        """The policy of the module docstring from ``environ`` (default ``os.environ``).

        Args:
            environ: Where ``MEDCNN_TORCH_THREADS`` / ``MEDCNN_MAX_CONCURRENT`` are read.
            cores: The machine's cores (default :func:`available_cores`).

        Raises:
            ComputeConfigError: a variable is set to something other than a whole number >= 1.
        """
        environ = os.environ if environ is None else environ
        cores = available_cores() if cores is None else max(1, int(cores))
        threads = _positive_int(environ, TORCH_THREADS_ENV, cores)
        return cls(threads, _positive_int(environ, MAX_CONCURRENT_ENV, max(1, cores // threads)))

    def describe(self) -> str:
        """E.g. ``"2 threads, 1 compute slot"``."""
        return f"{self.threads} thread{'s' * (self.threads != 1)}, {self.slots} compute slot{'s' * (self.slots != 1)}"


def _spinner() -> AbstractContextManager:
    """Streamlit's spinner with :data:`WAIT_MESSAGE` (shows nothing outside a script run)."""
    return st.spinner(WAIT_MESSAGE)


def _use_threads(n: int) -> None:
    """Give the calling OS thread ``n`` torch intra-op threads (and make ``n`` the process default)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class ComputeSlots:
    """A bounded semaphore of :attr:`ComputePolicy.slots` slots, re-entrant per thread.

    Args:
        policy: Threads and slots.
        waiting: Context manager factory entered while a computation waits for a slot (default:
            a Streamlit spinner with :data:`WAIT_MESSAGE`).
        set_threads: Called with ``policy.threads`` in the admitted thread (default: torch's setting).

    Attributes:
        admitted: Computations admitted so far (re-entries not counted).
        waited: How many of them had to wait for a slot.
        peak: The most computations that held a slot at the same time.
    """

    def __init__(self, policy: ComputePolicy, waiting: Callable[[], AbstractContextManager] | None = None,
                 set_threads: Callable[[int], None] | None = None) -> None:
        self.policy = policy
        self._semaphore = threading.BoundedSemaphore(policy.slots)
        self._waiting = waiting or _spinner
        self._set_threads = set_threads or _use_threads
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self._active = 0
        self.admitted = self.waited = self.peak = 0

    @property
    def active(self) -> int:
        """Computations holding a slot now."""
        return self._active

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the block: wait (with the waiting notice) until one is free, run with
        the policy's torch threads, release on exit, also on an exception. Inside a slot already
        held by this thread, the block runs at once."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        waited = not self._semaphore.acquire(blocking=False)
        if waited:
            with self._waiting():
                self._semaphore.acquire()
        with self._count_lock:
            self._active += 1
            self.admitted += 1
            self.waited += waited
            self.peak = max(self.peak, self._active)
        try:
            self._local.depth = 1
            self._set_threads(self.policy.threads)
            yield
        finally:
            self._local.depth = 0
            with self._count_lock:
                self._active -= 1
            self._semaphore.release()


_PROCESS_SLOTS: list[ComputeSlots] = []
_PROCESS_LOCK = threading.Lock()


def compute_slots() -> ComputeSlots:
    """The process-wide :class:`ComputeSlots`, made from the environment on first use.

    Raises:
        ComputeConfigError: a bad ``MEDCNN_TORCH_THREADS`` / ``MEDCNN_MAX_CONCURRENT`` (raised
            again on every use until the server is restarted with a good value).
    """
    if not _PROCESS_SLOTS:
        with _PROCESS_LOCK:
            if not _PROCESS_SLOTS:
                _PROCESS_SLOTS.append(ComputeSlots(ComputePolicy.from_env()))
    return _PROCESS_SLOTS[0]


def compute_slot() -> AbstractContextManager:
    """``with compute_slot(): <torch work>``: the process-wide slot (module docstring)."""
    return compute_slots().slot()


class _Slotted:
    """A predictor whose ``predict`` and ``predict_batch`` each run in a slot; the rest passes through."""

    def __init__(self, predictor: Any, slots: ComputeSlots | None = None) -> None:
        self._predictor = predictor
        self._slots = slots

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def _slot(self) -> AbstractContextManager:
        return (self._slots or compute_slots()).slot()

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with self._slot():
            return self._predictor.predict(*args, **kwargs)

    def predict_batch(self, *args: Any, **kwargs: Any) -> Any:
        with self._slot():
            return self._predictor.predict_batch(*args, **kwargs)


def slotted(predictor: Any, slots: ComputeSlots | None = None) -> Any:
    """``predictor`` with one slot per ``predict`` / ``predict_batch`` call, for loops over many
    images (site scoring) that should let other sessions' analyses in between batches.

    Args:
        predictor: A :class:`medcnn.inference.Predictor` (or anything with those methods).
        slots: Default: the process-wide :func:`compute_slots`.
    """
    return _Slotted(predictor, slots)


#: glibc's ``mallopt`` parameter number of ``M_ARENA_MAX`` (malloc.h).
_M_ARENA_MAX = -8
_ARENAS_LIMITED: list[bool] = []


def limit_malloc_arenas(n: int = 2, environ: Mapping[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas for the server process (once; ``MALLOC_ARENA_MAX`` set by the user wins).

    Streamlit runs every script run in a thread it starts and ends; glibc gives busy threads
    their own arenas and keeps their freed memory, so the server's memory climbs with the
    number of sessions and does not come back (measured in BENCHMARKS.md, soak test: 1.14 x
    warm with the default, 1.01 x with 2 arenas, same latency). Returns True when the cap is in
    force (glibc only; elsewhere nothing is done and False is returned).
    """
    environ = os.environ if environ is None else environ
    if environ.get("MALLOC_ARENA_MAX"):
        return True  # glibc read it at start-up
    if _ARENAS_LIMITED:
        return _ARENAS_LIMITED[0]
    ok = False
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        ok = bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(_M_ARENA_MAX, int(n)) == 1)
    except OSError:
        ok = False
    _ARENAS_LIMITED.append(ok)
    return ok
