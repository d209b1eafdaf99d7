"""Benchmark: the cost of checked reads (issue 17), same run, same data.

Synthesizes a realistic Visual Behavior 2P experiment (``synthesize("vbo-ophys",
scale="realistic")``), writes its dataset twice into one local-folder lake (a folder, so the
read is decode-bound and the check's cost is not hidden by network time):

- ``unchecked``: the codec chain before issue 17 (Blosc only), ``WriteOptions(checksum=False)``;
- ``checked``: today's default chain (Blosc, then ``crc32c``), checked by the lake's store
  and again by zarr's codec.

Then reads all of dF/F (``rel.open(path)["dff"].values``) from each, interleaved, several
times, and prints the median seconds and the ratio checked / unchecked; also ``verify=True``
(sha256 of every chunk object) and plain zarr's codec path (``chunks={}``). Run:
``python tests/benchmarks/bench_checked_reads.py [--scale tiny|realistic] [--repeat 7]``.

Measured 2026-12-07 on the shared 2-core machine (others' tests running; wall times noisy,
CPU seconds of this process steadier), realistic VB file, 35 dF/F chunks, 53.8 MiB stored,
median of 9: unchecked 1.633 s wall / 0.290 s CPU; checked 1.084x wall / 0.944x CPU;
verify=True 0.887x wall / 1.060x CPU; zarr's codec path checked 1.226x CPU (the CRC computed
by the store and again by zarr's codec). The checks alone: crc32c 12.4 ms, sha256 113.4 ms.
Earlier runs of the same script: checked/unchecked wall 0.98, 1.14, 1.21.
On the idle machine (load 0.4), median of 15: unchecked 0.177 s wall / 0.197 s CPU; checked
1.010x wall / 0.984x CPU; verify=True 1.082x / 1.230x; zarr's codec path checked 1.174x wall /
1.010x CPU; crc32c alone 4.9 ms (2.8% of the read), sha256 36.3 ms (20.5%).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dask
import numpy as np

import abo_lake
from abo_lake import cas, sources
from abo_lake.stores import crc_ok
from abo_lake.synthetic import synthesize
from abo_lake.writer import WriteOptions, write_dataset


def _timed(read) -> float:
    t0 = time.perf_counter()
    read()
    return time.perf_counter() - t0


def _cpu(read) -> float:
    """CPU seconds of this process (all threads): less disturbed by other processes."""
    t0 = time.process_time()
    read()
    return time.process_time() - t0


def main() -> None:
    """Run the benchmark and print medians and ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="realistic", choices=["tiny", "realistic"])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (nwb,) = synthesize("vbo-ophys", Path(tmp) / "src", scale=args.scale, seed=0)
        (path, ds) = next(iter(sources.read(nwb).items()))
        print(f"{nwb.name}: {nwb.stat().st_size / 2**20:.1f} MiB, dff {ds['dff'].shape}")
        lake = abo_lake.open_lake(str(Path(tmp) / "lake"))
        with dask.config.set(scheduler="threads"):
            for name, options in [
                ("unchecked", WriteOptions(checksum=False)),
                ("checked", WriteOptions()),
            ]:
                written = write_dataset(lake.storage, ds, options=options)
                with lake.stage(name) as stage:
                    stage.add(path, lake.put_manifest(written.manifest), kind="ophys_experiment")
            unchecked, checked = lake.release("unchecked"), lake.release("checked")
            ref = unchecked.open(path)["dff"].values
            np.testing.assert_array_equal(checked.open(path)["dff"].values, ref)
            mib = unchecked.open(path)["dff"].nbytes / 2**20
            runs = {
                "unchecked (Blosc)": lambda: unchecked.open(path)["dff"].values,
                "checked (Blosc + crc32c)": lambda: checked.open(path)["dff"].values,
                "checked, verify=True (+ sha256)": lambda: (
                    checked.open(path, verify=True)["dff"].values
                ),
                "unchecked, zarr's codec path": lambda: (
                    unchecked.open(path, chunks={})["dff"].values
                ),
                "checked, zarr's codec path": lambda: checked.open(path, chunks={})["dff"].values,
            }
            times: dict[str, list[float]] = {k: [] for k in runs}
            cpu: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(args.repeat):
                for name, read in runs.items():
                    times[name].append(_timed(read))
                    cpu[name].append(_cpu(read))
            # the checks alone, on the stored bytes of dF/F (no scheduler noise)
            manifest = checked.manifest(path)
            stored = [
                lake.storage.read(cas.key_of(h))
                for k, h in manifest.chunks.items()
                if k.startswith("dff/")
            ]
            crc = min(_timed(lambda: [crc_ok(b) for b in stored]) for _ in range(5))
            sha = min(_timed(lambda: [cas.digest(b) for b in stored]) for _ in range(5))
    base = statistics.median(times["unchecked (Blosc)"])
    zbase = statistics.median(times["unchecked, zarr's codec path"])
    cbase = statistics.median(cpu["unchecked (Blosc)"])
    czbase = statistics.median(cpu["unchecked, zarr's codec path"])
    print(f"all of dF/F ({mib:.0f} MiB decoded), median of {args.repeat}, interleaved:")
    print(f"  {'':34s} {'wall':>7s}   {'ratio':>5s}   {'CPU':>7s}   {'ratio':>5s}")
    for name, ts in times.items():
        med, c = statistics.median(ts), statistics.median(cpu[name])
        ref_t, ref_c = (zbase, czbase) if "zarr" in name else (base, cbase)
        print(f"  {name:34s} {med:7.3f} s {med / ref_t:5.3f}   {c:7.3f} s {c / ref_c:5.3f}")
    mb = sum(map(len, stored)) / 2**20
    print(f"the checks alone over the {len(stored)} stored dF/F chunks ({mb:.1f} MiB):")
    print(f"  crc32c {crc * 1e3:7.1f} ms = {crc / base:6.1%} of the unchecked read")
    print(f"  sha256 {sha * 1e3:7.1f} ms = {sha / base:6.1%} of the unchecked read")


if __name__ == "__main__":
    main()
