"""Parity of Visual Behavior behavior data with AllenSDK 2.16.2, for both fixtures that hold it.

``vbo_behavior_session_1000000101.nwb`` (a behavior-only session, AllenSDK's ``BehaviorSession``)
and the behavior part of ``vbo_ophys_experiment_1000000001.nwb`` (``BehaviorOphysExperiment``)
were written by AllenSDK's own writers; their references hold what AllenSDK's readers return
(``tests/allensdk_reference.py``). Each quantity is converted through the real job code (session
fixture ``allensdk_releases``), opened lazily from the release and read through ``.ophys`` with
AllenSDK's names. Nothing here is computed in floating point by AllenSDK from stored values
(blink filtering only sets NaN), so every comparison is exact (NaN equal to NaN).
"""

from __future__ import annotations

import allensdk_reference as ref
import numpy as np
import pandas as pd
import pytest

import abo_lake.accessors  # noqa: F401  (registers .ophys)
from abo_lake import behavior, sources
from abo_lake.errors import SchemaError, SourceFileError
from abo_lake.sources import vbo_behavior

KEYS = ("vbo_behavior", "vbo_ophys")
#: Dataset path prefix of each fixture's dataset in its release.
PREFIX = {"vbo_behavior": "behavior/session/", "vbo_ophys": "ophys/experiment/"}
TABLES = {
    "vbo_behavior": (
        "trials",
        "licks",
        "rewards",
        "running_speed",
        "raw_running_speed",
        "stimulus_presentations",
        "eye_tracking",
    ),
    "vbo_ophys": (
        "trials",
        "licks",
        "rewards",
        "running_speed",
        "raw_running_speed",
        "stimulus_presentations",
        "eye_tracking",
        "eye_tracking_no_outlier_filter",
    ),
}
ARRAYS = (
    "stimulus_timestamps",
    "stimulus_templates__image_name",
    "stimulus_templates__warped",
    "stimulus_templates__unwarped",
)
VALUES = {
    "vbo_behavior": ("task_parameters", "eye_tracking_rig_geometry", "metadata"),
    # the experiment's metadata (behavior + imaging fields) is tested with the imaging side
    "vbo_ophys": ("task_parameters", "eye_tracking_rig_geometry"),
}
# get_performance_metrics, get_rolling_performance_df and get_reward_rate: parity tested in
# tests/test_allensdk_task_performance.py (abo_lake.task_performance)


def _served(allensdk_releases, key: str):
    """The fixture's dataset as the lake serves it: from the published release; the
    behavior-only session read by its reader while ``vbo-behavior`` is not a registered format
    (then it cannot be converted by ``abo-lake convert`` yet)."""
    if key == "vbo_behavior" and "vbo-behavior" not in sources.READERS:
        (ds,) = vbo_behavior.read(ref.files(ref.STEMS[key])[0]).values()
        return ds
    rel = allensdk_releases[key]
    (path,) = [p for p in rel.datasets() if p.startswith(PREFIX[key])]
    return rel.open(path)


@pytest.fixture(scope="module")
def served(allensdk_releases):
    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = _served(allensdk_releases, key)
        return cache[key]

    return get


def _lake_table(ds, name: str, columns) -> pd.DataFrame:
    if name == "eye_tracking_no_outlier_filter":  # EyeTrackingTable.from_nwb(inf, 0)[cols]
        return behavior.eye_tracking(ds, z_threshold=np.inf, dilation_frames=0)[list(columns)]
    return getattr(ds.ophys, name)


def _assert_column_equal(name: str, col: str, dtype: str, got: pd.Series, want: pd.Series):
    where = f"{name}.{col}"
    if dtype == "boolean":  # the reference holds pandas' nullable booleans as 1.0/0.0/NaN
        assert str(got.dtype) == "boolean", where
        got_f = got.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        np.testing.assert_array_equal(got_f, want.to_numpy(np.float64), err_msg=where)
    elif dtype == "object" and len(want) and isinstance(want.iloc[0], np.ndarray):  # ragged
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(np.asarray(a), b, err_msg=f"{where}[{i}]")
    elif dtype == "object":  # text, None/NaN where AllenSDK has no value
        assert got.dtype == object or str(got.dtype) == "str", (where, got.dtype)
        null_got, null_want = got.isna().to_numpy(), pd.isna(want).to_numpy()
        np.testing.assert_array_equal(null_got, null_want, err_msg=where)
        np.testing.assert_array_equal(
            got[~null_got].astype(str).to_numpy(), want[~null_want].astype(str).to_numpy(), where
        )
    else:
        assert str(got.dtype) == dtype, (where, got.dtype, dtype)
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(), err_msg=where)


@pytest.mark.parametrize(("key", "name"), [(k, n) for k in KEYS for n in TABLES[k]])
def test_table_matches_allensdk(served, key, name):
    stem = ref.STEMS[key]
    want = ref.table(stem, name)
    info = ref.table_info(stem, name)
    got = _lake_table(served(key), name, info["columns"])
    assert isinstance(got, pd.DataFrame)
    assert got.index.name == info["index_name"]
    assert str(got.index.dtype) == info["index_dtype"], got.index.dtype
    np.testing.assert_array_equal(got.index.to_numpy(), want.index.to_numpy())
    # AllenSDK's column order is hash-seed dependent (layout note 20): compare by name
    assert set(got.columns) == set(info["columns"])
    for col, meta in info["columns"].items():
        _assert_column_equal(name, col, meta["dtype"], got[col], want[col])


def _lake_array(ds, name: str) -> np.ndarray:
    if name == "stimulus_timestamps":
        return ds.ophys.stimulus_timestamps
    templates = ds.ophys.stimulus_templates
    column = name.removeprefix("stimulus_templates__")
    if column == "image_name":
        return templates.index.to_numpy().astype(str)
    return np.stack(templates[column].to_list())


@pytest.mark.parametrize(("key", "name"), [(k, n) for k in KEYS for n in ARRAYS])
def test_array_matches_allensdk(served, key, name):
    stem = ref.STEMS[key]
    want = ref.array(stem, name)
    got = _lake_array(served(key), name)
    assert got.shape == want.shape
    assert got.dtype.kind == want.dtype.kind
    assert got.dtype.kind == "U" or got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_templates_are_lazy_image_arrays(served):
    ds = served("vbo_ophys")
    warped = ds["stimulus_templates.warped"]
    assert warped.dims == ("image_name", "template_y", "template_x")
    assert warped.dtype == np.uint8
    assert ds["stimulus_templates.unwarped"].dtype == np.float64
    np.testing.assert_array_equal(
        ds["image_name"].values.astype(str), ref.array(ref.STEMS["vbo_ophys"], ARRAYS[1])
    )
    assert ds.attrs["stimulus_templates_name"] == ref.value(
        ref.STEMS["vbo_ophys"], "stimulus_templates_name"
    )


def _comparable(name: str, value):
    """A lake value as the reference's JSON holds AllenSDK's (datetimes and UUIDs as text,
    Coordinates as '[x, y, z]', NaN as None)."""
    if isinstance(value, dict):
        return {k: _comparable(name, v) for k, v in value.items()}
    if isinstance(value, float) and np.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if type(value).__name__ == "UUID":
        return str(value)
    if name == "eye_tracking_rig_geometry" and isinstance(value, list):
        return str(value)
    return value


@pytest.mark.parametrize(("key", "name"), [(k, n) for k in KEYS for n in VALUES[k]])
def test_value_matches_allensdk(served, key, name):
    got = getattr(served(key).ophys, name)
    if name == "metadata":
        assert type(got["behavior_session_uuid"]).__name__ == "UUID"
        assert hasattr(got["date_of_acquisition"], "tzinfo")
    assert _comparable(name, got) == ref.value(ref.STEMS[key], name)


# --------------------------------------------------------------------------- kind and errors


def test_behavior_session_kind_and_path():
    (path, ds), *rest = vbo_behavior.read(ref.files(ref.STEMS["vbo_behavior"])[0]).items()
    assert not rest
    assert path == "behavior/session/1000000101"
    assert ds.attrs["abo_lake_kind"] == "behavior_session"
    assert ds.attrs["behavior_session_id"] == 1000000101


def test_imaging_members_of_a_behavior_session_raise(served):
    ds = served("vbo_behavior")
    assert "behavior_session" in repr(ds.ophys)
    for member in ("dff", "roi_masks", "ophys_timestamps", "dff_traces"):
        with pytest.raises(SchemaError, match="behavior-only session"):
            getattr(ds.ophys, member)
    with pytest.raises(SchemaError, match="behavior-only session"):
        ds.ophys.trial_responses()


def test_sniff_tells_the_three_visual_behavior_files_apart():
    assert vbo_behavior.sniff(ref.files(ref.STEMS["vbo_behavior"])[0])
    for key in ("vbo_ophys", "vbn"):
        assert not vbo_behavior.sniff(ref.files(ref.STEMS[key])[0])


def test_reader_refuses_an_experiment_by_name():
    path = ref.files(ref.STEMS["vbo_ophys"])[0]
    with pytest.raises(SourceFileError, match=r"not a Visual Behavior behavior-only file.*ophys"):
        vbo_behavior.read(path)


# --------------------------------------------------------------------------- derived on load


@pytest.fixture(scope="module")
def session():
    (ds,) = vbo_behavior.read(ref.files(ref.STEMS["vbo_behavior"])[0]).values()
    return ds


def test_is_change_is_derived_on_load_not_read(session):
    stem = ref.STEMS["vbo_behavior"]
    want = ref.table(stem, "stimulus_presentations")
    n = session.sizes["stimulus_presentation_id"]
    wrong = session.assign(
        {
            "stimulus_presentations.is_change": ("stimulus_presentation_id", np.ones(n, bool)),
            "stimulus_presentations.flashes_since_change": (
                "stimulus_presentation_id",
                np.full(n, 7, np.int64),
            ),
        }
    )
    got = behavior.stimulus_presentations(wrong)
    np.testing.assert_array_equal(got["is_change"], want["is_change"])
    np.testing.assert_array_equal(got["flashes_since_change"], want["flashes_since_change"])
    stored = behavior.stimulus_presentations(wrong, add_is_change=False)  # AllenSDK's VBN
    assert stored["is_change"].all()
    assert (stored["flashes_since_change"] == 7).all()


def test_eye_tracking_ignores_stored_area_and_likely_blink(served):
    ds = served("vbo_ophys")
    want = ref.table(ref.STEMS["vbo_ophys"], "eye_tracking")
    n = ds.sizes["eye_tracking_time"]
    wrong = ds.assign(
        {
            "eye_tracking.likely_blink": ("eye_tracking_time", np.ones(n, bool)),
            "eye_tracking.pupil_area": ("eye_tracking_time", np.zeros(n)),
        }
    )
    got = behavior.eye_tracking(wrong)
    np.testing.assert_array_equal(got["likely_blink"], want["likely_blink"])
    np.testing.assert_array_equal(got["pupil_area"], want["pupil_area"])
    assert want["likely_blink"].any()  # the fixture has blinks to filter


def _copy(tmp_path, edit):
    import shutil

    import h5py

    path = tmp_path / "behavior_session_1000000101.nwb"
    shutil.copy(ref.files(ref.STEMS["vbo_behavior"])[0], path)
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def test_two_template_sets_are_refused_by_path(tmp_path):
    def edit(f):
        (name,) = list(f["stimulus/templates"])
        f.copy(f[f"stimulus/templates/{name}"], "stimulus/templates/other_set")

    path = _copy(tmp_path, edit)
    with pytest.raises(
        SourceFileError, match=r"behavior_session_1000000101\.nwb.*/stimulus/templates holds 2"
    ):
        vbo_behavior.read(path)


def test_running_series_of_another_length_is_refused_by_path(tmp_path):
    def edit(f):
        del f["acquisition/v_sig/data"]
        f["acquisition/v_sig/data"] = np.zeros(3)

    path = _copy(tmp_path, edit)
    with pytest.raises(
        SourceFileError, match=r"/acquisition/v_sig/data has shape \(3,\), expected"
    ):
        vbo_behavior.read(path)


def test_synthetic_behavior_session_converts_faithfully(tmp_path):
    """A second behavior-only file (the synthetic writer's, AllenSDK's layout, other values)
    converts with the fidelity check and serves AllenSDK's tables."""
    from abo_lake import jobs
    from abo_lake.synthetic import vbo_behavior as writer

    (path,) = writer.write(tmp_path / "src", scale="tiny", seed=3)
    assert vbo_behavior.sniff(path)
    result = jobs.convert_file(str(path), str(tmp_path / "lake"))
    assert result.error == ""
    assert result.format == "vbo-behavior"
    ((dataset_path, _),) = result.datasets.items()
    assert dataset_path.startswith("behavior/session/")
    (ds,) = vbo_behavior.read(path).values()
    table = ds.ophys.stimulus_presentations
    assert table.index.name == "stimulus_presentations_id"
    assert table["is_change"].dtype == bool
    assert table["is_change"].any()
    assert (table.loc[table["is_change"], "flashes_since_change"] == 0).all()


@pytest.mark.parametrize("key", KEYS)
def test_stored_variables_carry_units(served, key):
    ds = served(key)
    want = {
        "running_speed_time": "s",
        "running_speed.speed": "cm/s",
        "running_speed.speed_unfiltered": "cm/s",
        "running_speed.v_sig": "V",
        "rewards.volume": "mL",
        "rewards.timestamps": "s",
        "licks.timestamps": "s",
        "stimulus_timestamps": "s",
        "trials.change_time": "s",
        "trials.reward_volume": "mL",
        "trials.trial_length": "s",
        "stimulus_presentations.start_time": "s",
        "stimulus_presentations.duration": "s",
    }
    if key == "vbo_ophys":
        want.update({"eye_tracking_time": "s", "eye_tracking.pupil_center_x": "pixels"})
    assert {k: ds[k].attrs.get("units") for k in want} == want
