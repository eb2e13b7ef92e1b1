"""The one warnings channel: how a warning becomes data, and how a library's warning is silenced.

medcnn reports a soft problem (a decode note, a skipped file, a fit that kept its defaults) twice:
as data on its result (``ImageMeta.warnings``, a scoring row's ``warnings``, a recalibration's notes)
and as a :class:`UserWarning` with ``stacklevel=2`` for a script that calls the library directly.
A caller that shows the data must neither print the warning too nor let it reach a log (a message
may name a file). Three helpers cover every use, and nothing else in the package touches the
warning filters (``tests/test_architecture.py`` fails on a new ``warnings.simplefilter``,
``filterwarnings`` or ``catch_warnings`` elsewhere):

* :func:`collected`: every warning raised in the block is recorded, none reaches the filters or a
  log, and the caller gets the distinct messages in order: to report them (a row's ``warnings``,
  a command's notes), or to drop them where the same notes already travel on the result.
  This is the only way medcnn handles its *own* warnings.
* :func:`quiet`: silence warnings of named categories from a *third-party* library in the block,
  with the reason written at the call (sklearn's convergence notes on tiny folds; pydicom's and
  highdicom's value warnings, which may quote identifying values; torch.fx tracing notes).
* :func:`raised`: turn warnings of named categories into exceptions in the block (pydicom warns
  when it had to guess where a compressed frame ends: for de-identification that is a failure).

Standard library only.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collected", "quiet", "raised"]


def _categories(categories: tuple[type[Warning], ...]) -> tuple[type[Warning], ...]:
    if not categories:
        raise TypeError("name the warning categories (e.g. UserWarning, ConvergenceWarning)")
    bad = [c for c in categories if not (isinstance(c, type) and issubclass(c, Warning))]
    if bad:
        raise TypeError(f"not warning categories: {bad!r}")
    return categories


@contextmanager
def collected() -> Iterator[list[str]]:
    """Record the warnings raised in the block; the yielded list holds their distinct messages.

    The list is filled when the block ends (also when it raises), in the order the warnings came,
    each message once. Nothing recorded is shown or logged.

    Yields:
        The list of messages (empty until the block ends).
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:
            messages.extend(dict.fromkeys(str(w.message) for w in caught))


@contextmanager
def quiet(*categories: type[Warning], reason: str) -> Iterator[None]:
    """Silence warnings of ``categories`` raised in the block (a third-party library's).

    Args:
        categories: The warning classes to silence (their subclasses too).
        reason: Why, in words: kept at the call so that the silencing is reviewed with it.

    Raises:
        TypeError: no category, or something that is not a warning class.
        ValueError: an empty ``reason``.
    """
    _categories(categories)
    if not reason.strip():
        raise ValueError("say why these warnings are silenced (reason=...)")
    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("ignore", category)
        yield


@contextmanager
def raised(*categories: type[Warning]) -> Iterator[None]:
    """Raise warnings of ``categories`` in the block as exceptions (the warning instance is raised).

    Raises:
        TypeError: no category, or something that is not a warning class.
    """
    _categories(categories)
    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("error", category)
        yield
