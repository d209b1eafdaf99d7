"""Visual Behavior presentations annotated with licks, rewards, running and engagement, and
AllenSDK's performance metrics: the lake beside AllenSDK 2.16.2 + the tutorials' package, on one
realistic-scale behavior session (1 h of change detection), in one run.

The script synthesises the session (``abo_lake.synthetic.vbo_behavior``, scale "realistic"),
converts it into a local lake, then in a fresh process of the project's Python times FROM THE
LAKE (open the release and the session, compute) ``.ophys.annotated_stimulus_presentations()``
and ``.ophys.get_performance_metrics()``; and in a fresh process of AllenSDK's Python
(``tests/reference/vb_alignment_allensdk.py measure``) AllenSDK's ``BehaviorSession.from_nwb_path``
(load, timed apart), ``brain_observatory_utilities`` 0.5.1's ``add_licks/rewards/
mean_running_speed/time_from_last_*`` with AllenSDK's engagement rule, and
``get_performance_metrics()``. Peak RSS is each process's VmHWM. The results must agree (lick
count, sums of mean running speed and time from the last lick, engaged presentations, mean d′).
Run::

    python tests/benchmarks/bench_vb_alignment.py [--work DIR] [--allensdk PYTHON]

Measured (2 shared cores under a load average of ~20 from other jobs, so absolute times are
inflated; 2026-12-07): 1 h session, 4,800 presentations, 441 trials, 959 licks. Annotation
6.0 s (lake) vs 29.8 s (AllenSDK + tutorials' package): 4.9x; performance metrics 1.9 s vs
11.4 s: 6.0x; open 0.9 s vs AllenSDK's NWB load 43.7 s; peak RSS 253 MB vs 514 MB; every
compared result equal. Again through ``_measure`` (each side in a fresh process; load average
~23; 2026-12-07 09:01 UTC): load/open 0.94 s vs 26.3 s, annotation 4.40 s vs 18.5 s (4.2x),
metrics 1.11 s vs 9.31 s (8.4x); end to end 6.45 s vs 54.1 s (8.4x), CPU 0.77 s vs 6.19 s
(8.1x less); peak RSS 262 MB vs 515 MB; results equal.

AllenSDK's side needs ``PYTHONPATH`` to hold brain_observatory_utilities (see the reference
script); without AllenSDK's Python only the lake's side runs. Exits 1 when a result differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Clock, row, run_callable, run_script

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "vb_alignment_allensdk.py"
ALLENSDK_PYTHON = "/tmp/allensdk-venv/bin/python"
RELEASE = "bench"
COMPARED = ("presentations", "trials", "lick_count", "mean_running_speed_sum",
            "time_from_last_lick_sum", "engaged", "mean_dprime")  # fmt: skip
PHASES = ("load", "annotate", "metrics")


def lake_side(lake_url: str) -> dict:
    """The lake's side (run in a fresh process): open the release and the session (``load``),
    ``annotated_stimulus_presentations()`` (``annotate``), ``get_performance_metrics()``
    (``metrics``)."""
    import numpy as np

    import abo_lake.accessors  # noqa: F401
    from abo_lake.lake import open_lake

    clock = Clock()
    rel = open_lake(lake_url).release(RELEASE)
    (path,) = rel.datasets("behavior/session/")
    acc = rel.open(path).ophys
    clock.lap("load")
    table = acc.annotated_stimulus_presentations()
    clock.lap("annotate")
    metrics = acc.get_performance_metrics()
    clock.lap("metrics")
    return clock.report(
        presentations=len(table),
        trials=int(acc._ds.sizes["trials_id"]),
        lick_count=int(sum(map(len, table["licks"]))),
        mean_running_speed_sum=float(np.nansum(table["mean_running_speed"])),
        time_from_last_lick_sum=float(np.nansum(table["time_from_last_lick"])),
        engaged=int(table["engaged"].sum()),
        mean_dprime=float(metrics["mean_dprime"]),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--allensdk", default=ALLENSDK_PYTHON)
    args = parser.parse_args()

    from abo_lake import jobs
    from abo_lake.lake import open_lake
    from abo_lake.synthetic import vbo_behavior

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_vb_alignment_"))
    sources = work / "sources"
    files = sorted(sources.glob("behavior_session_*.nwb"))
    if not files:
        t = time.perf_counter()
        files = vbo_behavior.write(sources, scale="realistic", seed=0)
        print(f"synthesised {files[0].name} ({files[0].stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    lake = open_lake(str(work / "lake"))
    if RELEASE not in lake.releases():
        t = time.perf_counter()
        report = jobs.run([str(sources)], lake, RELEASE, workers=2, progress=False)
        if not report.published:
            print(report.summary())
            return 1
        print(f"converted and published in {time.perf_counter() - t:.1f} s")
    ours = run_callable(lake_side, work / "lake")
    if not Path(args.allensdk).exists():
        print(row("annotate + metrics", ours, phases=PHASES))
        print(f"no AllenSDK Python at {args.allensdk}: the lake's side only")
        return 0
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "/tmp/bou")}
    theirs = run_script(args.allensdk, REFERENCE, "measure", files[0], env=env)
    print(row("annotate + metrics", ours, theirs, phases=PHASES))
    differ = [
        k for k in COMPARED
        if not abs(ours[k] - theirs[k]) <= 1e-9 * max(1.0, abs(theirs[k]))
    ]  # fmt: skip
    if differ:
        print(f"results differ: {differ}")
        return 1
    print(f"results equal: {', '.join(COMPARED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
