"""AllenSDK 2.16.2's Visual Coding 2P speed tuning on the project's synthetic NWB 1 files, for
``tests/test_vc2p_speed_tuning.py``.

Writes the seeded experiments of :mod:`abo_lake.synthetic.vc2p_ophys` at scale ``small`` that
``vc2p_metrics_allensdk.py`` uses (loaded from the generator's file path, so the AllenSDK venv
runs it without abo_lake), opens each with AllenSDK's ``BrainObservatoryNwbDataSet`` and calls
``DriftingGratings(data_set).get_speed_tuning(binsize)`` (the ``StimulusAnalysis`` method; the
subclass does not matter) after ``np.random.seed(SEED)``, for each ``BINSIZES``.

Writes ``vc2p_speed_allensdk.npz`` beside itself: ``<session>/<binsize>/binned_dx_sp``,
``binned_cells_sp``, ``binned_dx_vis``, ``binned_cells_vis`` (AllenSDK's arrays),
``<session>/<binsize>/<peak_run column>`` (float64; ``mod_*`` as 1.0/0.0/NaN) and
``<session>/cell_specimen_id``. Run with the AllenSDK venv (never a dependency of abo_lake)::

    /tmp/allensdk-venv/bin/python tests/reference/vc2p_speed_allensdk.py
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GENERATOR = HERE.parents[1] / "abo_lake" / "synthetic" / "vc2p_ophys.py"
#: session type -> seed of the generator (``write(scale="small", seed=...)``).
SESSIONS = {"three_session_A": 11, "three_session_C": 13}
BINSIZES = (800, 150)
SEED = 20240611  #: np.random.seed before each get_speed_tuning (its 400 permutations)


def generator():
    """The project's synthetic VC2P writer, imported from its file (no abo_lake install)."""
    spec = importlib.util.spec_from_file_location("vc2p_ophys_generator", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _float(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def main() -> None:
    from allensdk.brain_observatory.drifting_gratings import DriftingGratings
    from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

    warnings.filterwarnings("ignore")
    gen = generator()
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for session, seed in SESSIONS.items():
            path = gen.write(Path(tmp) / session, scale="small", seed=seed, session_type=session)
            data_set = BrainObservatoryNwbDataSet(str(path[0]))
            arrays[f"{session}/cell_specimen_id"] = np.asarray(
                data_set.get_cell_specimen_ids(), dtype=np.int64
            )
            for binsize in BINSIZES:
                analysis = DriftingGratings(data_set)
                t0 = time.perf_counter()
                np.random.seed(SEED)  # noqa: NPY002 (AllenSDK draws from the global RNG)
                dx_sp, cells_sp, dx_vis, cells_vis, peak_run = analysis.get_speed_tuning(binsize)
                key = f"{session}/{binsize}"
                print(f"{key}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                arrays[f"{key}/binned_dx_sp"] = np.asarray(dx_sp, dtype=np.float64)
                arrays[f"{key}/binned_cells_sp"] = np.asarray(cells_sp, dtype=np.float64)
                arrays[f"{key}/binned_dx_vis"] = np.asarray(dx_vis, dtype=np.float64)
                arrays[f"{key}/binned_cells_vis"] = np.asarray(cells_vis, dtype=np.float64)
                for column in peak_run.columns:
                    arrays[f"{key}/{column}"] = _float(peak_run[column].tolist())
    np.savez_compressed(HERE / "vc2p_speed_allensdk.npz", **arrays)


if __name__ == "__main__":
    main()
