"""Cell Types analyses on lake Datasets: AllenSDK's ``NwbDataSet`` and ``swc.Morphology``.

Pure functions behind the ``.celltypes`` accessor (kind ``celltypes_ephys``) and the
``.morphology`` accessor (kind ``celltypes_morphology``); each takes the Dataset first.

Ephys (``celltypes/specimen/<id>/ephys``): the samples of all sweeps are one flat ``stimulus``
(A) and ``response`` (V) with end offsets ``sweep_index`` (see
:mod:`abo_lake.sources.celltypes`); :func:`get_sweep` reads only the chunks of one sweep.
Differences from AllenSDK 2.16.2's ``NwbDataSet``:

- values are float64 in SI units (the stored values times ``conversion`` for pipeline 1.1 and
  later files, as ``get_sweep`` intends). AllenSDK 2.16.2 under h5py 3 compares the bytes of
  ``general/generated_by`` with the str ``"version"``, reads pipeline version (0, 0) and
  returns the stored values (pA, mV) in the file's dtype (float32);
- :func:`get_sweep_numbers` is sorted numerically (AllenSDK: HDF5 name order, 10 before 8);
- :func:`get_sweep_metadata` gives str for ``aibs_stimulus_name`` (AllenSDK: bytes) and
  Python floats.

Morphology (``celltypes/specimen/<id>/morphology``): compartments are AllenSDK's
``read_swc`` compartments, renumbered 0-based in file order (``id`` is the row, ``parent`` the
parent's row, -1 for a root) with ``children`` and ``tree_id`` as AllenSDK computes them;
:func:`renumbered` gives that numbering as a Dataset. :func:`morphometry` gives whole-cell
measures whose definitions are :data:`MORPHOMETRY`.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from abo_lake.sources import celltypes as _reader

__all__ = [
    "MORPHOMETRY",
    "cells_table",
    "children_of",
    "compartment_index",
    "compartment_index_by_type",
    "compartment_list",
    "compartment_list_by_type",
    "get_spike_times",
    "get_sweep",
    "get_sweep_metadata",
    "get_sweep_numbers",
    "morphometry",
    "morphometry_table",
    "node",
    "num_trees",
    "parent_of",
    "renumbered",
    "soma",
    "stimulus_names",
    "sweep",
    "sweep_samples",
    "sweeps",
    "sweeps_by_stimulus",
    "tree",
]

#: AllenSDK's ``get_sweep_metadata`` fields (those a sweep has are returned).
SWEEP_METADATA = (
    "aibs_stimulus_amplitude_pa",
    "aibs_stimulus_name",
    "gain",
    "initial_access_resistance",
    "seal",
)
#: ``sweeps`` columns: ``ephys_sweeps.json`` name -> the Dataset variable it is read from.
SWEEP_COLUMNS = {
    "stimulus_name": "stimulus_name",
    "stimulus_description": "aibs_stimulus_description",
    "stimulus_absolute_amplitude": "aibs_stimulus_amplitude_pa",
    "stimulus_interval": "aibs_stimulus_interval",
    "stimulus_units": "stimulus_unit",
    "num_spikes": "num_spikes",
    "gain": "gain",
    "initial_access_resistance": "initial_access_resistance",
    "seal": "seal",
    "bridge_balance_mohm": "bridge_balance",
    "sampling_rate": "sampling_rate",
    "start_time": "start_time",
    "stop_time": "stop_time",
}

#: Morphometry feature -> its definition (lengths in µm, Euclidean, between node centres).
MORPHOMETRY: dict[str, str] = {
    "n_nodes": "number of SWC nodes",
    "n_stems": "neurites leaving the soma: non-soma nodes whose parent is a soma node",
    "n_bifurcations": "branch points: non-soma nodes with two or more children",
    "n_branches": "sections between the soma, branch points and tips (stems plus the "
    "children of branch points)",
    "n_tips": "terminal points: non-soma nodes without children",
    "total_length": "sum of node-to-parent distances of the non-soma nodes",
    "max_path_distance": "longest path from a root to a node along the tree",
    "max_euclidean_distance": "largest distance of a node from the soma centre (the mean "
    "position of the soma nodes)",
    "soma_radius": "mean radius of the soma nodes (type 1); NaN without one",
    "axon_length": "total_length of the axon (type 2) nodes",
    "basal_dendrite_length": "total_length of the basal dendrite (type 3) nodes",
    "apical_dendrite_length": "total_length of the apical dendrite (type 4) nodes",
    "width": "extent of the nodes along x (max - min)",
    "height": "extent of the nodes along y (max - min)",
    "depth": "extent of the nodes along z (max - min)",
}


def _specimen(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("specimen_id", ds.attrs.get("abo_lake_dataset", "?")))


# --- ephys ------------------------------------------------------------------------------------


def get_sweep_numbers(ds: xr.Dataset) -> list[int]:
    """Every sweep number of the specimen, sorted (AllenSDK: HDF5 name order)."""
    return [int(n) for n in ds.indexes["sweep_number"]]


def _row(ds: xr.Dataset, sweep_number: int) -> int:
    """Position of ``sweep_number`` along ``sweep_number``; KeyError naming it otherwise."""
    index = ds.indexes["sweep_number"]
    try:
        number = int(sweep_number)
    except (TypeError, ValueError) as err:
        raise TypeError(f"sweep_number must be an integer, got {sweep_number!r}") from err
    if number != sweep_number or number not in index:
        numbers = get_sweep_numbers(ds)
        raise KeyError(
            f"sweep_number {sweep_number!r} does not exist in specimen {_specimen(ds)}; "
            f"its sweeps are {numbers[:20]}{' ...' if len(numbers) > 20 else ''}"
        )
    return int(index.get_loc(number))


def sweep_samples(ds: xr.Dataset, sweep_number: int) -> slice:
    """The slice of ``stimulus``/``response`` (dim ``sample``) holding one sweep."""
    i = _row(ds, sweep_number)
    ends = ds["sweep_index"].values
    return slice(int(ends[i - 1]) if i else 0, int(ends[i]))


def sweep(ds: xr.Dataset, sweep_number: int) -> xr.Dataset:
    """One sweep, lazy: ``stimulus`` (A) and ``response`` (V) along ``time`` (s from its start).

    Its attrs hold ``sweep_number``, ``sampling_rate`` (Hz), ``index_range`` (first and last
    sample of the experiment epoch, after the test pulse) and ``stimulus_unit``, as
    :func:`get_sweep`; nothing is read until the values are.
    """
    i = _row(ds, sweep_number)
    part = ds[["stimulus", "response"]].isel(sample=sweep_samples(ds, sweep_number))
    rate = float(ds["sampling_rate"].values[i])
    n = part.sizes["sample"]
    part = part.rename_dims(sample="time").assign_coords(
        time=("time", np.arange(n) / rate, {"units": "s"})
    )
    part.attrs = {
        "specimen_id": ds.attrs.get("specimen_id"),
        "sweep_number": int(sweep_number),
        "stimulus_name": str(ds["stimulus_name"].values[i]),
        "sampling_rate": rate,
        "index_range": _index_range(ds, i),
        "stimulus_unit": str(ds["stimulus_unit"].values[i]),
    }
    return part


def _index_range(ds: xr.Dataset, i: int) -> tuple[int, int]:
    return (int(ds["index_range_start"].values[i]), int(ds["index_range_stop"].values[i]))


def get_sweep(ds: xr.Dataset, sweep_number: int) -> dict[str, Any]:
    """AllenSDK's ``NwbDataSet.get_sweep``: the sweep's arrays, read now (only its chunks).

    Returns
    -------
    dict
        ``stimulus`` (A) and ``response`` (V) as float64 NumPy arrays, ``stimulus_unit``
        ("Amps"), ``index_range`` (first and last sample of the experiment epoch) and
        ``sampling_rate`` (Hz).
    """
    part = sweep(ds, sweep_number)
    return {
        "stimulus": np.asarray(part["stimulus"].values),
        "response": np.asarray(part["response"].values),
        "stimulus_unit": part.attrs["stimulus_unit"],
        "index_range": part.attrs["index_range"],
        "sampling_rate": part.attrs["sampling_rate"],
    }


def get_sweep_metadata(ds: xr.Dataset, sweep_number: int) -> dict[str, Any]:
    """AllenSDK's ``get_sweep_metadata``: stimulus amplitude (pA) and name, gain, initial
    access resistance and seal, those the sweep has."""
    i = _row(ds, sweep_number)
    out: dict[str, Any] = {}
    for key in SWEEP_METADATA:
        name = "stimulus_name" if key == "aibs_stimulus_name" else key
        if name not in ds:
            continue
        value = ds[name].values[i]
        if isinstance(value, str | np.str_):
            out[key] = str(value)
        elif not np.isnan(value):
            out[key] = float(value)
    return out


def get_spike_times(ds: xr.Dataset, sweep_number: int, key: str | None = None) -> np.ndarray:
    """AllenSDK's ``get_spike_times``: threshold crossings of a sweep, s from its start.

    ``key`` is AllenSDK's group under ``analysis/``; the lake holds ``spike_times`` (the
    default) and raises ValueError for another.
    """
    if key not in (None, "spike_times"):
        raise ValueError(
            f"key {key!r}: the lake holds the spike times of analysis/spike_times only "
            "(key=None or 'spike_times')"
        )
    i = _row(ds, sweep_number)
    ends = ds["spike_times_index"].values
    lo = int(ends[i - 1]) if i else 0
    return np.asarray(ds["spike_times"][lo : int(ends[i])].values, dtype=np.float64)


def sweeps(ds: xr.Dataset, qc: bool = True) -> pd.DataFrame:
    """One row per sweep, indexed by ``sweep_number``, columns named as ``ephys_sweeps.json``.

    ``stimulus_name``, ``stimulus_description``, ``stimulus_absolute_amplitude`` (pA),
    ``stimulus_interval`` (s), ``stimulus_units``, ``num_spikes``, ``gain``,
    ``initial_access_resistance``, ``seal``, ``bridge_balance_mohm`` (those the file has),
    then ``sampling_rate`` (Hz), ``start_time``/``stop_time`` (s, session clock),
    ``n_samples``, ``index_range_start``/``index_range_stop`` and ``specimen_id``.

    With ``qc`` (the default) also IPFX's sweep QC (:mod:`abo_lake.sweep_qc`, computed from
    the samples when first asked for, one sweep at a time, then kept for this Dataset):
    ``stimulus_start_time``/``stimulus_duration`` (s), ``stimulus_amplitude`` (pA),
    ``pre_noise_rms_mv``, ``slow_vm_mv``, ``slow_noise_rms_mv``, ``pre_vm_mv``,
    ``post_vm_mv``, ``post_noise_rms_mv``, ``vm_delta_mv`` (names as AllenSDK's
    ``get_ephys_sweeps``), ``passed`` (bool), ``workflow_state`` (``auto_passed`` /
    ``auto_failed``) and ``fail_tags`` (list of IPFX's failure texts). ``qc=False`` reads
    no samples. Search it with pandas
    (``sweeps.query("stimulus_name == 'Long Square' and passed and num_spikes > 0")``).
    """
    data = {col: ds[var].values for col, var in SWEEP_COLUMNS.items() if var in ds.variables}
    ends = ds["sweep_index"].values
    data["n_samples"] = np.diff(ends, prepend=0)
    data["index_range_start"] = ds["index_range_start"].values
    data["index_range_stop"] = ds["index_range_stop"].values
    df = pd.DataFrame(data, index=ds.indexes["sweep_number"].copy())
    for col in ("stimulus_name", "stimulus_description", "stimulus_units"):
        if col in df:
            df[col] = df[col].astype(str)
    df["specimen_id"] = ds.attrs.get("specimen_id")
    if qc:
        from abo_lake import sweep_qc  # sweep_qc reads sweeps through this module

        table = sweep_qc.sweep_qc_table(ds)
        df = df.join(table[[c for c in table.columns if c not in df.columns]])
    return df


def stimulus_names(ds: xr.Dataset) -> list[str]:
    """The distinct stimulus names of the sweeps, in order of first use."""
    return list(dict.fromkeys(str(s) for s in ds["stimulus_name"].values))


def sweeps_by_stimulus(
    ds: xr.Dataset, stimulus_names: str | Sequence[str], qc: bool = True
) -> pd.DataFrame:
    """The rows of :func:`sweeps` whose ``stimulus_name`` is one of ``stimulus_names``
    (``qc``: with the QC columns, as :func:`sweeps`).

    Raises
    ------
    KeyError
        For a name no sweep of the specimen has, listing the names it has.
    """
    wanted = [stimulus_names] if isinstance(stimulus_names, str) else list(stimulus_names)
    have = _names(ds)
    missing = [n for n in wanted if n not in have]
    if missing:
        raise KeyError(
            f"stimulus_name {missing[0]!r}: no sweep of specimen {_specimen(ds)} has it; "
            f"its stimulus names are {have}"
        )
    table = sweeps(ds, qc=qc)
    return table[table["stimulus_name"].isin(wanted)]


def _names(ds: xr.Dataset) -> list[str]:
    return stimulus_names(ds)


# --- morphology -------------------------------------------------------------------------------


def _parent_rows(ds: xr.Dataset) -> np.ndarray:
    ids = ds["node"].values.astype(np.int64)
    parents = ds["parent"].values.astype(np.int64)
    rows = pd.Index(ids).get_indexer(parents)
    return np.where(parents < 0, -1, rows)


def renumbered(ds: xr.Dataset) -> xr.Dataset:
    """The morphology numbered as AllenSDK's ``read_swc``: ``node`` 0..n-1 in file order,
    ``parent`` the parent's row (-1 for a root), the SWC ids kept as coordinate ``swc_id``."""
    out = ds.assign(parent=("node", _parent_rows(ds), ds["parent"].attrs))
    out = out.assign_coords(swc_id=("node", ds["node"].values, {"description": "SWC id"}))
    return out.assign_coords(node=("node", np.arange(ds.sizes["node"], dtype=np.int64)))


def _tree_ids(prow: np.ndarray, children: list[list[int]], types: np.ndarray) -> np.ndarray:
    """AllenSDK's ``Morphology._separate_trees``: tree numbers in order of first node, the
    soma's tree first."""
    tree = np.full(prow.size, -1, dtype=np.int64)
    created = 0
    for k in range(prow.size):
        local = []
        p = prow[k]
        if p >= 0 and tree[p] >= 0:
            local.append(int(tree[p]))
        local += [int(tree[c]) for c in children[k] if tree[c] >= 0]
        if not local:
            number = created
            created += 1
        else:
            number = local[0]
            for dead in local[1:]:
                tree[tree == dead] = number
        tree[k] = number
    alive = list(dict.fromkeys(sorted(set(tree.tolist()))))
    order = {t: i for i, t in enumerate(alive)}
    soma_rows = np.flatnonzero(types == 1)
    if soma_rows.size:
        first = order[int(tree[soma_rows[0]])]
        if first > 0:  # swap the soma's tree with the first tree, as AllenSDK
            swap = {first: 0, 0: first}
            order = {t: swap.get(i, i) for t, i in order.items()}
    return np.array([order[t] for t in tree.tolist()], dtype=np.int64)


#: Compartments built once per Dataset object (AllenSDK's Morphology holds them too).
_COMPARTMENTS: dict[int, list[dict[str, Any]]] = {}


def compartment_list(ds: xr.Dataset) -> list[dict[str, Any]]:
    """AllenSDK's ``Morphology.compartment_list``: one dict per node in file order, with
    ``id`` (0-based row), ``type``, ``x``, ``y``, ``z``, ``radius``, ``parent`` (row, -1),
    ``tree_id`` and ``children`` (rows, in file order). Built once per Dataset; as in
    AllenSDK, the dicts are the morphology's own (copy before changing them)."""
    key = id(ds)
    if key not in _COMPARTMENTS:
        _COMPARTMENTS[key] = _compartments(ds)
        weakref.finalize(ds, _COMPARTMENTS.pop, key, None)
    return _COMPARTMENTS[key]


def _compartments(ds: xr.Dataset) -> list[dict[str, Any]]:
    prow = _parent_rows(ds)
    n = prow.size
    children: list[list[int]] = [[] for _ in range(n)]
    for k in np.flatnonzero(prow >= 0).tolist():
        children[prow[k]].append(k)
    types = ds["type"].values
    trees = _tree_ids(prow, children, types)
    cols = {c: ds[c].values.tolist() for c in ("x", "y", "z", "radius")}
    types_list = types.tolist()
    return [
        {
            "id": k,
            "type": int(types_list[k]),
            "x": cols["x"][k],
            "y": cols["y"][k],
            "z": cols["z"][k],
            "radius": cols["radius"][k],
            "parent": int(prow[k]),
            "tree_id": int(trees[k]),
            "children": children[k],
        }
        for k in range(n)
    ]


def compartment_index(ds: xr.Dataset) -> dict[int, dict[str, Any]]:
    """AllenSDK's ``compartment_index``: the compartments by (0-based) id."""
    return {c["id"]: c for c in compartment_list(ds)}


def compartment_list_by_type(ds: xr.Dataset, compartment_type: int) -> list[dict[str, Any]]:
    """The compartments of one SWC type (1 soma, 2 axon, 3 basal, 4 apical dendrite)."""
    return [c for c in compartment_list(ds) if c["type"] == compartment_type]


def compartment_index_by_type(ds: xr.Dataset, compartment_type: int) -> dict[int, dict]:
    """The compartments of one SWC type, by (0-based) id."""
    return {c["id"]: c for c in compartment_list_by_type(ds, compartment_type)}


def soma(ds: xr.Dataset) -> dict[str, Any] | None:
    """AllenSDK's ``Morphology.soma``: the root soma compartment (type 1, no parent) or None.

    Raises
    ------
    ValueError
        When several root soma nodes exist (AllenSDK: "Multiple somas detected").
    """
    prow = _parent_rows(ds)
    rows = np.flatnonzero((ds["type"].values == 1) & (prow < 0))
    if rows.size > 1:
        ids = ds["node"].values[rows[:5]].tolist()
        raise ValueError(
            f"specimen {_specimen(ds)}: multiple somas (root nodes of type 1, SWC ids {ids}); "
            "AllenSDK's Morphology refuses such a file too"
        )
    return compartment_list(ds)[int(rows[0])] if rows.size else None


def num_trees(ds: xr.Dataset) -> int:
    """Number of trees (connected components, one root each)."""
    return int((_parent_rows(ds) < 0).sum())


def tree(ds: xr.Dataset, n: int) -> list[dict[str, Any]] | None:
    """AllenSDK's ``Morphology.tree(n)``: the compartments of tree ``n``, None if none."""
    comps = [c for c in compartment_list(ds) if c["tree_id"] == n]
    return comps or None


def node(ds: xr.Dataset, n: int) -> dict[str, Any] | None:
    """AllenSDK's ``Morphology.node(n)``: the compartment of 0-based id ``n``, None when out of
    range (a compartment dict is returned as is)."""
    if isinstance(n, dict):
        return n
    k = int(n)
    if k < 0 or k >= ds.sizes["node"]:
        return None
    return compartment_list(ds)[k]


def _resolve(ds: xr.Dataset, seg: int | dict) -> dict[str, Any]:
    found = node(ds, seg)
    if found is None:
        raise KeyError(
            f"node {seg!r} does not exist in the morphology of specimen {_specimen(ds)}: "
            f"ids are 0-based rows 0..{ds.sizes['node'] - 1} (AllenSDK's numbering; SWC ids "
            "are the coordinate swc_id of renumbered())"
        )
    return found


def parent_of(ds: xr.Dataset, seg: int | dict) -> dict[str, Any] | None:
    """AllenSDK's ``parent_of``: the parent compartment of a node (0-based id or
    compartment), None for a root."""
    c = _resolve(ds, seg)
    return compartment_list(ds)[c["parent"]] if c["parent"] >= 0 else None


def children_of(ds: xr.Dataset, seg: int | dict) -> list[dict[str, Any]]:
    """AllenSDK's ``children_of``: the child compartments of a node (0-based id or
    compartment), in file order."""
    c = _resolve(ds, seg)
    comps = compartment_list(ds)
    return [comps[k] for k in comps[c["id"]]["children"]]


def morphometry(ds: xr.Dataset) -> dict[str, float | int]:
    """Whole-cell measures of a morphology; definitions in :data:`MORPHOMETRY`."""
    out: dict[str, float | int] = dict(_reader.morphometry(ds))
    prow = _parent_rows(ds)
    xyz = np.stack([ds[c].values for c in ("x", "y", "z")], axis=1)
    edge = np.where(prow >= 0, np.linalg.norm(xyz - xyz[np.maximum(prow, 0)], axis=1), 0.0)
    types = ds["type"].values
    for code, name in [(2, "axon"), (3, "basal_dendrite"), (4, "apical_dendrite")]:
        out[f"{name}_length"] = float(edge[types == code].sum())
    for axis, name in enumerate(("width", "height", "depth")):
        out[name] = float(np.ptp(xyz[:, axis]))
    return {k: out[k] for k in MORPHOMETRY}


def morphometry_table(ds: xr.Dataset) -> pd.DataFrame:
    """:func:`morphometry` as a one-row table indexed by ``specimen_id`` (the release table
    ``morphometry`` concatenates these rows)."""
    row = morphometry(ds)
    index = pd.Index([ds.attrs.get("specimen_id")], name="specimen_id")
    return pd.DataFrame([row], index=index)


# --- specimen metadata ------------------------------------------------------------------------

#: AllenSDK's ``CellTypesApi.simplify_cells_api``: simple name -> ``cells.json`` (API) field;
#: ``specimen_id`` is AllenSDK's ``id``.
CELLS_SIMPLE = {
    "reporter_status": "cell_reporter_status",
    "species": "donor__species",
    "specimen_id": "specimen__id",
    "name": "specimen__name",
    "structure_layer_name": "structure__layer",
    "structure_area_id": "structure_parent__id",
    "structure_area_abbrev": "structure_parent__acronym",
    "transgenic_line": "line_name",
    "dendrite_type": "tag__dendrite_type",
    "apical": "tag__apical",
    "reconstruction_type": "nr__reconstruction_type",
    "disease_state": "donor__disease_state",
    "donor_id": "donor__id",
    "structure_hemisphere": "specimen__hemisphere",
    "normalized_depth": "csl__normalized_depth",
}


def cells_table(path: str | Path) -> pd.DataFrame:
    """A Cell Types ``cells.json`` as a table keyed by ``specimen_id``.

    The API's records (``specimen__id``, ``line_name``, ...) get the simple names of
    AllenSDK's ``CellTypesCache.get_cells(simple=True)`` (``transgenic_line``,
    ``structure_area_abbrev``, ``structure_layer_name``, ``dendrite_type``,
    ``reporter_status``, ..., ``cell_soma_location`` as ``[x, y, z]`` text); records already
    simple (``get_cells()`` saved as JSON) have their ``id`` named ``specimen_id``; other
    records are taken as they are.

    Raises
    ------
    ValueError
        When the file is not a JSON list of objects.
    """
    records = json.loads(Path(path).read_text())
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a JSON list of records (objects), like cells.json")
    if records and "specimen__id" in records[0]:
        rows = []
        for r in records:
            row = {simple: r.get(field) for simple, field in CELLS_SIMPLE.items()}
            row["cell_soma_location"] = str([r.get("csl__x"), r.get("csl__y"), r.get("csl__z")])
            rows.append(row)
        return pd.DataFrame(rows)
    df = pd.DataFrame(records)
    if "id" in df.columns and "transgenic_line" in df.columns:
        df = df.rename(columns={"id": "specimen_id"})
    if "cell_soma_location" in df.columns:
        df["cell_soma_location"] = df["cell_soma_location"].map(str)
    return df
