"""Reader of Visual Coding Neuropixels NWB 2 files (session files and probe LFP files).

h5py at fixed paths (``ALLEN_DATA.md`` §1), no pynwb object construction: building pynwb objects
is what makes AllenSDK's loads slow. Big arrays (spike times and amplitudes, mean waveforms, LFP,
CSD) stay lazy through :func:`abo_lake.sources._hdf5.lazy_array`.

A session file gives ``{"ecephys/session/<id>": ds}`` (kind ``ecephys_session``); a probe LFP file
gives ``{"ecephys/probe/<pid>/lfp": ds, "ecephys/probe/<pid>/csd": ds}`` (``ecephys_lfp`` and
``ecephys_csd``). An NWB 2 ecephys file that is not an Allen VCN session (no
``intervals/*_presentations``, no Allen electrode columns) raises :class:`SourceFileError`
naming what is missing: its units alone do not make an ``ecephys_session``.

Layout choices (AllenSDK names where it has one):

- ``units`` along ``unit_id``: every scalar column of the NWB table verbatim, joined with the peak
  channel (``anterior_posterior_ccf_coordinate``, ..., ``probe_vertical_position``) and the probe
  (``probe_id``, ``probe_description``); the structure acronym is both ``structure_acronym`` and
  ``ecephys_structure_acronym`` (AllenSDK's NWB reader gives the first, its analysis code wants
  the second). Acronyms '' and 'None' become '' and sub-regions are dropped (``DG-mo`` -> ``DG``).
- ``spike_times``/``spike_amplitudes`` flat along ``spike`` with ``spike_times_index`` (int64 end
  offsets along ``unit_id``); ``waveform_mean`` (unit_id, channel, waveform_sample), ``channel``
  being the on-probe channel number.
- ``channels.<col>`` along ``channel_id``; ``probes.<col>`` along ``probe`` (its values are the
  probe ids; ``probe_id`` is a units column, so it cannot also be a dim).
- ``stimulus_presentations.<col>`` along ``stimulus_presentation_id``: all presentation tables,
  sorted by start time, ids 0..n-1, with ``duration`` and ``stimulus_condition_id`` as AllenSDK
  computes them; missing string parameters are "null", missing numbers NaN.
- a probe LFP Dataset has ``lfp`` (time, channel) with the channel columns of its rows as
  coordinates, plus the whole electrode table verbatim as ``channels.<col>`` along
  ``channel_id`` (the LFP holds a subset of its rows).
- ``invalid_times.<col>`` along ``invalid_time_id`` (``tags`` ragged along ``invalid_time_tag``),
  ``running_speed.<col>`` along ``running_speed_time``, ``optogenetic_stimulation.<col>`` along
  ``optogenetic_stimulation_id``.
- eye tracking along ``eye_tracking_time`` (the gaze mapping's timestamps, AllenSDK's
  ``Time (s)``): ``ellipse_fits.<cr|eye|pupil>_<center_x|center_y|height|width|phi>`` as stored
  (half-axes) and ``gaze_mapping.<raw|filtered>_<eye_area|pupil_area>``,
  ``gaze_mapping.<raw|filtered>_screen_coordinates[_spherical]`` (time, ``screen_axis`` [y, x]);
  the eye-tracking rig geometry as ``eye_tracking_rig.<name>`` along ``xyz`` (units kept) and
  ``attrs["eye_tracking_rig_equipment"]``.
- ``attrs["allensdk_session_class"] = "EcephysSession"``: :mod:`abo_lake.ecephys` follows that
  class's semantics (the Visual Behavior Neuropixels reader sets ``BehaviorEcephysSession``).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.fidelity import blockwise
from abo_lake.sources._hdf5 import lazy_array, open_hdf5, read_str, require_dataset
from abo_lake.writer import ragged_layout

__all__ = ["MAPPED_HDF5", "fidelity_mappings", "read", "sniff"]

_ELECTRODES = "general/extracellular_ephys/electrodes"
_PARAMETERS = (
    "color",
    "contrast",
    "frame",
    "mask",
    "opacity",
    "orientation",
    "phase",
    "pos",
    "size",
    "spatial_frequency",
    "temporal_frequency",
    "units",
    "x_position",
    "y_position",
    "Dir",
    "Speed",
    "coherence",
    "dotLife",
    "dotSize",
    "fieldPos",
    "fieldShape",
    "fieldSize",
    "nDots",
)
#: Mapped presentation columns. The source ``id`` is not: presentations are renumbered 0..n-1
#: after sorting (as AllenSDK does), so the ids are left to the raw copy.
_PRESENTATION_COLUMNS = (
    "start_time",
    "stop_time",
    "stimulus_name",
    "stimulus_block",
    "stimulus_index",
    *_PARAMETERS,
)
_CHANNEL_RENAMES = {
    "x": "anterior_posterior_ccf_coordinate",
    "y": "dorsal_ventral_ccf_coordinate",
    "z": "left_right_ccf_coordinate",
    "local_index": "probe_channel_number",
}
_CHANNEL_COLUMNS = (
    "id",
    "x",
    "y",
    "z",
    "location",
    "imp",
    "filtering",
    "group_name",
    "probe_vertical_position",
    "probe_horizontal_position",
    "probe_id",
    "valid_data",
    "probe_channel_number",
    "local_index",
)
_UNIT_QC = (
    "PT_ratio",
    "amplitude",
    "amplitude_cutoff",
    "cluster_id",
    "cumulative_drift",
    "d_prime",
    "firing_rate",
    "isi_violations",
    "isolation_distance",
    "l_ratio",
    "local_index",
    "max_drift",
    "nn_hit_rate",
    "nn_miss_rate",
    "peak_channel_id",
    "presence_ratio",
    "quality",
    "recovery_slope",
    "repolarization_slope",
    "silhouette_score",
    "snr",
    "spread",
    "velocity_above",
    "velocity_below",
    "waveform_duration",
    "waveform_halfwidth",
)
_NOT_CONDITION = ("start_time", "stop_time", "duration", "stimulus_block", "stimulus_index")

#: The eye-tracking rig geometry's 3-vectors (``EcephysEyeTrackingRigMetadata``).
_RIG = "processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata"
_RIG_VECTORS = (
    "monitor_position",
    "camera_position",
    "led_position",
    "monitor_rotation",
    "camera_rotation",
)

#: fnmatch globs of the absolute HDF5 dataset paths this reader maps into its Datasets.
MAPPED_HDF5: tuple[str, ...] = (
    *(
        f"/units/{c}"
        for c in (
            "id",
            "spike_times",
            "spike_times_index",
            "spike_amplitudes",
            "spike_amplitudes_index",
            "waveform_mean",
            "waveform_mean_index",
            *_UNIT_QC,
        )
    ),
    *(f"/{_ELECTRODES}/{c}" for c in _CHANNEL_COLUMNS),
    *(f"/intervals/*_presentations/{c}" for c in _PRESENTATION_COLUMNS),
    *(f"/intervals/invalid_times/{c}" for c in ("id", "start_time", "stop_time", "tags")),
    "/intervals/invalid_times/tags_index",
    *(f"/processing/running/running_speed/{c}" for c in ("data", "timestamps")),
    "/processing/running/running_speed_end_times/timestamps",  # its data are NaN filler: raw
    *(
        f"/processing/optotagging/optogenetic_stimulation/{c}"
        for c in (
            "id",
            "start_time",
            "stop_time",
            "condition",
            "level",
            "duration",
            "stimulus_name",
        )
    ),
    *(
        f"/processing/eye_tracking/{fit}_ellipse_fits/{c}"
        for fit in ("cr", "eye", "pupil")
        for c in ("center_x", "center_y", "height", "width", "phi", "timestamps")
    ),
    *(
        f"/processing/{m}_gaze_mapping/{n}/{c}"
        for m in ("raw", "filtered")
        for n in ("eye_area", "pupil_area", "screen_coordinates", "screen_coordinates_spherical")
        for c in ("data", "timestamps")
    ),
    *(f"/{_RIG}/{n}" for n in _RIG_VECTORS),
    "/acquisition/probe_*_lfp/probe_*_lfp_data/data",
    "/acquisition/probe_*_lfp/probe_*_lfp_data/timestamps",
    "/acquisition/probe_*_lfp/probe_*_lfp_data/electrodes",
    "/processing/current_source_density/ecephys_csd/*",
)

_SPIKE_CHUNK = 524_288  # float64 -> 4 MB
_TARGET_BYTES = 4 * 2**20


def sniff(path: str | Path) -> bool:
    """Return True if ``path`` is a VCN session or probe LFP NWB 2 file; never raises."""
    try:
        with h5py.File(path, "r") as f:
            if not read_str(f.attrs.get("nwb_version", "")).startswith("2"):
                return False
            if _lfp_group(f) is not None:
                return True
            return (
                "units" in f
                and f"{_ELECTRODES}/probe_vertical_position" in f
                and bool(_presentation_tables(f))
            )
    except Exception:
        return False


def read(path: str | Path) -> dict[str, xr.Dataset]:
    """Read a VCN session file or probe LFP file into lazy Datasets keyed by release path.

    Parameters
    ----------
    path
        ``session_<id>.nwb`` or ``probe_<pid>_lfp.nwb``.

    Returns
    -------
    dict of str to xarray.Dataset
        ``{"ecephys/session/<id>": ...}`` or ``{"ecephys/probe/<pid>/lfp": ...,
        "ecephys/probe/<pid>/csd": ...}``.

    Raises
    ------
    SourceFileError
        If the file is not HDF5, is truncated, or is not a VCN NWB 2 file; the message names the
        file and what is missing.
    """
    p = Path(path)
    f = open_hdf5(p, "expected a Visual Coding Neuropixels NWB 2 file")
    try:
        with f:
            version = read_str(f.attrs.get("nwb_version", ""))
            if not version.startswith("2"):
                raise SourceFileError(
                    f"{p}: nwb_version is {version!r}, expected 2.x; a Visual Coding "
                    "Neuropixels file is NWB 2"
                )
            group = _lfp_group(f)
            if group is not None:
                return _read_probe(p, f, group)
            missing = [
                what
                for what, ok in [
                    ("units", "units" in f),
                    (
                        f"{_ELECTRODES}/probe_vertical_position",
                        f"{_ELECTRODES}/probe_vertical_position" in f,
                    ),
                    ("intervals/*_presentations", bool(_presentation_tables(f))),
                ]
                if not ok
            ]
            if missing:
                raise SourceFileError(
                    f"{p}: not an Allen Visual Coding Neuropixels session or probe LFP file; "
                    f"missing {missing}, found top-level groups {sorted(f)}"
                )
            return _read_session(p, f)
    except (OSError, KeyError, ValueError, TypeError) as err:
        if isinstance(err, SourceFileError):
            raise
        raise SourceFileError(
            f"{p}: unreadable or inconsistent VCN NWB file ({type(err).__name__}: {err})"
        ) from err


# --- helpers shared by both file kinds ---------------------------------------------------------


def _lfp_group(f: h5py.File) -> str | None:
    for name in f.get("acquisition", {}):
        if fnmatch.fnmatch(name, "probe_*_lfp") and isinstance(f["acquisition"][name], h5py.Group):
            inner = f"acquisition/{name}/{name}_data/data"
            if inner in f:
                return f"acquisition/{name}/{name}_data"
    return None


def _presentation_tables(f: h5py.File) -> list[str]:
    return sorted(n for n in f.get("intervals", {}) if n.endswith("_presentations"))


def _column(dset: h5py.Dataset) -> np.ndarray:
    """Read a 1-D table column: strings as ``<U``, numbers as they are stored."""
    if h5py.check_string_dtype(dset.dtype) is not None:
        return np.asarray(dset.asstr()[:], dtype=str)
    if dset.dtype.kind == "O":
        return np.asarray([read_str(v) for v in dset[:]], dtype=str)
    return np.asarray(dset[:])


def _colnames(group: h5py.Group) -> list[str]:
    names = group.attrs.get("colnames", [])
    return [read_str(n) for n in np.atleast_1d(names)]


def _table(group: h5py.Group, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The scalar (1-D, non-ragged, non-reference) columns of a DynamicTable."""
    where = f"{group.file.filename}: {group.name}"
    n = require_dataset(group, "id", group.file.filename, ndim=1, what="row ids").shape[0]
    out = {}
    for name in _colnames(group):
        if name in skip or f"{name}_index" in group:
            continue
        dset = group.get(name)
        if not isinstance(dset, h5py.Dataset) or not dset.ndim or dset.shape[0] != n:
            found = "missing" if dset is None else getattr(dset, "shape", type(dset).__name__)
            raise SourceFileError(
                f"{where}/{name}: {found}, expected a column of {n} rows or a ragged one "
                f"indexed by {group.name}/{name}_index (the table's colnames attribute lists it)"
            )
        if dset.ndim != 1 or (
            dset.dtype.kind in "OV" and h5py.check_string_dtype(dset.dtype) is None
        ):
            continue  # references, compound and multi-dimensional columns
        out[name] = _column(dset)
    return out


def _acronym(values: np.ndarray) -> np.ndarray:
    """AllenSDK's cleaning: '' or 'None' -> '', sub-region suffix dropped ('DG-mo' -> 'DG')."""
    return np.array([("" if v in ("", "None", "nan") else v.split("-")[0]) for v in values], str)


def _units_attr(var: xr.Variable | xr.DataArray, units: str) -> None:
    var.attrs["units"] = units


#: Units of columns by name (schema: time in s, space in µm, each with ``attrs["units"]``).
_POSITIONS = (
    "anterior_posterior_ccf_coordinate",
    "dorsal_ventral_ccf_coordinate",
    "left_right_ccf_coordinate",
    "probe_vertical_position",
    "probe_horizontal_position",
)


def _column_units(ds: xr.Dataset) -> xr.Dataset:
    """Set ``units`` on the time and position columns of ``ds`` (by the column's name)."""
    for name in list(ds.variables):
        column = str(name).rsplit(".", 1)[-1]
        if column.endswith(("_time", "_times")) or column == "duration":
            ds[name].attrs.setdefault("units", "s")
        elif column in _POSITIONS:
            ds[name].attrs.setdefault("units", "um")
    return ds


def _channels(f: h5py.File, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Electrode columns with AllenSDK's channel names (CCF coordinates, structure acronym)."""
    cols = _table(f[_ELECTRODES], skip=("group",))
    cols["id"] = np.asarray(f[f"{_ELECTRODES}/id"][:], dtype=np.int64)
    if "probe_channel_number" in cols and "local_index" in cols:
        raise SourceFileError(
            f"{f.filename}: electrodes has both 'probe_channel_number' and 'local_index'; "
            "expected one of them"
        )
    out = {_CHANNEL_RENAMES.get(k, k): v for k, v in cols.items()}
    if "location" in out:
        out["structure_acronym"] = _acronym(out.pop("location"))
        out["ecephys_structure_acronym"] = out["structure_acronym"]
    if rows is not None:
        out = {k: v[rows] for k, v in out.items()}
    return out


def _meta(p: Path, f: h5py.File) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "source_file": p.name,
        "nwb_version": read_str(f.attrs["nwb_version"]),
        "identifier": read_str(f["identifier"][()]),
        "session_start_time": read_str(f["session_start_time"][()]),
    }
    if "general/stimulus" in f:
        attrs["session_type"] = read_str(f["general/stimulus"][()])
    for key in (
        "specimen_name",
        "age",
        "age_in_days",
        "genotype",
        "sex",
        "strain",
        "species",
        "subject_id",
    ):
        if f"general/subject/{key}" in f:
            value = f[f"general/subject/{key}"][()]
            attrs[key] = float(value) if key == "age_in_days" else read_str(value)
        elif "general/subject" in f and key in f["general/subject"].attrs:  # EcephysSpecimen
            value = f["general/subject"].attrs[key]
            attrs[key] = float(value) if key == "age_in_days" else read_str(value)
    return attrs


def _chunks(n: int, row_bytes: int) -> int:
    return int(max(1, min(n, _TARGET_BYTES // max(row_bytes, 1))))


# --- session files -----------------------------------------------------------------------------


def _read_session(p: Path, f: h5py.File) -> dict[str, xr.Dataset]:
    attrs = _meta(p, f)
    try:
        session_id = int(attrs["identifier"])
    except ValueError as err:
        raise SourceFileError(
            f"{p}: identifier {attrs['identifier']!r} is not an ecephys_session_id"
        ) from err
    attrs.update(abo_lake_kind="ecephys_session", ecephys_session_id=session_id)
    ds = xr.Dataset(attrs=attrs)
    channels = _channels(f)
    probes = _probes(f, channels)
    _add_units(p, f, ds, channels, probes)
    for k, v in channels.items():
        if k != "id":
            ds[f"channels.{k}"] = ("channel_id", v)
    ds.coords["channel_id"] = ("channel_id", channels["id"])
    for k, v in probes.items():
        if k != "probe_id":
            ds[f"probes.{k}"] = ("probe", v)
    ds.coords["probe"] = ("probe", probes["probe_id"])
    ds.coords["probe"].attrs["description"] = "probe_id"
    ds = ds.merge(_stimulus_presentations(p, f))
    ds = ds.merge(_intervals(f))
    ds = ds.merge(_eye_tracking(p, f))
    rig = _rig_geometry(f)
    ds = ds.merge(rig)
    ds.attrs.update(rig.attrs)
    ds.attrs["allensdk_session_class"] = "EcephysSession"
    return {f"ecephys/session/{session_id}": _column_units(ds)}


def _probes(f: h5py.File, channels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names, first = np.unique(channels["group_name"], return_index=True)
    names = names[np.argsort(first)]
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "probe_id",
            "description",
            "location",
            "sampling_rate",
            "lfp_sampling_rate",
            "has_lfp_data",
        )
    }
    for name in names:
        dev = f.get(f"general/devices/{name}")
        grp = f.get(f"general/extracellular_ephys/{name}")
        dattrs = dict(dev.attrs) if dev is not None else {}
        gattrs = dict(grp.attrs) if grp is not None else {}
        if "probe_id" in channels:
            pid = int(channels["probe_id"][channels["group_name"] == name][0])
        else:
            pid = int(dattrs.get("probe_id", gattrs.get("probe_id", -1)))
        rows["probe_id"].append(pid)
        rows["description"].append(str(name))
        location = grp["location"][()] if grp is not None and "location" in grp else ""
        rows["location"].append(read_str(gattrs.get("location", location)))
        rows["sampling_rate"].append(float(dattrs.get("sampling_rate", np.nan)))
        rows["lfp_sampling_rate"].append(float(gattrs.get("lfp_sampling_rate", np.nan)))
        rows["has_lfp_data"].append(bool(gattrs.get("has_lfp_data", False)))
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["probe_id"] = out["probe_id"].astype(np.int64)
    out["description"] = out["description"].astype(str)
    out["location"] = out["location"].astype(str)
    return out


def _ragged_index(f: h5py.File, name: str, n: int) -> np.ndarray:
    idx = np.asarray(f[name][:], dtype=np.int64)
    if idx.shape != (n,) or (n and np.any(np.diff(np.r_[0, idx]) < 0)):
        raise SourceFileError(
            f"{f.filename}: {name} must hold {n} non-decreasing end offsets; found shape "
            f"{idx.shape}"
        )
    return idx


def _add_units(p: Path, f: h5py.File, ds: xr.Dataset, channels: dict, probes: dict) -> None:
    g = f["units"]
    unit_id = np.asarray(g["id"][:], dtype=np.int64)
    n = unit_id.size
    ds.coords["unit_id"] = ("unit_id", unit_id)
    for k, v in _table(g, skip=("waveform_mean",)).items():
        ds[k] = ("unit_id", v)
    if "peak_channel_id" in ds:
        lookup = pd.Index(channels["id"])
        pos = lookup.get_indexer(ds["peak_channel_id"].values)
        if np.any(pos < 0):
            bad = ds["peak_channel_id"].values[pos < 0][:10].tolist()
            raise SourceFileError(f"{p}: units/peak_channel_id {bad} not in {_ELECTRODES}/id")
        for k, v in channels.items():
            if k not in ("id", "group_name", "filtering", "imp") and k not in ds:
                ds[k] = ("unit_id", v[pos])
        ppos = pd.Index(probes["probe_id"]).get_indexer(channels["probe_id"][pos])
        ds["probe_description"] = ("unit_id", probes["description"][ppos])
        ds["probe_sampling_rate"] = ("unit_id", probes["sampling_rate"][ppos])
        ds["probe_lfp_sampling_rate"] = ("unit_id", probes["lfp_sampling_rate"][ppos])

    idx = _ragged_index(f, "units/spike_times_index", n)
    n_spikes = int(idx[-1]) if n else 0
    if g["spike_times"].shape != (n_spikes,):
        raise SourceFileError(
            f"{p}: units/spike_times has {g['spike_times'].shape[0]} values but "
            f"spike_times_index ends at {n_spikes}; the file may be truncated"
        )
    chunk = max(1, min(n_spikes, _SPIKE_CHUNK))
    ds["spike_times"] = ("spike", lazy_array(p, "/units/spike_times", chunks=(chunk,)))
    ds["spike_times"].attrs.update(units="s", description="sorted within each unit")
    # small chunks packed ~4 MB: one unit's spikes in <= 2 requests and <= 2x their bytes
    ds["spike_times"].encoding.update(ragged_layout(n_spikes, 8))
    ds["spike_times_index"] = ("unit_id", idx)
    ds["spike_times_index"].attrs["description"] = "end offset of each unit in spike_times"
    if "spike_amplitudes" in g:
        amp_idx = _ragged_index(f, "units/spike_amplitudes_index", n)
        if not np.array_equal(amp_idx, idx) or g["spike_amplitudes"].shape != (n_spikes,):
            raise SourceFileError(
                f"{p}: units/spike_amplitudes is not aligned with units/spike_times"
            )
        ds["spike_amplitudes"] = (
            "spike",
            lazy_array(p, "/units/spike_amplitudes", chunks=(chunk,)),
        )
        ds["spike_amplitudes"].attrs["units"] = "V"
        ds["spike_amplitudes"].encoding.update(
            ragged_layout(n_spikes, ds["spike_amplitudes"].dtype.itemsize)
        )
    if "waveform_mean" in g:
        _add_waveforms(p, f, ds, n)


def _add_waveforms(p: Path, f: h5py.File, ds: xr.Dataset, n: int) -> None:
    dset = f["units/waveform_mean"]
    if "waveform_mean_index" in f["units"]:
        idx = _ragged_index(f, "units/waveform_mean_index", n)
        per = int(idx[0]) if n else 0
        if n == 0 or not np.array_equal(idx, per * np.arange(1, n + 1)) or dset.ndim != 2:
            raise SourceFileError(
                f"{p}: units/waveform_mean_index must give every unit the same number of "
                f"channels (Allen stacks n_units·384 rows); found first offsets {idx[:3]}"
            )
        samples = dset.shape[1]
        per_chunk = _chunks(n, per * samples * dset.dtype.itemsize)
        arr = lazy_array(p, "/units/waveform_mean", chunks=(per * per_chunk, samples))
        ds["waveform_mean"] = (
            ("unit_id", "channel", "waveform_sample"),
            arr.reshape(n, per, samples),
        )
        ds["waveform_mean"].encoding["chunks"] = (per_chunk, per, samples)
        ds["waveform_mean"].attrs.update(
            units="uV", description="channel = on-probe channel number (0 = tip)"
        )
    elif dset.ndim == 2 and dset.shape[0] == n:
        ds["waveform_mean"] = (("unit_id", "waveform_sample"), lazy_array(p, dset.name))


def _stimulus_presentations(p: Path, f: h5py.File) -> xr.Dataset:
    tables = []
    for name in _presentation_tables(f):
        g = f[f"intervals/{name}"]
        cols = _table(g, skip=("tags", "timeseries", "id"))
        for k in ("start_time", "stop_time"):
            if k not in cols:
                raise SourceFileError(f"{p}: intervals/{name} has no {k!r} column")
        tables.append(cols)
    names = list(dict.fromkeys(k for t in tables for k in t))
    n = sum(t["start_time"].size for t in tables)
    merged: dict[str, np.ndarray] = {}
    for col in names:
        is_str = any(t[col].dtype.kind == "U" for t in tables if col in t)
        parts = []
        for t in tables:
            m = t["start_time"].size
            if col not in t:
                parts.append(np.full(m, "null") if is_str else np.full(m, np.nan))
            elif is_str and t[col].dtype.kind != "U":
                parts.append(
                    np.array(
                        ["null" if pd.isna(v) else repr(v) for v in t[col].astype(float).tolist()]
                    )
                )
            elif is_str:
                parts.append(np.where(t[col] == "", "null", t[col]))
            else:
                parts.append(t[col].astype(np.float64))
        merged[col] = np.concatenate(parts) if parts else np.empty(0)
    order = np.argsort(merged["start_time"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    if "duration" not in merged:  # AllenSDK's; a stored duration (Visual Behavior) is kept
        merged["duration"] = merged["stop_time"] - merged["start_time"]
    params = [c for c in names if c not in _NOT_CONDITION]
    frame = pd.DataFrame({c: merged[c] for c in params})
    merged["stimulus_condition_id"] = (
        frame.groupby(params, sort=False, dropna=False).ngroup().to_numpy(np.int64)
    )
    out = xr.Dataset(
        {f"stimulus_presentations.{k}": ("stimulus_presentation_id", v) for k, v in merged.items()},
        coords={"stimulus_presentation_id": np.arange(n, dtype=np.int64)},
    )
    for k in ("start_time", "stop_time", "duration"):
        _units_attr(out[f"stimulus_presentations.{k}"], "s")
    return out


def _intervals(f: h5py.File) -> xr.Dataset:
    out = xr.Dataset()
    if "intervals/invalid_times" in f:
        g = f["intervals/invalid_times"]
        for k, v in _table(g, skip=("id",)).items():
            out[f"invalid_times.{k}"] = ("invalid_time_id", v)
        out.coords["invalid_time_id"] = ("invalid_time_id", np.asarray(g["id"][:], np.int64))
        if "tags" in g and "tags_index" in g:
            out["invalid_times.tags"] = ("invalid_time_tag", _column(g["tags"]))
            out["invalid_times.tags_index"] = (
                "invalid_time_id",
                np.asarray(g["tags_index"][:], np.int64),
            )
    run = "processing/running/running_speed"
    if f"{run}/data" in f:
        start = np.asarray(f[f"{run}/timestamps"][:], np.float64)
        end_key = "processing/running/running_speed_end_times/timestamps"
        end = np.asarray(f[end_key][:], np.float64) if end_key in f else np.full_like(start, np.nan)
        out.coords["running_speed_time"] = ("running_speed_time", start, {"units": "s"})
        out["running_speed.start_time"] = ("running_speed_time", start, {"units": "s"})
        out["running_speed.end_time"] = ("running_speed_time", end, {"units": "s"})
        out["running_speed.velocity"] = (
            "running_speed_time",
            np.asarray(f[f"{run}/data"][:], np.float64),
            {"units": "cm/s"},
        )
    opto = "processing/optotagging/optogenetic_stimulation"
    if opto in f:
        g = f[opto]
        for k, v in _table(g, skip=("id", "tags", "timeseries")).items():
            out[f"optogenetic_stimulation.{k}"] = ("optogenetic_stimulation_id", v)
        out.coords["optogenetic_stimulation_id"] = (
            "optogenetic_stimulation_id",
            np.asarray(g["id"][:], np.int64),
        )
    return out


#: VCN eye tracking: ``processing/eye_tracking/<fit>_ellipse_fits`` tables and the gaze mapping
#: TimeSeries of ``processing/<raw|filtered>_gaze_mapping`` (ALLEN_DATA layout note 34).
_FITS = ("cr", "eye", "pupil")
_FIT_COLUMNS = ("center_x", "center_y", "height", "width", "phi")
_GAZE_MODULES = ("raw_gaze_mapping", "filtered_gaze_mapping")
_GAZE_SERIES = {
    "eye_area": "px^2",
    "pupil_area": "px^2",
    "screen_coordinates": "cm",
    "screen_coordinates_spherical": "deg",
}
_EYE_TIME = "processing/raw_gaze_mapping/eye_area/timestamps"


def _eye_parts(f: h5py.File) -> dict[str, tuple[str, str]]:
    """``{variable: (hdf5 dataset, its timestamps dataset)}`` of the eye tracking in ``f``."""
    out = {}
    for fit in _FITS:
        g = f"processing/eye_tracking/{fit}_ellipse_fits"
        for col in _FIT_COLUMNS:
            if f"{g}/{col}" in f:
                out[f"ellipse_fits.{fit}_{col}"] = (f"{g}/{col}", f"{g}/timestamps")
    for module in _GAZE_MODULES:
        for name in _GAZE_SERIES:
            g = f"processing/{module}/{name}"
            if f"{g}/data" in f:
                prefix = module.removesuffix("_gaze_mapping")
                out[f"gaze_mapping.{prefix}_{name}"] = (f"{g}/data", f"{g}/timestamps")
    return out


def _eye_tracking(p: Path, f: h5py.File) -> xr.Dataset:
    """Ellipse fits and gaze mapping along ``eye_tracking_time`` (AllenSDK's ``Time (s)``).

    The fits are stored as they are (``height``/``width`` are half-axes; AllenSDK's
    ``get_pupil_data`` doubles them); ``screen_coordinates*`` keep the file's (time, [y, x])
    order along ``screen_axis``. A part whose timestamps differ from the gaze mapping's keeps
    its own as ``<variable>_time``.
    """
    parts = _eye_parts(f)
    if not parts:
        return xr.Dataset()
    if _EYE_TIME not in f:
        raise SourceFileError(
            f"{p}: eye tracking found ({sorted(parts)[:3]}...) but no {_EYE_TIME}, the "
            "timestamps AllenSDK indexes it by"
        )
    time = np.asarray(f[_EYE_TIME][:], np.float64)
    out = xr.Dataset(
        coords={
            "eye_tracking_time": ("eye_tracking_time", time, {"units": "s"}),
            "screen_axis": ("screen_axis", np.array(["y", "x"])),
        }
    )
    for name, (data, stamps) in parts.items():
        values = np.asarray(f[data][:], np.float64)
        if values.shape[0] != time.size:
            raise SourceFileError(
                f"{p}: {data} has {values.shape[0]} rows, expected {time.size} (as {_EYE_TIME})"
            )
        dims = ("eye_tracking_time",) if values.ndim == 1 else ("eye_tracking_time", "screen_axis")
        series = name.rsplit(".", 1)[1].split("_", 1)[1]
        units = _GAZE_SERIES.get(series, "px" if not name.endswith("phi") else "rad")
        out[name] = (dims, values, {"units": units})
        own = np.asarray(f[stamps][:], np.float64) if stamps in f else time
        if not np.array_equal(own, time):
            out[f"{name}_time"] = ("eye_tracking_time", own, {"units": "s"})
    return out


def _rig_geometry(f: h5py.File) -> xr.Dataset:
    """The eye-tracking rig geometry: ``eye_tracking_rig.<name>`` along ``xyz`` (units kept)."""
    if _RIG not in f:
        return xr.Dataset()
    g = f[_RIG]
    out = xr.Dataset(coords={"xyz": ("xyz", np.array(["x", "y", "z"]))})
    for name in _RIG_VECTORS:
        dset = g.get(name)
        if dset is None:
            continue
        if not isinstance(dset, h5py.Dataset) or dset.shape != (3,):
            raise SourceFileError(
                f"{f.filename}: /{_RIG}/{name} is {dset!r}, expected a dataset of 3 values "
                "(x, y, z)"
            )
        unit = read_str(dset.attrs.get("unit", dset.attrs.get("unit_of_measurement", "")))
        out[f"eye_tracking_rig.{name}"] = ("xyz", np.asarray(dset[:], np.float64), {"units": unit})
    out.attrs["eye_tracking_rig_equipment"] = read_str(g.attrs.get("equipment", ""))
    return out


def _eye_mapping(f: h5py.File) -> dict[str, Any]:
    """Fidelity mapping of :func:`_eye_tracking` and :func:`_rig_geometry`."""
    out: dict[str, Any] = {}
    parts = _eye_parts(f)
    if parts:
        time = np.asarray(f[_EYE_TIME][:], np.float64)
        for name, (data, stamps) in parts.items():
            out[f"/{data}"] = (name, _as(np.float64))
            if stamps in f and f"/{stamps}" not in out:
                same = np.array_equal(np.asarray(f[stamps][:], np.float64), time)
                out[f"/{stamps}"] = ("eye_tracking_time" if same else f"{name}_time", None)
        out[f"/{_EYE_TIME}"] = ("eye_tracking_time", _as(np.float64))
    if _RIG in f:
        for name in _RIG_VECTORS:
            if name in f[_RIG]:
                out[f"/{_RIG}/{name}"] = (f"eye_tracking_rig.{name}", _as(np.float64))
    return out


# --- probe LFP files ---------------------------------------------------------------------------


def _read_probe(p: Path, f: h5py.File, series: str) -> dict[str, xr.Dataset]:
    attrs = _meta(p, f)
    match = re.fullmatch(r"acquisition/probe_(\d+)_lfp/.*", series)
    probe_id = int(match.group(1)) if match else int(attrs["identifier"])
    attrs["probe_id"] = probe_id
    data = f[f"{series}/data"]
    if data.ndim != 2:
        raise SourceFileError(
            f"{p}: {series}/data has shape {data.shape}, expected (time, channel)"
        )
    n_t, n_c = data.shape
    if f"{series}/timestamps" in f:
        time = np.asarray(f[f"{series}/timestamps"][:], np.float64)
    else:
        st = f[f"{series}/starting_time"]
        time = float(st[()]) + np.arange(n_t) / float(st.attrs["rate"])
    if time.shape != (n_t,):
        raise SourceFileError(
            f"{p}: {series}/timestamps has {time.size} values for {n_t} LFP samples; "
            "the file may be truncated"
        )
    rows = np.asarray(f[f"{series}/electrodes"][:], np.int64)
    if rows.shape != (n_c,):
        raise SourceFileError(f"{p}: {series}/electrodes has {rows.size} rows for {n_c} channels")
    ct = _chunks(n_t, n_c * data.dtype.itemsize)
    if data.chunks:
        ct = max(data.chunks[0], ct // data.chunks[0] * data.chunks[0])
        ct = min(ct, n_t)
    lfp = lazy_array(p, f"/{series}/data", chunks=(ct, n_c))
    conversion = float(data.attrs.get("conversion", 1.0))
    if conversion != 1.0 or data.dtype != np.float32:
        lfp = (lfp * conversion).astype(np.float32)
    channels = _channels(f, rows)
    ds = xr.Dataset(
        {"lfp": (("time", "channel"), lfp, {"units": "V"})},
        coords={"time": ("time", time, {"units": "s"}), "channel": ("channel", channels["id"])},
        attrs={**attrs, "abo_lake_kind": "ecephys_lfp"},
    )
    ds["lfp"].encoding["chunks"] = (ct, n_c)
    for k, v in channels.items():
        if k not in ("id", "group_name", "filtering", "imp"):
            ds.coords[k] = ("channel", v)
    # the whole electrode table, verbatim (the LFP holds a subset of its rows)
    table = _table(f[_ELECTRODES], skip=("group",))
    for k, v in table.items():
        ds[f"channels.{_CHANNEL_RENAMES.get(k, k)}"] = ("channel_id", v)
    ds.coords["channel_id"] = ("channel_id", np.asarray(f[f"{_ELECTRODES}/id"][:], np.int64))
    out = {f"ecephys/probe/{probe_id}/lfp": _column_units(ds)}
    csd = _read_csd(p, f, attrs)
    if csd is not None:
        out[f"ecephys/probe/{probe_id}/csd"] = csd
    return out


def _read_csd(p: Path, f: h5py.File, attrs: dict[str, Any]) -> xr.Dataset | None:
    base = "processing/current_source_density/ecephys_csd"
    if base not in f:
        return None
    g = f[base]
    ts = [k for k in g if isinstance(g[k], h5py.Group) and "data" in g[k]]
    if not ts or "virtual_electrode_y_positions" not in g:
        raise SourceFileError(
            f"{p}: {base} needs a TimeSeries and virtual_electrode_y_positions; found {list(g)}"
        )
    name = f"/{base}/{ts[0]}"
    n_t, n_v = g[f"{ts[0]}/data"].shape
    time = np.asarray(g[f"{ts[0]}/timestamps"][:], np.float64)
    y = np.asarray(g["virtual_electrode_y_positions"][:], np.float64)
    x_key = "virtual_electrode_x_positions"
    x = np.asarray(g[x_key][:], np.float64) if x_key in g else np.full(n_v, np.nan)
    data = lazy_array(p, f"{name}/data", chunks=(n_t, n_v)).T
    ds = xr.Dataset(
        {"csd": (("virtual_channel_index", "time"), data, {"units": "V/cm^2"})},
        coords={
            "virtual_channel_index": np.arange(n_v, dtype=np.int64),
            "time": ("time", time, {"units": "s", "description": "relative to flash onset"}),
            "vertical_position": ("virtual_channel_index", y, {"units": "um"}),
            "horizontal_position": ("virtual_channel_index", x, {"units": "um"}),
        },
        attrs={**attrs, "abo_lake_kind": "ecephys_csd"},
    )
    ds["csd"].encoding["chunks"] = (n_v, n_t)
    return ds


# --- fidelity ----------------------------------------------------------------------------------


def _as(dtype: Any) -> Any:
    return blockwise(lambda a: np.asarray(a).astype(dtype))


def _strings(a: np.ndarray) -> np.ndarray:
    return np.asarray([read_str(v) for v in np.asarray(a).ravel()], dtype=str).reshape(a.shape)


def _table_mapping(f: h5py.File, group: str, prefix: str, skip: tuple[str, ...]) -> dict:
    """``{hdf5 path: (prefix + column, transform)}`` for the columns :func:`_table` keeps."""
    g = f[group]
    cols = _table(g, skip=skip)
    return {
        f"/{group}/{k}": (prefix + k, _strings if v.dtype.kind == "U" else None)
        for k, v in cols.items()
    }


def _electrode_mapping(f: h5py.File, *, verbatim_location: bool) -> dict[str, Any]:
    """The electrode columns as ``channels.<AllenSDK name>`` (``location`` see below)."""
    out = {}
    for hpath, (name, func) in _table_mapping(f, _ELECTRODES, "", skip=("group",)).items():
        if name == "location" and not verbatim_location:
            out[hpath] = ("channels.structure_acronym", lambda a: _acronym(_strings(a)))
        else:
            out[hpath] = (f"channels.{_CHANNEL_RENAMES.get(name, name)}", func)
    return out


def _waveform_view(ds: xr.Dataset) -> xr.Dataset:
    """``waveform_mean`` back as the source's (units·channels, samples) rows and their index."""
    var = ds["waveform_mean"].variable
    if var.ndim == 2:
        return xr.Dataset({"waveform_mean": var})
    n, per, samples = var.shape
    rows = xr.Variable(("row", "waveform_sample"), var.data.reshape(n * per, samples))
    index = per * np.arange(1, n + 1, dtype=np.int64)
    return xr.Dataset({"waveform_mean": rows, "waveform_mean_index": ("unit_id", index)})


def _presentations_view(ds: xr.Dataset, rows: np.ndarray) -> xr.Dataset:
    return ds.isel(stimulus_presentation_id=rows)


def _to_text(a: np.ndarray) -> np.ndarray:
    """A numeric column of a table whose other tables hold text: ``repr`` or "null" for NaN."""
    values = np.asarray(a).astype(float).tolist()
    return np.array(["null" if pd.isna(v) else repr(v) for v in values], dtype=str)


def _null_empty(a: np.ndarray) -> np.ndarray:
    return np.where(_strings(a) == "", "null", _strings(a))


def _session_mappings(f: h5py.File) -> list[tuple[Any, dict[str, Any]]]:
    main: dict[str, Any] = {"/units/id": ("unit_id", _as(np.int64))}
    main.update(_table_mapping(f, "units", "", skip=("waveform_mean",)))
    for col in ("spike_times", "spike_amplitudes"):
        if f"units/{col}" in f:
            main[f"/units/{col}"] = (col, None)
            main[f"/units/{col}_index"] = ("spike_times_index", _as(np.int64))
    main.update(_electrode_mapping(f, verbatim_location=False))
    main[f"/{_ELECTRODES}/id"] = ("channel_id", _as(np.int64))
    if "intervals/invalid_times" in f:
        main.update(_table_mapping(f, "intervals/invalid_times", "invalid_times.", skip=("id",)))
        main["/intervals/invalid_times/id"] = ("invalid_time_id", _as(np.int64))
        if "intervals/invalid_times/tags_index" in f:
            main["/intervals/invalid_times/tags"] = ("invalid_times.tags", _strings)
            main["/intervals/invalid_times/tags_index"] = (
                "invalid_times.tags_index",
                _as(np.int64),
            )
    run = "/processing/running/running_speed"
    if f"{run}/data" in f:
        main[f"{run}/data"] = ("running_speed.velocity", _as(np.float64))
        main[f"{run}/timestamps"] = ("running_speed_time", _as(np.float64))
        end = "/processing/running/running_speed_end_times"
        if f"{end}/timestamps" in f:
            main[f"{end}/timestamps"] = ("running_speed.end_time", _as(np.float64))
    opto = "processing/optotagging/optogenetic_stimulation"
    if opto in f:
        skip = ("id", "tags", "timeseries")
        main.update(_table_mapping(f, opto, "optogenetic_stimulation.", skip=skip))
        main[f"/{opto}/id"] = ("optogenetic_stimulation_id", _as(np.int64))
    main.update(_eye_mapping(f))
    out: list[tuple[Any, dict[str, Any]]] = [({}, main)]
    if "units/waveform_mean" in f:
        wave = {"/units/waveform_mean": ("waveform_mean", None)}
        if "units/waveform_mean_index" in f:
            wave["/units/waveform_mean_index"] = ("waveform_mean_index", _as(np.int64))
        out.append((_waveform_view, wave))
    # presentation tables: concatenated in name order, then stably sorted by start time
    tables = {
        name: _table(f[f"intervals/{name}"], skip=("tags", "timeseries", "id"))
        for name in _presentation_tables(f)
    }
    starts = [np.asarray(t["start_time"], np.float64) for t in tables.values()]
    order = np.argsort(np.concatenate(starts) if starts else np.zeros(0), kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    text = {k for t in tables.values() for k, v in t.items() if v.dtype.kind == "U"}
    offset = 0
    for (name, cols), start in zip(tables.items(), starts, strict=True):
        rows = where[offset : offset + len(start)]
        offset += len(start)
        mapping = {}
        for col, values in cols.items():
            if col not in text:
                func = _as(np.float64)
            else:
                func = _null_empty if values.dtype.kind == "U" else _to_text
            mapping[f"/intervals/{name}/{col}"] = (f"stimulus_presentations.{col}", func)
        out.append((functools.partial(_presentations_view, rows=rows), mapping))
    return out


def _csd_view(ds: xr.Dataset) -> xr.Dataset:
    return ds.transpose("time", "virtual_channel_index")


def _probe_mappings(f: h5py.File, kind: str) -> list[tuple[Any, dict[str, Any]]]:
    series = _lfp_group(f)
    lfp: dict[str, Any] = {}
    if series is not None:
        data = f[f"{series}/data"]
        conversion = float(data.attrs.get("conversion", 1.0))
        scale = None
        if conversion != 1.0 or data.dtype != np.float32:
            scale = blockwise(lambda a: (np.asarray(a) * conversion).astype(np.float32))
        ids = np.asarray(f[f"{_ELECTRODES}/id"][:], np.int64)
        lfp = {
            f"/{series}/data": ("lfp", scale),
            f"/{series}/timestamps": ("time", _as(np.float64)),
            f"/{series}/electrodes": ("channel", lambda a: ids[np.asarray(a, np.int64)]),
        }
        lfp.update(_electrode_mapping(f, verbatim_location=True))
        lfp[f"/{_ELECTRODES}/id"] = ("channel_id", _as(np.int64))
    base = "/processing/current_source_density/ecephys_csd"
    csd: dict[str, Any] = {}
    if base in f:
        g = f[base]
        ts = [k for k in g if isinstance(g[k], h5py.Group) and "data" in g[k]]
        for key in ts[:1]:
            csd[f"{base}/{key}/data"] = ("csd", None)
            csd[f"{base}/{key}/timestamps"] = ("time", _as(np.float64))
        csd[f"{base}/virtual_electrode_y_positions"] = ("vertical_position", _as(np.float64))
        if "virtual_electrode_x_positions" in g:
            csd[f"{base}/virtual_electrode_x_positions"] = (
                "horizontal_position",
                _as(np.float64),
            )
    if kind == "ecephys_csd":
        return [(_csd_view, csd), (None, lfp)]
    return [({}, lfp), (None, csd)]


def fidelity_mappings(ds: xr.Dataset, path: str | Path) -> list[tuple[Any, dict[str, Any]]]:
    """How each dataset matched by :data:`MAPPED_HDF5` is held by ``ds``, for a fidelity check.

    Used by :func:`abo_lake.fidelity_mapped.check_reader` (which explains ``view`` and
    ``mapping``). Numbers are stored as they are, ids and times cast to int64/float64, strings
    decoded. Documented transforms: electrode ``location`` -> ``structure_acronym`` with
    AllenSDK's cleaning ('None' -> '', ``DG-mo`` -> ``DG``; not invertible; the probe LFP
    Dataset keeps it verbatim as ``channels.location``); ``spike_amplitudes_index`` must equal
    ``spike_times_index``; ``waveform_mean`` (units·channels, samples) is compared with the
    stored (unit, channel, sample) array reshaped back, its index with the one the shape
    implies; each presentation table is compared with its own rows of the concatenated,
    start-time-sorted ``stimulus_presentations`` (numbers as float64, '' -> "null", numbers of
    a column that is text in another table -> ``repr`` or "null"); the LFP ``electrodes`` rows are
    compared as the electrode ids they point to, ``data`` as ``data * conversion`` in float32
    when it is not float32 with conversion 1; ``csd`` transposed back to (time, channel). A
    probe file's LFP and CSD Datasets each list the other's datasets with view ``None``.

    Parameters
    ----------
    ds
        A Dataset :func:`read` made of ``path`` (maybe re-opened).
    path
        The source file.

    Returns
    -------
    list of (view, mapping)
        Pairs for :func:`abo_lake.fidelity.check_mapped`.
    """
    kind = ds.attrs.get("abo_lake_kind")
    with h5py.File(path, "r") as f:
        if kind in ("ecephys_lfp", "ecephys_csd"):
            return _probe_mappings(f, kind)
        return _session_mappings(f)
