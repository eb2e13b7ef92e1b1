"""``python -m medcnn audit-log``: print or export the app's audit database.

Prints one line per row (time, user, action, short image hash, model, method, decision,
out-of-distribution level), oldest first, or writes every column as CSV with ``--csv``. The
database is opened read-only: this command never creates or changes it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_DEFAULT = "medcnn_audit.sqlite"  # the app's default (medcnn.app.auth.DEFAULT_AUDIT_DB), without streamlit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--db``, ``--csv`` and ``--since`` on ``parser``."""
    parser.add_argument("--db", type=Path, default=None,
                        help=f"the audit database (default: $MEDCNN_AUDIT_DB, else ./{_DEFAULT})")
    parser.add_argument("--csv", dest="csv_out", default=None, metavar="OUT",
                        help="write all columns as CSV to OUT ('-' for standard output) instead of printing")
    parser.add_argument("--since", default=None, metavar="DATE",
                        help="only rows from this UTC date or time on (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)")


def _db_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("MEDCNN_AUDIT_DB", "").strip()
    if env.lower() in ("off", "0", "none", "false"):
        raise ValueError("MEDCNN_AUDIT_DB is 'off': there is no audit database; give one with --db PATH")
    return Path(env) if env else Path(_DEFAULT)


def _print_rows(rows: list[dict[str, str]]) -> None:
    widths = (20, 24, 16, 12, 16, 22, 16, 9)
    header = ("time", "user", "action", "image", "model", "method", "decision", "ood")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        cells = (r["time"], r["user"], r["action"], r["image"][:12], r["model"], r["method"], r["decision"],
                 r["ood_level"])
        print("  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)).rstrip())
    print(f"{len(rows)} row(s)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Print or export the rows; 0 on success.

    Raises:
        FileNotFoundError: no database at the path.
        ValueError: ``--since`` is not a date.
        AuditDBError: not a readable audit database (an ``OSError``: reported by the caller).
    """
    from medcnn.privacy.audit_db import AuditDBError, read_audit, write_csv

    path = _db_path(args.db)
    try:
        rows = read_audit(path, since=args.since)
    except AuditDBError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.csv_out is None:
        _print_rows(rows)
        return 0
    if args.csv_out == "-":
        write_csv(rows, sys.stdout)
    else:
        out = Path(args.csv_out)
        with out.open("w", newline="", encoding="utf-8") as f:
            n = write_csv(rows, f)
        print(f"{n} row(s) written to {out}", file=sys.stderr)
    return 0
