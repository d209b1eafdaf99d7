"""Lazy, chunk-aware analysis of Visual Coding Neuropixels Datasets, with AllenSDK's semantics.

Pure functions over the Datasets of :mod:`abo_lake.sources.vcn_ecephys` (kinds
``ecephys_session``, ``ecephys_lfp`` and ``ecephys_csd``); the ``.ecephys`` accessor delegates
here. Names, dims, dtypes and formulas follow AllenSDK's ``EcephysSession`` and its
``stimulus_analysis`` package (``ALLEN_DATA.md`` §1).

Spike times are one flat ``spike_times`` array (dim ``spike``) plus ``spike_times_index`` end
offsets along ``unit_id``. Spike counting never builds one Python list per unit: units are
grouped into blocks aligned to the chunks of ``spike_times``, one dask task per block, and each
unit is counted with one vectorised ``np.searchsorted`` over every bin edge of every
presentation. Building a result reads only small metadata (``spike_times_index`` and the
presentation table: one dask compute of a few KB); spike chunks are read when you compute.

Invalid presentations follow AllenSDK's ``EcephysSession._mask_invalid_stimulus_presentations``:
a presentation whose closed [start_time, stop_time] overlaps an ``invalid_times`` interval tagged
``"stimulus"`` is shown by :func:`stimulus_presentations` as ``stimulus_name ==
"invalid_presentation"`` with every other column but start/stop NaN. It therefore belongs to no
stimulus condition (:func:`conditionwise_spike_statistics`, :func:`psth` and
:func:`drifting_gratings_metrics` leave it out), while
:func:`presentationwise_spike_counts` and :func:`presentationwise_spike_times` still cover it.

:func:`lfp` and :func:`csd` live in :mod:`abo_lake.lfp` and are re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from abo_lake.lfp import _invalid_intervals, _load, _positions, _unknown, csd, lfp

__all__ = [
    "conditionwise_spike_statistics",
    "csd",
    "drifting_gratings_metrics",
    "lfp",
    "mean_waveforms",
    "presentationwise_spike_counts",
    "presentationwise_spike_times",
    "psth",
    "spike_times",
    "stimulus_presentations",
    "units",
    "units_in",
]

_SPIKE_CHUNK = 524_288  # spikes per dask chunk when spike_times is in memory (4 MB of float64)
_BLOCK_BYTES = 64 * 2**20  # cap on the output of one counting task
_RENAMES = {  # AllenSDK EcephysSession._build_units_table
    "PT_ratio": "waveform_PT_ratio",
    "amplitude": "waveform_amplitude",
    "duration": "waveform_duration",
    "halfwidth": "waveform_halfwidth",
    "recovery_slope": "waveform_recovery_slope",
    "repolarization_slope": "waveform_repolarization_slope",
    "spread": "waveform_spread",
    "velocity_above": "waveform_velocity_above",
    "velocity_below": "waveform_velocity_below",
    "l_ratio": "L_ratio",
}
_SP = "stimulus_presentations."
_INVALID = ("invalid_times.start_time", "invalid_times.stop_time", "invalid_times.tags",
            "invalid_times.tags_index")  # fmt: skip
_INVALID_NAME = "invalid_presentation"


# --- metadata ------------------------------------------------------------------------------------


def _unit_frame(cols: dict[str, np.ndarray], unit_id: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(cols, index=pd.Index(unit_id, name="unit_id"))
    return frame.rename(columns={k: v for k, v in _RENAMES.items() if v not in frame})


def _unit_columns(ds: xr.Dataset) -> list[str]:
    return [
        k for k, v in ds.data_vars.items()
        if v.dims == ("unit_id",) and k != "spike_times_index"
    ]  # fmt: skip


def _filter_units(
    frame: pd.DataFrame,
    *,
    filter_by_validity: bool,
    filter_out_of_brain_units: bool,
    amplitude_cutoff_maximum: float,
    presence_ratio_minimum: float,
    isi_violations_maximum: float,
) -> pd.DataFrame:
    keep = np.ones(len(frame), bool)
    if filter_by_validity:
        if "quality" in frame:
            keep &= frame["quality"].to_numpy() == "good"
        if "valid_data" in frame:
            keep &= frame["valid_data"].to_numpy(bool)
    if filter_out_of_brain_units and "ecephys_structure_acronym" in frame:
        keep &= frame["ecephys_structure_acronym"].to_numpy(str) != ""
    for col, op, limit in [("amplitude_cutoff", np.less_equal, amplitude_cutoff_maximum),
                           ("presence_ratio", np.greater_equal, presence_ratio_minimum),
                           ("isi_violations", np.less_equal, isi_violations_maximum)]:  # fmt: skip
        if col in frame:
            keep &= op(frame[col].to_numpy(float), limit)
    frame = frame[keep]
    order = [c for c in ("probe_description", "probe_vertical_position",
                         "probe_horizontal_position") if c in frame]  # fmt: skip
    return frame.sort_values(order, kind="stable") if order else frame


def units(
    ds: xr.Dataset,
    *,
    filter_by_validity: bool = True,
    filter_out_of_brain_units: bool = True,
    amplitude_cutoff_maximum: float = 0.1,
    presence_ratio_minimum: float = 0.95,
    isi_violations_maximum: float = 0.5,
) -> pd.DataFrame:
    """The units table with AllenSDK's default quality filter (eager, small).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    filter_by_validity
        Keep units with ``quality == "good"`` whose peak channel has ``valid_data``.
    filter_out_of_brain_units
        Drop units whose peak channel has no structure acronym.
    amplitude_cutoff_maximum, presence_ratio_minimum, isi_violations_maximum
        QC thresholds (AllenSDK defaults); pass ``np.inf``/``-np.inf`` to disable one.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``unit_id``, sorted by probe, then vertical and horizontal position; metrics
        renamed as AllenSDK does (``waveform_*``, ``L_ratio``).
    """
    cols = _load(ds, _unit_columns(ds))
    return _filter_units(
        _unit_frame(cols, ds["unit_id"].values),
        filter_by_validity=filter_by_validity,
        filter_out_of_brain_units=filter_out_of_brain_units,
        amplitude_cutoff_maximum=amplitude_cutoff_maximum,
        presence_ratio_minimum=presence_ratio_minimum,
        isi_violations_maximum=isi_violations_maximum,
    )


def units_in(
    ds: xr.Dataset,
    structure_acronym: str,
    *,
    filter_by_validity: bool = True,
    filter_out_of_brain_units: bool = True,
    amplitude_cutoff_maximum: float = 0.1,
    presence_ratio_minimum: float = 0.95,
    isi_violations_maximum: float = 0.5,
) -> pd.DataFrame:
    """Units (the QC filter of :func:`units`, same keywords) in one CCF structure.

    Raises
    ------
    KeyError
        If no unit of the session is in ``structure_acronym``; suggests close acronyms.
    """
    table = units(
        ds,
        filter_by_validity=filter_by_validity,
        filter_out_of_brain_units=filter_out_of_brain_units,
        amplitude_cutoff_maximum=amplitude_cutoff_maximum,
        presence_ratio_minimum=presence_ratio_minimum,
        isi_violations_maximum=isi_violations_maximum,
    )
    acronyms = _load(ds, ["ecephys_structure_acronym"])["ecephys_structure_acronym"]
    if structure_acronym not in set(acronyms.tolist()):
        raise _unknown("structure_acronym", [structure_acronym], sorted(set(acronyms) - {""}))
    return table[table["ecephys_structure_acronym"] == structure_acronym]


def _invalid_names(ds: xr.Dataset) -> list[str]:
    """The invalid_times variables to load (none if the session has no tagged intervals)."""
    return list(_INVALID) if all(n in ds.variables for n in _INVALID) else []


def _masked(ds: xr.Dataset, meta: dict[str, np.ndarray], start: Any, stop: Any) -> np.ndarray:
    """Presentations AllenSDK renames ``invalid_presentation``, from already loaded ``meta``.

    True where the closed [start, stop] overlaps an invalid interval whose tags contain
    ``"stimulus"`` (AllenSDK ``_overlap``: ``max(a0, b0) <= min(a1, b1)``).
    """
    start, stop = np.asarray(start, np.float64), np.asarray(stop, np.float64)
    mask = np.zeros(start.shape, bool)
    names = _invalid_names(ds)
    if not names:
        return mask
    loaded = xr.Dataset({n: (ds[n].dims, meta[n]) for n in names})  # numpy: no second compute
    for a, b in _invalid_intervals(loaded, {"stimulus"}):
        mask |= (start <= b) & (a <= stop)
    return mask


def stimulus_presentations(ds: xr.Dataset) -> pd.DataFrame:
    """The stimulus table with AllenSDK's invalid presentations masked (eager, small).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``stimulus_presentation_id``, one column per ``stimulus_presentations.*``
        variable (prefix stripped; text columns as ``str``). Rows whose [start_time, stop_time]
        overlaps (closed) an ``invalid_times`` interval tagged ``"stimulus"`` have
        ``stimulus_name == "invalid_presentation"``, their start/stop kept and every other
        column NaN (integer columns then become float64, as in AllenSDK); intervals tagged
        only with a probe mask nothing.
    """
    cols = [k for k, v in ds.data_vars.items()
            if k.startswith(_SP) and v.dims == ("stimulus_presentation_id",)]  # fmt: skip
    meta = _load(ds, cols + _invalid_names(ds))
    index = pd.Index(ds.indexes["stimulus_presentation_id"].to_numpy(),
                     name="stimulus_presentation_id")  # fmt: skip
    frame = pd.DataFrame({k.removeprefix(_SP): meta[k] for k in cols}, index=index)
    for col in frame.columns:  # zarr gives numpy StringDType; users get plain str columns
        if getattr(frame[col].dtype, "kind", "") in "TU":
            frame[col] = frame[col].astype(str)
    if "start_time" not in frame or "stop_time" not in frame:
        return frame
    masked = _masked(ds, meta, frame["start_time"], frame["stop_time"])
    if masked.any():
        for col in frame.columns.difference(["start_time", "stop_time"], sort=False):
            frame[col] = frame[col].where(~masked)  # upcasts int to float, bool to object
        frame.loc[masked, "stimulus_name"] = _INVALID_NAME
    return frame


@dataclass(frozen=True)
class _Selection:
    unit_id: np.ndarray  # output order
    first: np.ndarray  # flat offset of each unit's first spike
    last: np.ndarray  # flat offset past each unit's last spike
    presentation_id: np.ndarray
    pres: dict[str, np.ndarray]


def _select(
    ds: xr.Dataset,
    unit_ids: Any,
    stimulus_presentation_ids: Any,
    columns: Sequence[str] = ("start_time", "stop_time"),
    drop_invalid: bool = False,
) -> _Selection:
    """Resolve ids and load offsets and presentation columns in one compute.

    With ``drop_invalid`` the presentations AllenSDK masks as ``invalid_presentation`` (NaN
    ``stimulus_condition_id``) are left out of the selection.
    """
    names = ["spike_times_index", *(_SP + c for c in columns)]
    if drop_invalid:
        names += [_SP + "start_time", _SP + "stop_time", *_invalid_names(ds)]
    if unit_ids is None:
        names += _unit_columns(ds)
    meta = _load(ds, list(dict.fromkeys(names)))
    uindex = ds.indexes["unit_id"]
    if unit_ids is None:
        frame = _filter_units(
            _unit_frame({k: meta[k] for k in _unit_columns(ds)}, uindex.to_numpy()),
            filter_by_validity=True, filter_out_of_brain_units=True,
            amplitude_cutoff_maximum=0.1, presence_ratio_minimum=0.95,
            isi_violations_maximum=0.5,
        )  # fmt: skip
        unit_ids = frame.index.to_numpy()
    upos = _positions(uindex, unit_ids, "unit_id") if np.size(unit_ids) else np.zeros(0, int)
    ends = meta["spike_times_index"].astype(np.int64)
    begins = np.r_[0, ends[:-1]]
    pindex = ds.indexes["stimulus_presentation_id"]
    if stimulus_presentation_ids is None:
        ppos = np.arange(pindex.size)
    else:
        ppos = _positions(pindex, stimulus_presentation_ids, "stimulus_presentation_id")
    if upos.size == 0:
        raise ValueError("no units selected: unit_ids is empty or the QC filter removed all")
    if ppos.size == 0:
        raise ValueError("no stimulus presentations selected")
    if drop_invalid:
        start, stop = meta[_SP + "start_time"][ppos], meta[_SP + "stop_time"][ppos]
        ppos = ppos[~_masked(ds, meta, start, stop)]
        if ppos.size == 0:
            raise ValueError(
                "no valid stimulus presentations selected: every one overlaps an invalid_times "
                "interval tagged 'stimulus' (AllenSDK's 'invalid_presentation')"
            )
    return _Selection(
        unit_id=uindex.to_numpy()[upos],
        first=begins[upos],
        last=ends[upos],
        presentation_id=pindex.to_numpy()[ppos],
        pres={c: meta[_SP + c][ppos] for c in columns},
    )


# --- block graphs over spike_times chunks --------------------------------------------------------


def _spikes(ds: xr.Dataset) -> da.Array:
    data = ds["spike_times"].data
    if isinstance(data, da.Array):
        return data
    chunk = ds["spike_times"].encoding.get("chunks", (_SPIKE_CHUNK,))[0]
    return da.from_array(np.asarray(data), chunks=max(1, int(chunk)))


def _blocks(sel: _Selection, bounds: np.ndarray, max_units: int) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive output units sharing a first spike chunk: (u0, u1, c0, c1)."""
    n_chunks = bounds.size - 1
    c_first = np.clip(np.searchsorted(bounds, sel.first, side="right") - 1, 0, n_chunks - 1)
    c_last = np.clip(np.searchsorted(bounds, np.maximum(sel.last - 1, sel.first), "right") - 1,
                     0, n_chunks - 1)  # fmt: skip
    out, u0 = [], 0
    for u in range(1, sel.unit_id.size + 1):
        if u == sel.unit_id.size or c_first[u] != c_first[u0] or u - u0 >= max_units:
            out.append((u0, u, int(c_first[u0]), int(c_last[u0:u].max())))
            u0 = u
    return out


def _run_block(kernel: Callable, first: int, ranges: np.ndarray, arg: Any, *chunks: np.ndarray):
    flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    units = [flat[a - first : b - first] for a, b in ranges]
    return kernel(units, arg)


def _block_graph(
    ds: xr.Dataset,
    sel: _Selection,
    kernel: Callable,
    arg: np.ndarray,
    name: str,
    unit_bytes: int,
    prefix: tuple[int, ...] = (),
) -> tuple[HighLevelGraph, str, list[tuple], list[int]]:
    """One task per block of units, ``kernel(list of unit spike arrays, arg)``, keyed
    ``(name, *prefix, j)``."""
    spikes = _spikes(ds)
    bounds = np.r_[0, np.cumsum(spikes.chunks[0])]
    if bounds[-1] == 0:  # no spikes at all: a single empty chunk keeps the graph uniform
        spikes = da.zeros(1, chunks=1)
        bounds = np.array([0, 1])
    arg_da = da.from_array(arg, chunks=arg.shape) if isinstance(arg, np.ndarray) else None
    arg_key = (arg_da.name,) + (0,) * arg.ndim if arg_da is not None else arg
    token = dask.base.tokenize(spikes.name, sel.first, sel.last, arg_key, name)
    out = f"{name}-{token}"
    dsk, keys, sizes = {}, [], []
    max_units = max(1, _BLOCK_BYTES // max(unit_bytes, 1))
    for j, (u0, u1, c0, c1) in enumerate(_blocks(sel, bounds, max_units)):
        ranges = np.stack([sel.first[u0:u1], sel.last[u0:u1]], 1)
        func = partial(_run_block, kernel, int(bounds[c0]), ranges)
        key = (out, *prefix, j)
        dsk[key] = (func, arg_key, *[(spikes.name, c) for c in range(c0, c1 + 1)])
        keys.append(key)
        sizes.append(u1 - u0)
    deps = [spikes] + ([arg_da] if arg_da is not None else [])
    return HighLevelGraph.from_collections(out, dsk, dependencies=deps), out, keys, sizes


def _groups(domain: np.ndarray) -> list[np.ndarray]:
    """Split presentations into k interleaved groups whose windows do not overlap.

    Within a group the flattened edges are non-decreasing, so each spike can be placed with one
    ``searchsorted`` into the edges (n_spikes lookups instead of n_presentations × n_edges).
    """
    order = np.argsort(domain[:, 0], kind="stable")
    first, last = domain[order, 0], domain[order, -1]
    n = order.size
    for k in range(1, min(n, 16)):
        if np.all(first[k:] >= last[:-k]):
            return [order[g::k] for g in range(k)]
    return [order[g::16] for g in range(16)] if n <= 16 else []


def _place(s: np.ndarray, q: np.ndarray, n_edges: int) -> np.ndarray:
    """Counts of the bins [q_i, q_i+1] (closed) of sorted edges ``q``, rows of ``n_edges``."""
    k = np.searchsorted(q, s, side="right") - 1
    ok = k >= 0
    k = k[ok]
    bins = np.bincount(k[k % n_edges != n_edges - 1], minlength=q.size)
    tied = np.flatnonzero(q[k] == s[ok])  # spikes on an edge also count in the bin it closes
    if tied.size:
        hi = k[tied] + 1
        lo = np.searchsorted(q, s[ok][tied], side="left")
        reps = hi - lo
        j = np.repeat(hi - reps.cumsum(), reps) + np.arange(reps.sum())
        j = j[j % n_edges != 0]
        bins += np.bincount(j - 1, minlength=q.size)
    return bins.reshape(-1, n_edges)[:, :-1]


def _histogram(units: list[np.ndarray], domain: np.ndarray, binarize: bool, dtype: Any):
    """AllenSDK's counts: bin i holds spikes in [e_i, e_{i+1}] of each presentation."""
    n_pres, n_edges = domain.shape
    groups = _groups(domain)
    flat = [domain[g].ravel() for g in groups]
    queries = domain.ravel()
    out = np.empty((len(units), n_pres, n_edges - 1), dtype=dtype)
    for j, s in enumerate(units):
        if groups and s.size * len(groups) < queries.size:
            counts = np.empty((n_pres, n_edges - 1), np.int64)
            for g, q in zip(groups, flat):
                counts[g] = _place(s, q, n_edges)
        else:
            left = np.searchsorted(s, queries)
            counts = np.diff(left.reshape(n_pres, n_edges), axis=1)
            if s.size:
                tie = np.flatnonzero(s[np.minimum(left, s.size - 1)] == queries)
                tie = tie[(tie % n_edges) > 0]
                if tie.size:
                    extra = np.searchsorted(s, queries[tie], side="right") - left[tie]
                    np.add.at(counts, (tie // n_edges, tie % n_edges - 1), extra)
        out[j] = counts > 0 if binarize else counts
    return out.transpose(1, 2, 0)


def _counts_array(
    ds: xr.Dataset,
    sel: _Selection,
    edges: np.ndarray,
    binarize: bool,
    dtype: np.dtype,
    time_domain_callback: Callable[[np.ndarray], np.ndarray] | None = None,
) -> da.Array:
    domain = sel.pres["start_time"][:, None] + edges[None, :]
    if time_domain_callback is not None:
        domain = np.asarray(time_domain_callback(domain), dtype=np.float64)
        if domain.shape != (sel.presentation_id.size, edges.size):
            raise ValueError(
                f"time_domain_callback must return a {(sel.presentation_id.size, edges.size)} "
                f"array (presentations x bin edges); got shape {domain.shape}"
            )
        rows, cols = np.nonzero(np.diff(domain, axis=1) < 0)
        if rows.size:
            raise ValueError(
                "The time domain specified contains out-of-order bin edges at (row, column) "
                f"indices: {list(zip(rows.tolist()[:10], cols.tolist()[:10], strict=True))}"
            )
    kernel = partial(_counts_kernel, binarize=binarize, dtype=dtype)
    graph, name, _, sizes = _block_graph(
        ds, sel, kernel, domain, "spike-counts", domain.size * dtype.itemsize, prefix=(0, 0)
    )
    chunks = ((domain.shape[0],), (edges.size - 1,), tuple(sizes))
    return da.Array(graph, name, chunks=chunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype))


def _edges(bin_edges: Any) -> np.ndarray:
    edges = np.asarray(bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) < 0):
        raise ValueError(
            f"bin_edges must be 1-D and increasing with at least 2 values; got {edges!r}"
        )
    return edges


def presentationwise_spike_counts(
    ds: xr.Dataset,
    bin_edges: Any,
    stimulus_presentation_ids: Any = None,
    unit_ids: Any = None,
    binarize: bool = False,
    dtype: Any = None,
    large_bin_size_threshold: float = 0.001,
    time_domain_callback: Callable[[np.ndarray], np.ndarray] | None = None,
) -> xr.DataArray:
    """Spike counts around each presentation onset, lazily (one dask task per block of units).

    AllenSDK's ``EcephysSession.presentationwise_spike_counts(bin_edges,
    stimulus_presentation_ids, unit_ids, binarize=False, dtype=None,
    large_bin_size_threshold=0.001, time_domain_callback=None)``, same positional order; the
    two selections may also be left out (None).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    bin_edges
        Increasing bin edges in s relative to each presentation's ``start_time``.
    stimulus_presentation_ids, unit_ids
        Selections; default (None) all presentations and the QC-filtered :func:`units`.
    binarize
        Count > 0 as 1 (uint8).
    dtype
        Output dtype; default uint16 (uint8 when binarized), as AllenSDK.
    large_bin_size_threshold
        With ``binarize``, warn when the widest bin is wider than this (s), as AllenSDK.
    time_domain_callback
        Applied to the (presentation, edge) array of absolute bin edges before counting, as
        AllenSDK; its rows must stay increasing.

    Returns
    -------
    xarray.DataArray
        ``spike_counts`` with dims (stimulus_presentation_id, time_relative_to_stimulus_onset
        [bin centres], unit_id); bins are closed on both sides, as AllenSDK counts them.
    """
    edges = _edges(bin_edges)
    if binarize and np.diff(edges).max() > large_bin_size_threshold:
        warnings.warn(
            f"binarized spike counts with bins up to {np.diff(edges).max():.5f} s wide lose "
            f"counts; binarize bins <= {large_bin_size_threshold} s (AllenSDK's warning)",
            stacklevel=2,
        )
    dtype = np.dtype((np.uint8 if binarize else np.uint16) if dtype is None else dtype)
    sel = _select(ds, unit_ids, stimulus_presentation_ids, ("start_time",))
    return xr.DataArray(
        _counts_array(ds, sel, edges, binarize, dtype, time_domain_callback),
        name="spike_counts",
        dims=("stimulus_presentation_id", "time_relative_to_stimulus_onset", "unit_id"),
        coords={
            "stimulus_presentation_id": sel.presentation_id,
            "time_relative_to_stimulus_onset": edges[:-1] + np.diff(edges) / 2,
            "unit_id": sel.unit_id,
        },
    )


def _counts_kernel(units: list[np.ndarray], domain: np.ndarray, *, binarize: bool, dtype: Any):
    return _histogram(units, domain, binarize, dtype)


def _interval_kernel(units: list[np.ndarray], intervals: np.ndarray, *, sides: tuple[str, str]):
    """(K, n_units) counts: searchsorted(hi, sides[1]) - searchsorted(lo, sides[0])."""
    out = np.empty((intervals.shape[0], len(units)), np.int64)
    for j, s in enumerate(units):
        out[:, j] = np.searchsorted(s, intervals[:, 1], sides[1]) - np.searchsorted(
            s, intervals[:, 0], sides[0]
        )
    return out


def _times_kernel(units: list[np.ndarray], intervals: np.ndarray):
    """Spikes in (start, stop] of each interval: (times, interval index, unit index in block)."""
    times, which, unit = [], [], []
    for j, s in enumerate(units):
        lo = np.searchsorted(s, intervals[:, 0], "right")
        hi = np.searchsorted(s, intervals[:, 1], "right")
        n = np.maximum(hi - lo, 0)
        total = int(n.sum())
        pos = np.arange(total) - np.repeat(np.cumsum(n) - n - lo, n)
        times.append(s[pos])
        which.append(np.repeat(np.arange(n.size), n))
        unit.append(np.full(total, j))
    return np.concatenate(times), np.concatenate(which), np.concatenate(unit)


def _compute_blocks(
    ds: xr.Dataset, sel: _Selection, jobs: list[tuple[Callable, np.ndarray, int]]
) -> tuple[list[list[Any]], np.ndarray]:
    """Run block kernels over the same units in one compute (spike chunks read once).

    Returns the per-job lists of block results and the first unit index of each block.
    """
    delayed, sizes = [], [0]
    for i, (kernel, arg, unit_bytes) in enumerate(jobs):
        graph, name, keys, sizes = _block_graph(ds, sel, kernel, arg, f"ecephys-job{i}", unit_bytes)
        delayed.append([Delayed(k, graph, layer=name) for k in keys])
    return [list(r) for r in dask.compute(*delayed)], np.r_[0, np.cumsum(sizes)[:-1]]


def _interval_counts(
    ds: xr.Dataset, sel: _Selection, specs: list[tuple[np.ndarray, tuple[str, str]]]
) -> list[np.ndarray]:
    jobs = [(partial(_interval_kernel, sides=sides), iv, iv.shape[0] * 8) for iv, sides in specs]
    results, _ = _compute_blocks(ds, sel, jobs)
    return [np.concatenate(blocks, axis=1) for blocks in results]


def presentationwise_spike_times(
    ds: xr.Dataset, stimulus_presentation_ids: Any = None, unit_ids: Any = None
) -> pd.DataFrame:
    """Every spike inside (start, stop] of a presentation, as AllenSDK tabulates them (eager).

    AllenSDK's ``presentationwise_spike_times(stimulus_presentation_ids=None, unit_ids=None)``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``spike_time``, sorted, with columns ``stimulus_presentation_id``,
        ``unit_id`` and ``time_since_stimulus_presentation_onset``.
    """
    sel = _select(ds, unit_ids, stimulus_presentation_ids)
    intervals = np.stack([sel.pres["start_time"], sel.pres["stop_time"]], 1)
    (blocks,), u0 = _compute_blocks(ds, sel, [(_times_kernel, intervals, 0)])
    times = np.concatenate([b[0] for b in blocks])
    which = np.concatenate([b[1] for b in blocks])
    unit = np.concatenate([b[2] + u0[k] for k, b in enumerate(blocks)])
    order = np.argsort(times, kind="stable")
    times, which, unit = times[order], which[order], unit[order]
    return pd.DataFrame(
        {
            "stimulus_presentation_id": sel.presentation_id[which].astype(np.int64),
            "unit_id": sel.unit_id[unit].astype(np.int64),
            "time_since_stimulus_presentation_onset": times - sel.pres["start_time"][which],
        },
        index=pd.Index(times, name="spike_time"),
    )


def _condition_stats(values: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
    """Per (condition, unit) statistics of a (P, U) array, conditions sorted ascending."""
    order = np.argsort(cond, kind="stable")
    cond_sorted = cond[order]
    conds, starts, n = np.unique(cond_sorted, return_index=True, return_counts=True)
    x = values[order].astype(np.float64)
    total = np.add.reduceat(x, starts, axis=0)
    mean = total / n[:, None]
    dev = np.add.reduceat((x - np.repeat(mean, n, axis=0)) ** 2, starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(dev / (n[:, None] - 1))
    return {"condition": conds, "n": n, "sum": total, "mean": mean, "std": std}


def conditionwise_spike_statistics(
    ds: xr.Dataset,
    stimulus_presentation_ids: Any = None,
    unit_ids: Any = None,
    use_rates: bool = False,
) -> pd.DataFrame:
    """Spike statistics per (unit_id, stimulus_condition_id), as AllenSDK (eager, small).

    AllenSDK's ``conditionwise_spike_statistics(stimulus_presentation_ids=None, unit_ids=None,
    use_rates=False)``.

    Counts are of spikes in (start, stop] of each presentation. With ``use_rates`` the
    statistics are over count / duration and, as in AllenSDK, there is no ``spike_count``.
    Presentations masked as ``invalid_presentation`` (see :func:`stimulus_presentations`) have
    no condition id in AllenSDK, so they count in no condition, whether
    ``stimulus_presentation_ids`` is given or defaulted.

    Raises
    ------
    ValueError
        If no unit, or no valid presentation, is selected.

    Returns
    -------
    pandas.DataFrame
        Indexed by (unit_id, stimulus_condition_id), rows ordered by condition then unit:
        ``spike_count``, ``stimulus_presentation_count``, ``spike_mean``, ``spike_std``
        (ddof 1) and ``spike_sem``.
    """
    cols = ("start_time", "stop_time", "stimulus_condition_id")
    sel = _select(ds, unit_ids, stimulus_presentation_ids, cols, drop_invalid=True)
    intervals = np.stack([sel.pres["start_time"], sel.pres["stop_time"]], 1)
    (counts,) = _interval_counts(ds, sel, [(intervals, ("right", "right"))])
    values = counts / (intervals[:, 1] - intervals[:, 0])[:, None] if use_rates else counts
    st = _condition_stats(values, sel.pres["stimulus_condition_id"])
    n_c, n_u = st["mean"].shape
    out = {
        "unit_id": np.tile(sel.unit_id, n_c),
        "stimulus_condition_id": np.repeat(st["condition"], n_u),
    }
    if not use_rates:
        out["spike_count"] = st["sum"].ravel().astype(np.int64)
    out["stimulus_presentation_count"] = np.repeat(st["n"], n_u)
    out["spike_mean"] = st["mean"].ravel()
    out["spike_std"] = st["std"].ravel()
    out["spike_sem"] = (st["std"] / np.sqrt(st["n"])[:, None]).ravel()
    frame = pd.DataFrame(out)
    frame = frame.sort_values(["stimulus_condition_id", "unit_id"], kind="stable")
    return frame.set_index(["unit_id", "stimulus_condition_id"])


def psth(
    ds: xr.Dataset,
    *,
    bin_edges: Any,
    stimulus_presentation_ids: Any = None,
    unit_ids: Any = None,
) -> xr.DataArray:
    """Mean firing rate per bin and stimulus condition (lazy).

    Returns
    -------
    xarray.DataArray
        ``psth`` in spikes/s with dims (stimulus_condition_id, time_relative_to_stimulus_onset,
        unit_id): the mean over each condition's presentations of
        :func:`presentationwise_spike_counts` divided by the bin width. Presentations masked as
        ``invalid_presentation`` belong to no condition and are left out.
    """
    edges = _edges(bin_edges)
    cols = ("start_time", "stimulus_condition_id")
    sel = _select(ds, unit_ids, stimulus_presentation_ids, cols, drop_invalid=True)
    counts = _counts_array(ds, sel, edges, False, np.dtype(np.uint16))
    conds, inverse = np.unique(sel.pres["stimulus_condition_id"], return_inverse=True)
    weights = np.zeros((conds.size, inverse.size))
    weights[inverse, np.arange(inverse.size)] = 1.0
    weights /= weights.sum(1, keepdims=True)
    rate = da.einsum("cp,pbu->cbu", weights, counts.astype(np.float64)) / np.diff(edges)[:, None]
    return xr.DataArray(
        rate,
        name="psth",
        dims=("stimulus_condition_id", "time_relative_to_stimulus_onset", "unit_id"),
        coords={
            "stimulus_condition_id": conds,
            "time_relative_to_stimulus_onset": edges[:-1] + np.diff(edges) / 2,
            "unit_id": sel.unit_id,
        },
        attrs={"units": "Hz"},
    )


def _selectivity(theta_deg: np.ndarray, tuning: np.ndarray, harmonic: int) -> np.ndarray:
    """AllenSDK osi (harmonic 2) / dsi (harmonic 1): |Σ r e^{ikθ}| / Σ r over axis 0."""
    total = tuning.sum(0)
    vec = np.abs((tuning * np.exp(1j * harmonic * np.deg2rad(theta_deg))[:, None]).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, np.nan, vec / total)


def drifting_gratings_metrics(
    ds: xr.Dataset,
    *,
    unit_ids: Any = None,
    stimulus_name: str = "drifting_gratings",
    trial_duration: float = 2.0,
) -> pd.DataFrame:
    """AllenSDK's drifting-grating metrics per unit (eager, one pass over the spikes).

    ``pref_ori_dg``/``pref_tf_dg`` maximise the condition mean count averaged over the other
    parameter; ``g_osi_dg``/``g_dsi_dg`` = |Σ r·e^{2iθ}|/Σ r and |Σ r·e^{iθ}|/Σ r over the
    condition means at the preferred TF; ``firing_rate_dg`` = spikes per second over the
    stimulus blocks; ``fano_dg`` = var/mean of counts in [0, ``trial_duration``] at the
    preferred condition.

    Raises
    ------
    KeyError
        If ``stimulus_name`` is not presented in the session (suggests close names).
    """
    names = _load(ds, [_SP + "stimulus_name"])[_SP + "stimulus_name"]
    if stimulus_name not in set(names.tolist()):
        raise _unknown("stimulus_name", [stimulus_name], sorted(set(names.tolist())))
    pres_ids = ds.indexes["stimulus_presentation_id"].to_numpy()[names == stimulus_name]
    cols = ("start_time", "stop_time", "stimulus_condition_id", "orientation",
            "temporal_frequency")  # fmt: skip
    sel = _select(ds, unit_ids, pres_ids, cols, drop_invalid=True)  # AllenSDK: renamed away
    start, stop = sel.pres["start_time"], sel.pres["stop_time"]
    gaps = np.flatnonzero(np.diff(start) > 2 * trial_duration)
    blocks = np.stack([start[np.r_[0, gaps + 1]], stop[np.r_[gaps, start.size - 1]]], 1)
    counts, window, block = _interval_counts(ds, sel, [
        (np.stack([start, stop], 1), ("right", "right")),
        (np.stack([start, start + trial_duration], 1), ("left", "right")),
        (blocks, ("left", "left")),
    ])  # fmt: skip
    st = _condition_stats(counts, sel.pres["stimulus_condition_id"])
    first = np.unique(sel.pres["stimulus_condition_id"], return_index=True)[1]
    ori = sel.pres["orientation"][first]  # per condition, same order as st["condition"]
    tf = sel.pres["temporal_frequency"][first]
    mean = st["mean"]
    orivals, tfvals = np.unique(ori[~np.isnan(ori)]), np.unique(tf[~np.isnan(tf)])
    by_ori = np.stack([mean[ori == o].mean(0) for o in orivals])
    by_tf = np.stack([mean[tf == f].mean(0) for f in tfvals])
    pref_ori = orivals[np.argmax(by_ori, 0)]
    pref_tf = tfvals[np.argmax(by_tf, 0)]
    n_u = sel.unit_id.size
    osi, dsi, fano = np.full(n_u, np.nan), np.full(n_u, np.nan), np.full(n_u, np.nan)
    pref_cond = st["condition"][np.argmax(np.where(np.isnan(tf)[:, None], -np.inf, mean), 0)]
    for f in np.unique(pref_tf):
        units_f = pref_tf == f
        rows = np.flatnonzero(tf == f)
        rows = rows[np.argsort(ori[rows], kind="stable")]
        osi[units_f] = _selectivity(ori[rows], mean[rows][:, units_f], 2)
        dsi[units_f] = _selectivity(ori[rows], mean[rows][:, units_f], 1)
    for j in range(n_u):
        x = window[sel.pres["stimulus_condition_id"] == pref_cond[j], j].astype(np.float64)
        fano[j] = np.var(x) / x.mean() if x.mean() > 0 else np.nan
    rate = block.sum(0) / np.sum(blocks[:, 1] - blocks[:, 0])
    return pd.DataFrame(
        {"pref_ori_dg": pref_ori, "pref_tf_dg": pref_tf, "g_osi_dg": osi, "g_dsi_dg": dsi,
         "firing_rate_dg": rate, "fano_dg": fano},
        index=pd.Index(sel.unit_id, name="unit_id"),
    )  # fmt: skip


def spike_times(ds: xr.Dataset, unit_id: int) -> xr.DataArray:
    """One unit's spike times (lazy): only the chunks holding that unit are read.

    Raises
    ------
    KeyError
        If ``unit_id`` is not in the session (suggests close ids).
    """
    (pos,) = _positions(ds.indexes["unit_id"], [unit_id], "unit_id")
    ends = ds["spike_times_index"].isel(unit_id=slice(max(pos - 1, 0), pos + 1))
    ends = _load(xr.Dataset({"e": ends.drop_vars("unit_id")}), ["e"])["e"]
    first, last = (0, int(ends[0])) if pos == 0 else (int(ends[0]), int(ends[1]))
    out = ds["spike_times"].isel(spike=slice(first, last)).rename("spike_times")
    return out.assign_attrs(unit_id=int(unit_id), units="s")


def mean_waveforms(ds: xr.Dataset, unit_id: int) -> xr.DataArray:
    """One unit's mean waveform as AllenSDK's ``session.mean_waveforms[unit_id]`` (lazy).

    The stored ``waveform_mean`` is (unit_id, channel = on-probe channel number,
    waveform_sample); AllenSDK gives dims (``channel_id``, ``time``): the channel ids of the
    unit's probe by channel number (numbers the channel table lacks are dropped) and time =
    sample / the probe's sampling rate (s). Only that unit's chunk is read when computed.

    Raises
    ------
    KeyError
        If ``unit_id`` is not in the session (suggests close ids), or the session has no
        per-channel ``waveform_mean``.
    """
    if "waveform_mean" not in ds or ds["waveform_mean"].dims != (
        "unit_id", "channel", "waveform_sample"
    ):  # fmt: skip
        raise KeyError("this session has no per-channel waveform_mean (unit, channel, sample)")
    (pos,) = _positions(ds.indexes["unit_id"], [unit_id], "unit_id")
    meta = _load(ds, ["probe_id", "probe_sampling_rate", "channels.probe_id",
                      "channels.probe_channel_number"])  # fmt: skip
    probe, rate = meta["probe_id"][pos], float(meta["probe_sampling_rate"][pos])
    mine = meta["channels.probe_id"] == probe
    lookup = dict(
        zip(
            meta["channels.probe_channel_number"][mine].tolist(),
            ds.indexes["channel_id"].to_numpy()[mine].tolist(),
            strict=True,
        )
    )
    waveform = ds["waveform_mean"].isel(unit_id=pos)
    ids = np.array([lookup.get(i, -1) for i in range(waveform.sizes["channel"])], np.int64)
    keep = np.flatnonzero(ids != -1)
    out = waveform.isel(channel=keep).drop_vars("unit_id", errors="ignore")
    out = out.rename({"channel": "channel_id", "waveform_sample": "time"})
    time = np.arange(out.sizes["time"]) / rate
    out = out.assign_coords(channel_id=ids[keep], time=("time", time, {"units": "s"}))
    return out.rename("mean_waveform").assign_attrs(unit_id=int(unit_id))
