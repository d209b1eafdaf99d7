"""Reader of Visual Behavior Neuropixels session NWB 2 files (AllenSDK's BehaviorEcephysSession).

A VBN session file is a Neuropixels session (units, electrodes, probes, optotagging: the same
layout as Visual Coding's, read by :mod:`abo_lake.sources.vcn_ecephys`'s helpers) plus a Visual
Behavior session (trials, licks, rewards, running, eye tracking, templates, task parameters).
It gives ``{"ecephys/session/<id>": ds}`` of kind ``ecephys_session`` with
``attrs["allensdk_session_class"] = "BehaviorEcephysSession"``, so ``.ecephys`` follows that
class (``get_units()`` unfiltered with the file's column names, ``get_channels()``, ``probes``
with ``name``, ``optotagging_table``, per-unit dicts over every unit, mean waveforms on all 384
channels). Its probe LFP files have the Visual Coding layout and are read by
:mod:`abo_lake.sources.vcn_ecephys` (``sniff`` here rejects them: they have no units).

The behavior part (stimulus presentations, trials, licks, rewards, running, stimulus
timestamps, eye tracking, templates, task parameters, eye-tracking rig geometry) is read by
:func:`abo_lake.sources._vb_behavior.read_behavior`, the reader of every Visual Behavior file,
in its layout (``stimulus_presentations.<col>`` along ``stimulus_presentation_id`` as stored,
``trials.<col>`` along ``trials_id``, ...); :mod:`abo_lake.behavior` makes AllenSDK's tables of
it. AllenSDK's ``BehaviorEcephysSession.metadata`` fields are attrs under its names
(``behavior_session_id``, ``equipment_name``, ``sex``, ``age_in_days``, ``mouse_id``,
``full_genotype``, ``cre_line``, ``driver_line``, ``reporter_line``, ``date_of_acquisition``,
...), as the behavior-only reader stores them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.sources import _vb_behavior
from abo_lake.sources import vcn_ecephys as _vcn
from abo_lake.sources._hdf5 import open_hdf5, read_str
from abo_lake.sources.hdf5_raw import matches

__all__ = ["MAPPED_HDF5", "fidelity_mappings", "read", "sniff"]

_ELECTRODES = _vcn._ELECTRODES
_METADATA = "general/metadata"
#: BehaviorMetadata attributes of ``general/metadata`` that AllenSDK's metadata dict holds.
_BEHAVIOR_METADATA = (
    "behavior_session_id",
    "behavior_session_uuid",
    "equipment_name",
    "project_code",
    "session_type",
    "stimulus_frame_rate",
)

#: The ecephys part: the Visual Coding reader's globs but its VCN-only groups.
_ECEPHYS_HDF5: tuple[str, ...] = (
    *(g for g in _vcn.MAPPED_HDF5 if not g.startswith(("/intervals/", "/processing/"))),
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
)
#: fnmatch globs of the absolute HDF5 dataset paths this reader maps: the ecephys part and
#: the behavior part (:data:`abo_lake.sources._vb_behavior.MAPPED_HDF5`).
MAPPED_HDF5: tuple[str, ...] = (*_ECEPHYS_HDF5, *_vb_behavior.MAPPED_HDF5)


def _is_vbn(f: h5py.File) -> bool:
    meta = f.get(_METADATA)
    return (
        read_str(f.attrs.get("nwb_version", "")).startswith("2")
        and "units" in f
        and f"{_ELECTRODES}/probe_vertical_position" in f
        and isinstance(meta, h5py.Group)
        and read_str(meta.attrs.get("neurodata_type", "")) == "BehaviorMetadata"
    )


def sniff(path: str | Path) -> bool:
    """Return True if ``path`` is a Visual Behavior Neuropixels session file; never raises."""
    try:
        with h5py.File(path, "r") as f:
            return _is_vbn(f)
    except Exception:
        return False


def read(path: str | Path) -> dict[str, xr.Dataset]:
    """Read a VBN session file into a lazy ``ecephys_session`` Dataset keyed by release path.

    Raises
    ------
    SourceFileError
        If the file is not HDF5, is truncated, or is not a VBN session (the message names what
        is missing).
    """
    p = Path(path)
    f = open_hdf5(p, "expected a Visual Behavior Neuropixels session NWB 2 file")
    try:
        with f:
            if not _is_vbn(f):
                missing = [
                    what
                    for what, ok in [
                        ("units", "units" in f),
                        (f"{_ELECTRODES}/probe_vertical_position",
                         f"{_ELECTRODES}/probe_vertical_position" in f),
                        (f"{_METADATA} (BehaviorMetadata)", _METADATA in f),
                        ("intervals/*_presentations", bool(_vcn._presentation_tables(f))),
                    ]
                    if not ok
                ]  # fmt: skip
                raise SourceFileError(
                    f"{p}: not an Allen Visual Behavior Neuropixels session file; missing "
                    f"{missing or [_METADATA + ' of neurodata_type BehaviorMetadata']}, found "
                    f"top-level groups {sorted(f)}"
                )
            if not _vcn._presentation_tables(f):
                raise SourceFileError(
                    f"{p}: no intervals/*_presentations table; a VBN session has its stimulus "
                    "presentations there"
                )
            return _read_session(p, f)
    except (OSError, KeyError, ValueError, TypeError) as err:
        if isinstance(err, SourceFileError):
            raise
        raise SourceFileError(
            f"{p}: unreadable or inconsistent VBN NWB file ({type(err).__name__}: {err})"
        ) from err


def _age_in_days(age: str) -> int | None:
    match = re.fullmatch(r"P(\d+)D", age.strip())
    return int(match.group(1)) if match else None


def _metadata(f: h5py.File) -> dict[str, Any]:
    """AllenSDK's ``BehaviorEcephysSession.metadata`` fields (but ``ecephys_session_id``)."""
    meta = f[_METADATA].attrs
    out: dict[str, Any] = {}
    for key in _BEHAVIOR_METADATA:
        if key in meta:
            out[key] = _vb_behavior.attr_value(meta[key])
    subject = f.get("general/subject")
    if isinstance(subject, h5py.Group):

        def text(name: str) -> str | None:
            return read_str(subject[name][()]) if name in subject else None

        genotype = text("genotype")
        out["sex"] = text("sex")
        out["age_in_days"] = _age_in_days(text("age") or "")
        out["full_genotype"] = genotype
        out["mouse_id"] = text("subject_id")
        if "reporter_line" in subject.attrs:
            out["reporter_line"] = read_str(subject.attrs["reporter_line"])
        if "driver_line" in subject.attrs:
            out["driver_line"] = [read_str(v) for v in np.atleast_1d(subject.attrs["driver_line"])]
        if genotype and ";" in genotype:  # AllenSDK's parse_cre_line
            out["cre_line"] = genotype.split(";")[0].split("/")[0]
    out["date_of_acquisition"] = read_str(f["session_start_time"][()])
    return {k: v for k, v in out.items() if v is not None}


def _read_session(p: Path, f: h5py.File) -> dict[str, xr.Dataset]:
    attrs = _vcn._meta(p, f)
    try:
        session_id = int(attrs["identifier"])
    except ValueError as err:
        raise SourceFileError(
            f"{p}: identifier {attrs['identifier']!r} is not an ecephys_session_id"
        ) from err
    attrs.update(
        abo_lake_kind="ecephys_session",
        ecephys_session_id=session_id,
        allensdk_session_class="BehaviorEcephysSession",
    )
    attrs.update(_metadata(f))
    ds = xr.Dataset(attrs=attrs)
    channels = _vcn._channels(f)
    probes = _vcn._probes(f, channels)
    _vcn._add_units(p, f, ds, channels, probes)
    for k, v in channels.items():
        if k != "id":
            ds[f"channels.{k}"] = ("channel_id", v)
    ds.coords["channel_id"] = ("channel_id", channels["id"])
    for k, v in probes.items():
        if k != "probe_id":
            ds[f"probes.{k}"] = ("probe", v)
    ds.coords["probe"] = ("probe", probes["probe_id"])
    ds.coords["probe"].attrs["description"] = "probe_id"
    variables, extra = _vb_behavior.read_behavior(p, f)
    ds = ds.merge(xr.Dataset(variables))
    ds = ds.merge(_vcn._intervals(f))
    ds.attrs.update(attrs)
    ds.attrs.update(extra)
    return {f"ecephys/session/{session_id}": _vcn._column_units(ds)}


def fidelity_mappings(ds: xr.Dataset, path: str | Path) -> list[tuple[Any, dict[str, Any]]]:
    """How each dataset matched by :data:`MAPPED_HDF5` is held by ``ds``, for
    :func:`abo_lake.fidelity_mapped.check_reader`: the ecephys part with the Visual Coding
    reader's documented transforms (:func:`abo_lake.sources.vcn_ecephys.fidelity_mappings`),
    the behavior part with the Visual Behavior reader's
    (:func:`abo_lake.sources._vb_behavior.fidelity_mappings`)."""
    ecephys = [
        (view, {k: v for k, v in m.items() if matches(k, _ECEPHYS_HDF5)})
        for view, m in _vcn.fidelity_mappings(ds, path)
    ]
    with h5py.File(path, "r") as f:
        behavior = _vb_behavior.fidelity_mappings(ds, path, f)
    return [(view, m) for view, m in ecephys if m] + behavior
