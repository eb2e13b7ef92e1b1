"""Sign-in limits under concurrency, and under a guessing campaign through the real sign-in form.

Claim 1 (atomic check-and-reserve): 10 sessions from one client submit a wrong password at the
same instant while the budget that limits them allows exactly one more attempt; at most one
scrypt verification may run. Measured on the verification path with the production scrypt
setting (N=2^15, r=8, p=3), 10 threads released together by a barrier: *before* is the sequence
the sign-in form ran until this fix (``retry_after`` -> verify -> ``failure`` on one shared
:class:`Backoff`, the per-user-name budget), *after* is :meth:`SignInLimiter.attempt` with the
per-client budget. (Streamlit's ``AppTest`` cannot run sessions in parallel threads: each run
creates and tears down the one global runtime.)

Claim 2 (no lockout): after 50 wrong guesses from 10 other sessions, the right password in a
fresh session signs in, slowed by a bounded delay. Measured through the real form (``AppTest``
sessions of a page that calls ``require_sign_in``), with whatever ``medcnn`` is importable, so
the baseline is this script run against the commit before the fix; the slowdown's sleep is
recorded, not slept.

Usage::

    python benchmarks/bench_signin_race.py
    git worktree add /tmp/before <commit> && PYTHONPATH=/tmp/before python benchmarks/bench_signin_race.py
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: a baseline checkout wins
import medcnn  # noqa: E402
from medcnn.app import auth  # noqa: E402
from medcnn.privacy import hash_password, verify_password  # noqa: E402
from medcnn.privacy.ratelimit import Backoff  # noqa: E402

try:  # absent before the fix (a baseline checkout): claim 1 then measures "before" only
    from medcnn.privacy.ratelimit import SignInLimiter  # noqa: E402
except ImportError:
    SignInLimiter = None

PASSWORD = "a long enough shared passphrase"
CLIENT = "203.0.113.7"
PAGE = '''
import streamlit as st
from medcnn.app.auth import require_sign_in

user = require_sign_in()
st.markdown(f"CONTENT for {user}")
'''


def session() -> AppTest:
    return AppTest.from_string(PAGE, default_timeout=120).run()


def submit(at: AppTest, password: str) -> AppTest:
    at.text_input(key="medcnn_sign_in_password").input(password)
    next(b for b in at.button if b.label == "Sign in").click()
    return at


def outcome(at: AppTest) -> str:
    if any(m.value.startswith("CONTENT") for m in at.markdown):
        return "signed in"
    text = at.error[0].value if at.error else "(no message)"
    return "refused: wait" if text.startswith("Too many") else ("busy" if "busy" in text else "verified: wrong")


def concurrent_guesses(attempt, n: int = 10) -> tuple[int, list[str]]:
    """``attempt(i) -> outcome`` in ``n`` threads released together; (verifications, outcomes)."""
    start = threading.Barrier(n)
    outcomes: list[str] = [""] * n

    def go(i: int) -> None:
        start.wait()
        outcomes[i] = attempt(i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def claim_1(encoded: str) -> None:
    calls = [0]
    lock = threading.Lock()

    def verify() -> bool:
        with lock:
            calls[0] += 1
        return verify_password("wrong guess", encoded)

    now = time.monotonic()
    shared = Backoff()  # before: the per-user-name budget, one attempt short of its first wait
    for _ in range(shared.free_attempts - 1):
        shared.failure("password user", now)

    def before(i: int) -> str:
        session = Backoff()
        if max(session.retry_after("session", now), shared.retry_after("password user", now)) > 0:
            return "wait"
        if verify():
            return "ok"
        session.failure("session", now)
        shared.failure("password user", now)
        return "wrong"

    paths = [("before", before)]
    if SignInLimiter is not None:
        limiter = SignInLimiter(sleep=lambda s: None)  # after: the per-client budget, one attempt short
        for _ in range(limiter.client.free_attempts - 1):
            limiter.client.failure(CLIENT, now)
        paths.append(("after", lambda i: limiter.attempt(verify, session=Backoff(), client=CLIENT,
                                                         account="password user", now=now).outcome))
    for name, path in paths:
        calls[0] = 0
        t0 = time.perf_counter()
        outcomes = concurrent_guesses(path)
        counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
        print(f"claim 1, {name}: 10 concurrent wrong guesses, budget allows 1 -> {calls[0]} scrypt verifications; "
              f"outcomes {counts}; {time.perf_counter() - t0:.2f} s")


def main() -> None:
    encoded = hash_password(PASSWORD)  # production parameters
    print(f"medcnn from {os.path.dirname(medcnn.__file__)}")
    claim_1(encoded)

    os.environ[auth.PASSWORD_HASH_KEY] = encoded
    os.environ[auth.AUDIT_DB_ENV] = "off"
    calls = [0]
    real_verify = auth.verify_password

    def counted(password: str, stored: str) -> bool:
        calls[0] += 1
        return real_verify(password, stored)

    auth.verify_password = counted
    auth.reset_rate_limits()
    slept: list[float] = []
    if hasattr(auth, "_LIMITER"):
        auth._LIMITER.sleep = slept.append
    for _ in range(10):
        at = session()
        for _ in range(5):
            at = submit(at, "wrong guess").run()
    guesses_verified = calls[0]
    user = submit(session(), PASSWORD).run()
    delay = f", slowed by {slept[-1]:.1f} s (largest delay of the campaign {max(slept):.1f} s)" if slept else ""
    print(f"claim 2: 50 wrong guesses from 10 sessions ({guesses_verified} verified), then the right password "
          f"in a new session -> {outcome(user)}{delay}")


if __name__ == "__main__":
    main()
