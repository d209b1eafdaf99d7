"""An opt-in local cache of a lake's immutable objects, for notebooks on slow or metered links.

Chunk objects (``cas/<2 hex>/<sha256>``), manifests (``manifests/<2 hex>/<sha256>.json``) and
release record parts (``records/<2 hex>/<sha256>.json``) are named by the sha256 of their bytes
and never change, so a local copy stored under the same key is valid forever and is checked
against its name on every read: an altered or truncated entry is dropped and fetched again.
Nothing else is cached: release records, heads, catalogs, listings and stages are always read
from the lake, so a new release is seen at once.

The cache is bounded: after each addition the least recently used entries (by file mtime,
refreshed on each hit) are removed until the total is within ``max_bytes``. Several
processes may share one cache folder (entries are written to a temporary file and renamed).

Chunks stored in packs are read as byte ranges of their object
(:meth:`CachedStorage.read_ranges`): a range is cut from a cached whole object, or cached on
its own (``<key>.<start>-<end>``, followed by its sha256, checked on read).

Batch reads (:meth:`CachedStorage.read_many`: manifests and record parts for
:meth:`~abo_lake.lake.Lake.diff`, stats, GC marking, ``Stage.add_many``, a record's parts)
are served from the cache where it holds a good copy; the rest is fetched from the lake in
one batch and the good objects are added. Their other keys (records, heads, catalogs, stage
parts) always go to the lake.

Why not fsspec's ``simplecache``/``filecache``: they cache every file by path (records and
catalogs too), do not check content against a hash and have no size bound; and the lake's
chunk reads go through a Zarr store, not the lake's filesystem object, so both paths need
the same cache (:meth:`CachedStorage.read`, :meth:`CachedStorage.zarr_store`).

:meth:`~abo_lake.lake.Lake.verify` checks the lake's own objects, never the cache's: it reads
chunk objects, manifests and record parts through :attr:`CachedStorage.uncached`, a plain
:class:`~abo_lake.storage.Storage` of the same lake (which neither reads from nor adds to the
cache, so verifying a release does not evict a notebook's working set).

Use::

    lake = abo_lake.cache.open_cached_lake("s3://bucket/lake", cache="~/.cache/abo-lake",
                                          anon=True)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from zarr.abc.store import ByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from abo_lake import cas
from abo_lake.record import RECORDS_PREFIX
from abo_lake.storage import Storage

__all__ = ["DEFAULT_CACHE", "DEFAULT_MAX_BYTES", "CachedStorage", "ChunkCache", "open_cached_lake"]

#: The suggested folder (``open_cached_lake(url, cache=DEFAULT_CACHE)``).
DEFAULT_CACHE = "~/.cache/abo-lake"
#: Default bound on the cache's size: 10 GiB.
DEFAULT_MAX_BYTES = 10 * 2**30

#: Keys that are named by the sha256 of their bytes (the only ones cached): chunk and table
#: objects, manifests, record parts.
_IMMUTABLE_RE = re.compile(
    rf"^(?:{cas.CAS_PREFIX}/([0-9a-f]{{2}})/([0-9a-f]{{64}})"
    rf"|(?:manifests|{RECORDS_PREFIX})/([0-9a-f]{{2}})/([0-9a-f]{{64}})\.json)$"
)


def content_hash(key: str) -> str | None:
    """The sha256 a lake key is named by, or None if ``key`` is not a CAS object, manifest or
    record part."""
    m = _IMMUTABLE_RE.match(key)
    if not m:
        return None
    folder, h = (m.group(1), m.group(2)) if m.group(2) else (m.group(3), m.group(4))
    return h if h[:2] == folder else None


class ChunkCache:
    """A folder of content-addressed objects, checked on read and bounded in size.

    Parameters
    ----------
    directory
        The cache folder (``~`` is expanded; created if absent).
    max_bytes
        Size bound; the least recently used entries are evicted beyond it.
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"cache max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._lock = threading.Lock()
        self._total = sum(p.stat().st_size for p in self._entries())

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def _entries(self) -> list[Path]:
        return [
            p for p in self.directory.glob("*/*/*") if p.is_file() and not p.name.startswith(".")
        ]

    @property
    def nbytes(self) -> int:
        """Bytes held now (as tracked by this process)."""
        return self._total

    def get(self, key: str) -> bytes | None:
        """The cached bytes of ``key`` if present and they hash to its name, else None
        (a mismatching entry is removed, so the caller fetches it again)."""
        h = content_hash(key)
        if h is None:
            return None
        path = self.directory / key
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        if cas.digest(data) != h:
            self.corrupt += 1
            self.misses += 1
            self._remove(path)
            return None
        self.hits += 1
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # most recently used
        return data

    def get_range(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``start:end`` of ``key``: cut from the cached whole object, or a cached
        range entry (checked against the sha256 stored after it); else None."""
        if content_hash(key) is None:
            return None
        if (self.directory / key).exists():
            data = self.get(key)
            if data is not None:
                return data[start:end]
        path = self._range_path(key, start, end)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        data, digest = raw[:-32], raw[-32:]
        if len(raw) < 32 or hashlib.sha256(data).digest() != digest:
            self.corrupt += 1
            self.misses += 1
            self._remove(path)
            return None
        self.hits += 1
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
        return data

    def put_range(self, key: str, start: int, end: int, data: bytes) -> None:
        """Store bytes ``start:end`` of the immutable object ``key`` (followed by their
        sha256, so an altered entry is detected), then evict beyond the bound."""
        if content_hash(key) is None or len(data) != end - start or len(data) > self.max_bytes:
            return
        self._write(self._range_path(key, start, end), data + hashlib.sha256(data).digest())

    def _range_path(self, key: str, start: int, end: int) -> Path:
        return self.directory / f"{key}.{start}-{end}"

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` if it is an immutable key and ``data`` hashes to its
        name (a corrupt download is never cached), then evict beyond the bound."""
        h = content_hash(key)
        if h is None or cas.digest(data) != h or len(data) > self.max_bytes:
            return
        self._write(self.directory / key, data)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.partial"
        tmp.write_bytes(data)
        existed = path.exists()
        os.replace(tmp, path)
        with self._lock:
            if not existed:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._evict()

    def _remove(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._total = max(0, self._total - size)

    def _evict(self) -> None:
        """Remove least recently used entries until the total is within the bound (rescans
        the folder: other processes sharing it add entries too)."""
        entries = []
        for p in self._entries():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime_ns, st.st_size, p))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        for _, size, p in entries:
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
        self._total = total


class CachedStorage(Storage):
    """A :class:`~abo_lake.storage.Storage` whose reads of chunk objects, manifests and record
    parts go through a :class:`ChunkCache`; everything else (records, heads, catalogs,
    listings, stages, writes) goes to the lake as usual.

    Parameters
    ----------
    url
        The lake's URL.
    cache
        The cache folder, e.g. ``"~/.cache/abo-lake"``.
    max_bytes
        Bound on the cache's size.
    **storage_options
        As for :class:`~abo_lake.storage.Storage`.
    """

    def __init__(
        self,
        url: str | Path,
        cache: str | os.PathLike = DEFAULT_CACHE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        **storage_options: Any,
    ) -> None:
        super().__init__(url, **storage_options)
        self.cache = ChunkCache(cache, max_bytes)

    def __reduce__(self) -> tuple:
        # dask workers rebuild it with the same cache folder
        return (
            _rebuild_cached,
            (self.url, str(self.cache.directory), self.cache.max_bytes, self.storage_options),
        )

    def __repr__(self) -> str:
        return f"CachedStorage({self.url!r}, cache={str(self.cache.directory)!r})"

    def read(self, key: str) -> bytes:
        """As :meth:`Storage.read`, served from the cache for content-named objects."""
        data = self.cache.get(key)
        if data is None:
            data = super().read(key)
            self.cache.put(key, data)
        return data

    def read_ranges(self, spans: list[tuple[str, int, int]]) -> list[bytes | Exception]:
        """As :meth:`Storage.read_ranges`, served from the cache where it holds the object or
        that range; what is fetched is added (a whole object if the span is all of it)."""
        out: list[bytes | Exception | None] = [self.cache.get_range(*span) for span in spans]
        todo = [i for i, data in enumerate(out) if data is None]
        fetched = super().read_ranges([spans[i] for i in todo])
        for i, data in zip(todo, fetched):
            out[i] = data
            if isinstance(data, bytes):
                key, start, end = spans[i]
                h = content_hash(key)
                if start == 0 and h is not None and cas.digest(data) == h:
                    self.cache.put(key, data)
                else:
                    self.cache.put_range(key, start, end, data)
        return out  # type: ignore[return-value]

    @functools.cached_property
    def uncached(self) -> Storage:
        """A plain :class:`~abo_lake.storage.Storage` of the same lake (the same filesystem
        object, from fsspec's instance cache): its reads go to the lake and neither read from
        nor add to the cache. What :meth:`~abo_lake.lake.Lake.verify` reads with."""
        return Storage(self.url, **self.storage_options)

    def read_many(self, keys: list[str]) -> dict[str, bytes | Exception]:
        """As :meth:`Storage.read_many`: content-named objects the cache holds (and that
        check against their name) come from the cache; the rest is read from the lake in
        one batch, and its good objects are added. Reads that must bypass the cache use
        :attr:`uncached`."""
        held = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        fetched = super().read_many([k for k, data in held.items() if data is None])
        for key, data in fetched.items():
            if isinstance(data, bytes):
                self.cache.put(key, data)
        return {k: fetched[k] if (data := held[k]) is None else data for k in held}

    def zarr_store(self, prefix: str) -> Store:
        """As :meth:`Storage.zarr_store`; for ``cas`` (the chunk reads of ``open``) the
        store reads whole objects through the cache."""
        store = super().zarr_store(prefix)
        if prefix.strip("/") == cas.CAS_PREFIX:
            return CachedCASStore(store, self.cache)
        return store


def _rebuild_cached(url: str, cache: str, max_bytes: int, options: dict) -> CachedStorage:
    return CachedStorage(url, cache, max_bytes, **options)


class CachedCASStore(WrapperStore[Store]):
    """A read-only Zarr store over ``<lake>/cas`` that serves whole objects from a
    :class:`ChunkCache` (byte ranges are cut from the cached whole object)."""

    def __init__(self, store: Store, cache: ChunkCache) -> None:
        super().__init__(store)
        self.cache = cache

    def _with_store(self, store: Store) -> CachedCASStore:
        return type(self)(store, self.cache)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        lake_key = f"{cas.CAS_PREFIX}/{key}"
        data = self.cache.get(lake_key)
        if data is None:
            buf = await self._store.get(key, prototype, None)
            if buf is None:
                return None
            data = buf.to_bytes()
            self.cache.put(lake_key, data)
        return prototype.buffer.from_bytes(_cut(data, byte_range))


def _cut(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    return data[byte_range.offset :]


def open_cached_lake(
    url: str | None = None,
    *,
    cache: str | os.PathLike = DEFAULT_CACHE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    **storage_options: Any,
):
    """Open a lake whose chunk objects, manifests and record parts are cached in ``cache``.

    Parameters
    ----------
    url
        As for :func:`abo_lake.open_lake` (``None``: ``$ABO_LAKE_URL`` or the default folder).
    cache
        The cache folder.
    max_bytes
        Bound on the cache's size (least recently used entries are evicted).
    **storage_options
        For the filesystem, as for :func:`abo_lake.open_lake`.
    """
    from abo_lake.lake import Lake
    from abo_lake.storage import default_lake_url

    return Lake(CachedStorage(url or default_lake_url(), cache, max_bytes, **storage_options))
