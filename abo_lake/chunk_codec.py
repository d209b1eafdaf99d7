"""Zarr's chunk encoding and decoding, called synchronously in the calling thread.

Zarr 3 runs every read and write as a coroutine on its own event loop thread, and hands each
codec call to yet another thread: three thread hops per chunk, which cost more than the
decoding itself for the many small arrays of a raw copy. The conversion writer and the
fidelity check use the same codec objects and chunk keys as Zarr (so the bytes are Zarr's),
but call them directly:

- :func:`encode_chunk` encodes one chunk as ``Array.__setitem__`` would;
- :class:`SyncArray` serves basic selections of a stored array by decoding its chunks in the
  calling thread, and :func:`read_in_thread` puts it under the lazy variables xarray opened.

Arrays whose codecs cannot run synchronously (sharding) keep Zarr's own path.
"""

from __future__ import annotations

import functools
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.array.core import getter, slices_from_chunks
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from xarray.core.indexing import (
    ExplicitlyIndexed,
    ImplicitToExplicitIndexingAdapter,
    OuterIndexer,
)
from zarr.abc.codec import SupportsSyncCodec
from zarr.codecs import Crc32cCodec
from zarr.core.array_spec import parse_array_config
from zarr.core.buffer import default_buffer_prototype
from zarr.core.codec_pipeline import fill_value_or_default
from zarr.core.indexing import BasicIndexer
from zarr.core.metadata.v3 import ArrayV3Metadata

__all__ = [
    "SyncArray",
    "array_codecs",
    "chunked_as_stored",
    "encode_chunk",
    "read_in_thread",
]


@functools.lru_cache(maxsize=1024)
def array_codecs(meta: bytes) -> tuple[Any, Any, list[Any]] | None:
    """``(metadata, array config, codecs)`` of the Zarr array the ``zarr.json`` document
    ``meta`` describes, if every codec can run synchronously; else None.

    Built as ``zarr.open_array`` builds them (the metadata evolves each codec for the
    array's dtype, as its codec pipeline holds them), without a trip through Zarr's loop.
    """
    metadata = ArrayV3Metadata.from_dict(json.loads(meta))
    codecs = list(metadata.codecs)
    if not _synchronous(codecs):
        return None
    return metadata, parse_array_config(None), codecs


def _synchronous(codecs: list[Any]) -> bool:
    """Whether every codec can encode and decode without Zarr's event loop."""
    return all(_sync_type(type(c)) for c in codecs)


@functools.lru_cache(maxsize=64)
def _sync_type(cls: type) -> bool:
    # an isinstance check against a runtime Protocol walks its attributes each time (~10 µs)
    return issubclass(cls, SupportsSyncCodec)


def _maybe_all(data: np.ndarray, fill: Any) -> bool:
    """False if ``data`` is certainly not all ``fill`` (its first value differs): spares the
    full comparison (a NaN-aware pass over the chunk) for most chunks."""
    first = data.flat[0] if data.size else fill
    try:
        return bool(first == fill or (np.isnan(first) and np.isnan(fill)))
    except TypeError:
        return True


def encode_chunk(
    block: np.ndarray, meta: bytes, index: tuple[int, ...]
) -> tuple[str, bytes] | None:
    """Zarr's encoding of ``block`` as chunk ``index`` of the array ``meta`` describes:
    ``(chunk key, bytes)``, or None when Zarr would not store it (all fill value).

    The same codec objects and steps as ``Array.__setitem__`` (edge chunks padded with the
    fill value, empty chunks skipped), called synchronously.
    """
    metadata, config, codecs = array_codecs(meta)  # type: ignore[misc]
    spec = metadata.get_chunk_spec(index, config, default_buffer_prototype())
    data = np.asarray(block, dtype=spec.dtype.to_native_dtype())
    if data.shape != spec.shape:  # an edge chunk
        padded = np.full(spec.shape, spec.fill_value, dtype=data.dtype)
        padded[tuple(slice(0, n) for n in data.shape)] = data
        data = padded
    buf: Any = default_buffer_prototype().nd_buffer.from_numpy_array(data)
    fill = spec.fill_value
    if not config.write_empty_chunks and _maybe_all(data, fill) and buf.all_equal(fill):
        return None
    for codec in codecs:
        buf = codec._encode_sync(buf, spec)
        spec = codec.resolve_metadata(spec)
    return metadata.encode_chunk_key(index), buf.to_bytes()


def _decode(data: bytes, codecs: tuple[Any, Any, list[Any]], index: tuple[int, ...]) -> Any:
    """The values of chunk ``index`` from its stored bytes: Zarr's codecs applied in reverse,
    each with the chunk spec it encoded with."""
    metadata, config, chain = codecs
    spec = metadata.get_chunk_spec(index, config, default_buffer_prototype())
    specs = []
    for codec in chain:
        specs.append(spec)
        spec = codec.resolve_metadata(spec)
    buf: Any = default_buffer_prototype().buffer.from_bytes(data)
    for codec, spec in zip(reversed(chain), reversed(specs)):
        buf = codec._decode_sync(buf, spec)
    return buf.as_numpy_array()


class _CheckedCrc:
    """Stands for the ``crc32c`` codec when the store has already checked each chunk's CRC
    (:class:`abo_lake.stores.ManifestStore`): drops the 4 bytes instead of computing it again."""

    def resolve_metadata(self, spec: Any) -> Any:
        return spec

    def _decode_sync(self, buf: Any, spec: Any) -> Any:
        return spec.prototype.buffer.from_array_like(buf.as_numpy_array()[:-4])


class SyncArray:
    """A stand-in for a read-only ``zarr.Array`` whose basic selections (ints and slices)
    decode chunks in the calling thread; other selections go to the Zarr array.

    Parameters
    ----------
    array
        The Zarr array (its metadata, path and fill value).
    get
        ``get(store key) -> bytes | None``: a chunk's stored bytes, None if never written.
    on_error
        ``on_error(store key, exception) -> exception`` to raise instead when a chunk fails
        to decode (e.g. one naming the dataset and object); default: the codec's own error.
    crc_checked
        ``get`` returns only chunks whose ``crc32c`` it has checked: the codec need not.
    get_many
        ``get_many(store keys) -> {key: bytes | None}``: the chunks of one selection in one
        call (e.g. :meth:`abo_lake.stores.ManifestStore.read_chunks`, one request per object);
        default: ``get`` for each.
    """

    def __init__(
        self,
        array: zarr.Array,
        get: Callable[[str], bytes | None],
        on_error: Callable[[str, Exception], Exception] | None = None,
        *,
        crc_checked: bool = False,
        get_many: Callable[[list[str]], dict[str, bytes | None]] | None = None,
    ) -> None:
        self._array = array
        self._get = get
        self._get_many = get_many
        self._on_error = on_error
        chain = list(array.metadata.codecs)
        synchronous = array.metadata.zarr_format == 3 and _synchronous(chain)
        if synchronous and crc_checked and chain and isinstance(chain[-1], Crc32cCodec):
            chain[-1] = _CheckedCrc()
        self._codecs = (array.metadata, array._async_array.config, chain) if synchronous else None
        self._prefix = f"{array.path}/" if array.path else ""
        self.shape = array.shape
        self.dtype = array.dtype
        self.oindex = _Orthogonal(self)
        self.vindex = array.vindex
        self._async_array = array._async_array  # xarray's async reads

    def __getitem__(self, selection: Any) -> Any:
        if self._codecs is None:
            return self._array[selection]
        metadata, config, _ = self._codecs
        indexer = BasicIndexer(selection, self.shape, metadata.chunk_grid)
        spec = metadata.get_chunk_spec((0,) * len(self.shape), config, default_buffer_prototype())
        out = np.empty(indexer.shape, dtype=spec.dtype.to_native_dtype())
        parts = [
            (self._prefix + metadata.encode_chunk_key(coords), coords, chunk_sel, out_sel)
            for coords, chunk_sel, out_sel, _ in indexer
        ]
        if self._get_many is not None:
            got = self._get_many([key for key, *_ in parts])
        else:
            got = {key: self._get(key) for key, *_ in parts}
        for key, coords, chunk_sel, out_sel in parts:
            data = got[key]
            if data is None:
                out[out_sel] = fill_value_or_default(spec)
            else:
                try:
                    values = _decode(data, self._codecs, coords)[chunk_sel]
                except Exception as err:
                    if self._on_error is None:
                        raise
                    raise self._on_error(key, err) from err
                if indexer.drop_axes:
                    values = values.squeeze(axis=indexer.drop_axes)
                out[out_sel] = values
        return out[()] if indexer.shape == () else out


class _Orthogonal:
    """``SyncArray.oindex``: selections of ints and slices only are basic selections."""

    def __init__(self, array: SyncArray) -> None:
        self._array = array

    def __getitem__(self, selection: Any) -> Any:
        key = selection if isinstance(selection, tuple) else (selection,)
        if all(isinstance(k, (int, np.integer, slice)) for k in key):
            return self._array[selection]
        return self._array._array.oindex[selection]


def _zarr_wrappers(data: Any) -> Iterator[Any]:
    """The ``ZarrArrayWrapper`` objects under xarray's lazy indexing and decoding layers."""
    from xarray.backends.zarr import ZarrArrayWrapper

    seen = 0
    while data is not None and seen < 20:
        if isinstance(data, ZarrArrayWrapper):
            yield data
            return
        data = getattr(data, "array", None)
        seen += 1


def read_in_thread(
    obj: xr.Dataset | xr.DataTree,
    get: Callable[[str], bytes | None],
    on_error: Callable[[str, Exception], Exception] | None = None,
    *,
    crc_checked: bool = False,
    get_many: Callable[[list[str]], dict[str, bytes | None]] | None = None,
) -> int:
    """Make the lazy (not dask) variables of ``obj``, opened by xarray's Zarr backend,
    decode their chunks in the calling thread (see :class:`SyncArray`, also for ``on_error``,
    ``crc_checked`` and ``get_many``).

    Returns how many variables were switched; the others keep Zarr's path.
    """
    datasets = [n.dataset for n in obj.subtree] if isinstance(obj, xr.DataTree) else [obj]
    switched = 0
    for ds in datasets:
        for var in ds.variables.values():
            for wrapper in _zarr_wrappers(getattr(var, "_data", None)):
                if not isinstance(wrapper._array, SyncArray):
                    wrapper._array = SyncArray(
                        wrapper._array, get, on_error, crc_checked=crc_checked, get_many=get_many
                    )
                switched += 1
    return switched


def chunked_as_stored(
    ds: xr.Dataset, packs: dict[str, tuple[int, ...]] | None = None, *, name: str | None = None
) -> xr.Dataset:
    """``ds`` (opened lazily, without dask) with each non-index variable dask-chunked as
    stored, as ``open_zarr(chunks={})`` would, or by its pack shape (``packs``: variable
    name -> shape): one dask task per stored object. Reads keep the variables' backend
    arrays (e.g. :class:`SyncArray` after :func:`read_in_thread`); ``ds`` is not changed.

    ``name``: a string naming the stored content (e.g. the manifest's hash) from which each
    variable's dask name is made, ``<name>-<variable>``; default: a random name (tokenizing
    would pickle the backend array).
    """
    packs = packs or {}
    out = ds.copy(deep=False)  # new Variable objects over the same backend arrays
    indexes = ds.xindexes
    for var_name, var in out.variables.items():
        preferred = var.encoding.get("preferred_chunks")
        if var_name in indexes or not preferred or not var.ndim:
            continue
        block = tuple(preferred.get(d, n) for d, n in zip(var.dims, var.shape))
        pack = packs.get(var_name)
        if pack is not None and len(pack) == var.ndim:
            block = tuple(pack)
        data = var._data
        if isinstance(data, ExplicitlyIndexed):  # as Variable.chunk wraps a lazy backend array
            data = ImplicitToExplicitIndexingAdapter(data, OuterIndexer)
        chunks = tuple(_blocks(n, b) for n, b in zip(var.shape, block))
        var.data = _dask_array(data, chunks, f"{name}-{var_name}" if name else None)
    return out


def _dask_array(data: Any, chunks: tuple[tuple[int, ...], ...], name: str | None) -> da.Array:
    """The graph ``dask.array.from_array(data, chunks, name=name, meta=np.ndarray)`` makes
    (the source array under its own key, one ``getter(source, slices)`` task per block),
    built directly: ``from_array`` spends ~0.4 ms a variable on checks this data does not
    need (chunk normalisation, Blockwise layers, meta inference, signature inspection)."""
    name = name or f"array-{uuid.uuid1()}"
    source = f"original-{name}"
    keys = itertools.product([name], *(range(len(c)) for c in chunks))
    tasks = {key: (getter, source, where) for key, where in zip(keys, slices_from_chunks(chunks))}
    layers = {source: MaterializedLayer({source: data}), name: MaterializedLayer(tasks)}
    graph = HighLevelGraph(layers, {source: set(), name: {source}})
    meta = np.empty((0,) * len(chunks), dtype=data.dtype)
    return da.Array(graph, name, chunks, meta=meta)


def _blocks(size: int, block: int) -> tuple[int, ...]:
    """Dask's chunks along one dimension of ``size`` cut every ``block`` elements."""
    if size == 0:
        return (0,)
    whole, rest = divmod(size, block)
    return (block,) * whole + ((rest,) if rest else ())
