"""What ``Dataset.to_zarr`` writes for one group's metadata, made in the calling thread.

xarray's ``to_zarr`` creates each array through Zarr's asynchronous API: event-loop round
trips and a dozen store operations per array (overwrite checks, parent groups, a second write
for the attributes), about 1.5 ms for a small array, and a raw copy has hundreds of them. Here
xarray's own ``ZarrStore`` still does all the encoding (CF conventions, fill values,
attributes, dimension names), but the Zarr group it writes to is a :class:`DocGroup`: it
builds each array's metadata with the functions ``zarr.create_array`` uses, and keeps the
documents (and the chunks of in-memory variables, encoded by :mod:`abo_lake.chunk_codec`) in a
:class:`~abo_lake.stores.CaptureStore`.

``tests/test_lake.py::test_metadata_is_what_to_zarr_writes`` checks that the documents and
chunks equal ``to_zarr``'s. :func:`write_group` returns False (and leaves nothing behind) for
what it does not handle (sharding, unknown encodings), so the caller can use ``to_zarr``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends.common import ArrayWriter
from xarray.backends.writers import dump_to_store
from xarray.backends.zarr import ZarrStore
from zarr.core.array import AsyncArray, _parse_chunk_encoding_v3, _parse_chunk_key_encoding
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_grids import _auto_partition
from zarr.core.common import parse_shapelike
from zarr.core.dtype import parse_dtype
from zarr.core.dtype.common import HasItemSize
from zarr.core.group import GroupMetadata

from abo_lake.chunk_codec import encode_chunk
from abo_lake.stores import CaptureStore

__all__ = ["DocGroup", "write_group"]


class _Unsupported(Exception):
    """An encoding :class:`DocGroup` leaves to Zarr itself."""


def _doc(metadata: Any) -> bytes:
    return metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()


class _Attrs:
    """``.attrs`` of a group or array: xarray only ever ``put``\\ s all attributes."""

    def __init__(self, node: DocGroup | _DocArray) -> None:
        self._node = node

    def put(self, attrs: dict[str, Any]) -> None:
        self._node.metadata = replace(self._node.metadata, attributes=dict(attrs))
        self._node.save()


class _DocArray:
    """A new array: its metadata document, attributes and the chunks of in-memory data."""

    def __init__(self, group: DocGroup, name: str, metadata: Any) -> None:
        self._group = group
        self.path = f"{group.prefix}{name}"
        self.metadata = metadata
        self.attrs = _Attrs(self)
        self.saved = False  # xarray puts the attributes next: one document, not two
        group.arrays.append(self)

    def save(self) -> None:
        self._group.capture._meta[f"{self.path}/zarr.json"] = _doc(self.metadata)
        self.saved = True

    def __setitem__(self, region: Any, value: Any) -> None:
        """Write a whole in-memory array (what xarray's ArrayWriter does with numpy data)."""
        shape = self.metadata.shape
        whole = region is Ellipsis or (
            isinstance(region, tuple) and all(s == slice(None) for s in region)
        )
        if not whole:
            raise _Unsupported(f"{self.path}: a region write")
        data = np.asarray(value)
        if not self.saved:
            self.save()
        meta = self._group.capture._meta[f"{self.path}/zarr.json"]
        chunks = self.metadata.chunk_grid.chunk_shape
        capture = self._group.capture
        for index in np.ndindex(*(-(-n // c) for n, c in zip(shape, chunks))):
            block = data[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))]
            encoded = encode_chunk(block, meta, index)
            if encoded is not None:
                key, payload = encoded
                capture.put_chunk(f"{self.path}/{key}", payload)


class DocGroup:
    """The part of a ``zarr.Group`` that xarray's ``ZarrStore`` uses to write a new group
    (mode ``"w"``), writing documents into ``capture`` instead of through Zarr's loop.

    Parameters
    ----------
    capture
        Where the documents and chunks go.
    path
        The group's path ("" for the root).
    """

    read_only = False

    def __init__(self, capture: CaptureStore, path: str) -> None:
        self.capture = capture
        self.path = path
        self.prefix = f"{path}/" if path else ""
        self.metadata = GroupMetadata(zarr_format=3)
        self.attrs = _Attrs(self)
        self.arrays: list[_DocArray] = []
        # as zarr.open_group(mode="w"): this group, and any missing parent as an empty group
        parts = path.split("/") if path else []
        for i in range(len(parts)):
            key = "/".join([*parts[:i], "zarr.json"])
            if key not in capture._meta:
                capture._meta[key] = _doc(GroupMetadata(zarr_format=3))
        self.save()

    def save(self) -> None:
        self.capture._meta[f"{self.prefix}zarr.json"] = _doc(self.metadata)

    def members(self) -> list:
        return []

    def create(
        self,
        name: str,
        *,
        shape: Any,
        dtype: Any,
        fill_value: Any = None,
        chunks: Any = "auto",
        compressors: Any = "auto",
        filters: Any = "auto",
        serializer: Any = "auto",
        dimension_names: Any = None,
        shards: Any = None,
        overwrite: bool = False,
        config: Any = None,
        **other: Any,
    ) -> _DocArray:
        """Build the metadata ``zarr.create_array`` would (``init_array``'s steps)."""
        if shards is not None or other:
            raise _Unsupported(f"{name}: shards or encoding {sorted(other)}")
        zdtype = parse_dtype(dtype, zarr_format=3)
        shape = parse_shapelike(shape)
        item_size = zdtype.item_size if isinstance(zdtype, HasItemSize) else 1
        _, chunk_shape = _auto_partition(
            array_shape=shape, shard_shape=None, chunk_shape=chunks, item_size=item_size
        )
        array_array, array_bytes, bytes_bytes = _parse_chunk_encoding_v3(
            compressors=compressors, filters=filters, serializer=serializer, dtype=zdtype
        )
        metadata = AsyncArray._create_metadata_v3(
            shape=shape,
            dtype=zdtype,
            fill_value=fill_value,
            chunk_shape=chunk_shape,
            chunk_key_encoding=_parse_chunk_key_encoding(None, zarr_format=3),
            codecs=(*array_array, array_bytes, *bytes_bytes),
            dimension_names=dimension_names,
            attributes=None,
        )
        return _DocArray(self, name, metadata)


def write_group(
    ds: xr.Dataset, capture: CaptureStore, group: str, encoding: dict[str, dict[str, Any]]
) -> bool:
    """Write what ``ds.to_zarr(capture, group=group, mode="w", compute=False, zarr_format=3,
    encoding=encoding)`` writes, except the dask-backed variables' chunks.

    Returns False, with ``capture`` as it was, if ``ds`` needs something only Zarr does.
    """
    meta, chunks, sizes = dict(capture._meta), dict(capture._chunks), dict(capture.sizes)
    counts = capture.new_objects, capture.new_bytes
    doc_group = DocGroup(capture, group)
    store = ZarrStore(doc_group, mode="w", use_zarr_fill_value_as_mask=False)
    try:
        # ArrayWriter writes numpy-backed variables at once and only collects dask-backed
        # ones; never calling its sync() skips the store graph the writer would discard
        dump_to_store(ds, store, ArrayWriter(), encoding={k: dict(v) for k, v in encoding.items()})
    except _Unsupported:
        capture._meta, capture._chunks, capture.sizes = meta, chunks, sizes
        capture.new_objects, capture.new_bytes = counts
        return False
    for array in doc_group.arrays:
        if not array.saved:
            array.save()
    return True
