"""AllenSDK 2.16.2's Neuropixels stimulus analyses on a seeded synthetic session, for
``tests/test_ecephys_metrics.py``.

The inputs are the project's own synthetic Visual Coding Neuropixels sessions, which AllenSDK's
``EcephysSession.from_nwb_path`` reads: the 'metrics' scale, seed 3 (flashes, drifting gratings,
natural scenes, static gratings, Gabors, running) and the 'metrics' scale, seed 4, with the
Functional Connectivity stimuli (``fc_stimuli=True``: also ``drifting_gratings_contrast`` and
``dot_motion``). Make them with the project venv, then run this script with the AllenSDK venv
(never a dependency of abo_lake)::

    .venv/bin/python -c "from abo_lake.synthetic import vcn_ecephys; \\
        vcn_ecephys.write('/tmp/em', scale='metrics', seed=3); \\
        vcn_ecephys.write('/tmp/em', scale='metrics', seed=4, fc_stimuli=True)"
    /tmp/allensdk-venv/bin/python tests/reference/ecephys_metrics_allensdk.py \\
        /tmp/em/session_715093706/session_715093706.nwb \\
        /tmp/em/session_715093707/session_715093707.nwb

Every unit is analysed (AllenSDK's QC thresholds lifted with ``api_kwargs``; the lake's
``filtered_units`` lifts the same ones). ``p_value_rf`` comes from AllenSDK's unseeded
``np.random.choice`` shuffles: the script calls ``np.random.seed(SEED)`` right before
``ReceptiveFieldMapping.metrics``, so the lake's ``seed=SEED`` reproduces it.

Writes ``ecephys_metrics_allensdk.npz`` beside itself: ``<analysis>/<column>`` (float, bool or
int arrays in unit order), ``<analysis>/unit_id``, ``rf/spike_counts`` (y, x, unit), its
``rf/y_position`` / ``rf/x_position``, and ``input/spike_times_sum`` (to check the input); and
``ecephys_metrics_fc_allensdk.npz`` the same for the second session's ``drifting_gratings``
(``c50_dg`` fitted to the contrast gratings) and ``dot_motion`` (``DotMotion``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20240607
LIFTED = {"amplitude_cutoff_maximum": np.inf, "presence_ratio_minimum": -np.inf,
          "isi_violations_maximum": np.inf}  # fmt: skip


def main(path: str, fc_path: str) -> None:
    warnings.simplefilter("ignore")
    from allensdk.brain_observatory.ecephys.stimulus_analysis import (
        dot_motion,
        drifting_gratings,
        flashes,
        natural_scenes,
        receptive_field_mapping,
        static_gratings,
    )

    classes = {
        "receptive_field_mapping": receptive_field_mapping.ReceptiveFieldMapping,
        "drifting_gratings": drifting_gratings.DriftingGratings,
        "static_gratings": static_gratings.StaticGratings,
        "natural_scenes": natural_scenes.NaturalScenes,
        "flashes": flashes.Flashes,
    }
    reference(path, classes, "ecephys_metrics_allensdk.npz")
    fc = {
        "drifting_gratings": drifting_gratings.DriftingGratings,
        "dot_motion": dot_motion.DotMotion,
    }
    reference(fc_path, fc, "ecephys_metrics_fc_allensdk.npz")


def reference(path: str, classes: dict, name: str) -> None:
    """Every analysis of ``classes`` on one session, written to ``name`` beside this script."""
    from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession

    session = EcephysSession.from_nwb_path(path, api_kwargs=LIFTED)
    out: dict[str, np.ndarray] = {
        "input/spike_times_sum": np.array(
            sum(float(np.sum(v)) for v in session.spike_times.values())
        )
    }
    for key, cls in classes.items():
        analysis = cls(session)
        t0 = time.perf_counter()
        if key == "receptive_field_mapping":
            np.random.seed(SEED)  # noqa: NPY002 (AllenSDK draws from the global RNG)
        table = analysis.metrics
        print(f"{key}: {len(table)} units, {time.perf_counter() - t0:.1f} s")
        out[f"{key}/unit_id"] = table.index.to_numpy(np.int64)
        out[f"{key}/columns"] = np.array(list(table.columns))
        for column in table.columns:
            values = table[column].to_numpy()
            kind = bool if "multi" in column or column == "on_screen_rf" else np.float64
            out[f"{key}/{column}"] = values.astype(kind)
        if key == "receptive_field_mapping":
            rf = analysis.receptive_fields["spike_counts"]
            out["rf/spike_counts"] = rf.transpose("y_position", "x_position", "unit_id").values
            out["rf/y_position"] = rf["y_position"].values.astype(np.float64)
            out["rf/x_position"] = rf["x_position"].values.astype(np.float64)
            out["rf/unit_id"] = rf["unit_id"].values.astype(np.int64)
    np.savez_compressed(HERE / name, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
