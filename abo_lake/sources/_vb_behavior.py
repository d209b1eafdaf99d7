"""The behavior part of Visual Behavior NWB 2 files, as AllenSDK 2.16.2 writes it.

Shared by the readers of Visual Behavior 2P experiments (:mod:`abo_lake.sources.vbo_ophys`),
behavior-only sessions (:mod:`abo_lake.sources.vbo_behavior`) and Visual Behavior Neuropixels
sessions: :func:`read_behavior` returns the variables and attributes, :data:`MAPPED_HDF5` the
globs of what it maps and :func:`fidelity_mappings` how each mapped dataset is held. Where the
files differ from a naive reading, see the layout notes of ``shared/tools/allensdk/README.md``
(numbers below). The lake stores what the file stores (lossless); AllenSDK's on-load
derivations (``is_change`` recomputed, blink filtering, ``end_time``) are done by
:mod:`abo_lake.behavior`.

Variables (``<table>.<column>`` along each table's dim):

- ``stimulus_presentations.<col>`` along ``stimulus_presentation_id`` (0..n-1): every
  ``intervals/<stimulus>_presentations`` table (note 13) concatenated in name order, then
  sorted by ``start_time`` (stable), columns as stored (``stop_time``, ``image_set``; 'N/A'
  kept). A column some tables lack (note 15) is filled ("" for text, NaN for numbers, bools
  then float64 with ``attrs["source_dtype"] = "bool"``) and names those tables' stimuli in
  ``attrs["absent_in"]`` (rows are told apart by ``stimulus_name``); pynwb's ``tags`` and
  ``timeseries`` columns and the row ids stay in the raw copy.
- ``trials.<col>`` along ``trials_id``; ``trials.lick_times`` flat along ``trials.lick`` with
  ``trials.lick_times_index`` (note 22).
- ``licks.timestamps``, ``licks.frame`` along ``lick`` (note 23); ``rewards.timestamps``,
  ``rewards.volume`` (mL), ``rewards.autorewarded`` along ``reward`` (note 24); zero-length
  when the module is absent.
- ``running_speed.speed``, ``.speed_unfiltered``, ``.dx``, ``.v_sig``, ``.v_in`` along
  ``running_speed_time`` (note 25).
- ``stimulus_timestamps`` along ``stimulus_frame`` (note 26).
- ``eye_tracking.<eye|pupil|cr>_center_x|_y|_area|_area_raw|_width|_height|_phi`` and
  ``eye_tracking.likely_blink`` (as stored) along ``eye_tracking_time`` (note 27).
- ``stimulus_templates.warped`` (uint8) and ``stimulus_templates.unwarped`` (float64, NaN off
  screen) with dims (``image_name``, ``template_y``, ``template_x``), coord ``image_name`` in
  template order (note 21).

Attributes: ``task_parameters.<name>`` (the attributes of ``general/task_parameters``, note 9),
``eye_tracking_rig_geometry.<AllenSDK name>`` (note 27), ``stimulus_templates_name``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.fidelity import blockwise
from abo_lake.sources._hdf5 import lazy_array, read_str, require_dataset

__all__ = [
    "MAPPED_HDF5",
    "PRESENTATION",
    "attr_value",
    "behavior_attrs",
    "fidelity_mappings",
    "presentation_rows",
    "presentation_tables",
    "read_behavior",
]

PRESENTATION = "stimulus_presentation_id"
_EYE = {"eye_tracking": "eye", "pupil_tracking": "pupil", "corneal_reflection_tracking": "cr"}
_EYE_COLUMNS = (
    ("area", "area"),
    ("area_raw", "area_raw"),
    ("width", "width"),
    ("height", "height"),
    ("angle", "phi"),
)
_EYE_GROUP = "acquisition/EyeTracking"
_RIG = "processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata"
#: rig metadata dataset -> AllenSDK's key in ``eye_tracking_rig_geometry``
_RIG_NAMES = {
    "monitor_position": "monitor_position_mm",
    "monitor_rotation": "monitor_rotation_deg",
    "camera_position": "camera_position_mm",
    "camera_rotation": "camera_rotation_deg",
    "led_position": "led_position",
}
_RUNNING = ("speed", "speed_unfiltered", "dx")
_ACQUISITION = ("v_sig", "v_in")
_TARGET_BYTES = 2**21

#: TimeIntervals columns left to the raw copy: pynwb's ragged ``tags`` and the ``timeseries``
#: references (and, for presentations, the row ids: they are renumbered in start-time order).
INTERVALS_RAW = ("tags", "tags_index", "timeseries", "timeseries_index")
PRESENTATION_RAW = ("id", *INTERVALS_RAW)
_SERIES = ("data", "timestamps")

#: fnmatch globs of the absolute HDF5 dataset paths :func:`read_behavior` maps.
MAPPED_HDF5: tuple[str, ...] = (
    "/intervals/*_presentations/*",
    *(f"!/intervals/*_presentations/{c}" for c in PRESENTATION_RAW),
    "/intervals/trials/*",
    *(f"!/intervals/trials/{c}" for c in INTERVALS_RAW),
    *(f"/processing/licking/licks/{k}" for k in _SERIES),
    *(f"/processing/rewards/{s}/{k}" for s in ("volume", "autorewarded") for k in _SERIES),
    *(f"/processing/running/{s}/{k}" for s in _RUNNING for k in _SERIES),
    *(f"/acquisition/{s}/{k}" for s in _ACQUISITION for k in _SERIES),
    *(f"/processing/stimulus/timestamps/{k}" for k in _SERIES),
    f"/{_EYE_GROUP}/eye_tracking/timestamps",
    f"/{_EYE_GROUP}/likely_blink/data",
    *(
        f"/{_EYE_GROUP}/{series}/{key}"
        for series in _EYE
        for key in ("data", *(k for k, _ in _EYE_COLUMNS))
    ),
    "/stimulus/templates/*/data",
    "/stimulus/templates/*/unwarped",
    "/stimulus/templates/*/control_description",
)


def _error(f: h5py.File, what: str) -> SourceFileError:
    return SourceFileError(f"{f.filename}: {what}")


def _column(dset: h5py.Dataset) -> np.ndarray:
    """A small dataset, read now; strings become a plain ``<U`` array."""
    if h5py.check_string_dtype(dset.dtype) is not None:
        values = dset.asstr()[()]
        return np.asarray(values, dtype=str) if np.ndim(values) else np.asarray(str(values))
    return np.asarray(dset[()])


def _series_1d(path: Path, f: h5py.File, name: str, dim: str) -> xr.Variable:
    """A long 1-d dataset as a lazy variable in ~2 MB chunks."""
    dset = f[name]
    chunk = int(max(1, min(dset.shape[0], _TARGET_BYTES // max(1, dset.dtype.itemsize))))
    arr = lazy_array(path, f"/{name}", chunks=chunk)
    var = xr.Variable(dim, arr)
    var.encoding["chunks"] = arr.chunksize
    return var


def _units(name: str, var: xr.Variable) -> None:
    seconds = ("_time", "lick_times", ".duration", "response_latency", "trial_length")
    if name.endswith((*seconds, "change_time_no_display_delay")):
        var.attrs["units"] = "s"
    elif name.endswith("reward_volume"):
        var.attrs["units"] = "mL"


def _interval_columns(
    f: h5py.File, group: str, prefix: str, dim: str, skip: tuple[str, ...]
) -> dict[str, xr.Variable]:
    """Columns of a TimeIntervals table as ``<prefix>.<col>`` (ragged ones flat + index)."""
    g = f[group]
    out: dict[str, xr.Variable] = {}
    for col in (read_str(c) for c in g.attrs.get("colnames", [])):
        if col in skip:
            continue
        dset = require_dataset(f, f"{group}/{col}", f.filename, what="a column in colnames")
        if dset.dtype.kind in "OV" and h5py.check_string_dtype(dset.dtype) is None:
            raise _error(f, f"/{group}/{col} has dtype {dset.dtype}, expected numbers or text")
        if f"{col}_index" in g:
            flat_dim = f"{prefix}.{'lick' if col == 'lick_times' else col + '_item'}"
            out[f"{prefix}.{col}"] = xr.Variable(flat_dim, _column(dset))
            index = np.asarray(g[f"{col}_index"][()], dtype=np.int64)
            out[f"{prefix}.{col}_index"] = xr.Variable(dim, index)
        else:
            out[f"{prefix}.{col}"] = xr.Variable(dim, _column(dset))
    for name, var in out.items():
        _units(name, var)
    return out


def presentation_tables(f: h5py.File) -> list[str]:
    """The ``intervals/<stimulus>_presentations`` tables, in the order they are concatenated."""
    return sorted(k for k in f.get("intervals", {}) if k.endswith("_presentations"))


def _presentations(f: h5py.File, tables: list[str]) -> dict[str, xr.Variable]:
    """All presentation tables as one, in concatenation order (see the module docstring)."""
    parts: list[dict[str, xr.Variable]] = []
    for t in tables:
        cols = _interval_columns(
            f, f"intervals/{t}", "stimulus_presentations", "p", PRESENTATION_RAW
        )
        ragged = [n for n, v in cols.items() if v.dims != ("p",)]
        if ragged or "stimulus_presentations.start_time" not in cols:
            what = f"ragged column(s) {ragged}" if ragged else "no start_time column"
            raise _error(f, f"/intervals/{t} has {what}; expected flat presentation columns")
        parts.append(cols)
    names = list(dict.fromkeys(n for p in parts for n in p))
    absent = {n: [t for t, p in zip(tables, parts) if n not in p] for n in names}
    if any(absent.values()):  # rows are told apart by stimulus_name: it must name the table
        for t, p in zip(tables, parts):
            stim = p.get("stimulus_presentations.stimulus_name")
            want = t.removesuffix("_presentations")
            if stim is None or not np.all(stim.values == want):
                raise _error(
                    f,
                    f"/intervals/{t}: its stimulus_name column is not {want!r} on every row, "
                    "and the presentation tables have different columns; expected AllenSDK's "
                    "one table per stimulus_name",
                )
    merged: dict[str, xr.Variable] = {}
    for name in names:
        have = [p[name] for p in parts if name in p]
        text = any(v.dtype.kind in "OSU" for v in have)
        was_bool = all(v.dtype == bool for v in have)
        pieces = []
        for p in parts:
            n_rows = p["stimulus_presentations.start_time"].size
            if name in p:
                values = p[name].values
                if text and values.dtype.kind not in "OSU":
                    values = values.astype(str)  # numbers in a column others hold as text
                elif not text and absent[name]:
                    values = values.astype(np.float64)
                pieces.append(values)
            else:
                pieces.append(np.full(n_rows, "") if text else np.full(n_rows, np.nan))
        attrs = dict(have[0].attrs)
        if absent[name]:
            attrs["absent_in"] = [t.removesuffix("_presentations") for t in absent[name]]
            if was_bool:
                attrs["source_dtype"] = "bool"
        merged[name] = xr.Variable("p", np.concatenate(pieces), attrs)
    return merged


def presentation_rows(f: h5py.File) -> dict[str, np.ndarray]:
    """For each presentation table, the rows its source rows have in the stored table."""
    tables = presentation_tables(f)
    starts = [np.asarray(f[f"intervals/{t}/start_time"][()]) for t in tables]
    if not starts:
        return {}
    order = np.argsort(np.concatenate(starts), kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    bounds = np.cumsum([0, *(len(s) for s in starts)])
    return {t: where[bounds[i] : bounds[i + 1]] for i, t in enumerate(tables)}


def _template_group(f: h5py.File) -> str | None:
    """The one ``stimulus/templates/<image set>`` group, or None."""
    groups = sorted(f.get("stimulus/templates", {}))
    if not groups:
        return None
    if len(groups) > 1:
        raise _error(
            f,
            f"/stimulus/templates holds {len(groups)} template sets {groups!r}; expected one "
            "(AllenSDK's files have the session's image set only)",
        )
    return f"stimulus/templates/{groups[0]}"


def _templates(path: Path, f: h5py.File) -> tuple[dict[str, xr.Variable], dict[str, Any]]:
    group = _template_group(f)
    if group is None:
        return {}, {}
    g = f[group]
    for key in ("data", "control_description"):
        if key not in g:
            raise _error(f, f"/{group} has no {key!r}; expected an AllenSDK StimulusTemplate")
    names = _column(g["control_description"]).astype(str)
    dims = ("image_name", "template_y", "template_x")
    out: dict[str, xr.Variable] = {"image_name": xr.Variable("image_name", names)}
    for key, name in (("data", "warped"), ("unwarped", "unwarped")):
        if key not in g:
            continue
        dset = g[key]
        if dset.ndim != 3 or dset.shape[0] != len(names):
            raise _error(
                f,
                f"/{group}/{key} has shape {dset.shape}, expected ({len(names)}, height, width)",
            )
        # one image per chunk, cut into bands of rows to stay near 4 MB (a full-size unwarped
        # image is 1200 x 1920 float64, 18 MB)
        row_bytes = max(1, dset.shape[2] * dset.dtype.itemsize)
        rows = int(max(1, min(dset.shape[1], 2 * _TARGET_BYTES // row_bytes)))
        arr = lazy_array(path, f"/{group}/{key}", chunks=(1, rows, dset.shape[2]))
        var = xr.Variable(dims, arr)
        var.encoding["chunks"] = arr.chunksize
        out[f"stimulus_templates.{name}"] = var
    return out, {"stimulus_templates_name": group.rsplit("/", 1)[1]}


def _eye_tracking(path: Path, f: h5py.File) -> dict[str, xr.Variable]:
    if f"{_EYE_GROUP}/eye_tracking/timestamps" not in f:
        return {}
    g = f[_EYE_GROUP]
    times = np.asarray(g["eye_tracking/timestamps"][()], dtype=np.float64)
    dim = "eye_tracking_time"
    out: dict[str, xr.Variable] = {dim: xr.Variable(dim, times, {"units": "s"})}
    for series, short in _EYE.items():
        if series not in g:
            raise _error(f, f"/{_EYE_GROUP} has no {series!r}; expected AllenSDK's eye tracking")
        data = g[f"{series}/data"]
        if data.shape != (len(times), 2):
            raise _error(
                f, f"/{_EYE_GROUP}/{series}/data has shape {data.shape}, expected ({len(times)}, 2)"
            )
        centre = lazy_array(path, f"/{_EYE_GROUP}/{series}/data", chunks=(2**17, 2))
        for j, axis in enumerate("xy"):  # pixels, although the unit attribute says meters
            out[f"eye_tracking.{short}_center_{axis}"] = xr.Variable(
                dim, centre[:, j], {"units": "pixels"}
            )
        for key, col in _EYE_COLUMNS:
            if key in g[series]:
                name = f"{_EYE_GROUP}/{series}/{key}"
                out[f"eye_tracking.{short}_{col}"] = _series_1d(path, f, name, dim)
    if "likely_blink/data" in g:
        blink = np.asarray(g["likely_blink/data"][()]).astype(bool)
        out["eye_tracking.likely_blink"] = xr.Variable(dim, blink)
    return out


def _running(path: Path, f: h5py.File) -> dict[str, xr.Variable]:
    if "processing/running" not in f:
        return {}
    name = "processing/running/speed/timestamps"
    times = np.asarray(
        require_dataset(f, name, path, ndim=1, what="running speed times (s)")[()],
        dtype=np.float64,
    )
    dim = "running_speed_time"
    out: dict[str, xr.Variable] = {dim: xr.Variable(dim, times, {"units": "s"})}
    groups = [(n, f"processing/running/{n}") for n in _RUNNING] + [
        (n, f"acquisition/{n}") for n in _ACQUISITION
    ]
    for name, group in groups:
        if f"{group}/data" not in f:
            continue
        if f[f"{group}/data"].shape != times.shape:
            raise _error(
                f,
                f"/{group}/data has shape {f[f'{group}/data'].shape}, expected {times.shape} "
                "(one value per /processing/running/speed timestamp)",
            )
        var = _series_1d(path, f, f"{group}/data", dim)
        var.attrs["units"] = read_str(f[f"{group}/data"].attrs.get("unit", ""))
        out[f"running_speed.{name}"] = var
    return out


def _licks_rewards(f: h5py.File) -> dict[str, xr.Variable]:
    out: dict[str, xr.Variable] = {}
    times, frames = np.zeros(0), np.zeros(0, np.int64)
    if "processing/licking/licks" in f:  # a TimeSeries: data = stimulus frame, timestamps
        name = "processing/licking/licks"
        times = _column(require_dataset(f, f"{name}/timestamps", f.filename, ndim=1))
        what = "the stimulus frame of each lick"
        frames = _column(
            require_dataset(f, f"{name}/data", f.filename, length=len(times), what=what)
        )
    out["licks.timestamps"] = xr.Variable("lick", times, {"units": "s"})
    out["licks.frame"] = xr.Variable("lick", frames.astype(np.int64))
    rewards = f.get("processing/rewards")
    for name, key, dtype, units in (
        ("timestamps", "autorewarded/timestamps", np.float64, "s"),
        ("volume", "volume/data", np.float64, "mL"),
        ("autorewarded", "autorewarded/data", bool, None),
    ):
        values = (
            _column(rewards[key]).astype(dtype) if rewards is not None and key in rewards else None
        )
        if values is None:
            values = np.zeros(0, dtype)
        out[f"rewards.{name}"] = xr.Variable("reward", values, {"units": units} if units else {})
    return out


def attr_value(value: Any) -> Any:
    """An HDF5 attribute or scalar as str, int, float, bool or a list of them."""
    if isinstance(value, bytes | np.bytes_ | str):
        return read_str(value)
    arr = np.asarray(value)
    if arr.ndim:
        return [attr_value(v) for v in arr.ravel()]
    item = arr[()]
    item = item.item() if isinstance(item, np.generic) else item
    return read_str(item) if isinstance(item, bytes | str) else item


def behavior_attrs(f: h5py.File) -> dict[str, Any]:
    """Task parameters and eye-tracking rig geometry as attributes (see the module docstring).

    Task parameters are the attributes of ``general/task_parameters`` as stored (lists of
    strings stay strings; :func:`abo_lake.behavior.task_parameters` makes them AllenSDK's).
    """
    attrs: dict[str, Any] = {}
    group = f.get("general/task_parameters")
    if isinstance(group, h5py.Group):
        for key, value in group.attrs.items():
            if key not in ("namespace", "neurodata_type", "object_id", "help"):
                attrs[f"task_parameters.{key}"] = attr_value(value)
    rig = f.get(_RIG)
    if isinstance(rig, h5py.Group):
        if "equipment" in rig.attrs:
            attrs["eye_tracking_rig_geometry.equipment"] = attr_value(rig.attrs["equipment"])
        for key, name in _RIG_NAMES.items():
            if isinstance(rig.get(key), h5py.Dataset):
                values = np.asarray(rig[key][()], dtype=np.float64).ravel()
                attrs[f"eye_tracking_rig_geometry.{name}"] = [float(v) for v in values]
    return attrs


def read_behavior(path: str | Path, f: h5py.File) -> tuple[dict[str, xr.Variable], dict[str, Any]]:
    """Read the behavior part of a Visual Behavior NWB 2 file.

    Parameters
    ----------
    path
        The file (its big arrays stay lazy, read through it).
    f
        The same file, open.

    Returns
    -------
    variables : dict
        Name -> :class:`xarray.Variable`, including the index coordinates of each table
        (``stimulus_presentation_id``, ``trials_id``, ``running_speed_time``,
        ``eye_tracking_time``, ``image_name``): ``xr.Dataset(variables)`` makes them coords.
    attrs : dict
        Task parameters, eye-tracking rig geometry and the templates' name.

    Raises
    ------
    SourceFileError
        Naming the file, the HDF5 path and what was expected, for a layout it does not know.
    """
    p = Path(path)
    data: dict[str, xr.Variable] = {}
    tables = presentation_tables(f)
    if tables:
        merged = _presentations(f, tables)
        order = np.argsort(merged["stimulus_presentations.start_time"].values, kind="stable")
        for name, var in merged.items():
            data[name] = xr.Variable(PRESENTATION, var.values[order], var.attrs)
        data[PRESENTATION] = xr.Variable(PRESENTATION, np.arange(len(order), dtype=np.int64))
    if "intervals/trials" in f:
        data.update(_interval_columns(f, "intervals/trials", "trials", "trials_id", INTERVALS_RAW))
        ids = np.asarray(f["intervals/trials/id"][()], dtype=np.int64)
        data["trials_id"] = xr.Variable("trials_id", ids)
    data.update(_licks_rewards(f))
    data.update(_running(p, f))
    if "processing/stimulus/timestamps/timestamps" in f:
        name = "processing/stimulus/timestamps/timestamps"
        data["stimulus_timestamps"] = _series_1d(p, f, name, "stimulus_frame")
        data["stimulus_timestamps"].attrs["units"] = "s"
    data.update(_eye_tracking(p, f))
    templates, attrs = _templates(p, f)
    data.update(templates)
    attrs.update(behavior_attrs(f))
    return data, attrs


# --- fidelity ----------------------------------------------------------------------------------


def as_dtype(dtype: Any) -> Any:
    """A fidelity transform: blocks as ``dtype``."""
    return blockwise(lambda a: np.asarray(a).astype(dtype))


def decoded_strings(a: np.ndarray) -> np.ndarray:
    """Decoded strings as ``<U`` (numbers pass through)."""
    a = np.asarray(a)
    if a.dtype.kind in "OST":
        return np.asarray([read_str(v) for v in a.ravel()], dtype=str).reshape(a.shape)
    return a


def _strings_as(stored: xr.DataArray | None) -> Any:
    """:func:`decoded_strings`, then numbers as the stored column holds them: float64 when tables
    lacking the column made it NaN-padded, text when other tables hold it as text."""

    def transform(a: np.ndarray) -> np.ndarray:
        a = decoded_strings(a)
        if stored is not None and a.dtype.kind in "biuf" and stored.dtype.kind in "fU":
            return a.astype(stored.dtype if stored.dtype.kind == "f" else str)
        return a

    return transform


def _rows_view(ds: xr.Dataset, rows: np.ndarray) -> xr.Dataset:
    return ds.isel({PRESENTATION: rows})


def _eye_view(ds: xr.Dataset, shorts: tuple[str, ...]) -> xr.Dataset:
    """Each series' ``<short>_center_x``/``_y`` stacked back into the source's (T, 2) data."""
    out = {}
    for short in shorts:
        axes = [ds[f"eye_tracking.{short}_center_{a}"] for a in "xy"]
        out[short] = xr.concat(axes, dim="axis").transpose("eye_tracking_time", "axis")
    return xr.Dataset(out)


def fidelity_mappings(
    ds: xr.Dataset, path: str | Path, f: h5py.File
) -> list[tuple[Any, dict[str, Any]]]:
    """How each dataset :data:`MAPPED_HDF5` matches in ``f`` is held by ``ds``.

    For :func:`abo_lake.fidelity_mapped.check_reader` (through each reader's own
    ``fidelity_mappings``). Documented transforms: each presentation table with its own rows
    of the concatenated, start-time-sorted table (text decoded; numbers as float64 where other
    tables lack the column, as text where others hold it as text); trials ``id`` ->
    ``trials_id``; licks ``data`` -> ``licks.frame`` (int64); rewards ``autorewarded`` and
    ``likely_blink`` as bool; every running series' ``timestamps`` -> ``running_speed_time``;
    stimulus timestamps ``data`` and ``timestamps`` -> ``stimulus_timestamps``; eye tracking
    ``data`` (T, 2) -> ``<short>_center_x``/``_y``, ``angle`` -> ``<short>_phi``, the
    timestamps of ``eye_tracking`` -> ``eye_tracking_time``; template ``data`` ->
    ``stimulus_templates.warped``, ``unwarped`` as is, ``control_description`` ->
    ``image_name``.

    Parameters
    ----------
    ds
        The Dataset the reader made of ``path`` (maybe re-opened from the lake).
    path
        The source file.
    f
        The same file, open.

    Returns
    -------
    list of (view, mapping)
        Pairs for :func:`abo_lake.fidelity.check_mapped`.
    """
    del path  # the mappings name HDF5 paths of ``f``
    out: list[tuple[Any, dict[str, Any]]] = []
    main: dict[str, Any] = {}
    if "intervals/trials" in f:
        g = f["intervals/trials"]
        main["/intervals/trials/id"] = ("trials_id", as_dtype(np.int64))
        for col, obj in g.items():
            if isinstance(obj, h5py.Dataset) and col not in ("id", *INTERVALS_RAW):
                func = as_dtype(np.int64) if col.endswith("_index") else decoded_strings
                main[f"/intervals/trials/{col}"] = (f"trials.{col}", func)
    main["/processing/licking/licks/timestamps"] = ("licks.timestamps", None)
    main["/processing/licking/licks/data"] = ("licks.frame", as_dtype(np.int64))
    for series in ("volume", "autorewarded"):
        main[f"/processing/rewards/{series}/timestamps"] = (
            "rewards.timestamps",
            as_dtype(np.float64),
        )
    main["/processing/rewards/volume/data"] = ("rewards.volume", as_dtype(np.float64))
    main["/processing/rewards/autorewarded/data"] = ("rewards.autorewarded", as_dtype(bool))
    for group in [f"processing/running/{n}" for n in _RUNNING] + [
        f"acquisition/{n}" for n in _ACQUISITION
    ]:
        name = group.rsplit("/", 1)[1]
        main[f"/{group}/data"] = (f"running_speed.{name}", None)
        main[f"/{group}/timestamps"] = ("running_speed_time", None)
    for key in _SERIES:
        main[f"/processing/stimulus/timestamps/{key}"] = ("stimulus_timestamps", None)
    eye = f"/{_EYE_GROUP}"
    main[f"{eye}/eye_tracking/timestamps"] = ("eye_tracking_time", None)
    main[f"{eye}/likely_blink/data"] = ("eye_tracking.likely_blink", as_dtype(bool))
    shorts = []
    for series, short in _EYE.items():
        if f"{eye}/{series}/data" in f:
            shorts.append(short)
        for key, col in _EYE_COLUMNS:
            main[f"{eye}/{series}/{key}"] = (f"eye_tracking.{short}_{col}", None)
    group = _template_group(f)
    if group is not None:
        main[f"/{group}/data"] = ("stimulus_templates.warped", None)
        main[f"/{group}/unwarped"] = ("stimulus_templates.unwarped", None)
        main[f"/{group}/control_description"] = ("image_name", decoded_strings)
    out.append(({}, {k: v for k, v in main.items() if k in f}))
    out.append(
        (
            functools.partial(_eye_view, shorts=tuple(shorts)),
            {f"{eye}/{s}/data": (short, None) for s, short in _EYE.items() if short in shorts},
        )
    )
    for table, where in presentation_rows(f).items():
        g = f[f"intervals/{table}"]
        items = {
            f"/intervals/{table}/{col}": (
                f"stimulus_presentations.{col}",
                _strings_as(ds.get(f"stimulus_presentations.{col}")),
            )
            for col, obj in g.items()
            if isinstance(obj, h5py.Dataset) and col not in PRESENTATION_RAW
        }
        out.append((functools.partial(_rows_view, rows=where), items))
    return out
