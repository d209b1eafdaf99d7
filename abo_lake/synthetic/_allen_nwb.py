"""AllenSDK's NWB extensions and the table conventions of its writers, for the synthetic writers.

AllenSDK 2.16.2 writes its files with five extension namespaces (``ndx-aibs-behavior-ophys``,
``ndx-aibs-ecephys``, ``ndx-aibs-ophys-event-detection``, ``ndx-aibs-stimulus-template``,
``ndx-ellipse-eye-tracking``). Their specs, as cached in AllenSDK-written files, are vendored in
``data/allensdk_nwb_extensions.json`` and loaded into a private copy of pynwb's type map, so the
synthetic files carry the same neurodata types and cached specs as a release file.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pynwb
from hdmf.build import BuildManager, TypeMap
from hdmf.common import VectorData, VectorIndex
from hdmf.spec.namespace import SpecReader
from pynwb import NWBHDF5IO
from pynwb.base import TimeSeries, TimeSeriesReference, TimeSeriesReferenceVectorData
from pynwb.epoch import TimeIntervals

__all__ = [
    "ECEPHYS",
    "VISUAL_BEHAVIOR",
    "extension",
    "fix_object_ids",
    "index_dtype",
    "intervals",
    "to_legacy_dynamic_table",
    "write_nwb",
]
_SPATIAL_SERIES_WARNING = ".*missing required value for attribute 'spatial_series'"

#: the extensions AllenSDK's Visual Behavior writers cache in their files
VISUAL_BEHAVIOR = (
    "ndx-aibs-behavior-ophys",
    "ndx-aibs-ophys-event-detection",
    "ndx-aibs-stimulus-template",
    "ndx-ellipse-eye-tracking",
)
#: ... and its Neuropixels writers (all five)
ECEPHYS = (*VISUAL_BEHAVIOR[:1], "ndx-aibs-ecephys", *VISUAL_BEHAVIOR[1:])


class _VendoredSpecs(SpecReader):
    """Reads one vendored namespace and its spec files from the JSON document."""

    def __init__(self, name: str, files: dict[str, Any]) -> None:
        super().__init__(source=f"abo_lake.synthetic:{name}")
        self._files = files

    def read_spec(self, spec_path: str) -> dict:
        return self._files[spec_path]

    def read_namespace(self, ns_path: str) -> list:
        return self._files[ns_path]["namespaces"]


@functools.cache
def _type_map(namespaces: tuple[str, ...]) -> TypeMap:
    text = importlib.resources.files("abo_lake.synthetic").joinpath(
        "data/allensdk_nwb_extensions.json"
    )
    specs = json.loads(text.read_text(encoding="utf-8"))
    type_map = pynwb.get_type_map()
    for name in namespaces:
        type_map.load_namespaces("namespace", reader=_VendoredSpecs(name, specs[name]["files"]))
    return type_map


def extension(type_name: str, namespaces: tuple[str, ...] = ECEPHYS) -> type:
    """Return the pynwb class of an AllenSDK extension type (e.g. ``"EcephysProbe"``).

    A file is written by :func:`write_nwb` with the same ``namespaces`` as its classes.
    """
    tm = _type_map(namespaces)
    for ns in namespaces:
        if type_name in tm.namespace_catalog.get_namespace(ns).get_registered_types():
            return tm.get_dt_container_cls(type_name, ns)
    raise KeyError(type_name)


def write_nwb(path: str | Path, nwb: pynwb.NWBFile, namespaces: tuple[str, ...] = ECEPHYS) -> None:
    """Write ``nwb`` to ``path`` with the AllenSDK extensions ``namespaces`` cached.

    ``EllipseEyeTracking`` inherits EyeTracking's required ``spatial_series`` and AllenSDK
    never sets it: hdmf's warning about it is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SPATIAL_SERIES_WARNING)
        with NWBHDF5IO(str(path), "w", manager=BuildManager(_type_map(namespaces))) as io:
            io.write(nwb)


def index_dtype(last: int) -> np.dtype:
    """Smallest unsigned dtype holding ``last``: the dtype hdmf gives a VectorIndex it grows."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if last <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def ragged_column(name: str, description: str, flat: Any, ends: np.ndarray) -> list:
    """A ragged column from its flat values and row ends (VectorIndex of the smallest uint)."""
    data = VectorData(name=name, description=description, data=flat)
    ends = np.asarray(ends)
    last = int(ends[-1]) if ends.size else 0
    return [
        data,
        VectorIndex(name=f"{name}_index", data=ends.astype(index_dtype(last)), target=data),
    ]


def ragged(name: str, description: str, rows: Sequence[Sequence], dtype=None) -> list:
    """A ragged column as AllenSDK's tables store it: data + VectorIndex (smallest uint)."""
    flat = np.concatenate([np.asarray(r, dtype=dtype) for r in rows]) if rows else np.array([])
    ends = np.cumsum([len(r) for r in rows]) if len(rows) else np.array([], int)
    data = VectorData(name=name, description=description, data=flat)
    last = int(ends[-1]) if len(ends) else 0
    index = VectorIndex(name=f"{name}_index", data=ends.astype(index_dtype(last)), target=data)
    return [data, index]


def intervals(
    name: str,
    description: str,
    columns: dict[str, tuple[str, Any]],
    *,
    timeseries: TimeSeries | None = None,
    frames: tuple[np.ndarray, np.ndarray] | None = None,
    tags: str | Sequence[Sequence[str]] | None = None,
    ragged_columns: dict[str, tuple[str, Sequence[Sequence]]] | None = None,
) -> TimeIntervals:
    """A TimeIntervals table as AllenSDK writes them.

    Parameters
    ----------
    name, description
        Table name and description.
    columns
        column -> (description, values), in the order of the table's ``colnames``
        (``start_time`` and ``stop_time`` included).
    timeseries, frames
        The ``timeseries`` column: rows reference ``timeseries`` over ``frames`` = (start,
        stop) sample indices (count = stop - start).
    tags
        One tag for every row, or a list of tags per row.
    ragged_columns
        column -> (description, rows) stored with a VectorIndex.
    """
    n = len(columns["start_time"][1])
    vectors: list = []
    for col, (desc, values) in columns.items():
        vectors.append(VectorData(name=col, description=desc, data=np.asarray(values)))
    for col, (desc, rows) in (ragged_columns or {}).items():
        vectors += ragged(col, desc, rows, dtype=np.float64)
    if tags is not None:
        rows = [[tags]] * n if isinstance(tags, str) else [list(t) for t in tags]
        flat = [t for r in rows for t in r]
        ends = np.cumsum([len(r) for r in rows])
        data = VectorData(name="tags", description="user-defined tags", data=flat)
        last = int(ends[-1]) if n else 0
        index = VectorIndex(name="tags_index", data=ends.astype(index_dtype(last)), target=data)
        vectors += [data, index]
    if timeseries is not None:
        start, stop = frames
        refs = TimeSeriesReferenceVectorData(
            name="timeseries",
            description="index into a TimeSeries object",
            data=[TimeSeriesReference(int(a), int(b - a), timeseries) for a, b in zip(start, stop)],
        )
        ends = np.arange(1, n + 1)
        vectors += [
            refs,
            VectorIndex(name="timeseries_index", data=ends.astype(index_dtype(n)), target=refs),
        ]
    return TimeIntervals(name=name, description=description, columns=vectors)


def to_legacy_dynamic_table(h5: h5py.File, path: str) -> None:
    """Type ``path`` as hdmf-common DynamicTable, as NWB < 2.9 files (AllenSDK's) have it.

    pynwb >= 3 writes the electrodes table as core ``ElectrodesTable``; AllenSDK 2.16.2's
    pynwb 2.8 wrote a plain ``DynamicTable`` there, which pynwb still reads.
    """
    h5[path].attrs["neurodata_type"] = "DynamicTable"
    h5[path].attrs["namespace"] = "hdmf-common"


def fix_object_ids(h5: h5py.File, salt: str) -> None:
    """Replace pynwb's random ``object_id`` UUIDs by ones derived from ``salt`` and the path."""

    def visit(name: str, obj: Any) -> None:
        if "object_id" in obj.attrs:
            obj.attrs["object_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{salt}/{name}"))

    visit("/", h5)
    h5.visititems(visit)
