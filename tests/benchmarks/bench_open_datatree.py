"""``Release.open_datatree`` vs ``Release.open`` on the realistic files, counted by a proxy
(issue 18).

The same setup as ``bench_cloud_reads.py`` (its ``prepare``: a moto S3 server on loopback,
the realistic Visual Behavior experiment and Neuropixels session synthesised, uploaded and
converted into an S3 lake; ``tests/faultproxy.py`` counting requests and bytes on the
client's connection). Three ways to reach a dataset, each in its own fresh worker process
(a cold run, then ``--repeat`` warm runs, each on a freshly opened lake):

``open``
    ``rel.open(path)``: the root group, read as stored (one task per pack).
``datatree``
    ``rel.open_datatree(path)``: every group (the raw copy's too), read as stored.
``datatree-before``
    What ``open_datatree`` did before it read as stored: ``xr.open_datatree(rel.store(path),
    engine="zarr", consolidated=True, chunks={}, zarr_format=3)`` (Zarr's path: one dask
    chunk and one request per stored chunk, index coordinates read one after another).

Then the whole of the main array through the opened object's root: all cells' dF/F
(ophys) or every unit's spike times (ecephys). Values are checked equal across the three
(SHA-256) before the table is printed.

Run::

    nice .venv/bin/python tests/benchmarks/bench_open_datatree.py [--scale realistic|tiny]
        [--repeat 5] [--kinds ophys,ecephys] [--work DIR]

Measured 2026-12-07 at eb7d53b (realistic scale, 5 warm runs, load 7 -> 2; "datatree-before"
is the former ``open_datatree``, run in the same process type)::

    ophys: ophys/experiment/1110928070 (read: all of 'dff')
    way               groups open req open MiB  open s open cpu cold req read req read MiB  read s
    open                   1        2     3.15    0.20    0.074        2       16    54.00    0.38
    datatree              77        2     3.15    0.46    0.218        2       16    54.00    0.43
    datatree-before       77        2     3.15    0.94    0.459        2      200    54.26    2.20

    ecephys: ecephys/session/715093703 (read: all of 'spike_times')
    way               groups open req open MiB  open s open cpu cold req read req read MiB  read s
    open                   1        2     1.12    0.17    0.079        2       40   111.44    1.36
    datatree              79        2     1.12    0.41    0.205        2       40   111.44    1.32
    datatree-before       79        2     1.12    0.67    0.555        2     2557   115.03   71.43
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for faultproxy
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_cloud_reads

WAYS = ("open", "datatree", "datatree-before")
MAIN = {"ophys": "dff", "ecephys": "spike_times"}
MIB = 2**20


def _opened(cfg: dict, kind: str, way: str) -> tuple[Any, int]:
    """The opened root Dataset and the number of groups (nodes) opened."""
    import xarray as xr

    import abo_lake

    rel = abo_lake.open_lake(cfg["lake_url"], **cfg["proxied"]).release(cfg["release"])
    path = cfg[kind]["path"]
    if way == "open":
        return rel.open(path), 1
    if way == "datatree":
        tree = rel.open_datatree(path)
    else:
        tree = xr.open_datatree(
            rel.store(path), engine="zarr", consolidated=True, chunks={}, zarr_format=3
        )
    return tree.to_dataset(), len(tree.groups)


def worker(cfg: dict) -> None:
    """One kind x way: a cold run, then ``repeat`` warm runs; marks on stdout."""

    def mark(label: str) -> None:
        print(f"@@mark {label}", flush=True)
        sys.stdin.readline()

    kind, way = cfg["kind"], cfg["way"]
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    digests: set[str] = set()
    groups = 0
    for run in ["cold"] + [f"warm{i}" for i in range(cfg["repeat"])]:
        mark(f"{run}.open:begin")
        t0, c0 = time.perf_counter(), time.process_time()
        ds, groups = _opened(cfg, kind, way)
        seconds[f"{run}.open"], cpu[f"{run}.open"] = (
            time.perf_counter() - t0,
            time.process_time() - c0,
        )
        mark(f"{run}.open:end")
        mark(f"{run}.read:begin")
        t0, c0 = time.perf_counter(), time.process_time()
        values = np.ascontiguousarray(ds[MAIN[kind]].values)
        seconds[f"{run}.read"], cpu[f"{run}.read"] = (
            time.perf_counter() - t0,
            time.process_time() - c0,
        )
        mark(f"{run}.read:end")
        digests.add(hashlib.sha256(values.tobytes()).hexdigest())
    print("@@result " + json.dumps({"seconds": seconds, "cpu": cpu, "digests": sorted(digests),
                                    "groups": groups}))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="realistic", choices=("tiny", "realistic"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", default="ophys,ecephys")
    parser.add_argument("--work", help="keep the synthesised NWB files here (default: temporary)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    args.kinds = args.kinds.split(",")
    import logging

    from bench_cloud_reads import CREDENTIALS, _free_port, prepare, provenance, run_worker
    from faultproxy import FaultProxy
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    load0 = os.getloadavg()
    problems = []
    with tempfile.TemporaryDirectory(prefix="abo-open-datatree-") as tmp_name:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        proxy = FaultProxy(moto_url, max_requests=10**7, timeout=120)
        try:
            cfg = prepare(args, Path(tmp_name), moto_url, f"abo-{uuid.uuid4().hex[:12]}")
            cfg.update(proxied={"endpoint_url": proxy.url, **CREDENTIALS}, repeat=args.repeat)
            for kind in args.kinds:
                rows = {
                    w: run_worker({**cfg, "kind": kind, "way": w}, proxy, __file__) for w in WAYS
                }
                seen = {w: r["digests"] for w, r in rows.items()}
                if len({d for ds in seen.values() for d in ds}) != 1:
                    problems.append(f"{kind}: values differ: {seen}")
                print(f"\n{kind}: {cfg[kind]['path']} (warm medians of {args.repeat}; "
                      f"read: all of {MAIN[kind]!r})")  # fmt: skip
                print(f"{'way':<17}{'groups':>7}{'open req':>9}{'open MiB':>9}{'open s':>8}"
                      f"{'open cpu':>9}{'cold req':>9}{'read req':>9}{'read MiB':>9}"
                      f"{'read s':>8}")  # fmt: skip
                for way, res in rows.items():
                    t = res["tally"]
                    warm = [k[: -len(".open")] for k in res["seconds"] if k.startswith("warm")
                            and k.endswith(".open")]  # fmt: skip
                    op_req = median(t[f"{w}.open"].requests for w in warm)
                    op_mib = median(t[f"{w}.open"].wire_bytes for w in warm) / MIB
                    op_s = median(res["seconds"][f"{w}.open"] for w in warm)
                    op_cpu = median(res["cpu"][f"{w}.open"] for w in warm)
                    rd_req = median(t[f"{w}.read"].requests for w in warm)
                    rd_mib = median(t[f"{w}.read"].wire_bytes for w in warm) / MIB
                    rd_s = median(res["seconds"][f"{w}.read"] for w in warm)
                    print(f"{way:<17}{res['groups']:>7}{op_req:>9.0f}{op_mib:>9.2f}{op_s:>8.2f}"
                          f"{op_cpu:>9.3f}{t['cold.open'].requests:>9}{rd_req:>9.0f}"
                          f"{rd_mib:>9.2f}{rd_s:>8.2f}")  # fmt: skip
        finally:
            proxy.stop()
            moto.stop()
    print("\n" + provenance(load0[0], f"scale {args.scale}"))
    for problem in problems:
        print("FAILED:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
