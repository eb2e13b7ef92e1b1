"""Sign-in limits: atomic check-and-reserve, bounded verifications, per-account slowdown that never refuses.

The concurrency tests hold every verification that gets through inside a fake verifier until all
other requests have been answered, so the requests overlap for certain; nothing is timed.
"""
from __future__ import annotations

import threading

import pytest

from medcnn.privacy.ratelimit import Attempt, Backoff, SignInLimiter, Slowdown

NOW = 1000.0
TIMEOUT = 30  # only a safety net against a hung test; no assertion depends on it


class HeldVerifier:
    """A verifier that counts its calls and holds each one until :meth:`run` lets it go."""

    def __init__(self, result: bool = False) -> None:
        self.result, self.calls, self.answered = result, 0, 0
        self.cond = threading.Condition()
        self.release = threading.Event()

    def __call__(self) -> bool:
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
        assert self.release.wait(TIMEOUT), "the test never released the verifier"
        return self.result

    def run(self, n: int, attempt) -> list[Attempt]:
        """``attempt(i)`` in ``n`` threads started together; verifiers held until every other one is answered."""
        results: list[Attempt | None] = [None] * n
        start = threading.Barrier(n)

        def worker(i: int) -> None:
            start.wait(TIMEOUT)
            results[i] = attempt(i)
            with self.cond:
                self.answered += 1
                self.cond.notify_all()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        with self.cond:
            assert self.cond.wait_for(lambda: self.calls + self.answered == n, TIMEOUT)
        self.release.set()
        for t in threads:
            t.join(TIMEOUT)
        return results


def at_its_limit(backoff: Backoff, key: str) -> Backoff:
    """``backoff`` with ``key`` one failure short of its first wait: exactly one more attempt is allowed."""
    for _ in range(backoff.free_attempts - 1):
        backoff.failure(key, NOW)
    assert backoff.retry_after(key, NOW) == 0.0
    return backoff


def test_concurrent_requests_from_one_client_at_its_limit_verify_once():
    limiter = SignInLimiter()
    at_its_limit(limiter.client, "203.0.113.7")
    verify = HeldVerifier()
    sessions = [Backoff() for _ in range(10)]  # ten sessions (browser tabs) from the same address
    results = verify.run(10, lambda i: limiter.attempt(verify, session=sessions[i], client="203.0.113.7",
                                                      account="password user", now=NOW))
    assert verify.calls == 1
    assert sorted(r.outcome for r in results) == ["wait"] * 9 + ["wrong"]
    assert limiter.client.failures("203.0.113.7") == limiter.client.free_attempts
    assert limiter.client.retry_after("203.0.113.7", NOW) == 30.0


def test_concurrent_requests_in_one_session_at_its_limit_verify_once():
    limiter = SignInLimiter()
    session = at_its_limit(SignInLimiter.session_budget(), "session")
    verify = HeldVerifier()
    results = verify.run(10, lambda i: limiter.attempt(verify, session=session, client=None,
                                                      account="password user", now=NOW))
    assert verify.calls == 1 and sorted(r.outcome for r in results) == ["wait"] * 9 + ["wrong"]


def test_verifications_are_bounded_and_a_request_without_a_slot_is_busy_and_not_counted():
    limiter = SignInLimiter(slots=2, slot_timeout_s=0.01)
    verify = HeldVerifier()
    sessions = [Backoff() for _ in range(10)]
    results = verify.run(10, lambda i: limiter.attempt(verify, session=sessions[i], client=f"198.51.100.{i}",
                                                      account="password user", now=NOW))
    assert verify.calls == 2
    assert sorted(r.outcome for r in results) == ["busy"] * 8 + ["wrong"] * 2
    busy = [i for i, r in enumerate(results) if r.outcome == "busy"]
    assert all(sessions[i].failures("session") == 0 for i in busy)
    assert all(limiter.client.failures(f"198.51.100.{i}") == 0 for i in busy)


def test_the_right_password_gets_in_after_many_failures_from_others_only_slowed():
    slept: list[float] = []
    limiter = SignInLimiter(sleep=slept.append)
    for i in range(50):  # fifty wrong guesses, each from a new session and address
        result = limiter.attempt(lambda: False, session=Backoff(), client=f"192.0.2.{i}", account="password user",
                                 now=NOW + i)
        assert result.outcome == "wrong"
    right = limiter.attempt(lambda: True, session=Backoff(), client="198.51.100.1", account="password user",
                            now=NOW + 50)
    assert right == Attempt("ok", slowed_s=2.0) and slept[-1] == 2.0
    assert max(slept) == limiter.account.max_delay_s == 2.0


def test_a_session_or_client_out_of_budget_is_refused_even_with_the_right_password():
    limiter = SignInLimiter(sleep=lambda s: None)  # the account's slowdown is tested below
    session = Backoff()
    for _ in range(5):
        last = limiter.attempt(lambda: False, session=session, client=None, account="a", now=NOW)
    assert last == Attempt("wrong", wait_s=30.0)
    assert limiter.attempt(lambda: True, session=session, client=None, account="a", now=NOW + 29) == \
        Attempt("wait", wait_s=1.0)
    assert limiter.attempt(lambda: True, session=session, client=None, account="a", now=NOW + 30).outcome == "ok"
    for i in range(20):  # the client's budget, spread over many sessions
        limiter.attempt(lambda: False, session=Backoff(), client="203.0.113.9", account="a", now=NOW)
    for client, expected in (("203.0.113.9", "wait"), ("203.0.113.10", "ok")):
        assert limiter.attempt(lambda: True, session=Backoff(), client=client, account="a", now=NOW).outcome == expected


def test_slowdown_grows_after_free_failures_is_bounded_and_forgets():
    s = Slowdown(free_failures=10, base_delay_s=0.25, max_delay_s=2.0, forget_after_s=900)
    delays = []
    for i in range(1000):
        delays.append(s.delay("acct", NOW + i * 0.1))
        s.failure("acct", NOW + i * 0.1)
    assert delays[:11] == [0.0] * 11 and delays[11:16] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert max(delays) == 2.0 and s.delay("acct", NOW + 100) == 2.0
    assert s.delay("other", NOW) == 0.0
    assert s.delay("acct", NOW + 100 + 901) == 0.0  # a quiet quarter of an hour: forgotten
    with pytest.raises(ValueError, match="max_delay_s"):
        Slowdown(base_delay_s=3, max_delay_s=2)


def test_reserve_counts_before_the_check_and_cancel_takes_it_back():
    b = Backoff(free_attempts=2, base_delay_s=30, max_delay_s=60)
    assert b.reserve("k", NOW) == 0.0 and b.failures("k") == 1
    assert b.reserve("k", NOW) == 0.0 and b.failures("k") == 2
    assert b.reserve("k", NOW + 10) == 20.0 and b.failures("k") == 2  # refused: nothing recorded
    b.cancel("k")
    assert b.failures("k") == 1 and b.retry_after("k", NOW) == 0.0
    b.cancel("k")
    assert b.failures("k") == 0
    with pytest.raises(ValueError, match="slots"):
        SignInLimiter(slots=0)
