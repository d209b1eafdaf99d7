"""AllenSDK 2.16.2's locally sparse noise receptive fields on the project's synthetic NWB 1
files, for ``tests/test_vc2p_receptive_fields.py``.

Writes two seeded experiments with :mod:`abo_lake.synthetic.vc2p_ophys` at scale ``small``
with ``lsn_on_off_cells=3`` (the first three cells have an ON and an OFF subfield) and 1440
LSN sweeps in three_session_C (see :data:`LSN_FRAMES`; the generator is loaded from
its file path, so the AllenSDK venv runs it without installing abo_lake): ``three_session_C``
(``locally_sparse_noise``) and ``three_session_C2`` (``locally_sparse_noise_4deg`` and
``_8deg``). It opens each with AllenSDK's ``BrainObservatoryNwbDataSet`` and stores what
``LocallySparseNoise(data_set, stimulus)`` returns (10000 shuffles, seed 1, as AllenSDK runs
it):

- ``vc2p_lsn_allensdk.json``: per session and stimulus the ``peak`` table (column -> values in
  cell order), each cell's scalar attributes of ``cell_index_receptive_field_analysis_data``
  (``chi_squared_analysis/min_p``, ``on/fdr_mask/number_of_components``, the Gaussian fits'
  ``area``/``center_x``/... lists, ...), the seconds AllenSDK took;
- ``vc2p_lsn_allensdk.npz``: ``<session>/<stimulus>/<cell index>/<path>`` for every array of
  the analysis data (``event_vector``, ``on/pvalues``, ``on/fdr_corrected``, ``on/fdr_mask``,
  ``on/rts``, ``on/rts_convolution``, ``chi_squared_analysis/pvalues``, ...), and
  ``<session>/<stimulus>/receptive_field``, ``.../mean_response``.

``--extend`` adds to the ``.npz`` (its other arrays and the ``.json`` left as they are) what
AllenSDK's base ``StimulusAnalysis`` serves on the three_session_C ``locally_sparse_noise``:

- ``<key>/sweep_response/cells`` (sampled sweeps :data:`SWEEP_SAMPLE`, cells, frames) float32
  and ``<key>/sweep_response/dx`` (sampled sweeps, frames): ``get_sweep_response()[0]``;
- ``<key>/mean_sweep_response`` and ``<key>/pval`` (sweeps, cells + dx) of every sweep;
- ``<key>/speed_tuning/<binsize>/binned_dx_sp`` (and ``binned_cells_sp``, ``binned_dx_vis``,
  ``binned_cells_vis``, ``peak_run/<column>`` float64, ``mod_*`` as 1.0/0.0/NaN):
  ``get_speed_tuning(binsize)`` after ``np.random.seed(SPEED_SEED)``, per
  :data:`SPEED_BINSIZES`.

Run with the AllenSDK venv (never a dependency of abo_lake)::

    /tmp/allensdk-venv/bin/python tests/reference/vc2p_lsn_allensdk.py [--extend]
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GENERATOR = HERE.parents[1] / "abo_lake" / "synthetic" / "vc2p_ophys.py"
#: session type -> seed of the generator (``write(scale="small", seed=..., lsn_on_off_cells=3)``).
SESSIONS = {"three_session_C": 31, "three_session_C2": 32}
ON_OFF_CELLS = 3
#: LSN sweeps per session (``write(lsn_frames=...)``; None: the scale's 480, 240 per C2 variant):
#: 1440 in C, so that the cells with both polarities show both subfields (rf_distance_lsn)
LSN_FRAMES = {"three_session_C": 1440, "three_session_C2": None}
#: sweeps of sweep_response stored (every 12th: 120 of 1440, keeps the file small)
SWEEP_SAMPLE = slice(None, None, 12)
SPEED_SEED = 20240611  #: np.random.seed before each get_speed_tuning (its 400 permutations)
SPEED_BINSIZES = (800, 150)
STIMULI = {
    "three_session_C": ["locally_sparse_noise"],
    "three_session_C2": ["locally_sparse_noise_4deg", "locally_sparse_noise_8deg"],
}


def generator():
    """The project's synthetic VC2P writer, imported from its file (no abo_lake install)."""
    spec = importlib.util.spec_from_file_location("vc2p_ophys_generator", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_files(out: Path) -> dict[str, Path]:
    """The seeded experiments, one per session type (the test writes the same)."""
    gen = generator()
    return {
        st: gen.write(
            out / st,
            scale="small",
            seed=seed,
            session_type=st,
            lsn_on_off_cells=ON_OFF_CELLS,
            lsn_frames=LSN_FRAMES[st],
        )[0]
        for st, seed in SESSIONS.items()
    }


def _plain(v):
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, bytes):
        return v.decode()
    return None if isinstance(v, float) and np.isnan(v) else v


def _walk(d: dict, prefix: str = ""):
    """(path, array) of the ``data`` entries and (path, value) of the attributes."""
    for key, value in d.items():
        if key == "attrs":
            for name, attr in value.items():
                yield "attr", f"{prefix}{name}", attr
        elif key == "data":
            yield "data", prefix.rstrip("/"), value
        elif isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}/")


def main() -> None:
    from allensdk.brain_observatory.locally_sparse_noise import LocallySparseNoise
    from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

    warnings.filterwarnings("ignore")
    meta: dict = {"generator_scale": "small", "lsn_on_off_cells": ON_OFF_CELLS, "sessions": {}}
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for session, path in write_files(Path(tmp)).items():
            ds = BrainObservatoryNwbDataSet(str(path))
            entry = {"seed": SESSIONS[session], "stimuli": {}}
            for stimulus in STIMULI[session]:
                t0 = time.perf_counter()
                lsn = LocallySparseNoise(ds, stimulus)
                peak = lsn.peak
                seconds = time.perf_counter() - t0
                key = f"{session}/{stimulus}"
                cells = []
                for index, rf in sorted(
                    lsn.cell_index_receptive_field_analysis_data.items(), key=lambda kv: int(kv[0])
                ):
                    attrs = {}
                    for kind, name, value in _walk(rf):
                        if kind == "data":
                            arrays[f"{key}/{index}/{name}"] = np.asarray(value)
                        else:
                            attrs[name] = _plain(value)
                    cells.append(attrs)
                arrays[f"{key}/receptive_field"] = np.asarray(lsn.receptive_field)
                arrays[f"{key}/mean_response"] = np.asarray(lsn.mean_response)
                entry["stimuli"][stimulus] = {
                    "seconds": round(seconds, 2),
                    "sweeplength": int(lsn.sweeplength),
                    "peak": {c: [_plain(v) for v in peak[c]] for c in peak.columns},
                    "cells": cells,
                }
                print(f"{key}: {seconds:.1f} s", file=sys.stderr)
            meta["sessions"][session] = entry
    (HERE / "vc2p_lsn_allensdk.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(HERE / "vc2p_lsn_allensdk.npz", **arrays)


def _float(v) -> float:
    return np.nan if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def extend() -> None:
    """Add AllenSDK's sweep_response, mean_sweep_response and speed tuning of the
    three_session_C ``locally_sparse_noise`` to the ``.npz`` (module doc)."""
    from allensdk.brain_observatory.locally_sparse_noise import LocallySparseNoise
    from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

    warnings.filterwarnings("ignore")
    npz = HERE / "vc2p_lsn_allensdk.npz"
    with np.load(npz) as old:
        arrays = {k: old[k] for k in old.files}
    session, stimulus = "three_session_C", "locally_sparse_noise"
    key = f"{session}/{stimulus}"
    with tempfile.TemporaryDirectory() as tmp:
        path = write_files(Path(tmp))[session]
        lsn = LocallySparseNoise(BrainObservatoryNwbDataSet(str(path)), stimulus)
        t0 = time.perf_counter()
        sr = lsn.sweep_response
        msr = lsn.mean_sweep_response
        print(f"{key} sweep_response: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        cells = [c for c in sr.columns if c != "dx"]
        rows = sr.iloc[SWEEP_SAMPLE]
        arrays[f"{key}/sweep_response/cells"] = np.array(
            [[np.asarray(rows[c].iloc[i]) for c in cells] for i in range(len(rows))]
        )
        arrays[f"{key}/sweep_response/dx"] = np.array([np.asarray(v) for v in rows["dx"]])
        arrays[f"{key}/mean_sweep_response"] = msr.to_numpy(dtype=np.float64)
        arrays[f"{key}/pval"] = lsn.pval.to_numpy(dtype=np.float64)
        for binsize in SPEED_BINSIZES:
            np.random.seed(SPEED_SEED)  # noqa: NPY002 - AllenSDK draws from the global generator
            t0 = time.perf_counter()
            tuning = lsn.get_speed_tuning(binsize)
            seconds = time.perf_counter() - t0
            print(f"{key} speed tuning {binsize}: {seconds:.1f} s", file=sys.stderr)
            names = ("binned_dx_sp", "binned_cells_sp", "binned_dx_vis", "binned_cells_vis")
            for name, value in zip(names, tuning[:4]):
                arrays[f"{key}/speed_tuning/{binsize}/{name}"] = np.asarray(value, dtype=np.float64)
            for column in tuning[4].columns:
                arrays[f"{key}/speed_tuning/{binsize}/peak_run/{column}"] = np.array(
                    [_float(v) for v in tuning[4][column]]
                )
    np.savez_compressed(npz, **arrays)


if __name__ == "__main__":
    extend() if "--extend" in sys.argv[1:] else main()
