"""AllenSDK 2.16.2's Visual Behavior tables aligned to stimulus presentations, for
``tests/test_vb_alignment.py``.

For the two AllenSDK-written Visual Behavior fixtures (``shared/data/allensdk``: the ophys
experiment 1000000001 and the behavior-only session 1000000101) this script loads the sessions
with AllenSDK's own readers and stores:

- the per-presentation columns of the Allen Visual Behavior tutorials' package,
  ``brain_observatory_utilities`` 0.5.1 (``datasets/behavior/data_formatting.py``), run on
  AllenSDK's ``stimulus_presentations``, ``licks``, ``rewards`` and ``running_speed``:
  ``licks``, ``first_lick_time``, ``lick_latency`` (``add_licks_to_stimulus_presentations``),
  ``rewards`` (``add_rewards_to_stimulus_presentations``), ``mean_running_speed``
  (``add_mean_running_speed_to_stimulus_presentations``), ``time_from_last_lick``,
  ``time_from_last_reward``, ``time_from_last_change`` (``add_time_from_last_*``), for the
  tutorials' window (0, 0.75) s and for (-0.25, 0.5) s;
- ``mean_pupil_area``: the mean of AllenSDK's blink-filtered ``eye_tracking.pupil_area``
  (NaN on likely blinks) over the frames in [start + w0, start + w1), NaN frames left out
  (the tutorials' package instead interpolates over blinks and divides by a gray-screen mean,
  with a frame-index-as-time slip; abo_lake does not copy that);
- ``reward_rate`` / ``engaged`` per presentation: AllenSDK's per-trial
  ``get_rolling_performance_df()['reward_rate']`` of the presentation's ``trials_id`` and
  AllenSDK's engagement rule (``Trials._get_engaged_trials``: reward rate > threshold);
- on the ophys clock (the experiment): ``scipy.interpolate.interp1d(bounds_error=False)`` of
  AllenSDK's blink-filtered ``pupil_area`` and of ``running_speed`` at ``ophys_timestamps``
  (the tutorials' ``get_pupil_data(interpolate_to_ophys=True)`` without its forward fill), and
  ``np.histogram`` counts of licks and rewards between successive ophys timestamps;
- ``eye_tracking`` (``likely_blink``, ``pupil_area``, ``eye_area``) from AllenSDK's
  ``EyeTrackingTable.from_nwb`` with ``z_threshold=1.0, dilation_frames=5`` as well as the
  defaults (3.0, 2). ``BehaviorSession.from_nwb(eye_tracking_z_threshold=...,
  eye_tracking_dilation_frames=...)`` passes them on; 2.16.2's
  ``BehaviorOphysExperiment.from_nwb`` accepts them but ignores them (it reads its
  ``BehaviorSession`` with the defaults), so the table is read directly here.

Run with the AllenSDK venv and brain_observatory_utilities 0.5.1 installed beside it without
its dependencies (neither is a dependency of abo_lake)::

    /tmp/allensdk-venv/bin/pip install --no-deps --target /tmp/bou \
        brain-observatory-utilities==0.5.1
    PYTHONPATH=/tmp/bou /tmp/allensdk-venv/bin/python tests/reference/vb_alignment_allensdk.py

It writes ``vb_alignment_allensdk.npz`` and ``vb_alignment_allensdk.json`` beside itself.
``... vb_alignment_allensdk.py measure FILE.nwb`` instead times AllenSDK's side of
``tests/benchmarks/bench_vb_alignment.py`` on one behavior session file and prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[2] / "shared" / "data" / "allensdk"
SESSIONS = {
    "vbo_ophys": "vbo_ophys_experiment_1000000001.nwb",
    "vbo_behavior": "vbo_behavior_session_1000000101.nwb",
}
WINDOWS = {"tutorial": (0.0, 0.75), "early": (-0.25, 0.5)}
THRESHOLDS = (2.0, 4.0)
EYE = {"default": (3.0, 2), "strict": (1.0, 5)}


def load(key: str, z_threshold: float = 3.0, dilation_frames: int = 2):
    from allensdk.brain_observatory.behavior.behavior_ophys_experiment import (
        BehaviorOphysExperiment,
    )
    from allensdk.brain_observatory.behavior.behavior_session import BehaviorSession

    cls = BehaviorOphysExperiment if key == "vbo_ophys" else BehaviorSession
    return cls.from_nwb_path(
        str(FIXTURES / SESSIONS[key]),
        eye_tracking_z_threshold=z_threshold,
        eye_tracking_dilation_frames=dilation_frames,
    )


def eye_tracking_table(key: str, z_threshold: float, dilation_frames: int) -> pd.DataFrame:
    """AllenSDK's ``EyeTrackingTable.from_nwb`` with these thresholds (what
    ``BehaviorSession.from_nwb`` calls; 2.16.2's ``BehaviorOphysExperiment.from_nwb`` takes the
    thresholds but reads the table with the defaults)."""
    import pynwb
    from allensdk.brain_observatory.behavior.data_objects.eye_tracking.eye_tracking_table import (
        EyeTrackingTable,
    )

    with pynwb.NWBHDF5IO(str(FIXTURES / SESSIONS[key]), "r", load_namespaces=True) as io:
        return EyeTrackingTable.from_nwb(io.read(), z_threshold, dilation_frames).value


def ragged(out: dict, name: str, arrays) -> None:
    lengths = [len(a) for a in arrays]
    out[name] = np.concatenate([np.asarray(a, float) for a in arrays] + [np.zeros(0)])
    out[name + "__offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def pupil_means(sp: pd.DataFrame, eye: pd.DataFrame, window) -> np.ndarray:
    t = eye["timestamps"].to_numpy(float)
    area = eye["pupil_area"].to_numpy(float)
    out = []
    for start in sp["start_time"].to_numpy(float):
        inside = area[(t >= start + window[0]) & (t < start + window[1])]
        inside = inside[~np.isnan(inside)]
        out.append(inside.mean() if len(inside) else np.nan)
    return np.asarray(out, float)


def main() -> None:
    import brain_observatory_utilities as bou_package
    import brain_observatory_utilities.datasets.behavior.data_formatting as bou
    from scipy.interpolate import interp1d

    warnings.filterwarnings("ignore")
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {
        "brain_observatory_utilities": getattr(bou_package, "__version__", "0.5.1"),
        "windows": WINDOWS,
        "thresholds": THRESHOLDS,
        "eye": EYE,
        "sessions": {},
    }
    for key in SESSIONS:
        session = load(key)
        sp = session.stimulus_presentations
        licks, rewards, running = session.licks, session.rewards, session.running_speed
        eye = session.eye_tracking
        meta["sessions"][key] = {
            "presentations": len(sp),
            "licks": len(licks),
            "rewards": len(rewards),
            "eye_frames": len(eye),
        }
        arrays[f"{key}__index"] = sp.index.to_numpy()
        for wname, window in WINDOWS.items():
            p = f"{key}__{wname}__"
            table = bou.add_licks_to_stimulus_presentations(sp.copy(), licks, list(window))
            ragged(arrays, p + "licks", table["licks"])
            arrays[p + "first_lick_time"] = table["first_lick_time"].to_numpy(float)
            arrays[p + "lick_latency"] = table["lick_latency"].to_numpy(float)
            table = bou.add_rewards_to_stimulus_presentations(sp.copy(), rewards, list(window))
            ragged(arrays, p + "rewards", table["rewards"])
            table = bou.add_mean_running_speed_to_stimulus_presentations(
                sp.copy(), running, list(window)
            )
            arrays[p + "mean_running_speed"] = table["mean_running_speed"].to_numpy(float)
            arrays[p + "mean_pupil_area"] = pupil_means(sp, eye, window)
        table = bou.add_time_from_last_lick_to_stimulus_presentations(sp.copy(), licks)
        arrays[f"{key}__time_from_last_lick"] = table["time_from_last_lick"].to_numpy(float)
        table = bou.add_time_from_last_reward_to_stimulus_presentations(sp.copy(), rewards)
        arrays[f"{key}__time_from_last_reward"] = table["time_from_last_reward"].to_numpy(float)
        table = bou.add_time_from_last_change_to_stimulus_presentations(sp.copy())
        arrays[f"{key}__time_from_last_change"] = table["time_from_last_change"].to_numpy(float)
        # AllenSDK's engagement rule, per trial and per presentation (through its trials_id)
        rate = session.get_rolling_performance_df()["reward_rate"]
        per_presentation = sp["trials_id"].map(rate).to_numpy(float)
        arrays[f"{key}__reward_rate"] = per_presentation
        for threshold in THRESHOLDS:
            engaged = session.trials.index.to_series().map(rate > threshold)
            arrays[f"{key}__engaged_trials__{threshold}"] = engaged.to_numpy(bool)
            arrays[f"{key}__engaged__{threshold}"] = np.asarray(per_presentation > threshold)
            metrics = session.get_performance_metrics(threshold)
            meta["sessions"][key][f"engaged_trial_count__{threshold}"] = int(
                metrics["engaged_trial_count"]
            )
        if key == "vbo_ophys":  # the ophys clock
            ts = np.asarray(session.ophys_timestamps, float)
            for name, table, column in (("pupil_area", eye, "pupil_area"),
                                        ("running_speed", running, "speed")):  # fmt: skip
                f = interp1d(table["timestamps"], table[column], bounds_error=False)
                arrays[f"{key}__ophys_time__{name}"] = f(ts)
            edges = np.r_[ts, ts[-1] + np.median(np.diff(ts))]
            for name, table in (("lick_count", licks), ("reward_count", rewards)):
                counts = np.histogram(table["timestamps"], bins=edges)[0]
                arrays[f"{key}__ophys_time__{name}"] = counts
        for ename, (z, dilation) in EYE.items():
            table = eye_tracking_table(key, z, dilation)
            for column in ("likely_blink", "pupil_area", "eye_area"):
                arrays[f"{key}__eye__{ename}__{column}"] = table[column].to_numpy()
            meta["sessions"][key][f"blinks__{ename}"] = int(table["likely_blink"].sum())
    np.savez_compressed(HERE / "vb_alignment_allensdk.npz", **arrays)
    (HERE / "vb_alignment_allensdk.json").write_text(json.dumps(meta, indent=1, default=list))
    print(json.dumps(meta["sessions"], indent=1), file=sys.stderr)


def measure(path: str) -> None:
    """AllenSDK's load, then the tutorials' annotation and AllenSDK's performance metrics,
    timed apart; digests of the results for the benchmark to compare."""
    import brain_observatory_utilities.datasets.behavior.data_formatting as bou
    from allensdk.brain_observatory.behavior.behavior_session import BehaviorSession

    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    from _measure import Clock  # the benchmarks' measurement helper (standard library only)

    warnings.filterwarnings("ignore")
    clock = Clock()
    session = BehaviorSession.from_nwb_path(path)
    sp, licks, rewards = session.stimulus_presentations, session.licks, session.rewards
    running, trials = session.running_speed, session.trials
    clock.lap("load")
    table = bou.add_licks_to_stimulus_presentations(sp.copy(), licks, [0, 0.75])
    table = bou.add_rewards_to_stimulus_presentations(table, rewards, [0, 0.75])
    table = bou.add_mean_running_speed_to_stimulus_presentations(table, running, [0, 0.75])
    table = bou.add_time_from_last_lick_to_stimulus_presentations(table, licks)
    table = bou.add_time_from_last_reward_to_stimulus_presentations(table, rewards)
    table = bou.add_time_from_last_change_to_stimulus_presentations(table)
    rate = session.get_rolling_performance_df()["reward_rate"]
    table["engaged"] = table["trials_id"].map(rate).to_numpy(float) > 2.0
    clock.lap("annotate")
    metrics = session.get_performance_metrics()
    clock.lap("metrics")
    print(json.dumps(clock.report(
        presentations=len(table), trials=len(trials),
        lick_count=int(sum(map(len, table["licks"]))),
        mean_running_speed_sum=float(np.nansum(table["mean_running_speed"])),
        time_from_last_lick_sum=float(np.nansum(table["time_from_last_lick"])),
        engaged=int(table["engaged"].sum()),
        mean_dprime=float(metrics["mean_dprime"]),
    )))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "measure":
        measure(sys.argv[2])
    else:
        main()
