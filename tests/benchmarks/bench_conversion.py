"""Conversion benchmarks (issue: conversion jobs). Prints numbers side by side, as ratios.

On realistic sources (Visual Behavior 2P and Visual Coding 2P NWB files from
``abo_lake.synthetic``):

1. **Per core**: ``jobs.convert_file`` in one process pinned to one CPU (its dask threads,
   zarr's and Blosc's share that CPU), into a fresh local lake, in MB/s of source
   file bytes, against the *ceiling* measured in the same run on the same file: h5py
   ``read_direct`` of every numeric HDF5 dataset over 1 MB in ~4 MB row blocks plus
   ``numcodecs.Blosc`` zstd L3 shuffle encoding of each block, on the same CPU, no lake.
   Ratio = ceiling seconds / our seconds (aim >= 0.7). Measured for the full conversion
   (curated + raw copy + fidelity check) and for the curated Dataset only
   (``raw=False, fidelity=False``), plus the pieces in between (hashing the source, raw copy
   without the fidelity check) to show where time goes. Each measurement runs in a fresh
   spawned process, which also gives its peak RSS, after an untimed conversion of a tiny file
   of the same kind: the steady state of a worker, which pays the first-use imports of dask,
   xarray, zarr and pandas once, not per file. When a ratio is below 0.7, one file is
   profiled (cProfile, synchronous dask scheduler, top lines by cumulative time).
2. **Peak memory per worker**: ``jobs.run`` on a ``distributed.LocalCluster`` of 1 and of 2
   worker processes (``threads_per_worker=1``) into fresh lakes; peak RSS of each worker
   (``VmHWM``) against the largest source file.
3. **Speed-up**: wall time of ``jobs.run`` with 1 worker over 2 workers on the same files,
   against the best speed-up the file sizes allow.
4. **Memory against file size**: peak RSS of a full ``convert_file`` (fresh process, one
   CPU) of two Visual Behavior files of ~290 and ~690 MB: streaming means the peak does not
   follow the file size.

Timings are best of ``--repeat`` runs (the machine is shared and noisy); the source files are
in the page cache (warm reads). Run::

    python tests/benchmarks/bench_conversion.py [--src DIR] [--repeat 2] [--no-profile]
                                                [--jobs-only | --per-core-only] [--no-pin]

``--src DIR`` caches the generated sources, so reruns skip generation (~40 s).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import multiprocessing
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

MB = 1e6
BLOCK_BYTES = 4 * 2**20
#: (kind, seed, writer options): 2 VBO MESO.1 experiments (~290 MB each) and 1 VC2P (~420 MB).
SOURCES = [("vbo-ophys", 0, {"n_experiments": 2}), ("vc2p-ophys", 0, {})]
#: Section 4: the same kind at two sizes. Rows 0-2 of the VBO table are Mesoscope (11 Hz,
#: ~290 MB files), row 3 a CAM2P session at 31 Hz (~690 MB).
MEMORY_SOURCES = [("vbo-ophys", 0, {"n_experiments": 4})]
#: Single-process variants: name -> convert_file keywords (None: hash the source only).
VARIANTS: dict[str, dict[str, bool] | None] = {
    "sha256": None,
    "curated": {"raw": False, "fidelity": False},
    "+raw": {"raw": True, "fidelity": False},
    "full": {"raw": True, "fidelity": True},
}
AIM = 0.7


def _sources(src: Path, which: list = SOURCES) -> list[Path]:
    """The realistic source files, generated once into ``src`` (a ``.done`` file marks a kind)."""
    from abo_lake.synthetic import synthesize

    files: list[Path] = []
    for kind, seed, options in which:
        suffix = "".join(f"-{k[0]}{v}" for k, v in options.items() if which is not SOURCES)
        folder = src / f"{kind}-s{seed}{suffix}"
        done = folder / ".done"
        if done.exists():
            files += [folder / name for name in json.loads(done.read_text())]
            continue
        t0 = time.perf_counter()
        written = synthesize(kind, folder, scale="realistic", seed=seed, **options)
        done.write_text(json.dumps([p.name for p in written]))
        print(
            f"  generated {kind} seed={seed}: {len(written)} files in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        files += written
    return sorted(files, key=lambda p: p.name)


def _one_cpu() -> None:
    """Pin this process (all its threads: dask's, zarr's event loop, Blosc's) to one CPU,
    so "per core" means one core (``--no-pin``: unpinned, convert_file's two dask threads)."""
    if hasattr(os, "sched_setaffinity") and not os.environ.get("ABO_BENCH_NO_PIN"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _maxrss_mb() -> float:
    """Peak resident set size of this process image.

    Linux's ``VmHWM`` starts afresh at ``execve``; ``getrusage``'s ``ru_maxrss`` (the fallback
    elsewhere) keeps the peak of the process it was forked from, so a spawned measurement
    process would report the parent's peak (e.g. after generating a source in memory).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def _numeric_datasets(path: Path) -> list[str]:
    """Numeric and boolean HDF5 datasets of more than 1 MB (10^6 bytes)."""
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if (
            isinstance(obj, h5py.Dataset)
            and obj.dtype.kind in "biuf"
            and obj.ndim > 0
            and obj.size * obj.dtype.itemsize > MB
        ):
            names.append(name)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return names


def ceiling(path: str) -> dict[str, Any]:
    """Read every big numeric dataset with h5py and Blosc-zstd encode it: no lake, one CPU.

    Also times, outside the ceiling, what an independent fidelity check cannot avoid on the
    same arrays: reading them from the source once more and decoding the encoded blocks.
    """
    import h5py
    import numcodecs
    import numpy as np

    _one_cpu()
    numcodecs.blosc.use_threads = False
    codec = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)
    names = _numeric_datasets(Path(path))
    seconds = read_again = decode = 0.0
    c0 = time.process_time()
    decoded = encoded = 0
    with h5py.File(path, "r") as f:
        for name in names:
            dset = f[name]
            row_bytes = max(1, dset.size // dset.shape[0] * dset.dtype.itemsize)
            rows = max(1, min(dset.shape[0], BLOCK_BYTES // row_bytes))
            buf = np.zeros((rows, *dset.shape[1:]), dtype=dset.dtype)  # pre-touched
            starts = range(0, dset.shape[0], rows)
            blocks = []
            t0 = time.perf_counter()
            for start in starts:
                n = min(rows, dset.shape[0] - start)
                dset.read_direct(buf, np.s_[start : start + n], np.s_[0:n])
                blocks.append(codec.encode(buf[:n]))
                decoded += buf[:n].nbytes
            seconds += time.perf_counter() - t0
            encoded += sum(len(b) for b in blocks)
            # the check's part, after the whole dataset (HDF5's chunk cache has moved on)
            for start, block in zip(starts, blocks):
                n = min(rows, dset.shape[0] - start)
                t1 = time.perf_counter()
                dset.read_direct(buf, np.s_[start : start + n], np.s_[0:n])
                t2 = time.perf_counter()
                codec.decode(block)
                read_again, decode = read_again + t2 - t1, decode + time.perf_counter() - t2
    return {
        "seconds": seconds,
        "cpu": (time.process_time() - c0) * seconds / (seconds + read_again + decode),
        "read_again": read_again,
        "decode": decode,
        "datasets": len(names),
        "decoded": decoded,
        "encoded": encoded,
        "rss": _maxrss_mb(),
    }


def _warmup_file(src: Path, path: Path) -> str:
    """A tiny file of ``path``'s kind (generated once under ``src/warmup``)."""
    from abo_lake import sources
    from abo_lake.synthetic import synthesize

    kind = sources.detect_format(path)
    folder = src / "warmup" / kind
    if not (folder / ".done").exists():
        written = synthesize(kind, folder, scale="tiny", seed=1)
        (folder / ".done").write_text(json.dumps([p.name for p in written]))
    return str(folder / json.loads((folder / ".done").read_text())[0])


def _warm_up(warmup: str, lake_dir: str, options: dict[str, bool]) -> None:
    """Convert a tiny file first, untimed: a worker's steady state (dask, xarray, zarr and
    pandas import parts of themselves at first use, once per process)."""
    from abo_lake import jobs

    target = lake_dir + "-warmup"
    shutil.rmtree(target, ignore_errors=True)  # else the ledger would skip the conversion
    res = jobs.convert_file(warmup, target, **options)
    if res.error:
        raise RuntimeError(f"warm-up {warmup}: {res.error}")


def convert_once(
    path: str, lake_dir: str, options: dict[str, bool] | None, warmup: str
) -> dict[str, Any]:
    """``convert_file`` into a fresh local lake, on one CPU, after a warm-up conversion
    (``None``: sha256 only)."""

    from abo_lake import jobs

    _one_cpu()
    if options is None:
        t0, c0 = time.perf_counter(), time.process_time()
        jobs._sha256_file(path)
        return {
            "seconds": time.perf_counter() - t0,
            "cpu": time.process_time() - c0,
            "rss": _maxrss_mb(),
            "error": "",
            "new_objects": 0,
        }
    import abo_lake

    _warm_up(warmup, lake_dir, options)
    lake = abo_lake.open_lake(lake_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    # convert_file streams on dask threads (two outside a worker); pinned, they share one CPU
    res = jobs.convert_file(path, lake.url, **options)
    return {
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "rss": _maxrss_mb(),
        "error": res.error,
        "new_objects": res.new_objects,
    }


def profile_once(path: str, lake_dir: str, top: int = 14) -> str:
    """cProfile of a full conversion (hash + ``jobs._convert``) on the synchronous scheduler.

    ``convert_file`` forces the threaded scheduler, whose work cProfile cannot see, so this
    calls its two steps directly (same code, same order).
    """
    import dask

    import abo_lake
    from abo_lake import jobs, sources

    lake = abo_lake.open_lake(lake_dir)
    prof = cProfile.Profile()
    prof.enable()
    with dask.config.set(scheduler="synchronous"):
        result = jobs.FileResult(source=path)
        result.source_sha256 = jobs._sha256_file(path)
        result.format = sources.detect_format(path)
        jobs._convert(path, lake.storage, lake, result, raw=True, fidelity=True)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    out.write("\n-- by own time --\n")
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _fresh(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func(*args)`` in a freshly spawned process (clean heap, its own peak RSS)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(func, *args).result()


def _note(message: str) -> None:
    """Progress on stderr, so a long run is not silent (the table goes to stdout)."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["seconds"])


def _worker_stats() -> dict[str, float]:
    return {"peak": _maxrss_mb(), "cpu": time.process_time()}


def job(files: list[Path], workers: int, lake_dir: str) -> dict[str, Any]:
    """``jobs.run`` on our own LocalCluster (so its workers can be asked for their peak RSS),
    started as ``jobs.run`` starts one (:func:`abo_lake.jobs.worker_malloc`)."""
    import distributed

    import abo_lake
    from abo_lake import jobs

    lake = abo_lake.open_lake(lake_dir)
    _note(f"jobs.run, {workers} worker(s), load average {os.getloadavg()[0]:.1f}")
    load = os.getloadavg()[0]
    with jobs.worker_malloc():  # as jobs.run starts its own workers
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    with cluster, distributed.Client(cluster) as client:
        start = client.run(_worker_stats)
        report = jobs.run(
            [str(f) for f in files],
            lake,
            "bench",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
        end = client.run(_worker_stats)
    if report.failures:
        raise RuntimeError(report.summary())
    return {
        "seconds": report.seconds,
        "published": report.published,
        "load": load,
        "start_rss": sorted(v["peak"] for v in start.values()),
        "peak_rss": sorted(v["peak"] for v in end.values()),
        "cores": sum(end[w]["cpu"] - start[w]["cpu"] for w in end) / report.seconds,
        "per_file": {Path(f.source).name: f.seconds for f in report.files},
    }


def _ideal_speedup(seconds: list[float], workers: int = 2) -> float:
    """Speed-up with perfect scaling, limited only by how the files split over the workers:
    each file, largest first (as ``jobs.run`` submits them), to the first free worker."""
    order = sorted(seconds, reverse=True)
    loads = [0.0] * workers
    for s in order:
        loads[loads.index(min(loads))] += s
    return sum(seconds) / max(loads)


def per_core(
    files: list[Path],
    repeat: int,
    profile: bool,
    fresh_lake: Callable[[], str],
    warmups: dict[str, str],
) -> float:
    """Section 1: one-core conversion against the ceiling; returns the full conversion s."""
    sizes = {f.name: f.stat().st_size for f in files}
    # 1. per core -----------------------------------------------------------------------
    print(
        "\n1. one core: convert_file pinned to one CPU vs ceiling (h5py read_direct + "
        "Blosc zstd L3 shuffle, 1 thread, no lake)"
    )
    print(
        f"   MB/s are source file MB per wall second; ratio = ceiling s / ours s "
        f"(aim >= {AIM}); best of {repeat}"
    )
    per_file: dict[str, dict[str, dict[str, Any]]] = {}
    for f in files:
        rows = per_file[f.name] = {}
        _note(f"{f.name}: ceiling")
        rows["ceiling"] = _best([_fresh(ceiling, str(f)) for _ in range(repeat)])
        for name, options in VARIANTS.items():
            _note(f"{f.name}: {name}")
            runs = [
                _fresh(convert_once, str(f), fresh_lake(), options, warmups[f.name])
                for _ in range(repeat)
            ]
            if any(r["error"] for r in runs):
                raise RuntimeError(f"{f.name} {name}: {runs[0]['error'] or runs[-1]['error']}")
            rows[name] = _best(runs)
    head = (
        f"   {'file':42s} {'MB':>6s} {'what':>8s} {'s':>7s} {'MB/s':>7s} "
        f"{'ratio':>6s} {'cpu/wall':>8s} {'peak RSS MB':>11s}"
    )
    print(head)
    for f in files:
        rows = per_file[f.name]
        ceil_s = rows["ceiling"]["seconds"]
        for name, r in rows.items():
            ratio = "" if name == "ceiling" else f"{ceil_s / r['seconds']:6.2f}"
            label = f.name if name == "ceiling" else ""
            print(
                f"   {label:42s} {sizes[f.name] / MB:6.0f} {name:>8s} {r['seconds']:7.2f} "
                f"{sizes[f.name] / MB / r['seconds']:7.1f} {ratio:>6s} "
                f"{r['cpu'] / r['seconds']:8.2f} {r['rss']:11.0f}"
            )
        c = rows["ceiling"]
        print(
            f"   {'':42s} ceiling covers {c['datasets']} datasets, "
            f"{c['decoded'] / MB:.0f} MB decoded -> {c['encoded'] / MB:.0f} MB Blosc"
        )
    total = sum(sizes.values())

    def summed(variant: str, field: str = "seconds") -> float:
        return sum(per_file[n][variant][field] for n in sizes)

    t_ceil = summed("ceiling")
    print("   all files:")
    for name in ["ceiling", *VARIANTS]:
        t = summed(name)
        ratio = "" if name == "ceiling" else f"ratio {t_ceil / t:.2f}"
        print(f"     {name:>8s} {t:7.2f} s {total / MB / t:7.1f} MB/s  {ratio}")
    t_hash, t_cur, t_raw, t_full = (summed(v) for v in ("sha256", "curated", "+raw", "full"))
    print(
        f"   where the full conversion's {t_full:.1f} s go (differences of the variants): "
        f"hash {t_hash:.1f} s, curated {t_cur - t_hash:.1f} s, raw copy "
        f"{t_raw - t_cur:.1f} s, fidelity check {t_full - t_raw:.1f} s"
    )
    t_again, t_decode = summed("ceiling", "read_again"), summed("ceiling", "decode")
    print(
        f"   best a full conversion can do with zero overhead: ceiling {t_ceil:.1f} s + hash "
        f"{t_hash:.1f} s + the check's second source read {t_again:.1f} s + lake decode "
        f"{t_decode:.1f} s -> ratio {t_ceil / (t_ceil + t_hash + t_again + t_decode):.2f} "
        f"(ours {t_ceil / t_full:.2f})"
    )

    worst = min(
        files,
        key=lambda f: per_file[f.name]["ceiling"]["seconds"] / per_file[f.name]["full"]["seconds"],
    )
    worst_ratio = (
        per_file[worst.name]["ceiling"]["seconds"] / per_file[worst.name]["full"]["seconds"]
    )
    if profile and worst_ratio < AIM:
        print(
            f"\n   profile of the full conversion of {worst.name} (ratio {worst_ratio:.2f}; "
            "synchronous scheduler, cProfile):"
        )
        text = _fresh(profile_once, str(worst), fresh_lake())
        print("\n".join("     " + line for line in text.splitlines() if line.strip()))
    return t_full


def full_once(path: str, lake_dir: str, warmup: str) -> dict[str, Any]:
    """A full ``convert_file`` on one CPU in this (fresh) process, after a warm-up conversion:
    seconds and peak RSS."""
    _one_cpu()
    from abo_lake import jobs

    _warm_up(warmup, lake_dir, {})
    t0 = time.perf_counter()
    res = jobs.convert_file(path, lake_dir)
    return {"seconds": time.perf_counter() - t0, "rss": _maxrss_mb(), "error": res.error}


def memory_section(src: Path, fresh_lake: Callable[[], str]) -> None:
    """Section 4: peak RSS of full conversions of the same kind at two file sizes."""
    files = _sources(src, MEMORY_SOURCES)
    by_size = sorted(files, key=lambda f: f.stat().st_size)
    small, big = by_size[0], by_size[-1]
    print("\n4. memory against file size: full convert_file in a fresh process, one CPU")
    rows = {}
    for f in (small, big):
        _note(f"{f.name}: full, for peak RSS")
        r = rows[f] = _fresh(full_once, str(f), fresh_lake(), _warmup_file(src, f))
        if r["error"]:
            raise RuntimeError(f"{f.name}: {r['error']}")
        print(
            f"   {f.name:42s} {f.stat().st_size / MB:6.0f} MB  {r['seconds']:6.1f} s  "
            f"peak RSS {r['rss']:5.0f} MB"
        )
    grow = (rows[big]["rss"] - rows[small]["rss"]) / (
        (big.stat().st_size - small.stat().st_size) / MB
    )
    print(
        f"   peak RSS grows by {grow:.2f} MB per MB of source between them "
        "(1 or more if memory followed file size; about 0 if bounded)"
    )


def jobs_section(
    files: list[Path], repeat: int, fresh_lake: Callable[[], str], t_full: float | None
) -> None:
    """Sections 2 and 3: jobs.run on LocalClusters of 1 and 2 workers."""
    sizes = {f.name: f.stat().st_size for f in files}
    total = sum(sizes.values())
    # 2 + 3. jobs on a LocalCluster -----------------------------------------------------
    print(
        f"\n2./3. jobs.run on a LocalCluster ({len(files)} files, "
        f"{total / MB:.0f} MB; fresh lake each run; best of {repeat})"
    )
    jobs_out = {}
    for workers in (1, 2):
        jobs_out[workers] = _best([job(files, workers, fresh_lake()) for _ in range(repeat)])
    largest = max(sizes.values()) / MB
    for workers, r in jobs_out.items():
        peaks = ", ".join(f"{p:.0f}" for p in r["peak_rss"])
        starts = ", ".join(f"{p:.0f}" for p in r["start_rss"])
        print(
            f"   workers={workers}: {r['seconds']:6.1f} s  {total / MB / r['seconds']:6.1f} "
            f"MB/s  peak RSS per worker {peaks} MB (idle {starts} MB); "
            f"largest source {largest:.0f} MB -> peak/largest "
            f"{max(r['peak_rss']) / largest:.2f}; cores used (worker CPU s / wall s) "
            f"{r['cores']:.2f}; load average before {r['load']:.1f}"
        )
    one = jobs_out[1]
    ideal = _ideal_speedup(list(one["per_file"].values()))
    speedup = one["seconds"] / jobs_out[2]["seconds"]
    print(
        f"   speed-up 2 workers over 1: {speedup:.2f}x; ideal for these file times, largest "
        f"first (as run submits them): {ideal:.2f}x (efficiency {speedup / ideal:.2f})"
    )
    if t_full is not None:
        print(
            f"   workers=1 job vs the same files converted in one process (section 1, full): "
            f"{one['seconds']:.1f} s vs {t_full:.1f} s"
        )
    for workers, r in jobs_out.items():
        print(
            f"   per-file seconds with {workers} worker(s): "
            + ", ".join(f"{n} {s:.1f}" for n, s in r["per_file"].items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, help="folder caching the generated sources")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (best kept)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile section")
    parser.add_argument("--jobs-only", action="store_true", help="only sections 2 and 3")
    parser.add_argument("--per-core-only", action="store_true", help="only section 1")
    parser.add_argument("--no-pin", action="store_true", help="section 1 not pinned to one CPU")
    args = parser.parse_args()
    if args.no_pin:
        os.environ["ABO_BENCH_NO_PIN"] = "1"  # inherited by the spawned processes
    logging.getLogger("distributed").setLevel(logging.ERROR)
    t_start = time.perf_counter()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)")

    with tempfile.TemporaryDirectory(prefix="bench-conv-") as tmp:
        src = args.src or Path(tmp) / "src"
        files = _sources(src)
        work = Path(tmp) / "lakes"

        def fresh_lake() -> str:
            if work.exists():
                shutil.rmtree(work)
            return str(work)

        t_full = (
            None
            if args.jobs_only
            else per_core(
                files,
                args.repeat,
                not args.no_profile,
                fresh_lake,
                {f.name: _warmup_file(src, f) for f in files},
            )
        )

        if not args.per_core_only:
            jobs_section(files, args.repeat, fresh_lake, t_full)
            memory_section(src, fresh_lake)

    print(
        f"\nload average at end: {os.getloadavg()[0]:.2f}; "
        f"benchmark took {time.perf_counter() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
