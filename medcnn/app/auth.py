"""Sign-in for the Streamlit app (off by default) and the audit trail.

Every page calls :func:`require_sign_in` right after ``st.set_page_config``. While sign-in is
off it returns ``None`` and the page runs as before; when it is on, the page shows only a sign-in
form (or sign-in buttons) and stops until the visitor has signed in. A signed-in session keeps
its user in ``st.session_state``; the sidebar gets a "Sign out" button.

Configuration, first match wins (``.streamlit/secrets.toml`` is Streamlit's secrets file):

1. **Single sign-on (OIDC)**, via Streamlit's ``st.login``, when secrets have an ``[auth]`` section::

       [auth]
       redirect_uri = "https://medcnn.example.org/oauth2callback"
       cookie_secret = "<a long random string>"
       client_id = "<from your identity provider>"
       client_secret = "<from your identity provider>"
       server_metadata_url = "https://login.example.org/.well-known/openid-configuration"

   Several providers: put the last three keys in sub-sections (``[auth.microsoft]``,
   ``[auth.google]``); each gets a button. Needs Authlib >= 1.3.2 (``pip install "streamlit[auth]"``).
   Any account the provider authenticates may enter unless ``MEDCNN_ALLOWED_USERS`` (a list in
   secrets) names the allowed e-mails, ``"@hospital.org"`` entries allowing a whole domain.
2. **Named accounts**: a ``[MEDCNN_USERS]`` table in secrets, user name -> hash.
3. **One shared password**: ``MEDCNN_PASSWORD_HASH`` in the environment, or the same key in
   secrets. This is the one-line switch::

       export MEDCNN_PASSWORD_HASH='scrypt:ln=15,r=8,p=3:...'   # from: python -m medcnn hash-password

Failed sign-ins never lock the real user out (OWASP; :mod:`medcnn.privacy.ratelimit`): a session or
client IP waits after 5 resp. 20 failures, even with the right password; an account is only slowed
(by 2 s at most). A malformed hash stops the app with a message (it never falls back to "open").

Audit trail, in an SQLite database (:mod:`medcnn.privacy.audit_db`): one row per analysis
(:func:`audit_analysis`: time, user, image SHA-256, model, method, decision, out-of-distribution
level) and per event (:func:`audit_event`: sign-in ok / failed, sign-out, exports). Where:

* ``MEDCNN_AUDIT_DB=/path/audit.sqlite``: that file (``off`` turns the database off);
* unset, while sign-in is on: ``medcnn_audit.sqlite`` in the directory the app was started from;
* unset, while sign-in is off: no database (an open demo server records nothing).

``python -m medcnn audit-log`` prints or exports it; ``MEDCNN_AUDIT_LOG=FILE`` also appends JSON
lines (:mod:`medcnn.privacy.audit_log`). The user is the account (``"password user"`` for the
shared password, ``"anonymous"`` while sign-in is off); never patient data or file names.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from medcnn.privacy import AuditLogError, PasswordHashError, verify_password, write_audit_event
from medcnn.privacy.audit_db import AuditDBError, record_analysis, record_event
from medcnn.privacy.passwords import parse_hash, verify_account
from medcnn.privacy.ratelimit import SignInLimiter

__all__ = [
    "AUDIT_DB_ENV", "AUDIT_LOG_ENV", "DEFAULT_AUDIT_DB", "PASSWORD_HASH_KEY", "PASSWORD_USER", "AuthConfig",
    "audit_analysis", "audit_db_path", "audit_event", "auth_config", "current_user", "require_sign_in",
    "reset_rate_limits", "sign_out", "signed_in",
]

PASSWORD_HASH_KEY = "MEDCNN_PASSWORD_HASH"
USERS_KEY = "MEDCNN_USERS"
ALLOWED_USERS_KEY = "MEDCNN_ALLOWED_USERS"
AUDIT_LOG_ENV = "MEDCNN_AUDIT_LOG"
AUDIT_DB_ENV = "MEDCNN_AUDIT_DB"
#: The audit database's file name when sign-in is on and ``MEDCNN_AUDIT_DB`` is unset.
DEFAULT_AUDIT_DB = "medcnn_audit.sqlite"
_SESSION_AUDITED = "medcnn_audited_analyses"  # analyses already recorded by this session
#: The user recorded for the shared password.
PASSWORD_USER = "password user"
_UNKNOWN_USER = "unknown user"  # what a failed sign-in with an unknown name is logged and limited as
_SESSION_USER, _SESSION_CONFIG = "medcnn_auth_user", "medcnn_auth_config"
_SESSION_BACKOFF, _SESSION_OIDC_LOGGED = "medcnn_auth_backoff", "medcnn_auth_oidc_logged"
_SESSION_LOGIN_ERROR = "medcnn_auth_login_error"
_LIMITER = SignInLimiter()  # per-client budgets and per-account slowdown, shared by every session
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthConfig:
    """The sign-in configuration found in the environment and secrets.

    Attributes:
        mode: ``"off"``, ``"password"``, ``"users"`` or ``"oidc"``.
        password_hash: the shared password's hash (``"password"`` mode).
        users: user name -> hash (``"users"`` mode).
        providers: OIDC provider names (``(None,)`` for a single unnamed one).
        allowed: OIDC allow-list (e-mails, or ``"@domain"``); empty allows every account.
    """

    mode: str
    password_hash: str | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    providers: tuple[str | None, ...] = ()
    allowed: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Changes whenever a password hash changes, which signs every session out."""
        material = "\n".join([self.mode, self.password_hash or ""] + sorted(f"{k}={v}" for k, v in self.users.items()))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _secrets() -> Mapping:
    """``st.secrets`` when a secrets file (or a test's secrets) exists, else an empty mapping."""
    return st.secrets if st.secrets.load_if_toml_exists() else {}


def auth_config() -> AuthConfig:
    """Read the configuration (module docstring).

    Raises:
        PasswordHashError: a configured hash is malformed (never silently ignored).
    """
    sec = _secrets()
    if "auth" in sec:
        auth = sec["auth"]
        named = tuple(k for k, v in auth.items() if isinstance(v, Mapping))
        listed = sec.get(ALLOWED_USERS_KEY, ())
        listed = [listed] if isinstance(listed, str) else listed
        allowed = tuple(str(a).strip().lower() for a in listed if str(a).strip())
        return AuthConfig("oidc", providers=named or (None,), allowed=allowed)
    if USERS_KEY in sec:
        users = {str(k): str(v) for k, v in sec[USERS_KEY].items()}
        for name, value in users.items():
            try:
                parse_hash(value)
            except PasswordHashError as e:
                raise PasswordHashError(f"{USERS_KEY}[{name!r}]: {e}") from None
        return AuthConfig("users", users=users)
    value = os.environ.get(PASSWORD_HASH_KEY) or sec.get(PASSWORD_HASH_KEY)
    if value:
        try:
            parse_hash(value)
        except PasswordHashError as e:
            raise PasswordHashError(f"{PASSWORD_HASH_KEY}: {e}") from None
        return AuthConfig("password", password_hash=str(value).strip())
    return AuthConfig("off")


def current_user() -> str | None:
    """The signed-in user of this session, ``None`` when nobody is (or sign-in is off)."""
    user = st.session_state.get(_SESSION_USER)
    if user:
        return str(user)
    if st.session_state.get(_SESSION_OIDC_LOGGED) and st.user.get("is_logged_in"):
        return _oidc_user()
    return None


def _oidc_user() -> str:
    return str(st.user.get("email") or st.user.get("name") or "signed-in user")


def audit_db_path() -> Path | None:
    """The audit database's path (module docstring), ``None`` when there is none.

    Raises:
        PasswordHashError: sign-in is misconfigured (the pages stop before auditing then).
    """
    value = os.environ.get(AUDIT_DB_ENV, "").strip()
    if value.lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value)
    return Path.cwd() / DEFAULT_AUDIT_DB if auth_config().mode != "off" else None


def _audit_user() -> str:
    return current_user() or ("anonymous" if auth_config().mode == "off" else _UNKNOWN_USER)


def _show_failure(what: str, e: Exception) -> None:
    """An audit trail that was asked for is never skipped silently: say on the page that it failed.

    Never fatal: the analysis the clinician is looking at stays on the page (an error in the trail
    is the server's problem, to be fixed by its administrator, not a reason to hide the result).
    The page does not show where the trail is on the server; the server's log gets the full message
    (which holds no patient data: the trail takes none).
    """
    if isinstance(e, OSError):
        _LOG.error("audit trail: %s", e)
        reason = "the audit trail cannot be written on the server"
    else:
        reason = str(e)
    st.error(f"{what} could not be recorded in the audit trail ({reason}). The page works on; tell the "
             "server's administrator.")


def audit_event(action: str, image_hash: str | None = None) -> None:
    """Record an event in the audit database and/or the JSON-lines log (no-op when neither is on).

    Args:
        action: ``"analyse"``, ``"export"``, ``"export report"`` ... (or a sign-in action).
        image_hash: the image's hex SHA-256 (``medcnn.privacy.image_sha256(data)``); the database
            keeps all of it, the JSON log a prefix.

    A trail that cannot be written shows an error on the page, which goes on.
    """
    _write_event(action, _audit_user(), image_hash)


def audit_analysis(image_hash: str, model: str, method: str, decided: Sequence[str] | None, ood_level: str,
                   labels: Sequence[str]) -> None:
    """Record one analysis (a row in the audit database; no-op when it is off).

    Repeats of the same analysis by the same session (Streamlit reruns the page on every widget
    change) are recorded once. A row that cannot be written (the database is unwritable, or a
    value is not what its field takes) shows an error on the page and is tried again on the next
    rerun; the analysis itself is never stopped by its audit trail.

    Args:
        image_hash: full hex SHA-256 of the uploaded bytes.
        model: the model card's name.
        method: the explanation method's name.
        decided: the labels the decision names (:attr:`medcnn.inference.Prediction.decided`),
            ``None`` when the gate withheld the result.
        ood_level: ``"ok"``, ``"unusual"`` or ``"outside"``.
        labels: the model card's labels.
    """
    path = audit_db_path()
    if path is None:
        return
    seen = st.session_state.setdefault(_SESSION_AUDITED, [])
    fingerprint = "|".join((image_hash, model, method, repr(decided), ood_level))
    if fingerprint in seen:
        return
    try:
        record_analysis(path, user=_audit_user(), image_hash=image_hash, model=model, method=method,
                        decided=decided, labels=labels, ood_level=ood_level)
    except (AuditDBError, ValueError) as e:
        _show_failure("This analysis", e)
        return
    seen.append(fingerprint)
    del seen[:-256]  # bounded: only recent analyses are remembered


def _write_event(action: str, user: str, image_hash: str | None = None) -> None:
    """Write one event to every trail that is on (database, JSON lines)."""
    path = audit_db_path()
    log = os.environ.get(AUDIT_LOG_ENV)
    try:
        if path is not None:
            record_event(path, action, user=user, image_hash=image_hash)
        if log:  # the JSON-lines log knows one "export" action for every kind of export
            write_audit_event(log, "export" if action.startswith("export") else action, user=user,
                              image_hash=image_hash)
    except (AuditDBError, AuditLogError, ValueError) as e:
        _show_failure(f"The event {action!r}", e)


def sign_out() -> None:
    """Sign this session out (password modes; OIDC uses ``st.logout``)."""
    user = st.session_state.pop(_SESSION_USER, None)
    st.session_state.pop(_SESSION_CONFIG, None)
    if user:
        _write_event("sign-out", str(user))


def _oidc_sign_out() -> None:
    _write_event("sign-out", _oidc_user())
    st.session_state.pop(_SESSION_OIDC_LOGGED, None)
    st.logout()


def reset_rate_limits() -> None:
    """Forget all failed attempts recorded per client and per account (administration and tests)."""
    _LIMITER.reset()


def signed_in(get: Callable[[str], object], cfg: AuthConfig) -> bool:
    """The one rule of "is this session signed in", for the pages and the server's upload guard.

    Args:
        get: reads a key of the session's state (``st.session_state.get``, or the server's
            per-session state read from another thread), ``None`` when absent.
        cfg: the current configuration; a password user counts only while the hashes it signed
            in with are unchanged (its fingerprint), an OIDC user once it passed the allow-list.
    """
    if cfg.mode == "oidc":
        return bool(get(_SESSION_OIDC_LOGGED))
    return bool(get(_SESSION_USER)) and get(_SESSION_CONFIG) == cfg.fingerprint


def require_sign_in(*, clock: Callable[[], float] | None = None) -> str | None:
    """Show the sign-in and stop the page until the visitor has signed in.

    Args:
        clock: seconds, monotonic (default :func:`time.monotonic`); tests inject a fake one.

    Returns:
        the signed-in user name, or ``None`` when sign-in is off.
    """
    try:
        cfg = auth_config()
    except PasswordHashError as e:
        st.error(f"Sign-in is misconfigured, so the app is closed: {e}")
        st.stop()
    if cfg.mode == "off":
        return None
    if cfg.mode == "oidc":
        return _require_oidc(cfg)
    if signed_in(st.session_state.get, cfg):
        st.sidebar.button("Sign out", key="medcnn_sign_out", on_click=sign_out)
        return str(st.session_state.get(_SESSION_USER))
    st.session_state.pop(_SESSION_USER, None)
    _password_form(cfg, clock or time.monotonic)
    st.stop()


def _password_form(cfg: AuthConfig, clock: Callable[[], float]) -> None:
    """The sign-in form; on the right password, remember the user and rerun the page."""
    st.title("Sign in")
    st.caption("This medcnn server asks for a password. Research and teaching use only.")
    with st.form("medcnn_sign_in_form", clear_on_submit=True):
        name = st.text_input("User name", key="medcnn_sign_in_name") if cfg.mode == "users" else ""
        password = st.text_input("Password", type="password", key="medcnn_sign_in_password")
        submitted = st.form_submit_button("Sign in")
    if not submitted:
        return
    now = clock()
    name = (name or "").strip()
    known = cfg.mode == "password" or name in cfg.users
    key = PASSWORD_USER if cfg.mode == "password" else (name if known else _UNKNOWN_USER)
    session = st.session_state.setdefault(_SESSION_BACKOFF, SignInLimiter.session_budget())
    result = _LIMITER.attempt(lambda: _check(cfg, name, password), session=session, client=_client_address(),
                              account=key, now=now)
    too_many = f"Too many failed attempts: wait {math.ceil(result.wait_s)} s before trying again."
    if result.outcome in ("busy", "wait"):
        st.error(too_many if result.outcome == "wait" else
                 "The server is busy checking other sign-ins: try again in a few seconds.")
        return
    if result.outcome == "ok":
        st.session_state[_SESSION_USER] = key
        st.session_state[_SESSION_CONFIG] = cfg.fingerprint
        _write_event("sign-in ok", key)
        st.rerun()
    _write_event("sign-in failed", key)
    what = "Wrong password." if cfg.mode == "password" else "Wrong user name or password."
    st.error(what + (" " + too_many if result.wait_s else ""))


def _client_address() -> str | None:
    """The requesting client's IP address, ``None`` when Streamlit does not know it (loopback, tests)."""
    return st.context.ip_address


def _check(cfg: AuthConfig, name: str, password: str) -> bool:
    """Verify the password (an unknown name takes as long as a known one, then fails)."""
    if cfg.mode == "password":
        return verify_password(password, cfg.password_hash or "")
    return verify_account(cfg.users, name, password)


def _login(provider: str | None) -> None:
    """Button callback: start the OIDC flow, or explain what is missing."""
    if importlib.util.find_spec("authlib") is None:
        st.session_state[_SESSION_LOGIN_ERROR] = (
            'Single sign-on needs the Authlib package: pip install "streamlit[auth]" (Authlib >= 1.3.2), '
            "then restart the app.")
        return
    st.login(provider) if provider else st.login()


def _allowed(user: str, allowed: tuple[str, ...]) -> bool:
    user = user.lower()
    return any(user == a or (a.startswith("@") and user.endswith(a)) for a in allowed)


def _require_oidc(cfg: AuthConfig) -> str:
    """OIDC mode: sign-in buttons until ``st.user`` is logged in, then the allow-list."""
    if not st.user.get("is_logged_in"):
        st.title("Sign in")
        st.caption("This medcnn server uses your organisation's single sign-on. Research and teaching use only.")
        for provider in cfg.providers:
            label = f"Sign in with {provider}" if provider else "Sign in"
            st.button(label, key=f"medcnn_login_{provider or 'default'}", on_click=_login, args=(provider,))
        error = st.session_state.pop(_SESSION_LOGIN_ERROR, None)
        if error:
            st.error(error)
        st.stop()
    user = _oidc_user()
    if cfg.allowed and not _allowed(user, cfg.allowed):
        st.error("This account is not allowed to use this medcnn server; ask its administrator to add it.")
        st.button("Sign out", key="medcnn_sign_out", on_click=st.logout)
        st.stop()
    if not st.session_state.get(_SESSION_OIDC_LOGGED):
        st.session_state[_SESSION_OIDC_LOGGED] = True
        _write_event("sign-in ok", user)
    st.sidebar.button("Sign out", key="medcnn_sign_out", on_click=_oidc_sign_out)
    return user
