"""Electrophysiology features of N specimens on a dask.distributed LocalCluster: 1 vs 2 workers.

Synthesises N specimens (``synthetic.celltypes`` scale ``features``: 10 Long Squares and a Ramp
of 1.8 s at 200 kHz), then computes each specimen's ``ephys_features`` row
(:func:`abo_lake.ephys_features.ephys_features_table`, what a conversion task computes) as one
task per specimen on a real ``distributed.LocalCluster`` of 1 and of 2 worker processes (one
thread each), and prints both times, their ratio and that the tables are equal::

    nice .venv/bin/python tests/benchmarks/bench_ephys_features.py [--n 6]

Measured 2026-12-07, N=6 (sweeps of 1.2 s then; the scale now has 0.7 s), on 2 cores shared
with six other engineers' test runs (load average 16-18, so each worker got a small and varying
share of a core): synthesis 33 s; 1 worker 225.7 s (37.6 s per specimen), 2 workers 257.1 s
(42.9 s per specimen), ratio 0.88, tables equal, 6 of 6 specimens with features. On that load
the ratio measures the other jobs, not the cluster; one specimen alone took 5.0-6.3 s in one
process on a quieter machine (``cell_features``: 11 sweep reads of ~0.35 s from gzip NWB and
eFEL peak detection ~0.4 s per sweep dominate), so two idle cores should approach a ratio of 2.
Measured again on the idle machine (load 0.4), N=6, 0.7 s sweeps: synthesis 4.7 s; 1 worker
32.0 s (5.34 s each), 2 workers 19.7 s (3.28 s each), ratio 1.63, tables equal, 6 of 6.
After the sweep QC (features from QC-passed sweeps; the scale's sweeps retimed to 1.8 s with
the step at 0.6 s so IPFX's QC epochs are clear of it), N=6, with the full test suite and
another engineer's tests running beside it (load 6-8): synthesis 23.6 s; 1 worker 94.7 s
(15.8 s each), 2 workers 90.2 s (15.0 s each), ratio 1.05, tables equal, 6 of 6 with
features. The ratio again measures the other jobs; the idle-machine figure is to be re-taken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def features_of(path: str) -> pd.DataFrame:
    """One specimen's ``ephys_features`` row, read from its source NWB (runs on a worker)."""
    from abo_lake import ephys_features
    from abo_lake.sources import celltypes as reader

    (ds,) = reader.read(path).values()
    return ephys_features.ephys_features_table(ds)


def on_cluster(paths: list[str], workers: int) -> tuple[float, pd.DataFrame]:
    """Seconds to compute every row on a fresh LocalCluster of ``workers`` processes."""
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.submit(sum, [1]).result()  # workers up before the clock starts
        t0 = time.perf_counter()
        rows = client.gather(client.map(features_of, paths, pure=False))
        seconds = time.perf_counter() - t0
    return seconds, pd.concat(rows).sort_index()


def main() -> None:
    from abo_lake.synthetic import celltypes as synth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6, help="number of specimens")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        written = synth.write(tmp, scale="features", seed=7, n_specimens=args.n)
        paths = [str(p) for p in written if p.name == "ephys.nwb"]
        print(f"synthesised {args.n} specimens in {time.perf_counter() - t0:.1f} s")
        one, table_one = on_cluster(paths, 1)
        two, table_two = on_cluster(paths, 2)
    pd.testing.assert_frame_equal(table_one, table_two)
    print(f"features, {args.n} specimens, 1 worker : {one:.1f} s ({one / args.n:.2f} s each)")
    print(f"features, {args.n} specimens, 2 workers: {two:.1f} s ({two / args.n:.2f} s each)")
    print(f"ratio 1 worker / 2 workers: {one / two:.2f} (tables equal)")
    computed = int((table_one["feature_error"] == "").sum())
    print(f"specimens with features: {computed} of {args.n}")


if __name__ == "__main__":
    main()
