"""Salted, slow password hashes for the app's sign-in (scrypt, RFC 7914).

A hash is one self-describing ASCII string with no characters that a shell or a TOML file treats
specially::

    scrypt:ln=15,r=8,p=3:<salt>:<key>

``ln`` is log2 of the CPU/memory cost N, ``r`` the block size, ``p`` the parallelism; salt (16
random bytes) and derived key (32 bytes) are unpadded URL-safe base64. The default N = 2**15,
r = 8, p = 3 is one of OWASP's recommended scrypt settings (Password Storage Cheat Sheet: N=2^15,
r=8, p=3), about 32 MiB and a few hundred milliseconds per verification. Passwords are normalised
to Unicode NFC and encoded as UTF-8, so the same typed password hashes the same on every platform.
Verification re-derives the key with the stored parameters and compares in constant time
(:func:`hmac.compare_digest`).

:func:`check_password_strength` is the policy for a password an operator is about to hash (the
``hash-password`` command applies it; :func:`hash_password` itself stays permissive so tests can
use short passwords). It follows NIST SP 800-63B-4 section 3.1.1.2, which OWASP's Authentication
Cheat Sheet adopts: length is what counts, no composition rules, and a blocklist of common,
repetitive and sequential values. The minimum is 15 characters because the app's password is a
*single* factor (SP 800-63B-4: at least 15 for a single-factor password, 8 only as part of
multi-factor authentication; the older rev. 3 said 8), and a shared password on a clinical
server is exposed to every guesser that can reach it: the rate limits
(:mod:`medcnn.privacy.ratelimit`) slow online guessing, they do not make a short password safe.
A passphrase of three or four words meets it easily.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import string
import unicodedata
from collections.abc import Mapping

__all__ = [
    "DEFAULT_PARAMS", "MIN_PASSWORD_LENGTH", "PasswordHashError", "WeakPasswordError", "check_password_strength",
    "hash_password", "parse_hash", "verify_account", "verify_password",
]

_SCHEME = "scrypt"
#: (log2 N, r, p) used by :func:`hash_password` by default.
DEFAULT_PARAMS = (15, 8, 3)
_SALT_BYTES, _KEY_BYTES = 16, 32
# Accepted ranges when reading a stored hash: a crafted hash must not make verification hang
# or exhaust memory (ln 20 with r 16 is 2 GiB already).
_LN_RANGE, _R_RANGE, _P_RANGE = (10, 20), (1, 16), (1, 16)
#: Fewest characters (Unicode code points, after NFC) :func:`check_password_strength` accepts.
MIN_PASSWORD_LENGTH = 15
# The most common passwords and words of this context (NIST SP 800-63B-4 3.1.1.2: "commonly used,
# expected, or compromised"), compared with the password stripped of digits, punctuation and
# spaces at both ends, so "Password2024!" and "qwerty 123456789" are refused too.
_COMMON = frozenset("""
    password passw0rd p@ssword passwort motdepasse contrasena wachtwoord qwerty qwertyuiop asdfghjkl
    azerty abc abcdef letmein welcome iloveyou admin administrator root login master secret changeme
    default trustno1 dragon monkey football baseball sunshine princess shadow superman starwars
    hospital clinic radiology xray chestxray medcnn streamlit doctor nurse patient
""".split())
_RUNS = tuple(r + r[::-1] for r in (string.ascii_lowercase, "qwertyuiopasdfghjklzxcvbnm", "azertyuiopqsdfghjklmwxcvbn",
                                    "1234567890" * 4))


class PasswordHashError(ValueError):
    """A stored password hash that cannot be read (the message says how to make a valid one)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
    n = 1 << ln
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    # scrypt needs 128 * r * N bytes (plus 128 * r * p); allow twice that.
    maxmem = 2 * 128 * r * (n + p) + (1 << 20)
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


class WeakPasswordError(ValueError):
    """A password refused by :func:`check_password_strength` (the message says what to choose)."""


def check_password_strength(password: str) -> None:
    """Refuse a password too weak to protect the app (module docstring: the policy and its sources).

    Args:
        password: the candidate password.

    Raises:
        WeakPasswordError: shorter than :data:`MIN_PASSWORD_LENGTH` characters; a pattern
            repeated three times or more, or fewer than 5 different characters; or, once digits,
            symbols and spaces at both ends are stripped, a common password or a run of the
            alphabet, a keyboard row or the digits.
    """
    text = unicodedata.normalize("NFC", password) if isinstance(password, str) else ""
    advice = "choose a passphrase of three or four unrelated words"
    if len(text) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(
            f"the password is too short ({len(text)} characters; at least {MIN_PASSWORD_LENGTH} are needed, "
            f"as a single password guards this server): {advice}")
    folded = text.casefold()
    if len(set(folded)) < 5 or any(folded == (folded[:n] * len(folded))[:len(folded)]
                                   for n in range(1, len(folded) // 3 + 1)):
        raise WeakPasswordError(f"the password repeats one short pattern or uses fewer than 5 different "
                                f"characters: {advice}")
    stem = folded.strip(string.digits + string.punctuation + string.whitespace)
    if not stem:  # digits and symbols only: judge the digits
        stem = "".join(c for c in folded if c in string.digits)
    if stem in _COMMON or any(stem in run for run in _RUNS):
        raise WeakPasswordError(f"the password is a common password or a keyboard run with digits or symbols "
                                f"around it: {advice}")


def hash_password(password: str, *, params: tuple[int, int, int] = DEFAULT_PARAMS) -> str:
    """Hash ``password`` with a new random salt.

    Args:
        password: the password (non-empty).
        params: (log2 N, r, p); the default is :data:`DEFAULT_PARAMS`. Tests may use a cheaper
            setting; production should not go below the default.

    Returns:
        the self-describing hash string (module docstring).

    Raises:
        ValueError: an empty password or parameters outside the accepted ranges.
    """
    if not isinstance(password, str) or not password:
        raise ValueError("the password must be a non-empty string")
    ln, r, p = _check_params(*params)
    salt = os.urandom(_SALT_BYTES)
    key = _derive(password, salt, ln, r, p, _KEY_BYTES)
    return f"{_SCHEME}:ln={ln},r={r},p={p}:{_b64(salt)}:{_b64(key)}"


def _check_params(ln: int, r: int, p: int) -> tuple[int, int, int]:
    for name, value, (lo, hi) in (("ln", ln, _LN_RANGE), ("r", r, _R_RANGE), ("p", p, _P_RANGE)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"scrypt parameter {name}={value!r} is outside the accepted range {lo}..{hi}")
    return ln, r, p


def parse_hash(encoded: str) -> tuple[tuple[int, int, int], bytes, bytes]:
    """Split a stored hash into ((log2 N, r, p), salt, key).

    Raises:
        PasswordHashError: not a hash made by :func:`hash_password`.
    """
    hint = "create one with: python -m medcnn hash-password"
    parts = str(encoded).strip().split(":")
    if len(parts) != 4 or parts[0] != _SCHEME:
        raise PasswordHashError(f"not a medcnn password hash (expected 'scrypt:ln=..,r=..,p=..:salt:key'); {hint}")
    try:
        fields = dict(item.split("=", 1) for item in parts[1].split(","))
        params = _check_params(int(fields["ln"]), int(fields["r"]), int(fields["p"]))
        salt, key = _unb64(parts[2]), _unb64(parts[3])
    except (KeyError, ValueError, binascii.Error) as e:
        raise PasswordHashError(f"malformed password hash ({e}); {hint}") from None
    if len(salt) < 8 or len(key) < 16:
        raise PasswordHashError(f"the password hash's salt or key is too short; {hint}")
    return params, salt, key


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the stored hash ``encoded`` (constant-time comparison).

    Raises:
        PasswordHashError: ``encoded`` is not a valid hash (a configuration error, not a wrong
            password).
    """
    (ln, r, p), salt, key = parse_hash(encoded)
    if not isinstance(password, str) or not password:
        return False
    candidate = _derive(password, salt, ln, r, p, len(key))
    return hmac.compare_digest(candidate, key)


_DUMMY_HASH: list[str] = []  # verified against for unknown user names (equal timing)


def verify_account(users: Mapping[str, str], name: str, password: str) -> bool:
    """True when ``name`` is one of ``users`` (name -> hash) and ``password`` matches its hash.

    An unknown name costs the same scrypt time as a known one (it is verified against a dummy hash
    made once per process), so the time taken does not tell which user names exist.

    Raises:
        PasswordHashError: the stored hash of ``name`` is not valid.
    """
    stored = users.get(name)
    if stored is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password(os.urandom(16).hex()))
        verify_password(password or "x", _DUMMY_HASH[0])
        return False
    return verify_password(password, stored)
