"""AllenSDK's Visual Coding 2P stimulus analyses (``allensdk.brain_observatory``) on a lake.

The same definitions as AllenSDK 2.16.2's ``DriftingGratings``, ``StaticGratings``,
``NaturalScenes`` and ``NaturalMovie`` (``StimulusAnalysis`` subclasses), written again,
vectorised and lazy:

- a sweep is the corrected fluorescence of one presentation from ``interlength`` frames before
  its start to ``sweeplength + interlength`` frames after it, as percent change from the mean
  of the ``interlength`` frames before (float32, as AllenSDK computes it); natural movies take
  dF/F of each repeat as it is;
- ``mean_sweep_response`` is its mean over ``sweeplength + extralength`` frames from the start,
  ``pval`` the one-way ANOVA of the frames before against those; ``dx`` the running speed in the
  same window (NaN before the wheel record starts);
- ``response`` holds per condition the mean, the standard error (ddof 1) and the number of
  sweeps with ``pval`` under AllenSDK's Bonferroni threshold;
- ``peak`` holds AllenSDK's per-cell columns (``ori_dg``, ``tf_dg``, ``osi_dg``, ...; condition
  columns are *indices* into the condition values, as AllenSDK's), and :func:`stimulus_metrics`
  AllenSDK's ``SessionAnalysis`` metric names (``pref_dir_dg`` in degrees, ``p_dg``,
  ``g_osi_dg``, ``tfdi_dg``, ``pref_image_ns``, ``reliability_nm1``, ...).

Window lengths: drifting gratings 60 frames with 30 before and after; static gratings and
natural scenes the second presentation's length ``L`` with ``4 L`` before and after and ``2 L``
averaged. Only the traces of the cells asked for are read, and of them only the time chunks the
windows cover (:func:`abo_lake.ophys._sample`); the per-cell statistics run as one dask task
per cell chunk, so a ``distributed`` client spreads them over its workers.

Locally sparse noise receptive fields (``LocallySparseNoise``, the ``rf_*_lsn`` metrics) are in
:mod:`abo_lake.vc2p_receptive_fields`; :func:`stimulus_analysis` and :func:`stimulus_metrics`
reach them too. AllenSDK's speed tuning (``get_speed_tuning``, ``binned_*``, ``peak_run``) is
in :mod:`abo_lake.vc2p_speed_tuning`, whose ``SpeedTuningMixin`` both :class:`StimulusAnalysis`
and ``LocallySparseNoise`` inherit (which also builds its ``sweep_response`` with
:func:`_sweep_response` and its sweep means with :func:`_block`). Not here (yet):
the noise/signal correlations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from abo_lake import ophys, vc2p_receptive_fields, vc2p_speed_tuning
from abo_lake.errors import SchemaError
from abo_lake.scheduling import compute

__all__ = [
    "ANALYSES",
    "StimulusAnalysis",
    "stimulus_analysis",
    "stimulus_metrics",
]

CELL, TIME, PRESENTATION = ophys.CELL, ophys.TIME, ophys.PRESENTATION
SWEEP_FRAME = "sweep_frame"
STAT = "stat"
#: stimulus -> AllenSDK class whose analysis it follows.
ANALYSES = {
    "drifting_gratings": "DriftingGratings",
    "static_gratings": "StaticGratings",
    "natural_scenes": "NaturalScenes",
    "natural_movie_one": "NaturalMovie",
    "natural_movie_two": "NaturalMovie",
    "natural_movie_three": "NaturalMovie",
}
_MOVIE_SHORT = {
    "natural_movie_one": "nm1",
    "natural_movie_two": "nm2",
    "natural_movie_three": "nm3",
}
#: AllenSDK's ``peak`` columns per stimulus (``cell_specimen_id`` is the index here).
PEAK_COLUMNS = {
    "drifting_gratings": [
        "ori_dg",
        "tf_dg",
        "reliability_dg",
        "osi_dg",
        "dsi_dg",
        "peak_dff_dg",
        "ptest_dg",
        "p_run_dg",
        "run_modulation_dg",
        "cv_os_dg",
        "cv_ds_dg",
        "tf_index_dg",
    ],
    "static_gratings": [
        "ori_sg",
        "sf_sg",
        "phase_sg",
        "reliability_sg",
        "osi_sg",
        "peak_dff_sg",
        "ptest_sg",
        "time_to_peak_sg",
        "p_run_sg",
        "cv_os_sg",
        "run_modulation_sg",
        "sf_index_sg",
    ],
    "natural_scenes": [
        "scene_ns",
        "reliability_ns",
        "peak_dff_ns",
        "ptest_ns",
        "p_run_ns",
        "run_modulation_ns",
        "time_to_peak_ns",
        "image_selectivity_ns",
    ],
}
_INDEX_COLUMNS = {"ori_dg", "tf_dg", "ori_sg", "sf_sg", "phase_sg", "scene_ns"}


@dataclass(frozen=True)
class _Design:
    """One stimulus's conditions and windows, as AllenSDK's ``populate_stimulus_table``."""

    stimulus: str
    table: pd.DataFrame  # AllenSDK's stim_table: start, end, condition columns
    sweeplength: int
    interlength: int
    extralength: int
    factors: tuple[str, ...]  # condition columns (response dims)
    levels: tuple[np.ndarray, ...]  # their values, blank (0 or -1) first
    rate: float  # AllenSDK's acquisition_rate: 1 / (t[1] - t[0])


def _design(ds: xr.Dataset, stimulus: str) -> _Design:
    if stimulus not in ANALYSES:
        raise ValueError(
            f"no AllenSDK stimulus analysis for {stimulus!r}; choose one of {sorted(ANALYSES)}"
        )
    shown = _SESSIONS_OF.get(stimulus, "Visual Coding 2P three_session")
    rows = ophys.presentations_of(ds, stimulus, f"{stimulus} is shown in {shown} experiments")
    t = np.asarray(ds.indexes[TIME], dtype=np.float64)
    if len(t) < 2:
        raise ValueError(
            f"{stimulus}: the experiment has {len(t)} ophys timestamp(s) (a truncated file?); "
            "AllenSDK's analysis takes the frame rate from the first two"
        )
    rate = 1.0 / (t[1] - t[0])
    st = pd.DataFrame(
        {
            "start": rows["start_frame"].to_numpy(dtype=np.int64),
            "end": rows["end_frame"].to_numpy(dtype=np.int64),
        },
        index=pd.Index(rows.index, name=PRESENTATION),
    )
    if stimulus == "drifting_gratings":
        factors = ("orientation", "temporal_frequency")
        for f in factors:
            st[f] = rows[f].fillna(0.0).to_numpy(dtype=np.float64)
        levels = tuple(np.unique(st[f]).astype(int) for f in factors)
        return _Design(stimulus, st, 60, 30, 0, factors, levels, rate)
    if len(st) < 2:
        raise ValueError(f"{stimulus} has {len(st)} presentation(s); AllenSDK's analysis needs 2+")
    if stimulus == "static_gratings":
        factors = ("orientation", "spatial_frequency", "phase")
        for f in factors:
            st[f] = rows[f].fillna(0.0).to_numpy(dtype=np.float64)
        levels = tuple(np.unique(st[f]) for f in factors)
    elif stimulus == "natural_scenes":
        factors = ("frame",)
        st["frame"] = rows["frame"].to_numpy(dtype=np.float64)
        levels = (np.arange(len(np.unique(st["frame"]))) - 1,)
    else:  # natural movies: one sweep per repeat, from frame 0 on
        st["frame"] = rows["frame"].to_numpy(dtype=np.float64)
        st = st[st["frame"] == 0]
        if len(st) < 2:
            raise ValueError(
                f"{stimulus} has {len(st)} repeat(s) (presentations of frame 0); AllenSDK's "
                "NaturalMovie analysis needs 2 or more (it correlates 10)"
            )
        sweeplength = int(st["start"].iloc[1] - st["start"].iloc[0])
        return _Design(stimulus, st, sweeplength, 0, 0, (), (), rate)
    sweeplength = int(st["end"].iloc[1] - st["start"].iloc[1])
    return _Design(stimulus, st, sweeplength, 4 * sweeplength, sweeplength, factors, levels, rate)


_SESSIONS_OF = {
    "drifting_gratings": "three_session_A",
    "static_gratings": "three_session_B",
    "natural_scenes": "three_session_B",
    "natural_movie_one": "three_session_A, B and C",
    "natural_movie_two": "three_session_C",
    "natural_movie_three": "three_session_A",
}


def _is_movie(d: _Design) -> bool:
    return d.stimulus in _MOVIE_SHORT


def _windows(ds: xr.Dataset, d: _Design) -> np.ndarray:
    """(sweeps, frames) ophys frame indices of each sweep's window, checked to be inside."""
    n_t = ds.sizes[TIME]
    if _is_movie(d):
        offsets = np.arange(d.sweeplength)
    else:
        offsets = np.arange(-d.interlength, d.sweeplength + d.interlength)
    idx = d.table["start"].to_numpy()[:, None] + offsets[None, :]
    bad = (idx[:, 0] < 0) | (idx[:, -1] >= n_t)
    if bad.any():
        ids = d.table.index[bad].tolist()
        raise ValueError(
            f"{d.stimulus}: the sweep window ({offsets[0]:+d}..{offsets[-1]:+d} frames) of "
            f"{PRESENTATION} {ids[:10]} falls outside the recording's frames 0..{n_t - 1}"
        )
    return idx


def _window_speed(
    speed: np.ndarray, idx: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Running speed in each window (NaN where the wheel has no sample) and AllenSDK's ``dx``:
    its float32 mean over window frames ``lo:hi`` (NaN if any is NaN)."""
    windows = np.asarray(speed)[idx]
    return windows, windows[:, lo:hi].mean(axis=-1)


def _select(ds: xr.Dataset, cells: Sequence[int] | None) -> xr.Dataset:
    if cells is None:
        return ds
    ids = np.atleast_1d(np.asarray(cells, dtype=np.int64))
    known = ds.indexes[CELL]
    missing = ids[~np.isin(ids, known)]
    if len(missing):
        raise KeyError(f"cell_specimen_id {missing.tolist()} not in this experiment")
    return ds.sel({CELL: ids})


# --------------------------------------------------------------------------- statistics


def _pearson_upper_mean(x: np.ndarray) -> np.ndarray:
    """Mean Pearson r over distinct pairs of rows, per cell: x (cells, trials, frames)."""
    x = x.astype(np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(xc, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = xc / norm
    r = np.clip(z @ np.swapaxes(z, -1, -2), -1.0, 1.0)
    i, j = np.triu_indices(x.shape[1], k=1)
    pairs = r[:, i, j]
    out = np.full(x.shape[0], np.nan)
    ok = ~np.all(np.isnan(pairs), axis=1) if pairs.size else np.zeros(x.shape[0], bool)
    out[ok] = np.nanmean(pairs[ok], axis=1)
    return out


def _run_modulation(
    run: np.ndarray, still: np.ndarray, minimum: int, wide_negative: bool = False
) -> tuple[float, float]:
    """AllenSDK's (p_run, run_modulation) of one cell's sweeps at its preferred condition
    (NaN unless more than ``minimum`` running and still sweeps)."""
    if not (len(run) > minimum and len(still) > minimum):
        return np.nan, np.nan
    p = _welch_p(run, still)
    m_run, m_still = run.mean(), still.mean()  # float32, as pandas gives them
    if m_run > m_still:
        return p, float((m_run - m_still) / np.abs(m_run))  # float32 throughout
    if m_run < m_still:
        if wide_negative:  # DG's ``-1 * (a - b) / c``: float64 from ``-1 *`` on (NumPy 1 rules)
            return p, float(-1 * np.float64(m_still - m_run) / np.float64(np.abs(m_still)))
        return p, float(-1 * ((m_still - m_run) / np.abs(m_still)))  # SG, NS: float32
    return p, np.nan


def _welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's two-sided t-test p of float32 samples as SciPy 1.10 (AllenSDK's) computes it:
    means and variances in float32, the rest in float64 (NumPy 1 divides a float32 scalar by
    a Python int in float64)."""
    from scipy.stats import t as t_dist

    def var(x: np.ndarray) -> np.float64:  # scipy 1.10's _var: the float32 2nd moment * n/(n-1)
        return np.float64(np.mean((x - x.mean()) ** 2)) * np.divide(len(x), len(x) - 1)

    n1, n2 = len(a), len(b)
    vn1, vn2 = var(a) / n1, var(b) / n2
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (vn1 + vn2) ** 2 / (vn1**2 / (n1 - 1) + vn2**2 / (n2 - 1))
        df = 1.0 if np.isnan(df) else df
        t = np.float64(np.mean(a) - np.mean(b)) / np.sqrt(vn1 + vn2)
    return float(t_dist.sf(np.abs(t), df) * 2)


def _tuning_index(tuning: np.ndarray, trials: np.ndarray) -> float:
    """AllenSDK's tf_index_dg / sf_index_sg: ptp / (ptp + 2 sqrt(SSE / (n - 5))), the float32
    sum divided in float64 (NumPy 1's scalar rule)."""
    sse = np.sqrt(np.float64(np.sum((trials - trials.mean()) ** 2)) / (len(trials) - 5))
    return float(np.ptp(tuning) / (np.ptp(tuning) + 2 * sse))


def _cv(tuning: np.ndarray, angles_deg: np.ndarray, k: int) -> float:
    """AllenSDK's circular variance term |Σ r e^{ikθ}| / Σ r over positive responses."""
    r = np.where(tuning > 0, tuning, 0)
    theta = np.deg2rad(angles_deg).astype(np.float64)  # float32 degrees stay float32 radians
    return float(np.abs(np.sum(r * np.exp(1j * k * theta))) / r.sum())


def _block(d: _Design, sweeps: np.ndarray) -> dict[str, Any]:
    """Every statistic of a cell chunk: sweeps (sweep, frame, cell) as read."""
    x = np.ascontiguousarray(np.transpose(sweeps, (2, 0, 1)))  # (cell, sweep, frame)
    if _is_movie(d):
        return {"sweeps": x}
    inter, window = d.interlength, d.sweeplength + d.extralength
    base = x[..., :inter].mean(axis=-1, keepdims=True)
    x = 100 * ((x / base) - 1)
    msr = x[..., inter : inter + window].mean(axis=-1)  # (cell, sweep) float32
    from scipy.stats import f_oneway

    with np.errstate(all="ignore"):
        pval = f_oneway(  # in float64, as scipy 1.10 (AllenSDK's) computes one sweep's
            x[..., :inter].astype(np.float64),
            x[..., inter : inter + window].astype(np.float64),
            axis=-1,
        ).pvalue
    return {"sweeps": x, "msr": msr, "pval": pval}


def _conditions(d: _Design) -> tuple[np.ndarray, tuple[int, ...]]:
    """Flat condition index of every sweep (-1: none) and the response shape."""
    shape = tuple(len(lv) for lv in d.levels)
    codes = []
    for f, lv in zip(d.factors, d.levels, strict=True):
        values = d.table[f].to_numpy()
        pos = np.searchsorted(lv, values)
        pos = np.clip(pos, 0, len(lv) - 1)
        codes.append(np.where(lv[pos] == values, pos, -1))
    codes = np.array(codes)
    flat = np.where((codes >= 0).all(axis=0), np.ravel_multi_index(np.maximum(codes, 0), shape), -1)
    return flat, shape


def _threshold(d: _Design) -> float:
    if d.stimulus == "drifting_gratings":
        return 0.05 / (8 * 5)
    if d.stimulus == "static_gratings":
        return 0.05 / (len(d.levels[0]) * (len(d.levels[1]) - 1))
    return 0.05 / (len(d.levels[0]) - 1)


def _response(d: _Design, msr: np.ndarray, pval: np.ndarray) -> np.ndarray:
    """AllenSDK's response: (*conditions, cell, 3) mean, sem (ddof 1), significant sweeps."""
    flat, shape = _conditions(d)
    n_cells = msr.shape[0]
    out = np.full((int(np.prod(shape)), n_cells, 3), np.nan)
    thr = _threshold(d)
    for k in range(out.shape[0]):
        rows = np.flatnonzero(flat == k)
        if len(rows) == 0:
            if d.stimulus == "natural_scenes":
                out[k, :, 2] = 0
            continue
        sub = np.ascontiguousarray(msr[:, rows])  # (cell, sweep): pandas reduces this way
        out[k, :, 0] = sub.mean(axis=-1)
        if len(rows) > 1:
            # pandas: the float64 std rounded to the column's float32, divided in float32
            std = sub.astype(np.float64).std(axis=-1, ddof=1).astype(np.float32)
            out[k, :, 1] = std / np.float32(np.sqrt(len(rows)))
        out[k, :, 2] = (pval[:, rows] < thr).sum(axis=-1)
    return out.reshape(*shape, n_cells, 3)


def _anova(groups: list[np.ndarray]) -> np.ndarray:
    """One-way ANOVA p per cell over groups of (cell, sweep) arrays."""
    from scipy.stats import f_oneway

    groups = [g for g in groups if g.shape[1]]
    with np.errstate(all="ignore"):
        return np.atleast_1d(f_oneway(*[g.astype(np.float64) for g in groups], axis=-1).pvalue)


def _peak_gratings(d: _Design, b: dict[str, Any], resp: np.ndarray, dx: np.ndarray) -> pd.DataFrame:
    msr, sweeps = b["msr"], b["sweeps"]
    dg = d.stimulus == "drifting_gratings"
    sfx = "_dg" if dg else "_sg"
    ori = d.levels[0]
    table = d.table
    # ANOVA over every non-blank condition plus the blank
    second = d.factors[1]
    groups = []
    for idx in np.ndindex(*(len(lv) for lv in d.levels)):
        if idx[1] == 0:
            continue
        rows = np.ones(len(table), bool)
        for f, lv, i in zip(d.factors, d.levels, idx, strict=True):
            rows &= table[f].to_numpy() == lv[i]
        groups.append(msr[:, rows])
    groups.append(msr[:, table[second].to_numpy() == 0])
    ptest = _anova(groups)
    records = []
    for c in range(msr.shape[0]):
        r = resp[..., c, 0]
        sub = r[:, 1:]
        pos = np.unravel_index(np.nanargmax(sub), sub.shape)
        pref = (pos[0], pos[1] + 1, *pos[2:])
        at = pref[2:]
        peak = r[pref]
        rows = np.ones(len(table), bool)
        for f, lv, i in zip(d.factors, d.levels, pref, strict=True):
            rows &= table[f].to_numpy() == lv[i]
        rec: dict[str, Any] = {}
        if dg:
            rec["ori_dg"], rec["tf_dg"] = int(pref[0]), int(pref[1])
            orth = (r[(pref[0] + 2) % 8, pref[1]] + r[(pref[0] - 2) % 8, pref[1]]) / 2
            null = r[(pref[0] + 4) % 8, pref[1]]
            rec["dsi_dg"] = (peak - null) / (peak + null)
            tuning = r[:, pref[1]]
            rec["cv_os_dg"] = _cv(tuning, ori, 2)
            rec["cv_ds_dg"] = _cv(tuning, ori, 1)
            reliable = sweeps[c, rows, 30:90]
            minimum = 2
        else:
            rec["ori_sg"], rec["sf_sg"], rec["phase_sg"] = (int(i) for i in pref)
            orth = r[(pref[0] + 3) % 6, pref[1], pref[2]]
            tuning = r[:, pref[1], pref[2]]
            # AllenSDK's static-grating orientations are the file's float32, in radians too
            rec["cv_os_sg"] = _cv(tuning, ori.astype(np.float32), 2)
            test = _mean_rows(sweeps[c, rows])
            rec["time_to_peak_sg"] = (np.argmax(test) - d.interlength) / d.rate
            reliable = sweeps[c, rows, 28:42]
            minimum = 4
        rec["osi" + sfx] = (peak - orth) / (peak + orth)
        rec["peak_dff" + sfx] = peak
        rec["ptest" + sfx] = float(ptest[c])
        m = msr[c, rows]
        dxm = dx[rows]
        rec["p_run" + sfx], rec["run_modulation" + sfx] = _run_modulation(
            m[dxm >= 1], m[dxm < 1], minimum, wide_negative=dg
        )
        rec["reliability" + sfx] = _pearson_upper_mean(reliable[None])[0]
        trials_rows = (table[second].to_numpy() != 0) & (
            table["orientation"].to_numpy() == ori[pref[0]]
        )
        if not dg:
            trials_rows &= table["phase"].to_numpy() == d.levels[2][pref[2]]
        name = "tf_index_dg" if dg else "sf_index_sg"
        rec[name] = _tuning_index(r[(pref[0], slice(1, None), *at)], msr[c, trials_rows])
        records.append(rec)
    return pd.DataFrame.from_records(records)


def _mean_rows(x: np.ndarray) -> np.ndarray:
    """Mean of sweeps (rows) as pandas takes it over a column of arrays: summed in order."""
    total = x[0].copy()
    for row in x[1:]:
        total = total + row
    return total / len(x)


def _peak_scenes(d: _Design, b: dict[str, Any], resp: np.ndarray, dx: np.ndarray) -> pd.DataFrame:
    msr, sweeps = b["msr"], b["sweeps"]
    frame = d.table["frame"].to_numpy()
    n_scenes = len(d.levels[0])
    ptest = _anova([msr[:, frame == im - 1] for im in range(n_scenes)])
    records = []
    for c in range(msr.shape[0]):
        r = resp[:, c, 0]
        nsp = int(np.argmax(r[1:]))
        rows = frame == nsp
        rec: dict[str, Any] = {"scene_ns": nsp, "peak_dff_ns": r[nsp + 1], "ptest_ns": ptest[c]}
        test = _mean_rows(sweeps[c, rows])
        rec["time_to_peak_ns"] = (np.argmax(test) - d.interlength) / d.rate
        m, dxm = msr[c, rows], dx[rows]
        rec["p_run_ns"], rec["run_modulation_ns"] = _run_modulation(m[dxm >= 1], m[dxm < 1], 4)
        rec["reliability_ns"] = _pearson_upper_mean(sweeps[c, rows, 28:42][None])[0]
        fmin, fmax = r[1:].min(), r[1:].max()
        thresh = fmin + np.arange(1000)[:, None] * ((fmax - fmin) / 1000.0)
        rtj = (r[None, 1:119] > thresh).mean(axis=1)
        rec["image_selectivity_ns"] = 1 - 2 * rtj.mean()
        records.append(rec)
    return pd.DataFrame.from_records(records)


def _peak_movie(d: _Design, b: dict[str, Any]) -> pd.DataFrame:
    sweeps = b["sweeps"]  # (cell, repeat, frame) dF/F
    short = _MOVIE_SHORT[d.stimulus]
    n = min(10, sweeps.shape[1])
    records = []
    for c in range(sweeps.shape[0]):
        records.append(
            {
                f"peak_{short}": int(np.argmax(_mean_rows(sweeps[c]))),
                f"response_reliability_{short}": _pearson_upper_mean(sweeps[c, :n][None])[0],
            }
        )
    return pd.DataFrame.from_records(records)


def _analyse(d: _Design, sweeps: np.ndarray, dx: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Statistics of one cell chunk (a dask task): msr, pval, response and peak."""
    dx_mean = dx[1]
    b = _block(d, sweeps)
    if _is_movie(d):
        return {"peak": _peak_movie(d, b)}
    resp = _response(d, b["msr"], b["pval"])
    peak_of = _peak_scenes if d.stimulus == "natural_scenes" else _peak_gratings
    return {
        "msr": b["msr"],
        "pval": b["pval"],
        "response": resp,
        "peak": peak_of(d, b, resp, dx_mean),
    }


def _sweep_response(
    raw: da.Array, d: _Design, coords: dict[str, Any], dx: np.ndarray
) -> xr.DataArray:
    """AllenSDK's ``sweep_response`` from the windows' traces ``raw`` (sweep, frame, cell) as
    read: percent change from the pre-sweep mean (movies as they are), float32, lazy; ``dx``
    (sweep, frame) the windows' running speed, a coordinate."""
    raw = raw.transpose(0, 2, 1)
    if not _is_movie(d):
        inter = d.interlength
        base = raw[..., :inter].mean(axis=-1, keepdims=True)
        raw = 100 * ((raw / base) - 1)
    coords = dict(coords)
    coords[SWEEP_FRAME] = np.arange(raw.shape[-1]) - d.interlength
    coords["dx"] = ((PRESENTATION, SWEEP_FRAME), dx)
    return xr.DataArray(
        raw,
        dims=(PRESENTATION, CELL, SWEEP_FRAME),
        coords=coords,
        name="sweep_response",
        attrs={"units": "dF/F" if _is_movie(d) else "%", "stimulus": d.stimulus},
    )


# --------------------------------------------------------------------------- public API


class StimulusAnalysis(vc2p_speed_tuning.SpeedTuningMixin):
    """AllenSDK's ``DriftingGratings(data_set)`` (and the other ``StimulusAnalysis``
    subclasses) on one lake experiment: ``stim_table``, ``sweep_response``,
    ``mean_sweep_response``, ``pval``, ``response`` and ``peak``, computed once on first use.

    Built by :func:`stimulus_analysis`. Arrays are xarray objects with named dims
    (``stimulus_presentation_id``, ``cell_specimen_id``, ``sweep_frame``, the condition
    factors and ``stat``); ``peak`` is a DataFrame indexed by ``cell_specimen_id``.
    """

    def __init__(self, ds: xr.Dataset, stimulus: str, cells: Sequence[int] | None = None):
        if "corrected_fluorescence" not in ds.data_vars and ANALYSES.get(stimulus) != (
            "NaturalMovie"
        ):
            raise SchemaError(
                f"{ANALYSES.get(stimulus, stimulus)} needs 'corrected_fluorescence' "
                "(cell_specimen_id, time), as AllenSDK's Visual Coding 2P analysis does"
            )
        self._ds = _select(ds, cells)
        self.stimulus = stimulus
        self._design = _design(self._ds, stimulus)
        self._idx = _windows(self._ds, self._design)

    def __repr__(self) -> str:
        d = self._design
        return (
            f"<{ANALYSES[self.stimulus]} · {len(d.table)} sweeps · "
            f"{self._ds.sizes[CELL]} cells · sweep {d.sweeplength} frames, "
            f"{d.interlength} before>"
        )

    @property
    def stim_table(self) -> pd.DataFrame:
        """AllenSDK's ``stim_table``: ``start``/``end`` frames and the condition columns
        (blank gratings as 0, as AllenSDK fills them; movies: the repeats' first frames)."""
        return self._design.table.copy()

    @property
    def sweeplength(self) -> int:
        """Frames of one sweep (AllenSDK's ``sweeplength``)."""
        return self._design.sweeplength

    @property
    def interlength(self) -> int:
        """Frames before (and after) a sweep (AllenSDK's ``interlength``)."""
        return self._design.interlength

    @property
    def extralength(self) -> int:
        """Frames after the sweep averaged too (AllenSDK's ``extralength``)."""
        return self._design.extralength

    @cached_property
    def _raw(self) -> da.Array:
        trace = "dff" if _is_movie(self._design) else "corrected_fluorescence"
        arr = ophys._trace(self._ds, trace).data
        return ophys._sample(arr, self._idx, np.zeros(self._idx.shape))  # (sweep, frame, cell)

    def _dx_graph(self) -> Any:
        """Delayed (window speeds, their means over the response window); NaN for a movie
        of an experiment without running speed (AllenSDK's NaturalMovie does not use it)."""
        d = self._design
        if _is_movie(d) and "running_speed.speed" not in self._ds.variables:
            speed = np.full(self._ds.sizes[TIME], np.nan, dtype=np.float32)
        else:  # a SchemaError without running speed: AllenSDK's run modulation needs it
            speed = ophys.running_speed(self._ds).data
        lo, hi = d.interlength, d.interlength + d.sweeplength + d.extralength
        return dask.delayed(_window_speed)(speed, self._idx, lo, hi)

    @cached_property
    def _results(self) -> dict[str, Any]:
        d = self._design
        raw = self._raw.rechunk({0: -1, 1: -1})
        dx = self._dx_graph()
        parts = [dask.delayed(_analyse)(d, blk, dx) for blk in raw.to_delayed().ravel()]
        *done, (dx_windows, dx_mean) = compute(*parts, dx)
        ids = self._ds.indexes[CELL]
        out: dict[str, Any] = {"dx": dx_windows, "dx_mean": dx_mean}
        peak = pd.concat([p["peak"] for p in done], ignore_index=True)
        peak.index = pd.Index(np.asarray(ids), name=CELL)
        if d.stimulus in PEAK_COLUMNS:  # AllenSDK's column order
            peak = peak[PEAK_COLUMNS[d.stimulus]]
        out["peak"] = peak.astype({c: "int64" for c in peak.columns if c in _INDEX_COLUMNS})
        if not _is_movie(d):
            out["msr"] = np.concatenate([p["msr"] for p in done], axis=0)
            out["pval"] = np.concatenate([p["pval"] for p in done], axis=0)
            out["response"] = np.concatenate([p["response"] for p in done], axis=-2)
        return out

    def _coords(self) -> dict[str, Any]:
        st = self._design.table
        coords: dict[str, Any] = {PRESENTATION: st.index.to_numpy(), CELL: self._ds.indexes[CELL]}
        for col in st.columns:
            coords[col] = (PRESENTATION, st[col].to_numpy())
        return coords

    @property
    def sweep_response(self) -> xr.DataArray:
        """AllenSDK's ``sweep_response``: per sweep and cell the window's trace, percent ΔF/F
        from the pre-sweep mean (natural movies: dF/F as is), float32, lazy (dask); its
        ``dx`` column is the coordinate ``dx`` (running speed, cm/s)."""
        return _sweep_response(self._raw, self._design, self._coords(), self._results["dx"])

    def _per_sweep(self, key: str, name: str, units: str) -> xr.DataArray:
        if _is_movie(self._design):
            raise AttributeError(f"AllenSDK's NaturalMovie has no {name}")
        coords = self._coords()
        coords["dx"] = (PRESENTATION, self._results["dx_mean"])
        return xr.DataArray(
            self._results[key].T,
            dims=(PRESENTATION, CELL),
            coords=coords,
            name=name,
            attrs={"units": units, "stimulus": self.stimulus},
        )

    @property
    def mean_sweep_response(self) -> xr.DataArray:
        """AllenSDK's ``mean_sweep_response`` (sweep, cell), % ΔF/F, float32; ``dx`` coord."""
        return self._per_sweep("msr", "mean_sweep_response", "%")

    @property
    def pval(self) -> xr.DataArray:
        """AllenSDK's ``pval``: ANOVA of each sweep's pre-window against its response window."""
        return self._per_sweep("pval", "pval", "1")

    @property
    def response(self) -> xr.DataArray:
        """AllenSDK's ``response``: (*conditions, cell, stat) with stat ``mean`` (% ΔF/F),
        ``sem`` and ``n_significant`` (sweeps under the Bonferroni threshold)."""
        d = self._design
        if _is_movie(d):
            raise AttributeError("AllenSDK's NaturalMovie has no response array")
        return xr.DataArray(
            self._results["response"],
            dims=(*d.factors, CELL, STAT),
            coords={
                **dict(zip(d.factors, d.levels, strict=True)),
                CELL: self._ds.indexes[CELL],
                STAT: ["mean", "sem", "n_significant"],
            },
            name="response",
            attrs={"stimulus": self.stimulus},
        )

    @property
    def peak(self) -> pd.DataFrame:
        """AllenSDK's ``peak`` table, indexed by ``cell_specimen_id`` (condition columns are
        indices into the condition values, as AllenSDK's)."""
        return self._results["peak"].copy()

    @property
    def orivals(self) -> np.ndarray:
        """Orientations (deg) of the gratings, blank 0 included, as AllenSDK's."""
        return self._levels("orientation")

    @property
    def tfvals(self) -> np.ndarray:
        """Temporal frequencies (Hz, drifting gratings), blank 0 first."""
        return self._levels("temporal_frequency")

    @property
    def sfvals(self) -> np.ndarray:
        """Spatial frequencies (cycles/deg, static gratings), blank 0 first."""
        return self._levels("spatial_frequency")

    @property
    def phasevals(self) -> np.ndarray:
        """Phases (static gratings)."""
        return self._levels("phase")

    def _levels(self, factor: str) -> np.ndarray:
        d = self._design
        if factor not in d.factors:
            raise AttributeError(f"{ANALYSES[self.stimulus]} has no {factor} values")
        return d.levels[d.factors.index(factor)]


def stimulus_analysis(
    ds: xr.Dataset, stimulus: str, cells: Sequence[int] | None = None
) -> StimulusAnalysis | vc2p_receptive_fields.LocallySparseNoise:
    """AllenSDK's stimulus analysis of one stimulus (``DriftingGratings(data_set)`` etc.).

    Parameters
    ----------
    ds
        A Visual Coding 2P ``ophys_experiment`` Dataset.
    stimulus
        One of :data:`ANALYSES`: ``drifting_gratings``, ``static_gratings``,
        ``natural_scenes``, ``natural_movie_one``/``_two``/``_three``, or a locally sparse
        noise stimulus (``locally_sparse_noise``, ``_4deg``, ``_8deg``: AllenSDK's
        ``LocallySparseNoise``, :class:`abo_lake.vc2p_receptive_fields.LocallySparseNoise`).
    cells
        ``cell_specimen_id`` values to analyse (default: every cell); only their traces are read.

    Raises
    ------
    ValueError
        If the experiment did not show the stimulus (names its session type and stimuli).

    Examples
    --------
    >>> ds.ophys.stimulus_analysis("drifting_gratings").peak  # doctest: +SKIP
    """
    if stimulus in vc2p_receptive_fields.LSN_STIMULI:
        return vc2p_receptive_fields.LocallySparseNoise(ds, stimulus, cells)
    return StimulusAnalysis(ds, stimulus, cells)


def _session_metrics(a: StimulusAnalysis, session_letter: str) -> pd.DataFrame:
    """AllenSDK ``SessionAnalysis.append_metrics_*`` names from one analysis's peak table."""
    p = a.peak
    s = a.stimulus
    out = pd.DataFrame(index=p.index)
    if s in vc2p_receptive_fields.LSN_STIMULI:  # append_metrics_locally_sparse_noise
        return p[vc2p_receptive_fields.PEAK_COLUMNS].copy()
    if s == "drifting_gratings":
        out["osi_dg"], out["dsi_dg"] = p["osi_dg"], p["dsi_dg"]
        out["pref_dir_dg"] = a.orivals[p["ori_dg"].to_numpy()]
        out["pref_tf_dg"] = a.tfvals[p["tf_dg"].to_numpy()]
        out["p_dg"], out["g_osi_dg"], out["g_dsi_dg"] = p["ptest_dg"], p["cv_os_dg"], p["cv_ds_dg"]
        out["reliability_dg"], out["tfdi_dg"] = p["reliability_dg"], p["tf_index_dg"]
        out["run_mod_dg"], out["p_run_mod_dg"] = p["run_modulation_dg"], p["p_run_dg"]
        out["peak_dff_dg"] = p["peak_dff_dg"]
    elif s == "static_gratings":
        out["osi_sg"] = p["osi_sg"]
        out["pref_ori_sg"] = a.orivals[p["ori_sg"].to_numpy()]
        out["pref_sf_sg"] = a.sfvals[p["sf_sg"].to_numpy()]
        out["pref_phase_sg"] = a.phasevals[p["phase_sg"].to_numpy()]
        out["p_sg"], out["time_to_peak_sg"] = p["ptest_sg"], p["time_to_peak_sg"]
        out["run_mod_sg"], out["p_run_mod_sg"] = p["run_modulation_sg"], p["p_run_sg"]
        out["g_osi_sg"], out["sfdi_sg"] = p["cv_os_sg"], p["sf_index_sg"]
        out["peak_dff_sg"], out["reliability_sg"] = p["peak_dff_sg"], p["reliability_sg"]
    elif s == "natural_scenes":
        out["pref_image_ns"], out["p_ns"] = p["scene_ns"], p["ptest_ns"]
        out["time_to_peak_ns"] = p["time_to_peak_ns"]
        out["image_sel_ns"], out["reliability_ns"] = p["image_selectivity_ns"], p["reliability_ns"]
        out["run_mod_ns"], out["p_run_mod_ns"] = p["run_modulation_ns"], p["p_run_ns"]
        out["peak_dff_ns"] = p["peak_dff_ns"]
    else:
        short = _MOVIE_SHORT[s]
        out[f"reliability_{short}"] = p[f"response_reliability_{short}"]
        if short == "nm1" and session_letter:
            out[f"reliability_nm1_{session_letter}"] = p["response_reliability_nm1"]
    return out


def _lsn_for_metrics(ds: xr.Dataset, shown: set[str]) -> list[str]:
    """The LSN stimulus AllenSDK's ``SessionAnalysis`` takes the ``rf_*_lsn`` metrics from:
    ``locally_sparse_noise`` (three_session_C); in three_session_C2 the 4deg one for VISp and
    the 8deg one elsewhere. None where the lake has no template for it (converted before the
    reader mapped LSN templates)."""
    shown = {s for s in shown if vc2p_receptive_fields.template_variable(s) in ds.variables}
    if "locally_sparse_noise" in shown:
        return ["locally_sparse_noise"]
    lsn4, lsn8 = "locally_sparse_noise_4deg", "locally_sparse_noise_8deg"
    if lsn4 in shown or lsn8 in shown:
        pick = lsn4 if ds.attrs.get("targeted_structure") == "VISp" else lsn8
        return [pick] if pick in shown else [lsn4 if lsn4 in shown else lsn8]
    return []


def stimulus_metrics(
    ds: xr.Dataset,
    cells: Sequence[int] | None = None,
    stimuli: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every AllenSDK per-cell stimulus metric the session's stimuli allow, in one table.

    Runs :func:`stimulus_analysis` for each of drifting gratings, static gratings, natural
    scenes and natural movies the experiment showed, and names the columns as AllenSDK's
    ``SessionAnalysis`` does (``osi_dg``, ``pref_dir_dg``, ``p_dg``, ``g_osi_dg``, ``tfdi_dg``,
    ``run_mod_dg``, ``osi_sg``, ``pref_sf_sg``, ``time_to_peak_sg``, ``pref_image_ns``,
    ``image_sel_ns``, ``reliability_nm1`` (and ``reliability_nm1_a``/``_b``/``_c`` by session
    letter, as the cross-session cell table names it), ...) and, for three_session_C/C2,
    AllenSDK's receptive-field metrics (``rf_chi2_lsn``, ``rf_area_on_lsn``,
    ``rf_center_on_x_lsn``, ..., ``rf_distance_lsn``, ``rf_overlap_index_lsn``; C2: from the
    4deg stimulus for VISp, the 8deg one elsewhere, as ``SessionAnalysis``).

    Parameters
    ----------
    ds
        A Visual Coding 2P ``ophys_experiment`` Dataset.
    cells
        ``cell_specimen_id`` values (default: every cell); only their traces are read.
    stimuli
        Analyse only these (default: every stimulus of :data:`ANALYSES` the session showed).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``cell_specimen_id``, one column per metric.

    Raises
    ------
    ValueError
        If the experiment has none of these stimuli, or not one asked for (names the session
        type and its stimuli).

    Examples
    --------
    >>> ds.ophys.stimulus_metrics().query("p_dg < 0.05 and osi_dg > 0.5")  # doctest: +SKIP
    """
    table = ophys.stimulus_presentations(ds)
    shown = set(table["stimulus_name"]) if "stimulus_name" in table else set()
    todo = [s for s in ANALYSES if s in shown] if stimuli is None else list(stimuli)
    if stimuli is None:
        todo += _lsn_for_metrics(ds, shown)
    if not todo:
        raise ValueError(
            "no stimulus with an AllenSDK analysis (drifting/static gratings, natural scenes, "
            "movies, or locally sparse noise with its template): this experiment's "
            f"session_type is "
            f"{ds.attrs.get('session_type') or 'unknown'!r} and its stimuli are {sorted(shown)!r}"
        )
    session_type = str(ds.attrs.get("session_type") or "")
    letter = session_type.split("_")[-1][:1].lower() if session_type.startswith("three") else ""
    parts = [_session_metrics(stimulus_analysis(ds, s, cells), letter) for s in todo]
    return pd.concat(parts, axis=1)
