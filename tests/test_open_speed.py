"""``Release.open``'s fast default path (issue 18: open in < 0.3 s warm): what it builds is
what users got before, built with less work.

The default open (``chunks=None``) lets Zarr parse only the opened group's own members, reads
index coordinates in one batch in the calling thread, and builds each variable's dask graph
directly (one task per stored object, named from the manifest's hash). Each test compares it
with Zarr's and dask's own path (``open(..., chunks={})`` / ``xr.open_zarr``) or checks the
graph it must have. Timings are in ``tests/benchmarks/bench_cloud_reads.py``.
"""

from __future__ import annotations

import hashlib
import pickle

import dask
import numpy as np
import pytest
import xarray as xr

N_CELLS, N_TIME = 40, 500
PATH = "ophys/experiment/7"


def experiment() -> xr.DataTree:
    """Cells x frames packed 16 cells to an object, a 1-D variable on its own dimension, a
    scalar, string and non-index coordinates, and a ``raw`` group below the root."""
    rng = np.random.default_rng(3)
    ds = xr.Dataset(
        {
            "dff": (("cell_specimen_id", "time"), rng.normal(size=(N_CELLS, N_TIME))),
            "running_speed": ("running_time", rng.normal(size=3 * N_TIME)),
            "frame_rate": ((), 30.0),
            "cre_line": ((), "Sst-IRES-Cre"),
        },
        coords={
            "cell_specimen_id": 5000 + np.arange(N_CELLS),
            "time": np.arange(N_TIME) / 30.0,
            "running_time": np.arange(3 * N_TIME) / 60.0,
            "cell_roi_id": ("cell_specimen_id", 9000 + np.arange(N_CELLS)),
        },
        attrs={"ophys_experiment_id": 7},
    )
    ds["dff"].attrs["units"] = "1"
    ds["dff"].encoding.update({"chunks": (1, N_TIME), "shards": (16, N_TIME)})
    raw = xr.Dataset({"values": ("n", rng.integers(0, 9, 100))}, coords={"n": np.arange(100)})
    sub = xr.Dataset({"w": ("k", np.arange(5.0))}, attrs={"source": "nested"})
    return xr.DataTree.from_dict({"/": ds, "/raw": raw, "/raw/sub": sub})


@pytest.fixture
def release(lake):
    with lake.stage("r1") as stage:
        stage.write(PATH, experiment())
    return lake.release("r1")


def test_default_open_equals_zarrs_own_path(release):
    fast = release.open(PATH)
    plain = release.open(PATH, chunks={})  # xarray's open_zarr and dask's from_array
    xr.testing.assert_identical(fast, plain)
    for name, var in fast.variables.items():
        assert repr(var.encoding) == repr(plain[name].encoding), name  # NaN fill values
    assert set(fast.xindexes) == {"cell_specimen_id", "time", "running_time"}
    assert fast.dff.chunks == ((16, 16, 8), (N_TIME,))  # one dask chunk per pack
    xr.testing.assert_identical(fast.compute(), experiment().to_dataset().assign_attrs(fast.attrs))


def test_one_task_per_stored_object_named_from_the_manifest(release):
    h = release.manifest_url(PATH).rsplit("/", 1)[1].removesuffix(".json")
    opened = release.open(PATH)
    graph = dict(opened.dff.data.__dask_graph__())
    tasks = [k for k in graph if isinstance(k, tuple)]
    assert sorted(tasks) == [(opened.dff.data.name, i, 0) for i in range(3)]
    assert len(graph) == 3 + 1  # the three packs' tasks and the source array
    lake = hashlib.sha256(release.lake.storage.url.encode()).hexdigest()[:8]
    assert opened.dff.data.name == f"abo_lake-{h}-{lake}-dff"
    # equal content, equal names (dask may share results); a verifying open is another graph
    assert release.open(PATH).dff.data.name == opened.dff.data.name
    assert release.open(PATH, verify=True).dff.data.name == f"abo_lake-{h}-{lake}-verified-dff"
    # a group's variables are named with the group
    raw = release.open(PATH, group="raw")["values"]
    assert raw.data.name == f"abo_lake-{h}-{lake}-raw-values"


def test_a_copy_of_a_lake_is_read_on_its_own_when_compared_with_its_source(local_lake, tmp_path):
    """The same dataset opened from a lake and from its copy makes two graphs (names carry
    the lake): comparing them reads both, so a chunk missing from the copy is found instead
    of dask reading one side for both."""
    import shutil

    import abo_lake
    from abo_lake import cas

    with local_lake.stage("r1") as stage:
        stage.write(PATH, experiment())
    shutil.copytree(tmp_path / "lake", tmp_path / "copy")
    copy = abo_lake.open_lake(str(tmp_path / "copy"))
    a, b = local_lake.release("r1").open(PATH), copy.release("r1").open(PATH)
    assert a.dff.data.name != b.dff.data.name
    xr.testing.assert_identical(*dask.compute(a, b))  # an intact copy: equal
    h = next(iter(copy.release("r1").manifest(PATH).chunks.values()))
    (tmp_path / "copy" / cas.key_of(h)).unlink()
    a, b = local_lake.release("r1").open(PATH), copy.release("r1").open(PATH)
    with pytest.raises(Exception, match=h[:12]):
        dask.compute(a, b)


def test_open_reads_only_index_coordinates_and_leaves_the_store_whole(release):
    opened = release.open(PATH)
    store = opened.encoding["abo_lake_store"]
    assert store.requests == 0  # index coordinates are inline in the manifest
    # the store users get still lists the whole hierarchy (raw group included)
    assert store._meta["zarr.json"] == release.manifest(PATH).metadata["zarr.json"].encode()
    tree = xr.open_datatree(store, engine="zarr", consolidated=True, zarr_format=3)
    assert "raw" in tree.children
    with dask.config.set(scheduler="synchronous"):
        opened.dff.isel(cell_specimen_id=20).values
    assert store.requests == 1


@pytest.mark.parametrize("group", ["raw", "raw/sub", "/raw/sub/"])
def test_a_group_opens_with_its_own_members(release, group):
    opened = release.open(PATH, group=group)
    xr.testing.assert_identical(opened, release.open(PATH, group=group, chunks={}))
    want = experiment()[group.strip("/")].to_dataset(inherit=False)
    xr.testing.assert_identical(opened.compute().drop_attrs(), want.drop_attrs())
    assert all(len(c) == 1 for c in opened.chunks.values())
    # the store's root document is the manifest's again after the open
    store = opened.encoding["abo_lake_store"]
    assert store._meta["zarr.json"] == release.manifest(PATH).metadata["zarr.json"].encode()


def test_opened_dataset_computes_on_a_distributed_cluster(release, dask_client):
    opened = release.open(PATH)
    pickle.loads(pickle.dumps(opened))  # the graph ships
    total = dask_client.compute(opened.dff.sum()).result()
    np.testing.assert_allclose(float(total), float(experiment()["dff"].sum()))


def test_verify_open_checks_hashes(release):
    opened = release.open(PATH, verify=True)
    xr.testing.assert_identical(opened.compute(), release.open(PATH).compute())
    assert opened.encoding["abo_lake_store"].verify


def test_plain_open_zarr_still_sees_the_consolidated_hierarchy(release):
    store = release.store(PATH)
    ds = xr.open_zarr(store, consolidated=True, zarr_format=3)
    assert "dff" in ds
    with store.members_only(""):
        inside = xr.open_zarr(store, consolidated=True, zarr_format=3)
    xr.testing.assert_identical(inside, ds)
    assert xr.open_datatree(store, engine="zarr", consolidated=True, zarr_format=3)["raw"]


@pytest.mark.parametrize(
    ("group", "nodes"),
    [
        ("", {*experiment().to_dataset().variables, "raw"}),
        ("raw", {"raw", "raw/values", "raw/n", "raw/sub"}),
        ("raw/sub", {"raw", "raw/sub", "raw/sub/w"}),
    ],
)
def test_members_only_shows_zarr_the_group_and_its_members(release, group, nodes):
    import zarr

    store = release.store(PATH)
    with store.members_only(group):
        root = zarr.open_consolidated(store, mode="r", zarr_format=3)
        assert set(root.metadata.consolidated_metadata.flattened_metadata) == nodes
    root = zarr.open_consolidated(store, mode="r", zarr_format=3)
    assert "raw/sub/w" in root.metadata.consolidated_metadata.flattened_metadata


def test_datatree_nodes_are_what_open_gives_per_group(release):
    tree = release.open_datatree(PATH)
    assert set(tree.groups) == {"/", "/raw", "/raw/sub"}
    for group in tree.groups:
        node = tree[group].to_dataset(inherit=False)
        opened = release.open(PATH, group=group.strip("/") or None)
        xr.testing.assert_identical(node, opened)
        for name, var in node.variables.items():  # same graphs: same names, same chunks
            assert getattr(var.data, "name", None) == getattr(opened[name].data, "name", None)
            assert var.chunks == opened[name].chunks, name
    assert tree.dff.chunks == ((16, 16, 8), (N_TIME,))  # one dask chunk per pack
    verified = release.open_datatree(PATH, verify=True)
    assert (
        verified["raw"]["values"].data.name
        == release.open(PATH, group="raw", verify=True)["values"].data.name
    )
    assert verified.encoding["abo_lake_store"].verify
    xr.testing.assert_identical(verified.compute(), tree.compute())
    plain = release.open_datatree(PATH, chunks={})  # xarray's open_datatree, chunked as stored
    xr.testing.assert_identical(tree, plain)
    xr.testing.assert_identical(tree.compute(), plain.compute())
    want = experiment()
    for group in want.groups:
        xr.testing.assert_identical(
            tree[group].to_dataset(inherit=False).compute().drop_attrs(),
            want[group].to_dataset(inherit=False).drop_attrs(),
        )


def test_datatree_reads_one_request_per_pack(release, monkeypatch):
    storage = release.lake.storage
    spans: list[tuple[str, int, int]] = []  # every request for chunk data
    read_ranges = storage.read_ranges
    monkeypatch.setattr(storage, "read_ranges", lambda s: spans.extend(s) or read_ranges(s))
    monkeypatch.setattr(
        storage, "read", lambda key: spans.append((key, 0, 0)) or type(storage).read(storage, key)
    )
    tree = release.open_datatree(PATH)
    assert spans == []  # index coordinates are inline in the manifest
    with dask.config.set(scheduler="synchronous"):
        tree.dff.values
    assert len(spans) == 3  # the three packs
    assert tree.encoding["abo_lake_store"].requests == 3
    spans.clear()
    plain = release.open_datatree(PATH, chunks={})  # xarray's own path: a request per chunk
    with dask.config.set(scheduler="synchronous"):
        plain.dff.values
    assert len(spans) == N_CELLS


def test_datatree_reads_every_groups_stored_index_coordinates_in_one_batch(lake, monkeypatch):
    monkeypatch.setattr("abo_lake.stores.INLINE_CHUNK_MAX_BYTES", 0)  # none inline
    with lake.stage("r1") as stage:
        stage.write(PATH, experiment())
    release = lake.release("r1")
    monkeypatch.undo()
    indexed = {"cell_specimen_id", "time", "running_time", "raw/n"}
    keys = {k for k in release.manifest(PATH).chunks if k.rpartition("/c/")[0] in indexed}
    assert {k.rpartition("/c/")[0] for k in keys} == indexed  # stored as objects
    storage = release.lake.storage
    calls: list[list[str]] = []
    read_ranges = storage.read_ranges
    monkeypatch.setattr(
        storage, "read_ranges", lambda s: calls.append([k for k, *_ in s]) or read_ranges(s)
    )
    monkeypatch.setattr(
        storage, "read", lambda key: calls.append([key]) or type(storage).read(storage, key)
    )
    tree = release.open_datatree(PATH)
    assert len(calls) == 1  # one batch for every group's index coordinates
    assert len(calls[0]) == len({release.manifest(PATH).chunks[k] for k in keys})
    np.testing.assert_array_equal(tree["raw"].n.values, np.arange(100))
    np.testing.assert_array_equal(tree.time.values, np.arange(N_TIME) / 30.0)
    assert len(calls) == 1  # loaded at open
