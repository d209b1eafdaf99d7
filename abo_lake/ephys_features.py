"""Electrophysiology features of Cell Types sweeps, named as Allen's ``ephys_features.csv``.

IPFX (Allen's extractor) cannot be a dependency: ipfx 2.1.2 pins ``pynwb==3.1.2`` and
``ruamel-yaml<0.18`` against this project's pynwb 4.2 and ruamel.yaml 0.19 (see DESIGN.md,
"Electrophysiology features"). Spikes are detected with eFEL (``peak_indices`` above -30 mV,
IPFX's ``min_peak``, on the sweep at its own sampling rate); each spike and each cell is then
measured with IPFX 2.1.2's definitions, so that the values can be checked against IPFX run on
the source file (``tests/test_ephys_features.py``):

- dV/dt is that of the response low-passed by a 4-pole Bessel filter at 10 kHz (forward and
  backward), in mV/ms; ``upstroke``/``downstroke`` are its maximum before / minimum after the
  peak, ``threshold`` the last sample before the upstroke where dV/dt is at most 5 % of the
  sweep's mean upstroke; ``trough`` the minimum between the peak and the next threshold;
  ``fast_trough``, ``adp`` and ``slow_trough`` IPFX's trough details (:func:`_trough_details`:
  the end of the downstroke, an after-depolarisation seen in a 1 kHz dV/dt, the later minimum
  of a "detour" reset; ``isi_type`` "direct" or "detour");
- per long-square sweep: ``avg_rate`` (spikes per s of the step), ``latency`` (first threshold
  from the step onset, s), ``mean_isi``, ``adapt`` (mean of (ISI[k+1]-ISI[k])/(ISI[k+1]+ISI[k])),
  ``v_baseline`` (mean over 100 ms before the onset), ``peak_deflect`` (minimum during the step),
  ``sag`` ((V at peak deflection, 5 ms mean - last 30 ms mean) / (that - 30 ms baseline));
- per cell: rheobase = the lowest positive step that spikes; the "thumbnail" (IPFX's hero) sweep
  the first spiking one 39-61 pA above it; ``f_i_curve_slope`` the least-squares slope of rate
  against amplitude over spiking sweeps (Hz/pA); ``ri``/``input_resistance_mohm`` the slope of
  peak deflection against current over non-spiking steps in (-100, 0) pA (MOhm); ``tau`` the mean
  single-exponential time constant of those sweeps (ms, fitted from 10 % of the deflection to the
  median time of peak deflection); ``sag``/``vm_for_sag`` from the non-spiking step whose peak
  deflection is closest to -100 mV; ``vrest`` the mean ``v_baseline``; ``*_long_square`` the
  first spike of the rheobase sweep and ``*_ramp`` the first spike of the ramps (averaged).

Only sweeps that pass IPFX's sweep QC (:mod:`abo_lake.sweep_qc`) enter the cell features and
the f-I curve, as IPFX's pipeline drops failed sweeps before feature extraction.

Times ``*_t_*`` are s from the sweep start (IPFX's pipeline counts from the experiment
epoch). Every column equals IPFX 2.1.2 to a relative 1e-5 (float32 vs float64 input), spike
times on the same samples.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import optimize, signal

from abo_lake import celltypes, sweep_qc

__all__ = [
    "CELL_FEATURES",
    "cell_features",
    "ephys_features_table",
    "features_frame",
    "fi_curve",
    "long_square_features",
    "spike_features",
    "stimulus_window",
    "trace_spike_features",
]

#: ``ephys_features.csv`` columns this module fills, with units.
CELL_FEATURES: dict[str, str] = {
    "adaptation": "adaptation index of the thumbnail sweep's ISIs",
    "avg_isi": "mean ISI of the thumbnail sweep, ms",
    "f_i_curve_slope": "slope of firing rate against step amplitude, Hz/pA",
    "input_resistance_mohm": "input resistance from hyperpolarising steps, MOhm",
    "latency": "first threshold of the rheobase sweep from step onset, s",
    "rheobase_sweep_number": "lowest positive long square that spikes",
    "ri": "same as input_resistance_mohm (IPFX's name)",
    "sag": "sag fraction of the step closest to -100 mV",
    "tau": "membrane time constant, ms",
    "thumbnail_sweep_number": "IPFX's hero sweep: 39-61 pA above rheobase",
    "vm_for_sag": "peak deflection of the sag sweep, mV",
    "vrest": "mean pre-step baseline of the long squares, mV",
    **{
        f"{name}_{protocol}": unit
        for protocol in ("long_square", "ramp")
        for name, unit in [
            ("threshold_i", "current at threshold, pA"),
            ("threshold_t", "s"),
            ("threshold_v", "mV"),
            ("peak_t", "s"),
            ("peak_v", "mV"),
            ("trough_t", "s"),
            ("trough_v", "mV"),
            ("fast_trough_t", "s"),
            ("fast_trough_v", "mV"),
            ("slow_trough_t", "s"),
            ("slow_trough_v", "mV"),
            ("upstroke_downstroke_ratio", "upstroke / -downstroke"),
        ]
    },
}

_FILTER_KHZ = 10.0  # IPFX's Bessel cutoff for dV/dt
_THRESH_FRAC = 0.05  # IPFX: threshold at 5 % of the upstroke
_MIN_PEAK_MV = -30.0  # IPFX's min_peak
_HEAVY_FILTER_KHZ = 1.0  # IPFX's trough-detail filter
_TERM_FRAC = 0.01  # fast trough: dV/dt back to 1 % of the downstroke
_ADP_THRESH = 0.5  # mV/ms
_TROUGH_TOL_MV = 0.5
_FLAT_INTERVAL_S = 0.002
_ADP_MAX_DT_S = 0.005
_ADP_MAX_DV_MV = 10.0
_SUBTHRESH_MIN_PA = -100.0
_SAG_TARGET_MV = -100.0
_HERO_OFFSET_PA = (39.0, 61.0)
_AMPS = {"Amps", "A", "amperes", "Amperes"}
_EFEL = threading.Lock()  # eFEL's settings are process-global


def _trace(ds: xr.Dataset, sweep_number: int) -> dict[str, Any]:
    """One sweep in IPFX's units: t (s), v (mV), i (pA); checks the stimulus unit."""
    sweep = celltypes.get_sweep(ds, sweep_number)
    unit = str(sweep["stimulus_unit"])
    if unit not in _AMPS:
        raise ValueError(
            f"specimen {ds.attrs.get('specimen_id')} sweep {sweep_number}: stimulus_unit is "
            f"{unit!r}; features need a current clamp stimulus in Amps"
        )
    rate = float(sweep["sampling_rate"])
    if not np.isfinite(rate) or rate <= 2e3 * _FILTER_KHZ:
        raise ValueError(
            f"specimen {ds.attrs.get('specimen_id')} sweep {sweep_number}: sampling_rate "
            f"{rate} Hz is too low for the {_FILTER_KHZ:g} kHz dV/dt filter"
        )
    v = np.asarray(sweep["response"], dtype=np.float64) * 1e3
    return {
        "t": np.arange(v.size) / rate,
        "v": v,
        "i": np.asarray(sweep["stimulus"], dtype=np.float64) * 1e12,
        "rate": rate,
        "index_range": sweep["index_range"],
        "sweep_number": int(sweep_number),
    }


def stimulus_window(ds: xr.Dataset, sweep_number: int) -> tuple[float, float]:
    """Onset and offset (s from the sweep start) of the stimulus after the test pulse: its first
    and last non-zero sample in the experiment epoch.

    Raises
    ------
    ValueError
        When the experiment epoch has no stimulus, naming the sweep.
    """
    tr = _trace(ds, sweep_number)
    return _window(tr)


def _window(tr: dict[str, Any]) -> tuple[float, float]:
    first = int(tr["index_range"][0])
    nz = np.flatnonzero(tr["i"][first:] != 0)
    if not nz.size:
        raise ValueError(f"sweep {tr['sweep_number']}: no stimulus in the experiment epoch")
    return (first + nz[0]) / tr["rate"], (first + nz[-1] + 1) / tr["rate"]


def _dvdt(v: np.ndarray, rate: float, khz: float = _FILTER_KHZ) -> np.ndarray:
    b, a = signal.bessel(4, khz * 1e3 / (rate / 2.0), "low")
    return np.diff(signal.filtfilt(b, a, v)) * rate * 1e-3


def _trough_details(
    tr: dict[str, Any], dvdt: np.ndarray, rows: list[dict[str, Any]], end_index: int
) -> None:
    """IPFX's ``analyze_trough_details`` (in place on ``rows``): ``fast_trough_index`` where
    dV/dt after the downstroke recovers to 1 % of it, then an ADP (1 kHz dV/dt above
    0.5 mV/ms within 2 ms, back to 0, 0.5 mV above the later minimum, at most 10 mV and 5 ms
    from the fast trough) or a "detour" (Vm falls 0.5 mV below the fast trough) gives
    ``slow_trough_index``; NaN for "direct" resets and, as IPFX, for the last spike."""
    v, t = tr["v"], tr["t"]
    heavy = _dvdt(v, tr["rate"], _HEAVY_FILTER_KHZ)
    for k, row in enumerate(rows):
        peak = row["peak_index"]
        nxt = rows[k + 1]["threshold_index"] if k + 1 < len(rows) else end_index
        row.update(fast_trough_index=np.nan, adp_index=np.nan, slow_trough_index=np.nan)
        row["isi_type"] = None
        if nxt <= peak:
            continue
        down = peak + int(np.argmin(dvdt[peak:nxt]))
        ended = np.flatnonzero(dvdt[down:nxt] >= _TERM_FRAC * dvdt[down])
        if not ended.size:
            continue
        term = down + int(ended[0])
        row["fast_trough_index"] = term
        kind, slow = "direct", None
        over = np.flatnonzero(heavy[term:nxt] >= _ADP_THRESH)
        if over.size and t[term + over[0]] - t[term] < _FLAT_INTERVAL_S:
            cross = term + int(over[0])
            back = np.flatnonzero(heavy[cross:nxt] <= 0)
            if back.size:
                adp = cross + int(back[0])
                low = adp + int(np.argmin(v[adp:nxt]))
                if (
                    v[adp] - v[low] >= _TROUGH_TOL_MV
                    and v[adp] - v[term] <= _ADP_MAX_DV_MV
                    and t[adp] - t[term] <= _ADP_MAX_DT_S
                ):
                    row["adp_index"], kind, slow = adp, "detour", low
        if row["adp_index"] != row["adp_index"]:  # no ADP
            low = term + int(np.argmin(v[term:nxt]))
            if v[term] - v[low] >= _TROUGH_TOL_MV:
                kind, slow = "detour", low
        row["isi_type"] = kind
        if slow is not None and k + 1 < len(rows):
            row["slow_trough_index"] = slow
    if rows:  # IPFX: the last spike's ADP and slow trough are not reliable
        rows[-1]["adp_index"] = rows[-1]["slow_trough_index"] = np.nan


def _peaks(tr: dict[str, Any], start: float, end: float) -> np.ndarray:
    """Sample indices of spike peaks between ``start`` and ``end`` (eFEL ``peak_indices`` on
    the window and 5 ms either side, at the sweep's sampling interval)."""
    import efel

    rate = tr["rate"]
    lo, hi = round(start * rate), round(end * rate)
    margin = round(0.005 * rate)
    first, last = max(0, lo - margin), min(tr["v"].size, hi + margin)
    trace = {
        "T": np.arange(last - first) * (1e3 / rate),
        "V": tr["v"][first:last],
        "stim_start": [(lo - first) * 1e3 / rate],
        "stim_end": [(hi - first) * 1e3 / rate],
    }
    with _EFEL, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        efel.reset()
        efel.set_setting("Threshold", _MIN_PEAK_MV)
        efel.set_setting("interp_step", 1e3 / rate)
        found = efel.get_feature_values([trace], ["peak_indices"], raise_warnings=False)[0]
    peaks = found["peak_indices"]
    if peaks is None:
        return np.array([], dtype=np.int64)
    peaks = np.asarray(peaks, dtype=np.int64) + first
    return peaks[(peaks >= lo) & (peaks <= hi)]


def _spikes(tr: dict[str, Any], start: float, end: float) -> pd.DataFrame:
    peaks = _peaks(tr, start, end)
    cols = ["threshold", "peak", "trough", "fast_trough"]
    if not peaks.size:
        names = [f"{c}_{x}" for c in [*cols, "adp", "slow_trough"] for x in ("index", "t", "v")]
        return pd.DataFrame(columns=[*names, "threshold_i", "upstroke", "downstroke"])
    v, t, i = tr["v"], tr["t"], tr["i"]
    dvdt = _dvdt(v, tr["rate"])
    end_index = round(end * tr["rate"])
    lo = round(start * tr["rate"])
    ups, prev = [], lo
    for p in peaks:
        ups.append(prev + int(np.argmax(dvdt[prev:p])) if p > prev else int(p))
        prev = int(p)
    target = _THRESH_FRAC * float(np.mean(dvdt[ups]))  # IPFX: of the sweep's mean upstroke
    rows = []
    for k, (p, up) in enumerate(zip(peaks, ups, strict=True)):
        floor = ups[k - 1] if k else 0  # search back to the previous upstroke
        below = np.flatnonzero(dvdt[up:floor:-1] <= target)
        thr = up - int(below[0]) if below.size else floor
        rows.append({"threshold_index": thr, "peak_index": int(p), "upstroke": dvdt[up]})
    for k, row in enumerate(rows):
        p = row["peak_index"]
        stop = rows[k + 1]["threshold_index"] if k + 1 < len(rows) else end_index
        stop = max(stop, p + 1)
        trough = p + int(np.argmin(v[p:stop]))
        row["trough_index"] = trough
        row["downstroke"] = float(np.min(dvdt[p : max(trough, p + 1)]))
    _trough_details(tr, dvdt, rows, end_index)
    df = pd.DataFrame(rows)
    for c in [*cols, "adp", "slow_trough"]:
        idx = df[f"{c}_index"].to_numpy(dtype=float)
        ok = ~np.isnan(idx)
        where = np.where(ok, idx, 0).astype(np.int64)
        df[f"{c}_t"] = np.where(ok, t[where], np.nan)
        df[f"{c}_v"] = np.where(ok, v[where], np.nan)
    df["threshold_i"] = i[df["threshold_index"].to_numpy()]
    df["upstroke_downstroke_ratio"] = df["upstroke"] / -df["downstroke"]
    return df


def spike_features(
    ds: xr.Dataset,
    sweep_number: int,
    start: float | None = None,
    end: float | None = None,
) -> pd.DataFrame:
    """One row per spike of a sweep, IPFX's ``SpikeFeatureExtractor`` columns.

    ``threshold_{index,t,v,i}``, ``peak_*``, ``trough_*``, ``fast_trough_*``, ``adp_*``,
    ``slow_trough_*`` (t in s from the sweep start, v in mV, i in pA; NaN where IPFX finds
    none), ``isi_type``, ``upstroke``/``downstroke`` (mV/ms) and
    ``upstroke_downstroke_ratio``; between ``start`` and ``end`` (s; default the stimulus
    window, :func:`stimulus_window`). Raises KeyError for a sweep that does not exist and
    ValueError for a stimulus not in Amps.
    """
    tr = _trace(ds, sweep_number)
    if start is None or end is None:
        w0, w1 = _window(tr)
        start, end = (w0 if start is None else start), (w1 if end is None else end)
    return _spikes(tr, start, end)


def trace_spike_features(
    v_mv: np.ndarray, i_pa: np.ndarray, rate: float, start: float, end: float
) -> pd.DataFrame:
    """:func:`spike_features` of any trace: ``v_mv`` (mV) and ``i_pa`` (pA) sampled at
    ``rate`` (Hz) from time 0, spikes between ``start`` and ``end`` (s)."""
    v = np.asarray(v_mv, dtype=np.float64)
    tr = {
        "t": np.arange(v.size) / rate,
        "v": v,
        "i": np.asarray(i_pa, dtype=np.float64),
        "rate": float(rate),
        "index_range": (0, v.size - 1),
        "sweep_number": -1,
    }
    return _spikes(tr, start, end)


def _mean_window(v: np.ndarray, rate: float, t0: float, t1: float) -> float:
    return float(v[round(t0 * rate) : round(t1 * rate)].mean())


def _tau(tr: dict[str, Any], start: float, end: float, fit_end: float) -> float:
    """IPFX's ``subthresh_features.time_constant`` (s); NaN when the fit is poor."""
    v, t, rate = tr["v"], tr["t"], tr["rate"]
    lo, hi = round(start * rate), round(end * rate)
    peak = lo + int(np.argmin(v[lo:hi]))
    peak = min(peak, round(fit_end * rate))
    base = _mean_window(v, rate, start - 0.1, start)
    noise = v[round((start - 0.1) * rate) : lo].std()
    if noise > 0 and abs(base - v[peak]) / noise < 20:
        return float("nan")
    fit_start = lo + int(np.flatnonzero(v[lo:] <= 0.1 * (v[peak] - base) + base)[0])
    tw, vw = t[fit_start:peak] - t[fit_start], v[fit_start:peak]

    def curve(x: np.ndarray, a: float, inv_tau: float, y0: float) -> np.ndarray:
        return y0 + a * np.exp(-inv_tau * x)

    try:
        popt, _ = optimize.curve_fit(curve, tw, vw, p0=(v[fit_start] - v[peak], 50.0, v[peak]))
    except RuntimeError:
        return float("nan")
    if np.sqrt(np.mean((curve(tw, *popt) - vw) ** 2)) > 1.0:
        return float("nan")
    return float(1.0 / popt[1])


def long_square_features(ds: xr.Dataset) -> pd.DataFrame:
    """One row per Long Square sweep (indexed by ``sweep_number``): ``stim_amp`` (pA),
    ``avg_rate`` (Hz), ``latency`` (s), ``mean_isi`` (s), ``adapt``, ``v_baseline``,
    ``peak_deflect`` (mV), ``peak_deflect_t`` (s), ``sag``, the ``spikes`` table of each and
    ``passed`` (IPFX's sweep QC, :mod:`abo_lake.sweep_qc`; the cell features use only the
    sweeps that pass, as IPFX's pipeline)."""
    return _long_squares(ds, {})


def _long_squares(ds: xr.Dataset, traces: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """:func:`long_square_features`, keeping each sweep's samples in ``traces`` (read once)."""
    numbers = [int(n) for n in celltypes.sweeps_by_stimulus(ds, "Long Square", qc=False).index]
    rows = []
    for n in numbers:
        tr = traces[n] = _trace(ds, n)
        start, end = _window(tr)
        spikes = _spikes(tr, start, end)
        rate = tr["rate"]
        lo, hi = round(start * rate), round(end * rate)
        thr_t = spikes["threshold_t"].to_numpy(dtype=float)
        isis = np.diff(thr_t)
        deflect = lo + int(np.argmin(tr["v"][lo:hi]))
        v_peak = _mean_window(tr["v"], rate, deflect / rate - 0.0025, deflect / rate + 0.0025)
        base30 = _mean_window(tr["v"], rate, start - 0.03, start)
        steady = _mean_window(tr["v"], rate, end - 0.03, end)
        rows.append(
            {
                "sweep_number": n,
                "stim_amp": float(tr["i"][lo:hi].mean()),
                "start": start,
                "end": end,
                "avg_rate": float(((thr_t >= start) & (thr_t <= end)).sum() / (end - start)),
                "latency": float(thr_t[0] - start) if thr_t.size else np.nan,
                "mean_isi": float(isis.mean()) if isis.size else np.nan,
                "adapt": float(np.mean(np.diff(isis) / (isis[1:] + isis[:-1])))
                if isis.size > 1
                else np.nan,
                "v_baseline": _mean_window(tr["v"], rate, start - 0.1, start),
                "peak_deflect": float(tr["v"][deflect]),
                "peak_deflect_t": deflect / rate,
                "sag": (v_peak - steady) / (v_peak - base30),
                "spikes": spikes,
                "passed": sweep_qc.evaluate(tr["v"], tr["i"], rate, "Long Square")["passed"],
            }
        )
    return pd.DataFrame(rows).set_index("sweep_number")


def fi_curve(ds: xr.Dataset) -> pd.DataFrame:
    """Firing rate (Hz) against step amplitude (pA) of the Long Square sweeps that pass QC, by
    amplitude (the sweeps IPFX's f-I slope is fitted to)."""
    table = long_square_features(ds)
    return table.loc[table["passed"], ["stim_amp", "avg_rate"]].sort_values("stim_amp")


def _spike_record(spikes: pd.DataFrame, protocol: str) -> dict[str, float]:
    names = ["threshold_i", "threshold_t", "threshold_v", "peak_t", "peak_v", "trough_t"]
    names += ["trough_v", "fast_trough_t", "fast_trough_v", "slow_trough_t", "slow_trough_v"]
    names += ["upstroke_downstroke_ratio"]
    return {f"{n}_{protocol}": float(spikes[n]) for n in names}


def cell_features(ds: xr.Dataset) -> dict[str, Any]:
    """The specimen's ``ephys_features.csv`` row (:data:`CELL_FEATURES`), IPFX's definitions.

    Only sweeps that pass IPFX's sweep QC (:mod:`abo_lake.sweep_qc`) are used, as IPFX's
    pipeline drops the failed ones before extracting features.

    Raises
    ------
    ValueError
        When no Long Square sweep passes QC, none that passes spikes or none is a
        hyperpolarising non-spiking step in (-100, 0) pA (IPFX's ``FeatureError`` cases),
        naming the specimen.
    """
    sid = ds.attrs.get("specimen_id")
    _check_protocol(ds)
    traces: dict[int, dict[str, Any]] = {}
    table = _long_squares(ds, traces)
    if not table["passed"].any():
        raise ValueError(
            f"specimen {sid}: no Long Square sweep passed QC (sweeps {table.index.tolist()}; "
            "see .celltypes.sweeps['fail_tags'])"
        )
    table = table[table["passed"]]
    spiking = table[table["avg_rate"] > 0].sort_values("stim_amp")
    quiet = table[table["avg_rate"] == 0]
    rheo = spiking[spiking["stim_amp"] > 0]
    if rheo.empty:
        raise ValueError(f"specimen {sid}: no Long Square sweep with a positive step spikes")
    calc = quiet[(quiet["stim_amp"] < 0) & (quiet["stim_amp"] > _SUBTHRESH_MIN_PA)]
    if calc.empty:
        raise ValueError(
            f"specimen {sid}: no non-spiking Long Square step in ({_SUBTHRESH_MIN_PA:g}, 0) pA "
            "for input resistance and tau"
        )
    rheobase = rheo.iloc[0]
    lo, hi = rheobase["stim_amp"] + _HERO_OFFSET_PA[0], rheobase["stim_amp"] + _HERO_OFFSET_PA[1]
    in_range = spiking[(spiking["stim_amp"] > lo) & (spiking["stim_amp"] < hi)]
    hero = (
        in_range.iloc[0]
        if len(in_range)
        else spiking.loc[(spiking["stim_amp"] - lo).abs().idxmin()]
    )
    amps, rates = spiking["stim_amp"].to_numpy(), spiking["avg_rate"].to_numpy()
    slope = np.linalg.lstsq(np.vstack([amps, np.ones_like(amps)]).T, rates, rcond=None)[0][0]
    sag_row = quiet.iloc[int(np.argmin(np.abs(quiet["peak_deflect"] - _SAG_TARGET_MV)))]
    median_peak_t = float(np.median(calc["peak_deflect_t"]))
    taus = [_tau(traces[int(n)], r["start"], r["end"], median_peak_t) for n, r in calc.iterrows()]
    i_at_peak, v_peak = [], []
    for n, r in calc.iterrows():
        tr = traces[int(n)]
        k = round(r["peak_deflect_t"] * tr["rate"])
        i_at_peak.append(tr["i"][k])
        v_peak.append(r["peak_deflect"])
    ri = _slope(i_at_peak, v_peak, calc, ds) * 1e3
    record: dict[str, Any] = {
        "specimen_id": sid,
        "rheobase_sweep_number": int(rheobase.name),
        "thumbnail_sweep_number": int(hero.name),
        "vrest": float(np.nanmean(table["v_baseline"])),
        "ri": ri,
        "input_resistance_mohm": ri,
        "sag": float(sag_row["sag"]),
        "vm_for_sag": float(sag_row["peak_deflect"]),
        "tau": float(np.nanmean(taus)) * 1e3,
        "f_i_curve_slope": float(slope),
        "adaptation": float(hero["adapt"]),
        "latency": float(hero["latency"]),
        "avg_isi": float(hero["mean_isi"]) * 1e3,
        **_spike_record(rheobase["spikes"].iloc[0], "long_square"),
    }
    record.update(_ramp_record(ds))
    return record


def _check_protocol(ds: xr.Dataset) -> None:
    """Fail before reading samples when the recorded step amplitudes cannot give the features."""
    sid = ds.attrs.get("specimen_id")
    steps = celltypes.sweeps_by_stimulus(ds, "Long Square", qc=False)
    amps = steps.get("stimulus_absolute_amplitude")
    if amps is None or not np.isfinite(amps.to_numpy(dtype=float)).all():
        return
    if not ((amps < 0) & (amps > _SUBTHRESH_MIN_PA)).any():
        raise ValueError(
            f"specimen {sid}: no Long Square step in ({_SUBTHRESH_MIN_PA:g}, 0) pA "
            f"(stimulus_absolute_amplitude {sorted(amps.tolist())}) for input resistance and tau"
        )


def _slope(i: list[float], v: list[float], calc: pd.DataFrame, ds: xr.Dataset) -> float:
    """IPFX's ``input_resistance`` fit (mV/pA): one sweep is joined by (0 pA, its baseline)."""
    iv, vv = np.asarray(i, dtype=float), np.asarray(v, dtype=float)
    if iv.size == 1:
        iv = np.append(iv, 0.0)
        vv = np.append(vv, calc["v_baseline"].iloc[0])
    return float(np.linalg.lstsq(np.vstack([iv, np.ones_like(iv)]).T, vv, rcond=None)[0][0])


def _ramp_record(ds: xr.Dataset) -> dict[str, float]:
    """``*_ramp`` columns: the first spike of each ramp sweep that passes QC, averaged (IPFX
    ``mean_spike_0``)."""
    if "Ramp" not in celltypes.stimulus_names(ds):
        return {}
    firsts = []
    for n in celltypes.sweeps_by_stimulus(ds, "Ramp", qc=False).index:
        tr = _trace(ds, int(n))
        if not sweep_qc.evaluate(tr["v"], tr["i"], tr["rate"], "Ramp")["passed"]:
            continue
        start, _ = _window(tr)
        spikes = _spikes(tr, start, float(tr["t"][-1]))
        if len(spikes):
            firsts.append(spikes.iloc[0])
    if not firsts:
        return {}
    mean = pd.DataFrame(firsts).mean(numeric_only=True)
    return _spike_record(mean, "ramp")


def ephys_features_table(ds: xr.Dataset) -> pd.DataFrame:
    """:func:`cell_features` as a one-row table indexed by ``specimen_id`` (the release table
    ``ephys_features`` concatenates these rows; a specimen whose features cannot be computed,
    such as one without hyperpolarising steps, gets a row of NaN with the reason in
    ``feature_error``)."""
    try:
        record = cell_features(ds)
    except (ValueError, KeyError) as err:
        record = {"specimen_id": ds.attrs.get("specimen_id"), "feature_error": str(err)}
    return features_frame([record])


def features_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """:func:`cell_features` records as ``ephys_features`` rows: indexed by ``specimen_id``,
    the :data:`CELL_FEATURES` columns then ``feature_error`` ("" when computed)."""
    rows = [{"feature_error": "", **r} for r in records]
    df = pd.DataFrame(rows).set_index("specimen_id")
    return df.reindex(columns=[*CELL_FEATURES, "feature_error"])
