"""Synthetic Visual Coding 2P (Brain Observatory 2016) files in NWB 1.0.5, written with h5py.

The layout follows the real file ``brain_observatory_496908818_nwb1_truncated.nwb`` group for
group (``ALLEN_DATA.md`` section 3): metadata as byte strings under ``general/``, the
``nwb_version`` and ``identifier`` as root *datasets* (the real file has no root attributes),
traces under ``processing/brain_observatory_pipeline`` as (cells, frames) float32, and stimuli
under ``stimulus/presentation/<name>_stimulus`` (AbstractFeatureSeries for gratings, IndexSeries
for natural scenes, movies and locally sparse noise, IntervalSeries for spontaneous activity),
whose ``frame_duration`` holds start and end *ophys frame* indices. Two additions to the real
layout: ``reference_images/average_image`` and down-sampled ``stimulus/templates`` image stacks.

Responses are simulated: each cell has a preferred direction and temporal frequency (von Mises
tuning with a built-in OSI/DSI), a preferred static-grating orientation and spatial frequency,
a preferred natural scene, a receptive field on the sparse-noise grid and a reliable movie
response. Poisson events are convolved with a GCaMP6f kernel (rise 0.1 s, decay 1 s) and mixed
with neuropil. ``Fluorescence/imaging_plane_1/data`` is the raw trace; the corrected trace is
``data - r * neuropil`` and ``DfOverF`` is ``(corrected - F0) / F0`` with ``F0`` the per-cell
median of the corrected trace. The ground truth is written beside each file as
``<ophys_experiment_id>.truth.json`` and read back by :func:`ground_truth`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.signal import lfilter

__all__ = ["SESSION_TYPES", "ground_truth", "write"]

_PIPE = "processing/brain_observatory_pipeline"
_HELP_URL = "http://help.brain-map.org/display/observatory/Allen+Brain+Observatory"
_STIM_COMMENT = (
    "The data stored here is a precursor for what was displayed. Please see "
    "http://help.brain-map.org/download/attachments/10616846/VisualCoding_VisualStimuli.pdf "
    "for instructions for how to convert this to actual stimulus data"
)
_INDEX_HELP = (
    "A sequence that is generated from an existing image stack. Frames can be presented in an "
    "arbitrary order. The data[] field stores frame number in reference stack"
)
_ROI_HELP = (
    "ROI responses over an imaging plane. Each row in data[] should correspond to the signal "
    "from one ROI"
)

#: session type -> epochs in order: (stimulus name, block index).
SESSION_TYPES: dict[str, list[tuple[str, int]]] = {
    "three_session_A": [
        ("drifting_gratings", 0),
        ("natural_movie_three", 0),
        ("drifting_gratings", 1),
        ("natural_movie_one", 0),
        ("spontaneous", 0),
        ("natural_movie_three", 1),
        ("drifting_gratings", 2),
    ],
    "three_session_B": [
        ("static_gratings", 0),
        ("natural_scenes", 0),
        ("spontaneous", 0),
        ("natural_scenes", 1),
        ("static_gratings", 1),
        ("natural_movie_one", 0),
        ("natural_scenes", 2),
        ("static_gratings", 2),
    ],
    "three_session_C": [
        ("locally_sparse_noise", 0),
        ("spontaneous", 0),
        ("natural_movie_one", 0),
        ("locally_sparse_noise", 1),
        ("natural_movie_two", 0),
        ("locally_sparse_noise", 2),
    ],
    "three_session_C2": [
        ("locally_sparse_noise_4deg", 0),
        ("natural_movie_one", 0),
        ("locally_sparse_noise_8deg", 0),
        ("spontaneous", 0),
        ("natural_movie_two", 0),
        ("locally_sparse_noise_4deg", 1),
        ("locally_sparse_noise_8deg", 1),
    ],
}

_SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "n_cells": 10,
        "dg_repeats": 3,
        "sg_repeats": 3,
        "ns_repeats": 3,
        "movie_repeats": 1,
        "lsn_frames": 240,
        "spont_s": 30.0,
        "gap_s": 2.0,
        "movie_frames_cap": 900,
        "template_px": (8, 16),
    },
    # enough repeats for every AllenSDK stimulus analysis (10 movie repeats, running and still
    # trials at a preferred condition), still small: the metric parity tests use it
    "small": {
        "n_cells": 6,
        "dg_repeats": 10,
        "sg_repeats": 16,
        "ns_repeats": 16,
        "movie_repeats": 10,
        "lsn_frames": 480,
        "spont_s": 30.0,
        "gap_s": 2.0,
        "movie_frames_cap": 900,
        "template_px": (8, 16),
    },
    "realistic": {
        "n_cells": 170,
        "dg_repeats": 15,
        "sg_repeats": 50,
        "ns_repeats": 50,
        "movie_repeats": 10,
        "lsn_frames": 8880,
        "spont_s": 300.0,
        "gap_s": 30.0,
        "movie_frames_cap": None,
        "template_px": (76, 152),
    },
}

_FRAME_RATE = 30.0  # ophys frames per second (nominal)
_DG_ORI = np.arange(0.0, 360.0, 45.0)
_DG_TF = np.array([1.0, 2.0, 4.0, 8.0, 15.0])
_SG_ORI = np.arange(0.0, 180.0, 30.0)
_SG_SF = np.array([0.02, 0.04, 0.08, 0.16, 0.32])
_SG_PHASE = np.array([0.0, 0.25, 0.5, 0.75])
_N_SCENES = 118
_MOVIE_FRAMES = {"natural_movie_one": 900, "natural_movie_two": 900, "natural_movie_three": 3600}
_LSN_GRID = {
    "locally_sparse_noise": (16, 28),
    "locally_sparse_noise_4deg": (16, 28),
    "locally_sparse_noise_8deg": (8, 14),
}
_TAU_RISE_S, _TAU_DECAY_S, _DFF_PER_EVENT = 0.1, 1.0, 0.15
_CRE_LINES = [  # (cre line, reporter, depths in µm) of the Visual Coding 2P survey
    ("Cux2-CreERT2", "Ai93(TITL-GCaMP6f)", (175, 225, 275)),
    ("Emx1-IRES-Cre", "Ai93(TITL-GCaMP6f)", (175, 275, 375)),
    ("Slc17a7-IRES2-Cre", "Ai93(TITL-GCaMP6f)", (175, 275, 375)),
    ("Rorb-IRES2-Cre", "Ai93(TITL-GCaMP6f)", (275, 375)),
    ("Scnn1a-Tg3-Cre", "Ai93(TITL-GCaMP6f)", (350,)),
    ("Nr5a1-Cre", "Ai93(TITL-GCaMP6f)", (350,)),
    ("Rbp4-Cre_KL100", "Ai93(TITL-GCaMP6f)", (375,)),
    ("Fezf2-CreER", "Ai148(TIT2L-GC6f-ICL-tTA2)", (300,)),
    ("Tlx3-Cre_PL56", "Ai148(TIT2L-GC6f-ICL-tTA2)", (375,)),
    ("Ntsr1-Cre_GN220", "Ai148(TIT2L-GC6f-ICL-tTA2)", (550,)),
    ("Sst-IRES-Cre", "Ai148(TIT2L-GC6f-ICL-tTA2)", (275, 375)),
    ("Vip-IRES-Cre", "Ai148(TIT2L-GC6f-ICL-tTA2)", (175, 275)),
]
_AREAS = ("VISp", "VISl", "VISal", "VISpm", "VISam", "VISrl")


# --------------------------------------------------------------------------- stimuli


def _presentations(name: str, sc: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Return one stimulus's presentations (seconds from its own start) and parameters."""
    if name == "drifting_gratings":
        ori, tf = np.meshgrid(_DG_ORI, _DG_TF, indexing="ij")
        cond = np.column_stack([tf.ravel(), ori.ravel(), np.zeros(ori.size)])
        trials = np.repeat(cond, sc["dg_repeats"], axis=0)
        blank = np.tile([np.nan, np.nan, 1.0], (max(1, len(trials) // 20), 1))
        params = rng.permutation(np.vstack([trials, blank]))
        onset = np.arange(len(params)) * 3.0 + 1.0  # 1 s gray, 2 s grating, ...
        return {
            "kind": "afs",
            "features": ["temporal_frequency", "orientation", "blank_sweep"],
            "params": params,
            "on": onset,
            "off": onset + 2.0,
            "total": len(params) * 3.0 + 1.0,
        }
    if name == "static_gratings":
        o, s, p = np.meshgrid(_SG_ORI, _SG_SF, _SG_PHASE, indexing="ij")
        cond = np.column_stack([o.ravel(), s.ravel(), p.ravel()])
        blank = np.full((1, 3), np.nan)
        params = rng.permutation(np.repeat(np.vstack([cond, blank]), sc["sg_repeats"], axis=0))
        onset = np.arange(len(params)) * 0.25
        return {
            "kind": "afs",
            "features": ["orientation", "spatial_frequency", "phase"],
            "params": params,
            "on": onset,
            "off": onset + 0.25,
            "total": len(params) * 0.25,
        }
    if name == "natural_scenes":
        frames = rng.permutation(np.repeat(np.arange(-1, _N_SCENES), sc["ns_repeats"]))
        onset = np.arange(len(frames)) * 0.25
        return {
            "kind": "index",
            "frames": frames,
            "on": onset,
            "off": onset + 0.25,
            "total": len(frames) * 0.25,
        }
    if name.startswith("natural_movie"):
        n = _MOVIE_FRAMES[name]
        n = min(n, sc["movie_frames_cap"] or n) if name == "natural_movie_three" else n
        frames = np.tile(np.arange(n), sc["movie_repeats"])
        onset = np.arange(len(frames)) / 30.0
        return {
            "kind": "index",
            "frames": frames,
            "on": onset,
            "off": onset + 1 / 30.0,
            "total": len(frames) / 30.0,
        }
    if name.startswith("locally_sparse_noise"):
        n = sc["lsn_frames"] if name == "locally_sparse_noise" else sc["lsn_frames"] // 2
        frames = np.arange(n)
        onset = np.arange(n) * 0.25
        return {
            "kind": "index",
            "frames": frames,
            "on": onset,
            "off": onset + 0.25,
            "total": n * 0.25,
        }
    if name == "spontaneous":
        return {
            "kind": "interval",
            "on": np.array([0.0]),
            "off": np.array([sc["spont_s"]]),
            "total": sc["spont_s"],
        }
    raise ValueError(f"unknown stimulus {name!r}")


def _schedule(
    session_type: str, sc: dict[str, Any], rng: np.random.Generator
) -> tuple[dict[str, dict[str, Any]], float]:
    """Lay every stimulus's blocks on one session clock; return stimuli and session length (s)."""
    epochs = SESSION_TYPES[session_type]
    n_blocks = {name: 1 + max(b for n, b in epochs if n == name) for name, _ in epochs}
    stims = {name: _presentations(name, sc, rng) for name in n_blocks}
    for st in stims.values():
        st["on_abs"] = np.full(len(st["on"]), np.nan)
    t = sc["gap_s"]
    for name, block in epochs:
        st = stims[name]
        parts = np.array_split(np.arange(len(st["on"])), n_blocks[name])[block]
        rel0 = st["on"][parts[0]]
        st["on_abs"][parts] = t + st["on"][parts] - rel0
        t += st["off"][parts[-1]] - rel0 + sc["gap_s"]
    for st in stims.values():
        st["off_abs"] = st["on_abs"] + (st["off"] - st["on"])
    return stims, t


# --------------------------------------------------------------------------- responses


def _cells(n: int, rng: np.random.Generator, grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """Draw each cell's tuning (the ground truth)."""
    kappa = rng.uniform(1.5, 3.0, n)
    null_ratio = rng.uniform(0.05, 0.5, n)
    return {
        "pref_direction": rng.choice(_DG_ORI, n),
        "pref_temporal_frequency": rng.choice(_DG_TF, n),
        "kappa": kappa,
        "null_ratio": null_ratio,
        "responsive_dg": rng.random(n) < 0.85,
        "peak_rate_dg": rng.uniform(2.0, 6.0, n),
        "pref_orientation_sg": rng.choice(_SG_ORI, n),
        "pref_spatial_frequency_sg": rng.choice(_SG_SF, n),
        "peak_rate_sg": rng.uniform(2.0, 8.0, n),
        "ns_tuning": rng.random((n, _N_SCENES)) ** 6,
        "peak_rate_ns": rng.uniform(2.0, 8.0, n),
        "rf_row": rng.integers(0, grid[0], n),
        "rf_col": rng.integers(0, grid[1], n),
        "rf_on": rng.random(n) < 0.5,
        "base_rate": rng.uniform(0.05, 0.3, n),
        "f0": rng.lognormal(np.log(800.0), 0.3, n),
        "r": rng.uniform(0.55, 0.95, n),
    }


def _direction_tuning(c: dict[str, np.ndarray], theta_deg: np.ndarray) -> np.ndarray:
    """Von Mises direction tuning (cells, theta), 1 at the preferred direction."""
    d = np.deg2rad(theta_deg[None, :] - c["pref_direction"][:, None])
    k = c["kappa"][:, None]
    return np.exp(k * (np.cos(d) - 1)) + c["null_ratio"][:, None] * np.exp(k * (-np.cos(d) - 1))


def _osi_dsi(c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Allen OSI/DSI of the noiseless evoked tuning at the preferred TF."""
    p = c["pref_direction"]
    at = {k: np.diag(_direction_tuning(c, p + k)) for k in (0, 90, 180, 270)}
    orth = (at[90] + at[270]) / 2
    return (at[0] - orth) / (at[0] + orth), (at[0] - at[180]) / (at[0] + at[180])


def _evoked_rates(
    name: str,
    st: dict[str, Any],
    c: dict[str, np.ndarray],
    movie_drive: dict[str, np.ndarray],
    templates: dict[str, np.ndarray],
) -> np.ndarray:
    """Evoked event rate (cells, presentations) in Hz."""
    n = len(c["base_rate"])
    if name == "drifting_gratings":
        tf, ori, blank = st["params"].T
        dirs = _direction_tuning(c, np.nan_to_num(ori))
        tft = np.exp(
            -0.5
            * (np.log2(tf[None, :]) - np.log2(c["pref_temporal_frequency"])[:, None]) ** 2
            / 0.8**2
        )
        rate = c["peak_rate_dg"][:, None] * np.where(c["responsive_dg"], 1.0, 0.1)[:, None]
        return np.where(blank[None, :] == 1, 0.0, rate * dirs * np.nan_to_num(tft))
    if name == "static_gratings":
        ori, sf, _ = st["params"].T
        d = np.deg2rad(2 * (np.nan_to_num(ori)[None, :] - c["pref_orientation_sg"][:, None]))
        sft = np.exp(
            -0.5
            * (
                np.log2(np.nan_to_num(sf, nan=1.0))[None, :]
                - np.log2(c["pref_spatial_frequency_sg"])[:, None]
            )
            ** 2
        )
        rate = c["peak_rate_sg"][:, None] * np.exp(2.0 * (np.cos(d) - 1)) * sft
        return np.where(np.isnan(ori)[None, :], 0.0, rate)
    if name == "natural_scenes":
        tuning = np.hstack([np.zeros((n, 1)), c["ns_tuning"]])  # column 0: blank (-1)
        return c["peak_rate_ns"][:, None] * tuning[:, st["frames"] + 1]
    if name.startswith("natural_movie"):
        return movie_drive[name][:, st["frames"]]
    if name.startswith("locally_sparse_noise"):
        tmpl = templates[name]
        rows = c["rf_row"] * tmpl.shape[1] // 16
        cols = c["rf_col"] * tmpl.shape[2] // 28
        px = tmpl[:, rows, cols].T[:, st["frames"]]  # (cells, presentations)
        hit = np.where(c["rf_on"][:, None], px == 255, px == 0)
        # the first ``lsn_on_off_cells`` cells also have the opposite subfield, 3 columns over
        k = min(int(c.get("lsn_on_off_cells", 0)), n)
        if k:
            cols2 = (c["rf_col"][:k] + 3) % 28 * tmpl.shape[2] // 28
            px2 = tmpl[:, rows[:k], cols2].T[:, st["frames"]]
            hit[:k] |= np.where(c["rf_on"][:k, None], px2 == 0, px2 == 255)
        return 6.0 * hit
    return np.zeros((n, len(st["on"])))


def _gcamp(events: np.ndarray, rate_hz: float) -> np.ndarray:
    """Convolve events (cells, frames) with a double-exponential kernel peaking at 1."""
    a, b = np.exp(-1 / (rate_hz * _TAU_DECAY_S)), np.exp(-1 / (rate_hz * _TAU_RISE_S))
    n = np.arange(int(rate_hz * 5))
    peak = float(np.max(a**n - b**n))
    return lfilter([0.0, (a - b) / peak], [1.0, -(a + b), a * b], events, axis=-1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], tau: float) -> np.ndarray:
    """Unit-variance AR(1) noise along the last axis with time constant ``tau`` samples."""
    a = np.exp(-1.0 / tau)
    return lfilter([np.sqrt(1 - a * a)], [1.0, -a], rng.standard_normal(shape), axis=-1)


# --------------------------------------------------------------------------- HDF5 helpers


def _s(value: str) -> np.bytes_:
    return np.bytes_(value.encode())


def _ts(
    group: h5py.Group,
    *,
    ancestry: list[str],
    description: str,
    help_: str,
    source: str = "",
    comments: str = "",
) -> None:
    group.attrs["ancestry"] = np.array([a.encode() for a in ancestry])
    group.attrs["comments"] = comments if not comments else _s(comments)
    group.attrs["description"] = _s(description)
    group.attrs["help"] = help_
    group.attrs["neurodata_type"] = "TimeSeries"
    group.attrs["source"] = source if not source else _s(source)


def _data(
    group: h5py.Group,
    data: np.ndarray,
    unit: str,
    conversion: float = 1.0,
    num_samples: int | None = None,
    **kwargs: Any,
) -> h5py.Dataset:
    dset = group.create_dataset("data", data=data, **kwargs)
    dset.attrs["conversion"] = np.float64(conversion)
    dset.attrs["resolution"] = np.float64(1.0)
    dset.attrs["unit"] = _s(unit)
    n = len(data) if num_samples is None else num_samples
    group.create_dataset("num_samples", data=np.int32(n))
    return dset


def _eye_tracking(p: h5py.Group, ts: np.ndarray) -> None:
    """``EyeTracking/pupil_location[_spherical]`` (T, 2) and ``PupilTracking/pupil_size``
    (T,) on the 2-photon timestamps, as AllenSDK's get_pupil_location/get_pupil_size read
    them (smooth saccade-free wander; no random draws, so the other arrays are unchanged)."""
    phase = 2 * np.pi * (ts - ts[0])
    azimuth = 4.0 * np.sin(phase / 7.0) + 1.5 * np.sin(phase / 1.3)
    altitude = 2.5 * np.cos(phase / 9.0)
    for group, series, data, unit in (
        ("EyeTracking", "pupil_location_spherical", np.c_[azimuth, altitude], "degrees"),
        ("EyeTracking", "pupil_location", np.c_[azimuth, altitude] * 0.0148, "cm"),
        ("PupilTracking", "pupil_size", 900.0 + 150.0 * np.sin(phase / 23.0), "pixels"),
    ):
        parent = p.require_group(group)
        parent.attrs.update(
            help="Eye-tracking data, representing direction of gaze"
            if group == "EyeTracking"
            else "Eye-tracking data, representing pupil size",
            neurodata_type="Interface",
            source=_s("Eye-tracking camera"),
        )
        g = parent.create_group(series)
        _ts(
            g,
            ancestry=["TimeSeries", "SpatialSeries"] if data.ndim == 2 else ["TimeSeries"],
            help_="Stores points in space over time",
            description=f"{series} in context of 2p_image_series timeline",
        )
        _data(g, data.astype(np.float64), unit)
        _timestamps(g, ts)


def _timestamps(group: h5py.Group, t: np.ndarray) -> None:
    dset = group.create_dataset("timestamps", data=np.asarray(t, dtype=np.float64))
    dset.attrs["interval"] = np.int64(1)
    dset.attrs["unit"] = _s("Seconds")


def _custom(group: h5py.Group, name: str, data: Any) -> None:
    group.create_dataset(name, data=data)
    group[name].attrs["neurodata_type"] = _s("Custom")


def _vlen(f: h5py.File, name: str, value: str | list[str]) -> None:
    f.create_dataset(name, data=value, dtype=h5py.string_dtype("ascii"))


def _image_series(group: h5py.Group, image: np.ndarray, t0: float) -> None:
    _ts(
        group,
        ancestry=["TimeSeries", "ImageSeries"],
        description="",
        help_="Storage object for time-series 2-D image data",
    )
    group.attrs["description"] = ""
    group.create_dataset("bits_per_pixel", data=np.int32(8))
    _data(group, image, "grayscale", num_samples=1)
    group.create_dataset("dimension", data=np.array(image.shape, dtype=np.int32))
    group.create_dataset("format", data=_s("raw"))
    _timestamps(group, np.array([t0]))


def _two_photon_series(
    group: h5py.Group, t: np.ndarray, description: str, plane: str, source: str = ""
) -> None:
    _ts(
        group,
        ancestry=["TimeSeries", "ImageSeries", "TwoPhotonSeries"],
        description=description,
        help_="Image stack recorded from 2-photon microscope",
        source=source,
    )
    group.attrs["extern_fields"] = np.array([b"data"])
    group.attrs["missing_fields"] = np.array([b"pmt_gain", b"scan_line_rate"])
    group.create_dataset("bits_per_pixel", data=np.int32(8))
    group.create_dataset("data", data=np.array([np.nan]))  # the movie itself is external
    group.create_dataset("dimension", data=np.array([512, 512], dtype=np.int32))
    group.create_dataset("field_of_view", data=np.array([400e-6, 400e-6], dtype=np.float32))
    group.create_dataset("format", data=_s("raw"))
    group.create_dataset("imaging_plane", data=_s(plane))
    group.create_dataset("num_samples", data=np.int32(len(t)))
    _timestamps(group, t)


# --------------------------------------------------------------------------- metadata and images


def _metadata(rng: np.random.Generator, session_type: str) -> dict[str, Any]:
    cre, reporter, depths = _CRE_LINES[int(rng.integers(len(_CRE_LINES)))]
    mouse = int(rng.integers(200_000, 400_000))
    start = dt.datetime(2016, 1, 4, 9, 0, 0) + dt.timedelta(
        days=int(rng.integers(0, 500)),
        minutes=int(rng.integers(0, 420)),
        seconds=int(rng.integers(60)),
    )
    if reporter.startswith("Ai93"):
        genotype = f"{cre}/wt;Camk2a-tTA/wt;{reporter}/wt"
        specimen_name = f"{cre};Camk2a-tTA;Ai93-{mouse}"
    else:
        genotype = f"{cre}/wt;{reporter}/wt"
        specimen_name = f"{cre};Ai148-{mouse}"
    exp_id = int(rng.integers(500_000_000, 660_000_000))
    return {
        "ophys_experiment_id": exp_id,
        "experiment_container_id": int(rng.integers(511_000_000, 700_000_000)),
        "specimen_id": int(rng.integers(480_000_000, 600_000_000)),
        "cre_line": cre,
        "reporter_line": reporter,
        "genotype": genotype,
        "specimen_name": specimen_name,
        "imaging_depth": int(rng.choice(depths)),
        "targeted_structure": str(rng.choice(_AREAS)),
        "sex": str(rng.choice(["male", "female"])),
        "age_days": int(rng.integers(80, 140)),
        "rig": f"CAM2P.{int(rng.integers(1, 6))}",
        "session_start_time": start,
        "session_type": session_type,
        "ophys_experiment_name": f"{mouse}_{start:%Y%m%d}_{session_type.rsplit('_', 1)[1]}",
    }


def _write_general(f: h5py.File, m: dict[str, Any]) -> None:
    g = f.create_group("general")
    more = f"Please see {_HELP_URL} for details"
    _custom(g, "For more information", _s(f"For more information, please see {_HELP_URL}"))
    dev = g.create_group("devices")
    dev.create_dataset(
        "2-photon microscope", data=_s(f"Nikon A1R-MP multiphoton microscope. {m['rig']} {more}")
    )
    dev.create_dataset("display monitor", data=_s(f"ASUS PA248Q monitor. {more}"))
    dev.create_dataset("eye-tracking camera", data=_s(f"AVT Mako-G032B. {more}"))
    _custom(g, "experiment_container_id", _s(str(m["experiment_container_id"])))
    _custom(g, "fov", _s("400x400 microns (512 x 512 pixels)"))
    _custom(g, "generated_by", np.array([b"abo_lake.synthetic.vc2p_ophys"]))
    g.create_dataset("institution", data=_s("Allen Institute for Brain Science"))
    _custom(g, "ophys_experiment_id", _s(str(m["ophys_experiment_id"])))
    _custom(g, "ophys_experiment_name", _s(m["ophys_experiment_name"]))
    plane = g.create_group("optophysiology/imaging_plane_1")
    chan = plane.create_group("channel-1")
    chan.create_dataset("description", data=_s("Only optical channel used"))
    chan.create_dataset("emission_lambda", data=_s("See emission properties of GCaMP6f"))
    plane.create_dataset("description", data=_s(f"Please see {_HELP_URL} for details"))
    plane.create_dataset("device", data=_s("2-photon microscope"))
    plane.create_dataset("excitation_lambda", data=_s("910 nanometers"))
    _custom(plane, "imaging depth", _s(f"{m['imaging_depth']} microns"))
    plane.create_dataset("imaging_rate", data=_s("31Hz"))
    plane.create_dataset("indicator", data=_s("GCaMP6f"))
    plane.create_dataset("location", data=_s(m["targeted_structure"]))
    _custom(g, "pixel_size", _s("0.78 (um)"))
    g.create_dataset("session_id", data=_s(str(m["ophys_experiment_id"])))
    g["session_id"].attrs["comments"] = _s(
        "ID corresponds to Allen Institute 'experiment_sessions ID'"
    )
    _custom(g, "session_type", _s(m["session_type"]))
    _custom(g, "specimen_name", _s(m["specimen_name"]))
    sub = g.create_group("subject")
    sub.create_dataset("age", data=_s(f"{m['age_days']} days"))
    sub.create_dataset("description", data=_s("Mus musculus in vivo"))
    sub.create_dataset("genotype", data=_s(m["genotype"]))
    sub.create_dataset("sex", data=_s(m["sex"]))
    sub.create_dataset("species", data=_s("Mus musculus"))
    sub.create_dataset("subject_id", data=_s(str(m["specimen_id"])))
    sub["subject_id"].attrs["comments"] = _s("ID corresponds to Allen Institute 'specimens ID'")
    _custom(g, "targeted_structure", _s(m["targeted_structure"]))


def _roi_masks(n: int, rng: np.random.Generator) -> np.ndarray:
    """Elliptical, mostly non-overlapping somata in a 512 x 512 field, as (n, 512, 512) bool."""
    yy, xx = np.mgrid[0:512, 0:512]
    masks = np.zeros((n, 512, 512), dtype=bool)
    centres: list[tuple[float, float]] = []
    for i in range(n):
        for _ in range(100):
            cy, cx = rng.uniform(20, 492, 2)
            if all((cy - y) ** 2 + (cx - x) ** 2 > 20**2 for y, x in centres):
                break
        centres.append((cy, cx))
        ry, rx = rng.uniform(5, 8, 2)
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def _templates(
    stims: dict[str, dict[str, Any]], sc: dict[str, Any], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Down-sampled template stacks: movies and scenes are smooth noise; LSN is sparse noise."""
    h, w = sc["template_px"]
    out: dict[str, np.ndarray] = {}
    for name, st in stims.items():
        if name.startswith("locally_sparse_noise"):
            grid = _LSN_GRID[name]
            u = rng.random((len(st["frames"]), *grid))
            out[name] = np.where(u < 0.03, 0, np.where(u > 0.97, 255, 127)).astype(np.uint8)
        elif name == "natural_scenes":
            low = rng.random((_N_SCENES, h // 4 + 1, w // 4 + 1), dtype=np.float32)
            img = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)[:, :h, :w] * 255
            out[name] = img.astype(np.float32)
        elif name.startswith("natural_movie"):
            n = int(st["frames"].max()) + 1
            low = _smooth_noise(rng, (h // 4 + 1, w // 4 + 1, n), tau=15.0)
            img = np.repeat(np.repeat(np.moveaxis(low, -1, 0), 4, axis=1), 4, axis=2)[:, :h, :w]
            out[name] = np.clip(127 + 40 * img, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- traces


def _traces(
    rates: np.ndarray, c: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Raw, neuropil, demixed and dF/F traces (cells, frames) float32 from event rates."""
    n, t = rates.shape
    events = rng.poisson(rates / _FRAME_RATE).astype(np.float32)
    calcium = _gcamp(events, _FRAME_RATE).astype(np.float32)
    f0 = c["f0"][:, None].astype(np.float32)
    cell = f0 * (1 + _DFF_PER_EVENT * calcium)
    del calcium, events
    pop = cell.mean(axis=0, keepdims=True) / f0.mean() - 1
    drift = _smooth_noise(rng, (1, t), tau=30 * _FRAME_RATE).astype(np.float32)
    neuropil = 0.8 * f0 * (1 + 0.3 * pop + 0.05 * drift)
    neuropil += rng.normal(0, 1, (n, t)).astype(np.float32) * 0.01 * f0
    r = c["r"].astype(np.float32)
    demixed = cell + r[:, None] * neuropil
    demixed += rng.normal(0, 1, (n, t)).astype(np.float32) * 0.03 * f0
    raw = demixed + 0.03 * np.roll(cell, 1, axis=0)
    corrected = raw - neuropil * r[:, None]  # float32, exactly as the reader computes it
    f0_est = np.median(corrected, axis=1, keepdims=True)
    dff = ((corrected - f0_est) / f0_est).astype(np.float32)
    return {"raw": raw, "neuropil": neuropil, "demixed": demixed, "dff": dff}


def _frame_rates(
    stims: dict[str, dict[str, Any]],
    c: dict[str, np.ndarray],
    n_frames: int,
    movie_drive: dict[str, np.ndarray],
    templates: dict[str, np.ndarray],
) -> np.ndarray:
    """Event rate (cells, frames): baseline plus the evoked rate of the presentation shown."""
    owner = np.full(n_frames, -1)
    blocks, offset = [], 0
    for name, st in stims.items():
        if st["kind"] == "interval":
            continue
        blocks.append(_evoked_rates(name, st, c, movie_drive, templates))
        for j, (s, e) in enumerate(zip(st["start_frame"], st["end_frame"], strict=True)):
            owner[s:e] = offset + j
        offset += len(st["start_frame"])
    evoked = np.hstack([*blocks, np.zeros((len(c["base_rate"]), 1))]).astype(np.float32)
    return c["base_rate"][:, None].astype(np.float32) + evoked[:, owner]


# --------------------------------------------------------------------------- file writing


def _write_stimuli(
    f: h5py.File, stims: dict[str, dict[str, Any]], ts: np.ndarray, templates: dict[str, np.ndarray]
) -> None:
    pres = f.create_group("stimulus/presentation")
    tmpl = f.create_group("stimulus/templates")
    for name in sorted(stims):
        st = stims[name]
        g = pres.create_group(f"{name}_stimulus")
        fd = np.column_stack([st["start_frame"], st["end_frame"]]).astype(np.int64)
        if st["kind"] == "afs":
            _ts(
                g,
                ancestry=["TimeSeries", "AbstractFeatureSeries"],
                description=f"{name}_stimulus",
                help_="Features of an applied stimulus. This is useful when storing the raw "
                "stimulus is impractical",
                comments=_STIM_COMMENT,
            )
            g.attrs["missing_fields"] = np.array([b"feature_units"])
            _data(g, st["params"].astype(np.float32), "see 'feature_units'")
            g.create_dataset("features", data=np.array([s.encode() for s in st["features"]]))
            _custom(g, "frame_duration", fd.astype(np.float32))
        elif st["kind"] == "index":
            _ts(
                g,
                ancestry=["TimeSeries", "IndexSeries"],
                description=f"{name}_stimulus",
                help_=_INDEX_HELP,
                comments=_STIM_COMMENT,
            )
            _data(g, st["frames"].astype(np.int64), "frame")
            _custom(g, "frame_duration", fd)
            g.create_dataset(
                "indexed_timeseries_path", data=_s(f"/stimulus/templates/{name}_image_stack")
            )
            g["indexed_timeseries"] = h5py.SoftLink(f"/stimulus/templates/{name}_image_stack")
        else:  # IntervalSeries: +1 at each start, -1 at each stop; frame in column 0
            _ts(
                g,
                ancestry=["TimeSeries", "IntervalSeries"],
                description=f"{name}_stimulus",
                help_="Stores the start and stop times for events",
                comments=_STIM_COMMENT,
            )
            events = np.ravel(np.column_stack([np.ones(len(fd)), -np.ones(len(fd))]))
            _data(g, events.astype(np.int8), "interval")
            ev_frames = np.ravel(fd)
            _custom(g, "frame_duration", np.column_stack([ev_frames, ev_frames]))
        times = ts[np.minimum(fd[:, 0], len(ts) - 1)]
        _timestamps(
            g,
            np.ravel(np.column_stack([times, ts[np.minimum(fd[:, 1], len(ts) - 1)]]))
            if st["kind"] == "interval"
            else times,
        )
        if name in templates:
            t = tmpl.create_group(f"{name}_image_stack")
            _ts(
                t,
                ancestry=["TimeSeries"],
                description=f"{name} template (down-sampled)",
                help_="General time series object",
                comments=_STIM_COMMENT,
            )
            t.attrs["missing_fields"] = np.array([b"num_samples"])
            _custom(t, "bits_per_pixel", np.int64(8))
            arr = templates[name]
            t.create_dataset(
                "data", data=arr, compression="gzip", chunks=(min(len(arr), 64), *arr.shape[1:])
            )
            for k, v in (
                ("conversion", np.float64(1.0)),
                ("resolution", np.float64(1.0)),
                ("unit", _s("frame")),
            ):
                t["data"].attrs[k] = v
            _custom(t, "dimension", np.array(arr.shape[1:], dtype=np.int64))
            _custom(t, "field_of_view", np.array(arr.shape[1:], dtype=np.float32))
            _custom(t, "format", _s("raw"))


def _write_pipeline(
    f: h5py.File,
    tr: dict[str, np.ndarray],
    ts: np.ndarray,
    m: dict[str, Any],
    ids: dict[str, np.ndarray],
    masks: np.ndarray,
    c: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> None:
    n, t = tr["dff"].shape
    p = f.create_group(_PIPE)
    p.attrs["interfaces"] = np.array(
        [
            b"BehavioralTimeSeries",
            b"DfOverF",
            b"EyeTracking",
            b"Fluorescence",
            b"ImageSegmentation",
            b"MotionCorrection",
            b"PupilTracking",
        ]
    )
    p.attrs["neurodata_type"] = "Module"
    prod = (
        f"/projects/neuralcoding/vol1/prod5/specimen_{m['specimen_id']}"
        f"/ophys_experiment_{m['ophys_experiment_id']}"
    )
    chunks = (min(n, 32), min(t, 16384))
    roi_names = np.array([f"roi_{i:04d}".encode() for i in range(n)])
    link2p = np.array([b"", b"/acquisition/timeseries/2p_image_series"])

    def roi_series(g: h5py.Group, data: np.ndarray, description: str, unit: str) -> None:
        _ts(
            g,
            ancestry=["TimeSeries", "RoiResponseSeries"],
            description=description,
            help_=_ROI_HELP,
        )
        _data(g, data, unit, chunks=chunks)
        g.create_dataset("roi_names", data=roi_names)
        g.create_dataset("segmentation_interface_path", data=_s(f"{_PIPE}/ImageSegmentation"))
        g["segmentation_interface"] = h5py.SoftLink(f"/{_PIPE}/ImageSegmentation")
        _timestamps(g, ts)

    dff = p.create_group("DfOverF")
    dff.attrs.update(
        help="Df/f over time of one or more ROIs. TimeSeries names should correspond "
        "to imaging plane names",
        neurodata_type="Interface",
        source=_s(f"{prod}/{m['ophys_experiment_id']}_dff.h5"),
    )
    g = dff.create_group("imaging_plane_1")
    roi_series(g, tr["dff"], "DF/F data for imaging plane imaging_plane_1", "frame")
    g.attrs["timestamp_link"] = np.array([f"{_PIPE}/DfOverF/imaging_plane_1".encode(), link2p[1]])

    fl = p.create_group("Fluorescence")
    fl.attrs.update(
        help="Fluorescence over time of one or more ROIs. TimeSeries names should "
        "correspond to imaging plane names",
        neurodata_type="Interface",
        source=_s(f"{prod}/neuropil_correction.h5"),
    )
    rmse = (c["f0"] * rng.uniform(0.01, 0.03, n)).astype(np.float32)
    r = c["r"].astype(np.float32)
    g = fl.create_group("imaging_plane_1")
    roi_series(g, tr["raw"], "Fluorescence data for imaging plane imaging_plane_1", "frame")
    _custom(
        g,
        "comments",
        _s(
            "'data' stores raw traces. Neuropil traces are stored in "
            "'neuropil_traces'. Neuropil corrected trace equals (raw_trace - r * "
            f"neuropil_trace). See {_HELP_URL} for information about neuropil "
            "calculation"
        ),
    )
    _custom(
        g,
        "neuropil_traces_path",
        _s(f"{_PIPE}/Fluorescence/imaging_plane_1_neuropil_response/data"),
    )
    g["neuropil_traces"] = h5py.SoftLink(
        f"/{_PIPE}/Fluorescence/imaging_plane_1_neuropil_response/data"
    )
    _custom(g, "r", r)
    _custom(g, "rmse", rmse)
    g = fl.create_group("imaging_plane_1_demixed_signal")
    roi_series(
        g,
        tr["demixed"],
        "Demixed traces are computed by first identifying overlapping "
        "regions between all ROIs in the experiment.  Signal in overlapping regions is "
        "reassigned to individual ROIs via linear regression. Site is imaging_plane_1",
        "unknown",
    )
    g = fl.create_group("imaging_plane_1_neuropil_response")
    roi_series(
        g, tr["neuropil"], "Neuropil fluorescence data for imaging plane imaging_plane_1", "unknown"
    )
    g.attrs["data_link"] = np.array(
        [
            f"/{_PIPE}/Fluorescence/imaging_plane_1/neuropil_traces".encode(),
            f"/{_PIPE}/Fluorescence/imaging_plane_1_neuropil_response/data".encode(),
        ]
    )
    _custom(g, "r", r)
    _custom(g, "rmse", rmse)

    seg = p.create_group("ImageSegmentation")
    seg.attrs.update(
        help="Stores groups of pixels that define regions of interest from one or "
        "more imaging planes",
        neurodata_type="Interface",
        source=_s(f"{prod}/neuropil_correction.h5"),
    )
    _custom(seg, "cell_specimen_ids", ids["cell_specimen_id"])
    _custom(seg, "roi_ids", np.array([str(v).encode() for v in ids["cell_roi_id"]]))
    plane = seg.create_group("imaging_plane_1")
    plane.create_dataset("description", data=_s("Image segmentation masks for 2-P imaging"))
    plane.create_dataset("imaging_plane_name", data=_s("imaging_plane_1"))
    bright = np.tensordot(c["f0"] / c["f0"].max(), masks, axes=1)
    background = 600 + 150 * rng.random((512, 512))
    avg = (background + 1500 * bright).astype(np.uint16)
    mx = (background * 1.5 + 3000 * bright).astype(np.uint16)
    _image_series(
        plane.create_group("reference_images/maximum_intensity_projection_image"), mx, ts[0]
    )
    _image_series(plane.create_group("reference_images/average_image"), avg, ts[0])
    for i in range(n):
        roi = plane.create_group(roi_names[i].decode())
        roi.create_dataset(
            "img_mask", data=masks[i].astype(np.float32), compression="gzip", chunks=(128, 512)
        )
        yx = np.argwhere(masks[i])
        roi.create_dataset("pix_mask", data=yx[:, ::-1].astype(np.uint16))  # (x, y) pairs
        roi.create_dataset("pix_mask_weight", data=np.ones(len(yx), dtype=np.float32))
        roi.create_dataset("roi_description", data=_s("cell"))
    plane.create_dataset("roi_list", data=roi_names)

    beh = p.create_group("BehavioralTimeSeries")
    beh.attrs.update(
        help="General container for storing time series",
        neurodata_type="Interface",
        source=_s("Measured data"),
    )
    lag = 5  # the wheel starts a few frames after the 2-photon movie, as in the real file
    speed = 8 * np.log1p(np.exp(3 * _smooth_noise(rng, (t - lag,), tau=60.0) - 1.5))
    g = beh.create_group("running_speed")
    _ts(
        g,
        ancestry=["TimeSeries"],
        help_="General time series object",
        description="Velocity of the running wheel in context of 2p_image_series timeline",
    )
    _data(g, speed.astype(np.float32), "cm/s")
    _timestamps(g, ts[lag:])
    g = beh.create_group("running_speed_index")
    _ts(
        g,
        ancestry=["TimeSeries", "IndexSeries"],
        help_=_INDEX_HELP,
        description="Indices of wheel_velocity frame in context of 2p_image_series timeline",
    )
    _data(g, np.arange(t - lag, dtype=np.int64), "frame", conversion=np.nan)
    g.create_dataset(
        "indexed_timeseries_path", data=_s(f"{_PIPE}/BehavioralTimeSeries/running_speed")
    )
    g["indexed_timeseries"] = h5py.SoftLink(f"/{_PIPE}/BehavioralTimeSeries/running_speed")
    _timestamps(g, ts[lag:])

    _eye_tracking(p, ts)

    mc = p.create_group("MotionCorrection")
    orig = "'original' is '/acquisition/timeseries/2p_image_series'"
    mc.attrs.update(
        help="Image stacks whose frames have been shifted (registered) to account for motion",
        links=_s(orig),
        neurodata_type="Interface",
        source=_s("Acquired 2-photon image"),
    )
    s2p = mc.create_group("2p_image_series")
    s2p.attrs["links"] = _s(orig)
    _two_photon_series(
        s2p.create_group("corrected"),
        ts,
        "Motion corrected in-vivo two-photon calcium imaging of neuronal activity",
        "N/A",
        source="This module",
    )
    s2p.create_dataset("original_path", data=_s("/acquisition/timeseries/2p_image_series"))
    s2p["original"] = h5py.SoftLink("/acquisition/timeseries/2p_image_series")
    g = s2p.create_group("xy_translation")
    _ts(
        g,
        ancestry=["TimeSeries"],
        help_="General time series object",
        source="This module",
        description="Time series of x, y shifts applied to create motion stabilized image series",
    )
    xy = np.round(2 * _smooth_noise(rng, (2, t), tau=10.0).T + 0.2 * rng.standard_normal((t, 2)))
    _data(g, xy.astype(np.float32), "frame")
    _custom(g, "feature_description", np.array([b"x", b"y"]))
    _timestamps(g, ts)


def _write_one(out: Path, sc: dict[str, Any], session_type: str, rng: np.random.Generator) -> Path:
    m = _metadata(rng, session_type)
    stims, duration = _schedule(session_type, sc, rng)
    n_frames = int(np.ceil(duration * _FRAME_RATE))
    t0 = float(rng.uniform(8.0, 10.0))
    ts = t0 + np.arange(n_frames) / _FRAME_RATE + rng.normal(0, 2e-4, n_frames)
    for st in stims.values():
        st["start_frame"] = np.searchsorted(ts, t0 + st["on_abs"]).astype(np.int64)
        st["end_frame"] = np.minimum(np.searchsorted(ts, t0 + st["off_abs"]), n_frames - 1)
    n = sc["n_cells"]
    c = _cells(n, rng, _LSN_GRID["locally_sparse_noise"])
    c["lsn_on_off_cells"] = np.int64(sc.get("lsn_on_off_cells", 0))
    templates = _templates(stims, sc, rng)
    movie_drive = {
        name: 4.0 * np.maximum(_smooth_noise(rng, (n, int(st["frames"].max()) + 1), 8.0) - 1.0, 0)
        for name, st in stims.items()
        if name.startswith("natural_movie")
    }
    rates = _frame_rates(stims, c, n_frames, movie_drive, templates)
    tr = _traces(rates, c, rng)
    del rates
    masks = _roi_masks(n, rng)
    ids = {
        "cell_specimen_id": np.sort(
            rng.choice(np.arange(517_000_000, 518_000_000), n, replace=False)
        ),
        "cell_roi_id": np.sort(rng.choice(np.arange(587_000_000, 588_000_000), n, replace=False)),
    }
    exp_id = m["ophys_experiment_id"]
    path = out / f"{exp_id}.nwb"
    start = m["session_start_time"].strftime("%a %b %d %H:%M:%S %Y")
    with h5py.File(path, "w") as f:
        acq = f.create_group("acquisition/timeseries")
        f.create_group("acquisition/images")
        _two_photon_series(
            acq.create_group("2p_image_series"),
            ts,
            "Unprocessed in-vivo two-photon calcium imaging of neuronal activity",
            "imaging_plane_1",
        )
        acq["2p_image_series"].attrs["timestamp_link"] = np.array(
            [
                f"{_PIPE}/DfOverF/imaging_plane_1".encode(),
                b"/acquisition/timeseries/2p_image_series",
            ]
        )
        f.create_group("analysis")
        f.create_group("epochs").attrs["tags"] = _s("[]")
        _vlen(f, "file_create_date", [start])
        _write_general(f, m)
        _vlen(
            f,
            "identifier",
            f"Brain Observatory Visual Coding Experiment {exp_id}; NWB-1.0.5; {start}",
        )
        _vlen(f, "nwb_version", "NWB-1.0.5")
        _write_pipeline(f, tr, ts, m, ids, masks, c, rng)
        _vlen(
            f,
            "session_description",
            "2-photon recording of visual areas in head-fixed mouse with visual stimulus",
        )
        f.create_dataset("session_start_time", data=_s(start))
        _write_stimuli(f, stims, ts, templates)
    osi, dsi = _osi_dsi(c)
    truth = {
        "ophys_experiment_id": exp_id,
        "session_type": session_type,
        "metadata": {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in m.items()},
        "cells": [
            {
                "cell_specimen_id": int(ids["cell_specimen_id"][i]),
                "cell_roi_id": int(ids["cell_roi_id"][i]),
                "pref_direction": float(c["pref_direction"][i]),
                "pref_temporal_frequency": float(c["pref_temporal_frequency"][i]),
                "osi_dg": float(osi[i]),
                "dsi_dg": float(dsi[i]),
                "responsive_dg": bool(c["responsive_dg"][i]),
                "pref_orientation_sg": float(c["pref_orientation_sg"][i]),
                "pref_spatial_frequency_sg": float(c["pref_spatial_frequency_sg"][i]),
                "pref_image_ns": int(np.argmax(c["ns_tuning"][i])),
                "rf_center_row_lsn": int(c["rf_row"][i]),
                "rf_center_col_lsn": int(c["rf_col"][i]),
                "rf_on_lsn": bool(c["rf_on"][i]),
                "rf_on_off_lsn": bool(i < c["lsn_on_off_cells"]),
                "r": float(c["r"][i]),
            }
            for i in range(n)
        ],
    }
    path.with_suffix(".truth.json").write_text(json.dumps(truth, indent=1))
    return path


def write(
    out_dir: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    session_type: str = "three_session_A",
    n_experiments: int = 1,
    lsn_on_off_cells: int = 0,
    lsn_frames: int | None = None,
) -> list[Path]:
    """Write Visual Coding 2P experiments as NWB 1.0.5 files, ``<ophys_experiment_id>.nwb``.

    Parameters
    ----------
    out_dir
        Folder to write into (created if needed).
    scale
        ``"tiny"`` (10 cells, 3 repeats of gratings, a few MB), ``"small"`` (6 cells, the
        repeats AllenSDK's stimulus analyses need, e.g. 10 movie repeats) or ``"realistic"``
        (170 cells, a one-hour session at 30 Hz).
    seed
        Seed of ``np.random.default_rng``; the same seed gives byte-identical arrays.
    session_type
        One of :data:`SESSION_TYPES` (``three_session_A``, ``_B``, ``_C`` or ``_C2``).
    n_experiments
        Number of independent experiments (files) to write.
    lsn_on_off_cells
        The first this many cells respond to both polarities of the locally sparse noise: their
        drawn subfield and the opposite one 3 grid columns over (ground truth
        ``rf_on_off_lsn``). 0 (default) keeps the files of a seed as they were.
    lsn_frames
        Locally sparse noise sweeps of ``locally_sparse_noise`` (the 4deg and 8deg variants get
        half each) instead of the scale's (240 tiny, 480 small, 8880 realistic).

    Returns
    -------
    list of Path
        The NWB files written; each has a ``.truth.json`` beside it (see :func:`ground_truth`).

    Examples
    --------
    >>> paths = write(tmp_path, scale="tiny", seed=1)  # doctest: +SKIP
    """
    if scale not in _SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(_SCALES)}")
    if session_type not in SESSION_TYPES:
        raise ValueError(
            f"unknown session_type {session_type!r}; choose one of {sorted(SESSION_TYPES)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sc = {**_SCALES[scale], "lsn_on_off_cells": lsn_on_off_cells}
    if lsn_frames is not None:
        sc["lsn_frames"] = int(lsn_frames)
    return [
        _write_one(out, sc, session_type, np.random.default_rng([seed, i]))
        for i in range(n_experiments)
    ]


def ground_truth(path: str | Path) -> dict[str, Any]:
    """Return the ground truth written beside a synthetic file (``<id>.truth.json``).

    Keys: ``ophys_experiment_id``, ``session_type``, ``metadata`` and ``cells``, a list (in file
    order) of dicts with ``cell_specimen_id``, ``pref_direction`` (deg), ``pref_temporal_frequency``
    (Hz), ``osi_dg``, ``dsi_dg``, ``responsive_dg``, ``pref_orientation_sg``,
    ``pref_spatial_frequency_sg``, ``pref_image_ns``, ``rf_center_row_lsn``/``_col_lsn``,
    ``rf_on_lsn``, ``rf_on_off_lsn`` (both subfields) and the neuropil coefficient ``r``.
    """
    return json.loads(Path(path).with_suffix(".truth.json").read_text())
