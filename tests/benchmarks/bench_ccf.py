"""Benchmark ``structure_mask`` with descendants on the 25 µm CCF grid (528 × 320 × 456).

Baseline: AllenSDK-style, one pass per structure (``mask |= annotation == sid`` for the
structure and every descendant id). Ours: :func:`abo_lake.ccf.structure_mask`, one sorted
lookup per 64³ dask chunk. Both give the same mask (checked). Run::

    python tests/benchmarks/bench_ccf.py [--src DIR] [--structure Isocortex ...]

``--src`` reuses a folder written by ``synthesize("ccf", DIR, scale="realistic")``; without
it the volumes are synthesised into a temporary folder first (~40 s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask
import numpy as np

from abo_lake import ccf
from abo_lake.sources import read
from abo_lake.synthetic import synthesize


def _best_of(n: int, func):
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _loop_mask(annotation: np.ndarray, ids: list[int]) -> np.ndarray:
    mask = np.zeros(annotation.shape, dtype=bool)
    for sid in ids:
        mask |= annotation == sid
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, help="folder with annotation_25.nrrd, structures.json")
    parser.add_argument("--structure", nargs="+", default=["VISp", "Isocortex", "grey"])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tmp = None
    src = args.src
    if src is None:
        tmp = tempfile.TemporaryDirectory()
        src = Path(tmp.name)
        t0 = time.perf_counter()
        synthesize("ccf", src, scale="realistic")
        print(f"synthesised the realistic CCF in {time.perf_counter() - t0:.1f} s")
    tree = read(src / "annotation_25.nrrd")["ccf/ccf_2017/annotation"]
    onto = ccf.Ontology(read(src / "structures.json")["ccf/ccf_2017/structures"])
    level = tree["25um"].to_dataset()
    annotation = level["annotation"].values
    ann = level.chunk({"ap": 64, "dv": 64, "lr": 64}).persist()  # as opened from the lake
    n_chunks = ann["annotation"].data.npartitions
    print(
        f"annotation {annotation.shape} uint32 ({annotation.nbytes / 2**20:.0f} MiB), "
        f"{n_chunks} chunks of 64³; {dask.system.CPU_COUNT} cores"
    )
    print(f"{'structure':<10} {'ids':>4} {'voxels':>10} {'loop s':>8} {'ours s':>8} "
          f"{'ours 1-thread s':>16} {'ratio':>7} {'ratio 1-thread':>15}")  # fmt: skip
    for acronym in args.structure:
        ids = onto.descendant_ids(acronym)
        base_t, base = _best_of(1, lambda ids=ids: _loop_mask(annotation, ids))
        ours_t, ours = _best_of(
            args.repeat,
            lambda a=acronym: ccf.structure_mask(ann, a, ontology=onto).values,
        )
        with dask.config.set(scheduler="synchronous"):
            one_t, _ = _best_of(
                args.repeat,
                lambda a=acronym: ccf.structure_mask(ann, a, ontology=onto).values,
            )
        if not np.array_equal(base, ours):
            raise SystemExit(f"{acronym}: the masks differ")
        print(
            f"{acronym:<10} {len(ids):>4} {int(ours.sum()):>10} {base_t:>8.2f} {ours_t:>8.3f} "
            f"{one_t:>16.3f} {base_t / ours_t:>6.1f}x {base_t / one_t:>14.1f}x"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
