"""Reader of Visual Behavior behavior-only sessions (``behavior_session_<id>.nwb``, NWB 2).

Most Visual Behavior sessions (training, and every session of a mouse without imaging) are
written by AllenSDK's ``BehaviorSession.to_nwb``: the behavior of a ``behavior_ophys_experiment``
file without the imaging. Reads with h5py at fixed paths (no pynwb objects); long series stay
lazy. Returns one ``behavior_session`` Dataset at ``behavior/session/<behavior_session_id>``,
with the variables and attributes of :func:`abo_lake.sources._vb_behavior.read_behavior`
(presentations, trials, licks, rewards, running, stimulus timestamps, templates, task
parameters, eye tracking when present) and the session's metadata as attributes under
AllenSDK's names (``BehaviorSession.metadata``): ``behavior_session_id``,
``behavior_session_uuid``, ``equipment_name``, ``project_code``, ``session_type``,
``stimulus_frame_rate`` (attributes of ``general/metadata``, layout note 8), ``sex``,
``age_in_days`` (from the ISO ``age``, kept too), ``mouse_id`` (str, as AllenSDK),
``full_genotype``, ``cre_line`` (AllenSDK's ``parse_cre_line``), ``driver_line`` (list),
``reporter_line`` (``general/subject``, note 10) and ``date_of_acquisition``
(``session_start_time``, ISO text). The datasets those come from are left to the raw copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.sources import _vb_behavior
from abo_lake.sources._hdf5 import open_hdf5, read_str, require_hdf5

__all__ = ["MAPPED_HDF5", "fidelity_mappings", "read", "sniff"]

KIND = "behavior_session"
_EXPECTED = "expected a Visual Behavior behavior-only NWB 2 file (behavior_session_<id>.nwb)"
#: What a behavior-only file has no trace of (imaging, Neuropixels).
_NOT_BEHAVIOR_ONLY = ("processing/ophys", "units", "general/extracellular_ephys")

#: fnmatch globs of the absolute HDF5 dataset paths this reader maps (see ``_vb_behavior``).
MAPPED_HDF5: tuple[str, ...] = _vb_behavior.MAPPED_HDF5


def _is_behavior_only(f: h5py.File) -> bool:
    version = read_str(f.attrs.get("nwb_version", ""))
    meta = f.get("general/metadata")
    return (
        version.startswith("2")
        and isinstance(meta, h5py.Group)
        and "behavior_session_id" in meta.attrs
        and "intervals/trials" in f
        and not any(k in f for k in _NOT_BEHAVIOR_ONLY)
    )


def sniff(path: str | Path) -> bool:
    """True if ``path`` looks like a behavior-only Visual Behavior NWB file (never raises)."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return _is_behavior_only(f)
    except Exception:
        return False


@contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    if not path.is_file():
        raise SourceFileError(f"{path}: no such file; {_EXPECTED}")
    require_hdf5(path, _EXPECTED)
    with open_hdf5(path, _EXPECTED) as f:
        if not _is_behavior_only(f):
            found = [k for k in _NOT_BEHAVIOR_ONLY if k in f]
            meta = f.get("general/metadata")
            raise SourceFileError(
                f"{path}: not a Visual Behavior behavior-only file; found nwb_version "
                f"{read_str(f.attrs.get('nwb_version', ''))!r}, "
                f"/general/metadata attributes {sorted(meta.attrs) if meta else None!r}, "
                f"/intervals/trials {'present' if 'intervals/trials' in f else 'absent'}"
                + (f" and {found!r} (imaging or Neuropixels)" if found else "")
                + "; expected BehaviorMetadata with behavior_session_id and trials, no imaging"
            )
        try:
            yield f
        except (KeyError, OSError, ValueError, IndexError) as err:
            if isinstance(err, SourceFileError):
                raise
            raise SourceFileError(f"{path}: cannot read the behavior session: {err}") from err


def _age_in_days(age: str) -> int | None:
    """AllenSDK's ``Age._age_code_to_days``: ``'P96D'`` -> 96 (None if unparsable)."""
    digits = age.removeprefix("P").removesuffix("D")
    return int(digits) if age.startswith("P") and digits.isdigit() else None


def _metadata(f: h5py.File, path: Path) -> dict[str, Any]:
    """AllenSDK's ``BehaviorSession.metadata`` fields (see the module docstring)."""
    attrs: dict[str, Any] = {}
    meta = f["general/metadata"]
    for key, value in meta.attrs.items():
        if key not in ("namespace", "neurodata_type", "object_id", "help"):
            attrs[key] = _vb_behavior.attr_value(value)
    subject = f.get("general/subject")
    if isinstance(subject, h5py.Group):
        for key in ("sex", "age", "genotype", "subject_id", "species"):
            if isinstance(subject.get(key), h5py.Dataset):
                attrs[key] = read_str(subject[key][()])
        for key in ("driver_line", "reporter_line"):
            if key in subject.attrs:
                attrs[key] = _vb_behavior.attr_value(subject.attrs[key])
    if isinstance(attrs.get("driver_line"), str):
        attrs["driver_line"] = [d for d in attrs["driver_line"].split(";") if d]
    if "age" in attrs:
        attrs["age_in_days"] = _age_in_days(attrs["age"])
    if "subject_id" in attrs:
        attrs["mouse_id"] = attrs["subject_id"]
    if "genotype" in attrs:
        attrs["full_genotype"] = attrs["genotype"]
        if ";" in attrs["genotype"]:  # AllenSDK's parse_cre_line
            attrs["cre_line"] = attrs["genotype"].split(";")[0].replace("/wt", "")
    if "session_start_time" in f:
        attrs["date_of_acquisition"] = read_str(f["session_start_time"][()])
    if not isinstance(attrs.get("behavior_session_id"), int):
        raise SourceFileError(
            f"{path}: /general/metadata has behavior_session_id "
            f"{attrs.get('behavior_session_id')!r}, expected an integer"
        )
    attrs["source_file"] = path.name
    attrs["abo_lake_kind"] = KIND
    return attrs


def read(path: str | Path) -> dict[str, xr.Dataset]:
    """Read one behavior-only session into a lazy Dataset.

    Parameters
    ----------
    path
        The NWB file.

    Returns
    -------
    dict
        ``{"behavior/session/<behavior_session_id>": Dataset}`` of kind ``behavior_session``.

    Raises
    ------
    SourceFileError
        If the file is missing, not HDF5, truncated, of another kind or of a layout this
        reader does not know (naming the HDF5 path and what was expected).

    Examples
    --------
    >>> read("behavior_session_1000000101.nwb")  # doctest: +SKIP
    """
    p = Path(path)
    with _open(p) as f:
        attrs = _metadata(f, p)
        variables, extra = _vb_behavior.read_behavior(p, f)
        for key in ("stimulus_presentations.start_time", "trials.start_time"):
            if key not in variables:
                raise SourceFileError(
                    f"{p}: no {key.split('.')[0]} (/intervals/*_presentations, "
                    "/intervals/trials); expected both in a behavior session"
                )
    attrs.update(extra)
    ds = xr.Dataset(variables, attrs=attrs)
    return {f"behavior/session/{attrs['behavior_session_id']}": ds}


def fidelity_mappings(ds: xr.Dataset, path: str | Path) -> list[tuple[Any, dict[str, Any]]]:
    """How each dataset matched by :data:`MAPPED_HDF5` is held by ``ds`` (see
    :func:`abo_lake.sources._vb_behavior.fidelity_mappings` for the transforms).

    Parameters
    ----------
    ds
        The ``behavior_session`` Dataset :func:`read` made of ``path`` (maybe re-opened).
    path
        The source file.

    Returns
    -------
    list of (view, mapping)
        Pairs for :func:`abo_lake.fidelity.check_mapped`.
    """
    with h5py.File(path, "r") as f:
        return _vb_behavior.fidelity_mappings(ds, path, f)
