"""Zarr 3 stores over the lake: one that captures writes into content-addressed objects,
one that reads a manifest back.

Both present a Dataset's Zarr hierarchy to zarr/xarray while the bytes live in
``<lake>/cas/``: metadata documents are held inline (they go into the manifest), chunk keys
map to chunk hashes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from abo_lake import cas
from abo_lake.errors import IntegrityError

if TYPE_CHECKING:
    from abo_lake.manifest import Manifest
    from abo_lake.storage import Storage

__all__ = ["MERGE_GAP", "CaptureStore", "ManifestStore", "is_metadata_key"]

#: Ranges of one object closer than this are read as one span (one request).
MERGE_GAP = 256 * 2**10
#: Index-coordinate chunks up to this size are kept inline in the manifest, so an open reads
#: release.json and the manifest only (the realistic VB file's 60 Hz behaviour timestamps are
#: ~940 kB a chunk); larger ones stay objects, read at open in one concurrent batch.
INLINE_CHUNK_MAX_BYTES = 2**20
#: Bytes of whole objects a verifying store keeps after checking their hash.
VERIFIED_CACHE_BYTES = 64 * 2**20


def is_metadata_key(key: str) -> bool:
    """Whether a Zarr 3 key is a metadata document (kept inline in manifests)."""
    return key == "zarr.json" or key.endswith("/zarr.json")


def array_of(key: str) -> str:
    """The array path of a Zarr 3 chunk key (``"dff/c/0/1"`` -> ``"dff"``)."""
    return key.split("/c/")[0] if "/c/" in key else key.rsplit("/", 1)[0]


def checksummed_arrays(metadata: dict[str, bytes]) -> frozenset[str]:
    """Paths of the arrays whose last codec is ``crc32c`` (every array the writer makes)."""
    out = set()
    for key, doc in metadata.items():
        if not is_metadata_key(key) or b'"crc32c"' not in doc:
            continue
        codecs = json.loads(doc).get("codecs") or []
        if codecs and isinstance(codecs[-1], dict) and codecs[-1].get("name") == "crc32c":
            out.add(key[: -len("zarr.json")].rstrip("/"))
    return frozenset(out)


def crc_ok(data: bytes) -> bool:
    """Whether ``data`` ends with the CRC-32C of the rest, as zarr's crc32c codec writes it."""
    if len(data) < 4:
        return False
    body = np.frombuffer(data, np.uint8)[:-4]  # no copy
    return google_crc32c.value(body) == int.from_bytes(data[-4:], "little")


def _slice(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :]
    raise TypeError(f"Unexpected byte_range, got {byte_range!r}")


class _KeyMapStore(Store):
    """Listing and existence over ``_meta`` (key -> bytes) and ``_chunks`` (key -> hash)."""

    supports_listing = True
    supports_partial_writes = False
    _meta: dict[str, bytes]
    _chunks: dict[str, str]
    _inline: dict[str, bytes]

    def _keys(self) -> list[str]:
        return [*self._meta, *self._chunks, *self._inline]

    async def exists(self, key: str) -> bool:
        return key in self._meta or key in self._chunks or key in self._inline

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def list(self) -> AsyncIterator[str]:
        for key in self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        base = f"{prefix}/" if prefix else ""
        seen = set()
        for key in self._keys():
            if key.startswith(base):
                child = key[len(base) :].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child


_LIVE_CAPTURES: weakref.WeakValueDictionary[int, CaptureStore] = weakref.WeakValueDictionary()


def _live_capture(ident: int) -> CaptureStore:
    try:
        return _LIVE_CAPTURES[ident]
    except KeyError:
        raise TypeError("a CaptureStore cannot leave the process that writes with it") from None


class CaptureStore(_KeyMapStore):
    """A writable store that puts every chunk into the lake's CAS and keeps metadata inline.

    Used in-process by :func:`abo_lake.writer.write_dataset` for metadata and small arrays;
    large arrays are encoded by dask tasks that return their chunk hashes instead.
    """

    supports_writes = True
    supports_deletes = True

    def __init__(self, storage: Storage) -> None:
        super().__init__(read_only=False)
        self.storage = storage
        self._meta = {}
        self._chunks = {}
        self._inline = {}
        self.sizes: dict[str, int] = {}
        self.ranges: dict[str, tuple[int, int]] = {}
        self.packs: dict[str, tuple[int, ...]] = {}
        #: Arrays whose chunks written through :meth:`set` are kept in the manifest
        #: (index coordinates: what opening a dataset reads).
        self.inline_arrays: set[str] = set()
        self.new_objects = 0
        self.new_bytes = 0

    def __eq__(self, other: object) -> bool:
        return other is self

    __hash__ = object.__hash__

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        # A capture collects one write in this process. Pickling (dask tokenizes the store
        # graph xarray builds with compute=False, which the writer discards) refers to the
        # live object instead of copying everything captured so far: with many groups that
        # copying grew quadratically.
        _LIVE_CAPTURES[id(self)] = self
        return _live_capture, (id(self),)

    def record(
        self,
        key: str,
        h: str,
        size: int,
        written: bool,
        offset: int | None = None,
        object_bytes: int | None = None,
    ) -> None:
        """Record that chunk ``key`` is the object ``h`` (written by a task elsewhere), or
        bytes ``offset:offset+size`` of it (a pack); ``written``: the object is new (said of
        one chunk per object), of ``object_bytes`` (default ``size``)."""
        self._chunks[key] = h
        self.sizes[key] = size
        if offset is None:
            self.ranges.pop(key, None)
        else:
            self.ranges[key] = (offset, size)
        self.new_objects += int(written)
        self.new_bytes += (size if object_bytes is None else object_bytes) if written else 0

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        if key in self._meta:
            data = self._meta[key]
        elif key in self._inline:
            data = self._inline[key]
        elif key in self._chunks:
            data = await asyncio.to_thread(self.storage.read, cas.key_of(self._chunks[key]))
            if key in self.ranges:
                offset, length = self.ranges[key]
                data = data[offset : offset + length]
        else:
            return None
        return prototype.buffer.from_bytes(_slice(data, byte_range))

    def put_chunk(self, key: str, data: bytes) -> None:
        """Store chunk ``key``: inline if its array is in :attr:`inline_arrays`, else as a
        CAS object (in the calling thread)."""
        if array_of(key) in self.inline_arrays and len(data) <= INLINE_CHUNK_MAX_BYTES:
            self._inline[key] = data
            self._chunks.pop(key, None)
            self.sizes.pop(key, None)
            self.ranges.pop(key, None)
            return
        h, written = cas.put(self.storage, data)
        self.record(key, h, len(data), written)

    async def set(self, key: str, value: Buffer) -> None:
        data = value.to_bytes()
        if is_metadata_key(key):
            self._meta[key] = data
            return
        await asyncio.to_thread(self.put_chunk, key, data)

    async def delete(self, key: str) -> None:
        self._meta.pop(key, None)
        self._chunks.pop(key, None)
        self._inline.pop(key, None)
        self.sizes.pop(key, None)
        self.ranges.pop(key, None)

    def manifest(self) -> Manifest:
        """The manifest of everything captured so far."""
        from abo_lake.manifest import Manifest

        return Manifest(
            {k: v.decode() for k, v in self._meta.items()},
            dict(self._chunks),
            dict(self.sizes),
            {k: r for k, r in self.ranges.items() if k in self._chunks},
            dict(self._inline),
            dict(self.packs),
        )


class ManifestStore(_KeyMapStore):
    """A read-only store serving one manifest: metadata inline, chunks from the lake's CAS.

    Parameters
    ----------
    storage
        The lake holding the chunk objects.
    manifest
        The dataset's manifest.
    label
        ``"<release>:<dataset path>"``, used in error messages.
    verify
        Hash-check every chunk read; a mismatch raises :class:`IntegrityError`.
    """

    supports_writes = False
    supports_deletes = False

    def __init__(
        self, storage: Storage, manifest: Manifest, *, label: str = "", verify: bool = False
    ) -> None:
        super().__init__(read_only=True)
        self.storage = storage
        self.manifest = manifest
        self.label = label
        self.verify = verify
        self._meta = {k: v.encode() for k, v in manifest.metadata.items()}
        self._chunks = manifest.chunks
        self._inline = manifest.inline
        self._ranges = manifest.ranges
        self._crc: dict[str, bool] = {}  # array -> written with crc32c (read when needed)
        self._token: str | None = None
        self._sizes_of_objects: dict[str, int] | None = None
        self._prefetched: dict[str, bytes | None] = {}
        self._init_counters()

    def _init_counters(self) -> None:
        self._lock = threading.Lock()
        self._verified_objects: OrderedDict[str, bytes] = OrderedDict()
        self._verified_bytes = 0
        #: Chunks delivered from the lake (inline chunks not counted).
        self.chunk_reads = 0
        #: Requests made to the lake for them (a span of a pack or a whole object each).
        self.requests = 0
        #: Bytes those requests moved.
        self.bytes_read = 0

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ManifestStore)
            and other.storage.url == self.storage.url
            and (other.manifest is self.manifest or other.manifest == self.manifest)
        )

    __hash__ = object.__hash__

    def __dask_tokenize__(self) -> tuple:
        """A cheap, stable token (xarray tokenizes the store once per group it opens)."""
        if self._token is None:
            items = sorted(self._chunks.items())
            ranges = sorted(self._ranges.items())
            inline = sorted(self._inline.items())
            self._token = cas.digest(
                repr((items, ranges, inline, sorted(self._meta.items()))).encode()
            )
        return ("abo_lake.ManifestStore", self.storage.url, self._token, self.verify)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_prefetched"] = {}
        for name in ("_lock", "_verified_objects", "_verified_bytes"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        counts = self.chunk_reads, self.requests, self.bytes_read
        self._init_counters()
        self.chunk_reads, self.requests, self.bytes_read = counts

    def with_read_only(self, read_only: bool = False) -> ManifestStore:
        if not read_only:
            raise ValueError("a release is immutable; its datasets cannot be opened for writing")
        return self

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        if key in self._meta:
            return prototype.buffer.from_bytes(_slice(self._meta[key], byte_range))
        if key not in self._chunks and key not in self._inline:
            return None  # never written: zarr fills it with the fill value
        if key in self._prefetched:
            data = self._prefetched.pop(key)
        elif key in self._inline:
            data = self.read_chunks([key])[key]
        else:
            data = (await asyncio.to_thread(self.read_chunks, [key]))[key]
        return prototype.buffer.from_bytes(_slice(data, byte_range))  # type: ignore[arg-type]

    def index_chunks(self, group: str = "") -> list[str]:
        """Chunk keys of the index coordinates of ``group`` (arrays named as their only
        dimension) that are objects, not inline: what opening it must read."""
        prefix = f"{group.strip('/')}/" if group.strip("/") else ""
        arrays = set()
        for key, doc in self._meta.items():
            name = key[len(prefix) : -len("/zarr.json")] if key.startswith(prefix) else ""
            if not name or "/" in name or b'"dimension_names"' not in doc:
                continue
            if json.loads(doc).get("dimension_names") == [name]:
                arrays.add(prefix + name)
        return sorted(k for k in self._chunks if array_of(k) in arrays)

    def prefetch(self, keys: list[str]) -> None:
        """Read ``keys`` now, in one batch (objects concurrently), for the next :meth:`get`
        of each (e.g. the index coordinates xarray loads one after another at open)."""
        self._prefetched.update(self.read_chunks(keys))

    def read_chunk(self, key: str) -> bytes | None:
        """The stored bytes of chunk ``key``, read in the calling thread (no event loop);
        None if it was never written. Checked like :meth:`get`."""
        return self.read_chunks([key])[key]

    def read_chunks(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """The stored bytes of several chunks, read in the calling thread with one request
        per object (chunks of one pack are read as one span when they are within
        :data:`MERGE_GAP` of each other; objects are read concurrently). Each chunk is
        checked (its CRC-32C; with ``verify``, its object's hash); a chunk never written maps
        to None."""
        out: dict[str, bytes | None] = {}
        wanted: dict[str, list[tuple[int, int, str]]] = {}  # object -> [(start, end, key)]
        whole: dict[str, list[str]] = {}  # object -> keys (whole-object chunks)
        for key in keys:
            if key in out:
                continue
            if key in self._prefetched:
                out[key] = self._prefetched.pop(key)
                continue
            if key in self._inline:
                out[key] = self._checked(key, "", self._inline[key])
                continue
            h = self._chunks.get(key)
            if h is None:
                out[key] = None
                continue
            rng = self._ranges.get(key)
            if rng is None:
                whole.setdefault(h, []).append(key)
            else:
                wanted.setdefault(h, []).append((rng[0], rng[0] + rng[1], key))
        if self.verify:
            for h, spans in wanted.items():
                whole.setdefault(h, []).extend(k for _, _, k in spans)
            wanted = {}
        spans = [span for h, ranges in wanted.items() for span in _merged(h, ranges)]
        jobs = [(h, None, None, ks) for h, ks in whole.items() if h not in self._verified_objects]
        jobs += [(h, start, end, ks) for h, start, end, ks in spans]
        got = self._fetch(jobs)
        for (h, start, _, ks), data in zip(jobs, got):
            first = ks[0]
            if start is None:
                data = self._verified(first, h, data) if self.verify else data
            for key in ks:
                if start is None:
                    rng = self._ranges.get(key)
                    piece = data if rng is None else data[rng[0] : rng[0] + rng[1]]
                else:
                    a, n = self._ranges[key]
                    piece = data[a - start : a - start + n]
                    if len(piece) != n:
                        raise self._corrupt(key, h, "its object is shorter than its byte range")
                out[key] = piece if self.verify else self._checked(key, h, piece)
        for h, ks in whole.items():  # objects this store verified before
            if ks[0] not in out:
                data = self._verified_objects[h]
                self._verified_objects.move_to_end(h)
                for key in ks:
                    rng = self._ranges.get(key)
                    out[key] = data if rng is None else data[rng[0] : rng[0] + rng[1]]
        return out

    def _fetch(self, jobs: list[tuple[str, int | None, int | None, list[str]]]) -> list[bytes]:
        """Read each ``(object, start, end, keys)`` (whole object if start is None) with one
        request; raise the error naming the chunk if one cannot be read."""
        if not jobs:
            return []
        spans: list[tuple[str, int, int]] = []
        unsized: dict[int, str] = {}
        for i, (h, start, end, ks) in enumerate(jobs):
            if start is None:
                size = self._object_size(h, ks)
                if size is None:
                    unsized[i] = cas.key_of(h)
                    continue
                start, end = 0, size
            spans.append((cas.key_of(h), start, end))  # type: ignore[arg-type]
        got = iter(self.storage.read_ranges(spans))
        results: list[bytes | Exception] = []
        for i in range(len(jobs)):
            if i in unsized:
                try:
                    results.append(self.storage.read(unsized[i]))
                except OSError as err:
                    results.append(err)
            else:
                results.append(next(got))
        for (h, _, _, ks), data in zip(jobs, results):
            if isinstance(data, FileNotFoundError):
                raise self._missing(ks[0], h) from data
            if isinstance(data, OSError):  # retries spent: name what could not be read
                raise self._unreadable(ks[0], h, data) from data
            if isinstance(data, Exception):
                raise data
        with self._lock:
            self.requests += len(jobs)
            self.chunk_reads += sum(len(ks) for *_, ks in jobs)
            self.bytes_read += sum(len(d) for d in results)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def _object_size(self, h: str, keys: list[str]) -> int | None:
        """Stored bytes of object ``h`` (holding chunks ``keys``), from the manifest."""
        if all(k not in self._ranges for k in keys):
            return self.manifest.sizes.get(keys[0])
        if self._sizes_of_objects is None:
            self._sizes_of_objects = self.manifest.object_sizes()
        return self._sizes_of_objects.get(h)

    def _checked(self, key: str, h: str, data: bytes) -> bytes:
        """``data`` if its CRC-32C matches (for arrays written with one); else
        :class:`IntegrityError` naming the chunk."""
        if self._checksummed(array_of(key)) and not crc_ok(data):
            raise self._corrupt(key, h, "its CRC-32C does not match")
        return data

    def _checksummed(self, array: str) -> bool:
        """Whether ``array``'s last codec is ``crc32c`` (its document parsed on first use:
        an open parses no more than Zarr does)."""
        known = self._crc.get(array)
        if known is None:
            key = f"{array}/zarr.json" if array else "zarr.json"
            doc = self._meta.get(key, b"")
            known = self._crc[array] = array in checksummed_arrays({key: doc})
        return known

    @contextmanager
    def members_only(self, group: str = "") -> Iterator[None]:
        """While in this context, the consolidated metadata (in the root ``zarr.json``, which
        xarray opens first for any group) lists only ``group``, the groups above it and its
        own members: what a Dataset of that group reads. A raw copy's documents are over
        half a manifest's, so Zarr parses no more than it needs.

        For :meth:`abo_lake.release.Release.open` on the store it has just made; chunks,
        counters and the other documents are the store's own throughout.
        """
        doc = self._meta.get("zarr.json")
        if doc is None or b'"consolidated_metadata"' not in doc:
            yield
            return
        meta = json.loads(doc)
        nodes = (meta.get("consolidated_metadata") or {}).get("metadata")
        if not isinstance(nodes, dict):
            yield
            return
        group = group.strip("/")
        above = {"/".join(group.split("/")[:i]) for i in range(1, group.count("/") + 2)}
        meta["consolidated_metadata"]["metadata"] = {
            name: node
            for name, node in nodes.items()
            if name in above or name.rpartition("/")[0] == group
        }
        self._meta["zarr.json"] = json.dumps(meta).encode()
        try:
            yield
        finally:
            self._meta["zarr.json"] = doc

    def decode_error(self, key: str, err: Exception) -> IntegrityError:
        """The error to raise when chunk ``key`` read from this store fails to decode."""
        h = self._chunks.get(key, "")
        return self._corrupt(key, h, f"it does not decode ({type(err).__name__}: {err})")

    def _corrupt(self, key: str, h: str, why: str) -> IntegrityError:
        return IntegrityError(
            f"{self.label}: variable {array_of(key)!r}, chunk {key!r} is corrupt: {why} "
            f"(object {self.storage.url_of(cas.key_of(h))}); run `abo-lake verify` on this "
            "release"
        )

    def _missing(self, key: str, h: str) -> IntegrityError:
        return IntegrityError(
            f"{self.label}: chunk {key!r} is missing from the lake "
            f"({self.storage.url_of(cas.key_of(h))}); run `abo-lake verify` on this release"
        )

    def _unreadable(self, key: str, h: str, err: OSError) -> OSError:
        return OSError(
            err.errno,
            f"{self.label}: variable {array_of(key)!r}, chunk {key!r} could not be read from "
            f"the lake ({self.storage.url_of(cas.key_of(h))}): {err}",
        )

    def _verified(self, key: str, h: str, data: bytes) -> bytes:
        if cas.digest(data) != h:
            raise self._corrupt(key, h, "the object does not hash to its name")
        if len(data) <= VERIFIED_CACHE_BYTES:
            with self._lock:
                self._verified_objects[h] = data
                self._verified_bytes += len(data)
                while self._verified_bytes > VERIFIED_CACHE_BYTES:
                    _, old = self._verified_objects.popitem(last=False)
                    self._verified_bytes -= len(old)
        return data

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError(f"{self.label}: releases are immutable")

    async def delete(self, key: str) -> None:
        raise PermissionError(f"{self.label}: releases are immutable")


def _merged(h: str, ranges: list[tuple[int, int, str]]) -> list[tuple[str, int, int, list[str]]]:
    """The spans to read of object ``h`` for chunk ranges ``(start, end, key)``: ranges
    closer than :data:`MERGE_GAP` are merged into one span."""
    out: list[tuple[str, int, int, list[str]]] = []
    for start, end, key in sorted(ranges):
        if out and start - out[-1][2] <= MERGE_GAP:
            _, a, b, ks = out[-1]
            out[-1] = (h, a, max(b, end), [*ks, key])
        else:
            out.append((h, start, end, [key]))
    return out
