"""Zarr chunk decoding in the calling thread (``abo_lake.chunk_codec``) gives what Zarr gives."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from abo_lake import cas
from abo_lake.chunk_codec import SyncArray, chunked_as_stored, read_in_thread
from abo_lake.errors import IntegrityError


@pytest.fixture
def stored(local_lake):
    """A release holding arrays of every kind the lake stores: edge chunks, chunks never
    written (all fill value), NaN fill, strings, bools, a scalar."""
    rng = np.random.default_rng(7)
    dff = rng.normal(size=(13, 1001)).astype("float32")
    dff[:, :500] = np.nan  # whole chunks of fill value: never written
    counts = rng.integers(-(2**40), 2**40, (70, 33))
    counts[:64, :16] = 0
    ds = xr.Dataset(
        {
            "dff": (("cell", "time"), dff),
            "counts": (("ap", "dv"), counts),
            "mask": (("cell", "y", "x"), rng.random((13, 20, 21)) > 0.7),
            "name": ("cell", [f"cell {i}" * (i % 3) for i in range(13)]),
            "t0": ((), 3.5),
        }
    )
    ds["dff"].encoding["chunks"] = (4, 250)
    ds["counts"].encoding["chunks"] = (32, 16)
    ds["mask"].encoding["chunks"] = (5, 8, 8)
    with local_lake.stage("r1") as stage:
        stage.write("a/1", ds)
    release = local_lake.release("r1")
    return ds, release.store("a/1")


SELECTIONS = [
    (),
    (slice(None),),
    (slice(2, 11), slice(240, 760)),
    (slice(3, 4), slice(None, None, 7)),
    (5,),
    (-1, slice(990, None)),
    (0, 0),
    (slice(12, 13), slice(1000, 1001)),
    (slice(5, 5),),
]


@pytest.mark.parametrize("name", ["dff", "counts", "mask", "name", "t0"])
def test_sync_array_reads_what_zarr_reads(stored, name):
    _, store = stored
    arr = zarr.open_group(store, mode="r", zarr_format=3)[name]
    sync = SyncArray(arr, store.read_chunk)
    tried = 0
    for sel in SELECTIONS:
        if len(sel) > arr.ndim:
            continue
        want, got = arr[sel], sync[sel]
        assert np.shape(got) == np.shape(want), (name, sel)
        if np.ndim(want):
            assert type(got) is type(want), (name, sel)
            assert got.dtype == want.dtype, (name, sel)
        else:  # one value (Zarr may give a 0-d array or a scalar; the width of a str varies)
            assert np.asarray(got).dtype.kind == np.asarray(want).dtype.kind, (name, sel)
        np.testing.assert_array_equal(got, want)
        tried += 1
    assert tried >= (1 if name == "t0" else 4)
    # orthogonal selections of slices are basic ones; index arrays go to Zarr
    if arr.ndim:
        np.testing.assert_array_equal(sync.oindex[slice(1, 3)], arr.oindex[slice(1, 3)])
        np.testing.assert_array_equal(sync.oindex[[0, 2]], arr.oindex[[0, 2]])


def test_read_in_thread_switches_lazy_variables_and_keeps_their_values(stored):
    ds, store = stored
    opened = xr.open_zarr(store, consolidated=True, chunks=None, zarr_format=3)
    assert read_in_thread(opened, store.read_chunk) == 5
    reads = store.chunk_reads
    xr.testing.assert_identical(opened.load(), ds)
    assert store.chunk_reads > reads  # read through the store, chunk by chunk
    again = xr.open_zarr(store, consolidated=True, chunks=None, zarr_format=3)
    read_in_thread(again, store.read_chunk)
    chunked = chunked_as_stored(again)
    assert chunked["dff"].chunks == ((4, 4, 4, 1), (250, 250, 250, 250, 1))
    assert chunked["mask"].chunks[1] == (8, 8, 4)
    xr.testing.assert_identical(chunked.compute(), ds)


def test_read_chunk_names_a_missing_or_corrupt_object(stored, local_lake):
    _, store = stored
    key = next(k for k in store.manifest.chunks if k.startswith("dff/"))
    h = store.manifest.chunks[key]
    assert cas.digest(store.read_chunk(key)) == h
    assert store.read_chunk("dff/c/0/0") is None  # all NaN: never written
    path = local_lake.storage.path(cas.key_of(h))
    with open(path, "r+b") as f:
        f.write(b"\0\0\0\0")
    verified = local_lake.release("r1").store("a/1", verify=True)
    with pytest.raises(IntegrityError, match=rf"chunk '{key}' is corrupt"):
        verified.read_chunk(key)
    local_lake.storage.delete([cas.key_of(h)])
    with pytest.raises(IntegrityError, match=rf"chunk '{key}' is missing from the lake"):
        store.read_chunk(key)
