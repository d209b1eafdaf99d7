"""Visual Behavior task performance as AllenSDK 2.16.2 computes it.

Pure functions on AllenSDK's ``trials`` (and ``rewards``) tables, transcribed from AllenSDK's
``brain_observatory/behavior/dprime.py``, ``data_objects/trials/trials.py``
(``Trials.rolling_performance``, ``calculate_reward_rate``, ``_get_engaged_trials``) and
``behavior_session.py`` (``get_performance_metrics``), plus the three Dataset-level calls the
``.ophys`` and ``.ecephys`` accessors delegate to (:func:`get_reward_rate`,
:func:`get_rolling_performance_df`, :func:`get_performance_metrics`), which read the tables
through :mod:`abo_lake.behavior`.

AllenSDK's trial-type rules, which the trials table already encodes (``Trial._get_trial_type``):
an aborted trial is neither go, catch nor auto-rewarded; an auto-rewarded trial is neither go
nor catch and has no hit, miss, false alarm or correct reject. The rolling rates drop the
aborted trials (their rows are NaN) and keep auto-rewarded ones as window positions that count
neither as go nor as catch responses. Rolling windows are the previous 100 non-aborted trials;
d′ clips both rates to [1/100, 1 − 1/100] (AllenSDK's ``SLIDING_WINDOW`` whatever window is
passed); a passive session (no reward volume, no licks) has d′ 0.

>>> rolling_performance(trials, response_window_start=0.15)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import norm

from abo_lake import behavior

__all__ = [
    "SLIDING_WINDOW",
    "catch_responses",
    "dprime",
    "engaged_trials",
    "false_alarm_rate",
    "get_engaged_trials",
    "get_performance_metrics",
    "get_reward_rate",
    "get_rolling_performance_df",
    "go_responses",
    "hit_rate",
    "performance_metrics",
    "response_latencies",
    "reward_rate",
    "rolling_dprime",
    "rolling_performance",
    "trial_count_corrected_false_alarm_rate",
    "trial_count_corrected_hit_rate",
    "trial_number_limit",
]

#: AllenSDK's ``dprime.SLIDING_WINDOW``: rolling window (trials) and d′ clipping (1/100).
SLIDING_WINDOW = 100

_COLUMNS = ("reward_rate", "hit_rate_raw", "hit_rate", "false_alarm_rate_raw",
            "false_alarm_rate", "rolling_dprime")  # fmt: skip


# ----------------------------------------------------------------- hit, false alarm, d′


def _responses(one: Sequence[bool], zero: Sequence[bool], aborted: Sequence[bool]) -> np.ndarray:
    """1.0 where ``one``, 0.0 where ``zero`` (which wins), NaN elsewhere; aborted trials dropped."""
    if not len(one) == len(zero) == len(aborted):
        raise ValueError(
            f"trial flags of different lengths: {len(one)}, {len(zero)}, {len(aborted)}"
        )
    kept = ~np.asarray(aborted, dtype=bool)
    out = np.full(int(kept.sum()), np.nan)
    out[np.asarray(one, dtype=bool)[kept]] = 1
    out[np.asarray(zero, dtype=bool)[kept]] = 0
    return out


def go_responses(hit: Sequence[bool], miss: Sequence[bool], aborted: Sequence[bool]) -> np.ndarray:
    """AllenSDK's ``get_go_responses``: per non-aborted trial 1 (hit), 0 (miss) or NaN."""
    return _responses(hit, miss, aborted)


def catch_responses(
    correct_reject: Sequence[bool], false_alarm: Sequence[bool], aborted: Sequence[bool]
) -> np.ndarray:
    """AllenSDK's ``get_catch_responses``: per non-aborted trial 1 (false alarm), 0 (correct
    reject) or NaN."""
    return _responses(false_alarm, correct_reject, aborted)


def _rolling_mean(responses: np.ndarray, sliding_window: int) -> np.ndarray:
    return pd.Series(responses).rolling(window=sliding_window, min_periods=0).mean().to_numpy()


def _corrected(responses: np.ndarray, sliding_window: int) -> np.ndarray:
    rolling = pd.Series(responses).rolling(window=sliding_window, min_periods=0)
    rate, count = rolling.mean().to_numpy(), rolling.count().to_numpy()
    return np.array([trial_number_limit(p, n) for p, n in zip(rate, count, strict=True)], float)


def trial_number_limit(p: float, n: float) -> float:
    """AllenSDK's ``trial_number_limit``: ``p`` kept within [1/2n, 1 − 1/2n]; NaN for n = 0."""
    if n == 0:
        return np.nan
    if not pd.isnull(p):
        p = np.max((p, 1.0 / (2 * n)))
        p = np.min((p, 1 - 1.0 / (2 * n)))
    return p


def hit_rate(
    hit: Sequence[bool],
    miss: Sequence[bool],
    aborted: Sequence[bool],
    sliding_window: int = SLIDING_WINDOW,
) -> np.ndarray:
    """AllenSDK's ``get_hit_rate``: rolling hit fraction of go trials, per non-aborted trial."""
    return _rolling_mean(go_responses(hit, miss, aborted), sliding_window)


def trial_count_corrected_hit_rate(
    hit: Sequence[bool],
    miss: Sequence[bool],
    aborted: Sequence[bool],
    sliding_window: int = SLIDING_WINDOW,
) -> np.ndarray:
    """AllenSDK's ``get_trial_count_corrected_hit_rate``: :func:`hit_rate` limited by
    :func:`trial_number_limit` with the window's go-trial count."""
    return _corrected(go_responses(hit, miss, aborted), sliding_window)


def false_alarm_rate(
    correct_reject: Sequence[bool],
    false_alarm: Sequence[bool],
    aborted: Sequence[bool],
    sliding_window: int = SLIDING_WINDOW,
) -> np.ndarray:
    """AllenSDK's ``get_false_alarm_rate``: rolling false-alarm fraction of catch trials."""
    return _rolling_mean(catch_responses(correct_reject, false_alarm, aborted), sliding_window)


def trial_count_corrected_false_alarm_rate(
    correct_reject: Sequence[bool],
    false_alarm: Sequence[bool],
    aborted: Sequence[bool],
    sliding_window: int = SLIDING_WINDOW,
) -> np.ndarray:
    """AllenSDK's ``get_trial_count_corrected_false_alarm_rate``."""
    return _corrected(catch_responses(correct_reject, false_alarm, aborted), sliding_window)


def dprime(hit_rate: float, fa_rate: float) -> float:
    """AllenSDK's ``get_dprime``: Z(hit rate) − Z(false-alarm rate), both clipped to
    [1/100, 99/100] (AllenSDK's limits whatever its ``sliding_window``); NaN if either is."""
    low, high = 1 / SLIDING_WINDOW, 1 - 1 / SLIDING_WINDOW
    return float(norm.ppf(np.clip(hit_rate, low, high)) - norm.ppf(np.clip(fa_rate, low, high)))


def rolling_dprime(
    rolling_hit_rate: Sequence[float], rolling_fa_rate: Sequence[float]
) -> np.ndarray:
    """AllenSDK's ``get_rolling_dprime``: :func:`dprime` of each pair of rates."""
    return np.array(
        [dprime(h, f) for h, f in zip(rolling_hit_rate, rolling_fa_rate, strict=True)], float
    )


# ----------------------------------------------------------------- reward rate, rolling table


def _change_time(trials: pd.DataFrame) -> pd.Series:
    """``Trials.change_time``: ``change_time``, or VBN's ``change_time_no_display_delay``."""
    for name in ("change_time", "change_time_no_display_delay"):
        if name in trials:
            return trials[name]
    raise KeyError(
        "trials have neither 'change_time' nor 'change_time_no_display_delay' (AllenSDK's "
        f"trials table is needed); columns: {list(trials.columns)}"
    )


def response_latencies(trials: pd.DataFrame, response_window_start: float) -> np.ndarray:
    """AllenSDK's ``Trials._calculate_response_latency_list``: per trial, the first lick later
    than ``response_window_start`` (s) after the change, minus the change time; ``inf`` if none
    (and on trials without a change)."""
    out = np.full(len(trials), np.inf)
    for i, (licks, change) in enumerate(
        zip(trials["lick_times"], _change_time(trials), strict=True)
    ):
        valid = [t for t in licks if t - change > response_window_start]
        if valid:
            out[i] = valid[0] - change
    return out


def reward_rate(
    trials: pd.DataFrame,
    response_window_start: float,
    *,
    window: float = 0.75,
    trial_window: int = 25,
    initial_trials: int = 10,
) -> np.ndarray:
    """AllenSDK's ``Trials.calculate_reward_rate`` (rewards/min), one value per trial.

    Trial ``i`` (from ``initial_trials`` on; earlier ones are NaN) counts the trials in
    ``[i - trial_window, i + trial_window)`` whose response latency is under ``window`` s and
    divides by the time between the first and last of those trials' starts; an infinite rate
    (no time elapsed) is NaN.
    """
    correct = np.concatenate(
        [[0], np.cumsum(response_latencies(trials, response_window_start) < window)]
    )
    start = trials["start_time"].to_numpy(dtype=np.float64)
    n = len(trials)
    rate = np.full(n, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(initial_trials, n):
            lo, hi = max(0, i - trial_window), min(i + trial_window, n)
            rate[i] = (correct[hi] - correct[lo]) / (start[hi - 1] - start[lo]) * 60
    rate[np.isinf(rate)] = np.nan
    return rate


def rolling_performance(trials: pd.DataFrame, response_window_start: float) -> pd.DataFrame:
    """AllenSDK's ``Trials.rolling_performance`` (``get_rolling_performance_df()``).

    Indexed like ``trials``: ``reward_rate`` (every trial), ``hit_rate_raw``, ``hit_rate``
    (trial-count corrected), ``false_alarm_rate_raw``, ``false_alarm_rate``, ``rolling_dprime``
    (NaN on aborted trials; d′ 0 on a passive session).
    """
    aborted = trials["aborted"].to_numpy(dtype=bool)
    kept = trials.index[~aborted]
    flags = {c: trials[c].to_numpy(dtype=bool) for c in ("hit", "miss", "false_alarm",
                                                        "correct_reject")}  # fmt: skip
    hits = trial_count_corrected_hit_rate(flags["hit"], flags["miss"], aborted)
    fas = trial_count_corrected_false_alarm_rate(
        flags["correct_reject"], flags["false_alarm"], aborted
    )
    passive = bool(
        (trials["reward_volume"] == 0).all() and (trials["lick_times"].map(len) == 0).all()
    )
    columns = {
        "hit_rate_raw": hit_rate(flags["hit"], flags["miss"], aborted),
        "hit_rate": hits,
        "false_alarm_rate_raw": false_alarm_rate(
            flags["correct_reject"], flags["false_alarm"], aborted
        ),
        "false_alarm_rate": fas,
        "rolling_dprime": np.zeros(len(hits)) if passive else rolling_dprime(hits, fas),
    }
    out = pd.DataFrame(index=trials.index)
    out["reward_rate"] = pd.Series(reward_rate(trials, response_window_start), index=trials.index)
    for name, values in columns.items():
        out[name] = pd.Series(values, index=kept)
    return out


def engaged_trials(
    rolling: pd.DataFrame, engaged_trial_reward_rate_threshold: float = 2.0
) -> pd.Series:
    """AllenSDK's ``Trials._get_engaged_trials``: reward rate above the threshold
    (rewards/min; NaN rates are not engaged)."""
    return rolling["reward_rate"] > engaged_trial_reward_rate_threshold


def performance_metrics(
    trials: pd.DataFrame,
    rewards: pd.DataFrame,
    response_window_start: float,
    engaged_trial_reward_rate_threshold: float = 2.0,
) -> dict[str, Any]:
    """AllenSDK's ``get_performance_metrics`` dict, its keys in its order and its types
    (``int`` counts of rows, NumPy ``int64`` sums, NumPy ``float64`` rates; pandas' Python
    ``float`` NaN for a mean or maximum over no engaged trial)."""
    counts = {f"{c}_trial_count": trials[c].sum()
              for c in ("go", "catch", "hit", "miss", "false_alarm", "correct_reject")}  # fmt: skip
    out: dict[str, Any] = {
        "trial_count": trials.shape[0],
        **counts,
        "auto_reward_count": trials["auto_rewarded"].sum(),
        "earned_reward_count": trials["hit"].sum(),
        "total_reward_count": len(rewards),
        "total_reward_volume": rewards["volume"].sum(),
    }
    rpdf = rolling_performance(trials, response_window_start)
    engaged = engaged_trials(rpdf, engaged_trial_reward_rate_threshold)
    rates = rpdf["reward_rate"].to_numpy()  # np.nanmax, without its all-NaN warning
    out["maximum_reward_rate"] = np.float64(np.nanmax(rates) if (rates == rates).any() else np.nan)
    out["engaged_trial_count"] = engaged.sum()
    # pandas' own reductions, as AllenSDK: NumPy float64, or a Python float NaN when the
    # selection is empty (no engaged trial)
    for key, column in (("hit_rate", "hit_rate"), ("false_alarm_rate", "false_alarm_rate")):
        out[f"mean_{key}"] = rpdf[column].mean()
        out[f"mean_{key}_uncorrected"] = rpdf[f"{column}_raw"].mean()
        out[f"mean_{key}_engaged"] = rpdf[column][engaged].mean()
    dp = rpdf["rolling_dprime"]
    out["mean_dprime"] = dp.mean()
    out["mean_dprime_engaged"] = dp[engaged].mean()
    out["max_dprime"] = dp.max()
    out["max_dprime_engaged"] = dp[engaged].max()
    return out


# ----------------------------------------------------------------- the accessors' delegates


def _response_window_start(ds: xr.Dataset) -> float:
    """``TaskParameters.response_window_sec[0]`` (s), as AllenSDK's ``Trials.from_nwb``."""
    return float(behavior.task_parameters(ds)["response_window_sec"][0])


def get_reward_rate(ds: xr.Dataset) -> np.ndarray:
    """AllenSDK's ``get_reward_rate()`` of a Visual Behavior Dataset; see :func:`reward_rate`."""
    return reward_rate(behavior.trials(ds), _response_window_start(ds))


def get_rolling_performance_df(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``get_rolling_performance_df()``; see :func:`rolling_performance`."""
    return rolling_performance(behavior.trials(ds), _response_window_start(ds))


def get_engaged_trials(
    ds: xr.Dataset, engaged_trial_reward_rate_threshold: float = 2.0
) -> pd.Series:
    """AllenSDK's engagement criterion per trial (``Trials._get_engaged_trials``; its sum is
    ``get_performance_metrics()['engaged_trial_count']``): boolean, indexed by ``trials_id``,
    True where the rolling reward rate exceeds the threshold (rewards/min)."""
    rolling = get_rolling_performance_df(ds)
    return engaged_trials(rolling, engaged_trial_reward_rate_threshold).rename("engaged")


def get_performance_metrics(
    ds: xr.Dataset, engaged_trial_reward_rate_threshold: float = 2.0
) -> dict[str, Any]:
    """AllenSDK's ``get_performance_metrics(engaged_trial_reward_rate_threshold=2.0)``; see
    :func:`performance_metrics`."""
    return performance_metrics(
        behavior.trials(ds),
        behavior.rewards(ds),
        _response_window_start(ds),
        engaged_trial_reward_rate_threshold,
    )
