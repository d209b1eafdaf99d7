"""Write an xarray Dataset (or DataTree) into the lake as chunk objects plus a manifest.

Zarr does all encoding (xarray's CF encoding, Zarr 3 codecs); abo_lake only decides where
the encoded bytes go. Metadata and index coordinates are written in-process through a
:class:`~abo_lake.stores.CaptureStore` (index coordinates' chunks inline in the manifest:
opening a dataset reads them); every other array is encoded by one dask task per chunk (or
per *pack*) that puts its bytes into the CAS and returns only ``(key, hash, size, ...)``, so
a write streams on any scheduler (threads or a ``distributed`` cluster) and the graph never
carries data back.

A variable whose ``encoding["shards"]`` names a pack shape (a multiple of its
``encoding["chunks"]``) is stored in packs: each task encodes the chunks of one pack, each
with the array's own codecs (and CRC-32C), and stores them concatenated in C order of chunk
index as ONE object; the manifest points each chunk at its byte range. The Zarr metadata is
a plain regular-chunked array (no sharding codec), so any reference-spec reader reads it.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.array.core import normalize_chunks
from xarray.backends.zarr import encode_zarr_variable
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.buffer import default_buffer_prototype

from abo_lake import cas
from abo_lake.chunk_codec import array_codecs, encode_chunk
from abo_lake.manifest import Manifest
from abo_lake.progress import TaskFraction
from abo_lake.storage import Storage
from abo_lake.stores import CaptureStore, is_metadata_key

__all__ = [
    "CHECKSUM",
    "DEFAULT_COMPRESSORS",
    "PACK_BYTES",
    "RAGGED_CHUNK",
    "TARGET_CHUNK_BYTES",
    "TRACE_CHUNK_MAX_BYTES",
    "WriteOptions",
    "Written",
    "cell_major_layout",
    "groups",
    "ragged_layout",
    "write_dataset",
]

#: Deterministic (same input -> same bytes -> same object), fast, and good on shuffled floats.
DEFAULT_COMPRESSORS = (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),)
#: The last codec of every array written: a CRC-32C of the encoded chunk, so every reader
#: (the lake's stores, and plain zarr/xarray/intake through a manifest) detects a corrupted
#: chunk instead of decoding it into wrong numbers. Deterministic, so dedup still holds.
CHECKSUM = Crc32cCodec()
#: Chunk size aimed at when a variable does not say (``encoding["chunks"]``).
TARGET_CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class WriteOptions:
    """Codec and chunk choices of a conversion (a job specification's ``codec`` and
    ``chunk_mb``); readers' own layouts (e.g. trace chunks) are kept.

    Examples
    --------
    >>> WriteOptions.from_spec({"codec": {"cname": "lz4", "clevel": 5}, "chunk_mb": 8})
    WriteOptions(compressors=(BloscCodec(...),), chunk_bytes=8388608)  # doctest: +SKIP
    """

    compressors: tuple[Any, ...] = DEFAULT_COMPRESSORS
    chunk_bytes: int = TARGET_CHUNK_BYTES
    #: Append :data:`CHECKSUM` to every array's codecs (off only to measure its cost).
    checksum: bool = True

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> WriteOptions:
        """From ``{"codec": {Blosc cname, clevel, shuffle}, "chunk_mb": MB}`` (both optional);
        raises ``ValueError`` naming what is wrong."""
        codec = dict(spec.get("codec") or {})
        unknown = set(codec) - {"cname", "clevel", "shuffle"}
        if unknown:
            raise ValueError(f"codec: unknown Blosc option(s) {sorted(unknown)}")
        compressors = DEFAULT_COMPRESSORS
        if codec:
            base = DEFAULT_COMPRESSORS[0].to_dict()["configuration"]
            config = {k: base[k] for k in ("cname", "clevel", "shuffle")} | codec
            try:
                compressors = (BloscCodec(**config),)
            except (TypeError, ValueError) as err:
                raise ValueError(f"codec {codec}: {err}") from err
        mb = spec.get("chunk_mb")
        if mb is not None and not (isinstance(mb, int | float) and 0.0625 <= mb <= 1024):
            raise ValueError(f"chunk_mb must be a number of MB between 1/16 and 1024, not {mb!r}")
        return cls(compressors, int(mb * 2**20) if mb is not None else TARGET_CHUNK_BYTES)

    def token(self) -> str:
        """ "" for the defaults, else a short hash that tells conversions apart in the ledger."""
        if self == WriteOptions():
            return ""
        parts: list[Any] = [[c.to_dict() for c in self.compressors], self.chunk_bytes]
        if not self.checksum:
            parts.append("unchecked")
        desc = json.dumps(parts, sort_keys=True)
        return cas.digest(desc.encode())[:16]


class Written(NamedTuple):
    """What :func:`write_dataset` stored."""

    manifest: Manifest
    #: Chunk objects that were not in the lake before (the others were deduplicated).
    new_objects: int
    #: Their bytes.
    new_bytes: int


def groups(obj: xr.Dataset | xr.DataTree | Mapping[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """Group path ("" for the root) -> the Dataset stored there."""
    if isinstance(obj, xr.Dataset):
        return {"": obj}
    if isinstance(obj, Mapping) and not isinstance(obj, xr.DataTree):
        return dict(obj)
    if isinstance(obj, xr.DataTree):
        out = {}
        for node in obj.subtree:
            rel = node.relative_to(obj)
            out["" if rel == "." else rel] = node.to_dataset(inherit=False)
        return out
    raise TypeError(f"can only write an xarray Dataset or DataTree, not {type(obj).__name__}")


def _chunks_for(var: xr.Variable, chunk_bytes: int = TARGET_CHUNK_BYTES) -> tuple[int, ...]:
    wanted = var.encoding.get("chunks")
    if wanted is not None and len(wanted) == var.ndim:
        return tuple(max(1, min(int(c), n) if n else 1) for c, n in zip(wanted, var.shape))
    if var.ndim == 0:
        return ()
    auto = normalize_chunks(
        "auto", var.shape, limit=chunk_bytes, dtype=var.dtype, previous_chunks=None
    )
    return tuple(max(1, c[0]) if c else 1 for c in auto)


#: A cell's whole trace is one chunk up to this size (longer traces split along time).
TRACE_CHUNK_MAX_BYTES = 2**20
#: Bytes of one pack (one object, one request for a whole-population read).
PACK_BYTES = 4 * 2**20
#: Elements per chunk of a ragged per-unit array (``spike_times``): 64 KiB of float64, at
#: most half the spikes of a 5th-percentile unit of the realistic Neuropixels session
#: (17,313 spikes; median 31,746), so a unit's read is <= 2x its bytes.
RAGGED_CHUNK = 8192


def cell_major_layout(shape: tuple[int, int], itemsize: int) -> dict[str, tuple[int, int]]:
    """``{"chunks", "shards"}`` encoding of a (cell, time) trace array: one chunk per cell
    (its whole trace, split along time only beyond :data:`TRACE_CHUNK_MAX_BYTES`), packed
    ~:data:`PACK_BYTES` of cells to an object."""
    n_cells, n_time = (max(1, int(n)) for n in shape)
    pieces = -(-n_time * itemsize // TRACE_CHUNK_MAX_BYTES)
    t = -(-n_time // pieces)
    cells = max(1, min(n_cells, PACK_BYTES // (t * itemsize)))
    return {"chunks": (1, t), "shards": (cells, t)}


def ragged_layout(n: int, itemsize: int) -> dict[str, tuple[int]]:
    """``{"chunks", "shards"}`` encoding of a flat ragged array ordered by unit: chunks of
    :data:`RAGGED_CHUNK` elements packed ~:data:`PACK_BYTES` to an object."""
    n = max(1, int(n))
    chunk = min(n, RAGGED_CHUNK)
    return {"chunks": (chunk,), "shards": (min(n, max(chunk, PACK_BYTES // itemsize)),)}


def _pack_for(var: xr.Variable, chunks: tuple[int, ...]) -> tuple[int, ...] | None:
    """The pack shape of ``var`` (``encoding["shards"]`` rounded down to whole chunks, the
    whole dimension where it asks for more), or None when it is not stored in packs."""
    wanted = var.encoding.get("shards")
    if wanted is None or len(wanted) != var.ndim or not var.ndim:
        return None
    pack = tuple(
        n if int(w) >= n else max(c, int(w) // c * c) for w, c, n in zip(wanted, chunks, var.shape)
    )
    return None if pack == chunks else pack


def _streamable(var: xr.Variable) -> bool:
    return var.dtype.kind in "biufc" and var.size > 0 and var.ndim > 0


def _chunked(var: xr.Variable, chunks: tuple[int, ...]) -> xr.Variable:
    """Dask-chunk ``var`` as stored; in-memory data gets a random graph name (no hashing)."""
    if isinstance(var.data, da.Array):
        return var.chunk(dict(zip(var.dims, chunks)))
    data = da.from_array(var.data, chunks=chunks, name=False)
    return xr.Variable(var.dims, data, var.attrs, var.encoding)


_PLACEMENT_KEYS = ("chunks", "preferred_chunks", "compressors", "shards", "serializer")


def _prepare(
    ds: xr.Dataset, options: WriteOptions | None = None
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """:func:`_prepare_packed` without the pack shapes."""
    return _prepare_packed(ds, options)[:2]


def _prepare_packed(
    ds: xr.Dataset, options: WriteOptions | None = None
) -> tuple[xr.Dataset, dict[str, dict[str, Any]], dict[str, tuple[int, ...]]]:
    """Chunk every non-index numeric variable as it will be stored; build the encoding.

    Numeric arrays become dask arrays whose blocks are exactly the Zarr chunks, or the
    packs (returned: name -> pack shape), encoded by tasks; index coordinates, strings and
    scalars are written in-process.
    """
    encoding: dict[str, dict[str, Any]] = {}
    packs: dict[str, tuple[int, ...]] = {}
    variables: dict[str, xr.Variable] = {}
    options = options or WriteOptions()
    for name, var in ds.variables.items():
        chunks = _chunks_for(var, options.chunk_bytes)
        compressors = tuple(var.encoding.get("compressors") or options.compressors)
        if options.checksum and not any(isinstance(c, Crc32cCodec) for c in compressors):
            compressors += (CHECKSUM,)
        encoding[name] = {"compressors": compressors}
        if var.ndim:
            encoding[name]["chunks"] = chunks
        if name in ds.indexes:
            new = var.copy(deep=False)
        elif _streamable(var):
            pack = _pack_for(var, chunks)
            if pack is not None:
                packs[name] = pack
            new = _chunked(var, pack or chunks)
        else:
            new = var.load() if isinstance(var.data, da.Array) else var.copy(deep=False)
        new.encoding = {k: v for k, v in var.encoding.items() if k not in _PLACEMENT_KEYS}
        variables[name] = new
    out = xr.Dataset(
        {n: variables[n] for n in ds.data_vars},
        coords={n: variables[n] for n in ds.coords},
        attrs=ds.attrs,
    )
    return out, encoding, packs


def _encode_block(
    block: np.ndarray,
    meta: bytes,
    region: tuple[slice, ...],
    storage: Storage,
    prefix: str,
    pack: bool = False,
) -> list[tuple[str, str, int, bool, int | None, int]]:
    """Encode one block with Zarr into its chunks and put them into the CAS: each chunk as
    its own object, or (``pack``) all of them concatenated in C order of chunk index as one.

    Returns ``(key, hash, size, written, offset, object bytes)`` per chunk; ``offset`` is
    None for a chunk that is a whole object; ``written`` is said once per new object.
    """
    encoder = array_codecs(meta)
    chunks = getattr(encoder[0].chunk_grid, "chunk_shape", None) if encoder else None
    if chunks is not None and all(s.start % c == 0 for s, c in zip(region, chunks)):
        # the usual case: the block is whole chunks (blocks follow the Zarr chunks or packs)
        first = tuple(s.start // c for s, c in zip(region, chunks))
        counts = tuple(-(-(s.stop - s.start) // c) for s, c in zip(region, chunks))
        encoded = []
        for step in np.ndindex(*counts):
            index = tuple(f + i for f, i in zip(first, step))
            part = tuple(slice(i * c, (i + 1) * c) for i, c in zip(step, chunks))
            one = encode_chunk(block[part], meta, index)
            if one is not None:
                encoded.append(one)
    else:
        mem = zarr.storage.MemoryStore()
        mem._store_dict["zarr.json"] = default_buffer_prototype().buffer.from_bytes(meta)
        arr = zarr.open_array(mem, mode="r+", zarr_format=3)
        arr[region] = block
        encoded = [
            (key, buf.to_bytes())
            for key, buf in mem._store_dict.items()
            if not is_metadata_key(key)
        ]
        pack = False
    out = []
    if pack and len(encoded) > 1:
        data = b"".join(d for _, d in encoded)
        h, written = cas.put(storage, data)
        offset = 0
        for i, (key, chunk) in enumerate(encoded):
            out.append((f"{prefix}{key}", h, len(chunk), written and i == 0, offset, len(data)))
            offset += len(chunk)
        return out
    for key, data in encoded:
        h, written = cas.put(storage, data)
        out.append((f"{prefix}{key}", h, len(data), written, None, len(data)))
    return out


def _block_tasks(
    data: da.Array, meta: bytes, storage: Storage, prefix: str, pack: bool = False
) -> list[dask.delayed]:
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in data.chunks]
    blocks = data.to_delayed(optimize_graph=False)  # fuse in the one merged graph, not per array
    tasks = []
    for index in np.ndindex(*blocks.shape):
        region = tuple(
            slice(int(s[i]), int(s[i]) + int(c[i])) for s, c, i in zip(starts, data.chunks, index)
        )
        tasks.append(
            # pure=False: content addressing makes reruns idempotent anyway, and tokenizing the
            # arguments (the storage object) for every block cost seconds on many-group trees
            dask.delayed(_encode_block, pure=False)(
                blocks[index], meta, region, storage, prefix, pack
            )
        )
    return tasks


def write_dataset(
    storage: Storage,
    obj: xr.Dataset | xr.DataTree | Mapping[str, xr.Dataset],
    *,
    progress: Callable[[float], None] | None = None,
    options: WriteOptions | None = None,
) -> Written:
    """Store ``obj``'s chunks in ``storage``'s CAS and return its manifest.

    Parameters
    ----------
    storage
        The lake.
    obj
        A Dataset, a DataTree (each node becomes a Zarr group), or a mapping of group path
        (``""`` for the root, parents before children) to Dataset. Variables are chunked by
        their ``encoding["chunks"]`` or else to ~4 MB; compressed with Blosc-zstd unless
        ``encoding["compressors"]`` says otherwise. Dask-backed data is streamed.
    progress
        Called with the fraction of the chunk-encoding tasks done, as they finish.
    options
        Codec and default chunk size (default: Blosc-zstd level 3 with shuffle, ~4 MB).

    Returns
    -------
    Written
        The manifest (not yet stored), and how many chunk objects (and bytes) were new to
        the lake; ``manifest.nbytes`` is all the stored bytes.
    """
    # compact metadata documents: Zarr's default indent of 2 was ~37 % of a manifest's
    # metadata text (every document is stored twice: its own and the consolidated root's)
    with warnings.catch_warnings(), zarr.config.set({"json_indent": None}):
        warnings.filterwarnings("ignore", category=UserWarning, module=r"zarr\..*")
        return _write(storage, obj, progress, options)


def _write_metadata(
    ds: xr.Dataset,
    capture: CaptureStore,
    group: str,
    encoding: dict[str, dict[str, Any]],
    *,
    in_thread: bool = True,
) -> None:
    """What ``ds.to_zarr(capture, compute=False)`` writes: every Zarr metadata document, and
    the chunks of the in-memory (non-dask) variables.

    With ``in_thread``, :func:`abo_lake.zarr_docs.write_group` makes them without Zarr's event
    loop (xarray still encodes). Otherwise, or for what it does not handle, this runs the
    steps of xarray's ``to_zarr`` except the last: ``to_zarr(compute=False)`` also builds a
    dask graph storing each dask variable, which the writer never runs (its own tasks encode
    those chunks). ``test_metadata_is_what_to_zarr_writes`` checks all give the same documents.
    """
    if in_thread:
        try:
            from abo_lake.zarr_docs import write_group
        except ImportError:  # pragma: no cover - other Zarr or xarray internals
            pass
        else:
            if write_group(ds, capture, group, encoding):
                return
    try:
        from xarray.backends.common import ArrayWriter
        from xarray.backends.writers import dump_to_store, get_writable_zarr_store
    except ImportError:  # pragma: no cover - another xarray layout
        ds.to_zarr(
            capture,
            group=group or None,
            mode="w",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding=encoding,
        )
        return
    store = get_writable_zarr_store(
        capture, mode="w", group=group or None, consolidated=False, zarr_format=3
    )
    store._validate_encoding(encoding)
    # ArrayWriter writes numpy-backed variables at once and only collects dask-backed ones;
    # never calling its sync() is what skips the discarded store graph
    dump_to_store(ds, store, ArrayWriter(), encoding=encoding)


#: In-memory arrays up to this size that are one chunk are encoded in the writing process.
INLINE_BYTES = 1 << 20


def _inline(original: xr.Variable, prepared: xr.Variable) -> bool:
    """Whether ``original`` is in memory and stored as one small chunk."""
    return (
        not isinstance(original.data, da.Array)
        and isinstance(original.data, np.ndarray)
        and original.nbytes <= INLINE_BYTES
        and all(len(c) == 1 for c in prepared.chunks)
    )


def _write(
    storage: Storage,
    obj: xr.Dataset | xr.DataTree | Mapping[str, xr.Dataset],
    progress: Callable[[float], None] | None = None,
    options: WriteOptions | None = None,
) -> Written:
    capture = CaptureStore(storage)
    tasks: list[dask.delayed] = []
    for group, ds in groups(obj).items():
        prepared, encoding, packs = _prepare_packed(ds, options)
        prefix = f"{group}/" if group else ""
        # index coordinates are what opening a dataset reads: kept in the manifest
        capture.inline_arrays = {f"{prefix}{name}" for name in ds.indexes}
        _write_metadata(prepared, capture, group, encoding)
        capture.inline_arrays = set()
        capture.packs.update({f"{prefix}{name}": pack for name, pack in packs.items()})
        for name, var in prepared.variables.items():
            if not isinstance(var.data, da.Array):
                continue
            meta = capture._meta[f"{prefix}{name}/zarr.json"]
            original = ds.variables[name]
            if _inline(original, var):
                # one small in-memory chunk: encoded here, a dask task would cost more
                encoded = encode_zarr_variable(original, name=name, zarr_format=3)
                region = tuple(slice(0, n) for n in var.shape)
                block = np.asarray(encoded.data)
                packed = name in packs
                for result in _encode_block(
                    block, meta, region, storage, f"{prefix}{name}/", packed
                ):
                    capture.record(*result)
                continue
            encoded = encode_zarr_variable(var, name=name, zarr_format=3)
            tasks += _block_tasks(encoded.data, meta, storage, f"{prefix}{name}/", name in packs)
    with TaskFraction(progress) if progress else contextlib.nullcontext():
        computed = dask.compute(*tasks)
    for results in computed:
        for result in results:
            capture.record(*result)
    zarr.consolidate_metadata(capture, zarr_format=3)
    return Written(capture.manifest(), capture.new_objects, capture.new_bytes)
