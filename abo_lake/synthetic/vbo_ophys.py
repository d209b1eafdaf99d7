"""Seeded Visual Behavior 2P (VBO) ``behavior_ophys_experiment_<id>.nwb`` files.

The files have the HDF5 structure AllenSDK 2.16.2's ``BehaviorOphysExperiment`` writer gives a
release file (the AllenSDK-written fixture ``vbo_ophys_experiment_*.nwb``, layout notes 1-27 of
``shared/tools/allensdk/README.md``), with the ``ndx-aibs-*`` extensions AllenSDK uses
(vendored specs, :mod:`._allen_nwb`). The behavior part (presentations, trials, licks,
rewards, running, templates, task parameters, subject) comes from :mod:`.vbo_behavior`;
this module adds:

- ``general/metadata`` (OphysBehaviorMetadata), ``general/optophysiology/imaging_plane_1``;
- ``processing/ophys/image_segmentation/cell_specimen_table`` (PlaneSegmentation, ``id`` =
  cell_roi_id, ``image_mask`` (N, 512, 512) bool, cell_specimen_id (-1 = unmatched), x, y,
  width, height, valid_roi, mask_image_plane, max_correction_{up,down,left,right});
- ``processing/ophys/{dff,corrected_fluorescence,neuropil_trace,demixed_trace}/traces``
  (RoiResponseSeries (T, N) float64; every ``rois`` but dff's is a link to dff's) and
  ``corrected_fluorescence/{r,RMSE}`` (RoiResponseSeries of (N,) values);
- ``processing/ophys/event_detection`` (OphysEventDetection: (T, N) gzip, ``lambdas``,
  ``noise_stds``, its own ``rois``);
- ``processing/ophys/images/{max_projection,average_image}`` (uint8) and
  ``segmentation_mask_image`` (int64), ``processing/ophys/ophys_motion_correction_{x,y}``
  (int64 pixels);
- ``acquisition/EyeTracking`` (EllipseEyeTracking: three EllipseSeries and ``likely_blink``,
  all on ``eye_tracking``'s timestamps) and ``processing/eye_tracking_rig_metadata``.

The session is AllenSDK's: 5 min of gray screen (``spontaneous``), the change detection
block, 5 min of gray screen and natural_movie_one (shortened at scale "tiny"). Every
``object_id`` is derived from the seed, so two writes give identical files apart from HDF5
bookkeeping; ``event_detection_version=2`` changes only the event_detection datasets.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

import h5py
import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import ElementIdentifiers, VectorData
from pynwb import NWBFile, TimeSeries
from pynwb.base import Images
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

from abo_lake.synthetic import _allen_nwb as allen
from abo_lake.synthetic import vbo_behavior
from abo_lake.synthetic.vbo_behavior import IMAGE_SETS

__all__ = ["IMAGE_SETS", "ground_truth", "write"]

_SCALES = {"tiny": (12, 180.0), "realistic": (200, 3600.0)}  # (ROIs, seconds)
_FOV = 512
_PIXEL_UM = 400.0 / _FOV
_EVENT_THRESHOLD = {1: 2.0, 2: 3.0}  # x noise std; version 2 is the "fixed" detection
_EXPERIMENT_DESCRIPTION = (
    "2-photon calcium imaging in the visual cortex of the mouse brain as the mouse performs a "
    "visual change detection task with natural scene images. Image stimuli are displayed for "
    "250 ms with a 500 ms intervening gray period. 5% of non-change image presentations are "
    "randomly omitted. The session is 75 minutes long, with 5 minutes of gray screen before "
    "and after 60 minutes of behavior, followed by 10 repeats of a 30 second natural movie "
    "stimulus at the end of the session."
)
_ROI_DESCRIPTIONS = {
    "cell_specimen_id": "Unified id of segmented cell across experiments (after cell matching)",
    "height": "Height of ROI in pixels",
    "mask_image_plane": "Which image plane an ROI resides on. Overlapping ROIs are stored on "
    "different mask image planes.",
    "max_correction_down": "Max motion correction in down direction in pixels",
    "max_correction_left": "Max motion correction in left direction in pixels",
    "max_correction_right": "Max motion correction in right direction in pixels",
    "max_correction_up": "Max motion correction in up direction in pixels",
    "valid_roi": "Indicates if cell classification found the ROI to be a cell or not",
    "width": "Width of ROI in pixels",
    "x": "x position of ROI in Image Plane in pixels (top left corner)",
    "y": "y position of ROI in Image Plane in pixels (top left corner)",
}
#: processing/ophys group -> (container type, key of the traces in :func:`_traces`)
_TRACE_GROUPS = [
    ("dff", DfOverF, "dff"),
    ("corrected_fluorescence", Fluorescence, "corrected"),
    ("neuropil_trace", Fluorescence, "neuropil"),
    ("demixed_trace", Fluorescence, "demixed"),
]
#: AllenSDK's eye tracking rig geometry (CAM2P rigs): name -> (value, unit)
_RIG = {
    "camera_position": ([130.0, 0.0, 0.0], "mm"),
    "camera_rotation": ([0.0, 0.0, 13.1], "deg"),
    "led_position": ([265.1, -39.3, 1.0], "mm"),
    "monitor_position": ([170.0, 0.0, 0.0], "mm"),
    "monitor_rotation": ([0.0, 0.0, 0.0], "deg"),
}


def _experiment_rows(seed: int, n_experiments: int) -> list[dict[str, str]]:
    rows = vbo_behavior.experiment_rows()
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


def _gzip(data: np.ndarray) -> H5DataIO:
    return H5DataIO(data, compression="gzip", compression_opts=4)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.1, 99.9])
    return np.clip((image - lo) / max(hi - lo, 1e-9) * 255.0, 0, 255).astype(np.uint8)


def _images(masks: np.ndarray, cells: dict, calcium_max: np.ndarray, rng) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:_FOV, 0:_FOV] / _FOV
    vignette = 600.0 * (1.2 - ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))
    weight = masks.reshape(len(masks), -1).T.astype(np.float64)
    avg = vignette + (weight @ cells["F0"]).reshape(_FOV, _FOV) * 3
    peak = avg + (weight @ (cells["F0"] * calcium_max)).reshape(_FOV, _FOV) * 3
    noise = rng.normal(0, 20.0, (2, _FOV, _FOV))
    return {
        # AllenSDK writes the projections as 8-bit images (scaled to 0-255), the mask as int64
        "average_image": _to_uint8(avg + noise[0]),
        "max_projection": _to_uint8(peak + 2.0 * np.abs(noise[1])),
        "segmentation_mask_image": masks.any(axis=0).astype(np.int64),
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


def _session(row: dict[str, str], scale: str, rng: np.random.Generator) -> dict:
    behavior_s, pre, post, n_movie, repeats = vbo_behavior.OPHYS_BLOCKS[scale]
    return vbo_behavior.session(
        row["image_set"],
        row["passive"] == "True",
        rng,
        behavior_s=behavior_s,
        gray_s=(pre, post),
        movie=(n_movie, repeats),
        t0=0.8,
    )


def _write_one(
    path: Path,
    row: dict[str, str],
    index: int,
    n_rois: int,
    scale: str,
    seed: int,
    version: int,
) -> None:
    rngs = [np.random.default_rng([seed, index, s]) for s in range(8)]
    meso = row["equipment_name"].startswith("MESO")
    rate = 11.0 if meso else 31.0
    tau = 1.8 if row["indicator"] == "GCaMP6s" else 0.7
    cells = _cells(row, n_rois, rngs[1])
    beh = _session(row, scale, rngs[2])
    duration = float(beh["stim_t"][-1]) + 0.5
    flashes = beh["pres"][IMAGE_SETS[row["image_set"]][0].split(".")[0]]
    t = _clock(0.5, rate, int(duration * rate), rngs[3])
    tr = _traces(cells, flashes, t, tau, rngs[3])
    ev = _events(tr["dff"], tr["spikes"], version)
    masks, box = _masks(cells)
    images = _images(masks, cells, tr["calcium"].max(axis=0), rngs[4])
    eye = _eye(duration, rngs[5])
    mc = np.round(lfilter([0.05], [1.0, -0.98], rngs[4].normal(size=(len(t), 2)), axis=0) * 20)
    mc = mc.astype(np.int64)

    start = datetime.datetime.fromisoformat(row["date_of_acquisition"]).replace(tzinfo=datetime.UTC)
    nwb = NWBFile(
        session_description=row["session_type"],
        identifier=row["ophys_experiment_id"],
        session_start_time=start,
        file_create_date=[start],
        institution="Allen Institute for Brain Science",
        keywords=["2-photon", "calcium imaging", "visual cortex", "behavior", "task"],
        experiment_description=_EXPERIMENT_DESCRIPTION,
        subject=vbo_behavior.subject(row, int(row["age_in_days"])),
    )
    vbo_behavior.device(nwb, row["equipment_name"])
    plane_group = int(float(row["imaging_plane_group"])) if row["imaging_plane_group"] else -1
    nwb.add_lab_meta_data(
        vbo_behavior.extension("OphysBehaviorMetadata")(
            name="metadata",
            behavior_session_id=int(row["behavior_session_id"]),
            behavior_session_uuid=vbo_behavior.session_uuid(seed, row["mouse_id"]),
            equipment_name=row["equipment_name"],
            field_of_view_height=_FOV,
            field_of_view_width=_FOV,
            imaging_depth=int(row["imaging_depth"]),
            imaging_plane_group=plane_group,
            imaging_plane_group_count=4 if plane_group >= 0 else 0,
            ophys_container_id=int(row["ophys_container_id"]),
            ophys_experiment_id=int(row["ophys_experiment_id"]),
            ophys_session_id=int(row["ophys_session_id"]),
            project_code=row["project_code"],
            session_type=row["session_type"],
            stimulus_frame_rate=vbo_behavior.STIM_RATE,
            targeted_imaging_depth=int(row["targeted_imaging_depth"]),
        )
    )
    nwb.add_lab_meta_data(
        vbo_behavior.task_parameters(
            row["session_type"], row["image_set"], len(beh["stim_t"]), beh["omitted_fraction"]
        )
    )
    plane = nwb.create_imaging_plane(
        name="imaging_plane_1",
        optical_channel=OpticalChannel(
            name="channel_1", description="2P Optical Channel", emission_lambda=520.0
        ),
        description=f"({_FOV}, {_FOV}) field of view in {row['targeted_structure']} at depth "
        f"{row['imaging_depth']} um",
        device=nwb.devices[row["equipment_name"]],
        excitation_lambda=910.0,
        imaging_rate=rate,
        indicator=row["indicator"],
        location=row["targeted_structure"],
    )
    vbo_behavior.add_behavior(
        nwb, beh, template_shape=vbo_behavior.TEMPLATE_SHAPE[scale], rng=rngs[6]
    )

    ophys = nwb.create_processing_module("ophys", "Ophys processing module")
    max_corr = {
        "down": -float(mc[:, 1].min()),
        "left": -float(mc[:, 0].min()),
        "right": float(mc[:, 0].max()),
        "up": float(mc[:, 1].max()),
    }
    columns = {
        "cell_specimen_id": cells["cell_specimen_id"],
        "height": box["height"],
        "mask_image_plane": np.zeros(n_rois, np.int64),
        **{f"max_correction_{k}": np.full(n_rois, v) for k, v in max_corr.items()},
        "valid_roi": cells["valid_roi"],
        "width": box["width"],
        "x": box["x"],
        "y": box["y"],
    }
    seg_columns = [
        VectorData(name=k, description=_ROI_DESCRIPTIONS[k], data=v) for k, v in columns.items()
    ]
    seg_columns.append(
        VectorData(name="image_mask", description="Image masks for each ROI", data=_gzip(masks))
    )
    table = PlaneSegmentation(
        name="cell_specimen_table",
        description="Segmented rois",
        imaging_plane=plane,
        id=ElementIdentifiers(name="id", data=cells["cell_roi_id"]),
        columns=seg_columns,
    )
    segmentation = ImageSegmentation(name="image_segmentation")
    segmentation.add_plane_segmentation(table)
    ophys.add(segmentation)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The linked table for DynamicTableRegion")
        rois = table.create_roi_table_region(
            "segmented cells labeled by cell_specimen_id", region=list(range(n_rois))
        )
        series = {}
        for group, _, key in _TRACE_GROUPS:
            series[group] = [
                RoiResponseSeries(
                    name="traces", data=tr[key], rois=rois, unit="NA", timestamps=t.copy()
                )
            ]
        for key in ("r", "RMSE"):  # AllenSDK stores the neuropil fit per ROI as series
            series["corrected_fluorescence"].append(
                RoiResponseSeries(
                    name=key,
                    data=tr[key],
                    rois=rois,
                    unit="NA",
                    timestamps=np.arange(n_rois, dtype=np.float64),
                )
            )
        for group, cls, _ in _TRACE_GROUPS:
            ophys.add(cls(name=group, roi_response_series=series[group]))
        ophys.add(
            vbo_behavior.extension("OphysEventDetection")(  # its name is fixed: event_detection
                data=_gzip(ev["data"]),
                lambdas=ev["lambdas"],
                noise_stds=ev["noise_stds"],
                rois=table.create_roi_table_region(
                    "Cells with detected events", region=list(range(n_rois))
                ),
                unit="N/A",
                timestamps=t.copy(),
            )
        )
    ophys.add(
        Images(
            name="images",
            description="no description",
            images=[
                GrayscaleImage(
                    name=k,
                    data=_gzip(v),
                    description=f"{k} image at pixels/cm resolution",
                    resolution=_PIXEL_UM / 1e4,
                )
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
                timestamps=t.copy(),
            )
        )

    ellipse = vbo_behavior.extension("EllipseSeries")
    parts = {}
    for part, key in (
        ("corneal_reflection_tracking", "cr"),
        ("eye_tracking", "eye"),
        ("pupil_tracking", "pupil"),
    ):
        values = eye[key]
        parts[part] = {
            "name": part,
            "reference_frame": "nose",
            **{k: values[k] for k in ("data", "area", "area_raw", "width", "height", "angle")},
        }
    eye_series = ellipse(**parts["eye_tracking"], timestamps=eye["t"])
    tracking = vbo_behavior.extension("EllipseEyeTracking")(
        name="EyeTracking",
        eye_tracking=eye_series,
        pupil_tracking=ellipse(**parts["pupil_tracking"], timestamps=eye_series),
        corneal_reflection_tracking=ellipse(
            **parts["corneal_reflection_tracking"], timestamps=eye_series
        ),
        likely_blink=TimeSeries(
            name="likely_blink",
            data=eye["likely_blink"],
            unit="N/A",
            timestamps=eye_series,
            description="blinks",
        ),
    )
    nwb.add_acquisition(tracking)
    rig = vbo_behavior.extension("OphysEyeTrackingRigMetadata")(
        name="eye_tracking_rig_metadata",
        equipment=row["equipment_name"],
        **{k: np.array(v, np.float64) for k, (v, _) in _RIG.items()},
        **{f"{k}__unit_of_measurement": u for k, (_, u) in _RIG.items()},
    )
    nwb.create_processing_module(
        "eye_tracking_rig_metadata", "Eye tracking rig metadata module"
    ).add(rig)

    allen.write_nwb(path, nwb, allen.VISUAL_BEHAVIOR)
    with h5py.File(path, "a") as h5:
        allen.fix_object_ids(h5, f"{seed}/{row['ophys_experiment_id']}")


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
        ``"tiny"`` (12 ROIs, ~3 min: 20 s gray, 140 s of flashes, 10 s gray, a 45-frame
        movie twice, 1/10-resolution templates) or ``"realistic"`` (200 ROIs, 1 h: 5 min
        gray, 45 min of flashes, 5 min gray, natural_movie_one 10 x 900 frames, (1200, 1920)
        templates as in a release file).
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
    n_rois, _ = _scale(scale)
    if event_detection_version not in _EVENT_THRESHOLD:
        raise ValueError(f"event_detection_version must be 1 or 2, got {event_detection_version}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, row in enumerate(_experiment_rows(seed, n_experiments)):
        path = out / f"behavior_ophys_experiment_{row['ophys_experiment_id']}.nwb"
        _write_one(path, row, i, n_rois, scale, seed, event_detection_version)
        paths.append(path)
    return paths
