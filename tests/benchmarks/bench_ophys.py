"""Benchmark: one cell's full dF/F from S3, via the lake vs downloading the whole NWB file.

Writes a realistic Visual Behavior 2P experiment (``synthesize("vbo-ophys", scale="realistic")``),
uploads it to a moto S3 server running in a child process (STACK_NOTES §8), converts it into a
lake on the same server, then reads the first cell's dF/F twice:

- baseline: download the NWB (as AllenSDK's cache does) and read the column with h5py;
- ours: open the release lazily and compute ``ds.ophys.dff.isel(cell_specimen_id=0)``.

Prints bytes moved, requests and seconds for both, and the ratios. Run:
``python tests/benchmarks/bench_ophys.py [--scale tiny|realistic]``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import h5py
import numpy as np
import s3fs

import abo_lake
import abo_lake.accessors
from abo_lake import sources
from abo_lake.synthetic import synthesize

_COUNT = {"requests": 0, "bytes": 0}
_orig_cat_file = s3fs.S3FileSystem._cat_file


async def _counting_cat_file(self, path, *args, **kwargs):
    data = await _orig_cat_file(self, path, *args, **kwargs)
    _COUNT["requests"] += 1
    _COUNT["bytes"] += len(data)
    return data


s3fs.S3FileSystem._cat_file = _counting_cat_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def main() -> None:
    """Run the benchmark and print baseline, ours and the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="realistic", choices=["tiny", "realistic"])
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    proc = _moto(port)
    try:
        so = {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "key": "testing",
            "secret": "testing",
            "anon": False,
        }
        fs = s3fs.S3FileSystem(**so)
        fs.mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            (nwb,) = synthesize("vbo-ophys", Path(tmp) / "src", scale=args.scale, seed=0)
            size = nwb.stat().st_size
            print(f"synthetic VBO file: {size / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s")
            fs.put(str(nwb), f"bench/source/{nwb.name}")

            t0 = time.perf_counter()
            (path, ds) = next(iter(sources.read(nwb).items()))
            lake = abo_lake.open_lake("s3://bench/lake", **so)
            with dask.config.set(scheduler="threads"), lake.stage("r1") as stage:
                stage.write(path, ds)
            print(f"converted into the lake in {time.perf_counter() - t0:.1f} s ({path})")

            # baseline: download the whole file, read one column with h5py
            _COUNT.update(requests=0, bytes=0)
            t0 = time.perf_counter()
            local = Path(tmp) / "download.nwb"
            fs.get(f"bench/source/{nwb.name}", str(local))
            with h5py.File(local, "r") as f:
                base = f["processing/ophys/dff/traces/data"][:, 0]
            t_base = time.perf_counter() - t0
            b_base = local.stat().st_size

            # ours: open the release lazily, compute one cell's trace
            _COUNT.update(requests=0, bytes=0)
            t0 = time.perf_counter()
            opened = abo_lake.open_lake("s3://bench/lake", **so).release("r1").open(path)
            b_open, r_open = _COUNT["bytes"], _COUNT["requests"]
            with dask.config.set(scheduler="threads"):
                ours = opened.ophys.dff.isel(cell_specimen_id=0).values
            t_ours = time.perf_counter() - t0
            b_ours, r_ours = _COUNT["bytes"], _COUNT["requests"]
            np.testing.assert_array_equal(ours, base)

            print(f"one cell's dF/F ({len(ours)} frames)")
            print(f"  baseline (download NWB + h5py): {b_base / 2**20:9.2f} MiB  {t_base:6.2f} s")
            print(
                f"  abo_lake (open release + read): {b_ours / 2**20:9.2f} MiB  {t_ours:6.2f} s"
                f"  ({r_ours} GET requests; opening: {r_open} requests, "
                f"{b_open / 2**20:.2f} MiB of release record, manifest and index coords)"
            )
            print(
                f"  ratio baseline/ours: bytes {b_base / max(b_ours, 1):.1f}x, "
                f"time {t_base / max(t_ours, 1e-9):.1f}x"
            )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
