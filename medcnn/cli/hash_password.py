"""``python -m medcnn hash-password``: make the hash that turns on the app's sign-in.

Reads the password from standard input: typed without echo (twice) on a terminal, or the first
line of a pipe (``printf '%s\\n' "$PW" | python -m medcnn hash-password``). Prints the salted scrypt
hash (:mod:`medcnn.privacy.passwords`) on standard output; the hint on how to use it goes to
standard error, so ``HASH=$(python -m medcnn hash-password)`` captures the hash alone.

A weak password is refused before anything is hashed
(:func:`medcnn.privacy.passwords.check_password_strength`: at least 15 characters, not a common
or repetitive one); ``python -m medcnn`` then prints the reason as one ``error:`` line and exits 2.
"""
from __future__ import annotations

import argparse
import getpass
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's arguments on ``parser`` (it has none)."""
    parser.epilog = ("Turn sign-in on with: export MEDCNN_PASSWORD_HASH='<hash>' "
                     "(or MEDCNN_PASSWORD_HASH = \"<hash>\" in .streamlit/secrets.toml)")


def _read_password() -> str:
    """The password from a terminal (no echo, confirmed) or from the first line of a pipe."""
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise ValueError("the two passwords differ; nothing was hashed")
        return first
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line.rstrip("\r\n")


def run(args: argparse.Namespace) -> int:
    """Print the hash of the password read from standard input; 0 on success.

    Raises:
        ValueError: no password, or the two typed passwords differ.
        WeakPasswordError: the password is too weak (a :class:`ValueError`: exit status 2).
    """
    from medcnn.privacy.passwords import DEFAULT_PARAMS, check_password_strength, hash_password

    password = _read_password()
    if not password:
        raise ValueError("no password given: type one, or pipe it in as the first line of standard input")
    check_password_strength(password)
    print(hash_password(password))
    ln, r, p = DEFAULT_PARAMS
    print(f"(scrypt N=2^{ln}, r={r}, p={p}, 16-byte random salt) Turn sign-in on with:\n"
          "  export MEDCNN_PASSWORD_HASH='<the line above>'\n"
          "or put MEDCNN_PASSWORD_HASH = \"<the line above>\" in .streamlit/secrets.toml", file=sys.stderr)
    return 0
