"""Sign-in rate limits: budgets that refuse a guesser, and a slowdown that never locks a user out.

Design (OWASP Authentication Cheat Sheet, "Protect against automated attacks"; Blocking Brute
Force Attacks; Credential Stuffing Prevention Cheat Sheet): a hard lockout of an *account* lets
anyone lock the real user out (an account-lockout denial of service), so nothing that an attacker
can fill up for someone else may refuse a correct password. Instead:

* **Refusing budgets** (:class:`Backoff`) are kept per *session* and per *client* (the client's
  IP address where the server knows it). They belong to the requester, so a guesser exhausts
  only its own: after ``free_attempts`` failures in a row it must wait ``base_delay_s``, twice as
  long after each further failure, up to ``max_delay_s``, even with the right password.
* **Slowing** (:class:`Slowdown`) is kept per *account* (for a shared password: the whole server):
  once an account has many recent failures, every verification for it first waits a short,
  bounded delay (``max_delay_s``). It slows a distributed guesser and costs the real user at most
  that delay; it never refuses.
* **Check-and-reserve is atomic** and **verifications are bounded** (:class:`SignInLimiter`):
  the attempt is counted against the budgets *before* the slow password hash is computed, under
  one lock, so concurrent requests cannot all pass the check before any failure is recorded;
  and at most ``slots`` verifications run at once (each costs ~32 MiB and a few hundred ms of
  scrypt); a request that finds no free slot within ``slot_timeout_s`` is answered "busy, try
  again" and not counted as a failure.

The clock is passed in (seconds, monotonic), so tests need no sleeping; the slowdown's ``sleep``
is injectable for the same reason. Everything here is thread-safe: one :class:`SignInLimiter`
serves every session of a Streamlit server.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Attempt", "Backoff", "SignInLimiter", "Slowdown"]


class Backoff:
    """Per-key failure counter with exponential waiting times (a refusing budget).

    With the defaults: failures 1-4 cost nothing, the 5th imposes 30 s, the 6th 60 s, the 7th
    120 s, ... capped at 15 minutes; a success clears the key.

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
            return self._wait(key, now)

    def _wait(self, key: str, now: float) -> float:
        failures, last = self._state.get(key, (0, now))
        return max(0.0, last + self.delay_after(failures) - now)

    def failure(self, key: str, now: float) -> float:
        """Record a failed attempt of ``key`` at time ``now``; returns the wait it now faces."""
        with self._lock:
            failures, _ = self._state.get(key, (0, now))
            self._state[key] = (failures + 1, now)
            return self.delay_after(failures + 1)

    def reserve(self, key: str, now: float) -> float:
        """Check and count an attempt in one step: the way to use a budget from several threads.

        When ``key`` may try now, the attempt is recorded as a failure at ``now`` (call
        :meth:`success` if it succeeds, :meth:`cancel` if it was never checked) and 0.0 is
        returned; otherwise nothing is recorded and the remaining wait is returned.
        """
        with self._lock:
            wait = self._wait(key, now)
            if wait == 0.0:
                failures, _ = self._state.get(key, (0, now))
                self._state[key] = (failures + 1, now)
            return wait

    def cancel(self, key: str) -> None:
        """Take back one reserved attempt that was never checked (its time stays recorded)."""
        with self._lock:
            failures, last = self._state.get(key, (0, 0.0))
            if failures <= 1:
                self._state.pop(key, None)
            else:
                self._state[key] = (failures - 1, last)

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


class Slowdown:
    """Per-key delay before each verification that grows with recent failures, bounded; never refuses.

    Failures 1 .. ``free_failures`` cost nothing; after that each verification for the key first
    waits ``base_delay_s``, doubling per further failure, never more than ``max_delay_s``. A key
    with no failure for ``forget_after_s`` starts over. A success does not clear it (the real
    user signing in must not hand a guesser a fresh allowance).

    Args:
        free_failures: recent failures before any delay (>= 0).
        base_delay_s: the first delay (> 0).
        max_delay_s: the bound on the delay (>= ``base_delay_s``).
        forget_after_s: quiet time after which a key's failures are forgotten (> 0).

    Raises:
        ValueError: parameters out of range.
    """

    def __init__(self, free_failures: int = 10, base_delay_s: float = 0.25, max_delay_s: float = 2.0,
                 forget_after_s: float = 900.0) -> None:
        if free_failures < 0 or base_delay_s <= 0 or max_delay_s < base_delay_s or forget_after_s <= 0:
            raise ValueError(
                f"need free_failures >= 0, 0 < base_delay_s <= max_delay_s and forget_after_s > 0; got "
                f"{free_failures}, {base_delay_s}, {max_delay_s}, {forget_after_s}")
        self.free_failures = free_failures
        self.base_delay_s, self.max_delay_s = float(base_delay_s), float(max_delay_s)
        self.forget_after_s = float(forget_after_s)
        self._state: dict[str, tuple[int, float]] = {}  # key -> (recent failures, time of the last)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> int:
        failures, last = self._state.get(key, (0, now))
        return failures if now - last <= self.forget_after_s else 0

    def delay(self, key: str, now: float) -> float:
        """Seconds the next verification for ``key`` waits first (0.0 .. ``max_delay_s``)."""
        with self._lock:
            over = self._recent(key, now) - self.free_failures
        return 0.0 if over <= 0 else min(self.max_delay_s, self.base_delay_s * 2.0 ** (over - 1))

    def failure(self, key: str, now: float) -> None:
        """Record a failed verification for ``key`` at ``now``."""
        with self._lock:
            self._state[key] = (self._recent(key, now) + 1, now)

    def reset(self) -> None:
        """Forget every key."""
        with self._lock:
            self._state.clear()


@dataclass(frozen=True)
class Attempt:
    """What became of one sign-in attempt (:meth:`SignInLimiter.attempt`).

    Attributes:
        outcome: ``"ok"`` (verified), ``"wrong"`` (verified, wrong), ``"wait"`` (refused by a
            budget, not verified) or ``"busy"`` (no verification slot free, not verified or counted).
        wait_s: for ``"wait"`` and ``"wrong"``, seconds before this session/client may try again.
        slowed_s: the delay slept before verifying.
    """

    outcome: str
    wait_s: float = 0.0
    slowed_s: float = 0.0


_SESSION = "session"


class SignInLimiter:
    """The sign-in path: per-session and per-client budgets, per-account slowdown, bounded verifications.

    Args:
        client: the per-client budget (default ``Backoff(20, 30 s, 5 min)``: generous, since a
            hospital network may put many users behind one address).
        account: the per-account slowdown (default :class:`Slowdown` with its defaults: at most 2 s).
        slots: verifications that may run at once (>= 1).
        slot_timeout_s: how long a request waits for a slot before it is answered "busy".
        sleep: what waits out the slowdown (:func:`time.sleep`; tests pass a recorder).

    Raises:
        ValueError: ``slots`` < 1 or a negative ``slot_timeout_s``.
    """

    def __init__(self, *, client: Backoff | None = None, account: Slowdown | None = None, slots: int = 4,
                 slot_timeout_s: float = 3.0, sleep: Callable[[float], None] = time.sleep) -> None:
        if slots < 1 or slot_timeout_s < 0:
            raise ValueError(f"need slots >= 1 and slot_timeout_s >= 0; got {slots}, {slot_timeout_s}")
        self.client = client or Backoff(free_attempts=20, base_delay_s=30.0, max_delay_s=300.0)
        self.account = account or Slowdown()
        self.slots, self.slot_timeout_s, self.sleep = slots, float(slot_timeout_s), sleep
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()

    @staticmethod
    def session_budget() -> Backoff:
        """A new per-session budget (5 free failures, then 30 s doubling to 15 min)."""
        return Backoff()

    def attempt(self, verify: Callable[[], bool], *, session: Backoff, client: str | None, account: str,
                now: float) -> Attempt:
        """Run one sign-in attempt through the limits; ``verify()`` is called at most once.

        Args:
            verify: checks the password (slow); True when it is right.
            session: this session's budget (:meth:`session_budget`).
            client: the client's address, ``None`` when unknown (then the session budget alone refuses).
            account: the account tried (the slowdown's key).
            now: the time, seconds, monotonic.

        Returns:
            the :class:`Attempt`.
        """
        with self._lock:  # check both budgets, then reserve both: no request slips in between
            wait = max(session.retry_after(_SESSION, now), self.client.retry_after(client, now) if client else 0.0)
            if wait > 0:
                return Attempt("wait", wait_s=wait)
            session.reserve(_SESSION, now)
            if client:
                self.client.reserve(client, now)
        slowed = self.account.delay(account, now)
        if slowed:
            self.sleep(slowed)
        if not self._slots.acquire(timeout=self.slot_timeout_s):
            with self._lock:
                session.cancel(_SESSION)
                if client:
                    self.client.cancel(client)
            return Attempt("busy", slowed_s=slowed)
        try:
            ok = verify()
        finally:
            self._slots.release()
        if ok:
            session.success(_SESSION)
            if client:
                self.client.success(client)
            return Attempt("ok", slowed_s=slowed)
        self.account.failure(account, now)
        wait = max(session.delay_after(session.failures(_SESSION)),
                   self.client.delay_after(self.client.failures(client)) if client else 0.0)
        return Attempt("wrong", wait_s=wait, slowed_s=slowed)

    def reset(self) -> None:
        """Forget every client's and account's failures (administration and tests)."""
        self.client.reset()
        self.account.reset()
