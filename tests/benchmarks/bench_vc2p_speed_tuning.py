"""Benchmark: VC2P speed tuning (``get_speed_tuning``), the lake beside AllenSDK, same file.

Writes a three_session_A experiment with the project's generator (``--scale small``: 6 cells,
57k frames; ``realistic``: 170 cells, one hour at 30 Hz), converts it into a local lake, then
measures in fresh processes:

- the lake: open the release's experiment (``open_s``) and compute
  ``vc2p_speed_tuning.speed_tuning(ds, binsize=800, seed=SEED)`` (``compute_s``, threaded);
- AllenSDK 2.16.2 (``/tmp/allensdk-venv/bin/python``, when present): ``BrainObservatoryNwbDataSet``
  with the dF/F traces and running speed its method loads (``load_s``, counted apart), then
  ``DriftingGratings(data_set).get_speed_tuning(800)`` after ``np.random.seed(SEED)``.

Each prints its CPU seconds and peak resident set size (``VmHWM``, interpreter and imports
included); the script prints the ratios and checks the results agree (``ptest``/``mod``
exactly, the binned arrays as a largest relative difference). Run::

    python tests/benchmarks/bench_vc2p_speed_tuning.py [--scale small|realistic] [--work DIR]

Measured 2026-12-07 on the shared 2-core machine under a load average of ~22 (wall times are
inflated several-fold; CPU seconds are steadier), ``--scale small`` (6 cells, 57k frames, 39
vis bins, 400 shuffles): lake open 0.3 s + compute 7.4 s (CPU 2.2 s), 358 MB; AllenSDK load
0.1 s, compute 18.7 s (CPU 4.9 s), 276 MB: 2.4x wall, 2.2x CPU, 0.8x memory (the lake's
process holds dask and xarray); binned arrays within 1.1e-7 relative, ptest/mod equal. The
realistic scale was not run (both sides do the same 400 full-length shuffles per cell; the
lake's gain is per-cell-chunk parallelism, not less arithmetic).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ALLENSDK_PYTHON = Path("/tmp/allensdk-venv/bin/python")
SEED, BINSIZE, GENERATOR_SEED = 20240611, 800, 11
ARRAYS = ("binned_dx_sp", "binned_cells_sp", "binned_dx_vis", "binned_cells_vis")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _save(out: str, arrays: dict, peak_run) -> None:
    import numpy as np

    cols = {f"peak_run/{c}": np.array([np.nan if v is None else float(v) for v in peak_run[c]])
            for c in peak_run.columns}  # fmt: skip
    np.savez(out, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}, **cols)


def measure_lake(lake_dir: str, out: str) -> dict:
    import abo_lake
    from abo_lake import vc2p_speed_tuning

    t0, c0 = time.perf_counter(), time.process_time()
    ds = abo_lake.open_lake(lake_dir).release("r1").open("ophys/experiment/1")
    t1 = time.perf_counter()
    got = vc2p_speed_tuning.speed_tuning(ds, binsize=BINSIZE, seed=SEED)
    t2, c2 = time.perf_counter(), time.process_time()
    _save(out, {k: getattr(got, k).values for k in ARRAYS}, got.peak_run)
    return {"open_s": t1 - t0, "compute_s": t2 - t1, "cpu_s": c2 - c0,
            "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def measure_allensdk(nwb: str, out: str) -> dict:
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    from allensdk.brain_observatory.drifting_gratings import DriftingGratings
    from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

    t0 = time.perf_counter()
    a = DriftingGratings(BrainObservatoryNwbDataSet(nwb))
    _ = a.dfftraces, a.dxcm, a.numbercells
    t1, c1 = time.perf_counter(), time.process_time()
    np.random.seed(SEED)  # noqa: NPY002 (AllenSDK's global RNG)
    *arrays, peak_run = a.get_speed_tuning(BINSIZE)
    t2, c2 = time.perf_counter(), time.process_time()
    _save(out, dict(zip(ARRAYS, arrays, strict=True)), peak_run)
    return {"load_s": t1 - t0, "compute_s": t2 - t1, "cpu_s": c2 - c1,
            "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def _run(python: Path | str, *args: str) -> dict:
    done = subprocess.run([str(python), __file__, *args], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _agreement(lake: Path, sdk: Path) -> str:
    import numpy as np

    a, b = np.load(lake), np.load(sdk)
    worst = 0.0
    for key in ARRAYS:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(a[key] - b[key]) / np.maximum(np.abs(b[key]), 1e-300)
        worst = max(worst, float(np.nanmax(rel)))
    exact = all(np.array_equal(a[k], b[k], equal_nan=True) for k in b.files
                if k.startswith(("peak_run/ptest", "peak_run/mod")))  # fmt: skip
    return f"binned max rel {worst:.1e}; ptest/mod {'equal' if exact else 'DIFFER'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["small", "realistic"])
    parser.add_argument("--work", default="/tmp/bench_vc2p_speed_tuning")
    args = parser.parse_args()
    work = Path(args.work) / args.scale
    work.mkdir(parents=True, exist_ok=True)
    import abo_lake
    from abo_lake import sources
    from abo_lake.synthetic import vc2p_ophys

    nwbs = sorted(work.glob("nwb/*.nwb")) or vc2p_ophys.write(
        work / "nwb", scale=args.scale, seed=GENERATOR_SEED, session_type="three_session_A"
    )
    lake_dir = work / "lake"
    if not lake_dir.exists():
        (ds,) = sources.read(nwbs[0]).values()
        with abo_lake.open_lake(str(lake_dir)).stage("r1") as stage:
            stage.write("ophys/experiment/1", ds)
    lake = _run(sys.executable, "lake", str(lake_dir), str(work / "lake.npz"))
    print(f"lake: open {lake['open_s']:.1f} s, compute {lake['compute_s']:.1f} s "
          f"(CPU {lake['cpu_s']:.1f} s), {lake['peak_rss_mb']:.0f} MB")  # fmt: skip
    if not ALLENSDK_PYTHON.exists():
        print(f"AllenSDK venv not found at {ALLENSDK_PYTHON}: only the lake's side ran")
        return
    sdk = _run(ALLENSDK_PYTHON, "allensdk", str(nwbs[0]), str(work / "allensdk.npz"))
    print(f"AllenSDK: load {sdk['load_s']:.1f} s, compute {sdk['compute_s']:.1f} s "
          f"(CPU {sdk['cpu_s']:.1f} s), {sdk['peak_rss_mb']:.0f} MB")  # fmt: skip
    wall = sdk["compute_s"] / (lake["open_s"] + lake["compute_s"])
    print(f"ratio AllenSDK compute / lake open+compute: {wall:.1f}x wall, "
          f"{sdk['cpu_s'] / lake['cpu_s']:.1f}x CPU, "
          f"{sdk['peak_rss_mb'] / lake['peak_rss_mb']:.1f}x memory; "
          f"{_agreement(work / 'lake.npz', work / 'allensdk.npz')}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("lake", "allensdk"):
        side = measure_lake if sys.argv[1] == "lake" else measure_allensdk
        print(json.dumps(side(*sys.argv[2:4])))
    else:
        main()
