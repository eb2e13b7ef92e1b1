"""Exponential back-off for failed sign-ins, per key (a session, a user name).

After ``free_attempts`` failures in a row the key must wait ``base_delay_s`` before the next try,
then twice as long after each further failure, up to ``max_delay_s``; a success clears the key.
With the defaults: failures 1-4 cost nothing, the 5th imposes 30 s, the 6th 60 s, the 7th 120 s,
... capped at 15 minutes. The clock is passed in (seconds, monotonic), so tests need no sleeping.
Thread-safe: one instance may be shared by all sessions of a Streamlit server.
"""
from __future__ import annotations

import threading

__all__ = ["Backoff"]


class Backoff:
    """Per-key failure counter with exponential waiting times.

    Args:
        free_attempts: failures allowed before the first wait (>= 1).
        base_delay_s: the first wait, in seconds (> 0).
        max_delay_s: the longest wait (>= ``base_delay_s``).

    Raises:
        ValueError: parameters out of range.
    """

    def __init__(self, free_attempts: int = 5, base_delay_s: float = 30.0, max_delay_s: float = 900.0) -> None:
        if free_attempts < 1 or base_delay_s <= 0 or max_delay_s < base_delay_s:
            raise ValueError(
                f"need free_attempts >= 1 and 0 < base_delay_s <= max_delay_s; got {free_attempts}, "
                f"{base_delay_s}, {max_delay_s}")
        self.free_attempts = free_attempts
        self.base_delay_s = float(base_delay_s)
        self.max_delay_s = float(max_delay_s)
        self._state: dict[str, tuple[int, float]] = {}  # key -> (failures in a row, time of the last)
        self._lock = threading.Lock()

    def delay_after(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (0 below ``free_attempts``)."""
        if failures < self.free_attempts:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** (failures - self.free_attempts))

    def retry_after(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait before it may try again (0.0 when it may try now)."""
        with self._lock:
            failures, last = self._state.get(key, (0, now))
        return max(0.0, last + self.delay_after(failures) - now)

    def failure(self, key: str, now: float) -> float:
        """Record a failed attempt of ``key`` at time ``now``; returns the wait it now faces."""
        with self._lock:
            failures, _ = self._state.get(key, (0, now))
            self._state[key] = (failures + 1, now)
            return self.delay_after(failures + 1)

    def failures(self, key: str) -> int:
        """Failures in a row recorded for ``key``."""
        with self._lock:
            return self._state.get(key, (0, 0.0))[0]

    def success(self, key: str) -> None:
        """Forget ``key``'s failures (after a successful sign-in)."""
        with self._lock:
            self._state.pop(key, None)

    def reset(self) -> None:
        """Forget every key."""
        with self._lock:
            self._state.clear()
