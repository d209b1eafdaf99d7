"""The ``behavior_sessions`` release table against Allen's own behavior session table."""

from __future__ import annotations

import allensdk_reference as ref
import pandas as pd
import pytest

from abo_lake import behavior_sessions, jobs, release_tables

DERIVED = [
    "session_number",
    "image_set",
    "behavior_type",
    "prior_exposures_to_session_type",
    "prior_exposures_to_image_set",
    "experience_level",
]


@pytest.fixture(scope="module")
def allen_table(shared_data):
    return pd.read_csv(
        shared_data / "vbo_metadata" / "behavior_session_table.csv",
        index_col="behavior_session_id",
    )


@pytest.fixture(scope="module")
def derived(allen_table):
    """The lake's derivation from what each session's file says (mouse, type, date)."""
    given = allen_table[["mouse_id", "session_type", "date_of_acquisition"]]
    return behavior_sessions.behavior_sessions(given, None).reindex(allen_table.index)


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    a, b = a.astype(object), b.astype(object)
    return (a.isna() & b.isna()) | (a.where(a.notna(), None) == b.where(b.notna(), None))


@pytest.mark.parametrize("column", DERIVED)
def test_derived_columns_equal_allens_release_table(column, derived, allen_table):
    """All 4,787 sessions of the Visual Behavior release: AllenSDK's values exactly."""
    same = _same(derived[column], allen_table[column])
    assert same.all(), (
        f"{(~same).sum()} of {len(same)} differ, e.g. "
        f"{derived.loc[~same, column].head(3).tolist()} vs "
        f"{allen_table.loc[~same, column].head(3).tolist()}"
    )


def test_prior_exposures_to_omissions_differ_only_after_habituation_with_omissions(
    derived, allen_table
):
    """AllenSDK asks mtrain whether a habituation session omitted flashes; the lake reads it
    from the file's task parameters (absent from the CSV here, so taken as none)."""
    same = _same(
        derived["prior_exposures_to_omissions"], allen_table["prior_exposures_to_omissions"]
    )
    habituated = allen_table["session_type"].str.lower().str.contains("habituation")
    mice_with_habituation = set(allen_table.loc[habituated, "mouse_id"])
    assert set(allen_table.loc[~same, "mouse_id"]) <= mice_with_habituation
    assert same.sum() >= 0.95 * len(same)
    # the lake counts a habituation session with omitted flashes as AllenSDK's rule does
    one_mouse = pd.DataFrame(
        {
            "mouse_id": [1, 1, 1],
            "session_type": ["OPHYS_0_images_A_habituation"] * 2 + ["OPHYS_1_images_A"],
            "date_of_acquisition": ["2020-01-01", "2020-01-02", "2020-01-03"],
            "task_parameters.omitted_flash_fraction": [0.05, 0.0, 0.05],
        },
        index=pd.Index([10, 11, 12], name="behavior_session_id"),
    )
    table = behavior_sessions.behavior_sessions(one_mouse, None)
    assert table["prior_exposures_to_omissions"].tolist() == [0, 1, 1]


def test_columns_are_allens_in_allens_order(derived, allen_table):
    assert list(derived.columns[: len(allen_table.columns)]) == list(allen_table.columns)


@pytest.fixture(scope="module")
def vbo_result(tmp_path_factory):
    (path,) = ref.files(ref.STEMS["vbo_ophys"])
    result = jobs.convert_file(str(path), str(tmp_path_factory.mktemp("lake")))
    assert result.error == ""
    return result


def test_an_imaging_session_is_a_row_with_its_experiments(vbo_result):
    table = release_tables.build_tables([vbo_result])["behavior_sessions"]
    meta = ref.value(ref.STEMS["vbo_ophys"], "metadata")
    row = table.loc[meta["behavior_session_id"]]
    assert row["ophys_session_id"] == meta["ophys_session_id"]
    assert row["ophys_experiment_id"] == f"[{meta['ophys_experiment_id']}]"
    assert row["ophys_container_id"] == f"[{meta['ophys_container_id']}]"
    assert row["mouse_id"] == int(meta["mouse_id"])
    assert row["driver_line"] == str(meta["driver_line"])  # a list as text, as Allen's CSV
    assert (row["session_number"], row["image_set"], row["experience_level"]) == (
        4,
        "images_B",
        "Novel 1",
    )


def test_a_project_csv_overrides_the_release_only_history(vbo_result, tmp_path):
    """Counted over the release, the history is a lower bound; Allen's CSV knows it all."""
    meta = ref.value(ref.STEMS["vbo_ophys"], "metadata")
    csv = tmp_path / "behavior_session_table.csv"
    pd.DataFrame(
        {
            "behavior_session_id": [meta["behavior_session_id"], 5],
            "prior_exposures_to_image_set": [7, 0],
            "experience_level": ["Novel >1", "Training"],
            "session_type": ["ignored: the file says it", "TRAINING_1_gratings"],
        }
    ).to_csv(csv, index=False)
    notes: list[str] = []
    table = release_tables.build_tables([vbo_result], [csv], notes=notes)["behavior_sessions"]
    row = table.loc[meta["behavior_session_id"]]
    assert (row["prior_exposures_to_image_set"], row["experience_level"]) == (7, "Novel >1")
    assert row["session_type"] == meta["session_type"]
    assert "joined behavior_sessions by behavior_session_id (1 of 2 rows matched)" in notes[0]
