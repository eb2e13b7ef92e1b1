"""Password hashes (scrypt), the back-off, the audit log, and ``hash-password``."""
from __future__ import annotations

import argparse
import io
import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from medcnn.cli import hash_password as command
from medcnn.privacy import (
    AuditLogError,
    Backoff,
    PasswordHashError,
    hash_password,
    image_sha256,
    verify_password,
    write_audit_event,
)
from medcnn.__main__ import main as cli
from medcnn.privacy.passwords import (
    DEFAULT_PARAMS,
    MIN_PASSWORD_LENGTH,
    WeakPasswordError,
    check_password_strength,
    parse_hash,
)

REPO = Path(__file__).resolve().parents[2]
CHEAP = (10, 8, 1)  # fast parameters for the tests that do not check the defaults


def test_round_trip_and_wrong_password():
    encoded = hash_password("correct horse battery staple")
    assert encoded.startswith("scrypt:ln=15,r=8,p=3:") and parse_hash(encoded)[0] == DEFAULT_PARAMS
    assert verify_password("correct horse battery staple", encoded)
    assert not verify_password("correct horse battery stapler", encoded)
    assert not verify_password("", encoded)


def test_salted_self_describing_and_shell_safe():
    a, b = hash_password("same", params=CHEAP), hash_password("same", params=CHEAP)
    assert a != b  # a new salt every time
    assert verify_password("same", a) and verify_password("same", b)
    assert all(c.isalnum() or c in ":,=-_" for c in a)


def test_unicode_is_normalised():
    encoded = hash_password("caf\u00e9", params=CHEAP)
    assert verify_password("cafe\u0301", encoded)  # the same text typed as e + combining accent


@pytest.mark.parametrize("bad", [
    "", "plain", "scrypt:ln=15:abc",
    "bcrypt:ln=15,r=8,p=3:AAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA",  # another scheme
    "scrypt:ln=40,r=8,p=1:AAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA",  # a cost that would hang the server
    "scrypt:ln=15,r=8,p=3:AA:AAAAAAAAAAAAAAAAAAAAAA",  # salt too short
])
def test_malformed_hashes_raise_with_how_to_fix(bad):
    with pytest.raises(PasswordHashError, match="hash-password"):
        verify_password("x", bad)


def test_parameters_and_empty_passwords_are_checked():
    with pytest.raises(ValueError, match="non-empty"):
        hash_password("")
    with pytest.raises(ValueError, match="outside the accepted range"):
        hash_password("x", params=(25, 8, 1))


def test_backoff_waits_after_free_attempts_and_doubles():
    b = Backoff(free_attempts=5, base_delay_s=30, max_delay_s=100)
    waits = [b.failure("u", now=1000.0) for _ in range(7)]
    assert waits == [0, 0, 0, 0, 30, 60, 100]
    assert b.retry_after("u", now=1050.0) == 50.0 and b.retry_after("other", now=1050.0) == 0.0
    assert b.retry_after("u", now=1100.0) == 0.0
    b.success("u")
    assert b.failures("u") == 0 and b.retry_after("u", now=1000.0) == 0.0
    with pytest.raises(ValueError, match="free_attempts"):
        Backoff(free_attempts=0)


def test_audit_log_appends_json_lines_with_a_hash_prefix_only(tmp_path):
    log = tmp_path / "audit.jsonl"
    digest = image_sha256(b"image bytes")
    when = datetime(2026, 5, 1, 9, 30, 12, tzinfo=timezone.utc)
    write_audit_event(log, "sign-in ok", user="password user", now=when)
    write_audit_event(log, "analyse", user="password user", image_hash=digest, now=when)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [
        {"time": "2026-05-01T09:30:12Z", "user": "password user", "action": "sign-in ok"},
        {"time": "2026-05-01T09:30:12Z", "user": "password user", "action": "analyse", "image": digest[:12]},
    ]
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


def test_audit_log_refuses_file_names_and_unknown_actions(tmp_path):
    with pytest.raises(ValueError, match="never a file name"):
        write_audit_event(tmp_path / "a.jsonl", "export", user="u", image_hash="chest_DOE_JOHN.dcm")
    with pytest.raises(ValueError, match="expected one of"):
        write_audit_event(tmp_path / "a.jsonl", "delete", user="u")
    with pytest.raises(AuditLogError, match="MEDCNN_AUDIT_LOG"):
        write_audit_event(tmp_path / "missing" / "a.jsonl", "export", user="u")


def run_command(monkeypatch, stdin) -> int:
    monkeypatch.setattr(sys, "stdin", stdin)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args([]))


def test_hash_password_reads_a_pipe(monkeypatch, capsys):
    assert run_command(monkeypatch, io.StringIO("s3cret passphrase\nignored\n")) == 0
    out, err = capsys.readouterr()
    encoded = out.strip()
    assert verify_password("s3cret passphrase", encoded) and not verify_password("s3cret passphrase\n", encoded)
    assert "MEDCNN_PASSWORD_HASH" in err and "s3cret" not in out + err


def test_hash_password_on_a_terminal_asks_twice_without_echo(monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["typed on a terminal", "typed on a terminal", "one long passphrase", "two long passphrase"])
    monkeypatch.setattr(command.getpass, "getpass", lambda prompt="": next(answers))
    assert run_command(monkeypatch, Tty()) == 0
    assert verify_password("typed on a terminal", capsys.readouterr().out.strip())
    with pytest.raises(ValueError, match="differ"):
        run_command(monkeypatch, Tty())


def test_hash_password_rejects_an_empty_pipe(monkeypatch):
    with pytest.raises(ValueError, match="no password given"):
        run_command(monkeypatch, io.StringIO(""))


def test_hash_password_in_a_real_pipe():
    code = ("import argparse, sys; from medcnn.cli import hash_password as m; "
            "p = argparse.ArgumentParser(); m.add_arguments(p); sys.exit(m.run(p.parse_args([])))")
    out = subprocess.run([sys.executable, "-c", code], input="from a real pipe\n", capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert verify_password("from a real pipe", out.stdout.strip())


@pytest.mark.parametrize("weak, reason", [
    ("x", "too short (1 characters; at least 15"),
    ("fourteen chars", "too short (14 characters"),
    ("a" * 20, "repeats one short pattern"),
    ("x" * 14 + "y", "fewer than 5 different characters"),
    ("abcabcabcabcabcabc", "repeats one short pattern"),
    ("passwordpasswordpassword", "repeats one short pattern"),
    ("Password2024!!!!!", "common password"),
    ("!!qwertyuiopasdfg", "keyboard run"),
    ("1234567890123456", "keyboard run"),
    ("zyxwvutsrqponmlkj", "keyboard run"),
])
def test_hash_password_command_refuses_weak_passwords_with_exit_status_2(monkeypatch, capsys, weak, reason):
    monkeypatch.setattr(sys, "stdin", io.StringIO(weak + "\n"))
    assert cli(["hash-password"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: the password") and reason in err
    assert "passphrase of three or four unrelated words" in err and weak not in err


def test_strength_policy_accepts_passphrases_and_random_digits_and_counts_code_points():
    for strong in ("correct horse battery", "5830-2917-4462-0913", "Grüße aus Zürich, Lena"):
        check_password_strength(strong)
    check_password_strength("\u00e9" * 7 + "plus eight")  # 17 code points
    with pytest.raises(WeakPasswordError, match=f"at least {MIN_PASSWORD_LENGTH}"):
        check_password_strength("e\u0301" * 7)  # 14 characters once NFC-normalised (7 é)
    assert issubclass(WeakPasswordError, ValueError)
    hash_password("x", params=CHEAP)  # the policy is the command's; the hash function stays permissive
