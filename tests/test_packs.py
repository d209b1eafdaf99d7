"""Packed chunks and inline index coordinates (issue 18): a pack is one CAS object holding
several whole chunks, referenced by byte ranges; index coordinates live in the manifest.
Requests are counted at the store (``ManifestStore.requests``) and, on the moto S3 server, on
the wire by the counting proxy of ``tests/faultproxy.py``."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from faultproxy import FaultProxy

import abo_lake
from abo_lake import cas
from abo_lake.cache import open_cached_lake
from abo_lake.errors import IntegrityError
from abo_lake.manifest import Manifest
from abo_lake.stores import INLINE_CHUNK_MAX_BYTES
from abo_lake.writer import cell_major_layout, ragged_layout, write_dataset

N_CELLS, N_TIME = 70, 3000
PATH = "ophys/experiment/1"


def traces(seed: int = 0) -> xr.Dataset:
    """70 cells x 3000 frames of float32 dF/F, one chunk per cell, packed by ``layout``."""
    rng = np.random.default_rng(seed)
    dff = rng.normal(size=(N_CELLS, N_TIME)).astype("f4")
    ds = xr.Dataset(
        {"dff": (("cell_specimen_id", "time"), dff)},
        coords={
            "cell_specimen_id": 1000 + np.arange(N_CELLS),
            "time": np.arange(N_TIME) / 30.0,
        },
    )
    ds["dff"].encoding.update({"chunks": (1, N_TIME), "shards": (32, N_TIME)})
    return ds


def spikes(seed: int = 0) -> tuple[xr.Dataset, np.ndarray]:
    """A flat ragged spike array of 16 units with the realistic session's per-unit counts
    (lognormal around its median of 31,746 spikes; its 5th percentile is 17,313)."""
    rng = np.random.default_rng(seed)
    counts = rng.lognormal(np.log(31_746), 0.35, size=16).astype(int) + 1
    index = np.cumsum(counts)
    times = rng.uniform(0, 600, size=int(index[-1]))  # incompressible: stored ~= raw bytes
    ds = xr.Dataset(
        {"spike_times": ("spike", times), "spike_times_index": ("unit_id", index)},
        coords={"unit_id": np.arange(len(counts))},
    )
    ds["spike_times"].encoding.update(ragged_layout(len(times), 8))
    return ds, index


def publish(lake: abo_lake.Lake, ds: xr.Dataset, name: str = "r1", path: str = PATH):
    with lake.stage(name) as stage:
        stage.write(path, ds)
    return lake.release(name)


def test_layouts():
    # a 317 KB float64 trace is one chunk; 13 cells make a ~4 MB pack
    assert cell_major_layout((200, 39614), 8) == {
        "chunks": (1, 39614),
        "shards": (13, 39614),
    }
    # a trace over 1 MiB splits along time into equal pieces
    assert cell_major_layout((10, 300_000), 8)["chunks"] == (1, 100_000)
    assert ragged_layout(20_941_187, 8) == {"chunks": (8192,), "shards": (524_288,)}
    assert ragged_layout(100, 8) == {"chunks": (100,), "shards": (100,)}


def test_round_trip_of_packed_arrays(lake):
    ds = traces()
    rel = publish(lake, ds)
    m = rel.manifest(PATH)
    dff = {k: h for k, h in m.chunks.items() if k.startswith("dff/")}
    assert len(dff) == N_CELLS
    assert len(set(dff.values())) == 3  # 32 + 32 + 6 cells
    assert m.packs == {"dff": (32, N_TIME)}
    assert set(m.inline) == {"cell_specimen_id/c/0", "time/c/0"}
    sizes = m.object_sizes()
    assert sum(sizes[h] for h in set(dff.values())) == sum(m.sizes[k] for k in dff)
    for h, size in sizes.items():
        assert lake.storage.size(cas.key_of(h)) == size
    opened = rel.open(PATH)
    assert opened.dff.chunks == ((32, 32, 6), (N_TIME,))
    xr.testing.assert_identical(opened.drop_attrs(), ds.drop_attrs())
    # the manifest survives its own round trip
    again = Manifest.from_bytes(m.to_bytes(lake.url))
    assert again == m


def test_one_cell_is_one_request_of_its_own_bytes(lake):
    rel = publish(lake, traces())
    m = rel.manifest(PATH)
    opened = rel.open(PATH)
    store = opened.encoding["abo_lake_store"]
    assert store.requests == 0  # index coordinates are inline
    with dask.config.set(scheduler="synchronous"):
        values = opened.dff.isel(cell_specimen_id=40).values
    np.testing.assert_array_equal(values, traces().dff.values[40])
    assert store.requests == 1
    assert store.bytes_read == m.sizes["dff/c/40/0"]  # exactly the cell's range
    # a whole pack is one dask task and one request
    with dask.config.set(scheduler="synchronous"):
        opened.dff.isel(cell_specimen_id=slice(32, 64)).values
    assert store.requests == 2
    # all cells: one request per pack
    with dask.config.set(scheduler="synchronous"):
        opened.dff.values
    assert store.requests == 2 + 3


def test_one_cell_on_the_wire(s3_endpoint, s3_bucket):
    with FaultProxy(s3_endpoint) as proxy:
        options = {"endpoint_url": proxy.url, "key": "testing", "secret": "testing", "anon": False}
        lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", skip_instance_cache=True, **options)
        rel = publish(lake, traces())
        size = rel.manifest(PATH).sizes["dff/c/5/0"]
        lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", skip_instance_cache=True, **options)
        proxy.wait_idle()
        mark = proxy.mark()
        opened = lake.release("r1").open(PATH)
        proxy.wait_idle()
        at_open = proxy.tally(mark)
        mark = proxy.mark()
        opened.dff.isel(cell_specimen_id=5).values
        proxy.wait_idle()
        cell = proxy.tally(mark)
    assert at_open.gets <= 2, at_open  # release.json + manifest
    assert cell.requests == cell.gets == 1, cell
    assert cell.body_out == size


def test_one_unit_of_spikes_is_at_most_two_requests_and_twice_its_bytes(local_lake):
    ds, index = spikes()
    rel = publish(local_lake, ds, path="ecephys/session/1")
    opened = rel.open("ecephys/session/1")
    store = opened.encoding["abo_lake_store"]
    starts = np.concatenate([[0], index[:-1]])
    ratios = []
    for unit in range(len(index)):
        before, bytes_before = store.requests, store.bytes_read
        with dask.config.set(scheduler="synchronous"):
            got = opened.spike_times[starts[unit] : index[unit]].values
        np.testing.assert_array_equal(got, ds.spike_times.values[starts[unit] : index[unit]])
        assert store.requests - before <= 2
        ratios.append((store.bytes_read - bytes_before) / (8 * (index[unit] - starts[unit])))
    assert max(ratios) <= 2.0, ratios
    assert np.median(ratios) <= 1.5, ratios


def test_corrupt_byte_inside_a_packed_chunk_names_that_chunk(local_lake):
    rel = publish(local_lake, traces())
    m = rel.manifest(PATH)
    key = "dff/c/37/0"
    offset, length = m.ranges[key]
    obj = cas.key_of(m.chunks[key])
    data = bytearray(local_lake.storage.read(obj))
    data[offset + length // 2] ^= 0x10
    local_lake.storage.write(obj, bytes(data))
    opened = rel.open(PATH)
    # its neighbours in the same pack still read
    opened.dff.isel(cell_specimen_id=36).values
    with pytest.raises(IntegrityError, match=r"'dff/c/37/0'.*CRC-32C"):
        opened.dff.isel(cell_specimen_id=37).values
    with pytest.raises(IntegrityError, match="does not hash to its name"):
        rel.open(PATH, verify=True).dff.isel(cell_specimen_id=36).values
    report = local_lake.verify("r1")
    assert [k for _, k, _ in report.corrupt]
    assert report.corrupt[0][2] == m.chunks[key]


def test_verify_reads_each_pack_once(local_lake):
    rel = publish(local_lake, traces())
    report = local_lake.verify("r1")
    assert not report.corrupt
    assert not report.missing
    m = rel.manifest(PATH)
    assert report.bytes == sum(m.object_sizes().values())


def test_a_verifying_store_reads_a_pack_once(local_lake):
    rel = publish(local_lake, traces())
    opened = rel.open(PATH, verify=True)
    store = opened.encoding["abo_lake_store"]
    with dask.config.set(scheduler="synchronous"):
        for cell in range(4):
            opened.dff.isel(cell_specimen_id=cell).values
    assert store.requests == 1


def test_dedup_and_gc_keep_packs(local_lake):
    first = write_dataset(local_lake.storage, traces())
    again = write_dataset(local_lake.storage, traces())
    assert first.new_objects == 3
    assert again.new_objects == 0
    assert again.manifest == first.manifest
    publish(local_lake, traces(), "r1")
    changed = traces()
    changed["dff"].values[40, 7] += 1.0  # one chunk of the second pack
    changed["dff"].encoding.update({"chunks": (1, N_TIME), "shards": (32, N_TIME)})
    before = set(local_lake.storage.find("cas"))
    publish(local_lake, changed, "r2")
    added = set(local_lake.storage.find("cas")) - before
    assert len(added) == 1  # one new pack (same granularity as one ~4 MB chunk before)
    local_lake.gc(grace="0s", dry_run=False)
    for name in ("r1", "r2"):
        rel = local_lake.release(name)
        rel.open(PATH).dff.values
        assert not local_lake.verify(name).corrupt


@pytest.mark.parametrize("where", ["local", "s3"])
def test_plain_xarray_and_fsspec_read_packed_and_inline(where, tmp_path, request):
    if where == "local":
        lake = abo_lake.open_lake(str(tmp_path / "lake"))
    else:
        options = request.getfixturevalue("s3_options")
        bucket = request.getfixturevalue("s3_bucket")
        lake = abo_lake.open_lake(f"s3://{bucket}/lake", **options)
    ds = traces()
    rel = publish(lake, ds)
    so = rel.storage_options()
    so["fo"] = rel.manifest_url(PATH)
    # the README's recipe
    plain = xr.open_dataset(
        "reference://",
        engine="zarr",
        chunks={},
        consolidated=True,
        zarr_format=3,
        storage_options=so,
    )
    np.testing.assert_array_equal(plain.dff.values, ds.dff.values)
    np.testing.assert_array_equal(plain.time.values, ds.time.values)
    np.testing.assert_array_equal(plain.cell_specimen_id.values, ds.cell_specimen_id.values)


def test_cache_serves_ranges(tmp_path):
    url = str(tmp_path / "lake")
    publish(abo_lake.open_lake(url), traces())
    first = open_cached_lake(url, cache=tmp_path / "cache")
    a = first.release("r1").open(PATH).dff.isel(cell_specimen_id=9).values
    second = open_cached_lake(url, cache=tmp_path / "cache")
    misses = second.storage.cache.misses
    opened = second.release("r1").open(PATH)
    b = opened.dff.isel(cell_specimen_id=9).values
    np.testing.assert_array_equal(a, b)
    assert second.storage.cache.hits >= 1
    assert second.storage.cache.misses == misses
    # an altered range entry is dropped and fetched again
    (entry,) = [p for p in (tmp_path / "cache" / "cas").rglob("*-*") if p.is_file()]
    entry.write_bytes(b"x" + entry.read_bytes()[1:])
    third = open_cached_lake(url, cache=tmp_path / "cache")
    c = third.release("r1").open(PATH).dff.isel(cell_specimen_id=9).values
    np.testing.assert_array_equal(a, c)
    assert third.storage.cache.corrupt == 1


def test_open_of_a_visual_behavior_experiment_reads_release_and_manifest_only(
    allensdk_releases, s3_endpoint, s3_options, s3_bucket
):
    """The AllenSDK-written Visual Behavior experiment, its lake copied to moto S3 and read
    through the counting proxy: opening costs the release record and the manifest; one
    cell's dF/F one GET of its own bytes."""
    import s3fs

    local = allensdk_releases["vbo_ophys"]
    (path,) = [p for p in local.datasets() if p.startswith("ophys/experiment/")]
    fs = s3fs.S3FileSystem(endpoint_url=s3_options["endpoint_url"], key="testing", secret="testing")
    fs.put(local.lake.storage.root + "/", f"{s3_bucket}/lake/", recursive=True)
    m = local.manifest(path)
    dff = sorted(k for k in m.chunks if k.startswith("dff/"))
    assert m.packs["dff"][0] > 1  # several cells per pack
    assert all(k in m.ranges for k in dff)  # one chunk per cell, in packs
    with FaultProxy(s3_endpoint) as proxy:
        lake = abo_lake.open_lake(
            f"s3://{s3_bucket}/lake",
            endpoint_url=proxy.url,
            key="testing",
            secret="testing",
            anon=False,
            skip_instance_cache=True,
        )
        proxy.wait_idle()
        mark = proxy.mark()
        ds = lake.release("allensdk").open(path)
        proxy.wait_idle()
        at_open = proxy.tally(mark)
        opened_hits = [(h.method, h.path) for h in proxy.hits[mark:]]
        mark = proxy.mark()
        values = ds.dff.isel(cell_specimen_id=1).values
        proxy.wait_idle()
        cell = proxy.tally(mark)
    assert at_open.requests <= 2, (at_open, opened_hits)
    np.testing.assert_array_equal(values, local.open(path).dff.isel(cell_specimen_id=1).values)
    assert cell.gets == cell.requests == 1, cell
    assert cell.body_out == m.sizes[dff[1]]


#: Index values whose one chunk compresses to more than INLINE_CHUNK_MAX_BYTES.
N_LARGE = 400_000


def test_large_index_coordinates_stay_objects_read_together_at_open(local_lake):
    """An index-coordinate chunk over INLINE_CHUNK_MAX_BYTES is an object, not manifest text;
    opening reads all such chunks in one batch."""
    rng = np.random.default_rng(1)
    ds = traces()
    ds = ds.assign_coords(
        running_time=np.sort(rng.uniform(0, 600, N_LARGE)),
        eye_time=np.sort(rng.uniform(0, 600, N_LARGE)),
    )
    ds["running_speed"] = ("running_time", rng.normal(size=N_LARGE))
    ds["pupil_area"] = ("eye_time", rng.normal(size=N_LARGE))
    rel = publish(local_lake, ds)
    m = rel.manifest(PATH)
    assert {"running_time/c/0", "eye_time/c/0"} <= set(m.chunks)
    assert m.sizes["eye_time/c/0"] > INLINE_CHUNK_MAX_BYTES
    assert {"time/c/0", "cell_specimen_id/c/0"} <= set(m.inline)
    opened = rel.open(PATH)
    store = opened.encoding["abo_lake_store"]
    assert store.chunk_reads == 2
    assert store.requests == 2  # one batch: the two objects read concurrently
    np.testing.assert_array_equal(opened.eye_time.values, ds.eye_time.values)
    assert store.requests == 2  # index values were loaded at open
