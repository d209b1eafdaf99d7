"""Lazy, chunk-aware analysis of two-photon ``ophys_experiment`` Datasets (VBO and VC2P).

Pure functions behind the ``.ophys`` accessor. Traces stay dask arrays: a windowed query slices
only the time chunks its windows overlap (one small task per group of presentations that fall in
one time chunk) and interpolates there. The small stimulus and trial tables are read eagerly, in
the calling process, because the shape of every graph depends on them (as AllenSDK does).

Names and semantics follow AllenSDK (``ALLEN_DATA.md`` §2-3): ``stimulus_presentations`` and
``trials`` tables indexed by ``stimulus_presentation_id`` / ``trials_id``; responses with dims
(``stimulus_presentation_id``, ``time_relative_to_stimulus_onset``, ``cell_specimen_id``); the 2016
drifting-grating metrics (``osi_dg``, ``dsi_dg``, ``ptest_dg``, ``peak_dff_dg``) from percent
ΔF/F sweeps of the corrected fluorescence.

Windows that leave the recording are never filled with NaN: those presentations are dropped with
a :class:`UserWarning` naming them, and a selection with nothing left raises ``ValueError``.
"""

from __future__ import annotations

import datetime
import difflib
import itertools
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from abo_lake import behavior
from abo_lake.errors import SchemaError
from abo_lake.scheduling import compute, compute_here

__all__ = [
    "VBO_METADATA_KEYS",
    "VC2P_METADATA_KEYS",
    "cell_specimen_ids",
    "cell_specimen_indices",
    "cell_specimen_table",
    "change_responses",
    "dff_traces_of",
    "drifting_grating_metrics",
    "events",
    "filtered_events",
    "frame_rate",
    "image",
    "mean_response",
    "metadata",
    "motion_correction",
    "omission_responses",
    "ophys_timestamps",
    "presentations_of",
    "running_speed",
    "segmentation_mask_image",
    "stimulus_presentations",
    "to_pynapple",
    "traces_table",
    "trial_responses",
    "trials",
    "valid_cells",
]

CELL, TIME = "cell_specimen_id", "time"
PRESENTATION = "stimulus_presentation_id"
RELATIVE_TIME = "time_relative_to_stimulus_onset"
_OUT_CHUNK_BYTES = 8 * 2**20


class _NotFoundError(KeyError):
    """A KeyError whose message is not quoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _suggest(value: Any, choices: Iterable[Any]) -> str:
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.5)
    hint = f"; did you mean {close!r}?" if close else ""
    shown = names[:10] + (["..."] if len(names) > 10 else [])
    return f"{hint} (valid: {', '.join(shown)})"


# --------------------------------------------------------------------------- tables


def _load(variables: Sequence[xr.Variable]) -> list[np.ndarray]:
    """Values of small variables; dask-backed ones are read here, in one synchronous pass.

    Table columns decide the shape of every graph, so they are read in the calling process
    (never on a cluster) with the synchronous scheduler; traces are never passed here.
    """
    lazy = [i for i, v in enumerate(variables) if isinstance(v.data, da.Array)]
    values: list[Any] = [v.data for v in variables]
    if lazy:
        done = compute_here(*(values[i] for i in lazy))
        for i, arr in zip(lazy, done):
            values[i] = arr
    return [np.asarray(v) for v in values]


def _table(ds: xr.Dataset, prefix: str, dim: str) -> pd.DataFrame:
    """``<prefix>.<column>`` variables along ``dim`` as a DataFrame; ragged ones as arrays."""
    names = [
        n for n in ds.variables if n.startswith(prefix + ".") and ds.variables[n].dims == (dim,)
    ]
    ragged = [n.removesuffix("_index") for n in names if n.endswith("_index")]
    ragged = [n for n in ragged if n in ds.variables]
    cols = [n for n in names if n not in {r + "_index" for r in ragged}]
    loaded = _load([ds.variables[n] for n in [*cols, *ragged, *(r + "_index" for r in ragged)]])
    out: dict[str, Any] = {n.removeprefix(prefix + "."): v for n, v in zip(cols, loaded)}
    for k, name in enumerate(ragged):
        data = loaded[len(cols) + k]
        ends = loaded[len(cols) + len(ragged) + k].astype(np.int64)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        out[name.removeprefix(prefix + ".")] = [data[a:b] for a, b in zip(starts, ends)]
    if dim in ds.indexes:
        index = pd.Index(np.asarray(ds.indexes[dim]), name=dim)
    else:
        index = pd.RangeIndex(ds.sizes[dim], name=dim)
    table = pd.DataFrame(out, index=index)
    for col in table.columns:  # zarr gives numpy StringDType; users get plain str columns
        if getattr(table[col].dtype, "kind", "") in "TU":
            table[col] = table[col].astype(str)
    return table


def valid_cells(ds: xr.Dataset) -> xr.Dataset:
    """The Dataset without its invalid ROIs, as AllenSDK loads Visual Behavior experiments
    (``BehaviorOphysExperiment.from_nwb_path(..., exclude_invalid_rois=True)``, its default).

    The lake keeps every ROI (lossless) with its ``valid_roi`` flag; this selects the cells
    whose flag is true, lazily (only the flags are read). A Dataset without ``valid_roi``
    (Visual Coding 2P files hold only valid cells) is returned as it is.

    Examples
    --------
    >>> ds.ophys.valid_cells().ophys.trial_responses(window=(-0.5, 1.0))  # doctest: +SKIP
    """
    if "valid_roi" not in ds.variables:
        return ds
    valid = np.asarray(ds["valid_roi"].values).astype(bool)
    return ds.isel({CELL: np.flatnonzero(valid)})


def stimulus_presentations(ds: xr.Dataset) -> pd.DataFrame:
    """The stimulus table, indexed by ``stimulus_presentation_id`` (small columns, read now).

    Raises
    ------
    SchemaError
        If the Dataset has no ``stimulus_presentations.*`` variables.
    """
    if PRESENTATION not in ds.dims:
        raise SchemaError(
            "this ophys_experiment has no stimulus table (no 'stimulus_presentation_id' dim, no "
            "'stimulus_presentations.<column>' variables)"
        )
    table = _table(ds, "stimulus_presentations", PRESENTATION)
    if "start_time" in table and "stop_time" in table and "duration" not in table:
        table["duration"] = table["stop_time"] - table["start_time"]
    return table


def presentations_of(ds: xr.Dataset, stimulus: str, shown_in: str) -> pd.DataFrame:
    """The rows of :func:`stimulus_presentations` of one ``stimulus`` (by ``stimulus_name``).

    Raises
    ------
    ValueError
        If there are none, naming the experiment's session type, the stimuli it has and
        ``shown_in`` (where the stimulus is shown, e.g. "three_session_A experiments").
    """
    table = stimulus_presentations(ds)
    names = table["stimulus_name"] if "stimulus_name" in table else pd.Series("", table.index)
    rows = table[names == stimulus]
    if rows.empty:
        session_type = ds.attrs.get("session_type") or "unknown"
        raise ValueError(
            f"no {stimulus} presentations: this experiment's session_type is {session_type!r} "
            f"and its stimuli are {sorted(set(names))!r}; {shown_in}"
        )
    return rows


def trials(ds: xr.Dataset) -> pd.DataFrame:
    """The behaviour trials table (Visual Behavior), indexed by ``trials_id``.

    ``lick_times`` comes back as one array per trial, as in AllenSDK.
    """
    if "trials_id" not in ds.dims:
        raise SchemaError(
            "this ophys_experiment has no trials table ('trials_id' dim); trials exist only in "
            "Visual Behavior 2P experiments (behavior_ophys_experiment NWB files)"
        )
    return _table(ds, "trials", "trials_id")


def frame_rate(ds: xr.Dataset) -> float:
    """Ophys frame rate (Hz) measured from the timestamps (no data read).

    With fewer than two timestamps, the file's ``ophys_frame_rate`` metadata (the imaging
    plane's ``imaging_rate``, AllenSDK's ``metadata["ophys_frame_rate"]``).

    Raises
    ------
    ValueError
        With fewer than two timestamps and no ``ophys_frame_rate`` attribute.
    """
    t = np.asarray(ds.indexes[TIME])
    if len(t) >= 2:
        return float(1.0 / np.median(np.diff(t)))
    rate = ds.attrs.get("ophys_frame_rate")
    if isinstance(rate, int | float | np.number) and rate > 0:
        return float(rate)
    raise ValueError(
        f"cannot measure a frame rate from {len(t)} timestamp(s), and the experiment has no "
        "'ophys_frame_rate' attribute"
    )


# --------------------------------------------------------------------------- AllenSDK's shapes
#
# ``BehaviorOphysExperiment``'s (AllenSDK 2.16.2) tables, arrays and metadata, computed from the
# lake's lazy variables (these read the data, as AllenSDK does). Tables hold the valid ROIs only
# (AllenSDK's default ``exclude_invalid_rois=True``), in the cell table's order, indexed by
# ``cell_specimen_id``; an unmatched ROI has -1 there (the file's value; AllenSDK turns it into
# None, which makes its index float64 with NaN).

#: ``BehaviorOphysExperiment.metadata`` keys (behaviour, then ophys, as AllenSDK builds them).
VBO_METADATA_KEYS = (
    *behavior.BEHAVIOR_METADATA_KEYS,
    "indicator",
    "emission_lambda",
    "excitation_lambda",
    "ophys_container_id",
    "field_of_view_height",
    "field_of_view_width",
    "imaging_depth",
    "targeted_imaging_depth",
    "imaging_plane_group",
    "imaging_plane_group_count",
    "ophys_experiment_id",
    "ophys_frame_rate",
    "ophys_session_id",
    "targeted_structure",
)
#: ``BrainObservatoryNwbDataSet.get_metadata()`` keys (Visual Coding 2P) -> the lake's attribute.
VC2P_METADATA_KEYS = {
    "sex": "sex",
    "targeted_structure": "targeted_structure",
    "ophys_experiment_id": "ophys_experiment_id",
    "experiment_container_id": "experiment_container_id",
    "excitation_lambda": "excitation_lambda",
    "indicator": "indicator",
    "fov": "fov",
    "genotype": "genotype",
    "session_start_time": "session_start_time",
    "session_type": "session_type",
    "specimen_name": "specimen_name",
    "cre_line": "cre_line",
    "imaging_depth_um": "imaging_depth",
    "age_days": "age_days",
    "device": "device",
    "device_name": "device_name",
    "pipeline_version": "pipeline_version",
}
#: get_metadata() keys it sets even when the file lacks them (None, or pipeline 0.9).
_VC2P_ALWAYS = {
    "cre_line": None,
    "imaging_depth_um": None,
    "ophys_experiment_id": None,
    "experiment_container_id": None,
    "pipeline_version": "0.9",
}
#: Per-cell variables that are not cell-table columns (traces' per-ROI values).
_NOT_CELL_TABLE = frozenset({"event_lambda", "event_noise_std", "r", "RMSE", "rmse"})
#: The lake's variable -> AllenSDK's column, per traces table.
_TRACE_TABLES = {
    "dff_traces": {"dff": "dff"},
    "corrected_fluorescence_traces": {
        "corrected_fluorescence": "corrected_fluorescence",
        "r": "r",
        "RMSE": "RMSE",
    },
    "demixed_traces": {"demixed_fluorescence": "demixed_trace"},
    "neuropil_traces": {"neuropil_fluorescence": "neuropil_trace"},
}


def _require(ds: xr.Dataset, names: Iterable[str], what: str) -> None:
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise SchemaError(
            f"{what} needs {missing!r}, which this ophys_experiment does not have (Visual "
            "Behavior 2P experiments have them)"
        )


def _specimen_index(ds: xr.Dataset) -> pd.Index:
    """``cell_specimen_id`` as AllenSDK's index: -1 for unmatched ROIs (the lake's
    ``-cell_roi_id``, which keeps its dim unique)."""
    ids = np.asarray(ds.indexes[CELL], dtype=np.int64)
    return pd.Index(np.where(ids < 0, -1, ids), name=CELL)


def _rows(values: np.ndarray) -> list[np.ndarray]:
    return list(np.asarray(values))


def traces_table(ds: xr.Dataset, name: str) -> pd.DataFrame:
    """One of AllenSDK's trace tables (``dff_traces``, ``corrected_fluorescence_traces``,
    ``demixed_traces``, ``neuropil_traces``), valid ROIs, loaded.

    Columns ``cell_roi_id`` and one array per row (``dff``, ``corrected_fluorescence`` with
    ``r`` and ``RMSE``, ``demixed_trace``, ``neuropil_trace``). ``neuropil_traces`` holds the
    real neuropil traces: AllenSDK 2.16.2's ``BehaviorOphysExperiment.neuropil_traces`` returns
    the demixed traces instead (a bug; its ``_cell_specimens.neuropil_traces`` is right).

    Raises
    ------
    KeyError
        For another ``name``.
    SchemaError
        If the Dataset lacks the table's variables.
    """
    if name not in _TRACE_TABLES:
        raise _NotFoundError(f"no traces table {name!r}" + _suggest(name, _TRACE_TABLES))
    trace = next(iter(_TRACE_TABLES[name]))  # r, RMSE: only when the file has them (AllenSDK)
    _require(ds, (trace,), name)
    columns = {v: c for v, c in _TRACE_TABLES[name].items() if v == trace or v in ds.variables}
    ds = valid_cells(ds)
    values = _load([ds.variables["cell_roi_id"], *(ds.variables[v] for v in columns)])
    out: dict[str, Any] = {"cell_roi_id": values[0].astype(np.int64)}
    for column, data in zip(columns.values(), values[1:]):
        out[column] = _rows(data) if data.ndim == 2 else data
    return pd.DataFrame(out, index=_specimen_index(ds))


def cell_specimen_ids(ds: xr.Dataset) -> np.ndarray:
    """AllenSDK's legacy ``get_cell_specimen_ids()``: the valid cells' ``cell_specimen_id``
    (-1 for an unmatched ROI), in the cell table's order.

    Raises
    ------
    ValueError
        If no ROI has a ``cell_specimen_id`` (as AllenSDK).
    """
    ids = _specimen_index(valid_cells(ds)).to_numpy()
    if len(ids) and (ids == -1).all():
        raise ValueError(
            f"cell_specimen_id values not assigned for {ds.attrs.get('ophys_experiment_id', '?')}"
        )
    return ids


def cell_specimen_indices(ds: xr.Dataset, cell_specimen_ids: Sequence[int]) -> list[int]:
    """AllenSDK's legacy ``get_cell_specimen_indices(ids)``: the rows of ``ids`` among the
    valid cells (:func:`cell_specimen_ids`).

    Raises
    ------
    KeyError
        For an id that is not a valid cell's (as AllenSDK's ``Index.get_loc``).
    """
    index = _specimen_index(valid_cells(ds))
    return [int(index.get_loc(int(i))) for i in cell_specimen_ids]


def dff_traces_of(
    ds: xr.Dataset, cell_specimen_ids: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """AllenSDK's legacy ``get_dff_traces(cell_specimen_ids)``: (timestamps, (cell, time) dF/F)
    of the given valid cells (all by default), reading only their rows.

    Unlike AllenSDK (an ``AssertionError``), an id that is not a valid cell raises a
    ``KeyError`` naming it; the rows come in the cell table's order, as AllenSDK's ``isin``
    selection gives them.
    """
    valid = valid_cells(ds)
    index = _specimen_index(valid).to_numpy()
    if cell_specimen_ids is None:
        rows = np.arange(len(index))
    else:
        wanted = np.atleast_1d(np.asarray(cell_specimen_ids, dtype=np.int64))
        missing = wanted[~np.isin(wanted, index)]
        if len(missing):
            raise _NotFoundError(
                f"no valid cell_specimen_id {missing[:5].tolist()!r}" + _suggest(missing[0], index)
            )
        rows = np.flatnonzero(np.isin(index, wanted))
    (dff,) = _load([valid["dff"].isel({CELL: rows}).transpose(CELL, TIME).variable])
    return ophys_timestamps(ds), dff


def events(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``events`` table: ``cell_roi_id``, ``events``, ``filtered_events``
    (:func:`filtered_events` with AllenSDK's defaults), ``lambda``, ``noise_std``; loaded.

    Rows are the valid cells that have detected events (``event_detection/rois``; the lake
    pads the others with NaN and NaN ``event_lambda``), in the cell table's order, as
    AllenSDK's merge on ``cell_roi_id`` gives them.
    """
    _require(ds, ("events", "event_lambda", "event_noise_std"), "events")
    ds = valid_cells(ds)
    lam = np.asarray(ds["event_lambda"].values, dtype=np.float64)
    ds = ds.isel({CELL: np.flatnonzero(~np.isnan(lam))})
    roi, lam, noise = _load(
        [ds.variables[v] for v in ("cell_roi_id", "event_lambda", "event_noise_std")]
    )
    ev, filt = compute(_trace(ds, "events").data, filtered_events(ds).data)
    return pd.DataFrame(
        {
            "cell_roi_id": roi.astype(np.int64),
            "events": _rows(ev),
            "filtered_events": _rows(filt),
            "lambda": lam,
            "noise_std": noise,
        },
        index=_specimen_index(ds),
    )


def cell_specimen_table(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``cell_specimen_table``: the valid ROIs' cell-table columns by AllenSDK's
    names (``cell_roi_id``, ``x``, ``y``, ``width``, ``height``, ``valid_roi``,
    ``mask_image_plane``, ``max_correction_*``, ...) and ``roi_mask`` (one full-field bool
    array per row); loaded."""
    _require(ds, ("roi_mask",), "cell_specimen_table")
    ds = valid_cells(ds)
    names = ["cell_roi_id"] + [
        n
        for n, v in ds.variables.items()
        if v.dims == (CELL,) and n not in {CELL, "cell_roi_id", *_NOT_CELL_TABLE}
    ]
    values = _load([ds.variables[n] for n in [*names, "roi_mask"]])
    out: dict[str, Any] = {
        {"roi_x": "x", "roi_y": "y"}.get(n, n): v for n, v in zip(names, values[:-1])
    }
    out["roi_mask"] = _rows(values[-1].astype(bool))
    table = pd.DataFrame(out, index=_specimen_index(ds))
    for col in table.columns:
        if getattr(table[col].dtype, "kind", "") in "TU":
            table[col] = table[col].astype(str)
    return table


def motion_correction(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``motion_correction``: one column per ``motion_correction.<name>`` variable
    (``x``, ``y``, named after the file's series as AllenSDK names them), RangeIndex; loaded.

    A Visual Coding 2P Dataset, whose motion frames have their own timestamps, also gets
    ``timestamp`` as ``BrainObservatoryNwbDataSet.get_motion_correction`` does.
    """
    names = [n for n in ds.variables if n.startswith("motion_correction.")]
    if not names:
        raise SchemaError(
            "this ophys_experiment has no motion correction ('motion_correction.<axis>' variables)"
        )
    dim = ds.variables[names[0]].dims[0]
    values = _load([ds.variables[n] for n in names])
    out = {n.removeprefix("motion_correction."): v for n, v in zip(names, values)}
    if dim != TIME and dim in ds.indexes:
        out["timestamp"] = np.asarray(ds.indexes[dim])
    return pd.DataFrame(out)


def ophys_timestamps(ds: xr.Dataset) -> np.ndarray:
    """AllenSDK's ``ophys_timestamps`` (s), a NumPy array (the ``time`` coordinate)."""
    return np.asarray(ds.indexes[TIME], dtype=np.float64)


def image(ds: xr.Dataset, name: str) -> xr.DataArray:
    """A projection (``max_projection``, ``average_projection``) as a (y, x) DataArray whose
    ``.spacing`` (mm per pixel, y then x) and ``.unit`` are AllenSDK's ``Image``'s.

    ``np.asarray`` of it gives AllenSDK's ``np.asarray(exp.max_projection)``.
    """
    _require(ds, (name,), name)
    out = ds[name].copy(deep=False)  # own attrs: the Dataset's stay as they are
    out.attrs = {**out.attrs, **_spacing(ds)}
    return out


def _spacing(ds: xr.Dataset) -> dict[str, Any]:
    attrs = ds["max_projection"].attrs if "max_projection" in ds.variables else {}
    if "spacing" in attrs:
        return {
            "spacing": tuple(float(s) for s in attrs["spacing"]),
            "unit": attrs.get("unit", "mm"),
        }
    step = [float(np.diff(ds.indexes[d][:2])[0]) / 1000.0 for d in ("y", "x") if ds.sizes[d] > 1]
    return {"spacing": tuple(step), "unit": "mm"} if len(step) == 2 else {}


def segmentation_mask_image(ds: xr.Dataset) -> xr.DataArray:
    """AllenSDK's ``segmentation_mask_image``: the sum of the valid ROIs' masks (int64, lazy)
    with the max projection's spacing, as ``CellSpecimens._get_segmentation_mask_image``."""
    _require(ds, ("roi_mask",), "segmentation_mask_image")
    masks = valid_cells(ds)["roi_mask"]
    out = masks.astype(np.int64).sum(CELL)
    out.name = "segmentation_mask_image"
    out.attrs = _spacing(ds)
    return out


def metadata(ds: xr.Dataset) -> dict[str, Any]:
    """AllenSDK's ``BehaviorOphysExperiment.metadata`` (Visual Behavior 2P): its keys and values;
    Visual Coding 2P: ``BrainObservatoryNwbDataSet.get_metadata()``.

    ``date_of_acquisition`` is a timezone-aware ``datetime``; ``imaging_plane_group`` is None
    and ``imaging_plane_group_count`` 0 unless the experiment is one of several planes
    (count > 1), as AllenSDK's ``_is_multi_plane_session``; a field the file lacks is None.

    A Visual Coding 2P experiment (no ``behavior_session_id``) gets what its AllenSDK reader,
    ``BrainObservatoryNwbDataSet.get_metadata()``, returns: keys of :data:`VC2P_METADATA_KEYS`
    the file has (``session_start_time`` a naive ``datetime``, ``cre_line`` with ``/wt``), and
    ``cre_line``, ``imaging_depth_um``, the two ids (None when absent) and
    ``pipeline_version`` ('0.9' when absent) always.
    """
    a = ds.attrs
    if "behavior_session_id" not in a:
        return _vc2p_metadata(a)
    out: dict[str, Any] = {k: a.get(k) for k in VBO_METADATA_KEYS}
    for key, value in out.items():
        if isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, np.ndarray):
            out[key] = value.tolist()
    if isinstance(out["driver_line"], str):
        out["driver_line"] = [out["driver_line"]]
    if isinstance(out["date_of_acquisition"], str):
        out["date_of_acquisition"] = datetime.datetime.fromisoformat(out["date_of_acquisition"])
    count = out["imaging_plane_group_count"]
    if count is None or count <= 1:
        out["imaging_plane_group"], out["imaging_plane_group_count"] = None, 0
    return out


def _vc2p_metadata(a: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(_VC2P_ALWAYS)
    for key, attr in VC2P_METADATA_KEYS.items():
        if attr in a:
            value = a[attr]
            out[key] = value.item() if isinstance(value, np.generic) else value
    start = out.get("session_start_time")
    if isinstance(start, str):  # AllenSDK: dateutil.parser.parse of the file's text
        try:
            out["session_start_time"] = datetime.datetime.fromisoformat(start)
        except ValueError:
            from dateutil import parser

            out["session_start_time"] = parser.parse(start)
    return out


# --------------------------------------------------------------------------- sampling kernel


def _take(block: np.ndarray, *, i0: np.ndarray, i1: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Linear interpolation of a (time, cell) block at local indices -> (n, k, cell)."""
    a = block[i0]
    b = block[i1]
    out = a + (b - a) * frac[..., None]
    return out.astype(block.dtype if block.dtype.kind == "f" else np.float64, copy=False)


def _sample(arr: da.Array, i0: np.ndarray, frac: np.ndarray) -> da.Array:
    """Sample a lazy (cell, time) array at fractional time indices, chunk by chunk.

    Parameters
    ----------
    arr
        (cell, time) dask array.
    i0, frac
        (n, k) left sample index and fraction towards ``i0 + 1`` for each of ``n`` items at
        ``k`` points; frac 0 takes the sample exactly, NaN gives NaN.

    Returns
    -------
    dask.array.Array
        (n, k, cell). Consecutive items whose windows start in the same time chunk share one
        task per cell chunk, which reads only the time range those windows cover.
    """
    n, k = i0.shape
    i1 = np.where(np.nan_to_num(frac) > 0, i0 + 1, i0)
    lo, hi = i0.min(axis=1), i1.max(axis=1) + 1
    bounds = np.cumsum((0, *arr.chunks[1]))
    chunk_of = np.searchsorted(bounds, lo, side="right") - 1
    dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    cap = max(1, _OUT_CHUNK_BYTES // max(1, k * max(arr.chunks[0]) * dtype.itemsize))
    cuts = [0]
    for j in range(1, n):
        if chunk_of[j] != chunk_of[j - 1] or j - cuts[-1] >= cap:
            cuts.append(j)
    cuts.append(n)
    parts = []
    for a, b in itertools.pairwise(cuts):
        start, stop = int(lo[a:b].min()), int(hi[a:b].max())
        piece = arr[:, start:stop].T.rechunk({0: -1})
        parts.append(
            da.map_blocks(
                _take,
                piece,
                i0=i0[a:b] - start,
                i1=i1[a:b] - start,
                frac=frac[a:b],
                new_axis=0,
                chunks=((b - a,), (k,), piece.chunks[1]),
                dtype=dtype,
                meta=np.empty((0, 0, 0), dtype),
            )
        )
    return da.concatenate(parts, axis=0)


def _fractional(t: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left index and fraction of query times ``q`` in sorted ``t`` (NaN fraction outside)."""
    i0 = np.clip(np.searchsorted(t, q, side="right") - 1, 0, max(len(t) - 2, 0))
    step = t[np.minimum(i0 + 1, len(t) - 1)] - t[i0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(step > 0, (q - t[i0]) / step, 0.0)
    frac = np.where((q >= t[0]) & (q <= t[-1]), np.clip(frac, 0.0, 1.0), np.nan)
    return i0.astype(np.int64), frac


# --------------------------------------------------------------------------- responses


#: AllenSDK's defaults for ``filtered_events`` (``BehaviorOphysExperiment.from_nwb_path``).
EVENTS_FILTER_SCALE_SECONDS, EVENTS_FILTER_N_TIME_STEPS = 2 / 31, 20


def filtered_events(
    ds: xr.Dataset,
    *,
    filter_scale_seconds: float = EVENTS_FILTER_SCALE_SECONDS,
    n_time_steps: int = EVENTS_FILTER_N_TIME_STEPS,
) -> xr.DataArray:
    """Detected events smoothed by AllenSDK's causal half-Gaussian filter, lazily.

    As ``BehaviorOphysExperiment.events["filtered_events"]``: each cell's events convolved
    with the half-normal pdf at ``0 .. n_time_steps - 1`` frames (scale
    ``filter_scale_seconds`` x the ophys frame rate, normalised to sum 1), keeping the first
    ``len(trace)`` samples, i.e. a causal filter with zeros before the first frame. The frame
    rate is the metadata's ``ophys_frame_rate`` (else measured from the timestamps). Each time
    chunk is filtered with the ``n_time_steps - 1`` frames before it, so a window reads only
    its own chunks and one neighbour.

    Returns
    -------
    xarray.DataArray
        (``cell_specimen_id``, ``time``) float64, dask-backed, named ``filtered_events``.

    Examples
    --------
    >>> ds.ophys.filtered_events().isel(cell_specimen_id=0)  # doctest: +SKIP
    """
    if "events" not in ds.data_vars:
        raise SchemaError(
            "this ophys_experiment has no 'events' to filter (detected events exist in Visual "
            "Behavior 2P files only)"
        )
    if n_time_steps < 1:
        raise ValueError(f"n_time_steps must be at least 1, not {n_time_steps}")
    if not filter_scale_seconds > 0:
        raise ValueError(f"filter_scale_seconds must be > 0, not {filter_scale_seconds}")
    from scipy.stats import halfnorm

    rate = float(ds.attrs.get("ophys_frame_rate") or frame_rate(ds))
    kernel = halfnorm(loc=0, scale=filter_scale_seconds * rate).pdf(np.arange(n_time_steps))
    kernel = kernel / kernel.sum()
    events = _trace(ds, "events").transpose(CELL, TIME)
    data = events.data.astype(np.float64)
    if n_time_steps > 1:
        data = data.map_overlap(
            _causal_filter,
            depth={0: 0, 1: (n_time_steps - 1, 0)},  # only the past: a causal filter
            boundary="none",  # before the first frame: lfilter's zero state, as np.convolve
            kernel=kernel,
            dtype=np.float64,
        )
    else:
        data = data * kernel[0]
    out = events.copy(data=data)
    out.name = "filtered_events"
    out.attrs = {
        "long_name": "filtered events",
        "filter": f"causal half-normal, scale {filter_scale_seconds:g} s x {rate:g} Hz, "
        f"{n_time_steps} frames",
    }
    return out


def _causal_filter(block: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    from scipy.signal import lfilter

    return lfilter(kernel, 1.0, block, axis=-1)


def _trace(ds: xr.Dataset, trace: str) -> xr.DataArray:
    traces = [n for n, v in ds.data_vars.items() if v.dims == (CELL, TIME)]
    if trace == "filtered_events" and trace not in traces and "events" in traces:
        return filtered_events(ds)
    if trace not in traces:
        raise _NotFoundError(
            f"no trace {trace!r} with dims ({CELL}, {TIME}) in this Dataset"
            + _suggest(trace, traces)
        )
    data = ds[trace].data
    return ds[trace].copy(data=data if isinstance(data, da.Array) else da.from_array(data))


def _selection(table: pd.DataFrame, presentations: Any) -> pd.DataFrame:
    if presentations is None:
        selected = table
    elif isinstance(presentations, pd.DataFrame):
        selected = _selection(table, presentations.index)
    else:
        values = np.asarray(presentations)
        if values.dtype == bool:
            if values.shape != (len(table),):
                raise ValueError(
                    f"a boolean presentation mask must have one value per presentation "
                    f"({len(table)}), got shape {values.shape}"
                )
            selected = table[values]
        else:
            ids = np.atleast_1d(values)
            missing = ~np.isin(ids, table.index)
            if missing.any():
                bad = ids[missing][:5].tolist()
                raise _NotFoundError(
                    f"unknown {PRESENTATION} {bad!r} (ids run {table.index.min()}.."
                    f"{table.index.max()})" + _suggest(bad[0], table.index[:2000])
                )
            selected = table.loc[ids]
    if len(selected) == 0:
        raise ValueError(f"no stimulus presentations selected (of {len(table)}); nothing to do")
    return selected


def _check_window(window: Sequence[float], name: str = "window") -> tuple[float, float]:
    try:
        w0, w1 = (float(w) for w in window)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be (start, stop) in seconds, got {window!r}") from err
    if not (np.isfinite(w0) and np.isfinite(w1) and w0 < w1):
        raise ValueError(f"{name} must be finite with start < stop, got {window!r}")
    return w0, w1


def _drop_outside(ids: np.ndarray, ok: np.ndarray, what: str) -> None:
    if not ok.any():
        raise ValueError(
            f"every selected presentation's window ({len(ids)}) falls outside the recording "
            f"({what}); choose a shorter window or other presentations"
        )
    if not ok.all():
        bad = ids[~ok]
        warnings.warn(
            f"dropped {len(bad)} of {len(ids)} presentation(s) whose window falls outside the "
            f"recording ({what}): {PRESENTATION} {bad[:10].tolist()}"
            + (" ..." if len(bad) > 10 else ""),
            UserWarning,
            stacklevel=3,
        )


def trial_responses(
    ds: xr.Dataset,
    *,
    window: Sequence[float] = (-0.5, 1.0),
    presentations: Any = None,
    trace: str = "dff",
) -> xr.DataArray:
    """Each presentation's response, interpolated onto a regular grid at the frame rate.

    Parameters
    ----------
    ds
        An ``ophys_experiment`` Dataset.
    window
        (start, stop) in seconds relative to each ``start_time``; grid points are the multiples
        of the frame period inside it (both ends included), so 0 is always a grid point.
    presentations
        ``stimulus_presentation_id`` values, a boolean mask over the table, or a (filtered)
        ``stimulus_presentations`` DataFrame; default all.
    trace
        Any (``cell_specimen_id``, ``time``) variable: ``"dff"``, ``"events"``, ..., or
        ``"filtered_events"`` (:func:`filtered_events` with AllenSDK's defaults)

    Returns
    -------
    xarray.DataArray
        Lazy, dims (``stimulus_presentation_id``, ``time_relative_to_stimulus_onset``,
        ``cell_specimen_id``), linear interpolation of the trace.

    Raises
    ------
    KeyError
        Unknown trace or presentation ids.
    ValueError
        Bad or empty window, empty selection, or no window inside the recording. Presentations
        whose window leaves the recording are dropped with a ``UserWarning``.

    Examples
    --------
    >>> ds.ophys.trial_responses(window=(-0.5, 1.0)).mean(PRESENTATION)  # doctest: +SKIP
    """
    return _trial_responses(ds, stimulus_presentations(ds), window, presentations, trace)


def _trial_responses(
    ds: xr.Dataset, table: pd.DataFrame, window: Sequence[float], presentations: Any, trace: str
) -> xr.DataArray:
    w0, w1 = _check_window(window)
    arr = _trace(ds, trace)
    selected = _selection(table, presentations)
    rate = frame_rate(ds)
    steps = np.arange(np.ceil(w0 * rate - 1e-6), np.floor(w1 * rate + 1e-6) + 1)
    if len(steps) == 0:
        raise ValueError(f"window {window!r} holds no frame at {rate:.3f} Hz; widen it")
    offsets = steps / rate
    t = np.asarray(ds.indexes[TIME], dtype=np.float64)
    onset = selected["start_time"].to_numpy(dtype=np.float64)
    ids = selected.index.to_numpy()
    ok = np.isfinite(onset) & (onset + offsets[0] >= t[0]) & (onset + offsets[-1] <= t[-1])
    _drop_outside(ids, ok, f"{t[0]:.3f}..{t[-1]:.3f} s, window {w0:g}..{w1:g} s")
    i0, frac = _fractional(t, onset[ok][:, None] + offsets[None, :])
    data = _sample(arr.data, i0, frac)
    return xr.DataArray(
        data,
        dims=(PRESENTATION, RELATIVE_TIME, CELL),
        coords={
            PRESENTATION: ids[ok],
            RELATIVE_TIME: xr.Variable(RELATIVE_TIME, offsets, {"units": "s"}),
            CELL: ds.indexes[CELL],
        },
        name=trace,
        attrs={"units": arr.attrs.get("units", ""), "trace": trace, "window": [w0, w1]},
    )


def _flagged(
    ds: xr.Dataset, column: str, window: Sequence[float], trace: str, why: str
) -> xr.DataArray:
    table = stimulus_presentations(ds)
    if column not in table:
        raise SchemaError(
            f"{why} needs the Visual Behavior column stimulus_presentations.{column!r}; this "
            f"experiment's table has {sorted(table.columns)!r}"
        )
    # NaN (rows of another stimulus's table, where the column does not apply) is not a flag
    flags = pd.to_numeric(table[column], errors="coerce").fillna(0).to_numpy() != 0
    if column == "is_change" and "trials_id" in ds.dims:  # AllenSDK's, derived on load
        flags = behavior.stimulus_presentations(ds)["is_change"].to_numpy(bool)
    return _trial_responses(ds, table, window, flags, trace)


def change_responses(
    ds: xr.Dataset, *, window: Sequence[float] = (-0.5, 1.0), trace: str = "dff"
) -> xr.DataArray:
    """:func:`trial_responses` on the image-change flashes (``is_change``), Visual Behavior."""
    return _flagged(ds, "is_change", window, trace, "change_responses")


def omission_responses(
    ds: xr.Dataset, *, window: Sequence[float] = (-0.5, 1.0), trace: str = "dff"
) -> xr.DataArray:
    """:func:`trial_responses` on the omitted flashes (``omitted``), Visual Behavior."""
    return _flagged(ds, "omitted", window, trace, "omission_responses")


def mean_response(
    ds: xr.Dataset,
    *,
    by: str | Sequence[str] = ("image_name",),
    window: Sequence[float] = (0.0, 0.5),
    baseline: Sequence[float] | None = None,
    presentations: Any = None,
    trace: str = "dff",
) -> xr.DataArray:
    """Mean response per condition per cell.

    Each presentation's response is the mean of the interpolated trace over ``window``
    (half-open, seconds after onset) minus, if ``baseline`` is given, its mean over
    ``baseline``; responses are then averaged over presentations sharing the ``by`` values.

    Parameters
    ----------
    by
        Stimulus table column(s) defining a condition, e.g. ``"image_name"`` or
        ``["orientation", "temporal_frequency"]``. Missing values (NaN) are a condition too.
    window, baseline
        (start, stop) in seconds relative to onset.
    presentations, trace
        As in :func:`trial_responses`.

    Returns
    -------
    xarray.DataArray
        Lazy, dims (*by, ``cell_specimen_id``) over every combination of the observed values;
        coord ``n_presentations`` (dims *by) counts the presentations averaged: combinations
        never shown are NaN with ``n_presentations == 0``.

    Examples
    --------
    >>> ds.ophys.mean_response(by="image_name", baseline=(-0.5, 0.0)).compute()  # doctest: +SKIP
    """
    by = [by] if isinstance(by, str) else list(by)
    if not by:
        raise ValueError("by must name at least one stimulus_presentations column")
    table = stimulus_presentations(ds)
    for col in by:
        if col not in table:
            raise _NotFoundError(
                f"no stimulus_presentations column {col!r}" + _suggest(col, table.columns)
            )
    w0, w1 = _check_window(window)
    span = [w0, w1]
    if baseline is not None:
        b0, b1 = _check_window(baseline, "baseline")
        span = [min(w0, b0), max(w1, b1)]
    tr = _trial_responses(ds, table, span, presentations, trace)
    rel = tr[RELATIVE_TIME].values

    def mean_over(a: float, b: float, what: str) -> xr.DataArray:
        inside = (rel >= a - 1e-9) & (rel < b - 1e-9)
        if not inside.any():
            raise ValueError(f"{what} {a:g}..{b:g} s holds no frame of the response grid")
        return tr.isel({RELATIVE_TIME: np.flatnonzero(inside)}).mean(RELATIVE_TIME)

    response = mean_over(w0, w1, "window")
    if baseline is not None:
        response = response - mean_over(b0, b1, "baseline")
    keys = table.loc[tr[PRESENTATION].values, by]
    codes, levels = [], []
    for col in by:
        code, uniques = pd.factorize(keys[col], sort=True, use_na_sentinel=False)
        codes.append(code)
        levels.append(np.asarray(uniques))
    shape = tuple(len(u) for u in levels)
    flat = np.ravel_multi_index(codes, shape)
    n_cond = int(np.prod(shape))
    counts = np.bincount(flat, minlength=n_cond)
    weights = np.zeros((n_cond, len(flat)))
    weights[flat, np.arange(len(flat))] = 1.0 / counts[flat]
    summed = da.tensordot(weights, response.data, axes=(1, 0))
    summed = da.where((counts > 0)[:, None], summed, np.nan).reshape(*shape, -1)
    return xr.DataArray(
        summed,
        dims=(*by, CELL),
        coords={
            **dict(zip(by, levels)),
            CELL: ds.indexes[CELL],
            "n_presentations": (tuple(by), counts.reshape(shape)),
        },
        name="mean_response",
        attrs={
            "units": tr.attrs.get("units", ""),
            "trace": trace,
            "window": [w0, w1],
            "baseline": [] if baseline is None else [b0, b1],
        },
    )


# --------------------------------------------------------------------------- behaviour


def running_speed(ds: xr.Dataset) -> xr.DataArray:
    """Running speed (cm/s) linearly interpolated onto the ophys timestamps, lazily.

    Frames before the wheel record starts or after it ends are NaN (there is no data there).
    """
    if "running_speed.speed" not in ds.variables:
        raise SchemaError(
            "this ophys_experiment has no running speed ('running_speed.speed' along "
            "'running_speed_time')"
        )
    src = ds["running_speed.speed"]
    src_t = np.asarray(ds.indexes[src.dims[0]], dtype=np.float64)
    data = src.data if isinstance(src.data, da.Array) else da.from_array(np.asarray(src.data))
    t = np.asarray(ds.indexes[TIME], dtype=np.float64)
    i0, frac = _fractional(src_t, t)
    speed = _sample(data[None, :], i0[:, None], frac[:, None])[:, 0, 0]
    return xr.DataArray(
        speed,
        dims=(TIME,),
        coords={TIME: ds.indexes[TIME]},
        name="running_speed",
        attrs={"units": src.attrs.get("units", "cm/s")},
    )


# --------------------------------------------------------------------------- drifting gratings


#: Lake names of :func:`drifting_grating_metrics` (first six) and AllenSDK ``SessionAnalysis``
#: names of the rest (``pref_dir_dg`` = ``pref_ori_dg``, ``p_dg`` = ``ptest_dg``).
DG_METRICS = (
    "pref_ori_dg",
    "pref_tf_dg",
    "osi_dg",
    "dsi_dg",
    "peak_dff_dg",
    "ptest_dg",
    "pref_dir_dg",
    "p_dg",
    "g_osi_dg",
    "g_dsi_dg",
    "reliability_dg",
    "tfdi_dg",
    "run_mod_dg",
    "p_run_mod_dg",
)


def drifting_grating_metrics(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's drifting-grating metrics per cell (``DriftingGratings(data_set).peak``).

    As :func:`abo_lake.vc2p_metrics.stimulus_analysis` ``(ds, "drifting_gratings")``: sweep
    response = corrected fluorescence in each presentation's 30 + 60 + 30 frames as percent
    ΔF/F from the mean of the 30 frames before; its mean over the 60 sweep frames is the trial
    response. The preferred (direction, TF) is the argmax of the condition means; ``osi_dg`` =
    (pref − orth)/(pref + orth) with orth the mean of ±90°, ``dsi_dg`` = (pref − null)/(pref +
    null) with null at +180°, both at the preferred TF; ``ptest_dg`` (= ``p_dg``) the one-way
    ANOVA over every condition plus the blank; ``g_osi_dg``/``g_dsi_dg`` AllenSDK's circular
    variance terms, ``reliability_dg`` the mean trial-to-trial correlation at the preferred
    condition, ``tfdi_dg`` the TF discrimination index, ``run_mod_dg``/``p_run_mod_dg`` the
    running modulation and its Welch t-test p (running: mean speed ≥ 1 cm/s; NaN with fewer
    than 3 running or still trials). Equal to AllenSDK 2.16.2 on the same file
    (``tests/test_vc2p_metrics.py``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``cell_specimen_id``, columns :data:`DG_METRICS`: ``pref_ori_dg`` (direction,
        deg), ``pref_tf_dg`` (Hz), ``osi_dg``, ``dsi_dg``, ``peak_dff_dg`` (% ΔF/F),
        ``ptest_dg``, then AllenSDK's ``SessionAnalysis`` names.

    Raises
    ------
    SchemaError
        Without ``corrected_fluorescence``.
    ValueError
        Without drifting-grating presentations (only three_session_A has them).

    Examples
    --------
    >>> ds.ophys.drifting_grating_metrics().query("ptest_dg < 0.05")  # doctest: +SKIP
    """
    from abo_lake import vc2p_metrics  # it builds on this module

    m = vc2p_metrics.stimulus_metrics(ds, stimuli=("drifting_gratings",))
    m["pref_ori_dg"], m["ptest_dg"] = m["pref_dir_dg"].astype(np.float64), m["p_dg"]
    m["pref_tf_dg"] = m["pref_tf_dg"].astype(np.float64)
    return m[list(DG_METRICS)]


# --------------------------------------------------------------------------- interop


def to_pynapple(ds: xr.Dataset, *, trace: str = "dff") -> Any:
    """The trace as a ``pynapple.TsdFrame`` (time × cell; loads it). Needs pynapple."""
    try:
        import pynapple as nap
    except ImportError as err:
        raise ImportError(
            "to_pynapple needs pynapple, which is not installed; install it with "
            "`pip install pynapple` (or `conda install -c conda-forge pynapple`)"
        ) from err
    arr = _trace(ds, trace)
    return nap.TsdFrame(
        t=np.asarray(ds.indexes[TIME]),
        d=np.asarray(arr.transpose(TIME, CELL).values),
        columns=np.asarray(ds.indexes[CELL]),
    )
