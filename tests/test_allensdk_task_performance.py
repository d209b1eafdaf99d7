"""Visual Behavior task performance against AllenSDK 2.16.2 (:mod:`abo_lake.task_performance`).

Parity on the three AllenSDK-written fixtures that hold a behavior task (a 2P experiment, a
behavior-only session, a Visual Behavior Neuropixels session): ``get_rolling_performance_df()``
per column, ``get_reward_rate()`` and ``get_performance_metrics()`` per key, each read through
the accessor of the Dataset the release serves and compared with what AllenSDK returned from the
same file (``tests/allensdk_reference.py``). Then the same calls on seeded synthetic trials
tables of 14 to 320 trials (``tests/reference/task_performance_allensdk.py``: AllenSDK's own
``Trials`` and ``get_performance_metrics`` on them), which reach the 100-trial and ±25-trial
windows the fixtures are too short for. Then AllenSDK's trial-type rules and edge cases, by hand.

Tolerance: none. Every value is compared exactly (NaN equal to NaN) and AllenSDK's types are
checked (``int`` row counts, NumPy ``int64`` sums, NumPy ``float64`` rates): the computations
repeat AllenSDK's operations in its order (pandas rolling means, ``scipy.stats.norm.ppf``).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import allensdk_reference as ref
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import norm

import abo_lake.accessors  # noqa: F401  (registers .ophys and .ecephys)
from abo_lake import task_performance as tp
from abo_lake.errors import SchemaError

#: fixture key -> (dataset path prefix in its release, accessor)
FIXTURES = {
    "vbo_ophys": ("ophys/experiment/", "ophys"),
    "vbo_behavior": ("behavior/session/", "ophys"),
    "vbn": ("ecephys/session/", "ecephys"),
}
COLUMNS = ("reward_rate", "hit_rate_raw", "hit_rate", "false_alarm_rate_raw",
           "false_alarm_rate", "rolling_dprime")  # fmt: skip
METRICS = (
    "trial_count", "go_trial_count", "catch_trial_count", "hit_trial_count",
    "miss_trial_count", "false_alarm_trial_count", "correct_reject_trial_count",
    "auto_reward_count", "earned_reward_count", "total_reward_count", "total_reward_volume",
    "maximum_reward_rate", "engaged_trial_count", "mean_hit_rate", "mean_hit_rate_uncorrected",
    "mean_hit_rate_engaged", "mean_false_alarm_rate", "mean_false_alarm_rate_uncorrected",
    "mean_false_alarm_rate_engaged", "mean_dprime", "mean_dprime_engaged", "max_dprime",
    "max_dprime_engaged",
)  # fmt: skip
#: AllenSDK's types: ``shape[0]`` and ``len`` are ``int``, pandas sums of booleans ``int64``
TYPES = {"trial_count": int, "total_reward_count": int}


def _type(metric: str) -> type:
    if metric in TYPES:
        return TYPES[metric]
    return np.int64 if metric.endswith("_count") else np.float64


def _equal(got: object, want: object) -> bool:
    """Exact equality, NaN (None in the reference's JSON) equal to NaN."""
    if want is None:
        return bool(np.isnan(got))
    return bool(got == want)


@pytest.fixture(scope="module")
def served(allensdk_releases):
    cache = {}

    def get(key: str):
        """The fixture's accessor (``.ophys`` or ``.ecephys``) on the Dataset the release serves."""
        if key not in cache:
            prefix, accessor = FIXTURES[key]
            rel = allensdk_releases[key]
            (path,) = rel.datasets(prefix)
            cache[key] = getattr(rel.open(path), accessor)
        return cache[key]

    return get


# --------------------------------------------------------------------------- the fixtures


@pytest.mark.parametrize("key", FIXTURES)
def test_rolling_performance_index_and_columns(served, key):
    got = served(key).get_rolling_performance_df()
    want = ref.table(ref.STEMS[key], "get_rolling_performance_df")
    assert list(got.columns) == list(COLUMNS)
    assert got.index.name == "trials_id"
    assert got.index.dtype == np.int64
    np.testing.assert_array_equal(got.index.to_numpy(), want.index.to_numpy())


@pytest.mark.parametrize(("key", "column"), [(k, c) for k in FIXTURES for c in COLUMNS])
def test_rolling_performance_column(served, key, column):
    got = served(key).get_rolling_performance_df()[column]
    want = ref.table(ref.STEMS[key], "get_rolling_performance_df")[column].astype(np.float64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(), err_msg=column)
    assert np.isfinite(want).any()  # the fixture reaches a value, not only NaN


@pytest.mark.parametrize("key", FIXTURES)
def test_reward_rate(served, key):
    got = served(key).get_reward_rate()
    want = ref.array(ref.STEMS[key], "get_reward_rate")
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("key", FIXTURES)
def test_performance_metrics_keys(served, key):
    got = served(key).get_performance_metrics()
    assert list(got) == list(ref.value(ref.STEMS[key], "get_performance_metrics"))
    assert list(got) == list(METRICS)


@pytest.mark.parametrize(("key", "metric"), [(k, m) for k in FIXTURES for m in METRICS])
def test_performance_metric(served, key, metric):
    got = served(key).get_performance_metrics()[metric]
    want = ref.value(ref.STEMS[key], "get_performance_metrics")[metric]
    assert type(got) is _type(metric), type(got)
    assert _equal(got, want), (got, want)


@pytest.mark.parametrize("key", FIXTURES)
def test_engagement_threshold_is_passed_on(served, key):
    """A threshold above every reward rate leaves no trial engaged (AllenSDK's ``>``)."""
    acc = served(key)
    top = np.nanmax(acc.get_reward_rate())
    assert acc.get_performance_metrics(top)["engaged_trial_count"] == 0
    below = acc.get_performance_metrics(engaged_trial_reward_rate_threshold=top - 1e-9)
    assert below["engaged_trial_count"] >= 1
    assert np.isnan(acc.get_performance_metrics(top)["mean_dprime_engaged"])


# --------------------------------------------------------------------------- long synthetic tables

REFERENCE = Path(__file__).parent / "reference" / "task_performance_allensdk"
SYNTHETIC = json.loads(REFERENCE.with_suffix(".json").read_text())
SESSIONS = list(SYNTHETIC["sessions"])


@pytest.fixture(scope="module")
def synthetic():
    z = np.load(REFERENCE.with_suffix(".npz"))

    def get(name: str) -> tuple[pd.DataFrame, float, dict[str, np.ndarray]]:
        """(trials, response window start, AllenSDK's outputs) of one synthetic session."""
        prefix = f"{name}__trials__"
        cols = {
            k.removeprefix(prefix): z[k]
            for k in z.files
            if k.startswith(prefix) and not k.startswith(prefix + "lick_times")
        }
        values, offsets = z[prefix + "lick_times"], z[prefix + "lick_times__offsets"]
        cols["lick_times"] = [values[a:b] for a, b in itertools.pairwise(offsets)]
        trials = pd.DataFrame(cols, index=pd.RangeIndex(len(offsets) - 1, name="trials_id"))
        outputs = {k.removeprefix(f"{name}__"): z[k] for k in z.files
                   if k.startswith(f"{name}__") and not k.startswith(prefix)}  # fmt: skip
        return trials, float(z[f"{name}__response_window_start"]), outputs

    return get


def _rewards(trials: pd.DataFrame) -> pd.DataFrame:
    """The rewards table the reference script gives AllenSDK (one row per rewarded trial)."""
    rewarded = trials[trials["reward_volume"] > 0]
    return pd.DataFrame({"volume": rewarded["reward_volume"].to_numpy()})


@pytest.mark.parametrize("name", SESSIONS)
def test_synthetic_reward_rate(synthetic, name):
    trials, start, want = synthetic(name)
    np.testing.assert_array_equal(tp.reward_rate(trials, start), want["reward_rate"])


@pytest.mark.parametrize(("name", "column"), [(s, c) for s in SESSIONS for c in COLUMNS])
def test_synthetic_rolling_performance(synthetic, name, column):
    trials, start, want = synthetic(name)
    got = tp.rolling_performance(trials, start)
    np.testing.assert_array_equal(got.index.to_numpy(), want["rolling__index"])
    np.testing.assert_array_equal(got[column].to_numpy(), want[f"rolling__{column}"])


@pytest.mark.parametrize(
    ("name", "threshold"),
    [(s, t) for s in SESSIONS for t in SYNTHETIC["get_performance_metrics"][s]],
)
def test_synthetic_performance_metrics(synthetic, name, threshold):
    trials, start, _ = synthetic(name)
    got = tp.performance_metrics(trials, _rewards(trials), start, float(threshold))
    want = SYNTHETIC["get_performance_metrics"][name][threshold]
    assert list(got) == list(want)
    for key, (value, type_name) in want.items():
        assert type(got[key]).__name__ == type_name, key
        assert _equal(got[key], value), (key, got[key], value)


def test_synthetic_sessions_reach_the_windows(synthetic):
    """The long session exercises what the fixtures cannot: >100 non-aborted trials, rates that
    fall and rise again, engaged and disengaged stretches."""
    trials, _, want = synthetic("long")
    assert (~trials["aborted"]).sum() > 2 * tp.SLIDING_WINDOW
    rate = want["reward_rate"][10:]
    assert (rate > 2).any()
    assert (rate < 2).any()
    passive = synthetic("passive")[2]["rolling__rolling_dprime"]
    assert np.all(passive[~np.isnan(passive)] == 0)


# --------------------------------------------------------------------------- AllenSDK's rules


def _trials(kinds: str, start_step: float = 10.0) -> pd.DataFrame:
    """A trials table from one letter per trial: H(it) M(iss) F(alse alarm) C(orrect reject)
    A(borted) R (auto-rewarded); hits, false alarms and auto rewards lick 0.3 s after the
    change, and rewards go to hits (7 µL) and auto rewards (5 µL)."""
    rows = []
    for i, k in enumerate(kinds):
        change = np.nan if k == "A" else i * start_step + 3.0
        licks = [i * start_step + 1.0] if k == "A" else [change + 0.3] if k in "HFR" else []
        rows.append({
            "start_time": i * start_step, "change_time": change,
            "lick_times": np.asarray(licks), "reward_volume": {"H": 0.007, "R": 0.005}.get(k, 0.0),
            "go": k in "HM", "catch": k in "FC", "hit": k == "H", "miss": k == "M",
            "false_alarm": k == "F", "correct_reject": k == "C", "aborted": k == "A",
            "auto_rewarded": k == "R",
        })  # fmt: skip
    return pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="trials_id"))


def test_aborted_trials_are_dropped_from_the_rates():
    with_aborts = tp.rolling_performance(_trials("HMAAHCAF"), 0.15)
    without = tp.rolling_performance(_trials("HMHCF"), 0.15)
    aborted = [2, 3, 6]
    assert with_aborts.loc[aborted, list(COLUMNS[1:])].isna().all().all()
    kept = with_aborts.drop(index=aborted)
    for column in COLUMNS[1:]:
        np.testing.assert_array_equal(kept[column].to_numpy(), without[column].to_numpy())
    # ... but they stay in the reward rate's rows (every trial has a reward_rate entry)
    assert len(with_aborts["reward_rate"]) == 8


def test_auto_rewarded_trials_count_as_neither_go_nor_catch():
    table = _trials("RRRHMC")
    got = tp.rolling_performance(table, 0.15)
    np.testing.assert_array_equal(got["hit_rate_raw"], [np.nan] * 3 + [1.0, 0.5, 0.5])
    np.testing.assert_array_equal(got["false_alarm_rate_raw"], [np.nan] * 5 + [0.0])
    metrics = tp.performance_metrics(table, pd.DataFrame({"volume": [0.005] * 3 + [0.007]}), 0.15)
    assert metrics["go_trial_count"] == 2
    assert metrics["auto_reward_count"] == 3
    assert metrics["earned_reward_count"] == 1
    assert metrics["total_reward_count"] == 4
    assert metrics["total_reward_volume"] == pytest.approx(0.022)


def test_rolling_window_is_the_previous_100_non_aborted_trials():
    responses = "H" * 100 + "M" * 50
    raw = tp.rolling_performance(_trials(responses), 0.15)["hit_rate_raw"].to_numpy()
    assert raw[99] == 1.0
    assert raw[149] == 0.5  # 50 hits and 50 misses in the window


def test_trial_count_correction():
    assert np.isnan(tp.trial_number_limit(0.5, 0))
    assert tp.trial_number_limit(1.0, 2) == 0.75  # at most 1 - 1/(2N)
    assert tp.trial_number_limit(0.0, 4) == 0.125  # at least 1/(2N)
    assert tp.trial_number_limit(0.4, 4) == 0.4
    assert np.isnan(tp.trial_number_limit(np.nan, 3))
    got = tp.rolling_performance(_trials("HHC"), 0.15)
    np.testing.assert_array_equal(got["hit_rate"], [0.5, 0.75, 0.75])  # N = 1, 2, 2
    np.testing.assert_array_equal(got["false_alarm_rate"], [np.nan, np.nan, 0.5])


def test_dprime_clips_rates_at_one_percent():
    ceiling = norm.ppf(0.99) - norm.ppf(0.01)
    assert tp.dprime(1.0, 0.0) == ceiling
    assert tp.dprime(0.999, 0.001) == ceiling
    assert tp.dprime(0.0, 1.0) == -ceiling
    assert tp.dprime(0.5, 0.5) == 0.0
    assert np.isnan(tp.dprime(np.nan, 0.5))
    np.testing.assert_array_equal(
        tp.rolling_dprime([1.0, np.nan, 0.69], [0.0, 0.2, 0.31]),
        [ceiling, np.nan, norm.ppf(0.69) - norm.ppf(0.31)],
    )


def test_passive_session_has_zero_dprime():
    table = _trials("HMCF")
    table["reward_volume"] = 0.0
    table["lick_times"] = [np.array([])] * 4
    np.testing.assert_array_equal(tp.rolling_performance(table, 0.15)["rolling_dprime"], 0.0)
    active = tp.rolling_performance(_trials("HMCF"), 0.15)["rolling_dprime"]
    assert np.isnan(active[0])  # no catch trial yet: computed, not zero


def test_reward_rate_counts_responses_in_the_window():
    table = _trials("H" * 12, start_step=6.0)
    rate = tp.reward_rate(table, 0.15)
    assert np.isnan(rate[:10]).all()  # the first 10 trials have no rate
    # trial 10: trials 0..11 (hi = min(10 + 25, 12)), 12 responses in 66 s
    assert rate[10] == 12 / 66.0 * 60
    lick = table.loc[11, "lick_times"]  # one lick, moved in place
    lick[0] = table.loc[11, "change_time"] + 0.8  # too late
    assert tp.reward_rate(table, 0.15)[10] == 11 / 66.0 * 60
    lick[0] = table.loc[11, "change_time"] + 0.1  # too early
    assert tp.reward_rate(table, 0.15)[10] == 11 / 66.0 * 60
    assert tp.reward_rate(table, 0.05)[10] == 12 / 66.0 * 60


def test_reward_rate_without_elapsed_time_is_nan():
    table = _trials("H" * 12)
    table["start_time"] = 1.0
    assert np.isnan(tp.reward_rate(table, 0.15)).all()


def test_response_latency_uses_vbn_change_time_without_display_delay():
    table = _trials("HMF").rename(columns={"change_time": "change_time_no_display_delay"})
    np.testing.assert_allclose(tp.response_latencies(table, 0.15), [0.3, np.inf, 0.3])
    with pytest.raises(KeyError, match="change_time"):
        tp.response_latencies(table.drop(columns="change_time_no_display_delay"), 0.15)


def test_flags_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        tp.hit_rate([True], [False, True], [False])


def test_sessions_without_a_task_raise_schema_errors():
    """A Visual Coding Neuropixels session (AllenSDK's EcephysSession has no task) and a
    Dataset without trials say so instead of computing anything."""
    from abo_lake.sources import vcn_ecephys

    (session,) = vcn_ecephys.read(ref.files(ref.STEMS["vcn"])[0]).values()
    with pytest.raises(SchemaError, match="no behavior task"):
        session.ecephys.get_performance_metrics()
    with pytest.raises(SchemaError, match="no trials"):
        tp.get_reward_rate(xr.Dataset())
