"""De-identify DICOM files and folders on disk, never leaving a half-written output.

A folder is walked recursively and each file is written under the output folder at the same
relative path. All files of one call share one :class:`~medcnn.privacy.Deidentifier`, so UIDs are
mapped consistently across them (a series stays a series). Each output is written to a temporary
file in its target folder, flushed to disk and moved into place with :func:`os.replace`, so an
output path holds either nothing or a complete de-identified file. File and folder *names* are kept
as they are: rename them if they carry identifiers.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medcnn.io import UnsupportedImageError
from medcnn.privacy.deidentify import DeidentificationError, Deidentifier, DeidSummary

__all__ = ["FileOutcome", "deidentify_path", "write_atomic"]


@dataclass
class FileOutcome:
    """What happened to one input file.

    Attributes:
        source: the input path.
        target: where the output went (or would have gone).
        summary: counts and warnings when it succeeded, else ``None``.
        error: why it failed (no output was written), else ``None``.
    """

    source: Path
    target: Path
    summary: DeidSummary | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the de-identified file was written."""
        return self.error is None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and :func:`os.replace`.

    Raises:
        OSError: the folder cannot be created or written; the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deid-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _inputs(source: Path, target: Path) -> Iterator[tuple[Path, Path]]:
    """(input file, output file) pairs; a folder is walked recursively in sorted order."""
    if source.is_file():
        yield source, (target / source.name if target.is_dir() else target)
        return
    for path in sorted(source.rglob("*")):
        if path.is_file() or path.is_symlink():
            yield path, target / path.relative_to(source)


def _check_paths(source: Path, target: Path) -> None:
    """Refuse inputs that do not exist and outputs that would overwrite or nest in the input."""
    if not source.exists():
        raise FileNotFoundError(f"input not found: {source}")
    src, dst = source.resolve(), target.resolve()
    if src == dst:
        raise DeidentificationError("the output must differ from the input: originals are never overwritten")
    if source.is_dir():
        if dst.is_relative_to(src):
            raise DeidentificationError(
                f"the output folder {target} is inside the input folder {source}; choose a folder outside it")
        if target.exists() and not target.is_dir():
            raise DeidentificationError(f"the input is a folder, so the output {target} must be a folder too")


def _one(deid: Deidentifier, source: Path, target: Path, *, overwrite: bool, check_pixels: bool) -> FileOutcome:
    """De-identify one file; every failure becomes an outcome with a message, never a partial file."""
    outcome = FileOutcome(source=source, target=target)
    if source.is_symlink():
        outcome.error = "symbolic link, not followed"
        return outcome
    if target.resolve() == source.resolve():
        outcome.error = "the output would replace the input; originals are never overwritten"
        return outcome
    if target.exists() and not overwrite:
        outcome.error = f"the output {target} exists (pass --overwrite to replace it)"
        return outcome
    try:
        data = source.read_bytes()
        out, outcome.summary = deid.deidentify_bytes(data, check_pixels=check_pixels)
        write_atomic(target, out)
    except (UnsupportedImageError, DeidentificationError) as e:
        outcome.summary, outcome.error = None, str(e)
    except OSError as e:
        outcome.summary, outcome.error = None, f"cannot read or write the file: {e.strerror or type(e).__name__}"
    return outcome


def deidentify_path(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    overwrite: bool = False,
    check_pixels: bool = True,
    deidentifier: Deidentifier | None = None,
    progress: Callable[[FileOutcome], None] | None = None,
) -> list[FileOutcome]:
    """De-identify a DICOM file or every file of a folder (recursively) into ``target``.

    Args:
        source: a DICOM file, or a folder of them (any extension; non-DICOM files fail).
        target: for a file, the output file or an existing folder to put it in; for a folder,
            the output folder (created as needed; relative paths are kept).
        overwrite: replace existing output files (otherwise they are reported as failures).
        check_pixels: decode each image and look for bright burned-in text in its margins.
        deidentifier: the run to use (its UID mapping); default a new one for this call.
        progress: called with each file's outcome as soon as it is known.

    Returns:
        one :class:`FileOutcome` per input file, in processing order.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        DeidentificationError: ``target`` equals ``source``, lies inside the input folder, or is a
            file where a folder is needed.
    """
    source, target = Path(source), Path(target)
    _check_paths(source, target)
    deid = deidentifier or Deidentifier()
    outcomes = []
    for src, dst in _inputs(source, target):
        outcome = _one(deid, src, dst, overwrite=overwrite, check_pixels=check_pixels)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return outcomes
