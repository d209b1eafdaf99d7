"""AllenSDK 2.16.2's ``NwbDataSet`` and ``swc.Morphology`` on a synthetic specimen and real SWCs.

Two uses, one file:

- ``measure`` (run with AllenSDK's Python, e.g. ``/tmp/allensdk-venv/bin/python``): open an
  ``ephys.nwb`` with ``allensdk.core.nwb_data_set.NwbDataSet`` and SWC files with
  ``allensdk.core.swc.read_swc``; write what they return to ``--out`` (.json + .npz):
  ``get_sweep_numbers()``, per sweep ``get_sweep(n)`` (unit, index range, rate, dtype, length,
  float64 sums and every 97th sample of stimulus and response), ``get_sweep_metadata(n)``,
  ``get_spike_times(n)``; per SWC the 0-based compartments (ids, types, parents, tree ids,
  children), ``soma``, ``num_trees``, ``compartment_list_by_type(t)`` sizes, and morphometry
  computed by walking AllenSDK's ``Morphology`` (definitions in :func:`walk_morphometry`).
- ``make`` (run with the project's Python): synthesise the tiny specimen of
  ``tests/test_celltypes_accessor.py`` (``synthetic.celltypes.write(scale="tiny", seed=3,
  n_specimens=1)``), run ``measure`` under AllenSDK's Python and write
  ``tests/reference/celltypes_allensdk.{json,npz}`` (CI needs no AllenSDK)::

      .venv/bin/python tests/reference/celltypes_allensdk.py make [--allensdk PYTHON]

Only numpy and the standard library are imported at module level: AllenSDK's venv does not
have abo_lake.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "celltypes_allensdk"
ALLENSDK_PYTHON = "/tmp/allensdk-venv/bin/python"
SHARED_SWC = Path(__file__).resolve().parents[3] / "shared" / "data" / "swc"
STRIDE = 97  # every STRIDE-th sample of each sweep is kept


def walk_morphometry(morph) -> dict:
    """Whole-cell measures by walking AllenSDK's compartments (parents, children_of).

    - ``total_length``: sum of node-to-parent distances of non-soma nodes (µm);
    - ``n_stems``: non-soma nodes whose parent is a soma node;
    - ``n_bifurcations``: non-soma nodes with two or more children;
    - ``n_branches``: sections (stems plus the children of bifurcations);
    - ``n_tips``: non-soma nodes without children;
    - ``max_path_distance``: longest path from a root to a node along the tree (µm);
    - ``max_euclidean_distance``: farthest node from the mean position of the soma nodes;
    - ``soma_radius``: mean radius of the soma nodes (``morph.soma["radius"]`` for one node);
    - ``n_nodes``.
    """
    comps = morph.compartment_list
    dist = {}
    stack = [c for c in comps if c["parent"] < 0]
    for root in stack:
        dist[root["id"]] = 0.0
    while stack:
        node = stack.pop()
        for child in morph.children_of(node):
            dist[child["id"]] = dist[node["id"]] + _length(child, node)
            stack.append(child)
    soma = morph.compartment_list_by_type(1)
    centre = [sum(c[k] for c in soma) / len(soma) for k in ("x", "y", "z")]
    total, stems, bif, tips, branches = 0.0, 0, 0, 0, 0
    for c in comps:
        if c["type"] == 1:
            continue
        parent = morph.parent_of(c)
        if parent is not None:
            total += _length(c, parent)
            if parent["type"] == 1:
                stems += 1
        n_children = len(morph.children_of(c))
        tips += n_children == 0
        if n_children >= 2:
            bif += 1
            branches += n_children
    return {
        "n_nodes": len(comps),
        "n_stems": stems,
        "n_bifurcations": bif,
        "n_branches": stems + branches,
        "n_tips": tips,
        "total_length": total,
        "max_path_distance": max(dist.values()),
        "max_euclidean_distance": max(math.dist((c["x"], c["y"], c["z"]), centre) for c in comps),
        "soma_radius": sum(c["radius"] for c in soma) / len(soma),
    }


def _length(a: dict, b: dict) -> float:
    return math.dist((a["x"], a["y"], a["z"]), (b["x"], b["y"], b["z"]))


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def measure(nwb: Path, swcs: list[Path], out: Path) -> None:
    """AllenSDK's results on ``nwb`` and ``swcs``, saved to ``out`` .json and .npz."""
    from allensdk.core.nwb_data_set import NwbDataSet
    from allensdk.core.swc import Morphology, read_swc

    arrays: dict[str, np.ndarray] = {}
    data = NwbDataSet(str(nwb))
    sweeps = {}
    numbers = data.get_sweep_numbers()
    for n in numbers:
        sweep = data.get_sweep(n)
        record = {
            "stimulus_unit": sweep["stimulus_unit"],
            "index_range": [int(i) for i in sweep["index_range"]],
            "sampling_rate": sweep["sampling_rate"],
            "metadata": {k: _plain(v) for k, v in data.get_sweep_metadata(n).items()},
            "spike_times": [float(t) for t in data.get_spike_times(n)],
        }
        for part in ("stimulus", "response"):
            values = sweep[part]
            record[f"{part}_dtype"] = str(values.dtype)
            record[f"{part}_size"] = int(values.size)
            record[f"{part}_sum"] = float(values.astype(np.float64).sum())
            arrays[f"sweep_{n}_{part}"] = values[::STRIDE]
        sweeps[str(n)] = record
    morphologies = {}
    for path in swcs:
        morph = read_swc(str(path))
        comps = morph.compartment_list
        key = path.name
        arrays[f"{key}/parent"] = np.array([c["parent"] for c in comps], dtype=np.int64)
        arrays[f"{key}/tree_id"] = np.array([c["tree_id"] for c in comps], dtype=np.int64)
        arrays[f"{key}/type"] = np.array([c["type"] for c in comps], dtype=np.int64)
        arrays[f"{key}/children"] = np.array(
            [k for c in comps for k in c["children"]], dtype=np.int64
        )
        arrays[f"{key}/n_children"] = np.array([len(c["children"]) for c in comps], np.int64)
        morphologies[key] = {
            "ids": [comps[0]["id"], comps[-1]["id"]],
            "soma": {k: _plain(v) for k, v in morph.soma.items()},
            "num_nodes": morph.num_nodes,
            "num_trees": morph.num_trees,
            "by_type": {
                str(t): len(morph.compartment_list_by_type(t)) for t in Morphology.NODE_TYPES
            },
            "node_5": {k: _plain(v) for k, v in morph.node(5).items()},
            "children_of_soma": [c["id"] for c in morph.children_of(morph.soma)],
            "morphometry": walk_morphometry(morph),
        }
    record = {
        "allensdk": __import__("allensdk").__version__,
        "sweep_numbers": [int(n) for n in numbers],
        "sweeps": sweeps,
        "morphologies": morphologies,
        "stride": STRIDE,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    np.savez_compressed(out.with_suffix(".npz"), **arrays)


def make(allensdk: str) -> None:
    """Synthesise the test's specimen and record AllenSDK's results for it and the real SWCs."""
    sys.path.insert(0, str(HERE.parents[1]))
    from abo_lake.synthetic import celltypes as synth

    with tempfile.TemporaryDirectory() as tmp:
        paths = synth.write(Path(tmp), scale="tiny", seed=3, n_specimens=1)
        nwb = next(p for p in paths if p.name == "ephys.nwb")
        swc = next(p for p in paths if p.suffix == ".swc")
        swcs = [swc, *sorted(SHARED_SWC.glob("*.swc"))]
        subprocess.run(
            [allensdk, __file__, "measure", str(nwb), *map(str, swcs), "--out", str(REFERENCE)],
            check=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("nwb", type=Path)
    m.add_argument("swc", type=Path, nargs="*")
    m.add_argument("--out", type=Path, required=True)
    k = sub.add_parser("make")
    k.add_argument("--allensdk", default=ALLENSDK_PYTHON)
    args = parser.parse_args()
    if args.command == "measure":
        measure(args.nwb, args.swc, args.out)
    else:
        make(args.allensdk)


if __name__ == "__main__":
    main()
