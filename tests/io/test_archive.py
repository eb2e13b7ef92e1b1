"""ZIP archives of an upload: listing without expanding, one budget per request, bounded cache.

Every archive is built in memory; expansions are counted by wrapping
:func:`medcnn.io.archive.read_member`, the only function that decompresses.
"""
from __future__ import annotations

import io
import struct
import zipfile

import pytest

from medcnn.io import archive
from medcnn.io.archive import ArchiveBudgetError, ArchiveMemberError, ExpansionCache, UploadSet


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def expansions(monkeypatch):
    """Paths of the members expanded, in order."""
    seen: list[str] = []
    real = archive.read_member

    def counting(zf, info, max_bytes):
        seen.append(info.filename)
        return real(zf, info, max_bytes)

    monkeypatch.setattr(archive, "read_member", counting)
    return seen


def test_listing_applies_the_guards_and_expands_nothing(expansions):
    data = zip_of({"bomb.dcm": b"\0" * 5000, **{f"img{i}.png": b"x" * 10 for i in range(4)},
                   "__MACOSX/._img0.png": b"junk", ".hidden": b"junk", "dir/": b""})
    uploads = UploadSet([("set.zip", data), ("plain.png", b"png")], max_members=3, max_member_bytes=1000)
    assert [(e.name, e.size, e.error) for e in uploads.entries] == [
        ("set.zip", 0, "the ZIP holds 5 files; only the first 3 are read"),
        ("set.zip/bomb.dcm", 0, "too large: 5,000 bytes uncompressed (limit 1,000 bytes)"),
        ("set.zip/img0.png", 10, ""),
        ("set.zip/img1.png", 10, ""),
        ("plain.png", 3, ""),
    ]
    assert uploads.expanded_bytes == 20  # the ZIP's readable members; a plain file expands nothing
    assert expansions == []
    assert uploads.read(uploads.entries[2]) == b"x" * 10 and expansions == ["img0.png"]
    assert uploads.read(uploads.entries[4]) == b"png"
    with pytest.raises(ArchiveMemberError, match="too large"):
        uploads.read(uploads.entries[1])


def test_unreadable_zip_is_one_error_entry():
    uploads = UploadSet([("bad.zip", b"PK\x03\x04 truncated")])
    [entry] = uploads.entries
    assert entry.name == "bad.zip" and entry.error.startswith("not a readable ZIP archive")


def test_four_zips_share_one_budget_and_nothing_is_expanded(expansions):
    """Each ZIP alone is under the budget (it was the per-ZIP limit); together they are over it."""
    zips = [(f"part{i}.zip", zip_of({f"s/{i}_{j}.dcm": bytes([i]) * 3000 for j in range(2)})) for i in range(4)]
    for name, data in zips:
        assert UploadSet([(name, data)], max_request_bytes=10_000).expanded_bytes == 6000
    with pytest.raises(ArchiveBudgetError) as info:
        UploadSet(zips, max_request_bytes=10_000)
    assert (info.value.requested, info.value.limit, info.value.archives) == (24_000, 10_000, 4)
    assert str(info.value) == ("these 4 ZIP archives together would expand to 24,000 bytes uncompressed, over the "
                               "limit of 10,000 bytes for one upload (all its ZIP archives count together). Nothing "
                               "was expanded: upload fewer or smaller archives.")
    assert expansions == []
    assert UploadSet(zips[:1], max_request_bytes=6000).expanded_bytes == 6000  # at the limit: accepted


def test_budget_message_in_mib_for_one_archive():
    e = ArchiveBudgetError(600 * 2**20, 512 * 2**20, 1)
    assert str(e).startswith("this ZIP archive would expand to 600 MiB uncompressed, over the limit of 512 MiB")
    assert isinstance(e, ValueError)


def test_a_member_never_expands_past_its_declared_size(expansions):
    """A central directory that under-declares a member: the read stops at the declared size
    and the CRC check turns it into an error, so the listing's total is a hard bound."""
    data = bytearray(zip_of({"liar.dcm": b"A" * 100_000}))
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 100)  # uncompressed size in the central directory
    uploads = UploadSet([("liar.zip", bytes(data))], max_request_bytes=1000)
    [entry] = uploads.entries
    assert entry.size == 100 and uploads.expanded_bytes == 100
    with pytest.raises(ArchiveMemberError, match="cannot read this ZIP member"):
        uploads.read(entry)
    assert expansions == ["liar.dcm"]


def test_cache_makes_a_second_request_expand_nothing(expansions):
    data = zip_of({"a.png": b"a" * 50, "b.png": b"b" * 60})
    cache = ExpansionCache(max_bytes=1000)
    for _ in range(3):  # the page's first run, then two reruns
        uploads = UploadSet([("set.zip", data)], cache=cache)
        assert [uploads.read(e) for e in uploads.entries] == [b"a" * 50, b"b" * 60]
    assert expansions == ["a.png", "b.png"]
    assert cache.nbytes == 110 and len(cache) == 2


def test_cache_is_bounded_least_recently_used_first_and_forgets_files_no_longer_uploaded():
    cache = ExpansionCache(max_bytes=100)
    cache.put_member("zip1", "a", b"a" * 40)
    cache.put_member("zip1", "b", b"b" * 40)
    assert cache.member("zip1", "a") == b"a" * 40  # a is now the most recently used
    cache.put_member("zip2", "c", b"c" * 40)
    assert cache.member("zip1", "b") is None and cache.nbytes == 80
    cache.put_member("zip2", "huge", b"h" * 101)  # larger than the whole cache: not kept
    assert cache.member("zip2", "huge") is None and cache.nbytes == 80
    cache.retain(["zip2"])
    assert cache.member("zip1", "a") is None and cache.member("zip2", "c") == b"c" * 40 and cache.nbytes == 40


def test_a_new_request_drops_the_expansions_of_zips_no_longer_uploaded():
    cache = ExpansionCache()
    first = UploadSet([("one.zip", zip_of({"a.png": b"a"}))], cache=cache)
    first.read(first.entries[0])
    UploadSet([("two.zip", zip_of({"b.png": b"b"}))], cache=cache)
    assert len(cache) == 0 and cache.nbytes == 0
