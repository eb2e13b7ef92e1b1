"""Sign-in (AppTest of a small page that calls require_sign_in) and the audit trail."""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from medcnn.app import auth  # noqa: E402
from medcnn.privacy import hash_password  # noqa: E402
from medcnn.privacy.ratelimit import Attempt  # noqa: E402

TIMEOUT = 30
PASSWORD = "correct horse"
HASH = hash_password(PASSWORD, params=(10, 8, 1))  # cheap parameters: the tests verify many times
PAGE = '''
import streamlit as st
import fake_clock
from medcnn.app.auth import audit_event, require_sign_in

user = require_sign_in(clock=fake_clock.now)
st.markdown(f"CONTENT for {user}")
if st.button("Analyse", key="analyse"):
    audit_event("analyse", image_hash="ab" * 32)
'''


@pytest.fixture(autouse=True)
def clean(tmp_path, monkeypatch):
    """No sign-in configured, a fake clock module, and no failures left over from other tests."""
    monkeypatch.delenv(auth.PASSWORD_HASH_KEY, raising=False)
    monkeypatch.delenv(auth.AUDIT_LOG_ENV, raising=False)
    monkeypatch.setenv(auth.AUDIT_DB_ENV, str(tmp_path / "audit.sqlite"))
    (tmp_path / "fake_clock.py").write_text("T = [1000.0]\n\ndef now():\n    return T[0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    auth.reset_rate_limits()
    yield importlib.import_module("fake_clock")
    sys.modules.pop("fake_clock", None)
    auth.reset_rate_limits()


@pytest.fixture(autouse=True)
def slept(monkeypatch) -> list[float]:
    """The sign-in slowdown's delays, recorded instead of slept."""
    delays: list[float] = []
    monkeypatch.setattr(auth._LIMITER, "sleep", delays.append)
    return delays


def page(**secrets) -> AppTest:
    at = AppTest.from_string(PAGE, default_timeout=TIMEOUT)
    for key, value in secrets.items():
        at.secrets[key] = value
    return at.run()


def content(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("CONTENT")]


def sign_in(at: AppTest, password: str, name: str | None = None) -> AppTest:
    if name is not None:
        at.text_input(key="medcnn_sign_in_name").input(name)
    at.text_input(key="medcnn_sign_in_password").input(password)
    next(b for b in at.button if b.label == "Sign in").click()
    return at.run()


def test_off_by_default_the_page_runs_unchanged():
    at = page()
    assert not at.exception and content(at) == ["CONTENT for None"]
    assert not at.text_input and not at.sidebar.button


def test_with_a_hash_only_the_form_is_shown(monkeypatch):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    at = page()
    assert not at.exception and content(at) == []
    assert [t.label for t in at.text_input] == ["Password"] and at.title[0].value == "Sign in"


def test_wrong_password_shows_an_error_right_password_shows_the_content(monkeypatch):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    at = sign_in(page(), "wrong")
    assert [e.value for e in at.error] == ["Wrong password."] and content(at) == []
    at = sign_in(at, PASSWORD)
    assert not at.exception and content(at) == ["CONTENT for password user"]
    assert not at.text_input  # the form is gone
    at = at.run()  # the session remembers the sign-in
    assert content(at) == ["CONTENT for password user"]
    at.sidebar.button(key="medcnn_sign_out").click()
    at = at.run()
    assert content(at) == [] and at.text_input(key="medcnn_sign_in_password")


def test_a_session_that_used_its_budget_waits_even_with_the_right_password(monkeypatch, clean):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    at = page()
    for _ in range(4):
        at = sign_in(at, "wrong")
        assert [e.value for e in at.error] == ["Wrong password."]
    at = sign_in(at, "wrong")  # the 5th failure imposes 30 s
    assert "wait 30 s" in at.error[0].value
    clean.T[0] += 10
    at = sign_in(at, PASSWORD)  # even the right password waits: a guesser gains nothing in its session
    assert content(at) == [] and at.error[0].value == "Too many failed attempts: wait 20 s before trying again."
    clean.T[0] += 21
    at = sign_in(at, PASSWORD)
    assert content(at) == ["CONTENT for password user"]


def test_failures_of_other_sessions_never_lock_the_user_out_and_only_slow_by_a_bounded_delay(monkeypatch, slept):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    for _ in range(10):  # 50 wrong guesses from 10 sessions, each until its own budget is used up
        guesser = page()
        for _ in range(5):
            guesser = sign_in(guesser, "wrong")
        assert "wait 30 s" in guesser.error[0].value
    user = sign_in(page(), PASSWORD)  # a fresh session with the right password
    assert not user.exception and content(user) == ["CONTENT for password user"]
    # Guesses 12 to 50 and the user were slowed, growing to the bound of 2 s and no further.
    assert len(slept) == 40 and slept[:4] == [0.25, 0.5, 1.0, 2.0] and max(slept) == slept[-1] == 2.0
    assert auth._LIMITER.account.max_delay_s == 2.0


def test_a_client_address_that_used_its_budget_waits_other_addresses_do_not(monkeypatch):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    address = ["203.0.113.7"]
    monkeypatch.setattr(auth, "_client_address", lambda: address[0])
    for _ in range(4):  # 4 sessions from one address, 5 failures each: the address's 20
        guesser = page()
        for _ in range(5):
            guesser = sign_in(guesser, "wrong")
    same = sign_in(page(), PASSWORD)  # a new session does not reset the address's budget
    assert content(same) == [] and same.error[0].value == "Too many failed attempts: wait 30 s before trying again."
    address[0] = "198.51.100.20"
    other = sign_in(page(), PASSWORD)
    assert content(other) == ["CONTENT for password user"]


def test_a_busy_server_says_so_and_the_attempt_is_not_counted(monkeypatch):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    monkeypatch.setattr(auth._LIMITER, "attempt", lambda verify, **kw: Attempt("busy"))
    at = sign_in(page(), PASSWORD)
    assert content(at) == [] and at.error[0].value == (
        "The server is busy checking other sign-ins: try again in a few seconds.")
    monkeypatch.undo()
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    assert content(sign_in(at, PASSWORD)) == ["CONTENT for password user"]


def test_a_malformed_hash_closes_the_app(monkeypatch):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, "not-a-hash")
    at = page()
    assert content(at) == [] and "misconfigured" in at.error[0].value and "hash-password" in at.error[0].value


def test_changing_the_password_signs_sessions_out(monkeypatch):
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    at = sign_in(page(), PASSWORD)
    assert content(at)
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, hash_password("new one", params=(10, 8, 1)))
    assert content(at.run()) == []


def test_hash_in_secrets_works_like_the_environment():
    at = sign_in(page(MEDCNN_PASSWORD_HASH=HASH), PASSWORD)
    assert content(at) == ["CONTENT for password user"]


def test_named_accounts_are_limited_per_session_not_per_user_name():
    users = {"alice": HASH, "bob": hash_password("bobs", params=(10, 8, 1))}
    at = page(MEDCNN_USERS=users)
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    at = sign_in(at, PASSWORD, name="mallory")
    assert at.error[0].value == "Wrong user name or password."
    at = sign_in(at, "bobs", name="bob")
    assert content(at) == ["CONTENT for bob"]
    other = page(MEDCNN_USERS=users)
    for _ in range(5):
        other = sign_in(other, "guess", name="alice")
    assert "wait 30 s" in other.error[0].value
    third = sign_in(page(MEDCNN_USERS=users), "bobs", name="bob")  # bob is not limited by alice's failures
    assert content(third) == ["CONTENT for bob"]
    alice = sign_in(page(MEDCNN_USERS=users), PASSWORD, name="alice")  # nor alice, in her own session
    assert content(alice) == ["CONTENT for alice"]


def test_audit_log_records_sign_ins_and_page_events_without_secrets(monkeypatch, tmp_path):
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv(auth.AUDIT_LOG_ENV, str(log))
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    at = sign_in(sign_in(page(), "wrong"), PASSWORD)
    at.button(key="analyse").click()
    at = at.run()
    assert not at.exception
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["action"] for e in events] == ["sign-in failed", "sign-in ok", "analyse"]
    assert {e["user"] for e in events} == {"password user"}
    assert events[-1]["image"] == "ab" * 6
    text = log.read_text()
    assert "wrong" not in text and PASSWORD not in text


def test_audit_log_while_sign_in_is_off_records_anonymous(monkeypatch, tmp_path):
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv(auth.AUDIT_LOG_ENV, str(log))
    at = page()
    at.button(key="analyse").click()
    at.run()
    assert json.loads(log.read_text())["user"] == "anonymous"


OIDC = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "id", "client_secret": "secret", "server_metadata_url": "https://idp.invalid/.well-known"}


def test_oidc_shows_only_a_sign_in_button_until_logged_in():
    at = AppTest.from_string(PAGE, default_timeout=TIMEOUT)
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception and content(at) == []
    assert [b.label for b in at.button] == ["Sign in"] and not at.text_input
    if importlib.util.find_spec("authlib") is None:
        at.button(key="medcnn_login_default").click()
        at.run()
        assert "Authlib" in at.error[0].value


def test_oidc_named_providers_get_one_button_each():
    at = AppTest.from_string(PAGE, default_timeout=TIMEOUT)
    at.secrets["auth"] = {"redirect_uri": OIDC["redirect_uri"], "cookie_secret": OIDC["cookie_secret"],
                          "microsoft": dict(OIDC), "google": dict(OIDC)}
    at.user = {"is_logged_in": False}
    at.run()
    assert sorted(b.label for b in at.button) == ["Sign in with google", "Sign in with microsoft"]


def test_oidc_logged_in_user_sees_the_content_and_the_allow_list_applies():
    at = AppTest.from_string(PAGE, default_timeout=TIMEOUT)
    at.secrets["auth"] = OIDC
    at.secrets["MEDCNN_ALLOWED_USERS"] = ["@hospital.org"]
    at.user = {"is_logged_in": True, "email": "dr.who@hospital.org"}
    at.run()
    assert content(at) == ["CONTENT for dr.who@hospital.org"] and at.sidebar.button(key="medcnn_sign_out")
    other = AppTest.from_string(PAGE, default_timeout=TIMEOUT)
    other.secrets["auth"] = OIDC
    other.secrets["MEDCNN_ALLOWED_USERS"] = ["@hospital.org"]
    other.user = {"is_logged_in": True, "email": "someone@gmail.com"}
    other.run()
    assert content(other) == [] and "not allowed" in other.error[0].value

