"""Zarr 3 stores over the lake: one that captures writes into content-addressed objects,
one that reads a manifest back.

Both present a Dataset's Zarr hierarchy to zarr/xarray while the bytes live in
``<lake>/cas/``: metadata documents are held inline (they go into the manifest), chunk keys
map to chunk hashes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from collections.abc import AsyncIterator, Iterable
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

__all__ = ["CaptureStore", "ManifestStore", "is_metadata_key"]


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

    def _keys(self) -> list[str]:
        return [*self._meta, *self._chunks]

    async def exists(self, key: str) -> bool:
        return key in self._meta or key in self._chunks

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
        self.sizes: dict[str, int] = {}
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

    def record(self, key: str, h: str, size: int, written: bool) -> None:
        """Record that chunk ``key`` is the object ``h`` (written by a task elsewhere)."""
        self._chunks[key] = h
        self.sizes[key] = size
        self.new_objects += int(written)
        self.new_bytes += size if written else 0

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        if key in self._meta:
            data = self._meta[key]
        elif key in self._chunks:
            data = await asyncio.to_thread(self.storage.read, cas.key_of(self._chunks[key]))
        else:
            return None
        return prototype.buffer.from_bytes(_slice(data, byte_range))

    async def set(self, key: str, value: Buffer) -> None:
        data = value.to_bytes()
        if is_metadata_key(key):
            self._meta[key] = data
            return
        h, written = await asyncio.to_thread(cas.put, self.storage, data)
        self.record(key, h, len(data), written)

    async def delete(self, key: str) -> None:
        self._meta.pop(key, None)
        self._chunks.pop(key, None)
        self.sizes.pop(key, None)

    def manifest(self) -> Manifest:
        """The manifest of everything captured so far."""
        from abo_lake.manifest import Manifest

        return Manifest(
            {k: v.decode() for k, v in self._meta.items()}, dict(self._chunks), dict(self.sizes)
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
        self._checksummed = checksummed_arrays(self._meta)
        self._cas = storage.zarr_store(cas.CAS_PREFIX)
        self._reads = itertools.count()
        self._token: str | None = None
        self.chunk_reads = 0
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
            self._token = cas.digest(repr((items, sorted(self._meta.items()))).encode())
        return ("abo_lake.ManifestStore", self.storage.url, self._token, self.verify)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_reads")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reads = itertools.count()

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
        h = self._chunks.get(key)
        if h is None:
            return None  # never written: zarr fills it with the fill value
        self.chunk_reads = next(self._reads) + 1
        obj = f"{h[:2]}/{h}"
        whole = self.verify or byte_range is None
        try:
            buf = await self._cas.get(obj, prototype, None if whole else byte_range)
        except FileNotFoundError:
            buf = None
        except OSError as err:  # retries spent: name what could not be read
            raise self._unreadable(key, h, err) from err
        if buf is None:
            raise self._missing(key, h)
        if whole:
            data = self._checked(key, h, buf.to_bytes())
            if byte_range is not None:
                buf = prototype.buffer.from_bytes(_slice(data, byte_range))
        self.bytes_read += len(buf)
        return buf

    def read_chunk(self, key: str) -> bytes | None:
        """The stored bytes of chunk ``key``, read in the calling thread (no event loop);
        None if it was never written. Checked like :meth:`get`."""
        h = self._chunks.get(key)
        if h is None:
            return None
        self.chunk_reads = next(self._reads) + 1
        try:
            data = self.storage.read(cas.key_of(h))
        except FileNotFoundError:
            raise self._missing(key, h) from None
        except OSError as err:
            raise self._unreadable(key, h, err) from err
        data = self._checked(key, h, data)
        self.bytes_read += len(data)
        return data

    def _checked(self, key: str, h: str, data: bytes) -> bytes:
        """``data`` if it passes the checks: its CRC-32C (always, for arrays written with one)
        and its hash (with ``verify``); else :class:`IntegrityError` naming the chunk."""
        if self.verify:
            return self._verified(key, h, data)
        if array_of(key) in self._checksummed and not crc_ok(data):
            raise self._corrupt(key, h, "its CRC-32C does not match")
        return data

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
        return data

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError(f"{self.label}: releases are immutable")

    async def delete(self, key: str) -> None:
        raise PermissionError(f"{self.label}: releases are immutable")
