"""Seeded Visual Behavior 2P (VBO) ``behavior_ophys_experiment_<id>.nwb`` files.

The files follow the real VBO layout (``ALLEN_DATA.md`` §2) with core NWB types only: the
``ndx-aibs-*`` and ``ndx-ellipse-eye-tracking`` extensions cannot be installed, so the fields
those types add are written as plain HDF5 datasets at the real paths. HDF5 paths written:

- ``scratch/metadata``: one-row DynamicTable of the experiment metadata (stands in for
  ``general/metadata`` = OphysBehaviorMetadata): every column of the VBO
  ``ophys_experiment`` table plus ``ophys_frame_rate``, ``stimulus_frame_rate``,
  ``field_of_view_width``/``height`` (pixels), ``imaging_plane_group_count``,
  ``behavior_session_uuid``. ``driver_line`` is ``;``-joined; a missing
  ``imaging_plane_group`` is -1. ``scratch/task_parameters``: one-row table of task settings.
- ``identifier`` = ophys_experiment_id, ``general/session_id`` = ophys_session_id,
  ``general/subject`` (subject_id = mouse_id, genotype = full_genotype, sex, age ``P<d>D``),
  ``general/optophysiology/imaging_plane_1`` (+ ``channel_1``; location = targeted structure,
  indicator, imaging_rate, 910 nm, grid_spacing in µm).
- ``processing/ophys/image_segmentation/cell_specimen_table`` (PlaneSegmentation, ``id`` =
  cell_roi_id, ``image_mask`` (N, 512, 512) bool, cell_specimen_id (-1 = unmatched), x, y,
  width, height, valid_roi, mask_image_plane, max_correction_{up,down,left,right}).
- ``processing/ophys/{dff,corrected_fluorescence,neuropil_trace,demixed_trace}/traces``
  (RoiResponseSeries, data (T, N) float64, gzip); ``corrected_fluorescence/{r,RMSE}`` (N,).
- ``processing/ophys/event_detection`` (RoiResponseSeries: data (T, N) float64, gzip, mostly
  zeros) with extra datasets ``lambdas`` and ``noise_stds`` (N,).
- ``processing/ophys/images/{max_projection,average_image,segmentation_mask_image}`` (uint16).
- ``processing/ophys/ophys_motion_correction_{x,y}`` (TimeSeries, pixels).
- ``intervals/<image set>_presentations`` (one table per stimulus, named by its
  ``stimulus_name`` as AllenSDK does, with pynwb's ragged ``tags`` and ``timeseries``
  references into the stimulus frame times) and ``intervals/trials`` (``lick_times`` ragged).
- ``processing/licking/licks`` (data = stimulus frame), ``processing/rewards/{volume,
  autorewarded}`` (both left out when empty, as in passive sessions),
  ``processing/running/{dx,speed,speed_unfiltered}``, ``acquisition/{v_sig,v_in}``,
  ``processing/stimulus/timestamps`` (data = frame index).
- ``acquisition/EyeTracking/{eye,pupil,corneal_reflection}_tracking`` (SpatialSeries: data =
  centre (T, 2) in pixels, plus datasets area, area_raw, width, height, angle) and
  ``acquisition/EyeTracking/likely_blink/{data,timestamps}``.

Every ``object_id`` is derived from the seed, so two writes give identical files apart from
HDF5 bookkeeping; ``event_detection_version=2`` changes only the event_detection datasets.
"""

from __future__ import annotations

import ast
import csv
import datetime
import importlib.resources
import uuid
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, VectorData, VectorIndex
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.base import Images, TimeSeriesReference, TimeSeriesReferenceVectorData
from pynwb.behavior import EyeTracking
from pynwb.epoch import TimeIntervals
from pynwb.file import Subject
from pynwb.image import GrayscaleImage
from pynwb.ophys import (
    DfOverF,
    Fluorescence,
    ImageSegmentation,
    OpticalChannel,
    PlaneSegmentation,
    RoiResponseSeries,
)
from scipy.signal import lfilter

__all__ = ["IMAGE_SETS", "ground_truth", "write"]

_SCALES = {"tiny": (12, 180.0), "realistic": (200, 3600.0)}  # (ROIs, seconds)
_FOV = 512
_PIXEL_UM = 400.0 / _FOV
_STIM_RATE = 60.0
_FLASH_FRAMES, _CYCLE_FRAMES = 15, 45  # 250 ms on, 750 ms per flash at 60 Hz
_OMITTED_FRACTION = 0.05
_EVENT_THRESHOLD = {1: 2.0, 2: 3.0}  # x noise std; version 2 is the "fixed" detection

#: image set letter -> (stimulus name, the 8 image names).
IMAGE_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "A": (
        "Natural_Images_Lum_Matched_set_training_2017.07.14",
        ("im061", "im062", "im063", "im065", "im066", "im069", "im077", "im085"),
    ),
    "B": (
        "Natural_Images_Lum_Matched_set_ophys_6_2017.07.14",
        ("im000", "im031", "im035", "im045", "im054", "im073", "im075", "im106"),
    ),
    "G": (
        "Natural_Images_Lum_Matched_set_ophys_G_2019",
        ("im012", "im036", "im044", "im047", "im078", "im083", "im111", "im115"),
    ),
    "H": (
        "Natural_Images_Lum_Matched_set_ophys_H_2019",
        ("im005", "im024", "im034", "im083", "im087", "im104", "im111", "im114"),
    ),
}


def _experiment_rows(seed: int, n_experiments: int) -> list[dict[str, str]]:
    text = importlib.resources.files("abo_lake.synthetic").joinpath(
        "data/vbo_ophys_experiments_sample.csv"
    )
    with text.open("r", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not 1 <= n_experiments <= len(rows):
        raise ValueError(f"n_experiments must be in 1..{len(rows)}, got {n_experiments}")
    order = np.random.default_rng([seed, 0xA11E]).permutation(len(rows))[:n_experiments]
    return [rows[i] for i in order]


def _cells(row: dict[str, str], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the cells of one experiment: ids, ROI geometry and ground-truth tuning."""
    n_invalid = max(1, n // 6)
    valid = np.ones(n, bool)
    valid[rng.choice(n, n_invalid, replace=False)] = False
    roi_id = 1_080_000_000 + np.cumsum(rng.integers(1, 500, n)).astype(np.int64)
    specimen = 1_086_000_000 + np.cumsum(rng.integers(1, 5000, n)).astype(np.int64)
    specimen[~valid] = -1
    kind = rng.choice(3, n, p=[0.65, 0.2, 0.15])  # 0 image, 1 omission, 2 unresponsive
    kind[~valid] = 2
    preferred = rng.integers(0, 8, n)
    tuning = rng.uniform(0.0, 0.2, (n, 8))
    tuning[np.arange(n), preferred] = 1.0
    gain = np.where(kind == 0, rng.uniform(4.0, 8.0, n), np.where(kind == 1, 1.5, 0.0))
    return {
        "cell_roi_id": roi_id,
        "cell_specimen_id": specimen,
        "valid_roi": valid,
        "image_responsive": kind == 0,
        "omission_responsive": kind == 1,
        "preferred_image_index": np.where(kind == 0, preferred, -1),
        "tuning": tuning,
        "gain": gain,
        "omission_gain": np.where(kind == 1, rng.uniform(4.0, 8.0, n), 0.0),
        "centre": rng.uniform(20, _FOV - 20, (n, 2)),
        "radius": rng.uniform(5.0, 9.0, (n, 2)),
        "amplitude": rng.uniform(0.15, 0.4, n),
        "noise": rng.uniform(0.03, 0.08, n),
        "F0": rng.uniform(80.0, 400.0, n),
    }


def ground_truth(seed: int = 0, *, scale: str = "tiny", n_experiments: int = 1) -> list[dict]:
    """Return the known answers behind :func:`write` (same seed, scale, n_experiments).

    Returns
    -------
    list of dict
        Per experiment: ophys_experiment_id, image_names, and per cell (in file order)
        cell_roi_id, cell_specimen_id, valid_roi, image_responsive, omission_responsive,
        preferred_image_name ("" when not image-responsive).
    """
    n_rois, _ = _scale(scale)
    out = []
    for i, row in enumerate(_experiment_rows(seed, n_experiments)):
        cells = _cells(row, n_rois, np.random.default_rng([seed, i, 1]))
        names = IMAGE_SETS[row["image_set"]][1]
        out.append(
            {
                "ophys_experiment_id": int(row["ophys_experiment_id"]),
                "image_names": list(names),
                "cell_roi_id": cells["cell_roi_id"].tolist(),
                "cell_specimen_id": cells["cell_specimen_id"].tolist(),
                "valid_roi": cells["valid_roi"].tolist(),
                "image_responsive": cells["image_responsive"].tolist(),
                "omission_responsive": cells["omission_responsive"].tolist(),
                "preferred_image_name": [
                    names[k] if k >= 0 else "" for k in cells["preferred_image_index"]
                ],
            }
        )
    return out


def _scale(scale: str) -> tuple[int, float]:
    if scale not in _SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(_SCALES)}")
    return _SCALES[scale]


def _clock(t0: float, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Regular sample times with sub-millisecond sync jitter (strictly increasing)."""
    return t0 + np.arange(n) / rate + rng.normal(0.0, 1e-4, n)


def _behavior(row: dict[str, str], duration: float, rng: np.random.Generator) -> dict[str, Any]:
    """Stimulus presentations, trials, licks and rewards of a change detection session."""
    passive = row["passive"] == "True"
    names = IMAGE_SETS[row["image_set"]][1]
    stim_t = _clock(0.8, _STIM_RATE, int((duration - 1.0) * _STIM_RATE), rng)
    n_flash = (len(stim_t) - 252 - _CYCLE_FRAMES) // _CYCLE_FRAMES
    image = np.zeros(n_flash, np.int64)
    is_change = np.zeros(n_flash, bool)
    sham = np.zeros(n_flash, bool)
    trial_of = np.zeros(n_flash, np.int64)
    trials: list[dict[str, Any]] = []
    current, start, queue = int(rng.integers(8)), 0, []
    while start < n_flash:
        n_wait = int(rng.integers(4, 12))
        catch = rng.random() < 0.12
        aborted = (not passive) and rng.random() < 0.1
        end = min(start + (int(rng.integers(1, n_wait)) + 1 if aborted else n_wait + 4), n_flash)
        change = start + n_wait
        trial = {"start": start, "end": end, "initial": current, "aborted": aborted}
        trial.update(catch=catch and not aborted, go=not (catch or aborted), change=None)
        image[start:end] = current
        if change >= n_flash:  # the session ends before this trial's change
            trial.update(go=False, catch=False)
        elif not aborted:
            trial["change"] = change
            if catch:
                sham[change] = True
            else:
                is_change[change] = True
                current = _next_image(current, queue, rng)
                image[change:end] = current
        trial_of[start:end] = len(trials)
        trial["final"] = current
        trials.append(trial)
        start = end
    protect = is_change | sham | np.roll(is_change | sham, -1)
    protect[0] = True
    omitted = (rng.random(n_flash) < _OMITTED_FRACTION) & ~protect
    since = np.zeros(n_flash, np.int64)
    for k in range(1, n_flash):
        since[k] = 0 if is_change[k] else since[k - 1] + 1
    start_frame = 252 + _CYCLE_FRAMES * np.arange(n_flash)
    end_frame = start_frame + _FLASH_FRAMES
    pres = {
        "start_time": stim_t[start_frame],
        "stop_time": stim_t[end_frame],
        "start_frame": start_frame,
        "end_frame": end_frame,
        "image_index": np.where(omitted, 8, image),
        "image_name": np.array([("omitted" if o else names[i]) for i, o in zip(image, omitted)]),
        "is_change": is_change,
        "is_sham_change": sham,
        "omitted": omitted,
        "flashes_since_change": since,
        "trials_id": trial_of,
    }
    licks: list[float] = []
    rewards: list[tuple[float, float, bool]] = []
    table: dict[str, list] = {k: [] for k in _TRIAL_COLUMNS}
    t_on = pres["start_time"]
    for i, tr in enumerate(trials):
        ch = tr["change"]
        change_time = float(t_on[ch]) if ch is not None else np.nan
        lick_t: list[float] = []
        if tr["aborted"]:
            lick_t = [float(t_on[tr["end"] - 1] + rng.uniform(0.2, 0.5))]
        elif ch is not None and not passive:
            p_lick = 0.75 if tr["go"] else 0.2
            if rng.random() < p_lick:
                first = change_time + rng.uniform(0.3, 0.6)
                lick_t = list(first + 0.15 * np.arange(int(rng.integers(2, 6))))
        auto = tr["go"] and i < 3 and not passive
        in_window = [t for t in lick_t if ch is not None and 0.15 <= t - change_time <= 0.75]
        response = in_window[0] if in_window else np.nan
        hit = bool(tr["go"] and in_window)
        reward_t, volume = np.nan, 0.0
        if auto:
            reward_t, volume = change_time, 0.005
        elif hit:
            reward_t, volume = response + 0.01, 0.007
        if volume:
            rewards.append((reward_t, volume, auto))
        licks.extend(lick_t)
        stop = float(stim_t[min(tr["end"] * _CYCLE_FRAMES + 252, len(stim_t) - 1)])
        values = {
            "start_time": float(t_on[tr["start"]]),
            "stop_time": stop,
            "lick_times": lick_t,
            "reward_time": reward_t,
            "reward_volume": volume,
            "hit": hit,
            "false_alarm": bool(tr["catch"] and in_window),
            "miss": bool(tr["go"] and not in_window),
            "correct_reject": bool(tr["catch"] and not in_window),
            "aborted": tr["aborted"],
            "go": tr["go"],
            "catch": tr["catch"],
            "auto_rewarded": auto,
            "change_time": change_time,
            "response_time": response,
            "change_frame": float(start_frame[ch]) if ch is not None else np.nan,
            "initial_image_name": names[tr["initial"]],
            "change_image_name": "" if ch is None else names[tr["final"]],
        }
        for k, v in values.items():
            table[k].append(v)
    if passive:  # a few spontaneous licks, outside every response window
        starts = np.asarray(table["start_time"])
        for t_lick in np.sort(rng.uniform(starts[0], table["stop_time"][-1], 1 + n_flash // 80)):
            i = int(np.searchsorted(starts, t_lick, side="right") - 1)
            change_time = table["change_time"][i]
            if not 0.0 <= t_lick - change_time <= 1.0:
                table["lick_times"][i] = [*table["lick_times"][i], float(t_lick)]
                licks.append(float(t_lick))
    lick_times = np.sort(np.asarray(licks, np.float64))
    rew = np.array(rewards, dtype=[("t", "f8"), ("v", "f8"), ("a", "?")])
    return {
        "stim_t": stim_t,
        "pres": pres,
        "trials": table,
        "lick_times": lick_times,
        "lick_frames": np.searchsorted(stim_t, lick_times).astype(np.int64),
        "reward_times": rew["t"],
        "reward_volume": rew["v"],
        "reward_auto": rew["a"],
        "passive": passive,
    }


def _next_image(current: int, queue: list[int], rng: np.random.Generator) -> int:
    """Next change image: walk through shuffled rounds of all 8, so every image is shown."""
    while True:
        if not queue:
            queue.extend(rng.permutation(8).tolist())
        image = queue.pop()
        if image != current:
            return image


_TRIAL_COLUMNS = [
    "start_time",
    "stop_time",
    "lick_times",
    "reward_time",
    "reward_volume",
    "hit",
    "false_alarm",
    "miss",
    "correct_reject",
    "aborted",
    "go",
    "catch",
    "auto_rewarded",
    "change_time",
    "response_time",
    "change_frame",
    "initial_image_name",
    "change_image_name",
]


def _traces(
    cells: dict[str, np.ndarray], pres: dict, t: np.ndarray, tau: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """GCaMP-like (T, N) traces driven by the flashes, and the true event train."""
    dt = float(np.median(np.diff(t)))
    onsets = pres["start_time"]
    k = np.searchsorted(onsets, t, side="right") - 1
    phase = t - onsets[np.clip(k, 0, None)]
    kk = np.clip(k, 0, None)
    img = pres["image_index"][kk]
    omitted = pres["omitted"][kk]
    change_gain = np.where(pres["is_change"][kk], 2.0, 1.0)
    image_window = (k >= 0) & (phase >= 0.05) & (phase < 0.35) & ~omitted
    omit_window = (k >= 0) & (phase >= 0.1) & (phase < 0.6) & omitted
    tuning = cells["tuning"][:, np.clip(img, 0, 7)].T  # (T, N)
    rate = 0.1 + image_window[:, None] * change_gain[:, None] * cells["gain"] * tuning
    rate = rate + omit_window[:, None] * cells["omission_gain"]
    counts = rng.poisson(rate * dt)
    spikes = counts * rng.gamma(4.0, cells["amplitude"] / 4.0, counts.shape)
    g_decay, g_rise = np.exp(-dt / tau), np.exp(-dt / 0.05)
    calcium = lfilter([1.0], [1.0, -g_decay], spikes, axis=0)
    calcium = lfilter([1.0 - g_rise], [1.0, -g_rise], calcium, axis=0)
    n = len(cells["F0"])
    rel = (t - t[0])[:, None] / max(t[-1] - t[0], 1.0)
    period, shift = rng.uniform(200.0, 900.0, n), rng.uniform(0, 2 * np.pi, n)
    drift = 1.0 + 0.04 * np.sin(2 * np.pi * (t[:, None] - t[0]) / period + shift) - 0.05 * rel
    baseline = cells["F0"] * drift
    corrected = baseline * (1.0 + calcium) + cells["F0"] * cells["noise"] * rng.normal(
        size=calcium.shape
    )
    population = lfilter([0.05], [1.0, -0.95], calcium.mean(axis=1))
    np_f0 = rng.uniform(50.0, 150.0, n)
    neuropil = np_f0 * drift * (1.0 + population[:, None]) + 3.0 * rng.normal(size=calcium.shape)
    r = rng.uniform(0.6, 0.9, n)
    return {
        "dff": corrected / baseline - 1.0,
        "corrected": corrected,
        "neuropil": neuropil,
        "demixed": corrected + r * neuropil,
        "r": r,
        "RMSE": cells["F0"] * cells["noise"] * rng.uniform(1.0, 1.1, n),
        "spikes": spikes,
        "calcium": calcium,
    }


def _events(dff: np.ndarray, spikes: np.ndarray, version: int) -> dict[str, np.ndarray]:
    """Detected events: true events above a version-dependent threshold (no randomness)."""
    if version not in _EVENT_THRESHOLD:
        raise ValueError(f"event_detection_version must be 1 or 2, got {version!r}")
    if version == 1:
        d = np.diff(dff, axis=0)
        noise = 1.4826 * np.median(np.abs(d - np.median(d, axis=0)), axis=0) / np.sqrt(2.0)
    else:
        noise = 1.4826 * np.median(np.abs(dff - np.median(dff, axis=0)), axis=0)
    threshold = _EVENT_THRESHOLD[version] * noise
    events = np.where(spikes >= threshold, spikes, 0.0)
    return {"data": events, "lambdas": 0.5 * threshold**2, "noise_stds": noise}


def _masks(cells: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    n = len(cells["F0"])
    masks = np.zeros((n, _FOV, _FOV), bool)
    yy, xx = np.mgrid[0:_FOV, 0:_FOV]
    box = {k: np.zeros(n, np.int64) for k in ("x", "y", "width", "height")}
    for i, ((cx, cy), (rx, ry)) in enumerate(zip(cells["centre"], cells["radius"])):
        x0, x1 = int(cx - rx - 1), int(cx + rx + 2)
        y0, y1 = int(cy - ry - 1), int(cy + ry + 2)
        sub = ((xx[y0:y1, x0:x1] - cx) / rx) ** 2 + ((yy[y0:y1, x0:x1] - cy) / ry) ** 2 <= 1.0
        masks[i, y0:y1, x0:x1] = sub
        ys, xs = np.nonzero(masks[i])
        box["x"][i], box["y"][i] = xs.min(), ys.min()
        box["width"][i], box["height"][i] = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    return masks, box


def _images(masks: np.ndarray, cells: dict, calcium_max: np.ndarray, rng) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:_FOV, 0:_FOV] / _FOV
    vignette = 600.0 * (1.2 - ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))
    weight = masks.reshape(len(masks), -1).T.astype(np.float64)
    avg = vignette + (weight @ cells["F0"]).reshape(_FOV, _FOV) * 3
    peak = avg + (weight @ (cells["F0"] * calcium_max)).reshape(_FOV, _FOV) * 3
    noise = rng.normal(0, 20.0, (2, _FOV, _FOV))
    return {
        "average_image": np.clip(avg + noise[0], 0, 65535).astype(np.uint16),
        "max_projection": np.clip(peak + 2.0 * np.abs(noise[1]), 0, 65535).astype(np.uint16),
        "segmentation_mask_image": masks.any(axis=0).astype(np.uint16),
    }


def _eye(duration: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = _clock(0.3, 60.0, int(duration * 60.0), rng)
    n = len(t)
    slow = lfilter([0.02], [1.0, -0.98], rng.normal(size=(n, 9)), axis=0) * 7.0
    blink = lfilter([1.0] * 6, [1.0], rng.random(n) < 0.005) > 0
    out: dict[str, np.ndarray] = {"t": t, "likely_blink": blink}
    for j, (name, radius, cx, cy) in enumerate(
        [("eye", 130.0, 320.0, 240.0), ("pupil", 20.0, 315.0, 238.0), ("cr", 5.0, 325.0, 230.0)]
    ):
        width = radius * (1.0 + 0.1 * slow[:, 3 * j]) + rng.normal(0, 0.3, n)
        height = width * (0.9 + 0.02 * slow[:, 3 * j + 1])
        centre = np.stack([cx + slow[:, 3 * j + 2], cy + 0.5 * slow[:, 3 * j + 2]], axis=1)
        area_raw = np.pi * width * height
        out[name] = {
            "data": centre + rng.normal(0, 0.2, (n, 2)),
            "width": width,
            "height": height,
            "angle": rng.normal(0.0, 0.05, n),
            "area_raw": area_raw,
            "area": np.where(blink, np.nan, area_raw),
        }
    return out


def _running(stim_t: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(stim_t)
    bouts = lfilter([0.01], [1.0, -0.99], rng.normal(size=n)) * 60.0
    speed_unfiltered = np.clip(bouts, -2.0, None) + rng.normal(0, 1.5, n)
    speed = np.convolve(speed_unfiltered, np.ones(5) / 5.0, mode="same")
    dx = speed_unfiltered / _STIM_RATE
    angle = np.cumsum(dx) / (2 * np.pi * 8.0)  # wheel radius ~8 cm, in turns
    v_in = 5.0 + rng.normal(0, 0.01, n)
    return {
        "dx": dx,
        "speed": speed,
        "speed_unfiltered": speed_unfiltered,
        "v_in": v_in,
        "v_sig": np.mod(angle, 1.0) * v_in,
    }


def _gzip(data: np.ndarray, chunks: tuple[int, ...] | None = None) -> H5DataIO:
    return H5DataIO(data, compression="gzip", compression_opts=4, chunks=chunks or True)


def _table(
    name: str, description: str, values: dict[str, Any], cls=DynamicTable, extra: tuple = ()
):
    columns: list = []
    for key, value in values.items():
        if key == "lick_times":
            flat = np.concatenate([np.asarray(v, np.float64) for v in value] + [np.zeros(0)])
            data = VectorData(name=key, description="lick times (s) in the trial", data=flat)
            ends = np.cumsum([len(v) for v in value]).astype(np.int64)
            columns += [data, VectorIndex(name=f"{key}_index", data=ends, target=data)]
            continue
        arr = np.asarray(value)
        data = arr.tolist() if arr.dtype.kind == "U" else arr
        columns.append(VectorData(name=key, description=key.replace("_", " "), data=data))
    return cls(name=name, description=description, columns=[*columns, *extra])


def _tags_and_timeseries(
    tag: str, start: np.ndarray, stop: np.ndarray, series: TimeSeries
) -> list[VectorData | VectorIndex]:
    """pynwb's optional TimeIntervals columns: one tag per row and the row's frames of
    ``series``, each ragged with its ``_index``."""
    ends = np.arange(1, len(start) + 1, dtype=np.int64)
    tags = VectorData(name="tags", description="user-defined tags", data=[tag] * len(start))
    refs = TimeSeriesReferenceVectorData(
        name="timeseries",
        description="index into a TimeSeries object",
        data=[TimeSeriesReference(int(a), int(b - a), series) for a, b in zip(start, stop)],
    )
    return [
        tags,
        VectorIndex(name="tags_index", data=ends, target=tags),
        refs,
        VectorIndex(name="timeseries_index", data=ends, target=refs),
    ]


def _metadata_row(row: dict[str, str], rate: float, seed: int) -> dict[str, list]:
    meta: dict[str, Any] = {}
    for key, value in row.items():
        if key in {
            "ophys_experiment_id",
            "behavior_session_id",
            "ophys_session_id",
            "ophys_container_id",
            "mouse_id",
            "age_in_days",
            "imaging_depth",
            "targeted_imaging_depth",
            "session_number",
            "prior_exposures_to_session_type",
            "prior_exposures_to_image_set",
            "prior_exposures_to_omissions",
        }:
            meta[key] = int(value)
        elif key == "imaging_plane_group":
            meta[key] = int(float(value)) if value else -1
        elif key == "passive":
            meta[key] = value == "True"
        elif key == "driver_line":
            meta[key] = ";".join(ast.literal_eval(value))
        else:
            meta[key] = value
    meta.update(
        ophys_frame_rate=rate,
        stimulus_frame_rate=_STIM_RATE,
        field_of_view_width=_FOV,
        field_of_view_height=_FOV,
        imaging_plane_group_count=4 if row["imaging_plane_group"] else 0,
        behavior_session_uuid=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}/{row['mouse_id']}")),
    )
    return {k: [v] for k, v in meta.items()}


def _nwbfile(row: dict[str, str], rate: float) -> NWBFile:
    start = datetime.datetime.fromisoformat(row["date_of_acquisition"]).replace(tzinfo=datetime.UTC)
    return NWBFile(
        session_description=f"Visual Behavior 2P ophys experiment, {row['session_type']}",
        identifier=row["ophys_experiment_id"],
        session_start_time=start,
        file_create_date=[start],
        session_id=row["ophys_session_id"],
        institution="Allen Institute for Brain Science",
        experiment_description="change detection task with two-photon calcium imaging",
        keywords=["visual behavior", "two-photon", "calcium imaging", "change detection"],
        stimulus_notes=row["session_type"],
        subject=Subject(
            subject_id=row["mouse_id"],
            genotype=row["full_genotype"],
            sex=row["sex"],
            age=f"P{row['age_in_days']}D",
            species="Mus musculus",
            description=f"driver_line: {row['cre_line']}; reporter_line: {row['reporter_line']}",
        ),
    )


def _write_one(
    path: Path,
    row: dict[str, str],
    index: int,
    n_rois: int,
    duration: float,
    seed: int,
    version: int,
) -> None:
    rngs = [np.random.default_rng([seed, index, s]) for s in range(7)]
    meso = row["equipment_name"].startswith("MESO")
    rate = 11.0 if meso else 31.0
    tau = 1.8 if row["indicator"] == "GCaMP6s" else 0.7
    cells = _cells(row, n_rois, rngs[1])
    beh = _behavior(row, duration, rngs[2])
    t = _clock(0.5, rate, int(duration * rate), rngs[3])
    tr = _traces(cells, beh["pres"], t, tau, rngs[3])
    ev = _events(tr["dff"], tr["spikes"], version)
    masks, box = _masks(cells)
    images = _images(masks, cells, tr["calcium"].max(axis=0), rngs[4])
    eye, run = _eye(duration, rngs[5]), _running(beh["stim_t"], rngs[6])
    mc = np.round(lfilter([0.05], [1.0, -0.98], rngs[4].normal(size=(len(t), 2)), axis=0) * 20, 2)
    n_t = len(t)

    nwb = _nwbfile(row, rate)
    nwb.add_scratch(_table("metadata", "experiment metadata", _metadata_row(row, rate, seed)))
    task = {
        "stimulus_duration_sec": [0.25],
        "blank_duration_sec": [0.5],
        "omitted_flash_fraction": [_OMITTED_FRACTION],
        "response_window_start_sec": [0.15],
        "response_window_end_sec": [0.75],
        "reward_volume": [0.007],
        "auto_reward_volume": [0.005],
        "stimulus": [IMAGE_SETS[row["image_set"]][0]],
        "task": ["change detection"],
        "n_stimulus_frames": [len(beh["stim_t"])],
    }
    nwb.add_scratch(_table("task_parameters", "behavior task parameters", task))
    device = nwb.create_device(name=row["equipment_name"], description="two-photon microscope")
    plane = nwb.create_imaging_plane(
        name="imaging_plane_1",
        optical_channel=OpticalChannel(
            name="channel_1", description="2P green channel", emission_lambda=520.0
        ),
        description=f"({_FOV}, {_FOV}) field of view in {row['targeted_structure']} at "
        f"{row['imaging_depth']} um depth",
        device=device,
        excitation_lambda=910.0,
        imaging_rate=rate,
        indicator=row["indicator"],
        location=row["targeted_structure"],
        grid_spacing=[_PIXEL_UM, _PIXEL_UM],
        grid_spacing_unit="micrometers",
    )
    ophys = nwb.create_processing_module("ophys", "two-photon imaging processing")
    max_corr = {
        "up": mc[:, 1].max(),
        "down": -mc[:, 1].min(),
        "left": -mc[:, 0].min(),
        "right": mc[:, 0].max(),
    }
    columns = {
        "cell_specimen_id": cells["cell_specimen_id"],
        "x": box["x"],
        "y": box["y"],
        "width": box["width"],
        "height": box["height"],
        "valid_roi": cells["valid_roi"],
        "mask_image_plane": np.zeros(n_rois, np.int64),
    }
    columns.update({f"max_correction_{k}": np.full(n_rois, v) for k, v in max_corr.items()})
    seg_columns = [
        VectorData(
            name="image_mask", description="full-FOV ROI masks", data=_gzip(masks, (1, _FOV, _FOV))
        ),
    ] + [VectorData(name=k, description=k.replace("_", " "), data=v) for k, v in columns.items()]
    table = PlaneSegmentation(
        name="cell_specimen_table",
        description="segmented cells; id = cell_roi_id",
        imaging_plane=plane,
        id=cells["cell_roi_id"],
        columns=seg_columns,
    )
    segmentation = ImageSegmentation(name="image_segmentation")
    segmentation.add_plane_segmentation(table)
    ophys.add(segmentation)
    chunks = (min(n_t, 4096), min(n_rois, 32))
    first = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The linked table for DynamicTableRegion")
        for group, cls, key in [
            ("dff", DfOverF, "dff"),
            ("corrected_fluorescence", Fluorescence, "corrected"),
            ("neuropil_trace", Fluorescence, "neuropil"),
            ("demixed_trace", Fluorescence, "demixed"),
        ]:
            series = RoiResponseSeries(
                name="traces",
                description=f"{group} of every ROI, (time, ROI)",
                data=_gzip(tr[key], chunks),
                rois=table.create_roi_table_region("all ROIs", region=list(range(n_rois))),
                unit="NA",
                timestamps=t if first is None else first,
            )
            first = series if first is None else first
            ophys.add(cls(name=group, roi_response_series=[series]))
        ophys.add(
            RoiResponseSeries(
                name="event_detection",
                description="detected calcium events (L0), (time, ROI)",
                data=_gzip(ev["data"], chunks),
                rois=table.create_roi_table_region("all ROIs", region=list(range(n_rois))),
                unit="NA",
                timestamps=first,
            )
        )
    ophys.add(
        Images(
            name="images",
            description="summary images",
            images=[
                GrayscaleImage(name=k, data=_gzip(v), description=k, resolution=1e4 / _PIXEL_UM)
                for k, v in images.items()
            ],
        )
    )
    for axis, col in (("x", 0), ("y", 1)):
        ophys.add(
            TimeSeries(
                name=f"ophys_motion_correction_{axis}",
                data=mc[:, col],
                unit="pixels",
                timestamps=first,
                description=f"motion correction offset along {axis}",
            )
        )

    stim_ts = TimeSeries(
        name="timestamps",
        data=np.arange(len(beh["stim_t"]), dtype=np.int64),
        unit="frame",
        timestamps=beh["stim_t"],
        description="stimulus frame index at each 60 Hz frame time",
    )
    nwb.create_processing_module("stimulus", "stimulus frame times").add(stim_ts)
    # as AllenSDK writes them: one table per stimulus, named <stimulus_name>_presentations,
    # with pynwb's tags and a timeseries reference into the stimulus frame times
    pres = dict(beh["pres"])
    n_flash = len(pres["start_time"])
    stimulus = IMAGE_SETS[row["image_set"]][0]
    pres["stimulus_name"] = np.full(n_flash, stimulus)
    pres["duration"] = pres["stop_time"] - pres["start_time"]
    pres["active"] = np.full(n_flash, not beh["passive"])
    pres["stimulus_block"] = np.zeros(n_flash, np.int64)
    block = "change_detection_passive" if beh["passive"] else "change_detection_behavior"
    pres["stimulus_block_name"] = np.full(n_flash, block)
    extra = _tags_and_timeseries(stimulus, pres["start_frame"], pres["end_frame"], stim_ts)
    name = f"{stimulus}_presentations"
    nwb.add_time_intervals(
        _table(name, "change detection image flashes", pres, TimeIntervals, tuple(extra))
    )
    nwb.trials = _table("trials", "change detection trials", beh["trials"], TimeIntervals)

    if len(beh["lick_times"]):  # empty TimeSeries crash nwbinspector; passive mice rarely lick
        nwb.create_processing_module("licking", "licks").add(
            TimeSeries(
                name="licks",
                data=beh["lick_frames"],
                timestamps=beh["lick_times"],
                unit="frame",
                description="stimulus frame of each lick",
            )
        )
    if len(beh["reward_times"]):
        rewards = nwb.create_processing_module("rewards", "water rewards")
        volume = TimeSeries(
            name="volume",
            data=beh["reward_volume"],
            unit="mL",
            timestamps=beh["reward_times"],
            description="reward volume",
        )
        rewards.add(volume)
        rewards.add(
            TimeSeries(
                name="autorewarded",
                data=beh["reward_auto"],
                unit="n/a",
                timestamps=volume,
                description="reward was automatic",
            )
        )
    running = nwb.create_processing_module("running", "running wheel")
    for name, unit in (("speed", "cm/s"), ("speed_unfiltered", "cm/s"), ("dx", "cm")):
        running.add(
            TimeSeries(
                name=name,
                data=_gzip(run[name]),
                unit=unit,
                timestamps=stim_ts,
                description=f"running {name}",
            )
        )
    for name in ("v_sig", "v_in"):
        nwb.add_acquisition(
            TimeSeries(
                name=name,
                data=_gzip(run[name]),
                unit="V",
                timestamps=stim_ts,
                description=f"encoder {name}",
            )
        )
    tracking = EyeTracking(name="EyeTracking")
    eye_first = None
    for part in ("eye", "pupil", "corneal_reflection"):
        series = tracking.create_spatial_series(
            name=f"{part}_tracking",
            data=_gzip(eye["cr" if part == "corneal_reflection" else part]["data"]),
            reference_frame="eye tracking camera pixels",
            unit="pixels",
            timestamps=eye["t"] if eye_first is None else eye_first,
            description=f"{part} ellipse centre (x, y)",
        )
        eye_first = series if eye_first is None else eye_first
    nwb.add_acquisition(tracking)

    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    with h5py.File(path, "a") as h5:
        o = h5["processing/ophys"]
        o["corrected_fluorescence"].create_dataset("r", data=tr["r"])
        o["corrected_fluorescence"].create_dataset("RMSE", data=tr["RMSE"])
        o["event_detection"].create_dataset("lambdas", data=ev["lambdas"])
        o["event_detection"].create_dataset("noise_stds", data=ev["noise_stds"])
        et = h5["acquisition/EyeTracking"]
        for part in ("eye", "pupil", "corneal_reflection"):
            values = eye["cr" if part == "corneal_reflection" else part]
            for key in ("area", "area_raw", "width", "height", "angle"):
                et[f"{part}_tracking"].create_dataset(
                    key, data=values[key], compression="gzip", compression_opts=4
                )
        blink = et.create_group("likely_blink")
        blink.create_dataset("data", data=eye["likely_blink"])
        blink["timestamps"] = et["eye_tracking/timestamps"]
        _fix_object_ids(h5, f"{seed}/{row['ophys_experiment_id']}")


def _fix_object_ids(h5: h5py.File, salt: str) -> None:
    """Replace pynwb's random ``object_id`` UUIDs by ones derived from the seed and path."""

    def visit(name: str, obj: Any) -> None:
        if "object_id" in obj.attrs:
            obj.attrs["object_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{salt}/{name}"))

    visit("/", h5)
    h5.visititems(visit)


def write(
    out_dir: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    n_experiments: int = 1,
    event_detection_version: int = 1,
) -> list[Path]:
    """Write ``behavior_ophys_experiment_<id>.nwb`` files in the real VBO layout.

    Parameters
    ----------
    out_dir
        Folder to write into (created if needed).
    scale
        ``"tiny"`` (12 ROIs, 3 min) or ``"realistic"`` (200 ROIs, 1 h).
    seed
        Seed of every random draw; the same seed gives byte-identical arrays.
    n_experiments
        How many experiments (rows of the vendored VBO experiment table) to write.
    event_detection_version
        1 or 2. Version 2 writes the same files where only
        ``processing/ophys/event_detection/{data,lambdas,noise_stds}`` differ.

    Returns
    -------
    list of Path
        The files written.

    Examples
    --------
    >>> paths = write("/tmp/vbo", scale="tiny", seed=0)  # doctest: +SKIP
    """
    n_rois, duration = _scale(scale)
    if event_detection_version not in _EVENT_THRESHOLD:
        raise ValueError(f"event_detection_version must be 1 or 2, got {event_detection_version}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, row in enumerate(_experiment_rows(seed, n_experiments)):
        path = out / f"behavior_ophys_experiment_{row['ophys_experiment_id']}.nwb"
        _write_one(path, row, i, n_rois, duration, seed, event_detection_version)
        paths.append(path)
    return paths
