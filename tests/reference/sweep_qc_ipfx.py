"""IPFX 2.1.2's sweep QC on synthetic Cell Types specimens.

Two uses, one file:

- ``measure`` (run with a Python that has IPFX, e.g. ``/tmp/ipfx-try2/bin/python``; see
  ``ephys_features_ipfx.py``): read every sweep of each ``ephys.nwb`` (NWB 1, the AIBS layout,
  with h5py as IPFX's NWB 1 reader did: ``data * conversion``, A -> pA, V -> mV) into an
  ``ipfx.sweep.Sweep`` (whole sweep, epochs detected by IPFX), then run IPFX's own QC steps on
  it as ``ipfx.qc_feature_extractor.sweep_qc_features`` and ``ipfx.qc_feature_evaluator.
  qc_sweeps`` do: ``check_sweep_integrity``, ``current_clamp_sweep_stim_features``,
  ``current_clamp_sweep_qc_features`` (sweeps without integrity tags) and
  ``qc_current_clamp_sweep`` with ``load_default_qc_criteria()``, then
  ``sweep_props.create_sweep_state``. Writes per specimen and sweep the features, ``tags``,
  ``passed`` and ``reasons`` (the fail tags) to ``--out``.
- ``make`` (run with the project's Python): synthesise the specimens of
  ``tests/test_sweep_qc.py`` (:data:`SPECIMENS`: the ``features`` specimens of
  ``tests/test_ephys_features.py`` with one spoiled sweep each, and a ``tiny`` specimen whose
  short sweeps IPFX tags), run ``measure`` under IPFX's Python and write
  ``tests/reference/sweep_qc_ipfx.json`` (CI needs no IPFX)::

      .venv/bin/python tests/reference/sweep_qc_ipfx.py make [--ipfx PYTHON]

Only numpy and the standard library are imported at module level.
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
REFERENCE = HERE / "sweep_qc_ipfx.json"
IPFX_PYTHON = "/tmp/ipfx-try2/bin/python"
#: (folder, write() arguments) of every specimen set measured.
SPECIMENS = {
    "features": {
        "scale": "features",
        "seed": 11,
        "n_specimens": 2,
        "qc_failures": {(0, 5): "noisy_baseline", (1, 9): "drifting_vm"},
    },
    "tiny": {"scale": "tiny", "seed": 3, "n_specimens": 1},
}


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_sweeps(path: str) -> list[dict]:
    """Every sweep of an AIBS NWB 1 file: number, stimulus name, v (mV), i (pA), rate."""
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        for name in f["epochs"]:
            if not name.startswith("Sweep_"):
                continue
            stim = f[f"stimulus/presentation/{name}"]
            resp = f[f"acquisition/timeseries/{name}"]
            label = stim["aibs_stimulus_name"][()]
            out.append(
                {
                    "sweep_number": int(name.split("_")[1]),
                    "stimulus_name": label.decode() if isinstance(label, bytes) else str(label),
                    "rate": float(stim["starting_time"].attrs["rate"]),
                    "i": (stim["data"][()] * float(stim["data"].attrs["conversion"]) * 1e12).astype(
                        np.float64
                    ),
                    "v": (resp["data"][()] * float(resp["data"].attrs["conversion"]) * 1e3).astype(
                        np.float64
                    ),
                }
            )
    return sorted(out, key=lambda s: s["sweep_number"])


def qc_sweep(s: dict) -> dict:
    """IPFX's QC of one sweep read by :func:`read_sweeps` (see the module docstring)."""
    from ipfx import qc_feature_evaluator as qce
    from ipfx import qc_feature_extractor as qcx
    from ipfx import sweep_props
    from ipfx.sweep import Sweep

    sweep = Sweep(
        np.arange(s["v"].size) / s["rate"],
        s["v"],
        s["i"],
        "CurrentClamp",
        s["rate"],
        s["sweep_number"],
    )
    is_ramp = s["stimulus_name"] == "Ramp"  # IPFX's ontology.ramp_names is {"Ramp"}
    features = {"sweep_number": s["sweep_number"], "stimulus_name": s["stimulus_name"]}
    features["tags"] = qcx.check_sweep_integrity(sweep, is_ramp)
    features.update(qcx.current_clamp_sweep_stim_features(sweep))
    if features["tags"]:  # IPFX's pipeline drops such sweeps before QC
        return features
    features.update(qcx.current_clamp_sweep_qc_features(sweep, is_ramp))
    fails = qce.qc_current_clamp_sweep(features, is_ramp, qce.load_default_qc_criteria())
    state = sweep_props.create_sweep_state(s["sweep_number"], fails)
    features["passed"], features["reasons"] = state["passed"], state["reasons"]
    return features


def measure(paths: list[str], out: str) -> None:
    """IPFX's sweep QC of every sweep of each ``ephys.nwb`` in ``paths``."""
    import ipfx

    result = {"ipfx": ipfx.__version__, "specimens": {}}
    for path in paths:
        specimen = Path(path).parent.name.removeprefix("specimen_")
        result["specimens"][specimen] = {
            str(s["sweep_number"]): _clean(qc_sweep(s)) for s in read_sweeps(path)
        }
    Path(out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def write_specimens(out: Path, which: str) -> list[str]:
    """Write the specimens of ``SPECIMENS[which]`` under ``out``; their ``ephys.nwb`` paths."""
    sys.path.insert(0, str(HERE.parents[1]))
    from abo_lake.synthetic import celltypes as synth

    paths = synth.write(out, **SPECIMENS[which])
    return [str(p) for p in paths if p.name == "ephys.nwb"]


def make(ipfx_python: str) -> None:
    """Synthesise the test's specimens, run :func:`measure` under IPFX, write the reference."""
    with tempfile.TemporaryDirectory() as tmp:
        nwbs = [p for which in SPECIMENS for p in write_specimens(Path(tmp) / which, which)]
        cmd = [ipfx_python, __file__, "measure", "--out", str(REFERENCE), *nwbs]
        subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("paths", nargs="+")
    k = sub.add_parser("make")
    k.add_argument("--ipfx", default=IPFX_PYTHON)
    args = parser.parse_args()
    if args.cmd == "measure":
        measure(args.paths, args.out)
    else:
        make(args.ipfx)


if __name__ == "__main__":
    main()
