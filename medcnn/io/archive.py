"""ZIP archives of an upload, read in memory with zip-bomb guards (never extracted to disk).

One *upload request* is every file of one uploader, read together. It is handled in two steps:

1. **Listing** (:class:`UploadSet`): each ZIP's central directory gives its members and their
   declared uncompressed sizes; nothing is decompressed. Directories, hidden files and
   ``__MACOSX`` entries are skipped; a member declared larger than ``max_member_bytes`` and
   members beyond ``max_members`` become error entries (never read). The declared sizes of all
   readable members of *all* the request's ZIPs count against one budget (``max_request_bytes``);
   over it, :class:`ArchiveBudgetError` is raised before anything is expanded. (Before, the budget
   was per ZIP, so four ZIPs of 2 MB expanded to 2 GB.)
2. **Expansion**, one member at a time, only when asked for (:meth:`UploadSet.read`). A member
   never expands past its declared size: :mod:`zipfile` stops there and checks the CRC, so a
   lying header gives an error, not more bytes, and the listing's total is a hard bound. An
   :class:`ExpansionCache` keeps expanded members by the ZIP's SHA-256 and the member's path,
   bounded in bytes (least recently used out first), so a rerun of the same request expands
   nothing again.

Why these limits: 512 MiB per request is what one ZIP was allowed before, kept because nothing
measured argues for another value; what changed is that it now bounds the whole request.
``benchmarks/bench_zip_budget.py`` (Batch page, four ~2 MB ZIPs of ~480 MiB each, three reruns):
the page's peak went from 3.59x to 0.06x the peak of one such ZIP expanded once (the upload is
refused after listing), and one accepted ZIP is expanded on the first run only (5, 0, 0, 0
member expansions, against 5 on every run before). The member limit (128 MiB) is far above any
image the readers accept (:data:`~medcnn.io.types.DEFAULT_MAX_PIXELS`); 500 members keep a
listing small.
"""
from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_REQUEST_BYTES",
    "ArchiveBudgetError",
    "ArchiveMemberError",
    "ExpansionCache",
    "UploadEntry",
    "UploadSet",
    "is_zip",
    "read_member",
]

#: Most files read from one ZIP (the listing of the rest is refused with one error entry).
MAX_MEMBERS = 500
#: Largest uncompressed member read.
MAX_MEMBER_BYTES = 128 * 2**20
#: Most bytes all the ZIPs of one upload request may expand to together.
MAX_REQUEST_BYTES = 512 * 2**20

_ZIP_MAGIC = b"PK\x03\x04"
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, OSError, EOFError,
                ValueError)


def _mib(n: int) -> str:
    """A size for a message: whole MiB from 10 MiB, else one decimal, bytes below 1 MiB."""
    if n >= 10 * 2**20:
        return f"{n / 2**20:,.0f} MiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


class ArchiveBudgetError(ValueError):
    """The ZIP archives of one upload would expand to more than the request budget.

    Attributes:
        requested: Uncompressed bytes the archives declare (readable members only).
        limit: The budget in bytes.
        archives: Number of ZIP archives in the upload.
    """

    def __init__(self, requested: int, limit: int, archives: int):
        self.requested, self.limit, self.archives = requested, limit, archives
        what = "this ZIP archive" if archives == 1 else f"these {archives} ZIP archives together"
        super().__init__(f"{what} would expand to {_mib(requested)} uncompressed, over the limit of {_mib(limit)} "
                         "for one upload (all its ZIP archives count together). Nothing was expanded: upload "
                         "fewer or smaller archives.")


class ArchiveMemberError(ValueError):
    """One ZIP member cannot be read (corrupt, encrypted, unsupported compression, too large)."""


def is_zip(data: bytes) -> bool:
    """True when ``data`` starts with a ZIP local-file header (format detected by content)."""
    return data[:4] == _ZIP_MAGIC


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """Expand one member in memory, reading at most ``max_bytes + 1`` bytes.

    This is the only place that decompresses (tests count its calls).

    Raises:
        ArchiveMemberError: unreadable member, or more than ``max_bytes`` uncompressed.
    """
    try:
        with archive.open(info) as fh:
            content = fh.read(max_bytes + 1)
    except _READ_ERRORS as e:
        raise ArchiveMemberError(f"cannot read this ZIP member: {e}") from None
    if len(content) > max_bytes:
        raise ArchiveMemberError(f"too large: over {_mib(max_bytes)} uncompressed")
    return content


@dataclass(frozen=True)
class UploadEntry:
    """One file of an upload request: a plain upload, a ZIP member, or why one is left out.

    Attributes:
        name: Upload name, or ``upload/member path`` for a ZIP member.
        upload: Index of the uploaded file in the request.
        path: Member path inside the ZIP (``""`` for a plain upload or an archive-level error).
        size: Uncompressed bytes (declared by the ZIP for a member).
        error: Why the entry cannot be read (empty when it can).
    """

    name: str
    upload: int
    path: str = ""
    size: int = 0
    error: str = ""


@dataclass(frozen=True)
class _Listing:
    """A ZIP's readable members (path, declared size) and its error entries (path, message)."""

    members: tuple[tuple[str, int], ...]
    errors: tuple[tuple[int, str, str], ...]  # (position among entries, path, message)

    @property
    def expanded_bytes(self) -> int:
        return sum(size for _, size in self.members)


class ExpansionCache:
    """Expanded ZIP members and listings, keyed by the ZIP's SHA-256, bounded in bytes.

    One per session (the app keeps it in the session state), so one session can hold at most
    ``max_bytes`` of expanded members; the least recently used are evicted first. Thread-safe.

    Args:
        max_bytes: Most member bytes held at once.
        max_listings: Most ZIP listings held (a listing is small: paths and sizes).
    """

    def __init__(self, max_bytes: int = MAX_REQUEST_BYTES, max_listings: int = 64):
        self.max_bytes, self.max_listings = int(max_bytes), int(max_listings)
        self._members: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._listings: OrderedDict[tuple, _Listing] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._members)

    def member(self, digest: str, path: str) -> bytes | None:
        """The cached bytes of a member, or None."""
        with self._lock:
            data = self._members.get((digest, path))
            if data is not None:
                self._members.move_to_end((digest, path))
            return data

    def put_member(self, digest: str, path: str, data: bytes) -> None:
        """Keep a member's bytes, evicting the least recently used beyond ``max_bytes``."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._members.pop((digest, path), None)
            self.nbytes -= len(old) if old is not None else 0
            self._members[(digest, path)] = data
            self.nbytes += len(data)
            while self.nbytes > self.max_bytes:
                _, evicted = self._members.popitem(last=False)
                self.nbytes -= len(evicted)

    def listing(self, key: tuple) -> _Listing | None:
        with self._lock:
            found = self._listings.get(key)
            if found is not None:
                self._listings.move_to_end(key)
            return found

    def put_listing(self, key: tuple, listing: _Listing) -> None:
        with self._lock:
            self._listings[key] = listing
            while len(self._listings) > self.max_listings:
                self._listings.popitem(last=False)

    def retain(self, digests: Iterable[str]) -> None:
        """Forget every ZIP not in ``digests`` (files no longer uploaded leave memory now)."""
        keep = set(digests)
        with self._lock:
            for key in [k for k in self._members if k[0] not in keep]:
                self.nbytes -= len(self._members.pop(key))
            for key in [k for k in self._listings if k[0] not in keep]:
                del self._listings[key]


def _skipped(path: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.split("/"))


def _list_zip(archive: zipfile.ZipFile, max_members: int, max_member_bytes: int) -> _Listing:
    infos = [i for i in archive.infolist() if not i.is_dir() and not _skipped(i.filename)]
    members, errors = [], []
    if len(infos) > max_members:
        errors.append((0, "", f"the ZIP holds {len(infos)} files; only the first {max_members} are read"))
        infos = infos[:max_members]
    for info in infos:
        if info.file_size > max_member_bytes:
            errors.append((len(members) + len(errors), info.filename,
                           f"too large: {_mib(info.file_size)} uncompressed (limit {_mib(max_member_bytes)})"))
        else:
            members.append((info.filename, info.file_size))
    return _Listing(tuple(members), tuple(errors))


class UploadSet:
    """The files of one upload request, ZIPs listed and checked against one budget.

    Args:
        files: ``(name, bytes)`` per uploaded file, in upload order.
        max_members: Most files read from one ZIP.
        max_member_bytes: Largest uncompressed member read.
        max_request_bytes: Most bytes all ZIPs of the request may expand to together.
        cache: Where expanded members are kept between requests (None: nowhere).

    Raises:
        ArchiveBudgetError: the readable members of all ZIPs declare more than
            ``max_request_bytes`` together (raised before anything is expanded).
    """

    def __init__(self, files: Iterable[tuple[str, bytes]], max_members: int = MAX_MEMBERS,
                 max_member_bytes: int = MAX_MEMBER_BYTES, max_request_bytes: int = MAX_REQUEST_BYTES,
                 cache: ExpansionCache | None = None):
        self.max_member_bytes, self.cache = int(max_member_bytes), cache
        self._data: list[bytes] = []
        self._names: list[str] = []
        self._digests: list[str] = []
        self._zips: dict[int, zipfile.ZipFile] = {}
        self.entries: list[UploadEntry] = []
        n_zips = 0
        self.expanded_bytes = 0
        for i, (name, data) in enumerate(files):
            self._data.append(data)
            self._names.append(name)
            if not is_zip(data):
                self._digests.append("")
                self.entries.append(UploadEntry(name, i, "", len(data)))
                continue
            n_zips += 1
            self._digests.append(hashlib.sha256(data).hexdigest())
            listing = self._listing(i, max_members)
            if listing is None:
                continue
            self.expanded_bytes += listing.expanded_bytes
            entries = [UploadEntry(f"{name}/{p}", i, p, size) for p, size in listing.members]
            for at, path, message in listing.errors:
                entries.insert(at, UploadEntry(f"{name}/{path}" if path else name, i, path, 0, message))
            self.entries.extend(entries)
        if self.expanded_bytes > max_request_bytes:
            raise ArchiveBudgetError(self.expanded_bytes, int(max_request_bytes), n_zips)
        if cache is not None:
            cache.retain(d for d in self._digests if d)

    def _listing(self, i: int, max_members: int) -> _Listing | None:
        key = (self._digests[i], max_members, self.max_member_bytes)
        listing = self.cache.listing(key) if self.cache is not None else None
        if listing is None:
            try:
                listing = _list_zip(self._zip(i), max_members, self.max_member_bytes)
            except ArchiveMemberError as e:
                self.entries.append(UploadEntry(self._names[i], i, "", 0, str(e)))
                return None
            if self.cache is not None:
                self.cache.put_listing(key, listing)
        return listing

    def _zip(self, i: int) -> zipfile.ZipFile:
        if i not in self._zips:
            try:
                self._zips[i] = zipfile.ZipFile(io.BytesIO(self._data[i]))
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
                raise ArchiveMemberError(f"not a readable ZIP archive: {e}") from None
        return self._zips[i]

    def read(self, entry: UploadEntry) -> bytes:
        """The bytes of one entry; a ZIP member is expanded now unless the cache holds it.

        Raises:
            ArchiveMemberError: the entry is an error entry, or its member cannot be read.
        """
        if entry.error:
            raise ArchiveMemberError(entry.error)
        if not entry.path:
            return self._data[entry.upload]
        digest = self._digests[entry.upload]
        cached = self.cache.member(digest, entry.path) if self.cache is not None else None
        if cached is not None:
            return cached
        archive = self._zip(entry.upload)
        data = read_member(archive, archive.getinfo(entry.path), self.max_member_bytes)
        if self.cache is not None:
            self.cache.put_member(digest, entry.path, data)
        return data
