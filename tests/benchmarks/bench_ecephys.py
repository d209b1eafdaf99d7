"""Benchmark: presentationwise_spike_counts, abo_lake vs AllenSDK's eager loop.

A session of realistic size built in the ``ecephys_session`` layout (600 units, ~20 M spikes in
4 MB chunks, 6,000 presentations: 600 drifting gratings, 150 flashes, 5,250 gabors at 0.25 s,
over ~3,500 s; ``ALLEN_DATA.md`` §10), 10 ms bins over −0.1…0.5 s. The baseline is AllenSDK's
``build_spike_histogram`` in NumPy: for each unit two
``searchsorted`` calls over every bin edge of every presentation, into a dense uint16 array.
Ours is the lazy dask array, computed with the threaded scheduler (full result, and a reduction
over presentations that never materialises the dense array). Prints time and peak traced memory.

Run: ``python tests/benchmarks/bench_ecephys.py``
"""

from __future__ import annotations

import time
import tracemalloc

import dask
import numpy as np
import xarray as xr

import abo_lake.accessors  # noqa: F401 (registers .ecephys)

N_UNITS = 600
N_PRESENTATIONS = 6_000
DURATION = 3_500.0
EDGES = np.arange(-0.1, 0.5001, 0.01)


def session(seed: int = 0) -> xr.Dataset:
    """A realistic-size session in the layout of abo_lake.sources.vcn_ecephys."""
    rng = np.random.default_rng(seed)
    rates = rng.lognormal(np.log(7.0), 0.8, N_UNITS).clip(0.1, 60.0)
    counts = rng.poisson(rates * DURATION)
    counts = (counts * 20e6 / counts.sum()).astype(np.int64)  # ~20 M spikes in all
    unit = np.repeat(np.arange(N_UNITS), counts)
    flat = rng.uniform(0.0, DURATION, unit.size)
    flat = flat[np.lexsort((flat, unit))]
    ends = np.cumsum(counts)
    # ALLEN_DATA §10's schedule: drifting gratings (3 s apart), flashes (2 s), gabors (0.25 s)
    dg = 10.0 + 3.0 * np.arange(600)
    flashes = dg[-1] + 5.0 + 2.0 * np.arange(150)
    gabors = flashes[-1] + 5.0 + 0.25 * np.arange(N_PRESENTATIONS - 750)
    starts = np.concatenate([dg, flashes, gabors])
    ds = xr.Dataset(
        {
            "spike_times": ("spike", dask.array.from_array(flat, chunks=524_288)),
            "spike_times_index": ("unit_id", ends),
            "stimulus_presentations.start_time": ("stimulus_presentation_id", starts),
            "stimulus_presentations.stop_time": ("stimulus_presentation_id", starts + 0.25),
        },
        coords={
            "unit_id": np.arange(N_UNITS) + 950_000_000,
            "stimulus_presentation_id": np.arange(N_PRESENTATIONS),
        },
        attrs={"abo_lake_kind": "ecephys_session"},
    )
    return ds


def allensdk(spikes: dict[int, np.ndarray], unit_ids: np.ndarray, starts: np.ndarray):
    """AllenSDK EcephysSession.presentationwise_spike_counts' build_spike_histogram."""
    domain = starts[:, None] + EDGES[None, :]
    out = np.zeros((starts.size, EDGES.size - 1, unit_ids.size), np.uint16)
    lo, hi = domain[:, :-1], domain[:, 1:]
    for ii, uid in enumerate(unit_ids):
        data = spikes[int(uid)]
        a = np.searchsorted(data, lo.flat)
        b = np.searchsorted(data, hi.flat, side="right")
        out[:, :, ii].flat = b - a
    return out


def measure(fn):
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    del result
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak


def main() -> None:
    ds = session()
    flat = ds["spike_times"].data.compute()
    ends = ds["spike_times_index"].values
    begins = np.r_[0, ends[:-1]]
    units = ds["unit_id"].values
    spikes = {int(u): flat[a:b] for u, a, b in zip(units, begins, ends)}  # AllenSDK's dict
    starts = ds["stimulus_presentations.start_time"].values
    print(f"{units.size} units, {flat.size:,} spikes, {starts.size:,} presentations, "
          f"{EDGES.size - 1} bins of 10 ms")  # fmt: skip

    base_t, base_m = measure(lambda: allensdk(spikes, units, starts))
    counts = ds.ecephys.presentationwise_spike_counts(bin_edges=EDGES, unit_ids=units)
    with dask.config.set(scheduler="threads"):
        ours_t, ours_m = measure(lambda: ds.ecephys.presentationwise_spike_counts(
            bin_edges=EDGES, unit_ids=units).values)  # fmt: skip
        red_t, red_m = measure(lambda: ds.ecephys.presentationwise_spike_counts(
            bin_edges=EDGES, unit_ids=units).sum("stimulus_presentation_id").values)  # fmt: skip
    ref = allensdk(spikes, units, starts)
    with dask.config.set(scheduler="threads"):
        assert np.array_equal(counts.values, ref), "results differ"
    print(
        f"graph: {counts.data.numblocks[2]} unit blocks, "
        f"{len(dict(counts.data.__dask_graph__()))} tasks"
    )
    print(f"baseline (AllenSDK loop, eager): {base_t:7.2f} s  peak {base_m / 2**20:8.1f} MiB")
    print(f"ours (dask, full result):        {ours_t:7.2f} s  peak {ours_m / 2**20:8.1f} MiB")
    print(f"ours (dask, sum over trials):    {red_t:7.2f} s  peak {red_m / 2**20:8.1f} MiB")
    print(f"ratio full:   {base_t / ours_t:5.2f}x faster, {base_m / ours_m:5.2f}x less memory")
    print(f"ratio reduce: {base_t / red_t:5.2f}x faster, {base_m / red_m:5.2f}x less memory")


if __name__ == "__main__":
    main()
