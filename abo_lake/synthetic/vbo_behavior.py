"""Seeded Visual Behavior behavior sessions, in the layout AllenSDK 2.16.2 writes.

Two uses: :func:`write` writes behavior-only ``behavior_session_<id>.nwb`` files (training
sessions in a behavior box, AllenSDK's ``BehaviorSession``), and :mod:`.vbo_ophys` writes the
behavior part of its experiments with :func:`session` and :func:`add_behavior`. The layout is
the one of the AllenSDK-written fixtures (``shared/tools/allensdk/README.md``, layout notes
8-27): ``general/metadata`` (BehaviorMetadata), ``general/task_parameters``,
``general/subject`` (BehaviorSubject), one ``intervals/<stimulus>_presentations`` table per
stimulus, ``intervals/trials``, ``processing/{licking,rewards,running,stimulus}``,
``acquisition/{v_sig,v_in}`` and ``stimulus/{templates,presentation}/<image set>``.
Frame times (``processing/stimulus/timestamps``, running) exclude the monitor delay,
presentation and trial times include it.
"""

from __future__ import annotations

import ast
import csv
import datetime
import functools
import importlib.resources
import uuid
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from pynwb import NWBFile, TimeSeries
from pynwb.image import IndexSeries
from scipy.signal import lfilter

from abo_lake.synthetic import _allen_nwb as allen

__all__ = [
    "IMAGE_SETS",
    "LEARNING",
    "OPHYS_BLOCKS",
    "TEMPLATE_SHAPE",
    "add_behavior",
    "device",
    "experiment_rows",
    "extension",
    "ground_truth",
    "session",
    "session_uuid",
    "subject",
    "task_parameters",
    "write",
]

STIM_RATE = 60.0
#: the pynwb class of an AllenSDK extension type, for files written with VISUAL_BEHAVIOR
extension = functools.partial(allen.extension, namespaces=allen.VISUAL_BEHAVIOR)
MONITOR_DELAY = 0.0212  # s, AllenSDK's photodiode estimate in the fixture
FLASH_FRAMES, CYCLE_FRAMES = 15, 45  # 250 ms on, 750 ms per flash at 60 Hz
OMITTED_FRACTION = 0.05
_MOVIE = "natural_movie_one"

#: image set letter -> (image set file stem, the 8 image names in template order).
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
        "Natural_Images_Lum_Matched_set_ophys_G_2019.05.26",
        ("im012", "im036", "im044", "im047", "im078", "im083", "im111", "im115"),
    ),
    "H": (
        "Natural_Images_Lum_Matched_set_ophys_H_2019.05.26",
        ("im005", "im024", "im034", "im083", "im087", "im104", "im111", "im114"),
    ),
}
#: image set -> the set its mice trained on (B is all new to them, H shares 2 images with G)
_FAMILIAR = {"A": "A", "B": "A", "G": "G", "H": "G"}

#: imaging sessions: scale -> (seconds of flashes, gray screen before, after (s), movie
#: frames, movie repeats)
OPHYS_BLOCKS = {"tiny": (140.0, 20.0, 10.0, 45, 2), "realistic": (2700.0, 300.0, 300.0, 900, 10)}
#: scale -> template (height, width): "tiny" keeps every 10th pixel (as the AllenSDK fixtures
#: do), "realistic" all of them (as a release file)
TEMPLATE_SHAPE = {"tiny": (120, 192), "realistic": (1200, 1920)}
_BEHAVIOR_SECONDS = {"tiny": 125.0, "realistic": 3600.0}  # behavior-only training sessions
_TRAINING = (
    "TRAINING_3_images_{}_10uL_reward",
    "TRAINING_4_images_{}_training",
    "TRAINING_5_images_{}_handoff_ready",
)
_BOXES = ("BEH.F-Box3", "BEH.B-Box2", "BEH.D-Box1", "BEH.E-Box4")


def experiment_rows() -> list[dict[str, str]]:
    """The vendored sample of the VBO ophys experiment table, one dict per row."""
    text = importlib.resources.files("abo_lake.synthetic").joinpath(
        "data/vbo_ophys_experiments_sample.csv"
    )
    with text.open("r", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _clock(t0: float, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Regular sample times with sub-millisecond sync jitter (strictly increasing)."""
    return t0 + np.arange(n) / rate + rng.normal(0.0, 1e-4, n)


def _next_image(current: int, queue: list[int], rng: np.random.Generator) -> int:
    """Next change image: walk through shuffled rounds of all 8, so every image is shown."""
    while True:
        if not queue:
            queue.extend(rng.permutation(8).tolist())
        image = queue.pop()
        if image != current:
            return image


def session(
    image_set: str,
    passive: bool,
    rng: np.random.Generator,
    *,
    behavior_s: float,
    gray_s: tuple[float, float] = (0.0, 0.0),
    movie: tuple[int, int] = (0, 0),
    omitted_fraction: float = OMITTED_FRACTION,
    t0: float = 0.0,
    response_probability: tuple[float, float] = (0.75, 0.2),
) -> dict[str, Any]:
    """Draw one change detection session: stimulus frames, presentations, trials, licks.

    Parameters
    ----------
    image_set
        Letter of :data:`IMAGE_SETS`.
    passive
        A passive replay: no licks in response windows, no rewards.
    rng
        Random generator.
    behavior_s
        Seconds of change detection flashes.
    gray_s
        Seconds of gray screen before and after the flashes (0: no such block).
    movie
        (frames, repeats) of natural_movie_one after the gray screen (30 Hz, 2 stimulus
        frames each).
    omitted_fraction
        Fraction of non-change flashes omitted (NaN in training: none).
    t0
        Sync time of the first stimulus frame.
    response_probability
        Probability that the mouse licks after a go trial's change and after a catch trial's
        sham change (hit and false-alarm probabilities before the response window's cut).

    Returns
    -------
    dict
        ``stim_t`` (frame times without the monitor delay), ``pres`` (per stimulus name:
        columns), ``trials`` (columns; ``lick_times`` ragged), ``lick_times``,
        ``lick_frames``, reward arrays and ``passive``.
    """
    names = IMAGE_SETS[image_set][1]
    pre = round(gray_s[0] * STIM_RATE)
    n_flash = int(behavior_s * STIM_RATE) // CYCLE_FRAMES
    first = pre if pre else 30
    flash_end = first + n_flash * CYCLE_FRAMES
    post = round(gray_s[1] * STIM_RATE)
    n_movie, repeats = movie
    n_frames = flash_end + post + 2 * n_movie * repeats + (0 if (post or n_movie) else 30)
    stim_t = _clock(t0, STIM_RATE, n_frames, rng)
    shown = stim_t + MONITOR_DELAY

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
        if change >= end:  # the session ends before this trial's change
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
    if np.isnan(omitted_fraction):
        omitted = np.zeros(n_flash, bool)
    else:
        omitted = (rng.random(n_flash) < omitted_fraction) & ~protect
    since = np.zeros(n_flash, np.int64)
    for k in range(1, n_flash):
        since[k] = 0 if is_change[k] else since[k - 1] + 1
    start_frame = first + CYCLE_FRAMES * np.arange(n_flash)
    end_frame = start_frame + FLASH_FRAMES
    familiar = set(IMAGE_SETS[_FAMILIAR[image_set]][1])
    novel = np.array([names[i] not in familiar for i in image])
    stem = IMAGE_SETS[image_set][0]
    flashes = {
        "start_time": shown[start_frame],
        "stop_time": shown[end_frame],
        "stimulus_block": np.full(n_flash, 1 if pre else 0, np.int64),
        "stimulus_block_name": np.full(
            n_flash, "change_detection_passive" if passive else "change_detection_behavior"
        ),
        "image_index": np.where(omitted, 8, image),
        "image_name": np.array([("omitted" if o else names[i]) for i, o in zip(image, omitted)]),
        "start_frame": start_frame,
        "end_frame": end_frame,
        "is_change": is_change,
        "is_image_novel": novel,
        "omitted": omitted,
        "flashes_since_change": since,
        "trials_id": trial_of,
        "active": np.full(n_flash, not passive),
        "is_sham_change": sham,
        "image_set": np.where(omitted, "omitted", stem),
    }
    pres = {stem.split(".")[0]: flashes}
    if pre:  # AllenSDK's gray-screen blocks; the first starts at sync time 0, frame 0
        g0, g1 = flash_end, flash_end + post
        pres["spontaneous"] = {
            "start_time": np.array([0.0, shown[g0]]),
            "stop_time": np.array([shown[first], shown[min(g1, n_frames - 1)]]),
            "stimulus_block": np.array([0, 2]),
            "stimulus_block_name": np.array(
                ["initial_gray_screen_5min", "post_behavior_gray_screen_5min"]
            ),
            "start_frame": np.array([0, g0]),
            "end_frame": np.array([first, g1]),
        }
    if n_movie:
        m0 = flash_end + post
        idx = np.arange(n_movie * repeats)
        sf = m0 + 2 * idx
        pres[_MOVIE] = {
            "start_time": shown[sf],
            "stop_time": shown[np.minimum(sf + 2, n_frames - 1)],
            "stimulus_block": np.full(len(idx), 3),
            "stimulus_block_name": np.full(len(idx), _MOVIE),
            "start_frame": sf,
            "end_frame": sf + 1,
            "movie_frame_index": idx % n_movie,
            "movie_repeat": idx // n_movie,
        }

    licks: list[float] = []
    rewards: list[tuple[float, float, bool]] = []
    table: dict[str, list] = {k: [] for k in _TRIAL_COLUMNS}
    t_on = flashes["start_time"]
    for i, tr in enumerate(trials):
        ch = tr["change"]
        change_time = float(t_on[ch]) if ch is not None else np.nan
        lick_t: list[float] = []
        if tr["aborted"]:
            lick_t = [float(t_on[tr["end"] - 1] + rng.uniform(0.2, 0.5))]
        elif (
            ch is not None
            and not passive
            and rng.random() < (response_probability[0] if tr["go"] else response_probability[1])
        ):
            first_lick = change_time + rng.uniform(0.3, 0.6)
            lick_t = list(first_lick + 0.15 * np.arange(int(rng.integers(2, 6))))
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
        t_start = float(stim_t[start_frame[tr["start"]]])
        t_stop = float(stim_t[min(first + tr["end"] * CYCLE_FRAMES, n_frames - 1)])
        if ch is None:
            latency = np.nan
        else:
            latency = response - change_time if in_window else np.inf
        values = {
            "start_time": t_start,
            "stop_time": t_stop,
            "initial_image_name": names[tr["initial"]],
            "change_image_name": names[tr["final"]],  # the shown image when nothing changed
            "is_change": bool(ch is not None and tr["go"]),
            "change_time": change_time,
            "go": tr["go"],
            "catch": tr["catch"],
            "lick_times": lick_t,
            "response_time": response,
            "response_latency": latency,
            "reward_time": reward_t,
            "reward_volume": volume,
            "hit": hit,
            "false_alarm": bool(tr["catch"] and in_window),
            "miss": bool(tr["go"] and not in_window),
            "correct_reject": bool(tr["catch"] and not in_window),
            "aborted": tr["aborted"],
            "auto_rewarded": auto,
            "change_frame": int(start_frame[ch]) if ch is not None else -99,
            "trial_length": t_stop - t_start,
        }
        for k, v in values.items():
            table[k].append(v)
    if passive:  # a few spontaneous licks, outside every response window
        starts = np.asarray(table["start_time"])
        for t_lick in np.sort(rng.uniform(starts[0], table["stop_time"][-1], 1 + n_flash // 80)):
            i = int(np.searchsorted(starts, t_lick, side="right") - 1)
            if not 0.0 <= t_lick - table["change_time"][i] <= 1.0:
                table["lick_times"][i] = [*table["lick_times"][i], float(t_lick)]
                licks.append(float(t_lick))
    lick_times = np.sort(np.asarray(licks, np.float64))
    rew = np.array(rewards, dtype=[("t", "f8"), ("v", "f8"), ("a", "?")])
    return {
        "image_set": image_set,
        "stim_t": stim_t,
        "pres": pres,
        "trials": table,
        "lick_times": lick_times,
        "lick_frames": np.searchsorted(stim_t, lick_times).astype(np.int64),
        "reward_times": rew["t"],
        "reward_volume": rew["v"],
        "reward_auto": rew["a"],
        "passive": passive,
        "omitted_fraction": omitted_fraction,
    }


_TRIAL_COLUMNS = [
    "start_time",
    "stop_time",
    "initial_image_name",
    "change_image_name",
    "is_change",
    "change_time",
    "go",
    "catch",
    "lick_times",
    "response_time",
    "response_latency",
    "reward_time",
    "reward_volume",
    "hit",
    "false_alarm",
    "miss",
    "correct_reject",
    "aborted",
    "auto_rewarded",
    "change_frame",
    "trial_length",
]

# AllenSDK's column descriptions of the presentation tables ("No description" otherwise)
_PRES_DESCRIPTIONS = {
    "start_time": "Start time of epoch, in seconds",
    "stop_time": "Stop time of epoch, in seconds",
    "stimulus_block": "Index of contiguous presentations of one stimulus type",
    "stimulus_name": "Name of stimulus",
}
_NULLABLE = ("is_change", "is_image_novel", "omitted")  # pandas "boolean" in AllenSDK
_SENTINEL = ("image_index", "movie_frame_index", "movie_repeat")  # -99 where missing
_SENTINEL_ALWAYS = ("flashes_since_change", "trials_id")
_PRES_ORDER = [
    "start_time",
    "stop_time",
    "stimulus_block",
    "stimulus_block_name",
    "image_index",
    "image_name",
    "movie_frame_index",
    "duration",
    "start_frame",
    "end_frame",
    "is_change",
    "is_image_novel",
    "omitted",
    "movie_repeat",
    "flashes_since_change",
    "trials_id",
    "image_set",
    "active",
    "is_sham_change",
    "stimulus_name",
]


def _presentation_columns(pres: dict[str, dict], nullable: bool) -> dict[str, dict]:
    """Each stimulus's table as AllenSDK writes it from its concatenated presentations.

    Columns all-NaN for a stimulus are left out; integer columns with gaps hold -99; string
    columns with gaps 'N/A'; nullable booleans with gaps (``nullable``: the session has
    gray/movie blocks) are float64 1.0/0.0/NaN.
    """
    all_cols = {c for cols in pres.values() for c in cols}
    out = {}
    for name, cols in pres.items():
        n = len(cols["start_time"])
        table: dict[str, np.ndarray] = {}
        for col in _PRES_ORDER:
            if col == "duration":
                table[col] = cols["stop_time"] - cols["start_time"]
            elif col == "stimulus_name":
                table[col] = np.full(n, name)
            elif col in cols:
                v = np.asarray(cols[col])
                if col in _NULLABLE and nullable:
                    v = v.astype(np.float64)
                    if col == "is_image_novel":  # an omitted flash shows no image
                        v[np.asarray(cols["omitted"], bool)] = np.nan
                table[col] = v
            elif col in ("is_sham_change", "active"):
                table[col] = np.zeros(n, bool)
            elif col in _SENTINEL_ALWAYS or (col in _SENTINEL and col in all_cols):
                table[col] = np.full(n, -99, np.int64)
        out[name] = table
    return out


def _templates(image_set: str, shape: tuple[int, int], rng: np.random.Generator):
    """Warped uint8 templates and unwarped float64 ones (NaN outside the visible screen)."""
    h, w = shape
    n = len(IMAGE_SETS[image_set][1])
    coarse = rng.uniform(0, 255, (n, 12, 16))
    warped = np.kron(coarse, np.ones((h // 12 + 1, w // 16 + 1)))[:, :h, :w]
    warped = np.clip(warped + rng.normal(0, 8, (n, 1, w)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    visible = ((xx - w / 2) / (0.48 * w)) ** 2 + ((yy - h / 2) / (0.55 * h)) ** 2 <= 1.0
    unwarped = np.where(visible, warped.astype(np.float64), np.nan)
    return warped, unwarped


def add_behavior(
    nwb: NWBFile,
    beh: dict[str, Any],
    *,
    template_shape: tuple[int, int],
    rng: np.random.Generator,
) -> None:
    """Add the behavior part of a VBO session to ``nwb`` as AllenSDK writes it.

    Writes the stimulus templates and IndexSeries, presentations, trials, licks, rewards,
    running and stimulus frame times (not the metadata, subject and device).
    """
    stim_t = beh["stim_t"]
    stem = IMAGE_SETS[beh["image_set"]][0]
    names = IMAGE_SETS[beh["image_set"]][1]
    stim_ts = TimeSeries(name="timestamps", data=stim_t, unit="s", timestamps=stim_t.copy())
    nwb.create_processing_module("stimulus", "Stimulus Times processing").add(stim_ts)

    warped, unwarped = _templates(beh["image_set"], template_shape, rng)
    template = extension("StimulusTemplate")(
        name=stem,
        data=H5DataIO(warped, compression="gzip", compression_opts=4),
        unwarped=H5DataIO(unwarped, compression="gzip", compression_opts=4),
        unit="NA",
        format="raw",
        timestamps=np.full(len(names), np.nan),
        control=np.arange(len(names), dtype=np.uint64),
        control_description=list(names),
        description="no description",
    )
    nwb.add_stimulus_template(template)
    flashes = beh["pres"][stem.split(".")[0]]
    shown = ~np.asarray(flashes["omitted"], bool)
    # pynwb >= 3 builds the (deprecated) indexed_timeseries AllenSDK uses only for objects
    # it reads back ("construct mode"): build this one the same way
    index = IndexSeries.__new__(IndexSeries, in_construct_mode=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.__init__(
            name=stem,
            data=flashes["image_index"][shown].astype(np.uint64),
            unit="N/A",
            indexed_timeseries=template,
            timestamps=flashes["start_time"][shown],
            description="no description",
        )
    index._in_construct_mode = False
    nwb.add_stimulus(index)

    nullable = len(beh["pres"]) > 1
    for name, cols in _presentation_columns(beh["pres"], nullable).items():
        desc = (
            f"Presentation times and stimuli details for '{name}' stimuli. \n"
            "Note: image_name references control_description in stimulus/templates"
        )
        columns = {c: (_PRES_DESCRIPTIONS.get(c, "No description"), v) for c, v in cols.items()}
        frames = (cols["start_frame"], cols["end_frame"])
        nwb.add_time_intervals(
            allen.intervals(
                f"{name}_presentations",
                desc,
                columns,
                timeseries=stim_ts,
                frames=frames,
                tags="stimulus_time_interval",
            )
        )

    trials = beh["trials"]
    columns = {}
    for col in _TRIAL_COLUMNS:
        if col == "lick_times":
            continue
        desc = {
            "start_time": "Start time of epoch, in seconds",
            "stop_time": "Stop time of epoch, in seconds",
        }.get(col, f"NOT IMPLEMENTED: {col}")
        columns[col] = (desc, np.asarray(trials[col]))
    nwb.trials = allen.intervals(
        "trials",
        "experimental trials",
        columns,
        ragged_columns={"lick_times": ("NOT IMPLEMENTED: lick_times", trials["lick_times"])},
    )

    if len(beh["lick_times"]):  # AllenSDK writes no licking module without licks
        nwb.create_processing_module("licking", "Licking behavior processing module").add(
            TimeSeries(
                name="licks",
                data=beh["lick_frames"],
                timestamps=beh["lick_times"],
                unit="N/A",
                description="Timestamps and stimulus presentation frame indices for lick events",
            )
        )
    if len(beh["reward_times"]):
        rewards = nwb.create_processing_module("rewards", "Licking behavior processing module")
        rewards.add(
            TimeSeries(
                name="volume",
                data=beh["reward_volume"],
                unit="mL",
                timestamps=beh["reward_times"],
            )
        )
        rewards.add(
            TimeSeries(
                name="autorewarded",
                data=beh["reward_auto"],
                unit="mL",
                timestamps=beh["reward_times"].copy(),
            )
        )
    run = _running(stim_t, rng)
    running = nwb.create_processing_module("running", "Running speed processing module")
    for name, unit, desc in (
        ("dx", "cm", "Running wheel angular change, computed during data collection"),
        ("speed", "cm/s", "no description"),
        ("speed_unfiltered", "cm/s", "no description"),
    ):
        running.add(
            TimeSeries(
                name=name, data=run[name], unit=unit, timestamps=stim_t.copy(), description=desc
            )
        )
    for name, desc in (
        ("v_sig", "Voltage signal from the running wheel encoder"),
        (
            "v_in",
            "The theoretical maximum voltage that the running wheel encoder will reach prior to "
            '"wrapping". This should theoretically be 5V (after crossing 5V goes to 0V, or vice '
            "versa). In practice the encoder does not always reach this value before wrapping, "
            "which can cause transient spikes in speed at the voltage 'wraps'.",
        ),
    ):
        nwb.add_acquisition(
            TimeSeries(
                name=name, data=run[name], unit="V", timestamps=stim_t.copy(), description=desc
            )
        )


def _running(stim_t: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(stim_t)
    bouts = lfilter([0.01], [1.0, -0.99], rng.normal(size=n)) * 60.0
    speed_unfiltered = np.clip(bouts, -2.0, None) + rng.normal(0, 1.5, n)
    speed = np.convolve(speed_unfiltered, np.ones(5) / 5.0, mode="same")
    dx = speed_unfiltered / STIM_RATE / 8.0 * 180.0 / np.pi  # degrees of wheel turn per frame
    angle = np.cumsum(dx) / 360.0
    v_in = 5.0 + rng.normal(0, 0.01, n)
    return {
        "dx": dx,
        "speed": speed,
        "speed_unfiltered": speed_unfiltered,
        "v_in": v_in,
        "v_sig": np.mod(angle, 1.0) * v_in,
    }


def task_parameters(session_type: str, image_set: str, n_frames: int, omitted: float):
    """AllenSDK's ``general/task_parameters`` (BehaviorTaskParameters)."""
    return extension("BehaviorTaskParameters")(
        name="task_parameters",
        stimulus_distribution="geometric",
        auto_reward_volume=0.005,
        stimulus_name=IMAGE_SETS[image_set][0].split(".")[0],
        blank_duration_sec=["0.5", "0.5"],
        omitted_flash_fraction=float(omitted),
        task="change detection",
        n_stimulus_frames=int(n_frames),
        stimulus="images",
        session_type=session_type,
        reward_volume=0.007,
        response_window_sec=["0.15", "0.75"],
        stimulus_duration_sec=0.25,
    )


def subject(row: dict[str, str], age_in_days: int):
    """AllenSDK's ``general/subject`` (BehaviorSubject) of a VBO experiment-table row."""
    return extension("BehaviorSubject")(
        subject_id=row["mouse_id"],
        description="A visual behavior subject with a LabTracks ID",
        genotype=row["full_genotype"],
        sex=row["sex"],
        species="Mus musculus",
        age=f"P{age_in_days}D",
        age__reference="birth",
        driver_line=sorted(ast.literal_eval(row["driver_line"])),
        reporter_line=row["reporter_line"],
    )


def device(nwb: NWBFile, equipment: str) -> None:
    """AllenSDK's rig device (layout note 11): a core Device with a manufacturer."""
    meso = equipment.startswith("MESO")
    rig = "Mesoscope" if meso else "Scientifica"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The 'manufacturer' field is deprecated")
        nwb.create_device(
            name=equipment,
            description=f"Allen Brain Observatory - {rig} 2P Rig",
            manufacturer="Thorlabs" if meso else "Scientifica",
        )


def session_uuid(seed: int, key: str) -> str:
    """A behavior_session_uuid derived from the seed."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}/{key}"))


#: A mouse's learning over ``training_days``: lick probability after a go trial's change
#: rises, after a catch trial's sham change falls, linearly from the first day to the last.
LEARNING = {"hit": (0.3, 0.9), "false_alarm": (0.5, 0.15)}


def _learning(day: int, training_days: int) -> tuple[float, float]:
    """(go, catch) lick probabilities on ``day`` (0-based) of ``training_days``; the
    untrained default (0.75, 0.2) for a single session."""
    if training_days == 1:
        return (0.75, 0.2)
    f = day / (training_days - 1)
    (h0, h1), (f0, f1) = LEARNING["hit"], LEARNING["false_alarm"]
    return (h0 + (h1 - h0) * f, f0 + (f1 - f0) * f)


def _sessions(seed: int, n_sessions: int, training_days: int = 1) -> list[dict[str, Any]]:
    rows = experiment_rows()
    if not 1 <= n_sessions <= len(rows):
        raise ValueError(f"n_sessions must be in 1..{len(rows)}, got {n_sessions}")
    if not 1 <= training_days <= 25:
        raise ValueError(f"training_days must be in 1..25, got {training_days}")
    rng = np.random.default_rng([seed, 0xBE4A])
    out = []
    for i in rng.permutation(len(rows))[:n_sessions]:
        row = dict(rows[int(i)])
        familiar = "G" if row["image_set"] in ("G", "H") else "A"
        last = int(rng.integers(5, 30))  # days between the last training day and imaging
        hours = int(rng.integers(0, 5))
        stage = int(rng.integers(len(_TRAINING)))
        box = _BOXES[int(rng.integers(len(_BOXES)))]
        for day in range(training_days):
            days = last + training_days - 1 - day
            if training_days > 1:  # the stages in order over the training days
                stage = day * len(_TRAINING) // training_days
            start = datetime.datetime.fromisoformat(row["date_of_acquisition"]).replace(
                tzinfo=datetime.UTC
            ) - datetime.timedelta(days=days, hours=hours)
            out.append(
                {
                    "row": row,
                    "behavior_session_id": int(row["behavior_session_id"]) - 1000 * days - 7,
                    "session_type": _TRAINING[stage].format(familiar),
                    "image_set": familiar,
                    "equipment_name": box,
                    "age_in_days": int(row["age_in_days"]) - days,
                    "date_of_acquisition": start,
                    "response_probability": _learning(day, training_days),
                }
            )
    return out


def ground_truth(
    seed: int = 0,
    *,
    scale: str = "tiny",
    n_sessions: int = 1,
    training_days: int = 1,
    behavior_seconds: float | None = None,
) -> list[dict]:
    """Return the known answers behind :func:`write` (same seed and options).

    Returns
    -------
    list of dict
        Per session: behavior_session_id, session_type, image_names, and the trial outcome
        counts (hit, miss, false_alarm, correct_reject, aborted, auto_rewarded).
    """
    out = []
    for i, s in enumerate(_sessions(seed, n_sessions, training_days)):
        beh = _draw(s, i, seed, scale, behavior_seconds)
        t = beh["trials"]
        counts = {
            k: int(np.sum(t[k]))
            for k in ("hit", "miss", "false_alarm", "correct_reject", "aborted", "auto_rewarded")
        }
        out.append(
            {
                "behavior_session_id": s["behavior_session_id"],
                "session_type": s["session_type"],
                "image_names": list(IMAGE_SETS[s["image_set"]][1]),
                **counts,
            }
        )
    return out


def _draw(
    s: dict[str, Any], index: int, seed: int, scale: str, behavior_seconds: float | None = None
) -> dict[str, Any]:
    if scale not in _BEHAVIOR_SECONDS:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(_BEHAVIOR_SECONDS)}")
    if behavior_seconds is not None and not behavior_seconds >= 10:
        raise ValueError(f"behavior_seconds must be at least 10 s, got {behavior_seconds!r}")
    rng = np.random.default_rng([seed, index, 0xB5])
    return session(
        s["image_set"],
        False,
        rng,
        behavior_s=behavior_seconds or _BEHAVIOR_SECONDS[scale],
        omitted_fraction=np.nan,
        response_probability=s["response_probability"],
    )


def write(
    out_dir: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    n_sessions: int = 1,
    training_days: int = 1,
    behavior_seconds: float | None = None,
) -> list[Path]:
    """Write ``behavior_session_<id>.nwb`` files as AllenSDK's BehaviorSession writes them.

    Parameters
    ----------
    out_dir
        Folder to write into (created if needed).
    scale
        ``"tiny"`` (~2 min) or ``"realistic"`` (1 h, full-resolution templates).
    seed
        Seed of every random draw; the same seed gives byte-identical arrays.
    n_sessions
        How many mice (one per mouse of the vendored VBO experiment sample).
    training_days
        Sessions per mouse, on consecutive days before its imaging, through the training
        stages in order, with a seeded learning trend (:data:`LEARNING`: hit probability
        rising, false-alarm probability falling; d′ grows across days). 1: one session of a
        random stage at the untrained default (0.75, 0.2).
    behavior_seconds
        Seconds of change detection per session (None: the scale's, 125 s tiny, 3600 s
        realistic); a learning curve wants a few hundred for enough catch trials.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in enumerate(_sessions(seed, n_sessions, training_days)):
        beh = _draw(s, i, seed, scale, behavior_seconds)
        row = s["row"]
        nwb = NWBFile(
            session_description=s["session_type"],
            identifier=str(s["behavior_session_id"]),
            session_start_time=s["date_of_acquisition"],
            file_create_date=[s["date_of_acquisition"]],
            institution="Allen Institute for Brain Science",
            keywords=["visual", "behavior", "task"],
            experiment_description=(
                "An operant behavior training session where a mouse must lick a spout "
                "following a change in stimulus identity to earn rewards. Stimuli consist of 8 "
                "natural scene images, for a total of 64 possible pairwise transitions. Images "
                "are shown for 250 ms with a 500 ms intervening gray period. Delivered rewards "
                "are 7ul in volume, and the session lasts for 60 minutes"
            ),
            subject=subject(row, s["age_in_days"]),
        )
        device(nwb, s["equipment_name"])
        nwb.add_lab_meta_data(
            extension("BehaviorMetadata")(
                name="metadata",
                behavior_session_id=s["behavior_session_id"],
                behavior_session_uuid=session_uuid(seed, str(s["behavior_session_id"])),
                equipment_name=s["equipment_name"],
                project_code=row["project_code"],
                session_type=s["session_type"],
                stimulus_frame_rate=STIM_RATE,
            )
        )
        nwb.add_lab_meta_data(
            task_parameters(s["session_type"], s["image_set"], len(beh["stim_t"]), np.nan)
        )
        add_behavior(
            nwb,
            beh,
            template_shape=TEMPLATE_SHAPE[scale],
            rng=np.random.default_rng([seed, i, 0xB6]),
        )
        path = out / f"behavior_session_{s['behavior_session_id']}.nwb"
        allen.write_nwb(path, nwb, allen.VISUAL_BEHAVIOR)
        with h5py.File(path, "a") as h5:
            allen.fix_object_ids(h5, f"{seed}/{s['behavior_session_id']}")
        paths.append(path)
    return paths
