"""Visual Behavior licks, rewards, running, pupil and engagement aligned to presentations,
against AllenSDK 2.16.2 (and the tutorials' ``brain_observatory_utilities`` 0.5.1 run on
AllenSDK's tables) on the two AllenSDK-written Visual Behavior fixtures, read through the
releases the lake serves (``tests/reference/vb_alignment_allensdk.py`` made the reference).

Tolerance: none. Every column is compared exactly (NaN equal to NaN): the windows select the
same samples and the means reduce them in the same order as the reference.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import abo_lake.accessors  # noqa: F401  (registers .ophys)
from abo_lake import behavior_alignment as ba

REFERENCE = Path(__file__).parent / "reference" / "vb_alignment_allensdk"
META = json.loads(REFERENCE.with_suffix(".json").read_text())
KEYS = {"vbo_ophys": "ophys/experiment/", "vbo_behavior": "behavior/session/"}
WINDOWS = {name: tuple(w) for name, w in META["windows"].items()}
PER_WINDOW = ("first_lick_time", "lick_latency", "mean_running_speed", "mean_pupil_area")
WHOLE = ("time_from_last_lick", "time_from_last_reward", "time_from_last_change", "reward_rate")


@pytest.fixture(scope="module")
def want():
    return np.load(REFERENCE.with_suffix(".npz"))


@pytest.fixture(scope="module")
def served(allensdk_releases):
    cache = {}

    def get(key: str):
        """``.ophys`` of the Dataset the fixture's release serves."""
        if key not in cache:
            rel = allensdk_releases[key]
            (path,) = rel.datasets(KEYS[key])
            cache[key] = rel.open(path).ophys
        return cache[key]

    return get


@pytest.fixture(scope="module")
def annotated(served):
    cache = {}

    def get(key: str, window: str) -> pd.DataFrame:
        if (key, window) not in cache:
            cache[key, window] = served(key).annotated_stimulus_presentations(WINDOWS[window])
        return cache[key, window]

    return get


def _ragged(want, name: str) -> list[np.ndarray]:
    values, offsets = want[name], want[name + "__offsets"]
    return [values[a:b] for a, b in itertools.pairwise(offsets)]


# --------------------------------------------------------------------------- AllenSDK parity


@pytest.mark.parametrize("key", KEYS)
def test_table_is_allensdk_presentations_plus_the_aligned_columns(served, annotated, want, key):
    got = annotated(key, "tutorial")
    presentations = served(key).stimulus_presentations
    assert list(got.columns) == [*presentations.columns, *ba.ALIGNED_COLUMNS]
    pd.testing.assert_frame_equal(got[presentations.columns], presentations)
    np.testing.assert_array_equal(got.index.to_numpy(), want[f"{key}__index"])
    assert got.index.name == "stimulus_presentations_id"


@pytest.mark.parametrize(
    ("key", "window", "column"),
    [(k, w, c) for k in KEYS for w in WINDOWS for c in PER_WINDOW],
)
def test_windowed_column(annotated, want, key, window, column):
    got = annotated(key, window)[column].to_numpy(dtype=np.float64)
    expected = want[f"{key}__{window}__{column}"]
    np.testing.assert_array_equal(got, expected)
    if column != "mean_pupil_area" or META["sessions"][key]["eye_frames"]:
        assert np.isfinite(expected).any()  # the fixture reaches values, not only NaN


@pytest.mark.parametrize(
    ("key", "window", "column"), [(k, w, c) for k in KEYS for w in WINDOWS for c in ("licks",
                                                                                     "rewards")]
)  # fmt: skip
def test_event_times_in_each_window(annotated, want, key, window, column):
    got = annotated(key, window)[column]
    expected = _ragged(want, f"{key}__{window}__{column}")
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sum(map(len, expected)) > 0
    if column == "licks":
        np.testing.assert_array_equal(
            annotated(key, window)["licked"].to_numpy(), [len(b) > 0 for b in expected]
        )


@pytest.mark.parametrize(("key", "column"), [(k, c) for k in KEYS for c in WHOLE])
def test_time_from_last_and_reward_rate(annotated, want, key, column):
    got = annotated(key, "tutorial")[column].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(got, want[f"{key}__{column}"])
    assert np.isfinite(got).any()


@pytest.mark.parametrize(("key", "threshold"), [(k, t) for k in KEYS for t in META["thresholds"]])
def test_engagement_is_allensdks_rule(served, want, key, threshold):
    acc = served(key)
    trials = acc.get_engaged_trials(threshold)
    assert trials.dtype == bool
    assert trials.index.name == "trials_id"
    np.testing.assert_array_equal(trials.to_numpy(), want[f"{key}__engaged_trials__{threshold}"])
    count = META["sessions"][key][f"engaged_trial_count__{threshold}"]
    assert trials.sum() == count == acc.get_performance_metrics(threshold)["engaged_trial_count"]
    table = acc.annotated_stimulus_presentations(engaged_trial_reward_rate_threshold=threshold)
    np.testing.assert_array_equal(table["engaged"].to_numpy(), want[f"{key}__engaged__{threshold}"])
    np.testing.assert_array_equal(
        table["engagement_state"].to_numpy() == "engaged", table["engaged"].to_numpy()
    )


def test_engagement_differs_between_thresholds(want):
    """The behavior fixture has trials engaged at 2 rewards/min and none at 4."""
    assert want["vbo_behavior__engaged_trials__2.0"].any()
    assert not want["vbo_behavior__engaged_trials__4.0"].any()


@pytest.mark.parametrize(("key", "thresholds"), [(k, e) for k in KEYS for e in META["eye"]])
def test_eye_tracking_blink_filter(served, want, key, thresholds):
    z, dilation = META["eye"][thresholds]
    got = served(key).get_eye_tracking(z_threshold=z, dilation_frames=dilation)
    for column in ("likely_blink", "pupil_area", "eye_area"):
        np.testing.assert_array_equal(
            got[column].to_numpy(), want[f"{key}__eye__{thresholds}__{column}"], err_msg=column
        )
    assert got["likely_blink"].sum() == META["sessions"][key][f"blinks__{thresholds}"]


def test_stricter_blink_thresholds_filter_more_frames():
    """1 SD and 5 frames of dilation mark far more frames than AllenSDK's 3 SD and 2."""
    ophys = META["sessions"]["vbo_ophys"]
    assert ophys["blinks__strict"] > 10 * ophys["blinks__default"] > 0


# --------------------------------------------------------------------------- the ophys clock

OPHYS_TIME = ("pupil_area", "running_speed", "lick_count", "reward_count")


@pytest.fixture(scope="module")
def on_ophys_time(served):
    return served("vbo_ophys").behavior_on_ophys_time().compute()


@pytest.mark.parametrize("column", OPHYS_TIME)
def test_behavior_on_ophys_time(served, on_ophys_time, want, column):
    """Interpolated values within 1e-12 relative (interp1d and np.interp order their operations
    differently), NaN where interp1d gives NaN; counts exact."""
    got = on_ophys_time[column]
    expected = want[f"vbo_ophys__ophys_time__{column}"]
    np.testing.assert_array_equal(got["time"].to_numpy(), served("vbo_ophys").ophys_timestamps)
    if column.endswith("_count"):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got.to_numpy(), expected)
        assert expected.sum() > 0
    else:
        np.testing.assert_array_equal(np.isnan(got.to_numpy()), np.isnan(expected))
        np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-12, atol=0)
        assert np.isnan(expected).any()
        assert np.isfinite(expected).sum() > len(expected) // 2


def test_behavior_on_ophys_time_needs_imaging(served):
    from abo_lake.errors import SchemaError

    with pytest.raises(SchemaError, match="behavior-only session"):
        served("vbo_behavior").behavior_on_ophys_time()


def test_events_per_frame_are_half_open():
    frames = np.array([0.0, 1.0, 2.0])
    got = ba.events_per_frame(frames, np.array([-0.5, 0.0, 0.99, 1.0, 2.5, 3.0, 3.5]))
    np.testing.assert_array_equal(got, [2, 1, 1])  # the last frame is [2, 3)


def test_alignment_reads_no_imaging_chunks(allensdk_releases):
    """The aligned tables read behavior variables only: no chunk of a trace, mask or image."""
    import xarray as xr

    rel = allensdk_releases["vbo_ophys"]
    (path,) = rel.datasets(KEYS["vbo_ophys"])
    store = rel.store(path)
    read: list[str] = []
    get = store.get

    async def recording_get(key, *args, **kwargs):
        if key in store._chunks:
            read.append(key.rsplit("/c/", 1)[0])
        return await get(key, *args, **kwargs)

    store.get = recording_get
    ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
    read.clear()
    ds.ophys.annotated_stimulus_presentations()
    ds.ophys.behavior_on_ophys_time()
    imaging = {n for n, v in ds.variables.items() if "cell_specimen_id" in v.dims or v.ndim > 2}
    assert read  # the behavior tables were read
    assert not imaging & set(read), sorted(imaging & set(read))


# --------------------------------------------------------------------------- the rules by hand


def test_events_in_windows_exclude_both_edges():
    events = np.array([1.0, 1.5, 1.75, 3.0])
    got = ba.events_in_windows(np.array([1.0, 2.9]), events, (0.0, 0.75))
    np.testing.assert_array_equal(got[0], [1.5])  # 1.0 and 1.75 sit on the edges
    np.testing.assert_array_equal(got[1], [3.0])
    assert len(ba.events_in_windows(np.array([10.0]), events, (0.0, 0.75))[0]) == 0


def test_window_means_include_the_start_and_skip_nan_on_request():
    t = np.arange(6.0)
    values = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    np.testing.assert_array_equal(ba.window_means(values, t, np.array([0.0]), (0, 2)), [1.5])
    assert np.isnan(ba.window_means(values, t, np.array([1.0]), (0, 2))[0])
    got = ba.window_means(values, t, np.array([1.0, 9.0]), (0, 3), skip_nan=True)
    np.testing.assert_array_equal(got, [3.0, np.nan])  # (2 + 4) / 2; nothing after t = 5


def test_time_from_last_counts_an_event_at_the_same_time():
    got = ba.time_from_last(np.array([0.5, 1.0, 2.5]), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(got, [np.nan, 0.0, 0.5])


def test_bad_windows_and_unsorted_events_are_refused():
    with pytest.raises(ValueError, match="start < end"):
        ba.events_in_windows(np.array([0.0]), np.array([1.0]), (0.75, 0.0))
    with pytest.raises(ValueError, match=r"\(start, end\)"):
        ba.window_means(np.zeros(2), np.arange(2.0), np.array([0.0]), (0.0,))
    with pytest.raises(ValueError, match="increasing order"):
        ba.time_from_last(np.array([0.0]), np.array([2.0, 1.0]))


def test_presentations_without_trials_id_are_named(allensdk_releases):
    from abo_lake.errors import SchemaError

    rel = allensdk_releases["vbo_behavior"]
    (path,) = rel.datasets(KEYS["vbo_behavior"])
    ds = rel.open(path).drop_vars("stimulus_presentations.trials_id")
    with pytest.raises(SchemaError, match=r"lack \['trials_id'\]"):
        ba.annotated_stimulus_presentations(ds)


def test_a_session_without_behavior_says_so(served):
    """A Visual Coding 2P-like Dataset (no trials) gets a SchemaError naming what is missing."""
    import xarray as xr

    from abo_lake.errors import SchemaError

    with pytest.raises(SchemaError, match="stimulus presentations"):
        ba.annotated_stimulus_presentations(xr.Dataset())


# --------------------------------------------------------------------------- the learning trend


def test_synthetic_training_days_show_learning():
    """The synthetic writer's training days (the demo's learning curve): one mouse, one session
    a day through the stages in order, hits rising and false alarms falling; one day keeps the
    old single-session draws."""
    from abo_lake.synthetic import vbo_behavior as writer

    days = writer.ground_truth(1, training_days=5, behavior_seconds=240.0)
    ids = [d["behavior_session_id"] for d in days]
    assert np.all(np.diff(ids) == 1000)  # consecutive days (ids step 1000 per day)
    stages = [int(d["session_type"].split("_")[1]) for d in days]
    assert stages == sorted(stages)
    assert (stages[0], stages[-1]) == (3, 5)

    def rates(d: dict) -> tuple[float, float]:
        return (
            d["hit"] / (d["hit"] + d["miss"]),
            d["false_alarm"] / max(1, d["false_alarm"] + d["correct_reject"]),
        )

    (hit0, fa0), (hit1, fa1) = rates(days[0]), rates(days[-1])
    assert hit1 - hit0 > 0.3
    assert fa1 < fa0
    assert writer.ground_truth(1, training_days=1) == writer.ground_truth(1)
    with pytest.raises(ValueError, match="training_days"):
        writer.ground_truth(1, training_days=0)
    with pytest.raises(ValueError, match="behavior_seconds"):
        writer.ground_truth(1, behavior_seconds=1.0)
