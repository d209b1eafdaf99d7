"""Visual Behavior licks, rewards, running and pupil aligned to stimulus presentations.

The columns, their names and their window rules are those of the Allen Visual Behavior
tutorials' package, ``brain_observatory_utilities`` (0.5.1, ``datasets/behavior/
data_formatting.py``), applied to AllenSDK's tables (:mod:`abo_lake.behavior`); engagement is
AllenSDK's own rule (``Trials._get_engaged_trials``: a trial's rolling reward rate above a
threshold, rewards/min) carried to each presentation through AllenSDK's ``trials_id``.

Per presentation starting at ``s`` with ``time_window = (w0, w1)``:

- ``licks`` / ``rewards``: the lick / reward times strictly inside ``(s + w0, s + w1)``;
  ``licked``: any lick there; ``first_lick_time`` and ``lick_latency`` (first lick − ``s``),
  NaN without a lick;
- ``mean_running_speed``: mean of ``running_speed.speed`` over samples in ``[s + w0, s + w1)``
  (NaN when there is none);
- ``mean_pupil_area``: mean of AllenSDK's blink-filtered ``eye_tracking.pupil_area`` over the
  frames in ``[s + w0, s + w1)`` that are not likely blinks (NaN when none is; all NaN without
  eye tracking). The tutorials' package interpolates over blinks and divides by a gray-screen
  mean first; this keeps AllenSDK's areas (px²) and leaves blinks out instead;
- ``time_from_last_lick`` / ``time_from_last_reward`` / ``time_from_last_change``: ``s`` minus
  the latest lick / reward / change presentation start at or before ``s`` (NaN before the
  first);
- ``reward_rate``: AllenSDK's ``get_reward_rate()`` of the presentation's trial (NaN for a
  presentation outside the trials or in a trial without a rate); ``engaged``: that rate above
  ``engaged_trial_reward_rate_threshold``; ``engagement_state``: 'engaged' or 'disengaged'.
  This is AllenSDK's rule (``get_performance_metrics()['engaged_trial_count']`` counts the
  same trials); the tutorials' ``add_engagement_state_to_stimulus_presentations`` recomputes
  the rate with the first 10 trials infinite (engaged) and assigns it by change time, which
  this does not copy.

On the ophys clock (:func:`behavior_on_ophys_time`, imaging experiments): per ophys frame the
running speed and the blink-filtered pupil area linearly interpolated at the frame's time (NaN
outside the recording and next to a blink, as ``scipy.interpolate.interp1d(bounds_error=False)``
on the tutorials' path, without its forward fill), and the licks and rewards counted in
``[t_i, t_i+1)`` (the last frame one median frame interval long).

>>> ds.ophys.annotated_stimulus_presentations()     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from abo_lake import behavior, ophys, task_performance
from abo_lake.errors import SchemaError

__all__ = [
    "ALIGNED_COLUMNS",
    "TUTORIAL_WINDOW",
    "annotated_stimulus_presentations",
    "behavior_on_ophys_time",
    "events_in_windows",
    "events_per_frame",
    "time_from_last",
    "window_means",
]

#: The tutorials' window (s after each presentation's start) for licks, running and pupil.
TUTORIAL_WINDOW = (0.0, 0.75)
#: The columns :func:`annotated_stimulus_presentations` adds, in order.
ALIGNED_COLUMNS = (
    "licks", "licked", "first_lick_time", "lick_latency", "rewards", "mean_running_speed",
    "mean_pupil_area", "time_from_last_lick", "time_from_last_reward", "time_from_last_change",
    "reward_rate", "engaged", "engagement_state",
)  # fmt: skip


def _window(time_window: Sequence[float]) -> tuple[float, float]:
    if len(time_window) != 2 or not time_window[0] < time_window[1]:
        raise ValueError(
            f"time_window must be (start, end) in s relative to each presentation with "
            f"start < end; got {tuple(time_window)!r}"
        )
    return float(time_window[0]), float(time_window[1])


def _sorted(times: np.ndarray, what: str) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    if len(times) > 1 and np.any(np.diff(times) < 0):
        raise ValueError(f"{what} timestamps are not in increasing order")
    return times


def time_from_last(timestamps: np.ndarray, event_times: np.ndarray) -> np.ndarray:
    """Per timestamp, the time since the latest event at or before it (NaN before the first),
    as the tutorials' ``general_utilities.time_from_last`` (``side='right'``)."""
    timestamps = np.asarray(timestamps, dtype=np.float64)
    events = _sorted(event_times, "event")
    last = np.searchsorted(events, timestamps, side="right") - 1
    out = np.full(len(timestamps), np.nan)
    seen = last >= 0
    out[seen] = timestamps[seen] - events[last[seen]]
    return out


def events_in_windows(
    starts: np.ndarray, event_times: np.ndarray, time_window: Sequence[float]
) -> list[np.ndarray]:
    """Per start ``s``, the event times strictly inside ``(s + w0, s + w1)``."""
    w0, w1 = _window(time_window)
    events = _sorted(event_times, "event")
    starts = np.asarray(starts, dtype=np.float64)
    lo = np.searchsorted(events, starts + w0, side="right")
    hi = np.searchsorted(events, starts + w1, side="left")
    return [events[a:b] for a, b in zip(lo, np.maximum(lo, hi), strict=True)]


def window_means(
    values: np.ndarray,
    timestamps: np.ndarray,
    starts: np.ndarray,
    time_window: Sequence[float],
    *,
    skip_nan: bool = False,
) -> np.ndarray:
    """Per start ``s``, the mean of ``values`` sampled in ``[s + w0, s + w1)`` (NaN values left
    out when ``skip_nan``); NaN where no sample counts."""
    w0, w1 = _window(time_window)
    t = _sorted(timestamps, "sample")
    values = np.asarray(values, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.float64)
    lo = np.searchsorted(t, starts + w0, side="left")
    hi = np.searchsorted(t, starts + w1, side="left")
    out = np.full(len(starts), np.nan)
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        inside = values[a:b]
        if skip_nan:
            inside = inside[~np.isnan(inside)]
        if len(inside):
            out[i] = inside.mean()
    return out


def _trial_reward_rate(ds: xr.Dataset, trials_id: pd.Series) -> np.ndarray:
    """AllenSDK's per-trial reward rate at each presentation's ``trials_id``."""
    trials = behavior.trials(ds)
    rate = pd.Series(task_performance.get_reward_rate(ds), index=trials.index)
    return trials_id.map(rate).to_numpy(dtype=np.float64)


def annotated_stimulus_presentations(
    ds: xr.Dataset,
    time_window: Sequence[float] = TUTORIAL_WINDOW,
    engaged_trial_reward_rate_threshold: float = 2.0,
) -> pd.DataFrame:
    """AllenSDK's ``stimulus_presentations`` with licks, rewards, running, pupil and engagement
    per presentation (:data:`ALIGNED_COLUMNS`; see the module docstring for each rule).

    Parameters
    ----------
    ds
        A Visual Behavior ``ophys_experiment`` or ``behavior_session`` Dataset.
    time_window
        (start, end) in s relative to each presentation's start for ``licks``, ``rewards``,
        ``mean_running_speed`` and ``mean_pupil_area`` (the tutorials' (0, 0.75) by default).
    engaged_trial_reward_rate_threshold
        Rewards/min above which a trial, and its presentations, are engaged (AllenSDK's 2.0).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``stimulus_presentations_id``: AllenSDK's columns, then the aligned ones.

    Raises
    ------
    SchemaError
        If the Dataset lacks presentations, trials, licks, rewards or running speed.
    ValueError
        If ``time_window`` is not (start, end) with start < end.
    """
    window = _window(time_window)
    table = behavior.stimulus_presentations(ds)
    missing = [c for c in ("start_time", "is_change", "trials_id") if c not in table.columns]
    if missing:
        raise SchemaError(
            f"{ds.attrs.get('abo_lake_kind', 'this Dataset')}'s stimulus presentations lack "
            f"{missing} (AllenSDK's Visual Behavior table has them); columns: "
            f"{list(table.columns)}"
        )
    starts = table["start_time"].to_numpy(dtype=np.float64)
    lick_times = behavior.licks(ds)["timestamps"].to_numpy(dtype=np.float64)
    reward_times = behavior.rewards(ds)["timestamps"].to_numpy(dtype=np.float64)
    running = behavior.running_speed(ds)
    eye = behavior.eye_tracking(ds)

    licks = events_in_windows(starts, lick_times, window)
    first = np.array([a[0] if len(a) else np.nan for a in licks], dtype=np.float64)
    changes = starts[table["is_change"].fillna(False).to_numpy(dtype=bool)]
    rate = _trial_reward_rate(ds, table["trials_id"])
    with np.errstate(invalid="ignore"):
        engaged = rate > engaged_trial_reward_rate_threshold
    columns = {
        "licks": licks,
        "licked": np.array([len(a) > 0 for a in licks], dtype=bool),
        "first_lick_time": first,
        "lick_latency": first - starts,
        "rewards": events_in_windows(starts, reward_times, window),
        "mean_running_speed": window_means(
            running["speed"].to_numpy(), running["timestamps"].to_numpy(), starts, window
        ),
        "mean_pupil_area": window_means(
            eye["pupil_area"].to_numpy(dtype=np.float64),
            eye["timestamps"].to_numpy(dtype=np.float64),
            starts,
            window,
            skip_nan=True,
        ),
        "time_from_last_lick": time_from_last(starts, lick_times),
        "time_from_last_reward": time_from_last(starts, reward_times),
        "time_from_last_change": time_from_last(starts, changes),
        "reward_rate": rate,
        "engaged": engaged,
        "engagement_state": np.where(engaged, "engaged", "disengaged").astype(object),
    }
    out = table.copy()
    for name in ALIGNED_COLUMNS:
        out[name] = (
            columns[name]
            if not isinstance(columns[name], list)
            else pd.Series(columns[name], index=table.index, dtype=object)
        )
    return out


def events_per_frame(frame_times: np.ndarray, event_times: np.ndarray) -> np.ndarray:
    """Events counted per frame ``i`` in ``[t_i, t_i+1)``; the last frame lasts one median
    frame interval; events outside every frame are not counted."""
    t = _sorted(frame_times, "frame")
    events = np.asarray(event_times, dtype=np.float64)
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    end = t[-1] + (float(np.median(np.diff(t))) if len(t) > 1 else 0.0)
    events = events[(events >= t[0]) & (events < end)]
    frame = np.searchsorted(t, events, side="right") - 1
    return np.bincount(frame, minlength=len(t)).astype(np.int64)


def _interpolated(values: np.ndarray, times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation at ``at``, NaN outside ``times`` and next to a NaN value."""
    out = np.full(len(at), np.nan)
    if len(times) < 2:
        return out
    inside = (at >= times[0]) & (at <= times[-1])
    out[inside] = np.interp(at[inside], times, values)
    return out


def behavior_on_ophys_time(
    ds: xr.Dataset, *, z_threshold: float = 3.0, dilation_frames: int = 2
) -> xr.Dataset:
    """Running speed, pupil area, licks and rewards on the ophys timestamps.

    Parameters
    ----------
    ds
        A Visual Behavior ``ophys_experiment`` Dataset.
    z_threshold, dilation_frames
        AllenSDK's blink filter of the eye tracking (:func:`abo_lake.behavior.eye_tracking`).

    Returns
    -------
    xarray.Dataset
        Along ``time`` (the ophys timestamps): ``running_speed`` (cm/s, lazy),
        ``pupil_area`` (px², NaN on and next to likely blinks and without eye tracking),
        ``lick_count`` and ``reward_count`` (int64 per frame); see the module docstring.
    """
    t = ophys.ophys_timestamps(ds)
    eye = behavior.eye_tracking(ds, z_threshold=z_threshold, dilation_frames=dilation_frames)
    pupil = _interpolated(
        eye["pupil_area"].to_numpy(dtype=np.float64),
        _sorted(eye["timestamps"].to_numpy(dtype=np.float64), "eye tracking"),
        t,
    )
    licks = behavior.licks(ds)["timestamps"].to_numpy(dtype=np.float64)
    rewards = behavior.rewards(ds)["timestamps"].to_numpy(dtype=np.float64)
    time = {ophys.TIME: ds.indexes[ophys.TIME]}
    return xr.Dataset(
        {
            "running_speed": ophys.running_speed(ds),
            "pupil_area": xr.DataArray(pupil, dims=(ophys.TIME,), coords=time),
            "lick_count": xr.DataArray(events_per_frame(t, licks), dims=(ophys.TIME,), coords=time),
            "reward_count": xr.DataArray(
                events_per_frame(t, rewards), dims=(ophys.TIME,), coords=time
            ),
        },
        attrs={"z_threshold": z_threshold, "dilation_frames": dilation_frames},
    )
