"""AllenSDK 2.16.2's task performance on seeded synthetic trials tables, for
``tests/test_allensdk_task_performance.py``.

The AllenSDK fixtures hold 11 to 15 trials, too few to reach AllenSDK's windows (reward rate:
±25 trials after the first 10; hit and false-alarm rates: the previous 100 non-aborted trials).
This script builds trials tables that follow AllenSDK's trial-type rules (``Trial._get_trial_type``:
aborted trials are neither go, catch nor auto-rewarded; auto-rewarded trials have no response
type) with hundreds of trials, and stores what AllenSDK's own ``Trials`` object and
``BehaviorSession.get_performance_metrics`` return for them:

- ``long``: 320 trials, VBO columns (``change_time``);
- ``vbn``: 180 trials, VBN columns (``change_time_no_display_delay``), response window 0.1 s;
- ``passive``: 140 trials without licks or reward volume (AllenSDK's d′ 0);
- ``still``: 14 trials starting at the same time (no elapsed time: infinite rates, NaN).

Run with the AllenSDK venv (never a dependency of abo_lake)::

    /tmp/allensdk-venv/bin/python tests/reference/task_performance_allensdk.py

It writes ``task_performance_allensdk.npz`` (inputs and rolling outputs) and
``task_performance_allensdk.json`` (performance metrics with AllenSDK's types) beside itself.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FLAGS = ("go", "catch", "hit", "miss", "false_alarm", "correct_reject", "aborted", "auto_rewarded")
THRESHOLDS = (2.0, 1.0, 4.0)
SESSIONS = {  # name: (n trials, change-time column, response window start, passive, still)
    "long": (320, "change_time", 0.15, False, False),
    "vbn": (180, "change_time_no_display_delay", 0.1, False, False),
    "passive": (140, "change_time", 0.15, True, False),
    "still": (14, "change_time", 0.15, False, True),
}


def make_trials(n: int, change_column: str, passive: bool, still: bool, seed: int) -> pd.DataFrame:
    """A trials table with AllenSDK's columns and trial-type rules, seeded."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 0.5
    for i in range(n):
        aborted = bool(rng.random() < 0.3) and i >= 3
        auto = (i < 3 or bool(rng.random() < 0.05)) and not aborted
        catch = (not aborted and not auto) and bool(rng.random() < 0.3)
        go = not (aborted or auto or catch)
        # engagement drifts: long runs of good and bad performance
        p_lick = 0.85 if (i // 40) % 2 == 0 else 0.25
        responded = bool(rng.random() < (p_lick if go else 0.2))
        hit, miss = go and responded, go and not responded
        false_alarm, correct_reject = catch and responded, catch and not responded
        change = np.nan if aborted else t + rng.uniform(2.0, 6.0)
        licks: list[float] = []
        if not passive:
            if aborted:
                licks = sorted(t + rng.uniform(0.1, 2.0, rng.integers(1, 4)))
            else:
                if rng.random() < 0.2:  # a lick too early to count as a response
                    licks.append(change + rng.uniform(0.0, 0.09))
                if responded or auto:
                    licks += sorted(change + rng.uniform(0.2, 0.7, rng.integers(1, 5)))
                elif rng.random() < 0.3:  # a late lick, after the response window
                    licks.append(change + rng.uniform(0.8, 1.5))
        reward = 0.0 if passive else 0.005 if auto else 0.007 if hit else 0.0
        rows.append(
            {
                "start_time": 0.5 if still else t,
                change_column: change,
                "lick_times": np.asarray(licks, dtype=np.float64),
                "reward_volume": reward,
                **dict(
                    zip(FLAGS, (go, catch, hit, miss, false_alarm, correct_reject, aborted, auto))
                ),
            }
        )
        t += rng.uniform(4.0, 12.0)
    trials = pd.DataFrame(rows)
    trials.index.name = "trials_id"
    return trials


def rewards_of(trials: pd.DataFrame) -> pd.DataFrame:
    """AllenSDK's rewards table of the rewarded trials (volume, timestamps, auto_rewarded)."""
    rewarded = trials[trials["reward_volume"] > 0]
    return pd.DataFrame(
        {
            "volume": rewarded["reward_volume"].to_numpy(),
            "timestamps": rewarded["start_time"].to_numpy() + 1.0,
            "auto_rewarded": rewarded["auto_rewarded"].to_numpy(),
        }
    )


def main() -> None:
    from allensdk.brain_observatory.behavior.behavior_session import BehaviorSession
    from allensdk.brain_observatory.behavior.data_objects.trials.trials import Trials
    from allensdk.brain_observatory.ecephys.data_objects.trials import VBNTrials

    arrays: dict[str, np.ndarray] = {}
    metrics: dict[str, dict] = {}
    for seed, (name, (n, change_column, start, passive, still)) in enumerate(SESSIONS.items()):
        trials = make_trials(n, change_column, passive, still, seed)
        rewards = rewards_of(trials)
        cls = VBNTrials if change_column == "change_time_no_display_delay" else Trials
        sdk = cls(trials=trials, response_window_start=start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rolling = sdk.rolling_performance
            reward_rate = sdk.calculate_reward_rate()
            session = SimpleNamespace(
                _trials=sdk,
                trials=sdk.data,
                rewards=rewards,
                get_rolling_performance_df=lambda sdk=sdk: sdk.rolling_performance,
            )
            metrics[name] = {
                str(th): {
                    k: [
                        None
                        if isinstance(v, float) and np.isnan(v)
                        else v.item()
                        if isinstance(v, np.generic)
                        else v,
                        type(v).__name__,
                    ]
                    for k, v in BehaviorSession.get_performance_metrics(session, th).items()
                }
                for th in THRESHOLDS
            }
        for column in ("start_time", change_column, "reward_volume", *FLAGS):
            arrays[f"{name}__trials__{column}"] = trials[column].to_numpy()
        lengths = trials["lick_times"].map(len).to_numpy()
        arrays[f"{name}__trials__lick_times"] = np.concatenate(list(trials["lick_times"]))
        arrays[f"{name}__trials__lick_times__offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{name}__response_window_start"] = np.float64(start)
        arrays[f"{name}__reward_rate"] = reward_rate
        arrays[f"{name}__rolling__index"] = rolling.index.to_numpy()
        for column in rolling:
            arrays[f"{name}__rolling__{column}"] = rolling[column].to_numpy()
    np.savez_compressed(HERE / "task_performance_allensdk.npz", **arrays)
    import allensdk

    (HERE / "task_performance_allensdk.json").write_text(
        json.dumps(
            {
                "allensdk": allensdk.__version__,
                "pandas": pd.__version__,
                "sessions": {k: list(v[:3]) for k, v in SESSIONS.items()},
                "get_performance_metrics": metrics,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
