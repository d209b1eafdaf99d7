"""Reader of Cell Types files: NWB 1 intracellular ephys and SWC morphology.

``read(path)`` returns one Dataset keyed by its path in a release:

- ``ephys.nwb`` (NWB 1.0.x HDF5, ``ALLEN_DATA.md`` section 5) ->
  ``celltypes/specimen/<specimen_id>/ephys`` (kind ``celltypes_ephys``). Dim ``sweep_number``
  (sorted numerically) holds the sweep table; the samples are ragged: ``stimulus`` (A) and
  ``response`` (V) are flat float64 along ``sample`` with ``sweep_index`` (cumulative end
  offsets along ``sweep_number``), so sweep ``i`` is ``stimulus[sweep_index[i-1]:sweep_index[i]]``
  (``sweep_index[-1] = 0``). Each sweep spans the ``idx_start``/``count`` of its
  ``epochs/Sweep_<n>`` epoch. As in AllenSDK's ``NwbDataSet``, the stored data are multiplied
  by their ``conversion`` attribute when the pipeline version in ``general/generated_by`` is
  1.1 or later, and used as stored otherwise (older files hold SI values with a wrong
  ``conversion``); the factor applied is kept in ``stimulus_conversion`` /
  ``response_conversion``. Spike times (s from the sweep start) are flat along ``spike`` with
  ``spike_times_index``. The specimen id is ``general/specimen_id`` or, when the file lacks
  it, the ``<id>`` of its folder ``specimen_<id>`` (the ``CellTypesCache`` layout).
- ``*.swc`` -> ``celltypes/specimen/<specimen_id>/morphology`` (kind ``celltypes_morphology``):
  dim ``node`` whose coordinate is the SWC id, with ``type``, ``x``, ``y``, ``z``, ``radius``
  (µm) and ``parent`` (SWC id, -1 for a root). The specimen id is taken from the file name
  of Allen's downloads (``..._<specimen_id>_m.swc``) or else from the folder
  ``specimen_<id>``.

:func:`morphometry` computes simple whole-cell measures from a morphology Dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.sources._hdf5 import HDF5_SIGNATURE, lazy_array, read_str

__all__ = ["MAPPED_HDF5", "SWC_TYPES", "fidelity_mappings", "morphometry", "read", "sniff"]

#: HDF5 datasets whose content becomes variables of the ephys Dataset. Their small metadata
#: neighbours (``aibs_stimulus_*``, ``gain``, ``idx_start``, ...) are read too but left to the
#: raw copy, which keeps their exact HDF5 types.
MAPPED_HDF5: tuple[str, ...] = (
    "/stimulus/presentation/Sweep_*/data",
    "/acquisition/timeseries/Sweep_*/data",
    "/analysis/spike_times/Sweep_*",
)

#: SWC structure types by code (index), as in the Allen reconstructions.
SWC_TYPES: list[str] = ["undefined", "soma", "axon", "basal dendrite", "apical dendrite"]

_CHUNK_SAMPLES = 1 << 19  # 4 MiB of float64
_SWEEP_RE = re.compile(r"^Sweep_(\d+)$")
_SPECIMEN_DIR_RE = re.compile(r"^specimen_(\d+)$")
_SWC_NAME_RE = re.compile(r"_(\d+)_m(?:_\w+)?\.swc$", re.IGNORECASE)
_SWC_COLUMNS = "id type x y z radius parent"
_TYPE_DESCRIPTION = "SWC type: 1 soma, 2 axon, 3 basal dendrite, 4 apical dendrite"
#: Numeric sweep metadata datasets of ``stimulus/presentation/Sweep_<n>`` (AllenSDK names).
_NUMERIC_META = (
    "aibs_stimulus_amplitude_pa",
    "aibs_stimulus_interval",
    "gain",
    "initial_access_resistance",
    "seal",
    "bias_current",
    "bridge_balance",
    "capacitance_compensation",
)


# --- sniffing -----------------------------------------------------------------------------


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(8)
    return head == HDF5_SIGNATURE or h5py.is_hdf5(path)


def _nwb_version(f: h5py.File) -> str:
    if "nwb_version" in f and isinstance(f["nwb_version"], h5py.Dataset):
        return read_str(f["nwb_version"][()])
    if "nwb_version" in f.attrs:
        return read_str(f.attrs["nwb_version"])
    return ""


def _sweep_epochs(f: h5py.File) -> list[int]:
    if "epochs" not in f:
        return []
    return sorted(int(m.group(1)) for k in f["epochs"] if (m := _SWEEP_RE.match(k)))


def _first_data_line(path: Path) -> list[str] | None:
    with path.open("rb") as fh:
        head = fh.read(65536)
    if b"\x00" in head:
        return None
    for raw in head.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            return line.split()
    return None


def _is_swc(path: Path) -> bool:
    fields = _first_data_line(path)
    if fields is None or len(fields) != 7:
        return False
    try:
        [float(x) for x in fields]
    except ValueError:
        return False
    return True


def sniff(path: str | Path) -> bool:
    """Return True for a Cell Types NWB 1 ephys file or an SWC file; never raise."""
    p = Path(path)
    try:
        if _is_hdf5(p):
            with h5py.File(p, "r") as f:
                return _nwb_version(f).startswith("NWB-1") and bool(_sweep_epochs(f))
        return _is_swc(p)
    except Exception:  # a sniffer answers "not mine" for anything unreadable
        return False


# --- ephys --------------------------------------------------------------------------------


def _pipeline_version(f: h5py.File) -> tuple[int, int]:
    """``general/generated_by`` holds key, value pairs; return the "version" as (major, minor)."""
    if "general/generated_by" not in f:
        return (0, 0)
    info = [read_str(x) for x in np.atleast_1d(f["general/generated_by"][()])]
    for key, value in zip(info[::2], info[1::2]):
        if key == "version":
            parts = value.split(".")
            try:
                return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
            except ValueError:
                return (0, 0)
    return (0, 0)


def _series_path(f: h5py.File, part: str, default: str) -> str:
    """Return the path of the TimeSeries an epoch part links to (soft or hard link)."""
    link = f[part].get("timeseries", getlink=True)
    if isinstance(link, h5py.SoftLink):
        return link.path
    if default in f and f[default].id == f[f"{part}/timeseries"].id:
        return default
    return f[f"{part}/timeseries"].name


def _unit_name(unit: str) -> str:
    if unit.startswith("A"):
        return "Amps"
    if unit.startswith("V"):
        return "Volts"
    return unit or "Unknown"


def _specimen_id_from_folder(path: Path) -> int | None:
    m = _SPECIMEN_DIR_RE.match(path.resolve().parent.name)
    return int(m.group(1)) if m else None


def _open_nwb1(path: Path) -> h5py.File:
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise SourceFileError(
            f"{path}: not a readable HDF5 file ({err}); expected a Cell Types NWB 1 ephys file "
            "(is it truncated? download it again)"
        ) from err
    version = _nwb_version(f)
    if not version.startswith("NWB-1"):
        f.close()
        raise SourceFileError(
            f"{path}: nwb_version is {version!r}, expected 'NWB-1.0.x'; Cell Types ephys files "
            "are NWB 1 (an NWB 2 file belongs to another reader)"
        )
    if not _sweep_epochs(f):
        names = sorted(f["epochs"]) if "epochs" in f else []
        f.close()
        raise SourceFileError(
            f"{path}: no epochs/Sweep_<n> groups (found {names[:10]!r}); expected a Cell Types "
            "NWB 1 ephys file"
        )
    return f


def _sweep_part(
    f: h5py.File, path: Path, n: int, part: str, default: str, apply_conversion: bool
) -> tuple[str, int, int, float, str, float]:
    """(series path, idx_start, count, conversion applied, unit name, sampling rate)."""
    epoch = f"epochs/Sweep_{n}/{part}"
    try:
        series = _series_path(f, epoch, default)
        idx_start = int(f[f"{epoch}/idx_start"][()])
        count = int(f[f"{epoch}/count"][()])
        data = f[f"{series}/data"]
        rate = float(f[f"{series}/starting_time"].attrs["rate"])
    except KeyError as err:
        raise SourceFileError(
            f"{path}: sweep {n} is incomplete ({err}); expected {epoch}/{{idx_start,count,"
            "timeseries}} linking to a series with data and starting_time.rate"
        ) from err
    if idx_start < 0 or idx_start + count > data.shape[0]:
        raise SourceFileError(
            f"{path}: {epoch} covers samples {idx_start}..{idx_start + count} but {series}/data "
            f"has {data.shape[0]}"
        )
    conversion = float(data.attrs.get("conversion", 1.0)) if apply_conversion else 1.0
    unit = _unit_name(read_str(data.attrs.get("unit", b"")))
    return series, idx_start, count, conversion, unit, rate


def _flat(
    path: Path, parts: list[tuple[str, int, int, float, str, float]]
) -> tuple[da.Array, np.ndarray]:
    pieces = []
    for series, start, count, conversion, _, _ in parts:
        arr = lazy_array(path, f"{series}/data")[start : start + count]
        pieces.append(arr.astype(np.float64) * conversion)
    flat = da.concatenate(pieces) if pieces else da.zeros(0)
    ends = np.cumsum([p[2] for p in parts], dtype=np.int64)
    return flat.rechunk(_CHUNK_SAMPLES), ends


def _read_ephys(path: Path) -> dict[str, xr.Dataset]:
    with _open_nwb1(path) as f:
        numbers = _sweep_epochs(f)
        apply_conversion = _pipeline_version(f) >= (1, 1)
        stim_parts, resp_parts = [], []
        for n in numbers:
            stim_parts.append(
                _sweep_part(
                    f, path, n, "stimulus", f"/stimulus/presentation/Sweep_{n}", apply_conversion
                )
            )
            resp_parts.append(
                _sweep_part(
                    f, path, n, "response", f"/acquisition/timeseries/Sweep_{n}", apply_conversion
                )
            )
            if stim_parts[-1][2] != resp_parts[-1][2]:
                raise SourceFileError(
                    f"{path}: sweep {n} has {stim_parts[-1][2]} stimulus samples but "
                    f"{resp_parts[-1][2]} response samples; expected equal counts"
                )
        table = _sweep_table(f, numbers, stim_parts)
        spikes = [
            np.asarray(f[f"analysis/spike_times/Sweep_{n}"][()], dtype=np.float64).ravel()
            if f"analysis/spike_times/Sweep_{n}" in f
            else np.zeros(0)
            for n in numbers
        ]
        attrs = _file_attrs(f, path)
    stimulus, sweep_index = _flat(path, stim_parts)
    response, _ = _flat(path, resp_parts)
    spike_index = np.cumsum([s.size for s in spikes], dtype=np.int64)
    sw = ("sweep_number",)
    data_vars: dict[str, tuple] = {
        "stimulus": (("sample",), stimulus, {"units": _units(stim_parts), "long_name": "stimulus"}),
        "response": (("sample",), response, {"units": _units(resp_parts), "long_name": "response"}),
        "sweep_index": (sw, sweep_index, {"description": "end offsets into stimulus/response"}),
        "spike_times": (
            ("spike",),
            np.concatenate(spikes) if spikes else np.zeros(0),
            {"units": "s", "description": "threshold crossings, seconds from the sweep start"},
        ),
        "spike_times_index": (sw, spike_index, {"description": "end offsets into spike_times"}),
        "num_spikes": (sw, np.array([s.size for s in spikes], dtype=np.int64)),
        "sampling_rate": (sw, np.array([p[5] for p in stim_parts]), {"units": "Hz"}),
        "stimulus_unit": (sw, np.array([p[4] for p in stim_parts], dtype=str)),
        "response_unit": (sw, np.array([p[4] for p in resp_parts], dtype=str)),
        "stimulus_conversion": (sw, np.array([p[3] for p in stim_parts])),
        "response_conversion": (sw, np.array([p[3] for p in resp_parts])),
        **table,
    }
    ds = xr.Dataset(
        data_vars,
        coords={"sweep_number": ("sweep_number", np.asarray(numbers, dtype=np.int64))},
        attrs=attrs,
    )
    for name in ("stimulus", "response"):
        ds[name].encoding["chunks"] = (_CHUNK_SAMPLES,)
    return {f"celltypes/specimen/{attrs['specimen_id']}/ephys": ds}


def _units(parts: list[tuple[str, int, int, float, str, float]]) -> str:
    units = {p[4] for p in parts}
    if units == {"Amps"}:
        return "A"
    if units == {"Volts"}:
        return "V"
    return "mixed; see stimulus_unit and response_unit"


def _sweep_table(
    f: h5py.File, numbers: list[int], stim_parts: list[tuple[str, int, int, float, str, float]]
) -> dict[str, tuple]:
    """Sweep metadata from the stimulus series (where ``get_sweep_metadata`` looks)."""
    sw = ("sweep_number",)
    names, descriptions = [], []
    numeric: dict[str, list[float]] = {k: [] for k in _NUMERIC_META}
    exp_start, exp_stop, start_time, stop_time = [], [], [], []
    for n, part in zip(numbers, stim_parts):
        g = f[part[0]]
        names.append(read_str(g["aibs_stimulus_name"][()]) if "aibs_stimulus_name" in g else "")
        desc = g.get("aibs_stimulus_description")
        descriptions.append(read_str(desc[()]) if desc is not None else "")
        for key in _NUMERIC_META:
            numeric[key].append(float(g[key][()]) if key in g else np.nan)
        exp = f.get(f"epochs/Experiment_{n}/stimulus")
        lo, count = (part[1], part[2]) if exp is None else (exp["idx_start"][()], exp["count"][()])
        exp_start.append(int(lo))
        exp_stop.append(int(lo) + int(count) - 1)
        ep = f[f"epochs/Sweep_{n}"]
        start_time.append(float(ep["start_time"][()]) if "start_time" in ep else np.nan)
        stop_time.append(float(ep["stop_time"][()]) if "stop_time" in ep else np.nan)
    table: dict[str, tuple] = {
        "stimulus_name": (sw, np.array(names, dtype=str)),
        "aibs_stimulus_description": (sw, np.array(descriptions, dtype=str)),
        "index_range_start": (sw, np.array(exp_start, dtype=np.int64)),
        "index_range_stop": (sw, np.array(exp_stop, dtype=np.int64)),
        "start_time": (sw, np.array(start_time), {"units": "s"}),
        "stop_time": (sw, np.array(stop_time), {"units": "s"}),
    }
    units = {"aibs_stimulus_amplitude_pa": "pA", "aibs_stimulus_interval": "s"}
    for key, values in numeric.items():
        if not np.all(np.isnan(values)):
            attrs = {"units": units[key]} if key in units else {}
            table[key] = (sw, np.array(values), attrs)
    return table


def _file_attrs(f: h5py.File, path: Path) -> dict:
    gen = f.get("general", {})
    specimen_id = None
    if "specimen_id" in gen:
        try:
            specimen_id = int(read_str(gen["specimen_id"][()]))
        except ValueError:
            specimen_id = None
    if specimen_id is None:
        specimen_id = _specimen_id_from_folder(path)
    if specimen_id is None:
        raise SourceFileError(
            f"{path}: no specimen id: general/specimen_id is missing and the folder is not "
            "named specimen_<id>; expected one of them (the CellTypesCache layout)"
        )
    attrs: dict = {
        "abo_lake_kind": "celltypes_ephys",
        "source_file": path.name,
        "specimen_id": specimen_id,
        "nwb_version": _nwb_version(f),
        "pipeline_version": ".".join(map(str, _pipeline_version(f))),
    }
    for key in ("identifier", "session_start_time", "session_description"):
        if key in f:
            attrs[key] = read_str(f[key][()])
    if "specimen_name" in gen:
        attrs["specimen_name"] = read_str(gen["specimen_name"][()])
    return attrs


def _scaled(conversion: float) -> Callable[[np.ndarray], np.ndarray]:
    def transform(a: np.ndarray) -> np.ndarray:
        return np.asarray(a).astype(np.float64) * conversion

    return transform


def fidelity_mappings(
    ds: xr.Dataset,
    path: str | Path | None = None,
) -> list[tuple[dict[str, slice], dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]]]:
    """Per sweep, the slice of ``ds`` and the HDF5 datasets it holds, for a fidelity check.

    Each item is ``(selection, {hdf5 path: (variable, transform)})``: compare
    ``transform(source)`` with ``ds.isel(selection)[variable]`` (for example with
    ``abo_lake.fidelity.check_mapped(path, ds.isel(selection), mapping)``). The series are
    expected at their AllenSDK paths and each Sweep epoch to span its whole series (as
    ``NwbDataSet`` asserts); otherwise the comparison reports the difference.

    Parameters
    ----------
    ds
        A ``celltypes_ephys`` Dataset from :func:`read`.
    path
        The source file; unused (everything needed is in ``ds``), accepted so that all readers
        share the signature :func:`abo_lake.fidelity_mapped.check_reader` calls.

    Returns
    -------
    list
        One ``(selection, mapping)`` per sweep, covering every path in :data:`MAPPED_HDF5`.
    """
    out = []
    ends = ds["sweep_index"].values
    spike_ends = ds["spike_times_index"].values
    for i, n in enumerate(ds["sweep_number"].values):
        lo = int(ends[i - 1]) if i else 0
        spike_lo = int(spike_ends[i - 1]) if i else 0
        selection = {
            "sample": slice(lo, int(ends[i])),
            "spike": slice(spike_lo, int(spike_ends[i])),
        }
        stim_conv = float(ds["stimulus_conversion"].values[i])
        resp_conv = float(ds["response_conversion"].values[i])
        mapping = {
            f"/stimulus/presentation/Sweep_{n}/data": ("stimulus", _scaled(stim_conv)),
            f"/acquisition/timeseries/Sweep_{n}/data": ("response", _scaled(resp_conv)),
            f"/analysis/spike_times/Sweep_{n}": ("spike_times", _scaled(1.0)),
        }
        out.append((selection, mapping))
    return out


# --- SWC ----------------------------------------------------------------------------------


def _specimen_id_from_swc_path(path: Path) -> int:
    m = _SWC_NAME_RE.search(path.name)
    if m:
        return int(m.group(1))
    folder = _specimen_id_from_folder(path)
    if folder is not None:
        return folder
    raise SourceFileError(
        f"{path}: cannot tell the specimen id; expected a file named like Allen's downloads "
        "('..._<specimen_id>_m.swc') or a folder named specimen_<id>"
    )


def _parse_swc(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (table (n, 7) float64, file line number of each row, header comment lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise SourceFileError(f"{path}: not a readable SWC text file ({err})") from err
    header: list[str] = []
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            header.append(line[1:].strip())
            continue
        fields = line.split()
        if len(fields) != 7:
            raise SourceFileError(
                f"{path}: line {number}: found {len(fields)} columns ({line[:60]!r}), "
                f"expected 7 ({_SWC_COLUMNS})"
            )
        rows.append(fields)
        line_numbers.append(number)
    if not rows:
        raise SourceFileError(f"{path}: no nodes; expected lines of 7 columns ({_SWC_COLUMNS})")
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as err:
        for number, fields in zip(line_numbers, rows):
            try:
                [float(x) for x in fields]
            except ValueError:
                raise SourceFileError(
                    f"{path}: line {number}: non-numeric value in {' '.join(fields)!r}; "
                    f"expected 7 numbers ({_SWC_COLUMNS})"
                ) from err
        raise
    return table, np.asarray(line_numbers), header


def _check_swc(path: Path, table: np.ndarray, lines: np.ndarray) -> None:
    for col, name in [(0, "id"), (1, "type"), (6, "parent")]:
        bad = np.flatnonzero(table[:, col] != np.round(table[:, col]))
        if bad.size:
            raise SourceFileError(
                f"{path}: line {lines[bad[0]]}: {name} {table[bad[0], col]} is not an integer"
            )
    ids = table[:, 0].astype(np.int64)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(np.diff(ids[order]) == 0)
    if dup.size:
        row = order[dup[0] + 1]
        raise SourceFileError(
            f"{path}: line {lines[row]}: node id {ids[row]} appears twice; expected unique ids"
        )
    parents = table[:, 6].astype(np.int64)
    pos = np.clip(np.searchsorted(ids[order], parents), 0, ids.size - 1)
    missing = np.flatnonzero((parents != -1) & (ids[order][pos] != parents))
    if missing.size:
        row = missing[0]
        raise SourceFileError(
            f"{path}: line {lines[row]}: parent {parents[row]} of node {ids[row]} does not "
            "exist; expected -1 (a root) or the id of another node"
        )
    anc = _parent_rows(ids, parents)
    if not np.all(_root_of(anc) >= 0):
        row = int(np.flatnonzero(_root_of(anc) < 0)[0])
        raise SourceFileError(
            f"{path}: line {lines[row]}: node {ids[row]} is on a cycle of parents; expected a "
            "tree (every node reaches a parent -1)"
        )


def _parent_rows(ids: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Row index of each node's parent, -1 for roots (parents must exist)."""
    order = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids[order], parents), 0, ids.size - 1)
    return np.where(parents == -1, -1, order[pos])


def _root_of(parent_rows: np.ndarray) -> np.ndarray:
    """Row of each node's root by pointer jumping; -1 where a node is on or above a cycle."""
    n = parent_rows.size
    rows = np.arange(n)
    anc = np.where(parent_rows < 0, rows, parent_rows)
    for _ in range(int(np.ceil(np.log2(max(n, 2)))) + 1):
        anc = anc[anc]
    return np.where(parent_rows[anc] < 0, anc, -1)


def _read_swc(path: Path) -> dict[str, xr.Dataset]:
    table, lines, header = _parse_swc(path)
    _check_swc(path, table, lines)
    specimen_id = _specimen_id_from_swc_path(path)
    node = ("node",)
    um = {"units": "um"}
    ds = xr.Dataset(
        {
            "type": (node, table[:, 1].astype(np.int32), {"description": _TYPE_DESCRIPTION}),
            "x": (node, table[:, 2], um),
            "y": (node, table[:, 3], um),
            "z": (node, table[:, 4], um),
            "radius": (node, table[:, 5], um),
            "parent": (node, table[:, 6].astype(np.int64), {"description": "parent id, -1 = root"}),
        },
        coords={"node": ("node", table[:, 0].astype(np.int64), {"description": "SWC id"})},
        attrs={
            "abo_lake_kind": "celltypes_morphology",
            "source_file": path.name,
            "specimen_id": specimen_id,
            "header": header,
            "swc_types": SWC_TYPES,
        },
    )
    return {f"celltypes/specimen/{specimen_id}/morphology": ds}


def morphometry(ds: xr.Dataset) -> dict[str, float | int]:
    """Compute simple whole-cell measures of a ``celltypes_morphology`` Dataset, vectorised.

    Lengths are Euclidean node-to-parent distances in µm. Edges ending on a soma node (type 1)
    are not neurite and are left out of ``total_length``; path distances follow every edge.

    Parameters
    ----------
    ds
        A morphology Dataset from :func:`read`.

    Returns
    -------
    dict
        ``n_nodes``; ``n_stems`` (neurites leaving the soma); ``n_bifurcations`` (non-soma
        nodes with two or more children); ``n_branches`` (sections between the soma,
        bifurcations and tips); ``n_tips`` (non-soma nodes without children);
        ``total_length``; ``max_path_distance`` (longest path from a root along the tree);
        ``max_euclidean_distance`` (farthest node from the soma centre); ``soma_radius``
        (mean radius of the soma nodes, NaN without one).

    Examples
    --------
    >>> (ds,) = read("reconstruction.swc").values()  # doctest: +SKIP
    >>> morphometry(ds)["total_length"]  # doctest: +SKIP
    """
    ids = ds["node"].values.astype(np.int64)
    parents = ds["parent"].values.astype(np.int64)
    types = ds["type"].values
    xyz = np.stack([ds[c].values for c in ("x", "y", "z")], axis=1)
    prow = _parent_rows(ids, parents)
    has_parent = prow >= 0
    edge = np.where(has_parent, np.linalg.norm(xyz - xyz[np.maximum(prow, 0)], axis=1), 0.0)
    soma = types == 1
    children = np.bincount(prow[has_parent], minlength=ids.size)
    neurite = ~soma
    parent_is_soma = has_parent & soma[np.maximum(prow, 0)]
    bif = neurite & (children >= 2)
    section_start = neurite & (~has_parent | parent_is_soma | bif[np.maximum(prow, 0)])
    # path distance to the root by pointer jumping: O(n log n), no Python loop over nodes
    dist = edge.copy()
    anc = np.where(has_parent, prow, np.arange(ids.size))
    for _ in range(int(np.ceil(np.log2(max(ids.size, 2)))) + 1):
        dist = dist + dist[anc]  # roots point to themselves with distance 0
        anc = anc[anc]
    centre = xyz[soma].mean(axis=0) if soma.any() else xyz[~has_parent][0]
    return {
        "n_nodes": int(ids.size),
        "n_stems": int(np.count_nonzero(neurite & parent_is_soma)),
        "n_bifurcations": int(np.count_nonzero(bif)),
        "n_branches": int(np.count_nonzero(section_start)),
        "n_tips": int(np.count_nonzero(neurite & (children == 0))),
        "total_length": float(edge[neurite].sum()),
        "max_path_distance": float(dist.max()),
        "max_euclidean_distance": float(np.linalg.norm(xyz - centre, axis=1).max()),
        "soma_radius": float(ds["radius"].values[soma].mean()) if soma.any() else float("nan"),
    }


# --- entry point --------------------------------------------------------------------------


def read(path: str | Path) -> dict[str, xr.Dataset]:
    """Read a Cell Types ``ephys.nwb`` or SWC file.

    Parameters
    ----------
    path
        An NWB 1 ephys file or an SWC reconstruction.

    Returns
    -------
    dict
        ``{"celltypes/specimen/<id>/ephys": ds}`` or ``{"celltypes/specimen/<id>/morphology":
        ds}``; ephys samples stay lazy (dask, opened per block).

    Raises
    ------
    SourceFileError
        For a missing, truncated or non-HDF5 ``.nwb``, an NWB 2 file, an SWC line without 7
        numeric columns, a missing parent, duplicate ids or a cycle, naming file and line.

    Examples
    --------
    >>> (ds,) = read("specimen_480000000/ephys.nwb").values()  # doctest: +SKIP
    >>> ds.response[: int(ds.sweep_index[0])]  # the first sweep, in V  # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise SourceFileError(f"{p}: no such file")
    if _is_hdf5(p) or p.suffix.lower() in (".nwb", ".h5", ".hdf5"):
        return _read_ephys(p)
    if _is_swc(p) or p.suffix.lower() == ".swc":
        return _read_swc(p)
    raise SourceFileError(
        f"{p}: neither an HDF5 (NWB 1 ephys) file nor an SWC text file whose first data line "
        f"has 7 numbers ({_SWC_COLUMNS})"
    )
