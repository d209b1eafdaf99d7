"""Every source format at realistic scale: synthesize, convert (with the fidelity check),
publish and verify, timing each step. Catches what the tiny test sources cannot (the realistic
CCF set lost its 50 µm level and was never published, though every test passed). Run::

    python tests/benchmarks/bench_realistic_kinds.py [--work DIR] [--kinds ccf vbo-ophys ...]

or ``make realistic``. Prints one line per format (files, MB, seconds to synthesize, convert
and verify, peak RSS of the conversion's workers is left to ``/usr/bin/time``) and exits 1 when
any release is not published or does not verify.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import abo_lake
from abo_lake import jobs
from abo_lake.synthetic import KINDS, synthesize


def _size(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


def run_kind(kind: str, work: Path, workers: int) -> tuple[bool, str]:
    """Synthesize, convert and verify one format at realistic scale; (ok, report line)."""
    src, lake_dir = work / "src" / kind, work / "lakes" / kind
    shutil.rmtree(lake_dir, ignore_errors=True)
    t0 = time.perf_counter()
    files = synthesize(kind, src, scale="realistic", seed=0)
    t_synth = time.perf_counter() - t0
    lake = abo_lake.open_lake(str(lake_dir))
    t0 = time.perf_counter()
    report = jobs.run([src], lake, "realistic", workers=workers, progress=False)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep sources and lakes here (default: temp)")
    parser.add_argument("--kinds", nargs="+", default=sorted(KINDS), choices=sorted(KINDS))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = args.work or Path(tmp.name)
    t0 = time.perf_counter()
    failed = []
    for kind in args.kinds:
        ok, line = run_kind(kind, work, args.workers)
        print(line, flush=True)
        if not ok:
            failed.append(kind)
    print(f"every kind at realistic scale: {time.perf_counter() - t0:.0f} s", end="")
    print(f"; FAILED: {', '.join(failed)}" if failed else "; all published and verified")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
