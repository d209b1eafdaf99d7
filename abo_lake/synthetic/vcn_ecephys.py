"""Synthetic Visual Coding Neuropixels sessions: a session NWB 2 file plus one LFP file per probe.

The files follow the real layout of ``ALLEN_DATA.md`` §1, group for group, using NWB core types
(the ``ndx-aibs-ecephys`` extension is not installable): ``general/devices/probeX`` (Device with
the Allen attributes ``sampling_rate`` and ``probe_id`` added), ``general/extracellular_ephys``
(electrodes with the Allen columns), ``units`` (Allen QC columns, ragged ``spike_times`` and
``spike_amplitudes``, ``waveform_mean`` stacked as (n_units·384, 82) with an index),
``intervals/<stimulus>_presentations``, ``intervals/invalid_times``, ``processing/running``,
``processing/optotagging`` and ``processing/stimulus/timestamps``. Each probe file holds the LFP
of every 4th channel at ``acquisition/probe_<pid>_lfp/probe_<pid>_lfp_data`` (linked at
``acquisition/probe_<pid>_lfp_data``) and a flash-evoked CSD at
``processing/current_source_density/ecephys_csd``.

Units are Poisson neurons tuned to the drifting gratings (von Mises in direction × Gaussian in
log temporal frequency, with an F1 modulation at the grating's frequency), with ON/OFF flash
responses, sparse natural-scene responses and optotagged cells. The ground truth is written to
``session_<id>.truth.json`` beside the session file; read it with :func:`ground_truth`.

With ``fc_stimuli=True`` the session also presents two stimuli of Allen's Functional Connectivity
sessions, after the Gabors: ``drifting_gratings_contrast`` (4 orientations × 9 contrasts at
2 Hz, 0.5 s on / 0.5 s gray, the rows AllenSDK's ``DriftingGratings`` fits ``c50_dg`` to) and
``dot_motion`` (``Dir`` 8 directions × ``Speed`` 5 speeds, 1 s on / 1 s gray, with the FC
columns ``coherence``, ``dotLife``, ``dotSize``, ``fieldPos``, ``fieldShape``, ``fieldSize``,
``nDots``). Units respond to contrast through a Naka-Rushton curve (truth ``c50``,
``contrast_n``) times their grating tuning at 2 Hz, and to dots through von Mises direction ×
log-Gaussian speed tuning (``pref_dir``, ``pref_speed``, ``dm_gain``). Those draws come from a
separate generator, so without the option the files are the same as before it existed.
"""

from __future__ import annotations

import datetime
import json
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, ElementIdentifiers, VectorData, VectorIndex
from pynwb import NWBFile, TimeSeries
from pynwb.ecephys import LFP, ElectricalSeries
from pynwb.epoch import TimeIntervals
from pynwb.file import ElectrodesTable
from pynwb.misc import Units
from scipy import signal

from abo_lake.synthetic import _allen_nwb as allen

__all__ = ["DEFAULT_SESSION_ID", "ORIENTATIONS", "TEMPORAL_FREQUENCIES", "ground_truth", "write"]

DEFAULT_SESSION_ID = 715093703
ORIENTATIONS = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)
TEMPORAL_FREQUENCIES = (1.0, 2.0, 4.0, 8.0, 15.0)
N_CHANNELS = 384
N_WAVEFORM_SAMPLES = 82
SAMPLING_RATE = 29999.949
LFP_RATE = 1250.0
FRAME_RATE = 60.0
_PROBES = ("probeA", "probeB", "probeC", "probeD", "probeE", "probeF")
_AREAS = ("VISp", "VISl", "VISam", "VISpm", "VISal", "VISrl")
_THALAMUS = ("LGd", "LP", "LGd", "LP", "LP", "LGd")
_HORIZONTAL = (43, 11, 59, 27)
# Cortical layers (acronym suffix, bottom, top) in µm from the cortical floor, 1000 µm thick.
_LAYERS = (
    ("6b", 0, 30),
    ("6a", 30, 250),
    ("5", 250, 500),
    ("4", 500, 650),
    ("2/3", 650, 900),
    ("1", 900, 1000),
)
_FLASH_ISI = 2.0
_DG_ON, _DG_OFF = 2.0, 1.0
# Functional Connectivity stimuli (fc_stimuli=True)
CONTRAST_ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)
CONTRASTS = (0.01, 0.02, 0.04, 0.08, 0.13, 0.2, 0.35, 0.6, 1.0)
CONTRAST_TF = 2.0
DOT_DIRECTIONS = ORIENTATIONS
DOT_SPEEDS = (0.001, 0.005, 0.01, 0.02, 0.04)
_CONTRAST_ON, _CONTRAST_OFF = 0.5, 0.5
_DOT_ON, _DOT_OFF = 1.0, 1.0


@dataclass(frozen=True)
class _Scale:
    n_probes: int
    units_per_probe: int
    dg_repeats: int
    n_flashes: int
    ns_repeats: int
    spont_s: float
    lfp_s: float
    opto_repeats: int
    n_static: int
    n_gabors: int
    gabor_repeats: int
    fc_repeats: int = 3  # repeats of each contrast and dot-motion condition (fc_stimuli)


_SCALES = {
    "tiny": _Scale(2, 12, 3, 20, 1, 10.0, 10.0, 2, 30, 81, 1),
    "realistic": _Scale(6, 100, 15, 150, 50, 300.0, 600.0, 20, 600, 729, 3, 15),
    # small, but every Gabor position shown and repeated conditions: stimulus-metric parity
    "metrics": _Scale(2, 12, 6, 40, 2, 10.0, 2.0, 3, 120, 243, 1, 6),
}


def ground_truth(session_file: str | Path) -> dict[str, Any]:
    """Return the ground truth written beside a synthetic session file.

    Parameters
    ----------
    session_file
        ``session_<id>.nwb`` written by :func:`write`.

    Returns
    -------
    dict
        ``session_id``, ``probes`` (name -> probe_id, area, thalamus, layer bounds and the
        L4 centre as probe vertical positions in µm) and ``units`` (column -> list aligned with
        ``units["unit_id"]``: tuned, pref_ori (direction, deg), pref_tf (Hz), kappa, r_max,
        baseline_rate, f1_mod, on_gain, off_gain, opto_tagged).
    """
    p = Path(session_file)
    return json.loads(p.with_name(p.stem + ".truth.json").read_text())


def write(
    out_dir: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    session_id: int | None = None,
    fc_stimuli: bool = False,
) -> list[Path]:
    """Write one synthetic VCN session and its probe LFP files.

    Parameters
    ----------
    out_dir
        Folder to write into; files go to ``session_<id>/``.
    scale
        ``"tiny"`` (2 probes, 24 units, 10 s of LFP), ``"metrics"`` (tiny with 6 grating
        repeats and every Gabor position shown: stimulus-metric parity) or ``"realistic"``
        (6 probes, 600 units, ~20 M spikes, 10 min of LFP).
    seed
        Seed of ``np.random.default_rng``; the same seed gives byte-identical arrays.
    session_id
        ``ecephys_session_id``; default ``715093703 + seed``.
    fc_stimuli
        Also present the Functional Connectivity ``drifting_gratings_contrast`` and
        ``dot_motion`` stimuli (module doc); False writes exactly what it wrote before.

    Returns
    -------
    list of Path
        The session file, then one LFP file per probe. The ground truth
        (``session_<id>.truth.json``) is written beside the session file but not listed.

    Examples
    --------
    >>> paths = write("/tmp/vcn", scale="tiny", seed=0)  # doctest: +SKIP
    """
    if scale not in _SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(_SCALES)}")
    sc = _SCALES[scale]
    rng = np.random.default_rng(seed)
    sid = int(DEFAULT_SESSION_ID + seed if session_id is None else session_id)
    folder = Path(out_dir) / f"session_{sid}"
    folder.mkdir(parents=True, exist_ok=True)

    probes = [_probe(k, sid, rng) for k in range(sc.n_probes)]
    fc_rng = np.random.default_rng([seed, 0xFC]) if fc_stimuli else None
    stim = _schedule(sc, rng, fc_rng)
    units = _units(probes, sc.units_per_probe, rng)
    if fc_rng is not None:
        units["truth"].update(_fc_tuning(units["truth"]["unit_id"].size, fc_rng))
    spikes = _spikes(units, stim, rng)
    running = _running(stim["duration"], rng)
    eye = _eye(stim["duration"], np.random.default_rng([seed, 0xE7E]))

    session_path = folder / f"session_{sid}.nwb"
    _write_session(session_path, sid, probes, units, spikes, stim, running, eye)
    paths = [session_path]
    for probe in probes:
        lfp_path = folder / f"probe_{probe['probe_id']}_lfp.nwb"
        _write_lfp(lfp_path, sid, probe, stim, sc.lfp_s, rng)
        paths.append(lfp_path)
    truth = {
        "session_id": sid,
        "probes": {p["name"]: {k: p[k] for k in p["truth_keys"]} for p in probes},
        "units": {k: [_jsonable(x) for x in v] for k, v in units["truth"].items()},
    }
    session_path.with_name(session_path.stem + ".truth.json").write_text(json.dumps(truth))
    return paths


def _jsonable(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _structures() -> dict[str, int]:
    text = resources.files("abo_lake.synthetic").joinpath("data/structures.json").read_text()
    return {s["acronym"]: s["id"] for s in json.loads(text)}


def _probe(k: int, sid: int, rng: np.random.Generator) -> dict[str, Any]:
    """Geometry, CCF track and structure labels of one probe's 384 channels."""
    ch = np.arange(N_CHANNELS)
    vertical = 20 * (ch // 2) + 20
    horizontal = np.asarray(_HORIZONTAL)[ch % 4]
    shift = float(rng.uniform(-100.0, 100.0))
    area, thal = _AREAS[k], _THALAMUS[k]
    ctx_floor = 1800.0 + shift
    surface = ctx_floor + 1000.0
    # (top of segment in µm from the tip, acronym); "" = unlabelled tissue, "None" = outside
    segments = [
        (300.0 + shift, thal),
        (700.0 + shift, "LP"),
        (800.0 + shift, ""),
        (950.0 + shift, "DG-po"),
        (1050.0 + shift, "DG-sg"),
        (1250.0 + shift, "DG-mo"),
        (1650.0 + shift, "CA1"),
        (ctx_floor, ""),
        (surface, area),
        (np.inf, "None"),
    ]
    tops = np.array([s[0] for s in segments])
    location = np.array([s[1] for s in segments])[np.searchsorted(tops, vertical, side="right")]
    known = _structures()
    for acr in set(location) - {"", "None"}:
        if acr not in known:  # pragma: no cover - guards the vendored ontology
            raise ValueError(f"structure {acr!r} is not in the vendored CCF ontology")
    # Straight track: entry point on the surface, unit vector pointing into the brain.
    entry = np.array([rng.uniform(7800, 9200), rng.uniform(1100, 1300), rng.uniform(7600, 9400)])
    direction = np.array([rng.uniform(-0.3, 0.3), 1.0, rng.uniform(-0.15, 0.15)])
    direction /= np.linalg.norm(direction)
    xyz = entry[None, :] + (surface - vertical)[:, None] * direction[None, :]
    valid = np.ones(N_CHANNELS, bool)
    valid[191] = False  # the Neuropixels 1.0 reference channel
    probe_id = sid + 1 + k
    layers = {f"L{name}": [ctx_floor + lo, ctx_floor + hi] for name, lo, hi in _LAYERS}
    return {
        "index": k,
        "name": _PROBES[k],
        "probe_id": probe_id,
        "area": area,
        "thalamus": thal,
        "channel_id": probe_id * 1000 + ch,
        "vertical": vertical.astype(np.int64),
        "horizontal": horizontal.astype(np.int64),
        "location": location,
        "xyz": xyz,
        "valid": valid,
        "surface_vertical_position": surface,
        "layers": layers,
        "l4_center_vertical_position": float(np.mean(layers["L4"])),
        "truth_keys": (
            "probe_id",
            "area",
            "thalamus",
            "surface_vertical_position",
            "layers",
            "l4_center_vertical_position",
        ),
    }


def _schedule(
    sc: _Scale, rng: np.random.Generator, fc_rng: np.random.Generator | None = None
) -> dict[str, Any]:
    """Stimulus blocks: flashes, spontaneous, gratings, spontaneous, scenes, static gratings,
    Gabors, (with ``fc_rng``: contrast gratings, dot motion), optotagging."""
    tables: dict[str, dict[str, np.ndarray]] = {}
    t = 1.0
    colors = rng.permutation(np.repeat([1.0, -1.0], (sc.n_flashes + 1) // 2)[: sc.n_flashes])
    starts = t + _FLASH_ISI * np.arange(sc.n_flashes)
    tables["flashes"] = {"start_time": starts, "stop_time": starts + 0.25, "color_value": colors}
    t = starts[-1] + _FLASH_ISI
    spont = [(t, t + sc.spont_s / 2)]
    t += sc.spont_s / 2 + 1.0
    conds = np.array([(o, f) for o in ORIENTATIONS for f in TEMPORAL_FREQUENCIES])
    order = np.concatenate([rng.permutation(len(conds)) for _ in range(sc.dg_repeats)])
    starts = t + (_DG_ON + _DG_OFF) * np.arange(order.size)
    tables["drifting_gratings"] = {
        "start_time": starts,
        "stop_time": starts + _DG_ON,
        "orientation": conds[order, 0],
        "temporal_frequency": conds[order, 1],
    }
    t = starts[-1] + _DG_ON + _DG_OFF
    spont.append((t, t + sc.spont_s / 2))
    t += sc.spont_s / 2 + 1.0
    frames = np.concatenate([rng.permutation(np.arange(-1, 118)) for _ in range(sc.ns_repeats)])
    starts = t + 0.25 * np.arange(frames.size)
    tables["natural_scenes"] = {
        "start_time": starts,
        "stop_time": starts + 0.25,
        "frame": frames.astype(np.float64),
    }
    t = starts[-1] + 0.25 + 1.0
    tables.update(_gratings_and_gabors(sc, t, np.random.default_rng(rng.integers(2**32))))
    if fc_rng is not None:
        t = max(float(v["stop_time"][-1]) for v in tables.values()) + 1.0
        tables.update(_fc_tables(sc, t, fc_rng))
    t = max(float(v["stop_time"][-1]) for v in tables.values())
    tables["spontaneous"] = {
        "start_time": np.array([s for s, _ in spont]),
        "stop_time": np.array([e for _, e in spont]),
    }
    # Optotagging: 3 waveforms × 3 levels × repeats, after the visual stimuli.
    kinds = [
        ("pulse", "a single square pulse", 0.005),
        ("pulse", "a single square pulse", 0.01),
        ("raised_cosine", "half-period of a cosine wave", 1.0),
    ]
    combos = [(i, lv) for i in range(3) for lv in (0.5, 1.0, 1.5)]
    order = np.concatenate([rng.permutation(len(combos)) for _ in range(sc.opto_repeats)])
    t += 2.0
    starts = t + np.cumsum(np.r_[0.0, rng.uniform(1.5, 2.0, order.size - 1)])
    kind = np.array([combos[i][0] for i in order])
    opto = {
        "start_time": starts,
        "stop_time": starts + np.array([kinds[i][2] for i in kind]),
        "condition": np.array([kinds[i][1] for i in kind]),
        "level": np.array([combos[i][1] for i in order]),
        "duration": np.array([kinds[i][2] for i in kind]),
        "stimulus_name": np.array([kinds[i][0] for i in kind]),
    }
    return {"tables": tables, "opto": opto, "duration": float(opto["stop_time"][-1] + 2.0)}


def _gratings_and_gabors(sc: _Scale, t: float, rng: np.random.Generator) -> dict[str, dict]:
    """Static gratings then Gabor patches, 250 ms each, as in brain_observatory_1.1."""
    conds = np.array(
        [
            (o, f, p)
            for o in (0.0, 30.0, 60.0, 90.0, 120.0, 150.0)
            for f in (0.02, 0.04, 0.08, 0.16, 0.32)
            for p in (0.0, 0.25, 0.5, 0.75)
        ]
    )
    pick = rng.choice(len(conds), sc.n_static, replace=sc.n_static > len(conds))
    starts = t + 0.25 * np.arange(pick.size)
    out = {
        "static_gratings": {
            "start_time": starts,
            "stop_time": starts + 0.25,
            "orientation": conds[pick, 0],
            "spatial_frequency": conds[pick, 1],
            "phase": np.array([repr(float(p)) for p in conds[pick, 2]]),
        }
    }
    t = starts[-1] + 0.25 + 1.0
    grid = np.arange(-40.0, 41.0, 10.0)
    gabor = np.array([(o, x, y) for o in (0.0, 45.0, 90.0) for x in grid for y in grid])
    order = np.concatenate([rng.permutation(len(gabor)) for _ in range(sc.gabor_repeats)])
    order = order[: sc.n_gabors]
    starts = t + 0.25 * np.arange(order.size)
    out["gabors"] = {
        "start_time": starts,
        "stop_time": starts + 0.25,
        "orientation": gabor[order, 0],
        "x_position": gabor[order, 1],
        "y_position": gabor[order, 2],
    }
    return out


def _fc_tables(sc: _Scale, t: float, rng: np.random.Generator) -> dict[str, dict]:
    """Contrast-tuning gratings then dot motion, each condition ``fc_repeats`` times, shuffled."""
    conds = np.array([(o, c) for o in CONTRAST_ORIENTATIONS for c in CONTRASTS])
    order = np.concatenate([rng.permutation(len(conds)) for _ in range(sc.fc_repeats)])
    starts = t + (_CONTRAST_ON + _CONTRAST_OFF) * np.arange(order.size)
    out = {
        "drifting_gratings_contrast": {
            "start_time": starts,
            "stop_time": starts + _CONTRAST_ON,
            "orientation": conds[order, 0],
            "contrast": conds[order, 1],
            "temporal_frequency": np.full(order.size, CONTRAST_TF),
        }
    }
    t = starts[-1] + _CONTRAST_ON + _CONTRAST_OFF + 1.0
    conds = np.array([(d, v) for d in DOT_DIRECTIONS for v in DOT_SPEEDS])
    order = np.concatenate([rng.permutation(len(conds)) for _ in range(sc.fc_repeats)])
    starts = t + (_DOT_ON + _DOT_OFF) * np.arange(order.size)
    out["dot_motion"] = {
        "start_time": starts,
        "stop_time": starts + _DOT_ON,
        "Dir": conds[order, 0],
        "Speed": conds[order, 1],
    }
    return out


def _fc_tuning(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Contrast and dot-motion tuning of ``n`` units (ground truth)."""
    return {
        "c50": rng.uniform(0.05, 0.5, n),
        "contrast_n": rng.uniform(1.5, 3.0, n),
        "pref_dir": rng.choice(np.asarray(DOT_DIRECTIONS), n),
        "pref_speed": rng.choice(np.asarray(DOT_SPEEDS), n),
        "dm_gain": np.where(rng.random(n) < 0.7, rng.uniform(8.0, 30.0, n), 0.0),
    }


def _units(probes: list[dict[str, Any]], n_per: int, rng: np.random.Generator) -> dict[str, Any]:
    """Unit QC table, waveforms and the tuning ground truth."""
    rows: dict[str, list[np.ndarray]] = {"probe": [], "peak": [], "local_index": [], "cluster": []}
    for p in probes:
        ok = np.flatnonzero(p["valid"] & ~np.isin(p["location"], ["", "None"]))
        peak = np.sort(rng.choice(ok, n_per, replace=False))
        rows["probe"].append(np.full(n_per, p["index"]))
        rows["peak"].append(peak)
        rows["local_index"].append(np.arange(n_per))
        rows["cluster"].append(np.sort(rng.choice(3 * n_per, n_per, replace=False)))
    probe_ix, peak, local_index, cluster = (np.concatenate(rows[k]) for k in rows)
    n = probe_ix.size
    pid = np.array([probes[i]["probe_id"] for i in probe_ix])
    tuned = rng.random(n) < 0.7
    truth = {
        "unit_id": (pid * 1000 + 500 + local_index).astype(np.int64),
        "tuned": tuned,
        "pref_ori": rng.choice(np.asarray(ORIENTATIONS), n),
        "pref_tf": rng.choice(np.asarray(TEMPORAL_FREQUENCIES), n),
        "kappa": rng.uniform(2.0, 5.0, n),
        "null_gain": rng.uniform(0.1, 0.6, n),
        "r_max": np.where(tuned, rng.uniform(15.0, 40.0, n), 0.0),
        "baseline_rate": rng.lognormal(np.log(6.0), 0.5, n).clip(0.5, 15.0),
        "f1_mod": rng.uniform(0.0, 0.9, n),
        "on_gain": rng.uniform(0.0, 1.0, n),
        "off_gain": rng.uniform(0.0, 1.0, n),
        "ns_gain": rng.uniform(2.0, 10.0, n),
        "opto_tagged": rng.random(n) < 0.1,
    }
    amplitude = rng.uniform(80.0, 400.0, n)  # µV
    duration = rng.uniform(0.2, 0.8, n)  # ms, trough to peak
    spread = rng.uniform(40.0, 120.0, n)  # µm
    qc = {
        "PT_ratio": rng.uniform(0.2, 1.0, n),
        "amplitude": amplitude,
        "amplitude_cutoff": rng.beta(1.0, 12.0, n),
        "cluster_id": cluster.astype(np.int64),
        "cumulative_drift": rng.uniform(20.0, 400.0, n),
        "d_prime": rng.uniform(1.0, 8.0, n),
        "isi_violations": rng.exponential(0.3, n),
        "isolation_distance": rng.uniform(20.0, 120.0, n),
        "l_ratio": rng.exponential(0.05, n),
        "local_index": local_index.astype(np.int64),
        "max_drift": rng.uniform(5.0, 60.0, n),
        "nn_hit_rate": rng.uniform(0.5, 1.0, n),
        "nn_miss_rate": rng.exponential(0.01, n),
        "peak_channel_id": np.array([probes[i]["channel_id"][c] for i, c in zip(probe_ix, peak)]),
        "presence_ratio": rng.uniform(0.85, 1.0, n).round(2),
        "quality": np.where(rng.random(n) < 0.85, "good", "noise"),
        "recovery_slope": -rng.uniform(0.02, 0.2, n),
        "repolarization_slope": rng.uniform(0.2, 1.2, n),
        "silhouette_score": rng.uniform(0.0, 0.3, n),
        "snr": rng.uniform(1.0, 6.0, n),
        "spread": spread.round(-1),
        "velocity_above": rng.normal(0.2, 0.5, n),
        "velocity_below": rng.normal(0.0, 0.5, n),
        "waveform_duration": duration,
    }
    # Mean waveforms (n, 384, 82) in µV: trough + rebound, Gaussian fall-off around the peak.
    t_ms = np.arange(N_WAVEFORM_SAMPLES) / SAMPLING_RATE * 1e3
    t0 = 0.6
    shape = -np.exp(-((t_ms[None] - t0) ** 2) / (2 * 0.08**2)) + 0.35 * np.exp(
        -((t_ms[None] - t0 - duration[:, None]) ** 2) / (2 * 0.2**2)
    )
    pos = [np.stack([probes[i]["vertical"], probes[i]["horizontal"]], 1) for i in probe_ix]
    d2 = np.stack([((p - p[c]) ** 2).sum(1) for p, c in zip(pos, peak)])
    weight = np.exp(-d2 / (2.0 * spread[:, None] ** 2))
    weight[weight < 1e-3] = 0.0
    waveform = amplitude[:, None, None] * weight[:, :, None] * shape[:, None, :]
    return {"probe_index": probe_ix, "qc": qc, "truth": truth, "waveform_mean": waveform}


def _spikes(units: dict[str, Any], stim: dict[str, Any], rng: np.random.Generator) -> dict:
    """Inhomogeneous Poisson spike trains: a piecewise-constant rate per (unit, segment)."""
    tr = units["truth"]
    base = tr["baseline_rate"]
    segs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # start, stop, rate, tf

    def add(start: np.ndarray, stop: np.ndarray, extra: np.ndarray, tf: np.ndarray | None = None):
        tf = np.zeros(start.size) if tf is None else tf
        segs.append((start, stop, base[:, None] + extra, tf))

    fl = stim["tables"]["flashes"]
    gain = np.where(fl["color_value"][None, :] > 0, tr["on_gain"][:, None], tr["off_gain"][:, None])
    add(fl["start_time"] + 0.03, fl["start_time"] + 0.1, 40.0 * gain)
    add(fl["start_time"] + 0.1, fl["stop_time"], 8.0 * gain)
    dg = stim["tables"]["drifting_gratings"]
    dtheta = np.deg2rad(dg["orientation"][None, :] - tr["pref_ori"][:, None])
    vm = np.exp(tr["kappa"][:, None] * (np.cos(dtheta) - 1.0))
    vm += tr["null_gain"][:, None] * np.exp(tr["kappa"][:, None] * (np.cos(dtheta + np.pi) - 1))
    octaves = np.log2(dg["temporal_frequency"][None, :] / tr["pref_tf"][:, None])
    drive = tr["r_max"][:, None] * vm * np.exp(-(octaves**2) / 2.0)
    # Rate base + drive·(1 + m·cos(2π·tf·t)): draw at the peak rate, then thin.
    add(
        dg["start_time"],
        dg["stop_time"],
        drive * (1 + tr["f1_mod"][:, None]),
        dg["temporal_frequency"],
    )
    if "drifting_gratings_contrast" in stim["tables"]:
        cg = stim["tables"]["drifting_gratings_contrast"]
        dtheta = np.deg2rad(cg["orientation"][None, :] - tr["pref_ori"][:, None])
        vm = np.exp(tr["kappa"][:, None] * (np.cos(dtheta) - 1.0))
        vm += tr["null_gain"][:, None] * np.exp(tr["kappa"][:, None] * (np.cos(dtheta + np.pi) - 1))
        octaves = np.log2(CONTRAST_TF / tr["pref_tf"])[:, None]
        cn = cg["contrast"][None, :] ** tr["contrast_n"][:, None]
        naka = cn / (cn + tr["c50"][:, None] ** tr["contrast_n"][:, None])
        drive = tr["r_max"][:, None] * vm * np.exp(-(octaves**2) / 8.0) * naka
        add(cg["start_time"], cg["stop_time"], drive * (1 + tr["f1_mod"][:, None]),
            cg["temporal_frequency"])  # fmt: skip
        dm = stim["tables"]["dot_motion"]
        dtheta = np.deg2rad(dm["Dir"][None, :] - tr["pref_dir"][:, None])
        octaves = np.log2(dm["Speed"][None, :] / tr["pref_speed"][:, None])
        drive = tr["dm_gain"][:, None] * np.exp(3.0 * (np.cos(dtheta) - 1.0) - octaves**2 / 4.0)
        add(dm["start_time"] + 0.05, dm["stop_time"], drive)
    ns = stim["tables"]["natural_scenes"]
    selectivity = rng.gamma(0.3, 1.0, (base.size, 118))
    img = ns["frame"].astype(np.int64)
    resp = np.where(img[None, :] >= 0, selectivity[:, img.clip(0)], 0.0)
    add(ns["start_time"] + 0.04, ns["stop_time"], tr["ns_gain"][:, None] * resp)
    op = stim["opto"]
    add(
        op["start_time"] + 0.002,
        op["stop_time"],
        tr["opto_tagged"][:, None] * 60.0 * op["level"][None, :],
    )
    # Baseline everywhere else: the gaps between the driven segments.
    start = np.concatenate([s[0] for s in segs])
    order = np.argsort(start, kind="stable")
    start = start[order]
    stop = np.concatenate([s[1] for s in segs])[order]
    rate = np.concatenate([s[2] for s in segs], axis=1)[:, order]
    tf = np.concatenate([s[3] for s in segs])[order]
    g_start = np.r_[0.0, stop]
    g_stop = np.r_[start, stim["duration"]]
    start = np.concatenate([start, g_start])
    stop = np.concatenate([stop, g_stop])
    rate = np.concatenate([rate, np.repeat(base[:, None], g_start.size, 1)], axis=1)
    tf = np.concatenate([tf, np.zeros(g_start.size)])
    dur = stop - start

    counts = rng.poisson(rate * dur[None, :])
    seg = np.repeat(np.tile(np.arange(dur.size), base.size), counts.ravel())
    unit = np.repeat(np.arange(base.size), counts.sum(1))
    times = start[seg] + rng.random(seg.size) * dur[seg]
    f1 = tr["f1_mod"][unit]
    phase = np.cos(2 * np.pi * tf[seg] * (times - start[seg]))
    keep = (tf[seg] == 0) | (rng.random(seg.size) * (1 + f1) < 1 + f1 * phase)
    times, unit = times[keep], unit[keep]
    order = np.lexsort((times, unit))
    times, unit = times[order], unit[order]
    index = np.cumsum(np.bincount(unit, minlength=base.size)).astype(np.int64)
    amp = units["qc"]["amplitude"][unit] * 1e-6 * rng.lognormal(0.0, 0.15, unit.size)
    return {"spike_times": times, "spike_amplitudes": amp, "index": index}


def _running(duration: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Running speed at 60 Hz: slow bouts of running plus noise (cm/s)."""
    n = int(duration * FRAME_RATE)
    start = np.arange(n) / FRAME_RATE
    a = np.exp(-1.0 / (10.0 * FRAME_RATE))
    state = signal.lfilter([1 - a], [1, -a], rng.normal(0.0, 12.0, n))
    running = state > 0.0
    speed = np.where(running, 20.0, 0.0) + rng.normal(0.0, 1.0, n)
    speed = signal.lfilter([0.1], [1, -0.9], speed)
    return {
        "start_time": start,
        "end_time": start + 1.0 / FRAME_RATE,
        "velocity": speed,
        "rotation": speed / FRAME_RATE / 6.5,  # wheel radius 6.5 cm -> radians per frame
        "signal_voltage": np.mod(np.cumsum(speed / FRAME_RATE / 6.5) / (2 * np.pi), 1.0) * 5.0,
        "supply_voltage": np.full(n, 5.0),
    }


def _eye(duration: float, rng: np.random.Generator) -> dict[str, Any]:
    """Eye-tracking ellipse fits and gaze mapping at 30 Hz (AllenSDK's VCN layout)."""
    t = 1.0 + np.arange(int((duration - 2.0) * 30.0)) / 30.0
    n = t.size
    slow = signal.lfilter([0.02], [1.0, -0.98], rng.normal(size=(n, 6)), axis=0) * 5.0
    fits = {}
    for j, (name, radius, cx, cy) in enumerate(
        [("pupil", 25.0, 320.0, 240.0), ("cr", 5.0, 330.0, 230.0), ("eye", 140.0, 318.0, 242.0)]
    ):
        width = radius * (1.0 + 0.05 * slow[:, j]) + rng.normal(0, 0.3, n)
        fits[name] = {
            "center_x": cx + slow[:, 3] + rng.normal(0, 0.2, n),
            "center_y": cy + 0.5 * slow[:, 4] + rng.normal(0, 0.2, n),
            "height": width * 0.95,
            "width": width,
            "phi": rng.normal(0.0, 0.05, n),
            "timestamps": t,
        }
    gaze = {}
    for kind, smooth in (("raw", 1), ("filtered", 5)):
        k = np.ones(smooth) / smooth
        yx = np.stack([np.convolve(slow[:, 4], k, "same"), np.convolve(slow[:, 3], k, "same")], 1)
        gaze[kind] = {
            "pupil_area": np.pi * fits["pupil"]["width"] * fits["pupil"]["height"],
            "eye_area": np.pi * fits["eye"]["width"] * fits["eye"]["height"],
            "screen_coordinates": yx * 0.8,  # [y, x] in cm, as AllenSDK stores them
            "screen_coordinates_spherical": yx * 0.9,  # [y, x] in degrees
        }
    return {"t": t, "fits": fits, "gaze": gaze}


def _gzip(data: np.ndarray) -> H5DataIO:
    return H5DataIO(data, compression="gzip", compression_opts=4, shuffle=True)


def _nwbfile(identifier: str, description: str, sid: int, institution: str) -> NWBFile:
    return NWBFile(
        session_description=description,
        identifier=identifier,
        session_id=str(sid),
        session_start_time=datetime.datetime(
            2019, 1, 19, 8, 54, 18, tzinfo=datetime.timezone(datetime.timedelta(hours=-8))
        ),
        institution=institution,
    )


def _specimen(sid: int) -> Any:
    """AllenSDK's EcephysSpecimen subject (layout note 35)."""
    age = int(np.random.default_rng(sid).integers(90, 130))
    donor = sid - 300_000_000
    return allen.extension("EcephysSpecimen")(
        subject_id=str(donor),
        age=f"P{age}D",
        age__reference="birth",
        age_in_days=float(age),
        specimen_name=f"Sst-IRES-Cre;Ai32-{donor}",
        genotype="Sst-IRES-Cre/wt;Ai32(RCL-ChR2(H134R)_EYFP)/wt",
        sex="M",
        species="Mus musculus",
        strain="C57BL/6J",
    )


def _add_probes(nwb: NWBFile, probes: list[dict[str, Any]], rows: np.ndarray) -> None:
    """EcephysProbe devices, EcephysElectrodeGroups and the electrodes table (``rows``)."""
    parts: dict[str, list[Any]] = {}
    for probe in probes:
        name = probe["name"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The 'manufacturer' field is deprecated")
            dev = allen.extension("EcephysProbe")(
                name=name,
                description="Neuropixels 1.0 Probe",
                manufacturer="imec",
                probe_id=int(probe["probe_id"]),
                sampling_rate=SAMPLING_RATE,
            )
        nwb.add_device(dev)
        grp = allen.extension("EcephysElectrodeGroup")(
            name=name,
            description="Ecephys Electrode Group",
            location="See electrode locations",
            device=dev,
            has_lfp_data=True,
            probe_id=int(probe["probe_id"]),
            lfp_sampling_rate=LFP_RATE,
        )
        nwb.add_electrode_group(grp)
        m = rows.size
        cols = {
            "id": probe["channel_id"][rows],
            "location": probe["location"][rows],
            "group": [grp] * m,
            "group_name": np.full(m, name),
            "probe_vertical_position": probe["vertical"][rows],
            "probe_horizontal_position": probe["horizontal"][rows],
            "probe_id": np.full(m, probe["probe_id"], dtype=np.int64),
            "probe_channel_number": rows.astype(np.int64),
            "valid_data": probe["valid"][rows],
            "x": probe["xyz"][rows, 0],
            "y": probe["xyz"][rows, 1],
            "z": probe["xyz"][rows, 2],
            "imp": np.full(m, np.nan),
            "filtering": np.full(m, "AP band: 500 Hz high-pass; LFP band: 1000 Hz low-pass"),
        }
        for k, v in cols.items():
            parts.setdefault(k, []).append(v)
    data = {
        k: ([g for part in v for g in part] if k == "group" else np.concatenate(v))
        for k, v in parts.items()
    }
    columns = [
        VectorData(name=k, description=_ELECTRODE_COLUMNS[k], data=v)
        for k, v in data.items()
        if k != "id"
    ]
    nwb.electrodes = ElectrodesTable(
        id=ElementIdentifiers(name="id", data=data["id"]),
        columns=columns,
        colnames=[c.name for c in columns],
    )


# AllenSDK's (and pynwb's) column descriptions
_ELECTRODE_COLUMNS = {
    "location": "the location of channel within the subject e.g. brain region",
    "group": "a reference to the ElectrodeGroup this electrode is a part of",
    "group_name": "the name of the ElectrodeGroup this electrode is a part of",
    "probe_vertical_position": "Length-wise position of electrode/channel on device (microns)",
    "probe_horizontal_position": "Width-wise position of electrode/channel on device (microns)",
    "probe_id": "The unique id of this electrode's/channel's device",
    "probe_channel_number": "The local index of electrode/channel on device",
    "valid_data": "Whether data from this electrode/channel is usable",
    "x": "the x coordinate of the position (+x is posterior)",
    "y": "the y coordinate of the position (+y is inferior)",
    "z": "the z coordinate of the position (+z is right)",
    "imp": "the impedance of the electrode, in ohms",
    "filtering": "description of hardware filtering, including the filter name and frequency "
    "cutoffs",
}

_COLUMN_DESCRIPTIONS = {
    "start_time": "Start time of epoch, in seconds",
    "stop_time": "Stop time of epoch, in seconds",
    "stimulus_name": "Name of stimulus",
    "stimulus_block": "Index of contiguous presentations of one stimulus type",
    "stimulus_index": "Index of stimulus type",
    "units": "Units of stimulus size",
    "mask": "Shape of mask applied to stimulus",
    "opacity": "Opacity of stimulus",
    "orientation": "Orientation of stimulus",
    "x_position": "Horizontal position of stimulus on screen",
    "y_position": "Vertical position of stimulus on screen",
    "temporal_frequency": "Temporal frequency of stimulus",
    "spatial_frequency": "Spatial frequency of stimulus",
    "contrast": "Contrast of stimulus",
    "phase": "Phase of grating stimulus",
    "size": "Size of stimulus (see ‘units’ field for units)",
    "Speed": "Speed of moving dot field",
    "Dir": "Direction of stimulus motion",
    "coherence": "Coherence of moving dot field",
    "dotLife": "Longevity of individual dots",
    "dotSize": "Size of individual dots",
    "fieldPos": "Position of moving dot field",
    "fieldShape": "Shape of moving dot field",
    "fieldSize": "Size of moving dot field",
    "nDots": "Number of dots in moving dot field",
}
#: the columns AllenSDK keeps for each stimulus (the others are all NaN and dropped)
_STIM_COLUMNS = {
    "spontaneous": ("units", "mask", "opacity"),
    "flashes": (
        "units",
        "mask",
        "opacity",
        "color",
        "x_position",
        "y_position",
        "contrast",
        "size",
    ),
    "drifting_gratings": (
        "units",
        "mask",
        "opacity",
        "color",
        "orientation",
        "x_position",
        "y_position",
        "temporal_frequency",
        "spatial_frequency",
        "contrast",
        "phase",
        "size",
    ),
    "gabors": (
        "units",
        "mask",
        "opacity",
        "color",
        "orientation",
        "x_position",
        "y_position",
        "temporal_frequency",
        "spatial_frequency",
        "contrast",
        "phase",
        "size",
    ),
    "static_gratings": (
        "units",
        "mask",
        "opacity",
        "color",
        "orientation",
        "x_position",
        "y_position",
        "spatial_frequency",
        "contrast",
        "phase",
        "size",
    ),
    "natural_scenes": (
        "units",
        "mask",
        "opacity",
        "color",
        "x_position",
        "y_position",
        "size",
        "frame",
    ),
    "drifting_gratings_contrast": (
        "units",
        "mask",
        "opacity",
        "color",
        "orientation",
        "x_position",
        "y_position",
        "temporal_frequency",
        "spatial_frequency",
        "contrast",
        "phase",
        "size",
    ),
    "dot_motion": (
        "units",
        "opacity",
        "color",
        "Dir",
        "Speed",
        "coherence",
        "dotLife",
        "dotSize",
        "fieldPos",
        "fieldShape",
        "fieldSize",
        "nDots",
    ),
}
_CONSTANT = {
    "units": "deg",
    "mask": "None",
    "opacity": 1.0,
    "color": "[1.0, 1.0, 1.0]",
    "x_position": 0.0,
    "y_position": 0.0,
    "contrast": 0.8,
}
_PER_STIMULUS = {
    "flashes": {"size": "[300.0, 300.0]"},
    "drifting_gratings": {
        "phase": "[42471.86666667, 42471.86666667]",
        "size": "[250.0, 250.0]",
        "spatial_frequency": 0.04,
    },
    "gabors": {
        "mask": "circle",
        "phase": "[3644.93333333, 3644.93333333]",
        "size": "[20.0, 20.0]",
        "spatial_frequency": 0.08,
        "temporal_frequency": 4.0,
    },
    "static_gratings": {"size": "[250.0, 250.0]"},
    "natural_scenes": {"size": "[1174.0, 918.0]"},
    "drifting_gratings_contrast": {
        "phase": "[5308.98333333, 5308.98333333]",
        "size": "[250.0, 250.0]",
        "spatial_frequency": 0.04,
    },
    "dot_motion": {
        "color": "[-1.0, -1.0, -1.0]",
        "coherence": 0.8,
        "dotLife": 40.0,
        "dotSize": 2.5,
        "fieldPos": "[0.0, 0.0]",
        "fieldShape": "circle",
        "fieldSize": "[250.0, 250.0]",
        "nDots": 180.0,
    },
}
_STIM_INDEX = {
    "spontaneous": 0,
    "flashes": 1,
    "drifting_gratings": 2,
    "natural_scenes": 3,
    "static_gratings": 4,
    "gabors": 5,
    "drifting_gratings_contrast": 6,
    "dot_motion": 7,
}
_STIM_BLOCK = {
    "flashes": 0.0,
    "drifting_gratings": 1.0,
    "natural_scenes": 2.0,
    "static_gratings": 3.0,
    "gabors": 4.0,
    "drifting_gratings_contrast": 5.0,
    "dot_motion": 6.0,
}


def _presentations(
    name: str, table: dict[str, np.ndarray], frames: TimeSeries, position: np.ndarray
) -> TimeIntervals:
    """One stimulus's table as AllenSDK's VCN writer stores it (layout notes 13-17, 37)."""
    n = table["start_time"].size
    col: dict[str, Any] = {
        "start_time": table["start_time"],
        "stop_time": table["stop_time"],
        "stimulus_name": np.full(n, name),
    }
    if name in _STIM_BLOCK:
        col["stimulus_block"] = np.full(n, _STIM_BLOCK[name])
    col["stimulus_index"] = np.full(n, _STIM_INDEX[name], np.int64)
    fixed = {**_CONSTANT, **_PER_STIMULUS.get(name, {})}
    for k in _STIM_COLUMNS[name]:
        if k == "color" and name == "flashes":
            col[k] = np.array([repr(float(c)) for c in table["color_value"]])
        elif k in table:
            col[k] = table[k]
        else:
            col[k] = np.full(n, fixed[k])
    columns = {k: (_COLUMN_DESCRIPTIONS.get(k, "No description"), v) for k, v in col.items()}
    return allen.intervals(
        f"{name}_presentations",
        f"Presentation times and stimuli details for '{name}' stimuli. \n"
        "Note: image_name references control_description in stimulus/templates",
        columns,
        timeseries=frames,
        frames=(position, position + 1),
        tags="stimulus_time_interval",
    )


def _write_session(
    path: Path,
    sid: int,
    probes: list,
    units: dict,
    spikes: dict,
    stim: dict,
    running: dict,
    eye: dict,
) -> None:
    nwb = _nwbfile(str(sid), "Data and metadata for an Ecephys session", sid, "Allen Institute")
    nwb.subject = _specimen(sid)
    nwb.stimulus_notes = "brain_observatory_1.1"
    _add_probes(nwb, probes, np.arange(N_CHANNELS))
    n = units["probe_index"].size
    wf = units["waveform_mean"].reshape(n * N_CHANNELS, N_WAVEFORM_SAMPLES) * 1e-6  # µV -> V
    index = spikes["index"]
    qc = dict(units["qc"])
    qc["firing_rate"] = np.diff(np.r_[0, index]) / stim["duration"]
    cols = [VectorData(name=k, description="no description", data=v) for k, v in sorted(qc.items())]
    cols += allen.ragged_column(
        "spike_times", "times (s) of detected spiking events", spikes["spike_times"], index
    )
    cols += allen.ragged_column(
        "spike_amplitudes",
        "amplitude (s) of detected spiking events",
        spikes["spike_amplitudes"],
        index,
    )
    cols += allen.ragged_column(
        "waveform_mean",
        "mean waveforms on peak channels (over samples)",
        H5DataIO(
            wf.astype(np.float32), compression="gzip", chunks=(N_CHANNELS, N_WAVEFORM_SAMPLES)
        ),
        N_CHANNELS * np.arange(1, n + 1),
    )
    nwb.units = Units(
        name="units",
        description="",
        id=ElementIdentifiers(name="id", data=units["truth"]["unit_id"]),
        columns=cols,
        colnames=[c.name for c in cols if not isinstance(c, VectorIndex)],
        waveform_unit="volts",
    )

    # processing/stimulus/timestamps: one timestamp per presentation (layout note 33)
    starts = np.concatenate([t["start_time"] for t in stim["tables"].values()])
    order = np.argsort(starts, kind="stable")
    position = np.empty(order.size, np.int64)
    position[order] = np.arange(order.size)
    frames = TimeSeries(
        name="timestamps", unit="s", data=starts[order], timestamps=starts[order].copy()
    )
    nwb.create_processing_module("stimulus", "Stimulus Times processing").add(frames)
    offset = 0
    for name, table in stim["tables"].items():
        n_rows = table["start_time"].size
        nwb.add_time_intervals(
            _presentations(name, table, frames, position[offset : offset + n_rows])
        )
        offset += n_rows

    bad = probes[-1]
    ns = stim["tables"]["natural_scenes"]["start_time"]
    t0 = float(ns[len(ns) // 3])
    inv = TimeIntervals(name="invalid_times", description="experimental intervals")
    inv.add_interval(
        start_time=t0, stop_time=t0 + 5.0, tags=["EcephysProbe", str(bad["probe_id"]), bad["name"]]
    )
    nwb.invalid_times = inv

    # running (layout note 32)
    raw = TimeSeries(
        name="raw_running_wheel_rotation",
        data=_gzip(running["rotation"]),
        unit="radians",
        timestamps=_gzip(running["start_time"].copy()),
    )
    nwb.add_acquisition(raw)
    for name, values in (
        ("running_wheel_signal_voltage", running["signal_voltage"]),
        ("running_wheel_supply_voltage", running["supply_voltage"]),
    ):
        nwb.add_acquisition(TimeSeries(name=name, data=_gzip(values), unit="V", timestamps=raw))
    run = nwb.create_processing_module("running", "running speed data")
    speed = TimeSeries(
        name="running_speed",
        data=_gzip(running["velocity"]),
        unit="cm/s",
        timestamps=_gzip(running["start_time"]),
    )
    run.add(speed)
    run.add(
        TimeSeries(
            name="running_speed_end_times",
            data=_gzip(np.full(running["end_time"].size, np.nan)),
            unit="cm/s",
            timestamps=_gzip(running["end_time"]),
        )
    )
    run.add(
        TimeSeries(
            name="running_wheel_rotation",
            data=_gzip(running["rotation"]),
            unit="radians",
            timestamps=speed,
        )
    )

    # optotagging (layout note 31)
    op = stim["opto"]
    opto = nwb.create_processing_module("optotagging", "optogenetic stimulution data")
    series = TimeSeries(
        name="optotagging", data=op["duration"], unit="seconds", timestamps=op["start_time"]
    )
    opto.add(series)
    n_opto = op["start_time"].size
    columns = {
        k: (
            "Start time of epoch, in seconds"
            if k == "start_time"
            else "Stop time of epoch, in seconds"
            if k == "stop_time"
            else "no description",
            op[k],
        )
        for k in ("start_time", "condition", "level", "stop_time", "stimulus_name", "duration")
    }
    opto.add(
        allen.intervals(
            "optogenetic_stimulation",
            "",
            columns,
            timeseries=series,
            frames=(np.arange(n_opto), np.arange(1, n_opto + 1)),
            tags="optical_stimulation",
        )
    )

    # eye tracking (layout note 34)
    module = nwb.create_processing_module("eye_tracking", "Eye tracking processing module")
    for part in ("pupil", "cr", "eye"):
        fit = eye["fits"][part]
        module.add(
            DynamicTable(
                name=f"{part}_ellipse_fits",
                description="",
                columns=[
                    VectorData(name=k, description="no description", data=v) for k, v in fit.items()
                ],
            )
        )
    for kind, desc in (("raw", "raw outputs"), ("filtered", "filtered outputs")):
        module = nwb.create_processing_module(
            f"{kind}_gaze_mapping", f"Gaze mapping processing module {desc}"
        )
        for name, unit in (
            ("eye_area", "Pixels ^ 2"),
            ("pupil_area", "Pixels ^ 2"),
            ("screen_coordinates", "Centimeters"),
            ("screen_coordinates_spherical", "Degrees"),
        ):
            module.add(
                TimeSeries(
                    name=name,
                    data=_gzip(eye["gaze"][kind][name]),
                    unit=unit,
                    timestamps=_gzip(eye["t"]),
                )
            )
    rig = allen.extension("EcephysEyeTrackingRigMetadata")(
        name="eye_tracking_rig_metadata",
        equipment="Neuropixel Rig 3",
        **{k: np.array(v, np.float64) for k, (v, _) in _RIG.items()},
        **{f"{k}__unit": u for k, (_, u) in _RIG.items()},
    )
    nwb.create_processing_module(
        "eye_tracking_rig_metadata", "Eye tracking rig metadata module"
    ).add(rig)

    allen.write_nwb(path, nwb)
    with h5py.File(path, "r+") as h5:
        allen.to_legacy_dynamic_table(h5, "general/extracellular_ephys/electrodes")
        allen.fix_object_ids(h5, f"vcn/{sid}")


#: eye tracking rig geometry: name -> (value, unit)
_RIG = {
    "camera_position": ([130.0, 0.0, 0.0], "mm"),
    "camera_rotation": ([0.0, 0.0, 13.1], "deg"),
    "led_position": ([265.1, -39.3, 1.0], "mm"),
    "monitor_position": ([170.0, 0.0, 0.0], "mm"),
    "monitor_rotation": ([0.0, 0.0, 0.0], "deg"),
}


def _write_lfp(
    path: Path, sid: int, probe: dict, stim: dict, lfp_s: float, rng: np.random.Generator
) -> None:
    rows = np.flatnonzero((np.arange(N_CHANNELS) % 4 == 0) & probe["valid"])
    lfp = _lfp(probe, rows, stim["tables"]["flashes"]["start_time"], lfp_s, rng)
    times = np.arange(lfp.shape[0]) / LFP_RATE
    csd, csd_t, csd_y = _csd(probe, rows, lfp, stim["tables"]["flashes"]["start_time"])
    pid = probe["probe_id"]
    nwb = _nwbfile(
        str(pid),
        "LFP data and associated info for one probe",
        sid,
        "Allen Institute for Brain Science",
    )
    # a release file's LFP file has the subject (the AllenSDK 2.16.2 fixtures lack it: README,
    # "What differs from a real release file", 5)
    nwb.subject = _specimen(sid)
    _add_probes(nwb, [probe], rows)
    name = f"probe_{pid}_lfp"
    chunk = (min(lfp.shape[0], int(5 * LFP_RATE)), rows.size)
    with warnings.catch_warnings():
        # Benign: the region is made before its table is in a file, and the series gets a
        # second parent (written as a soft link at acquisition/<name>_data, as Allen does).
        warnings.simplefilter("ignore")
        region = nwb.create_electrode_table_region(
            list(range(rows.size)), f"lfp channels on probe {pid}"
        )
        series = ElectricalSeries(
            name=f"{name}_data",
            data=H5DataIO(lfp, chunks=chunk),
            electrodes=region,
            timestamps=times,
        )
        nwb.add_acquisition(LFP(name=name, electrical_series=series))
        nwb.add_acquisition(series)
    ts = TimeSeries(name="current_source_density", data=csd.T, timestamps=csd_t, unit="V/cm^2")
    module = nwb.create_processing_module(
        "current_source_density", "Precalculated current source density"
    )
    module.add(
        allen.extension("EcephysCSD")(
            name="ecephys_csd",
            time_series=ts,
            virtual_electrode_x_positions=np.full(csd_y.size, 43.0),
            virtual_electrode_x_positions__unit="um",
            virtual_electrode_y_positions=csd_y.astype(np.float64),
            virtual_electrode_y_positions__unit="um",
        )
    )
    allen.write_nwb(path, nwb)
    with h5py.File(path, "r+") as h5:
        allen.to_legacy_dynamic_table(h5, "general/extracellular_ephys/electrodes")
        allen.fix_object_ids(h5, f"vcn/{sid}/{pid}")


def _lfp(
    probe: dict, rows: np.ndarray, flashes: np.ndarray, lfp_s: float, rng: np.random.Generator
) -> np.ndarray:
    """(T, C) float32 LFP in V: 1/f² latent sources mixed over depth + flash-evoked L4 sink."""
    n = int(lfp_s * LFP_RATE)
    depth = probe["vertical"][rows].astype(np.float64)
    k = 6
    freqs = np.fft.rfftfreq(n, 1.0 / LFP_RATE)
    spec = rng.normal(size=(k, freqs.size)) + 1j * rng.normal(size=(k, freqs.size))
    spec /= np.maximum(freqs, 1.0)[None, :]
    latent = np.fft.irfft(spec, n=n, axis=1)
    latent /= latent.std(axis=1, keepdims=True)
    centres = rng.uniform(depth.min(), depth.max(), k)
    mixing = np.exp(-((depth[None, :] - centres[:, None]) ** 2) / (2 * 600.0**2))
    lfp = (latent.T.astype(np.float32) @ (mixing * 40e-6).astype(np.float32)).astype(np.float32)
    lfp += np.float32(5e-6) * rng.standard_normal((n, rows.size), dtype=np.float32)
    # Evoked potential: a Gaussian dip centred on layer 4 (so the CSD has an L4 sink).
    profile = -150e-6 * np.exp(
        -((depth - probe["l4_center_vertical_position"]) ** 2) / (2 * 100.0**2)
    )
    lag = np.arange(int(0.3 * LFP_RATE)) / LFP_RATE
    tau = 0.02
    kernel = np.where(lag >= 0.03, ((lag - 0.03) / tau) * np.exp(1 - (lag - 0.03) / tau), 0.0)
    for onset in flashes[flashes + 0.3 < lfp_s]:
        i = round(onset * LFP_RATE)
        lfp[i : i + lag.size] += (kernel[:, None] * profile[None, :]).astype(np.float32)
    return lfp


def _csd(probe: dict, rows: np.ndarray, lfp: np.ndarray, flashes: np.ndarray) -> tuple:
    """Allen's CSD: flash-triggered average, 5-150 Hz band-pass, 40 µm virtual channels."""
    pre, post = int(0.1 * LFP_RATE), int(0.25 * LFP_RATE)
    onsets = np.round(flashes * LFP_RATE).astype(int)
    onsets = onsets[(onsets >= pre) & (onsets + post <= lfp.shape[0])]
    avg = np.mean([lfp[i - pre : i + post] for i in onsets], axis=0).astype(np.float64)
    sos = signal.butter(5, [5.0, 150.0], btype="bandpass", fs=LFP_RATE, output="sos")
    avg = signal.sosfiltfilt(sos, avg, axis=0)
    in_brain = probe["location"][rows] != "None"
    depth = probe["vertical"][rows][in_brain].astype(np.float64)
    avg = avg[:, in_brain]
    grid = np.arange(depth.min(), depth.max() + 1.0, 40.0)
    phi = np.stack([np.interp(grid, depth, row) for row in avg])  # (time, virtual)
    padded = np.pad(phi, ((0, 0), (1, 1)), mode="edge")
    h_cm = 40.0 * 1e-4
    csd = (padded[:, 2:] - 2 * padded[:, 1:-1] + padded[:, :-2]) / h_cm**2
    return csd.T, np.arange(-pre, post) / LFP_RATE, grid
