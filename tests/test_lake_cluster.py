"""The lake on a real dask.distributed cluster reading and writing the moto S3 server."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest
import xarray as xr

import abo_lake

pytestmark = [pytest.mark.slow, pytest.mark.s3]


@pytest.fixture
def s3_lake(s3_bucket, s3_options):
    return abo_lake.open_lake(f"s3://{s3_bucket}/lake", **s3_options)


def make_dataset() -> xr.Dataset:
    rng = np.random.default_rng(7)
    ds = xr.Dataset(
        {"dff": (("cell_specimen_id", "time"), rng.normal(size=(16, 40000)).astype("float32"))},
        coords={"cell_specimen_id": np.arange(16), "time": np.arange(40000) / 31.0},
        attrs={"abo_lake_kind": "ophys_experiment"},
    )
    ds["dff"].encoding["chunks"] = (8, 5000)  # 16 chunks
    return ds


def test_distributed_write_and_read_equal_threaded(s3_lake, dask_client):
    ds = make_dataset()
    with dask.config.set(scheduler="threads"):
        with s3_lake.stage("threads") as stage:
            h_threads = stage.write("a/1", ds)
        expected = s3_lake.release("threads").open("a/1")["dff"].mean("time").values
    # the same write on worker processes: chunks are put by the workers, the same manifest
    with s3_lake.stage("cluster") as stage:
        assert stage.write("a/1", ds) == h_threads
    opened = s3_lake.release("cluster").open("a/1")
    result = dask_client.compute(opened["dff"].mean("time")).result()
    np.testing.assert_allclose(result.values, expected, rtol=1e-6)


def test_graph_carries_references_and_stays_small(s3_lake, dask_client):
    with s3_lake.stage("r1") as stage:
        stage.write("a/1", make_dataset())
    opened = s3_lake.release("r1").open("a/1")
    window = opened["dff"].isel(time=slice(0, 5000))  # touches 2 of 16 chunks
    (optimized,) = dask.optimize(window.data)
    graph = dict(optimized.__dask_graph__())
    assert len(graph) <= 2 * 2 + 2  # O(chunks touched), not O(chunks)
    assert len(pickle.dumps(graph)) < 100_000  # references and a manifest, not 2.5 MB of data
    values = dask_client.compute(window).result().values
    np.testing.assert_array_equal(values, make_dataset()["dff"].values[:, :5000])
