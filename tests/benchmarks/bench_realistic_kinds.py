"""Every source format at realistic scale: synthesize, convert (with the fidelity check),
publish and verify, timing each step. Catches what the tiny test sources cannot (the realistic
CCF set lost its 50 µm level and was never published, though every test passed). Two processes
synthesize the kinds while this one converts each kind once it is written, on one cluster for
every kind. Run::

    python tests/benchmarks/bench_realistic_kinds.py [--work DIR] [--kinds ccf vbo-ophys ...]

or ``make realistic``. Prints one line per format (files, MB, seconds to synthesize, convert
and verify, peak RSS of the conversion's workers is left to ``/usr/bin/time``) and exits 1 when
any release is not published or does not verify.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import abo_lake
from abo_lake import jobs
from abo_lake.synthetic import KINDS, synthesize

#: Synthesis order, on two processes: each kind is converted as soon as it is written, while
#: others are synthesized; the kinds quick to synthesize but slow to convert first, so the
#: conversions start at once, and the longest syntheses (vcn-ecephys, ccf, connectivity) on
#: both processes meanwhile.
ORDER = (
    "celltypes",
    "vbo-ophys",
    "vc2p-ophys",
    "vcn-ecephys",
    "connectivity",
    "ccf",
    "vbo-behavior",
    "glif",
)


def _size(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


def synthesize_kind(kind: str, work: Path) -> tuple[list[Path], float]:
    """Write one format's realistic sources into ``work/src/<kind>``; (files, seconds)."""
    t0 = time.perf_counter()
    files = synthesize(kind, work / "src" / kind, scale="realistic", seed=0)
    return files, time.perf_counter() - t0


def convert_kind(
    kind: str, files: list[Path], t_synth: float, work: Path, scheduler: str
) -> tuple[bool, str]:
    """Convert and verify one format's sources on the cluster at ``scheduler``; (ok, line)."""
    src, lake_dir = work / "src" / kind, work / "lakes" / kind
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake = abo_lake.open_lake(str(lake_dir))
    t0 = time.perf_counter()
    report = jobs.run([src], lake, "realistic", scheduler=scheduler, progress=False)
    t_convert = time.perf_counter() - t0
    if not report.published:
        return False, f"{kind:14} NOT PUBLISHED\n{report.summary()}"
    t0 = time.perf_counter()
    verified = lake.verify("realistic")
    t_verify = time.perf_counter() - t0
    ok = not (verified.missing or verified.corrupt)
    line = (
        f"{kind:14} {len(files):4} files {_size(files):9.1f} MB  synth {t_synth:6.1f} s  "
        f"convert {t_convert:6.1f} s  verify {t_verify:5.1f} s  "
        f"{len(lake.release('realistic').datasets()):4} datasets  "
        + ("verified" if ok else f"VERIFY FAILED: {verified}")
    )
    return ok, line


@contextlib.contextmanager
def _cluster(workers: int) -> Iterator[str]:
    """One LocalCluster for every kind, started as ``jobs.run`` starts its own; its address."""
    import distributed

    with jobs.worker_malloc():
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    with cluster:
        yield cluster.scheduler_address


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep sources and lakes here (default: temp)")
    parser.add_argument("--kinds", nargs="+", default=sorted(KINDS), choices=sorted(KINDS))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = args.work or Path(tmp.name)
    kinds = sorted(args.kinds, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
    t0 = time.perf_counter()
    failed = []
    # two processes write the sources while this one converts each kind once it is written
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as synth, _cluster(args.workers) as scheduler:
        written = {synth.submit(synthesize_kind, kind, work): kind for kind in kinds}
        for future in as_completed(written):
            kind = written[future]
            ok, line = convert_kind(kind, *future.result(), work, scheduler)
            print(line, flush=True)
            if not ok:
                failed.append(kind)
    print(f"every kind at realistic scale: {time.perf_counter() - t0:.0f} s", end="")
    print(f"; FAILED: {', '.join(failed)}" if failed else "; all published and verified")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
