"""Lake benchmarks (issue: the lake). Prints numbers side by side with their baselines.

1. Objects and bytes stored for two releases where the second changes one array of one of N
   datasets, against storing both releases in full.
2. Requests and time to open a ~50-variable dataset from the moto S3 server, against plain
   ``xr.open_zarr`` of the same dataset written by ``to_zarr`` (consolidated).
3. Write throughput (MB/s) against plain ``to_zarr`` of the same dataset to the same storage.

Run: ``python tests/benchmarks/bench_lake.py``
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import s3fs
import xarray as xr
import zarr

import abo_lake
from abo_lake.writer import DEFAULT_COMPRESSORS


def traces(seed: int, n_cells: int = 200, n_time: int = 60_000) -> xr.Dataset:
    """Calcium-like float32 traces (~48 MB), chunked ~2 MB."""
    rng = np.random.default_rng(seed)
    kernel = np.exp(-np.arange(60) / 20.0)
    spikes = rng.random((n_cells, n_time)) > 0.995
    data = np.apply_along_axis(lambda s: np.convolve(s, kernel)[:n_time], 1, spikes)
    data = (data + rng.normal(0, 0.05, data.shape)).astype("float32")
    ds = xr.Dataset(
        {
            "dff": (("cell_specimen_id", "time"), data),
            "events": (("cell_specimen_id", "time"), spikes.astype("float32")),
        },
        coords={"cell_specimen_id": np.arange(n_cells), "time": np.arange(n_time) / 31.0},
    )
    for v in ds.data_vars:
        ds[v].encoding["chunks"] = (50, 10_000)
    return ds


def bench_dedup(root: Path, n: int = 8) -> None:
    lake = abo_lake.open_lake(root / "dedup")
    datasets = {f"ophys/experiment/{i}": traces(i, n_time=20_000) for i in range(n)}
    with lake.stage("r1") as stage:
        for path, ds in datasets.items():
            stage.write(path, ds)
    after1 = lake.storage.find("cas")
    changed = datasets["ophys/experiment/0"].copy()
    changed["events"] = changed["events"] * 2  # one array of one dataset changes
    changed["events"].encoding["chunks"] = (50, 10_000)
    with lake.stage("r2") as stage:
        for path, ds in datasets.items():
            stage.write(path, changed if path.endswith("/0") else ds)
    after2 = lake.storage.find("cas")
    full_objects = 2 * len(after1)
    full_bytes = 2 * sum(o["size"] for o in after1.values())
    ours_bytes = sum(o["size"] for o in after2.values())
    print("1. two releases, the second changing one array of one of", n, "datasets")
    print(f"   stored in full : {full_objects:6d} objects {full_bytes / 1e6:9.1f} MB")
    print(f"   abo_lake (CAS) : {len(after2):6d} objects {ours_bytes / 1e6:9.1f} MB")
    print(
        f"   ratio          : {len(after2) / full_objects:.3f} of the objects, "
        f"{ours_bytes / full_bytes:.3f} of the bytes"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_open_s3() -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    so = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    boto3.client(
        "s3",
        endpoint_url=so["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="bench")
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {f"column_{i:02d}": ("unit_id", rng.normal(size=600)) for i in range(50)},
        coords={"unit_id": np.arange(600)},
    )
    calls: Counter = Counter()
    original = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls[method] += 1
        return await original(self, method, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = counting
    try:
        ds.to_zarr(
            "s3://bench/plain.zarr",
            storage_options={**so, "max_concurrency": 1},
            zarr_format=3,
            consolidated=True,
            mode="w",
        )
        lake = abo_lake.open_lake("s3://bench/lake", **so)
        with lake.stage("r1") as stage:
            stage.write("ecephys/units/1", ds)
        results = {}
        for label, opener in [
            (
                "plain to_zarr + open_zarr",
                lambda: xr.open_zarr(
                    "s3://bench/plain.zarr",
                    storage_options={**so, "max_concurrency": 1},
                    consolidated=True,
                    zarr_format=3,
                ),
            ),
            (
                "abo_lake release.open",
                lambda: (
                    abo_lake.open_lake("s3://bench/lake", **so)
                    .release("r1")
                    .open("ecephys/units/1")
                ),
            ),
        ]:
            calls.clear()
            t0 = time.perf_counter()
            opened = opener()
            opened.compute()
            results[label] = (time.perf_counter() - t0, sum(calls.values()), dict(calls))
        print("2. open a 50-variable dataset from moto S3 and read it all")
        for label, (seconds, n, detail) in results.items():
            print(f"   {label:26}: {n:4d} requests {seconds:6.2f} s  {detail}")
        (pt, pn, _), (ot, on, _) = results.values()
        print(f"   ratio (abo_lake / plain): {on / pn:.2f} requests, {ot / pt:.2f} time")
    finally:
        s3fs.S3FileSystem._call_s3 = original
        server.stop()


def bench_write(root: Path) -> None:
    ds = traces(1, n_cells=200, n_time=250_000)  # 400 MB of float32 (two variables)
    nbytes = ds.nbytes
    enc = {v: {"chunks": (50, 10_000), "compressors": DEFAULT_COMPRESSORS} for v in ds.data_vars}
    best_plain = best_ours = float("inf")
    for rep in range(2):
        target = root / f"plain{rep}.zarr"
        t0 = time.perf_counter()
        ds.chunk({"cell_specimen_id": 50, "time": 10_000}).to_zarr(
            zarr.storage.LocalStore(target), zarr_format=3, consolidated=True, encoding=enc
        )
        best_plain = min(best_plain, time.perf_counter() - t0)
        shutil.rmtree(target)
        lake = abo_lake.open_lake(root / f"lake{rep}")
        t0 = time.perf_counter()
        with lake.stage("r1") as stage:
            stage.write("a/1", ds)
        best_ours = min(best_ours, time.perf_counter() - t0)
        shutil.rmtree(root / f"lake{rep}")
    print(f"3. write {nbytes / 1e6:.0f} MB (Blosc-zstd, 2 MB chunks) to a local folder, best of 2")
    print(f"   plain to_zarr   : {nbytes / 1e6 / best_plain:7.1f} MB/s ({best_plain:.2f} s)")
    print(f"   abo_lake stage  : {nbytes / 1e6 / best_ours:7.1f} MB/s ({best_ours:.2f} s)")
    print(f"   ratio (abo_lake / plain throughput): {best_plain / best_ours:.2f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        bench_dedup(Path(tmp))
        bench_open_s3()
        bench_write(Path(tmp))
