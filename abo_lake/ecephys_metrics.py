"""AllenSDK's Neuropixels stimulus analyses (``ecephys.stimulus_analysis``) on lake sessions.

Per-unit metric tables with AllenSDK 2.16.2's column names and definitions for
``DriftingGratings``, ``StaticGratings``, ``NaturalScenes``, ``Flashes``, ``DotMotion`` and
``ReceptiveFieldMapping`` (``<Class>(session).metrics``), the receptive-field array
(``ReceptiveFieldMapping.receptive_fields``) and optotagging responses after the Allen
optotagging tutorial. Our own vectorised implementation over the public counting functions of
:mod:`abo_lake.ecephys`: spike chunks are read in two passes per table (condition statistics,
then the preferred-condition quantities, the [0, trial_duration] counts and the firing rates),
and only the chunks of the selected units.

Definitions follow AllenSDK, including its choices:

- the preferred condition is the condition with the highest ``spike_mean`` (counts in
  (start, stop]), the first on ties, blank ("null") conditions left out; ``pref_<param>`` is
  the value whose conditions have the highest mean ``spike_mean``; ``*_multi_*`` says that
  more than one value reaches it;
- ``fano``, ``run_pval``/``run_mod`` (Welch's t-test of running, mean speed >= 1 cm/s, vs
  stationary trials; at least two of each) use counts in [0, trial_duration] at the preferred
  condition; ``lifetime_sparseness`` uses the summed ``spike_count`` of every non-blank
  condition; ``firing_rate`` counts [start, stop) of each block of presentations (a gap over
  2 × trial_duration starts a block);
- ``time_to_peak``, ``sustained_idx_fl`` and ``mod_idx_dg`` use the 1 ms PSTH over
  [0, trial_duration) at the preferred condition; ``f1_f0_dg`` the 1 ms counts of its trials;
- ``pref_image_ns`` is, as in AllenSDK, the preferred ``stimulus_condition_id`` (not the frame);
- ``c50_dg`` fits AllenSDK's log-logistic curve to the ``drifting_gratings_contrast``
  presentations (Functional Connectivity sessions) at the unit's ``pref_ori_dg``, and reads the
  half-way contrast off a 256-point grid; NaN without that stimulus or at an orientation it
  does not show. ``DotMotion`` uses the ``Dir`` and ``Speed`` columns of ``dot_motion``
  (``motion_stimulus``) presentations, no blank condition, a 1 s window;
- ``p_value_rf`` is AllenSDK's chi-square shuffle test (1000 resamplings with replacement per
  unit, in unit order, from NumPy's legacy global generator). With ``seed`` we draw from
  ``np.random.RandomState(seed)`` in AllenSDK's order, so the value equals AllenSDK's after
  ``np.random.seed(seed)``; without it the draws are unseeded, as in AllenSDK.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import scipy.ndimage as ndi
import scipy.stats
import xarray as xr
from scipy import signal
from scipy.fftpack import fft
from scipy.optimize import curve_fit, leastsq

from abo_lake import ecephys
from abo_lake.errors import SchemaError
from abo_lake.scheduling import compute

__all__ = [
    "ANALYSES",
    "analysis_metrics",
    "optotagging_metrics",
    "receptive_fields",
    "stimulus_metrics",
]

_PSTH_RESOLUTION = 0.001  # AllenSDK's psth_resolution
_RF_EDGES = np.linspace(0, 0.249, 3)  # ReceptiveFieldMapping.receptive_fields
_NULL = "null"


@dataclass(frozen=True)
class _Analysis:
    """One AllenSDK ``StimulusAnalysis`` subclass, as data."""

    cls: str
    suffix: str
    keys: tuple[str, ...]  # known_stimulus_keys
    prefix_match: bool  # Flashes and ReceptiveFieldMapping match names by prefix
    trial_duration: float
    params: tuple[tuple[str, str], ...]  # (column, metric stem) of each preferred parameter
    null_column: str | None  # blank conditions have "null" (or -1 for frame) in this column
    columns: tuple[str, ...]  # METRICS_COLUMNS


ANALYSES: dict[str, _Analysis] = {
    "drifting_gratings": _Analysis(
        "DriftingGratings", "dg", ("drifting_gratings", "drifting_gratings_75_repeats"), False,
        2.0, (("orientation", "pref_ori"), ("temporal_frequency", "pref_tf")),
        "temporal_frequency",
        ("pref_ori_dg", "pref_ori_multi_dg", "pref_tf_dg", "pref_tf_multi_dg", "c50_dg",
         "f1_f0_dg", "mod_idx_dg", "g_osi_dg", "g_dsi_dg", "firing_rate_dg", "fano_dg",
         "lifetime_sparseness_dg", "run_pval_dg", "run_mod_dg"),
    ),
    "static_gratings": _Analysis(
        "StaticGratings", "sg", ("static_gratings",), False, 0.25,
        (("spatial_frequency", "pref_sf"), ("orientation", "pref_ori"), ("phase", "pref_phase")),
        "spatial_frequency",
        ("pref_sf_sg", "pref_sf_multi_sg", "pref_ori_sg", "pref_ori_multi_sg", "pref_phase_sg",
         "pref_phase_multi_sg", "g_osi_sg", "time_to_peak_sg", "firing_rate_sg", "fano_sg",
         "lifetime_sparseness_sg", "run_pval_sg", "run_mod_sg"),
    ),
    "natural_scenes": _Analysis(
        "NaturalScenes", "ns", ("natural_scenes", "Natural_Images", "Natural Images"), False,
        0.25, (), "frame",
        ("pref_image_ns", "image_selectivity_ns", "firing_rate_ns", "fano_ns", "time_to_peak_ns",
         "lifetime_sparseness_ns", "run_pval_ns", "run_mod_ns", "pref_images_multi_ns"),
    ),
    "flashes": _Analysis(
        "Flashes", "fl", ("flash", "flashes"), True, 0.25, (), None,
        ("on_off_ratio_fl", "sustained_idx_fl", "firing_rate_fl", "time_to_peak_fl", "fano_fl",
         "lifetime_sparseness_fl", "run_pval_fl", "run_mod_fl"),
    ),
    "dot_motion": _Analysis(
        "DotMotion", "dm", ("motion_stimulus", "dot_motion"), False, 1.0,
        (("Speed", "pref_speed"), ("Dir", "pref_dir")), None,
        ("pref_speed_dm", "pref_speed_multi_dm", "pref_dir_dm", "pref_dir_multi_dm",
         "firing_rate_dm", "fano_dm", "time_to_peak_dm", "lifetime_sparseness_dm", "run_mod_dm",
         "run_pval_dm"),
    ),
    "receptive_field_mapping": _Analysis(
        "ReceptiveFieldMapping", "rf", ("receptive_field_mapping", "gabor", "gabors"), True, 0.25,
        (), None,
        ("azimuth_rf", "elevation_rf", "width_rf", "height_rf", "area_rf", "p_value_rf",
         "on_screen_rf", "firing_rate_rf", "fano_rf", "time_to_peak_rf",
         "lifetime_sparseness_rf", "run_mod_rf", "run_pval_rf"),
    ),
}  # fmt: skip


# --- selection -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """The session's stimulus tables, read once per call."""

    presentations: pd.DataFrame  # AllenSDK's stimulus_presentations (invalid ones masked)
    conditions: pd.DataFrame  # AllenSDK's stimulus_conditions

    @classmethod
    def of(cls, ds: xr.Dataset) -> _Tables:
        return cls(ecephys.stimulus_presentations(ds), ecephys.stimulus_conditions(ds))

    @property
    def names(self) -> list[str]:
        return self.presentations["stimulus_name"].unique().tolist()

    def stimulus(self, name: str) -> pd.DataFrame:
        """AllenSDK's ``get_stimulus_table([name])`` (the columns used here)."""
        return self.presentations[self.presentations["stimulus_name"] == name]


def _stimulus_key(tables: _Tables, analysis: _Analysis, stimulus_key: str | None) -> str | None:
    """AllenSDK's ``_find_stimulus_key``: the first presented name that is a known key."""
    names = tables.names
    if stimulus_key is not None:
        return stimulus_key if stimulus_key in names else None
    known = [k.lower() for k in analysis.keys]
    for name in names:
        low = str(name).lower()
        if low in known or (analysis.prefix_match and any(low.startswith(k) for k in known)):
            return name
    return None


def _analysis(name: str) -> _Analysis:
    if name not in ANALYSES:
        raise KeyError(f"unknown stimulus analysis {name!r}; choose one of {sorted(ANALYSES)}")
    return ANALYSES[name]


def _session_label(ds: xr.Dataset) -> str:
    try:
        session_type = ecephys.metadata(ds).get("session_type")
    except (KeyError, SchemaError, ValueError):  # e.g. no behavior metadata: the attrs say
        session_type = ds.attrs.get("session_type")
    return f"session {ds.attrs.get('ecephys_session_id', '?')} (session_type {session_type!r})"


@dataclass
class _Inputs:
    """What every analysis of one stimulus needs, computed from the lake."""

    table: pd.DataFrame  # AllenSDK's stim_table (get_stimulus_table([key]))
    conditions: pd.DataFrame  # stimulus_conditions of those presentations, ascending ids
    unit_ids: np.ndarray
    mean: np.ndarray  # (U, C) spike_mean in (start, stop]
    total: np.ndarray  # (U, C) spike_count in (start, stop]
    null: np.ndarray  # (C,) blank condition


def _unit_ids(ds: xr.Dataset, unit_ids: Any) -> np.ndarray:
    if unit_ids is None:
        ids = ecephys.units(ds).index.to_numpy()
    else:
        ids = np.atleast_1d(np.asarray(unit_ids))
    if ids.size == 0:
        raise ValueError("no units selected: unit_ids is empty or the QC filter removed all")
    return ids


def _inputs(
    ds: xr.Dataset, tables: _Tables, analysis: _Analysis, unit_ids: Any, stimulus_key: str | None
) -> _Inputs:
    if ecephys.session_class(ds) != "EcephysSession":
        raise SchemaError(
            f"{analysis.cls} needs a Visual Coding Neuropixels session (AllenSDK's "
            f"EcephysSession); {_session_label(ds)} is a {ecephys.session_class(ds)}"
        )
    key = _stimulus_key(tables, analysis, stimulus_key)
    if key is None:
        wanted = stimulus_key if stimulus_key is not None else list(analysis.keys)
        raise KeyError(
            f"{analysis.cls}: {_session_label(ds)} has no {wanted!r} stimulus; its stimuli "
            f"are {tables.names}"
        )
    table = tables.stimulus(key)
    if table.empty:
        raise KeyError(f"{analysis.cls}: no valid presentations of {key!r} in {_session_label(ds)}")
    ids = _unit_ids(ds, unit_ids)
    stats = ecephys.conditionwise_spike_statistics(ds, table.index.to_numpy(), ids)
    mean = stats["spike_mean"].unstack("stimulus_condition_id").sort_index(axis=1)
    total = stats["spike_count"].unstack("stimulus_condition_id").sort_index(axis=1)
    mean, total = mean.loc[ids], total.loc[ids]
    all_conditions = tables.conditions
    conditions = all_conditions.loc[mean.columns.to_numpy()]
    if analysis.null_column is None or analysis.null_column not in conditions:
        null = np.zeros(len(conditions), bool)
    elif analysis.null_column == "frame":
        null = (conditions["frame"] == -1).to_numpy()
    else:
        null = (conditions[analysis.null_column] == _NULL).to_numpy()
    return _Inputs(
        table, conditions, ids, mean.to_numpy(np.float64), total.to_numpy(np.float64), null
    )


# --- per-unit quantities -------------------------------------------------------------------------


def _preferred_condition(inp: _Inputs) -> np.ndarray:
    """Index (into ``inp.conditions``) of each unit's preferred condition, blanks left out."""
    mean = inp.mean if not inp.null.any() else np.where(inp.null, -np.inf, inp.mean)
    return np.argmax(mean, axis=1)


def _preferred_value(inp: _Inputs, column: str) -> tuple[np.ndarray, np.ndarray]:
    """AllenSDK's ``_get_pref_<param>`` and ``_check_multiple_pref_conditions``."""
    col = inp.conditions[column]
    values = np.sort(col[col != _NULL].unique())
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        values = values.astype(np.float64)  # AllenSDK's column is float64 (not object)
    means = np.stack(
        [np.mean(inp.mean[:, (col == v).to_numpy()], axis=1) for v in values], axis=1
    )  # (U, V): the mean over each value's conditions, reduced along a contiguous axis
    best = np.max(means, axis=1, keepdims=True)
    return values[np.argmax(means, axis=1)], (means == best).sum(1) > 1


def _lifetime_sparseness(inp: _Inputs) -> np.ndarray:
    r = inp.total[:, ~inp.null]
    n = r.shape[1]
    if n <= 1:
        return np.full(r.shape[0], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (1.0 - (1.0 / n) * (np.sum(r, 1) ** 2 / np.sum(r**2, 1))) / (1.0 - 1.0 / n)


def _circular(inp: _Inputs, unit: int, rows: np.ndarray, column: str, harmonic: int) -> float:
    """AllenSDK's ``osi``/``dsi`` over the conditions ``rows`` sorted by ``column``."""
    col = inp.conditions[column]
    orivals = np.sort(col[col != _NULL].unique()).astype(np.float64)
    rows = rows[np.argsort(col.to_numpy()[rows].astype(np.float64), kind="stable")]
    tuning = inp.mean[unit, rows]
    if orivals.size == 0 or orivals.size != tuning.size:
        return np.nan
    total = tuning.sum()
    if total == 0.0:
        return np.nan
    theta = (orivals / 180 * np.pi).astype(np.complex128)
    return float(np.abs((tuning * np.exp(1j * harmonic * theta)).sum()) / total)


def _running_speed(ds: xr.Dataset, table: pd.DataFrame) -> np.ndarray:
    """Mean velocity of the samples starting in [start, stop) of each presentation."""
    run = ecephys.running_speed(ds)
    t, v = run["start_time"].to_numpy(), run["velocity"].to_numpy()
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    lo = np.searchsorted(t, table["start_time"].to_numpy(), "left")
    hi = np.searchsorted(t, table["stop_time"].to_numpy(), "left")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.array([np.mean(v[a:b]) if b > a else np.nan for a, b in zip(lo, hi, strict=True)])


def _running_modulation(counts: np.ndarray, speeds: np.ndarray) -> tuple[float, float]:
    """AllenSDK's ``running_modulation`` (threshold 1 cm/s): (p value, run_mod)."""
    is_running = speeds >= 1.0
    if not 1 < np.sum(is_running) < (len(speeds) - 1):
        return np.nan, np.nan
    run, stat = counts[is_running], counts[~is_running]
    run_mean, stat_mean = np.mean(run), np.mean(stat)
    if run_mean == stat_mean == 0:
        return np.nan, np.nan
    if run_mean > stat_mean:
        run_mod = (run_mean - stat_mean) / run_mean
    else:
        run_mod = -1 * (stat_mean - run_mean) / stat_mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = scipy.stats.ttest_ind(run, stat, equal_var=False).pvalue
    return float(p), float(run_mod)


def _blocks(table: pd.DataFrame, trial_duration: float) -> np.ndarray:
    """(K, 2) start/stop of the stimulus blocks (AllenSDK's ``_get_overall_firing_rate``)."""
    start, stop = table["start_time"].to_numpy(), table["stop_time"].to_numpy()
    gaps = np.flatnonzero(np.diff(start) > trial_duration * 2)
    return np.stack([start[np.r_[0, gaps + 1]], stop[np.r_[gaps, start.size - 1]]], 1)


def _unit_spikes(ds: xr.Dataset, unit_ids: np.ndarray) -> list[Any]:
    """Each unit's spike times as a lazy slice (only its chunks are read)."""
    index = ds.indexes["unit_id"]
    pos = index.get_indexer(unit_ids)
    if np.any(pos < 0):
        raise KeyError(f"unknown unit_id {unit_ids[pos < 0].tolist()[:10]}")
    ends = np.asarray(ds["spike_times_index"].values, dtype=np.int64)
    begins = np.r_[0, ends[:-1]]
    data = ds["spike_times"].data
    return [data[begins[p] : ends[p]] for p in pos]


def _interval_counts(spikes: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Spikes in [start, stop) of each interval (``searchsorted`` left/left, as AllenSDK)."""
    return spikes.searchsorted(intervals[:, 1]) - spikes.searchsorted(intervals[:, 0])


def _grouped_spikes(ds: xr.Dataset, unit_ids: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """Units in groups that share spike chunks: (lazy spike slice of the group, (u, 3) rows of
    output position, begin and end within the slice). Only chunks the units' spikes touch are
    in a slice; one dask task per group instead of one per unit."""
    index = ds.indexes["unit_id"]
    pos = index.get_indexer(unit_ids)
    if np.any(pos < 0):
        raise KeyError(f"unknown unit_id {unit_ids[pos < 0].tolist()[:10]}")
    ends = np.asarray(ds["spike_times_index"].values, dtype=np.int64)
    begins = np.r_[0, ends[:-1]]
    data = ds["spike_times"].data
    bounds = np.cumsum((0, *data.chunks[0]))
    order = np.argsort(pos, kind="stable")
    b, e = begins[pos[order]], ends[pos[order]]
    first = np.searchsorted(bounds, b, side="right") - 1  # chunk of each unit's first spike
    last = np.searchsorted(bounds, np.maximum(e - 1, b), side="right") - 1
    reach = np.maximum.accumulate(last)
    starts = np.flatnonzero(np.r_[True, first[1:] > reach[:-1]])  # a new group after a gap
    groups = []
    for g0, g1 in zip(starts, np.r_[starts[1:], order.size], strict=True):
        lo, hi = int(b[g0:g1].min()), int(e[g0:g1].max())
        rows = np.stack([order[g0:g1], b[g0:g1] - lo, e[g0:g1] - lo], 1)
        groups.append((data[lo:hi], rows))
    return groups


def _group_rates(spikes: np.ndarray, rows: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """(u, 2) output position and firing rate of each unit of one group."""
    spikes = np.asarray(spikes)
    return np.array([(j, _firing_rate(spikes[a:z], blocks)) for j, a, z in rows], np.float64)


def _firing_rate(spikes: np.ndarray, blocks: np.ndarray) -> float:
    if len(spikes) == 0:
        return 0.0
    total = np.sum(blocks[:, 1] - blocks[:, 0])
    if total <= 0:
        return np.nan
    return float(np.sum(_interval_counts(spikes, blocks)) / total)


def _f1_f0(arr: np.ndarray, tf: float, trial_duration: float) -> float:
    """AllenSDK's ``f1_f0`` of the (trials, 1 ms bins) counts at one temporal frequency."""
    if arr.size == 0:
        return np.nan
    if arr.ndim == 1:
        arr = arr.reshape(1, arr.size)
    num_trials, num_bins = arr.shape
    cycles_per_trial = int(tf * trial_duration)
    if cycles_per_trial == 0:
        return np.nan
    bins_per_cycle = int(num_bins / cycles_per_trial)
    if bins_per_cycle == 0:
        return np.nan
    arr = arr[:, : cycles_per_trial * bins_per_cycle].reshape(
        (num_trials, cycles_per_trial, bins_per_cycle)
    )
    amp = 2 * np.abs(fft(np.mean(arr, 1), bins_per_cycle)) / bins_per_cycle
    f0, f1 = 0.5 * amp[:, 0], amp[:, 1]
    selection = f0 > 0.0
    if not np.any(selection):
        return np.nan
    return float(np.nanmean(f1[selection] / f0[selection]))


def _modulation_index(psth: np.ndarray, tf: float, sample_rate: float) -> float:
    """AllenSDK's ``modulation_index`` (Welch PSD at the grating's frequency)."""
    if psth.size == 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nperseg > len: scipy shortens it
        f, psd = signal.welch(psth, fs=sample_rate, nperseg=1024)
    mean_psd = np.mean(psd)
    if mean_psd == 0.0:
        return 0.0
    k = np.searchsorted(f, tf)
    if not 0 <= k < psd.size:
        return np.nan
    return float(abs((psd[k] - np.mean(psd)) / np.sqrt(np.mean(psd**2) - mean_psd**2)))


def _preferred_block(
    counts: np.ndarray,
    cond: np.ndarray,
    pref: np.ndarray,
    tf: np.ndarray | None,
    trial_duration: float,
) -> np.ndarray:
    """Per unit of one block of 1 ms counts (P, B, u): the PSTH at its preferred condition
    (mean over those presentations) and, with ``tf``, F1/F0 of those presentations."""
    out = np.full((counts.shape[2], counts.shape[1] + 1), np.nan)
    for j in range(counts.shape[2]):
        trials = counts[cond == pref[j], :, j]
        out[j, :-1] = trials.mean(0)
        if tf is not None:
            out[j, -1] = _f1_f0(trials, tf[j], trial_duration)
    return out


# --- one analysis --------------------------------------------------------------------------------


def analysis_metrics(
    ds: xr.Dataset,
    analysis: str,
    unit_ids: Any = None,
    *,
    stimulus_key: str | None = None,
    trial_duration: float | None = None,
    seed: int | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """AllenSDK's ``<Analysis>(session).metrics`` for one stimulus analysis (eager).

    :func:`stimulus_metrics` with ``analysis`` named; the same parameters.

    Parameters
    ----------
    ds
        A Visual Coding Neuropixels ``ecephys_session`` Dataset.
    analysis
        ``"drifting_gratings"``, ``"static_gratings"``, ``"natural_scenes"``, ``"flashes"``,
        ``"dot_motion"`` or ``"receptive_field_mapping"`` (see :data:`ANALYSES`).
    unit_ids
        Units in output order (AllenSDK's ``filter`` list); default the QC-filtered units.
    stimulus_key
        The ``stimulus_name`` to analyse; default AllenSDK's guess from its known keys.
    trial_duration
        Seconds counted after each onset; default AllenSDK's for the analysis.
    seed
        Receptive field mapping only: seed of the ``p_value_rf`` shuffles (see module doc).
    columns
        Only these of the analysis' columns, in this order; the 1 ms PSTH (``time_to_peak``,
        ``f1_f0_dg``, ``mod_idx_dg``, ``sustained_idx_fl``) and the ``c50_dg`` fit are
        skipped when none of them is asked for. Default all, in AllenSDK's order.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``unit_id``, AllenSDK's columns in AllenSDK's order.

    Raises
    ------
    KeyError
        If the session has no stimulus for the analysis (names the session and its stimuli).
    SchemaError
        If the session is a Visual Behavior Neuropixels one.
    """
    spec = _analysis(analysis)
    if columns is not None:
        unknown = [c for c in columns if c not in spec.columns]
        if unknown:
            raise KeyError(f"{spec.cls} has no columns {unknown}; its columns are {spec.columns}")
    return _analysis_metrics(
        ds, _Tables.of(ds), spec, unit_ids, stimulus_key, trial_duration, seed, columns
    )


#: Columns that need the 1 ms PSTH (or, for c50_dg, the contrast gratings' statistics).
_FINE_COLUMNS = ("time_to_peak_", "f1_f0_dg", "mod_idx_dg", "sustained_idx_fl", "c50_dg")


def _analysis_metrics(
    ds: xr.Dataset,
    tables: _Tables,
    spec: _Analysis,
    unit_ids: Any,
    stimulus_key: str | None,
    trial_duration: float | None,
    seed: int | None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One analysis' table; with ``columns``, only those (the 1 ms PSTH, F1/F0 and the c50 fit
    are skipped when none of them is asked for)."""
    fine_needed = columns is None or any(c.startswith(_FINE_COLUMNS) for c in columns)
    duration = spec.trial_duration if trial_duration is None else float(trial_duration)
    if duration <= 0:
        raise ValueError(f"trial_duration must be > 0; got {duration}")
    inp = _inputs(ds, tables, spec, unit_ids, stimulus_key)
    table, ids = inp.table, inp.unit_ids
    pres_ids = table.index.to_numpy()
    pref = _preferred_condition(inp)
    cond_ids = inp.conditions.index.to_numpy()
    cond = table["stimulus_condition_id"].to_numpy()
    pref_ids = cond_ids[pref]

    # one compute: [0, T] counts, preferred-condition PSTH (and F1/F0), firing rates, RF counts
    window = ecephys.presentationwise_spike_counts(ds, [0.0, duration], pres_ids, ids)
    fine = ecephys.presentationwise_spike_counts(
        ds, np.arange(0, duration, _PSTH_RESOLUTION), pres_ids, ids
    )
    centres = fine["time_relative_to_stimulus_onset"].to_numpy()
    tf_pref = None
    if spec.suffix == "dg" and fine_needed:
        tf_pref = (
            table.groupby("stimulus_condition_id")["temporal_frequency"].first().loc[pref_ids]
        ).to_numpy()
    blocks_of_units = np.r_[0, np.cumsum(fine.data.chunks[2])]
    pref_parts = (
        [
            dask.delayed(_preferred_block)(
                block,
                cond,
                pref_ids[a:b],
                None if tf_pref is None else tf_pref[a:b].astype(np.float64),
                float(centres.max()),
            )
            for block, a, b in zip(
                fine.data.to_delayed().ravel(),
                blocks_of_units[:-1],
                blocks_of_units[1:],
                strict=True,
            )
        ]
        if fine_needed
        else []
    )
    blocks = _blocks(table, duration)
    rates = [dask.delayed(_group_rates)(s, rows, blocks) for s, rows in _grouped_spikes(ds, ids)]
    arrays = [window.data]
    if spec.suffix == "rf":
        arrays.append(ecephys.presentationwise_spike_counts(ds, _RF_EDGES, pres_ids, ids).data)
    # Arrays first, then the Delayed, all flat: dask 2026.8 returns a mix of arrays and lists
    # of Delayed out of order.
    done = compute(*arrays, *pref_parts, *rates)
    counts = np.asarray(done[0])[:, 0, :].astype(np.float64)  # (P, U)
    rf_counts = np.asarray(done[1]).sum(1) if spec.suffix == "rf" else None
    if fine_needed:
        pref_out = np.concatenate(done[len(arrays) : len(arrays) + len(pref_parts)], axis=0)
    else:
        pref_out = np.full((ids.size, centres.size + 1), np.nan)
    psth, f1f0 = pref_out[:, :-1], pref_out[:, -1]
    rate = np.full(ids.size, np.nan)
    for part in done[len(arrays) + len(pref_parts) :]:
        rate[part[:, 0].astype(np.int64)] = part[:, 1]

    speeds = _running_speed(ds, table)
    n_u = ids.size
    fano, run_p, run_mod = np.full(n_u, np.nan), np.full(n_u, np.nan), np.full(n_u, np.nan)
    for j in range(n_u):
        rows = cond == pref_ids[j]
        x = counts[rows, j]
        m = np.mean(x)
        fano[j] = np.var(x) / m if m != 0 else np.nan
        run_p[j], run_mod[j] = _running_modulation(x, speeds[rows])
    ttp = centres[np.argmax(psth, axis=1)] if fine_needed else np.full(n_u, np.nan)
    out: dict[str, Any] = {}
    sfx = spec.suffix
    for column, stem in spec.params:
        value, multi = _preferred_value(inp, column)
        out[f"{stem}_{sfx}"], out[f"{stem}_multi_{sfx}"] = value, multi
    common = {
        f"firing_rate_{sfx}": rate,
        f"fano_{sfx}": fano,
        f"time_to_peak_{sfx}": ttp,
        f"lifetime_sparseness_{sfx}": _lifetime_sparseness(inp),
        f"run_pval_{sfx}": run_p,
        f"run_mod_{sfx}": run_mod,
    }
    out.update(common)
    if sfx == "dg":
        out.update(_drifting_gratings(ds, tables, inp, out, psth, centres, pref, f1f0,
                                      fine_needed))  # fmt: skip
    elif sfx == "sg":
        out["g_osi_sg"] = _static_gratings_osi(inp, out)
    elif sfx == "ns":
        out.update(_natural_scenes(inp, pref_ids))
    elif sfx == "fl":
        out.update(_flashes(inp, psth))
    elif sfx == "rf":
        rf = _rf_matrix(rf_counts, table, ids)
        out.update(_rf_stats(rf, counts, table, seed))
    frame = pd.DataFrame(out, index=pd.Index(ids, name="unit_id"))
    return frame[list(spec.columns) if columns is None else list(columns)]


def _drifting_gratings(
    ds: xr.Dataset,
    tables: _Tables,
    inp: _Inputs,
    out: dict[str, Any],
    psth: np.ndarray,
    centres: np.ndarray,
    pref: np.ndarray,
    f1f0: np.ndarray,
    fine_needed: bool = True,
) -> dict[str, np.ndarray]:
    tf = inp.conditions["temporal_frequency"].to_numpy()
    sample_rate = 1 / np.mean(np.diff(centres))
    mod = np.array([_modulation_index(psth[j], float(tf[pref[j]]), sample_rate)
                    for j in range(psth.shape[0])]) if fine_needed else f1f0  # fmt: skip
    osi, dsi = np.full(psth.shape[0], np.nan), np.full(psth.shape[0], np.nan)
    for j, f in enumerate(out["pref_tf_dg"]):
        rows = np.flatnonzero(inp.conditions["temporal_frequency"].to_numpy() == f)
        osi[j] = _circular(inp, j, rows, "orientation", 2)
        dsi[j] = _circular(inp, j, rows, "orientation", 1)
    c50 = _c50(ds, tables, inp, out["pref_ori_dg"]) if fine_needed else f1f0
    return {"f1_f0_dg": f1f0, "mod_idx_dg": mod, "g_osi_dg": osi, "g_dsi_dg": dsi,
            "c50_dg": c50}  # fmt: skip


def _contrast_curve(x, b, c, d, e):
    """AllenSDK's 4-parameter log-logistic contrast response."""
    return c + (d - c) / (1 + np.exp(b * (np.log(x) - np.log(e))))


def _c50_fit(contrasts: np.ndarray, responses: np.ndarray) -> float:
    """AllenSDK's ``c50``: half-way contrast of the fitted curve."""
    if contrasts.size == 0 or contrasts.size != responses.size:
        return np.nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coefs, _ = curve_fit(_contrast_curve, contrasts, responses, maxfev=100000)
    except RuntimeError:
        return np.nan
    x = np.linspace(min(contrasts) * 0.9, max(contrasts) * 1.1, 256)
    y = _contrast_curve(x, *coefs)
    middle = (np.max(y) - np.min(y)) / 2 + np.min(y)
    order = np.argsort(y)
    k = np.searchsorted(y[order], middle)
    return float(x[order][k]) if k < x.size else np.nan


def _c50(ds: xr.Dataset, tables: _Tables, inp: _Inputs, pref_ori: np.ndarray) -> np.ndarray:
    """``c50_dg`` from the ``drifting_gratings_contrast`` stimulus (NaN without it)."""
    if "drifting_gratings_contrast" not in tables.names:
        return np.full(inp.unit_ids.size, np.nan)
    table = tables.stimulus("drifting_gratings_contrast")
    stats = ecephys.conditionwise_spike_statistics(ds, table.index.to_numpy(), inp.unit_ids)
    mean = stats["spike_mean"].unstack("stimulus_condition_id")
    contrast = tables.conditions["contrast"]
    out = np.full(inp.unit_ids.size, np.nan)
    for j, uid in enumerate(inp.unit_ids):
        conds = table.loc[table["orientation"] == pref_ori[j], "stimulus_condition_id"].unique()
        out[j] = _c50_fit(contrast.loc[conds].to_numpy(np.float64),
                          mean.loc[uid, conds].to_numpy(np.float64))  # fmt: skip
    return out


def _static_gratings_osi(inp: _Inputs, out: dict[str, Any]) -> np.ndarray:
    sf = inp.conditions["spatial_frequency"].to_numpy()
    phase = inp.conditions["phase"].to_numpy()
    osi = np.full(inp.unit_ids.size, np.nan)
    for j in range(osi.size):
        rows = np.flatnonzero((sf == out["pref_sf_sg"][j]) & (phase == out["pref_phase_sg"][j]))
        osi[j] = _circular(inp, j, rows, "orientation", 2)
    return osi


def _image_selectivity(spike_means: np.ndarray, num_steps: int = 1000) -> float:
    """AllenSDK's ``image_selectivity`` (Quian Quiroga et al. 2007)."""
    if spike_means.size < 2:
        return np.nan
    fmin, fmax = spike_means.min(), spike_means.max()
    if fmin == fmax:
        return 0.0
    thresh = fmin + np.arange(num_steps) * ((fmax - fmin) / num_steps)
    return float(1 - 2 * np.mean(np.mean(spike_means[None, :] > thresh[:, None], axis=1)))


def _natural_scenes(inp: _Inputs, pref_ids: np.ndarray) -> dict[str, np.ndarray]:
    frames = inp.conditions["frame"].to_numpy()
    images = np.sort(np.unique(frames)).astype(np.int64)
    nonblank = images[images >= 0]
    means = np.stack([np.mean(inp.mean[:, frames == v], axis=1) for v in nonblank], axis=1)
    multi = (means == means.max(1, keepdims=True)).sum(1) > 1
    sel = np.array([_image_selectivity(inp.mean[j, ~inp.null]) for j in range(pref_ids.size)])
    return {"pref_image_ns": pref_ids.astype(np.uint64), "image_selectivity_ns": sel,
            "pref_images_multi_ns": multi}  # fmt: skip


def _flashes(inp: _Inputs, psth: np.ndarray) -> dict[str, np.ndarray]:
    color = inp.conditions["color"].to_numpy()
    on, off = np.flatnonzero(color == 1.0), np.flatnonzero(color == -1.0)
    if on.size == 0 or off.size == 0:
        ratio = np.full(inp.unit_ids.size, np.nan)
    else:
        on_m, off_m = inp.mean[:, on[0]], inp.mean[:, off[0]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(off_m > 0, on_m / off_m, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        sustained = np.mean(psth, 1) / np.max(psth, 1)
    return {"on_off_ratio_fl": ratio, "sustained_idx_fl": sustained}


# --- receptive field mapping ---------------------------------------------------------------------


def _rf_matrix(summed: np.ndarray, table: pd.DataFrame, ids: np.ndarray) -> xr.DataArray:
    """(y_position, x_position, unit_id) summed counts; y is AllenSDK's 40 - y_position.

    Integer counts; float32 with NaN at positions never shown, as AllenSDK's table has it (its
    thresholding and fit then give NaN for every unit)."""
    y = 40.0 - table["y_position"].to_numpy(np.float64)
    x = table["x_position"].to_numpy(np.float64)
    ys, yi = np.unique(y, return_inverse=True)
    xs, xi = np.unique(x, return_inverse=True)
    rf = np.zeros((ys.size, xs.size, ids.size), np.int64)
    np.add.at(rf, (yi, xi), np.asarray(summed, dtype=np.int64))
    shown = np.zeros((ys.size, xs.size), bool)
    shown[yi, xi] = True
    if not shown.all():  # AllenSDK's groupby().sum().to_xarray(): NaN there, float32
        rf = np.where(shown[:, :, None], rf, np.nan).astype(np.float32)
    return xr.DataArray(
        rf, name="spike_counts", dims=("y_position", "x_position", "unit_id"),
        coords={"y_position": ys, "x_position": xs, "unit_id": ids},
    )  # fmt: skip


def receptive_fields(
    ds: xr.Dataset, unit_ids: Any = None, *, stimulus_key: str | None = None
) -> xr.DataArray:
    """AllenSDK's ``ReceptiveFieldMapping(session).receptive_fields["spike_counts"]`` (eager).

    Spike counts of each unit in the two bins of ``linspace(0, 0.249, 3)`` after each Gabor
    onset, summed per position: dims (y_position, x_position, unit_id), where y_position is
    AllenSDK's ``40 - y_position`` (ascending, so row 0 is the top of the screen).
    """
    spec = ANALYSES["receptive_field_mapping"]
    tables = _Tables.of(ds)
    key = _stimulus_key(tables, spec, stimulus_key)
    if key is None:
        raise KeyError(
            f"ReceptiveFieldMapping: {_session_label(ds)} has no Gabor stimulus "
            f"({list(spec.keys)}); its stimuli are {tables.names}"
        )
    table = tables.stimulus(key)
    ids = _unit_ids(ds, unit_ids)
    counts = ecephys.presentationwise_spike_counts(ds, _RF_EDGES, table.index.to_numpy(), ids)
    return _rf_matrix(compute(counts.data.sum(1))[0], table, ids)


def _categories(table: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """AllenSDK's ``stim_table_to_categories``: combinations numbered in lexicographic order
    of the sorted unique values, only those that occur."""
    codes = []
    for c in columns:
        _, inv = np.unique(table[c].to_numpy(), return_inverse=True)
        codes.append(inv)
    key = np.ravel_multi_index(codes, [c.max() + 1 for c in codes])
    return np.unique(key, return_inverse=True)[1]


def _chi(events: np.ndarray, dummy: np.ndarray, per_condition: np.ndarray) -> np.ndarray:
    """AllenSDK's ``compute_chi`` of (draws, sweeps) events against (sweeps, categories)."""
    observed = events @ dummy
    expected = per_condition[None, :] * np.mean(events, axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        chi = np.where(expected > 0, (observed - expected) ** 2 / expected, 0.0)
    return np.sum(chi, axis=1)


def _chisq_p(events: np.ndarray, dummy: np.ndarray, rng: np.random.RandomState) -> float:
    """AllenSDK's ``compute_chi_shuffle`` p value for one unit (1000 resamplings)."""
    n = events.size
    per_condition = dummy.sum(0)
    actual = _chi(events[None, :], dummy, per_condition)[0]
    draws = rng.randint(0, n, size=(1000, n))  # = 1000 successive np.random.choice(n, (n,))
    shuffled = _chi(events[draws], dummy, per_condition)
    return float(np.mean(actual < shuffled))


def _gaussian_moments(data: np.ndarray):
    total = data.sum()
    height = data.max()
    yy, xx = np.indices(data.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy, cx = (yy * data).sum() / total, (xx * data).sum() / total
    if not (np.isfinite(cy) and np.isfinite(cx)):
        return None
    col, row = data[:, int(cx)], data[int(cy), :]
    with np.errstate(invalid="ignore", divide="ignore"):
        wy = np.sqrt(np.abs((np.arange(row.size) - cy) ** 2 * row).sum() / row.sum())
        wx = np.sqrt(np.abs((np.arange(col.size) - cx) ** 2 * col).sum() / col.sum())
    return height, cy, cx, wy, wx


def _fit_gaussian(matrix: np.ndarray) -> np.ndarray:
    """AllenSDK's ``fit_2d_gaussian`` (least squares from the moments)."""
    params = _gaussian_moments(matrix)
    if params is None:
        return np.full(5, np.nan)
    yy, xx = np.indices(matrix.shape)

    def error(p):
        h, cy, cx, wy, wx = p
        return np.ravel(h * np.exp(-(((cy - yy) / wy) ** 2 + ((cx - xx) / wx) ** 2) / 2) - matrix)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit, _ = leastsq(error, params)
    return fit


def _threshold_rf(rf: np.ndarray, threshold: float) -> tuple[np.ndarray, float, float, float]:
    """AllenSDK's ``threshold_rf``: mask, centre of mass (x, y) and area in pixels."""
    filtered = ndi.gaussian_filter(rf, 1)
    mask = filtered > np.max(filtered) - np.std(filtered) * threshold
    labels, _ = ndi.label(mask)
    best = np.argmax(ndi.maximum(filtered, labels=labels, index=np.unique(labels)))
    labels[labels != best] = 0
    labels[labels > 0] = 1
    with np.errstate(invalid="ignore", divide="ignore"):
        cy, cx = ndi.center_of_mass(labels)
    return labels, np.around(cx, 4), np.around(cy, 4), float(np.sum(labels))


def _rf_stats(
    rf: xr.DataArray, counts: np.ndarray, table: pd.DataFrame, seed: int | None
) -> dict[str, np.ndarray]:
    """AllenSDK's ``_get_rf_stats`` for every unit (minimum 10 spikes, mask threshold 0.5)."""
    n_u = counts.shape[1]
    names = ("azimuth_rf", "elevation_rf", "width_rf", "height_rf", "area_rf", "p_value_rf")
    out = {k: np.full(n_u, np.nan) for k in names}
    out["on_screen_rf"] = np.zeros(n_u, bool)
    flipped = table.assign(y_position=40.0 - table["y_position"].to_numpy(np.float64))
    cats = _categories(flipped, ["x_position", "y_position"])
    dummy = np.zeros((cats.size, cats.max() + 1))
    dummy[np.arange(cats.size), cats] = 1.0
    rng = np.random.RandomState(seed)
    for j in range(n_u):
        events = counts[:, j]
        if np.sum(events) < 10.0:
            continue
        p_value = _chisq_p(events, dummy, rng)
        field = rf.values[:, :, j]
        mask, azimuth, elevation, area = _threshold_rf(field, 0.5)
        edge = np.zeros(mask.shape)
        edge[:, 0] = edge[:, -1] = edge[0, :] = edge[-1, :] = 1
        if np.sum(mask * edge) > np.sum(edge) / 2:  # is_rf_inverted
            field = np.max(field) - field
        _, cy, cx, wy, wx = _fit_gaussian(field)
        out["on_screen_rf"][j] = bool(0 < cy < field.shape[0] and 0 < cx < field.shape[1])
        out["azimuth_rf"][j] = azimuth * 10 + 10
        out["elevation_rf"][j] = (8 - elevation) * 10 - 30
        out["width_rf"][j], out["height_rf"][j] = wx * 10, wy * 10
        out["area_rf"][j] = area * 100
        out["p_value_rf"][j] = p_value
    return out


# --- every analysis ------------------------------------------------------------------------------


def stimulus_metrics(
    ds: xr.Dataset,
    analysis: str | None = None,
    unit_ids: Any = None,
    *,
    stimulus_key: str | None = None,
    trial_duration: float | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """AllenSDK's stimulus-analysis metrics: one analysis, or all the session allows (eager).

    Parameters
    ----------
    ds
        A Visual Coding Neuropixels ``ecephys_session`` Dataset.
    analysis
        ``"drifting_gratings"``, ``"static_gratings"``, ``"natural_scenes"``, ``"flashes"``,
        ``"dot_motion"`` or ``"receptive_field_mapping"`` (:data:`ANALYSES`): AllenSDK's
        ``<Analysis>(session).metrics``. None: every analysis whose stimulus the session
        presents, joined on ``unit_id`` in the order of :data:`ANALYSES`.
    unit_ids
        Units in output order (AllenSDK's ``filter`` list); default the QC-filtered units.
    stimulus_key
        With ``analysis``: the ``stimulus_name`` to analyse; default AllenSDK's guess from its
        known keys.
    trial_duration
        With ``analysis``: seconds counted after each onset; default AllenSDK's.
    seed
        Seed of the ``p_value_rf`` shuffles (see the module doc); None: unseeded, as AllenSDK.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``unit_id``, AllenSDK's columns in AllenSDK's order.

    Raises
    ------
    KeyError
        If the session has no stimulus for the analysis, or none for any (names the session,
        its session type and its stimuli).
    SchemaError
        If the session is a Visual Behavior Neuropixels one.
    """
    if analysis is not None:
        return analysis_metrics(
            ds, analysis, unit_ids, stimulus_key=stimulus_key,
            trial_duration=trial_duration, seed=seed,
        )  # fmt: skip
    if stimulus_key is not None or trial_duration is not None:
        raise ValueError("stimulus_key and trial_duration apply to one named analysis")
    if ecephys.session_class(ds) != "EcephysSession":
        raise SchemaError(
            f"the stimulus analyses need a Visual Coding Neuropixels session (AllenSDK's "
            f"EcephysSession); {_session_label(ds)} is a {ecephys.session_class(ds)}"
        )
    ids = _unit_ids(ds, unit_ids)
    tables = _Tables.of(ds)
    frames = [
        _analysis_metrics(ds, tables, spec, ids, None, None, seed)
        for spec in ANALYSES.values()
        if _stimulus_key(tables, spec, None) is not None
    ]
    if not frames:
        raise KeyError(
            f"{_session_label(ds)} presents none of the analysed stimuli "
            f"({[k for s in ANALYSES.values() for k in s.keys]}); its stimuli are {tables.names}"
        )
    return pd.concat(frames, axis=1)


# --- optotagging ---------------------------------------------------------------------------------

#: The Allen optotagging tutorial's windows (s after pulse onset) and its tagging rule.
OPTO_BASELINE = (-0.010, -0.002)
OPTO_EVOKED = (0.001, 0.009)


def optotagging_metrics(ds: xr.Dataset, unit_ids: Any = None) -> pd.DataFrame:
    """Per unit and light condition: baseline and evoked firing rates around each pulse.

    As the Allen Visual Coding Neuropixels optotagging tutorial computes them: spikes in
    [-10, -2) ms (baseline) and [1, 9) ms (evoked) after the onset of each trial of
    ``optogenetic_stimulation_epochs``, averaged over the trials of each (stimulus_name,
    duration, level) and divided by the 8 ms window. ``evoked_ratio_opto`` is
    evoked / (baseline + 1); the tutorial calls a unit Cre-positive when it is > 2 for the
    10 ms pulses.

    Returns
    -------
    pandas.DataFrame
        Indexed by (unit_id, stimulus_name, duration, level), with ``trial_count``,
        ``baseline_rate_opto``, ``evoked_rate_opto`` (spikes/s) and ``evoked_ratio_opto``.

    Raises
    ------
    KeyError
        If the session has no optogenetic stimulation table.
    """
    epochs = ecephys.optogenetic_stimulation_epochs(ds)
    if epochs is None or len(epochs) == 0:
        raise KeyError(f"{_session_label(ds)} has no optogenetic_stimulation_epochs")
    ids = _unit_ids(ds, unit_ids)
    onset = epochs["start_time"].to_numpy(np.float64)
    windows = np.concatenate([onset[:, None] + np.array(OPTO_BASELINE)[None, :],
                              onset[:, None] + np.array(OPTO_EVOKED)[None, :]])  # fmt: skip
    counts = compute([dask.delayed(_interval_counts)(s, windows) for s in _unit_spikes(ds, ids)])[0]
    counts = np.stack(counts, 1).astype(np.float64)  # (2 × trials, U)
    n = onset.size
    keys = ["stimulus_name", "duration", "level"]
    groups = epochs.reset_index(drop=True).groupby(keys, sort=True).indices
    rows = []
    for key, idx in groups.items():
        base = counts[idx].mean(0) / (OPTO_BASELINE[1] - OPTO_BASELINE[0])
        evoked = counts[n + idx].mean(0) / (OPTO_EVOKED[1] - OPTO_EVOKED[0])
        rows.append(pd.DataFrame({
            "unit_id": ids, "stimulus_name": key[0], "duration": key[1], "level": key[2],
            "trial_count": idx.size, "baseline_rate_opto": base, "evoked_rate_opto": evoked,
            "evoked_ratio_opto": evoked / (base + 1.0),
        }))  # fmt: skip
    frame = pd.concat(rows, ignore_index=True).sort_values(["unit_id", *keys], kind="stable")
    return frame.set_index(["unit_id", *keys])
