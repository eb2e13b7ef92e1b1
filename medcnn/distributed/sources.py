"""What a batch-scoring run scores: folders, globs and manifest CSVs turned into one file list.

* a **folder** is searched recursively; a file is scored when its *content* is a DICOM, PNG or
  JPEG (:func:`medcnn.io.detect_format` on its first bytes), whatever its name, and also when its
  *name* says it is an image (:data:`IMAGE_SUFFIXES`) whatever its content, so a broken or
  misnamed ``.jpg`` becomes an error row instead of silently leaving the count;
* a **glob** (``scans/**/*.dcm``; ``**`` crosses folders) expands like a folder's files, with
  the same content check;
* a **manifest** is a CSV file with a ``path`` column; relative paths are relative to the CSV's
  folder. Every listed path is scored, so a missing or broken file becomes an error row;
* any other **file** is scored as given (an unreadable one becomes an error row, as in
  ``predict``).

Paths keep the spelling they were given (a folder's files are ``folder/relative/path``), so
results join back to the input. Duplicates are scored once, in first-seen order.
"""
from __future__ import annotations

import csv
import glob
from collections.abc import Iterable, Sequence
from pathlib import Path

from medcnn.io import detect_format

__all__ = ["HEAD_BYTES", "IMAGE_SUFFIXES", "expand_sources", "is_image_file", "read_manifest"]

#: Bytes read to recognise a format: DICOM's magic is at 128-131; 4 KiB covers a bare data set's first tag.
HEAD_BYTES = 4096
#: File name endings that claim an image: such a file is always scored (an error row if it is none).
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
_GLOB_CHARS = set("*?[")


def is_image_file(path: str | Path) -> bool:
    """True when the file's first bytes are a DICOM, PNG or JPEG (its name is not looked at)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return False
    return bool(head) and detect_format(head) is not None


def read_manifest(path: str | Path) -> list[str] | None:
    """The ``path`` column of a manifest CSV, or None when ``path`` is not such a CSV.

    Relative entries are joined to the CSV's folder; blank entries are skipped.

    Raises:
        ValueError: the CSV has a ``path`` column but cannot be parsed.
    """
    path = Path(path)
    if is_image_file(path):
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = f.readline()
            if "path" not in next(csv.reader([header]), []):
                return None
            f.seek(0)
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError:
        return None
    except (OSError, csv.Error) as e:
        raise ValueError(f"cannot read manifest {path}: {e}") from None
    out = []
    for row in rows:
        value = (row.get("path") or "").strip()
        if value:
            out.append(value if Path(value).is_absolute() else str(path.parent / value))
    return out


def _scored(path: Path) -> bool:
    """A file of a folder or glob that is scored: an image by content, or one by name."""
    return path.is_file() and (path.suffix.lower() in IMAGE_SUFFIXES or is_image_file(path))


def _folder_files(folder: Path) -> Iterable[str]:
    for p in sorted(folder.rglob("*")):
        if _scored(p):
            yield str(p)


def expand_sources(sources: Sequence[str | Path]) -> list[str]:
    """Files to score, from folders, globs, manifest CSVs and plain files (see the module docs).

    Args:
        sources: What the user named, in order.

    Returns:
        File paths, each once, in order of first appearance.

    Raises:
        ValueError: a glob that matches nothing (a typo is an error, not an empty run), or a
            manifest that cannot be parsed.
    """
    out: dict[str, None] = {}
    for source in map(str, sources):
        p = Path(source)
        if p.is_dir():
            found: Iterable[str] = _folder_files(p)
        elif _GLOB_CHARS & set(source) and not p.exists():
            matches = sorted(glob.glob(source, recursive=True))
            if not matches:
                raise ValueError(f"no file matches {source!r}")
            found = [m for m in matches if _scored(Path(m))]
        elif p.is_file() and (listed := read_manifest(p)) is not None:
            found = listed
        else:  # a plain file, or a missing one: scored as given, so its error is reported
            found = [source]
        out.update(dict.fromkeys(found))
    return list(out)
