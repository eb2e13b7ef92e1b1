"""The one warnings channel (:mod:`medcnn.notices`): collect, quiet, raise."""
from __future__ import annotations

import warnings

import pytest

from medcnn.notices import collected, quiet, raised


class LibraryWarning(UserWarning):
    """Stands in for a third-party category (sklearn's ConvergenceWarning, ...)."""


def _outside() -> warnings.catch_warnings:
    """A recorder around the block under test: what escapes it."""
    return warnings.catch_warnings(record=True)


def test_collected_hands_the_messages_over_in_order_once_each_and_lets_none_escape():
    with _outside() as escaped:
        warnings.simplefilter("always")
        with collected() as notes:
            warnings.warn("colour image converted to grey", UserWarning, stacklevel=1)
            warnings.warn("slow path", LibraryWarning, stacklevel=1)
            warnings.warn("colour image converted to grey", UserWarning, stacklevel=1)
            assert notes == []  # filled when the block ends
    assert notes == ["colour image converted to grey", "slow path"]
    assert escaped == []


def test_collected_fills_the_list_when_the_block_raises():
    with pytest.raises(ValueError, match="unreadable"):
        with collected() as notes:
            warnings.warn("truncated file", UserWarning, stacklevel=1)
            raise ValueError("unreadable")
    assert notes == ["truncated file"]


def test_quiet_silences_the_named_categories_only():
    with _outside() as escaped:
        warnings.simplefilter("always")
        with quiet(LibraryWarning, reason="a library's chatter"):
            warnings.warn("chatter", LibraryWarning, stacklevel=1)
            warnings.warn("ours", RuntimeWarning, stacklevel=1)
        warnings.warn("after the block", LibraryWarning, stacklevel=1)
    assert [str(w.message) for w in escaped] == ["ours", "after the block"]


@pytest.mark.parametrize("call, error, match", [
    (lambda: quiet(reason="r"), TypeError, "name the warning categories"),
    (lambda: quiet(ValueError, reason="r"), TypeError, "not warning categories"),
    (lambda: quiet(UserWarning, reason="  "), ValueError, "say why"),
    (lambda: raised(), TypeError, "name the warning categories"),
])
def test_helpers_refuse_a_vague_call(call, error, match):
    with pytest.raises(error, match=match):
        with call():
            pass


def test_raised_turns_the_named_categories_into_exceptions():
    with pytest.raises(LibraryWarning, match="guessed frame boundaries"):
        with raised(LibraryWarning):
            warnings.warn("guessed frame boundaries", LibraryWarning, stacklevel=1)
    with _outside() as escaped:
        warnings.simplefilter("always")
        with raised(LibraryWarning):
            warnings.warn("other", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in escaped] == ["other"]
