"""Sweep QC of Cell Types current-clamp sweeps, IPFX 2.1.2's definitions and default criteria.

Allen's Cell Types NWB files carry no QC state; Allen's pipeline (IPFX) computes it from the
samples. This module does the same, sweep by sweep, from the lake's ``stimulus``/``response``
(our implementation, checked against IPFX run on the source files in
``tests/test_sweep_qc.py``). Times are sample indices of the whole sweep at rate ``hz``;
``int(x * hz)`` is IPFX's rounding.

Epochs (IPFX ``ipfx.epochs``, detected from the stimulus ``i`` in pA):

- test pulse: the first two changes of ``i`` when the first lies before 0.4 s;
- stimulus: from the third change of ``i`` (``start``) to the last one; with the test pulse
  dropped as IPFX does;
- experiment: from ``start - int(0.5 * hz)`` to ``end + int(0.5 * hz)``;
- recording: from 0 to the last non-NaN sample of the response (``rec_end``).

Features (mV; IPFX ``current_clamp_sweep_qc_features``; ``rms`` is the standard deviation
about the window's mean, IPFX's ``measure_vm``):

- ``pre_noise_rms_mv``: rms over ``int(0.0015 * hz)`` samples from the experiment start
  (0.5 s before the stimulus; IPFX indexes from the end when that is negative, and so do we);
- ``slow_vm_mv`` = ``pre_vm_mv`` and ``slow_noise_rms_mv``: mean and rms over the
  ``int(0.5 * hz)`` samples ending one sample before the stimulus (fewer when the stimulus
  starts earlier);
- ``post_vm_mv`` and ``post_noise_rms_mv``: mean over the last ``int(0.5 * hz)`` and rms over
  the last ``int(0.0015 * hz)`` samples of the recording (``rec_end`` excluded); not for ramps
  (NaN);
- ``vm_delta_mv``: ``|pre_vm_mv - post_vm_mv|`` (NaN for ramps);
- ``stimulus_start_time`` (s), ``stimulus_duration`` (s) and ``stimulus_amplitude`` (pA, the
  extreme of the stimulus, sign kept): IPFX ``get_stim_characteristics``.

Criteria (IPFX ``ipfx/defaults/qc_criteria.json``, "Ephys QC Criteria v1.1",
:data:`QC_CRITERIA`): a sweep fails when ``pre_noise_rms_mv > 0.07``, (not a ramp)
``post_noise_rms_mv > 0.07``, ``slow_noise_rms_mv > 0.5`` or ``vm_delta_mv > 1.0``; each
failure adds IPFX's tag text (``"pre-noise: 0.123 exceeded qc threshold: 0.070"``, ...).
``passed`` is "no fail tag" and ``workflow_state`` is LIMS's ``auto_passed``/``auto_failed``.

Before QC IPFX checks each sweep's integrity (``check_sweep_integrity``: a missing test,
stimulus or experiment epoch, a recording that stops before the experiment epoch ends (not for
ramps), NaN in the stimulus); IPFX's pipeline drops such sweeps before QC. Here they are
failed with those tags as ``fail_tags`` and NaN features. Sweeps IPFX does not QC (stimulus
not in Amps, or named ``Test``/``Search``) are failed with a tag saying so. The cell-level QC
(seal, blowout, electrode 0, access resistance) needs voltage-clamp sweeps the Cell Types
files do not publish and is not computed.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from abo_lake import celltypes

__all__ = [
    "QC_COLUMNS",
    "QC_CRITERIA",
    "QC_FEATURES",
    "evaluate",
    "fail_tags",
    "integrity_tags",
    "passed_sweep_numbers",
    "qc_features",
    "stimulus_features",
    "sweep_qc",
    "sweep_qc_table",
]

#: IPFX 2.1.2 ``defaults/qc_criteria.json`` (the thresholds the sweep QC uses).
QC_CRITERIA: dict[str, float] = {
    "pre_noise_rms_mv_max": 0.07,
    "post_noise_rms_mv_max": 0.07,
    "slow_noise_rms_mv_max": 0.5,
    "vm_delta_mv_max": 1.0,
}
#: The QC feature columns (names as AllenSDK's ``get_ephys_sweeps`` / IPFX's sweep features).
QC_FEATURES = (
    "stimulus_start_time",
    "stimulus_duration",
    "stimulus_amplitude",
    "pre_noise_rms_mv",
    "slow_vm_mv",
    "slow_noise_rms_mv",
    "pre_vm_mv",
    "post_vm_mv",
    "post_noise_rms_mv",
    "vm_delta_mv",
)
#: Every column :func:`sweep_qc_table` adds to the sweeps table.
QC_COLUMNS = (*QC_FEATURES, "passed", "workflow_state", "fail_tags")

NOISE_EPOCH_S = 0.0015
STABILITY_EPOCH_S = 0.5
TEST_PULSE_MAX_TIME_S = 0.4
RAMP_NAMES = frozenset({"Ramp"})
NOT_QCED_NAMES = frozenset({"Test", "Search"})
_AMPS = {"Amps", "A", "amperes", "Amperes"}


def _changes(i: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.diff(i))


def _test_epoch(i: np.ndarray, hz: float) -> tuple[int, int] | None:
    changes = _changes(i)
    if not changes.size or changes[0] >= TEST_PULSE_MAX_TIME_S * hz:
        return None
    if changes.size == 1:
        raise ValueError("cannot find the end of the test pulse: the stimulus changes only once")
    start, end = int(changes[0]) + 1, int(changes[1])
    return 0, end + start


def _stim_epoch(i: np.ndarray, test_pulse: bool = True) -> tuple[int, int] | None:
    changes = _changes(i)
    if test_pulse:
        changes = changes[2:]
    if changes.size < 2:
        return None
    return int(changes[0]) + 1, int(changes[-1])


def _experiment_epoch(i: np.ndarray, hz: float, test_pulse: bool = True) -> tuple[int, int] | None:
    stim = _stim_epoch(i, test_pulse)
    if stim is None:
        return None
    return stim[0] - int(STABILITY_EPOCH_S * hz), stim[1] + int(STABILITY_EPOCH_S * hz)


def _recording_end(v: np.ndarray) -> int:
    finite = np.flatnonzero(~np.isnan(v))
    return int(finite[-1]) if finite.size else 0


def _mean_rms(values: np.ndarray) -> tuple[float, float]:
    if len(values) < 1:
        return 0.0, 0.0
    mean = float(np.mean(values))
    return mean, float(np.sqrt(np.mean(np.square(values - mean))))


def integrity_tags(v_mv: np.ndarray, i_pa: np.ndarray, hz: float, is_ramp: bool) -> list[str]:
    """IPFX's ``check_sweep_integrity``: missing epochs, a recording stopped early, NaN stimulus.

    ``v_mv``/``i_pa`` are the whole sweep; an empty list means the sweep can be QC'd.
    """
    rec_end = _recording_end(v_mv)
    i_rec = i_pa[: rec_end + 1]
    try:
        test = _test_epoch(i_pa, hz)
    except ValueError as err:
        return [f"test epoch: {err}"]
    epochs = {
        "test": test,
        "sweep": (0, len(i_pa) - 1),
        "recording": (0, rec_end),
        "stim": _stim_epoch(i_rec, test is not None),
        "experiment": _experiment_epoch(i_rec, hz, test is not None),
    }
    tags = [f"{name} epoch is missing" for name, epoch in epochs.items() if not epoch]
    experiment = epochs["experiment"]
    if not is_ramp and experiment and rec_end < experiment[1]:
        tags.append("Recording stopped before completing the experiment epoch")
    if np.isnan(i_rec).any():
        tags.append("Stimulus contains NaN values")
    return tags


def stimulus_features(i_pa: np.ndarray, hz: float) -> dict[str, float]:
    """IPFX's ``get_stim_characteristics``: ``stimulus_start_time`` (s), ``stimulus_duration``
    (s) and ``stimulus_amplitude`` (pA, the larger extreme by magnitude); NaN (amplitude 0)
    when there is no stimulus after the test pulse."""
    changes = _changes(i_pa)[2:]
    none = {"stimulus_start_time": np.nan, "stimulus_duration": np.nan, "stimulus_amplitude": 0.0}
    if not changes.size:
        return none
    start, end = int(changes[0]) + 1, int(changes[-1])
    if start >= end:
        return none
    stim = i_pa[start : end + 1]
    high, low = float(np.max(stim)), float(np.min(stim))
    amplitude = high if abs(high) > abs(low) else low
    if np.isnan(amplitude):
        return none
    return {
        "stimulus_start_time": start / hz,
        "stimulus_duration": (end - (start - 1)) / hz,
        "stimulus_amplitude": amplitude,
    }


def qc_features(v_mv: np.ndarray, i_pa: np.ndarray, hz: float, is_ramp: bool) -> dict[str, float]:
    """IPFX's ``current_clamp_sweep_qc_features`` of one sweep (see the module docstring).

    Parameters
    ----------
    v_mv, i_pa
        The whole sweep's response (mV) and stimulus (pA), test pulse included.
    hz
        Sampling rate.
    is_ramp
        Ramps have no ``post_*`` features and no ``vm_delta_mv`` (NaN).

    Raises
    ------
    ValueError
        When the stimulus has no step after the test pulse (check :func:`integrity_tags`).
    """
    rec_end = _recording_end(v_mv)
    v, i = v_mv[: rec_end + 1], i_pa[: rec_end + 1]
    experiment = _experiment_epoch(i, hz)
    stim = _stim_epoch(i)
    if experiment is None or stim is None:
        raise ValueError("no stimulus after the test pulse: the sweep has no experiment epoch")
    noise, stability = int(NOISE_EPOCH_S * hz), int(STABILITY_EPOCH_S * hz)
    out: dict[str, float] = {}
    idx0 = experiment[0]
    out["pre_noise_rms_mv"] = _mean_rms(v[idx0 : idx0 + noise])[1]
    last = _recording_end(v)
    if is_ramp:
        post_vm, post_noise = np.nan, np.nan
    else:
        post_vm = _mean_rms(v[last - stability : last])[0]
        post_noise = _mean_rms(v[last - noise : last])[1]
    if stability > stim[0] - 1:  # IPFX's get_first_stability_epoch
        lo, hi = 0, stim[0] - 1
    elif stability <= 0:
        lo = hi = 0
    else:
        lo, hi = stim[0] - 1 - stability, stim[0] - 1
    pre_vm, slow_noise = _mean_rms(v[lo:hi])
    out["slow_vm_mv"] = pre_vm
    out["slow_noise_rms_mv"] = slow_noise
    out["pre_vm_mv"] = pre_vm
    out["post_vm_mv"] = post_vm
    out["post_noise_rms_mv"] = post_noise
    out["vm_delta_mv"] = abs(pre_vm - post_vm) if not is_ramp else np.nan
    return out


def fail_tags(
    features: dict[str, float], is_ramp: bool, criteria: dict[str, float] | None = None
) -> list[str]:
    """IPFX's ``qc_current_clamp_sweep``: the failed criteria of one sweep, IPFX's wording."""
    c = {**QC_CRITERIA, **(criteria or {})}
    tags = []
    pre = features["pre_noise_rms_mv"]
    if pre > c["pre_noise_rms_mv_max"]:
        tags.append(f"pre-noise: {pre:.3f} exceeded qc threshold: {c['pre_noise_rms_mv_max']:.3f}")
    post = features["post_noise_rms_mv"]
    if not is_ramp and post > c["post_noise_rms_mv_max"]:
        tags.append(
            f"post-noise: {post:.3f} exceeded qc threshold: {c['post_noise_rms_mv_max']:.3f}"
        )
    slow = features["slow_noise_rms_mv"]
    if slow > c["slow_noise_rms_mv_max"]:
        tags.append(f"slow noise: {slow:.3f} above threshold: {c['slow_noise_rms_mv_max']:.3f}")
    delta = features["vm_delta_mv"]
    if not np.isnan(delta) and delta > c["vm_delta_mv_max"]:
        tags.append(f"Vm delta: {delta:.3f} above threshold:{c['vm_delta_mv_max']:.3f}")
    return tags


def evaluate(
    v_mv: np.ndarray,
    i_pa: np.ndarray,
    hz: float,
    stimulus_name: str,
    criteria: dict[str, float] | None = None,
) -> dict[str, Any]:
    """QC of one sweep from its arrays: the :data:`QC_COLUMNS` as a dict."""
    is_ramp = stimulus_name in RAMP_NAMES
    row: dict[str, Any] = dict.fromkeys(QC_FEATURES, np.nan)
    if stimulus_name in NOT_QCED_NAMES:
        tags = [f"not QC'd: IPFX excludes {stimulus_name!r} sweeps from sweep QC"]
    else:
        tags = integrity_tags(v_mv, i_pa, hz, is_ramp)
        row.update(stimulus_features(i_pa[: _recording_end(v_mv) + 1], hz))
        if not tags:
            row.update(qc_features(v_mv, i_pa, hz, is_ramp))
            tags = fail_tags(row, is_ramp, criteria)
    row["passed"] = not tags
    row["workflow_state"] = "auto_passed" if not tags else "auto_failed"
    row["fail_tags"] = tags
    return row


def sweep_qc(
    ds: xr.Dataset, sweep_number: int, criteria: dict[str, float] | None = None
) -> dict[str, Any]:
    """QC of one sweep of a ``celltypes_ephys`` Dataset (reads only that sweep's chunks).

    Returns the :data:`QC_COLUMNS` as a dict: the QC features (mV, s, pA), ``passed``,
    ``workflow_state`` and ``fail_tags`` (list of str, IPFX's wording). ``criteria`` overrides
    entries of :data:`QC_CRITERIA`. Raises KeyError for a sweep that does not exist.
    """
    sweep = celltypes.get_sweep(ds, sweep_number)
    name = str(celltypes.get_sweep_metadata(ds, sweep_number).get("aibs_stimulus_name", ""))
    if str(sweep["stimulus_unit"]) not in _AMPS:
        row: dict[str, Any] = dict.fromkeys(QC_FEATURES, np.nan)
        tag = f"not QC'd: stimulus_unit {sweep['stimulus_unit']!r} is not a current clamp in Amps"
        return {**row, "passed": False, "workflow_state": "auto_failed", "fail_tags": [tag]}
    v = np.asarray(sweep["response"], dtype=np.float64) * 1e3
    i = np.asarray(sweep["stimulus"], dtype=np.float64) * 1e12
    return evaluate(v, i, float(sweep["sampling_rate"]), name, criteria)


#: QC tables computed once per Dataset object (default criteria only).
_TABLES: dict[int, pd.DataFrame] = {}


def sweep_qc_table(ds: xr.Dataset, criteria: dict[str, float] | None = None) -> pd.DataFrame:
    """:func:`sweep_qc` of every sweep, indexed by ``sweep_number`` (the :data:`QC_COLUMNS`).

    Computed when first asked for, reading one sweep at a time; with the default criteria the
    table is kept for the Dataset object (a copy is returned).
    """
    key = id(ds)
    if criteria is None and key in _TABLES:
        return _TABLES[key].copy()
    numbers = celltypes.get_sweep_numbers(ds)
    rows = [sweep_qc(ds, n, criteria) for n in numbers]
    table = pd.DataFrame(rows, index=pd.Index(numbers, name="sweep_number"), columns=QC_COLUMNS)
    table["passed"] = table["passed"].astype(bool)
    if criteria is None:
        _TABLES[key] = table
        weakref.finalize(ds, _TABLES.pop, key, None)
    return table.copy()


def passed_sweep_numbers(ds: xr.Dataset) -> list[int]:
    """Numbers of the sweeps that pass QC (:func:`sweep_qc_table`)."""
    table = sweep_qc_table(ds)
    return [int(n) for n in table.index[table["passed"]]]
