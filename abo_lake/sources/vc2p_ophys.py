"""Reader of Visual Coding 2P (Brain Observatory 2016) NWB 1.0.5 files.

pynwb cannot read NWB 1, so, like AllenSDK's ``BrainObservatoryNwbDataSet``, this reads fixed
HDF5 paths with h5py (``ALLEN_DATA.md`` section 3). Traces, masks and images stay lazy (dask
over :func:`~abo_lake.sources._hdf5.lazy_array`); ids, timestamps and stimulus tables are small
and read eagerly.

Layout of the ``ophys_experiment`` Dataset (path ``ophys/experiment/<ophys_experiment_id>``):

- dims ``cell_specimen_id`` (coord ``cell_roi_id``, int64, parsed from the ``roi_ids`` strings;
  -1 where a string is not a number), ``time`` (``DfOverF`` timestamps, s), ``y``, ``x`` (µm);
- ``dff``, ``corrected_fluorescence`` (float32, as AllenSDK computes it: raw ``Fluorescence``
  data - r * ``neuropil_traces``, or from pipeline version 2.0 on (``general/generated_by``,
  attr ``pipeline_version``) the demixed traces - r * neuropil with the neuropil response's
  r), ``neuropil_fluorescence``, ``demixed_fluorescence`` (cell, time);
  ``r``, ``rmse`` along cell; ``roi_mask`` (cell, y, x) bool = ``img_mask > 0``, with masks taken
  in ``roi_list`` order (or the sorted ``roi_*`` groups when ``roi_list`` does not name them, as in
  the truncated reference file); ``max_projection`` and, if present, ``average_projection``;
- ``running_speed.speed`` (cm/s) along ``running_speed_time``; ``motion_correction.<name>``
  (pixels; one per column, named by the series' ``feature_description`` as AllenSDK names
  them) along ``motion_correction_time`` (the real files have one more motion frame than
  traces, so they keep their own time dim); eye tracking where the session has it
  (``EyeTracking/pupil_location[_spherical]`` as ``eye_tracking.<series>_x``/``_y``,
  ``PupilTracking/pupil_size`` as ``eye_tracking.pupil_size``, units from the file) along
  ``eye_tracking_time`` (a series with other timestamps: ``eye_tracking.<series>_time``);
- ``stimulus_presentations.<col>`` along ``stimulus_presentation_id``: every stimulus under
  ``stimulus/presentation`` concatenated and ordered by start frame: ``stimulus_name``,
  ``start_frame``/``end_frame`` (int64, the ``frame_duration`` ophys frame indices; -1 when
  missing), ``start_time``/``stop_time``/``duration`` (s, looked up in the ophys timestamps; **NaN
  when a frame index falls outside the timestamps**, as in the truncated reference file),
  ``orientation``, ``temporal_frequency``, ``spatial_frequency``, ``phase``, ``blank_sweep``,
  ``frame`` (-1 = blank natural scene), ``repeat`` (natural movies) as float64, NaN where not
  applicable, plus any other feature as named in the file (the truncated reference file has
  one named "1.0"). Spontaneous intervals
  pair each +1 event with the next -1 event; an unmatched start gets ``end_frame`` -1.

Attrs carry the Allen metadata (``ophys_experiment_id``, ``experiment_container_id``,
``session_type``, ``targeted_structure``, ``imaging_depth``, ``cre_line`` (as AllenSDK's
``BrainObservatoryNwbDataSet.get_metadata`` gives it: the genotype's first part, ``/wt`` kept,
e.g. ``Rorb-IRES2-Cre/wt``; Visual Behavior's drops it), ``reporter_line``,
``genotype``, ``ophys_frame_rate``, ...). Datasets listed in :data:`MAPPED_HDF5` are stored
bit-faithfully in this layout; everything else (raw fluorescence, metadata strings, templates,
ROI masks and pixel lists, the spontaneous IntervalSeries, ...) is left to the raw copier.
Duplicate ``cell_specimen_id`` values (not seen in Brain Observatory files) are kept as they are.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.fidelity import blockwise
from abo_lake.sources._hdf5 import lazy_array, open_hdf5, read_str, require_hdf5
from abo_lake.writer import cell_major_layout

__all__ = ["MAPPED_HDF5", "fidelity_mappings", "read", "sniff"]

_PIPE = "/processing/brain_observatory_pipeline"
_DFF = f"{_PIPE}/DfOverF/imaging_plane_1"
_FL = f"{_PIPE}/Fluorescence/imaging_plane_1"
_SEG = f"{_PIPE}/ImageSegmentation"
_REF = f"{_SEG}/imaging_plane_1/reference_images"
_RUN = f"{_PIPE}/BehavioralTimeSeries/running_speed"
_STIM = "/stimulus/presentation"
_REQUIRED = (f"{_DFF}/data", f"{_DFF}/timestamps", f"{_SEG}/cell_specimen_ids")
_CHUNK_BYTES = 4 * 2**20
_EYE_GROUPS = ("EyeTracking", "PupilTracking")
_PARAMS = ("orientation", "temporal_frequency", "spatial_frequency", "phase", "blank_sweep")

#: fnmatch globs of the HDF5 datasets this reader stores faithfully in its layout.
MAPPED_HDF5: tuple[str, ...] = (
    f"{_DFF}/data",
    f"{_DFF}/timestamps",
    f"{_FL}/r",
    f"{_FL}/rmse",
    f"{_FL}_neuropil_response/data",
    f"{_FL}_demixed_signal/data",
    f"{_SEG}/cell_specimen_ids",
    f"{_REF}/maximum_intensity_projection_image/data",
    f"{_REF}/average_image/data",
    f"{_RUN}/data",
    f"{_RUN}/timestamps",
    f"{_PIPE}/MotionCorrection/2p_image_series/xy_translation*/data",
    f"{_PIPE}/MotionCorrection/2p_image_series/xy_translation*/timestamps",
    *(f"{_PIPE}/{g}/*/{k}" for g in _EYE_GROUPS for k in ("data", "timestamps")),
    *(
        f"{_STIM}/{name}_stimulus/{field}"
        for name in (
            "drifting_gratings",
            "static_gratings",
            "natural_scenes",
            "natural_movie_*",
            "locally_sparse_noise*",
        )
        for field in ("data", "features", "frame_duration")
    ),
)


def _nwb_version(f: h5py.File) -> str:
    if "nwb_version" in f and isinstance(f["nwb_version"], h5py.Dataset):
        return read_str(f["nwb_version"][()])
    return read_str(f.attrs["nwb_version"]) if "nwb_version" in f.attrs else ""


def sniff(path: str | Path) -> bool:
    """Return True if ``path`` is a Brain Observatory NWB 1 file (never raises)."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return _nwb_version(f).startswith("NWB-1") and f"{_DFF}/data" in f
    except Exception:  # any unreadable file is simply not ours
        return False


def read(path: str | Path) -> dict[str, xr.Dataset]:
    """Read one Visual Coding 2P NWB 1 file into its ``ophys_experiment`` Dataset.

    Parameters
    ----------
    path
        A Brain Observatory 2016 NWB 1.0.x file.

    Returns
    -------
    dict
        ``{"ophys/experiment/<ophys_experiment_id>": Dataset}`` (layout in the module docstring).

    Raises
    ------
    SourceFileError
        If the file is missing, not HDF5, truncated, of another modality or inconsistent.

    Examples
    --------
    >>> (ds,) = read("496908818.nwb").values()  # doctest: +SKIP
    """
    p = Path(path)
    expected = "expected a Visual Coding 2P (Brain Observatory 2016) NWB 1.0.5 file"
    if not p.is_file():
        raise SourceFileError(f"{p}: no such file; {expected}")
    require_hdf5(p, expected)
    with open_hdf5(p, expected) as f:
        version = _nwb_version(f)
        if not version.startswith("NWB-1") or _PIPE not in f:
            raise SourceFileError(
                f"{p}: not a Brain Observatory NWB 1 file; found nwb_version {version!r} and "
                f"top-level groups {sorted(f)!r}, {expected} with {_PIPE!r}. Is this another "
                "modality?"
            )
        missing = [name for name in _REQUIRED if name not in f]
        if missing:
            raise SourceFileError(f"{p}: missing {missing!r}; {expected}")
        try:
            ds = _build(p, f)
        except (OSError, KeyError, TypeError, ValueError) as err:
            if isinstance(err, SourceFileError):
                raise
            raise SourceFileError(f"{p}: cannot read ({err!r}); {expected}") from err
    return {f"ophys/experiment/{ds.attrs['ophys_experiment_id']}": ds}


# --------------------------------------------------------------------------- pieces


def _to_int(value: Any) -> int:
    s = read_str(value).strip()
    try:
        return int(s)
    except ValueError:
        try:
            return int(float(s))
        except ValueError:
            return -1


def _trace_chunks(n_cells: int, n_time: int) -> tuple[int, int]:
    cells = max(1, min(n_cells, 32))
    return cells, max(1, min(n_time, _CHUNK_BYTES // (4 * cells)))


def pipeline_version(f: h5py.File) -> str:
    """AllenSDK's ``pipeline_version`` of a file: the last ``general/generated_by`` entry,
    ``"0.9"`` without one."""
    if "general/generated_by" in f:
        values = np.atleast_1d(f["general/generated_by"][()])
        if values.size:
            return read_str(values[-1])
    return "0.9"


def _demixed_correction(f: h5py.File) -> bool:
    """Whether the file's pipeline (version 2.0 or later) corrects the demixed traces."""
    major = re.match(r"\s*(\d+)", pipeline_version(f))
    return bool(major) and int(major.group(1)) >= 2


def _traces(p: Path, f: h5py.File, shape: tuple[int, int]) -> dict[str, xr.Variable]:
    chunks = _trace_chunks(*shape)
    dims = ("cell_specimen_id", "time")
    out: dict[str, xr.Variable] = {}

    def lazy(name: str) -> da.Array | None:
        if name not in f:
            return None
        if f[name].shape != shape:
            raise SourceFileError(
                f"{p}: {name} has shape {f[name].shape}, expected (cells, frames) {shape} like "
                f"{_DFF}/data"
            )
        return lazy_array(p, name, chunks=chunks)

    arrays = {
        "dff": (lazy(f"{_DFF}/data"), "1", "dF/F"),
        "neuropil_fluorescence": (lazy(f"{_FL}_neuropil_response/data"), "a.u.", "neuropil"),
        "demixed_fluorescence": (lazy(f"{_FL}_demixed_signal/data"), "a.u.", "demixed trace"),
    }
    # AllenSDK's get_corrected_fluorescence_traces: from pipeline version 2.0 on, neuropil
    # correction follows demixing (demixed - r * neuropil, r of the neuropil response);
    # before, raw - r * neuropil_traces with the raw fluorescence's r
    if _demixed_correction(f):
        cell, neuropil, r_name = (
            "_demixed_signal/data",
            "_neuropil_response/data",
            "_neuropil_response/r",
        )
        long_name = "demixed - r * neuropil"
    else:
        cell, neuropil, r_name = "/data", "/neuropil_traces", "/r"
        long_name = "raw - r * neuropil"
        if f"{_FL}{neuropil}" not in f:
            neuropil = "_neuropil_response/data"
    traces = lazy(f"{_FL}{cell}"), lazy(f"{_FL}{neuropil}")
    if traces[0] is not None and traces[1] is not None and f"{_FL}{r_name}" in f:
        r = np.asarray(f[f"{_FL}{r_name}"][()], dtype=np.float32)
        if r.shape != (shape[0],):
            raise SourceFileError(f"{p}: {_FL}{r_name} has shape {r.shape}, expected ({shape[0]},)")
        corrected = traces[0] - traces[1] * r[:, None]
        arrays["corrected_fluorescence"] = (corrected, "a.u.", long_name)
    for name, (arr, units, long_name) in arrays.items():
        if arr is not None:
            out[name] = xr.Variable(dims, arr, {"units": units, "long_name": long_name})
            # one chunk per cell (its whole trace), packed ~4 MB
            out[name].encoding.update(cell_major_layout(shape, out[name].dtype.itemsize))
    for name in ("r", "rmse"):
        if f"{_FL}/{name}" in f and f[f"{_FL}/{name}"].shape == (shape[0],):
            out[name] = xr.Variable("cell_specimen_id", f[f"{_FL}/{name}"][()])
    return out


def _masks_and_images(p: Path, f: h5py.File, n_cells: int) -> dict[str, xr.Variable]:
    plane = f[f"{_SEG}/imaging_plane_1"]
    listed = [read_str(v) for v in plane["roi_list"][()]] if "roi_list" in plane else []
    if not listed or not all(name in plane for name in listed):
        listed = sorted(k for k in plane if k.startswith("roi_") and "img_mask" in plane[k])
    if len(listed) < n_cells:
        raise SourceFileError(
            f"{p}: {len(listed)} ROI masks under {plane.name}, expected one per cell ({n_cells})"
        )
    out: dict[str, xr.Variable] = {}
    images = {
        "max_projection": "maximum_intensity_projection_image",
        "average_projection": "average_image",
    }
    for var, group in images.items():
        if f"{_REF}/{group}/data" in f:
            arr = lazy_array(p, f"{_REF}/{group}/data", chunks=-1)
            out[var] = xr.Variable(("y", "x"), arr, {"long_name": group})
    masks = [lazy_array(p, f"{plane.name}/{name}/img_mask", chunks=-1) for name in listed[:n_cells]]
    shapes = {m.shape for m in masks}
    if len(shapes) > 1 or ("max_projection" in out and shapes != {out["max_projection"].shape}):
        raise SourceFileError(f"{p}: ROI masks and max projection differ in shape: {shapes!r}")
    if masks:
        stack = (da.stack(masks) > 0).rechunk((min(n_cells, 16), -1, -1))
        out["roi_mask"] = xr.Variable(("cell_specimen_id", "y", "x"), stack)
        out["roi_mask"].encoding["chunks"] = stack.chunksize
    return out


def _behaviour(f: h5py.File) -> dict[str, xr.Variable]:
    out: dict[str, xr.Variable] = {}
    if f"{_RUN}/data" in f and f"{_RUN}/timestamps" in f:
        speed = np.asarray(f[f"{_RUN}/data"][()])
        speed = speed[:, 0] if speed.ndim == 2 else speed
        t = np.asarray(f[f"{_RUN}/timestamps"][()], dtype=np.float64)
        n = min(len(speed), len(t))
        out["running_speed_time"] = xr.Variable("running_speed_time", t[:n], {"units": "s"})
        out["running_speed.speed"] = xr.Variable("running_speed_time", speed[:n], {"units": "cm/s"})
    out.update(_eye_tracking(f))
    mc = f.get(f"{_PIPE}/MotionCorrection/2p_image_series")
    xy_name = next((k for k in ("xy_translation", "xy_translations") if mc and k in mc), None)
    if xy_name:
        xy = np.asarray(mc[f"{xy_name}/data"][()])
        xy = xy[:, None] if xy.ndim == 1 else xy
        t = np.asarray(mc[f"{xy_name}/timestamps"][()], dtype=np.float64)
        n = min(len(xy), len(t))
        out["motion_correction_time"] = xr.Variable("motion_correction_time", t[:n], {"units": "s"})
        for i, axis in enumerate(_motion_names(mc[xy_name], xy.shape[1])):
            out[f"motion_correction.{axis}"] = xr.Variable(
                "motion_correction_time", xy[:n, i], {"units": "pixel"}
            )
    return out


def _motion_names(series: h5py.Group, n: int) -> list[str]:
    """Column names of the motion correction: the series' ``feature_description``, as
    AllenSDK's ``get_motion_correction`` names its DataFrame columns (x/y by position only
    for a series without one, which Allen's files do not have)."""
    if "feature_description" not in series:
        return ["x", "y"][:n]
    names = [read_str(v) for v in np.atleast_1d(series["feature_description"][()])]
    if len(names) != n or len(set(names)) != n:
        raise SourceFileError(
            f"{series.file.filename}: {series.name}/feature_description names {names!r}, "
            f"expected {n} distinct names (one per column of its data)"
        )
    return names


def _eye_series(f: h5py.File) -> list[tuple[str, str, str]]:
    """``(HDF5 group, short name, time dim)`` of the eye-tracking series of a file, in a fixed
    order: ``EyeTracking/<pupil|eye>_location[_spherical]`` ((T, 2)) and
    ``PupilTracking/pupil_size`` ((T,)), as AllenSDK's get_pupil_location/get_pupil_size read
    them. The time dim is ``eye_tracking_time`` (the first series') for every series with the
    same timestamps, ``eye_tracking.<name>_time`` otherwise."""
    out = []
    first = None
    for group in _EYE_GROUPS:
        g = f.get(f"{_PIPE}/{group}")
        for name in sorted(g) if isinstance(g, h5py.Group) else ():
            if not (isinstance(g[name], h5py.Group) and {"data", "timestamps"} <= set(g[name])):
                continue
            t = g[f"{name}/timestamps"][()]
            first = t if first is None else first
            same = t.shape == first.shape and t.dtype == first.dtype and np.array_equal(t, first)
            dim = "eye_tracking_time" if same else f"eye_tracking.{name}_time"
            out.append((g[name].name, name, dim))
    return out


def _eye_tracking(f: h5py.File) -> dict[str, xr.Variable]:
    """Pupil and eye location (x, y columns) and pupil size as ``eye_tracking.*``."""
    out: dict[str, xr.Variable] = {}
    for group, name, dim in _eye_series(f):
        if dim not in out:
            t = np.asarray(f[f"{group}/timestamps"][()])
            out[dim] = xr.Variable(dim, t, {"units": "s"})
        data = f[f"{group}/data"]
        attrs = {"units": read_str(data.attrs["unit"])} if "unit" in data.attrs else {}
        values = np.asarray(data[()])
        if values.ndim == 2 and values.shape[1] == 2:
            for j, axis in enumerate("xy"):
                out[f"eye_tracking.{name}_{axis}"] = xr.Variable(dim, values[:, j], attrs)
        else:
            out[f"eye_tracking.{name}"] = xr.Variable(dim, values, attrs)
    return out


def _eye_view(ds: xr.Dataset, names: tuple[str, ...], dims: tuple[str, ...]) -> xr.Dataset:
    """Eye-tracking columns stacked back into the source's (T, 2) arrays, with their times."""
    out: dict[str, Any] = {d: ds[d].variable for d in dims}
    for name in names:
        if f"eye_tracking.{name}_x" in ds:
            cols = [ds[f"eye_tracking.{name}_{a}"] for a in "xy"]
            dim = cols[0].dims[0]
            out[name] = xr.concat(cols, dim="axis").transpose(dim, "axis")
        else:
            out[name] = ds[f"eye_tracking.{name}"]
    return xr.Dataset(out)


def _series_kind(g: h5py.Group) -> str:
    ancestry = [read_str(a) for a in np.atleast_1d(g.attrs.get("ancestry", []))]
    if "features" in g or "AbstractFeatureSeries" in ancestry:
        return "afs"
    return "interval" if "IntervalSeries" in ancestry else "index"


def _stimulus_table(p: Path, f: h5py.File, ts: np.ndarray) -> dict[str, xr.Variable]:
    rows: list[dict[str, np.ndarray]] = []
    for key in sorted(f[_STIM]) if _STIM in f else []:
        g = f[f"{_STIM}/{key}"]
        if not isinstance(g, h5py.Group) or "data" not in g or "frame_duration" not in g:
            continue
        name = key.removesuffix("_stimulus")
        data = np.asarray(g["data"][()])
        fd = np.atleast_2d(np.asarray(g["frame_duration"][()]))
        kind = _series_kind(g)
        cols: dict[str, np.ndarray] = {}
        if kind == "interval":
            events = data.ravel()
            start = fd[events == 1, 0].astype(np.int64)
            stops = fd[events == -1, 0].astype(np.int64)
            end = np.full(len(start), -1, dtype=np.int64)
            end[: min(len(start), len(stops))] = stops[: len(start)]
        else:
            if len(fd) != len(data):
                raise SourceFileError(
                    f"{p}: {g.name} has {len(data)} presentations but frame_duration has "
                    f"{len(fd)} rows; expected one (start, end) pair per presentation"
                )
            start = fd[:, 0].astype(np.int64)
            end = fd[:, 1].astype(np.int64) if fd.shape[1] > 1 else np.full(len(fd), -1)
            if kind == "afs":
                features = [read_str(v) for v in np.atleast_1d(g["features"][()])]
                data2 = data.reshape(len(data), -1)
                for j, feat in enumerate(features[: data2.shape[1]]):
                    if feat.strip(".") and "/" not in feat:  # "1.0" in the real truncated file
                        cols[feat] = data2[:, j].astype(np.float64)
            else:
                cols["frame"] = data.astype(np.float64)
                if name.startswith("natural_movie"):
                    cols["repeat"] = np.maximum(np.cumsum(data == 0) - 1, 0).astype(np.float64)
        cols.update(start_frame=start, end_frame=end, stimulus_name=np.full(len(start), name))
        rows.append(cols)
    n = sum(len(r["start_frame"]) for r in rows)
    names = sorted({k for r in rows for k in r} | {*_PARAMS, "frame", "repeat"})
    table: dict[str, np.ndarray] = {}
    for col in names:
        parts = []
        for r in rows:
            if col in r:
                parts.append(r[col])
            elif col in ("start_frame", "end_frame"):
                parts.append(np.full(len(r["start_frame"]), -1, dtype=np.int64))
            else:
                parts.append(np.full(len(r["start_frame"]), np.nan))
        table[col] = np.concatenate(parts) if parts else np.zeros(0)
    table["stimulus_name"] = table["stimulus_name"].astype(str) if n else np.zeros(0, dtype="<U1")
    for col in ("start_frame", "end_frame"):
        table[col] = table[col].astype(np.int64)
    order = np.lexsort((table["stimulus_name"], table["start_frame"])) if n else np.zeros(0, int)
    table = {k: v[order] for k, v in table.items()}

    def to_time(idx: np.ndarray) -> np.ndarray:
        ok = (idx >= 0) & (idx < len(ts))
        return np.where(ok, ts[np.clip(idx, 0, max(len(ts) - 1, 0))] if len(ts) else np.nan, np.nan)

    table["start_time"] = to_time(table["start_frame"])
    table["stop_time"] = to_time(table["end_frame"])
    table["duration"] = table["stop_time"] - table["start_time"]
    dim = "stimulus_presentation_id"
    out = {dim: xr.Variable(dim, np.arange(n, dtype=np.int64))}
    units = {
        "start_time": "s",
        "stop_time": "s",
        "duration": "s",
        "orientation": "deg",
        "temporal_frequency": "Hz",
        "spatial_frequency": "cycles/deg",
    }
    for col, values in table.items():
        attrs = {"units": units[col]} if col in units else {}
        out[f"stimulus_presentations.{col}"] = xr.Variable(dim, values, attrs)
    return out


def _metadata(f: h5py.File, ts: np.ndarray) -> dict[str, Any]:
    def get(name: str) -> str | None:
        return read_str(f[name][()]) if name in f and isinstance(f[name], h5py.Dataset) else None

    plane = "general/optophysiology/imaging_plane_1"
    meta: dict[str, Any] = {}
    exp = get("general/ophys_experiment_id") or get("general/session_id")
    if exp is None:
        raise SourceFileError(f"{f.filename}: no general/ophys_experiment_id or general/session_id")
    meta["ophys_experiment_id"] = _to_int(exp)
    for key, name in (
        ("experiment_container_id", "general/experiment_container_id"),
        ("specimen_id", "general/subject/subject_id"),
    ):
        if get(name) is not None:
            meta[key] = _to_int(get(name))
    for key, name in (
        ("session_type", "general/session_type"),
        ("targeted_structure", f"{plane}/location"),
        ("genotype", "general/subject/genotype"),
        ("specimen_name", "general/specimen_name"),
        ("sex", "general/subject/sex"),
        ("indicator", f"{plane}/indicator"),
        ("excitation_lambda", f"{plane}/excitation_lambda"),
        ("imaging_rate", f"{plane}/imaging_rate"),
        ("fov", "general/fov"),
        ("ophys_experiment_name", "general/ophys_experiment_name"),
    ):
        value = get(name)
        if value is not None:
            meta[key] = value
    if "targeted_structure" not in meta and get("general/targeted_structure"):
        meta["targeted_structure"] = get("general/targeted_structure")
    depth = re.match(r"\s*(\d+)", get(f"{plane}/imaging depth") or "")
    if depth:
        meta["imaging_depth"] = int(depth.group(1))
    age = re.match(r"\s*(\d+) days", get("general/subject/age") or "")
    if age:
        meta["age_days"] = int(age.group(1))
    if "genotype" in meta:
        parts = [g.split("/")[0] for g in meta["genotype"].split(";")]
        # AllenSDK's BrainObservatoryNwbDataSet.get_metadata: the genotype's first part as it
        # is ("Rorb-IRES2-Cre/wt"); Visual Behavior's parse_cre_line drops "/wt", VC2P's not
        meta["cre_line"] = meta["genotype"].split(";")[0]
        reporters = [g for g in parts[1:] if g.startswith("Ai")]
        if reporters:
            meta["reporter_line"] = reporters[0]
    device = re.match(r"(.*?)\.\s(.*?)\sPlease", get("general/devices/2-photon microscope") or "")
    if device:
        meta["device"], meta["device_name"] = device.groups()
    fov = re.search(r"(\d+)\s*x\s*(\d+)\s*pixels", meta.get("fov", ""))
    if fov:
        meta["field_of_view_width"], meta["field_of_view_height"] = map(int, fov.groups())
    start = get("session_start_time")
    if start:
        try:
            meta["session_start_time"] = dt.datetime.strptime(
                start, "%a %b %d %H:%M:%S %Y"
            ).isoformat()
        except ValueError:
            meta["session_start_time"] = start
    if len(ts) > 1:
        meta["ophys_frame_rate"] = float(1.0 / np.median(np.diff(ts)))
    elif re.match(r"\s*[\d.]+", meta.get("imaging_rate", "")):
        meta["ophys_frame_rate"] = float(re.match(r"\s*([\d.]+)", meta["imaging_rate"]).group(1))
    meta["nwb_version"] = _nwb_version(f)
    meta["pipeline_version"] = pipeline_version(f)
    return meta


def _pixel_size_um(f: h5py.File) -> float:
    text = read_str(f["general/pixel_size"][()]) if "general/pixel_size" in f else ""
    m = re.match(r"\s*([\d.]+)", text)
    return float(m.group(1)) if m else 400.0 / 512.0


def _lsn_templates(p: Path, f: h5py.File) -> dict[str, xr.Variable]:
    """The locally sparse noise template stacks (frames, rows, columns) uint8 0/127/255,
    as ``stimulus_template.<stimulus>`` (AllenSDK's receptive-field analysis needs them)."""
    from abo_lake.vc2p_receptive_fields import LSN_STIMULI, template_dims, template_variable

    out: dict[str, xr.Variable] = {}
    for name, grid in LSN_STIMULI.items():
        path = f"stimulus/templates/{name}_image_stack/data"
        if path not in f:
            continue
        shape = f[path].shape
        if len(shape) != 3 or shape[1:] != grid:
            raise SourceFileError(
                f"{p}: {path} has shape {shape}, expected (frames, {grid[0]}, {grid[1]}) for {name}"
            )
        arr = lazy_array(p, path, chunks=-1)
        out[template_variable(name)] = xr.Variable(
            template_dims(name), arr, {"long_name": f"{name} template", "units": "luminance"}
        )
    return out


def _build(p: Path, f: h5py.File) -> xr.Dataset:
    ts = np.asarray(f[f"{_DFF}/timestamps"][()], dtype=np.float64)
    shape = f[f"{_DFF}/data"].shape
    if len(shape) != 2 or shape[1] != len(ts):
        raise SourceFileError(
            f"{p}: {_DFF}/data has shape {shape}, expected (cells, {len(ts)} timestamps)"
        )
    cell_ids = np.asarray(f[f"{_SEG}/cell_specimen_ids"][()]).astype(np.int64)
    if cell_ids.shape != (shape[0],):
        raise SourceFileError(
            f"{p}: {len(cell_ids)} cell_specimen_ids for {shape[0]} traces in {_DFF}/data"
        )
    roi_ids = np.full(shape[0], -1, dtype=np.int64)
    if f"{_SEG}/roi_ids" in f:
        parsed = [_to_int(v) for v in np.atleast_1d(f[f"{_SEG}/roi_ids"][()])]
        roi_ids[: min(len(parsed), shape[0])] = parsed[: shape[0]]
    variables = {
        "time": xr.Variable("time", ts, {"units": "s"}),
        "cell_specimen_id": xr.Variable("cell_specimen_id", cell_ids),
        "cell_roi_id": xr.Variable("cell_specimen_id", roi_ids),
    }
    variables.update(_traces(p, f, shape))
    variables.update(_masks_and_images(p, f, shape[0]))
    if "roi_mask" in variables:
        px = _pixel_size_um(f)
        ny, nx = variables["roi_mask"].shape[1:]
        variables["y"] = xr.Variable("y", np.arange(ny) * px, {"units": "um"})
        variables["x"] = xr.Variable("x", np.arange(nx) * px, {"units": "um"})
    variables.update(_behaviour(f))
    variables.update(_stimulus_table(p, f, ts))
    variables.update(_lsn_templates(p, f))
    meta = _metadata(f, ts)
    coords = [
        k
        for k in variables
        if k
        in (
            "time",
            "cell_specimen_id",
            "cell_roi_id",
            "y",
            "x",
            "running_speed_time",
            "motion_correction_time",
            "stimulus_presentation_id",
        )
    ]
    ds = xr.Dataset(
        {k: v for k, v in variables.items() if k not in coords},
        coords={k: variables[k] for k in coords},
    )
    names = np.unique(ds["stimulus_presentations.stimulus_name"].values).tolist()
    ds.attrs = {
        "abo_lake_kind": "ophys_experiment",
        "source_file": p.name,
        **meta,
        "stimulus_names": [str(s) for s in names],
    }
    return ds


# --------------------------------------------------------------------------- fidelity


def _as(dtype: Any) -> Any:
    return blockwise(lambda a: np.asarray(a).astype(dtype))


def _single_column(a: np.ndarray) -> np.ndarray:
    """Running speed is stored 1-D; an (n, 1) source becomes its column (wider ones do not)."""
    return a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a


def _xy_view(ds: xr.Dataset, names: tuple[str, ...]) -> xr.Dataset:
    """``motion_correction.<name>`` stacked back into the source's (frames, n) array."""
    axes = [ds[f"motion_correction.{a}"] for a in names]
    xy = xr.concat(axes, dim="axis").transpose("motion_correction_time", "axis")
    return xr.Dataset({"xy": xy})


def _xy_source(a: np.ndarray) -> np.ndarray:
    return a[:, None] if a.ndim == 1 else a


def _stimulus_view(ds: xr.Dataset, name: str, features: tuple[str, ...]) -> xr.Dataset:
    """Rows of stimulus ``name`` (stored order) as the source's data/features/frame_duration."""
    col = "stimulus_presentations."
    rows = np.flatnonzero(np.asarray(ds[f"{col}stimulus_name"].values).astype(str) == name)
    part = ds.isel(stimulus_presentation_id=rows)
    dim = "stimulus_presentation_id"
    frames = np.stack([part[f"{col}start_frame"].values, part[f"{col}end_frame"].values], axis=1)
    out = {"frame_duration": ((dim, "pair"), frames)}
    if features:
        held = [f for f in features if f"{col}{f}" in part]
        cols = [part[f"{col}{f}"].values for f in held]
        out["features"] = ("feature", np.asarray(held, dtype=str))
        out["data"] = (
            (dim, "feature"),
            np.stack(cols, axis=1) if cols else np.zeros((len(rows), 0)),
        )
    elif f"{col}frame" in part:
        out["data"] = (dim, part[f"{col}frame"].values)
    return xr.Dataset(out)


def _stable_order(fd: np.ndarray) -> np.ndarray:
    return np.argsort(np.atleast_2d(fd)[:, 0].astype(np.int64), kind="stable")


def _frames_source(a: np.ndarray) -> np.ndarray:
    fd = np.atleast_2d(a)
    start = fd[:, 0].astype(np.int64)
    end = fd[:, 1].astype(np.int64) if fd.shape[1] > 1 else np.full(len(fd), -1, np.int64)
    return np.stack([start, end], axis=1)[_stable_order(fd)]


def _data_source(order: np.ndarray, afs: bool, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return (a.reshape(len(a), -1) if afs else a)[order].astype(np.float64)


def _features_source(a: np.ndarray) -> np.ndarray:
    return np.asarray([read_str(v) for v in np.atleast_1d(a)], dtype=str)


def fidelity_mappings(ds: xr.Dataset, path: str | Path) -> list[tuple[Any, dict[str, Any]]]:
    """How each dataset matched by :data:`MAPPED_HDF5` is held by ``ds``, for a fidelity check.

    Used by :func:`abo_lake.fidelity_mapped.check_reader` (which explains ``view`` and
    ``mapping``). Traces, r/rmse, images and timestamps are stored as they are (ids and
    times cast to int64/float64). Documented transforms: ``running_speed/data`` of shape
    (n, 1) is stored as its column; ``xy_translation/data`` is split into
    ``motion_correction.x``/``.y`` (compared stacked back); each stimulus's rows are those of
    ``stimulus_presentations`` with its ``stimulus_name``, stored ordered by start frame (the
    source rows are compared in that stable order): ``frame_duration`` -> ``start_frame``/
    ``end_frame`` (int64, -1 for a missing end), ``data`` -> the feature columns
    (AbstractFeatureSeries, float64) or ``frame`` (float64), ``features`` -> the names of the
    feature columns. Spontaneous intervals, ``repeat`` and the times looked up from frames are
    derived, not mapped.

    Parameters
    ----------
    ds
        The ``ophys_experiment`` Dataset :func:`read` made of ``path`` (maybe re-opened).
    path
        The source file.

    Returns
    -------
    list of (view, mapping)
        Pairs for :func:`abo_lake.fidelity.check_mapped`.
    """
    mapping: dict[str, Any] = {
        f"{_DFF}/data": ("dff", None),
        f"{_DFF}/timestamps": ("time", _as(np.float64)),
        f"{_FL}/r": ("r", None),
        f"{_FL}/rmse": ("rmse", None),
        f"{_FL}_neuropil_response/data": ("neuropil_fluorescence", None),
        f"{_FL}_demixed_signal/data": ("demixed_fluorescence", None),
        f"{_SEG}/cell_specimen_ids": ("cell_specimen_id", _as(np.int64)),
        f"{_REF}/maximum_intensity_projection_image/data": ("max_projection", None),
        f"{_REF}/average_image/data": ("average_projection", None),
        f"{_RUN}/data": ("running_speed.speed", blockwise(_single_column)),
        f"{_RUN}/timestamps": ("running_speed_time", _as(np.float64)),
    }
    with h5py.File(path, "r") as f:
        out: list[tuple[Any, dict[str, Any]]] = [({}, {k: v for k, v in mapping.items() if k in f})]
        mc = f.get(f"{_PIPE}/MotionCorrection/2p_image_series")
        for key in mc if isinstance(mc, h5py.Group) else ():
            if key.startswith("xy_translation") and "data" in mc[key]:
                shape = mc[f"{key}/data"].shape
                names = tuple(_motion_names(mc[key], shape[1] if len(shape) == 2 else 1))
                out.append(
                    (
                        functools.partial(_xy_view, names=names),
                        {
                            f"{mc.name}/{key}/data": ("xy", _xy_source),
                            f"{mc.name}/{key}/timestamps": ("motion_correction_time", None),
                        },
                    )
                )
        eye = _eye_series(f)
        if eye:
            items = {}
            for group, name, dim in eye:
                items[f"{group}/data"] = (name, None)
                items[f"{group}/timestamps"] = (dim, None)
            names, dims = tuple(e[1] for e in eye), tuple(sorted({e[2] for e in eye}))
            out.append((functools.partial(_eye_view, names=names, dims=dims), items))
        for key in sorted(f[_STIM]) if _STIM in f else []:
            g = f[f"{_STIM}/{key}"]
            if not isinstance(g, h5py.Group) or "data" not in g or "frame_duration" not in g:
                continue
            afs = _series_kind(g) == "afs"
            if _series_kind(g) == "interval":
                continue
            order = _stable_order(g["frame_duration"][()])
            features = _features_source(g["features"][()]) if "features" in g else []
            view = functools.partial(
                _stimulus_view, name=key.removesuffix("_stimulus"), features=tuple(features)
            )
            items = {
                f"{g.name}/frame_duration": ("frame_duration", _frames_source),
                f"{g.name}/data": ("data", functools.partial(_data_source, order, afs)),
            }
            if "features" in g:
                items[f"{g.name}/features"] = ("features", _features_source)
            out.append((view, items))
    return out
