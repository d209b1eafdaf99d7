"""AllenSDK 2.16.2's Visual Coding 2P stimulus analyses on the project's synthetic NWB 1 files,
for ``tests/test_vc2p_metrics.py``.

Writes three seeded experiments with :mod:`abo_lake.synthetic.vc2p_ophys` at scale ``small``
(loaded from its file path: it needs only h5py, NumPy and SciPy, so the AllenSDK venv runs it
without installing abo_lake): ``three_session_A`` (drifting gratings, natural movies one and
three), ``three_session_B`` (static gratings, natural scenes, natural movie one) and
``three_session_C`` (natural movies one and two). It opens each with AllenSDK's
``BrainObservatoryNwbDataSet`` and stores what ``DriftingGratings``, ``StaticGratings``,
``NaturalScenes`` and ``NaturalMovie`` return:

- ``vc2p_metrics_allensdk.json``: per session and stimulus the ``peak`` table (column -> values
  in cell order, with ``cell_specimen_id``), ``sweeplength``/``interlength``, the seed;
- ``vc2p_metrics_allensdk.npz``: ``<session>/<stimulus>/mean_sweep_response`` (sweeps, cells +
  ``dx``) float32, ``.../pval`` (sweeps, cells), ``.../response`` (AllenSDK's array, the ``dx``
  column included), ``.../sweep_response`` of the first 3 sweeps (sweeps, cells, first 150
  frames), and ``.../start`` (the stim_table's start frames).

Run with the AllenSDK venv (never a dependency of abo_lake)::

    /tmp/allensdk-venv/bin/python tests/reference/vc2p_metrics_allensdk.py
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
#: session type -> seed of the generator (``write(scale="small", seed=...)``).
SESSIONS = {"three_session_A": 11, "three_session_B": 12, "three_session_C": 13}
SAMPLE = 150  #: frames of the stored sweep_response samples (a movie sweep has 900)
STIMULI = {
    "three_session_A": ["drifting_gratings", "natural_movie_one", "natural_movie_three"],
    "three_session_B": ["static_gratings", "natural_scenes", "natural_movie_one"],
    "three_session_C": ["natural_movie_one", "natural_movie_two"],
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
        st: gen.write(out / st, scale="small", seed=seed, session_type=st)[0]
        for st, seed in SESSIONS.items()
    }


def analysis(data_set, stimulus: str):
    from allensdk.brain_observatory.drifting_gratings import DriftingGratings
    from allensdk.brain_observatory.natural_movie import NaturalMovie
    from allensdk.brain_observatory.natural_scenes import NaturalScenes
    from allensdk.brain_observatory.static_gratings import StaticGratings

    if stimulus.startswith("natural_movie"):
        return NaturalMovie(data_set, stimulus)
    return {
        "drifting_gratings": DriftingGratings,
        "static_gratings": StaticGratings,
        "natural_scenes": NaturalScenes,
    }[stimulus](data_set)


def _plain(v):
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and np.isnan(v) else v


def main() -> None:
    from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

    warnings.filterwarnings("ignore")
    meta: dict = {"generator_scale": "small", "sessions": {}}
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for session, path in write_files(Path(tmp)).items():
            ds = BrainObservatoryNwbDataSet(str(path))
            entry = {"seed": SESSIONS[session], "stimuli": {}}
            for stimulus in STIMULI[session]:
                t0 = time.perf_counter()
                a = analysis(ds, stimulus)
                peak = a.peak
                seconds = time.perf_counter() - t0
                key = f"{session}/{stimulus}"
                entry["stimuli"][stimulus] = {
                    "seconds": round(seconds, 2),
                    "sweeplength": int(a.sweeplength),
                    "interlength": int(getattr(a, "interlength", 0)),
                    "peak": {c: [_plain(v) for v in peak[c]] for c in peak.columns},
                }
                arrays[f"{key}/start"] = a.stim_table["start"].to_numpy(dtype=np.int64)
                sr = a.sweep_response
                cells = [c for c in sr.columns if c != "dx"]
                arrays[f"{key}/sweep_response"] = np.array(
                    [[np.asarray(sr[c].iloc[i])[:SAMPLE] for c in cells] for i in range(3)]
                )
                if not stimulus.startswith("natural_movie"):
                    msr = a.mean_sweep_response
                    arrays[f"{key}/mean_sweep_response"] = msr.to_numpy(dtype=np.float32)
                    arrays[f"{key}/pval"] = a.pval[cells].to_numpy(dtype=np.float64)
                    arrays[f"{key}/response"] = np.asarray(a.response, dtype=np.float64)
                print(f"{key}: {seconds:.1f} s", file=sys.stderr)
            meta["sessions"][session] = entry
    (HERE / "vc2p_metrics_allensdk.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(HERE / "vc2p_metrics_allensdk.npz", **arrays)


if __name__ == "__main__":
    main()
