"""Parity of the imaging side of a Visual Behavior 2P experiment with AllenSDK 2.16.2.

The fixture ``vbo_ophys_experiment_1000000001.nwb`` was written by AllenSDK's own writer; its
reference holds what ``BehaviorOphysExperiment.from_nwb_path`` returns (``tests/
allensdk_reference.py``). Each quantity is converted through the real job code (session
fixture ``allensdk_releases``), opened lazily from the release and read through ``.ophys``,
with AllenSDK's names. Stored values (traces, ids, masks, images, timestamps) must be equal
bit for bit; only ``filtered_events``, which both compute in floating point (AllenSDK with
``np.convolve``, the lake chunk-wise with ``scipy.signal.lfilter``), has a tolerance.
The behaviour side (trials, licks, stimulus presentations, eye tracking, ...) is tested
elsewhere.
"""

from __future__ import annotations

import shutil

import allensdk_reference as ref
import h5py
import numpy as np
import pandas as pd
import pytest

import abo_lake.accessors  # noqa: F401  (registers .ophys)
from abo_lake import ophys
from abo_lake.errors import SourceFileError
from abo_lake.sources import vbo_ophys

KEY = "vbo_ophys"
STEM = ref.STEMS[KEY]
#: AllenSDK's table -> the ``.ophys`` member serving it (AllenSDK's name unless noted).
TABLES = {
    "dff_traces": "dff_traces",
    "events": "events",
    "corrected_fluorescence_traces": "corrected_fluorescence_traces",
    "demixed_traces": "demixed_traces",
    # AllenSDK 2.16.2's exp.neuropil_traces returns the demixed traces (a bug, see
    # test_allensdk_neuropil_traces_returns_the_demixed_ones); the reference's
    # neuropil_traces_actual is exp._cell_specimens.neuropil_traces, what the lake serves
    "neuropil_traces_actual": "neuropil_traces",
    "cell_specimen_table": "cell_specimen_table",
    "motion_correction": "motion_correction",
}
ARRAYS = ("ophys_timestamps", "max_projection", "average_projection", "segmentation_mask_image")
SPACINGS = (
    "max_projection_spacing",
    "average_projection_spacing",
    "segmentation_mask_image_spacing",
)
#: Columns AllenSDK computes in floating point from stored values -> (rtol, atol).
COMPUTED = {("events", "filtered_events"): (1e-12, 1e-12)}


def _reference_names(what: str, wanted) -> list[str]:
    """``wanted`` as far as the reference has them (all of them when it is present)."""
    have = ref.names(STEM, what)
    return [n for n in wanted if n in have] if have else list(wanted)


@pytest.fixture(scope="module")
def exp(allensdk_releases):
    rel = allensdk_releases[KEY]
    (path,) = [p for p in rel.datasets() if p.startswith("ophys/experiment/")]
    return rel.open(path)


def _stack(values) -> np.ndarray:
    return np.stack([np.asarray(v) for v in values])


@pytest.mark.parametrize("name", _reference_names("tables", TABLES))
def test_table_matches_allensdk(exp, name):
    want = ref.table(STEM, name)
    info = ref.table_info(STEM, name)
    got = getattr(exp.ophys, TABLES[name])
    assert isinstance(got, pd.DataFrame)
    # index: name, dtype and values exactly
    assert got.index.name == info["index_name"]
    assert str(got.index.dtype) == info["index_dtype"]
    np.testing.assert_array_equal(got.index.to_numpy(), want.index.to_numpy())
    # columns by name (AllenSDK's order is hash-seed dependent, layout note 20)
    assert set(got.columns) == set(info["columns"])
    for column, col_info in info["columns"].items():
        assert str(got[column].dtype) == col_info["dtype"], column
        if col_info["encoding"].startswith("stacked"):
            g, w = _stack(got[column]), _stack(want[column])
            assert g.dtype == w.dtype, column
        else:
            g, w = got[column].to_numpy(), want[column].to_numpy()
        assert g.shape == w.shape, column
        if (name, column) in COMPUTED:
            rtol, atol = COMPUTED[(name, column)]
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=column)
        else:
            np.testing.assert_array_equal(g, w, err_msg=column)


def test_allensdk_neuropil_traces_returns_the_demixed_ones(exp):
    """AllenSDK 2.16.2's bug, kept as a note: ``exp.neuropil_traces`` is the demixed table
    (column ``demixed_trace``). The lake serves the real neuropil traces (tested above
    against ``neuropil_traces_actual``), so AllenSDK code reading ``neuropil_traces`` gets
    the real ones, under the right column name."""
    buggy = ref.table(STEM, "neuropil_traces")
    assert set(buggy.columns) == {"cell_roi_id", "demixed_trace"}
    np.testing.assert_array_equal(
        _stack(buggy["demixed_trace"]), _stack(exp.ophys.demixed_traces["demixed_trace"])
    )
    actual = _stack(ref.table(STEM, "neuropil_traces_actual")["neuropil_trace"])
    assert not np.array_equal(_stack(buggy["demixed_trace"]), actual)
    np.testing.assert_array_equal(_stack(exp.ophys.neuropil_traces["neuropil_trace"]), actual)


@pytest.mark.parametrize("name", _reference_names("arrays", ARRAYS))
def test_array_matches_allensdk(exp, name):
    want = ref.array(STEM, name)
    got = np.asarray(getattr(exp.ophys, name))
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_stored_segmentation_mask_image_is_what_allensdk_computes(exp):
    """AllenSDK recomputes the image from the valid masks; the file's copy agrees."""
    np.testing.assert_array_equal(
        exp["segmentation_mask_image"].values, ref.array(STEM, "segmentation_mask_image")
    )


@pytest.mark.parametrize("name", _reference_names("values", SPACINGS))
def test_image_spacing_matches_allensdk(exp, name):
    image = getattr(exp.ophys, name.removesuffix("_spacing"))
    assert list(image.spacing) == ref.value(STEM, name)  # exact: resolution * 10, in mm
    assert image.unit == "mm"


def test_metadata_matches_allensdk(exp):
    want = ref.value(STEM, "metadata")
    got = exp.ophys.metadata
    assert set(got) == set(want)
    got = {**got, "date_of_acquisition": got["date_of_acquisition"].isoformat()}
    for key, value in want.items():
        assert got[key] == value, key
        assert type(got[key]) is type(value), key  # mouse_id is text, ids int, rates float


def test_frame_rate_falls_back_to_the_file_rate_with_one_timestamp(exp):
    assert exp.ophys.frame_rate == pytest.approx(1 / np.median(np.diff(exp["time"].values)))
    one = exp.isel(time=[0])
    assert one.ophys.frame_rate == ref.value(STEM, "metadata")["ophys_frame_rate"]
    bare = one.copy()
    bare.attrs = {k: v for k, v in one.attrs.items() if k != "ophys_frame_rate"}
    with pytest.raises(ValueError, match="ophys_frame_rate"):
        ophys.frame_rate(bare)


def test_filtered_events_use_the_file_frame_rate(exp):
    """AllenSDK filters with the imaging plane's rate (31.0 Hz), not the measured one."""
    assert exp.attrs["ophys_frame_rate"] == 31.0
    assert "31 Hz" in exp.ophys.filtered_events().attrs["filter"]


def test_r_as_a_dataset_is_a_source_file_error(tmp_path):
    """A file whose ``corrected_fluorescence/r`` is not AllenSDK's RoiResponseSeries group."""
    path = tmp_path / "odd.nwb"
    shutil.copy(ref.files(STEM)[0], path)
    group = "processing/ophys/corrected_fluorescence"
    with h5py.File(path, "r+") as f:
        values = f[f"{group}/r/data"][()]
        del f[f"{group}/r"]
        f[f"{group}/r"] = values
    with pytest.raises(SourceFileError, match=r"odd\.nwb.*corrected_fluorescence/r.*group"):
        vbo_ophys.read(path)


def _edited_copy(tmp_path, edit) -> object:
    """The fixture's ophys Dataset read from a copy changed by ``edit(h5py.File)``."""
    path = tmp_path / "edited.nwb"
    shutil.copy(ref.files(STEM)[0], path)
    with h5py.File(path, "r+") as f:
        edit(f)
    ((_, ds),) = vbo_ophys.read(path).items()
    return ds


_CELLS = "processing/ophys/image_segmentation/cell_specimen_table"


def test_unmatched_roi_is_minus_one_in_allensdk_tables(tmp_path):
    """-1 (AllenSDK: None) stays -1 in the AllenSDK-shaped index; the lake's dim holds
    ``-cell_roi_id`` so that it stays unique."""

    def edit(f):
        f[f"{_CELLS}/cell_specimen_id"][1] = -1

    ds = _edited_copy(tmp_path, edit)
    roi = ds["cell_roi_id"].values
    assert ds["cell_specimen_id"].values[1] == -roi[1]
    for table in (ds.ophys.dff_traces, ds.ophys.cell_specimen_table, ds.ophys.events):
        assert table.index[1] == -1
        assert table.index.dtype == np.int64
        assert table["cell_roi_id"].iloc[1] == roi[1]


def test_invalid_rois_are_left_out_as_allensdk_does(tmp_path):
    """AllenSDK's default ``exclude_invalid_rois=True``: the lake keeps every ROI, the
    AllenSDK-shaped tables and the segmentation image hold the valid ones."""

    def edit(f):
        f[f"{_CELLS}/valid_roi"][2] = False

    ds = _edited_copy(tmp_path, edit)
    assert ds.sizes["cell_specimen_id"] == 10
    dropped = ds["cell_specimen_id"].values[2]
    for name in ("dff_traces", "corrected_fluorescence_traces", "events", "cell_specimen_table"):
        table = getattr(ds.ophys, name)
        assert len(table) == 9, name
        assert dropped not in table.index, name
    masks = ds["roi_mask"].values
    np.testing.assert_array_equal(
        ds.ophys.segmentation_mask_image.values, np.delete(masks, 2, axis=0).sum(axis=0)
    )


def test_events_rows_are_the_cells_with_detected_events(tmp_path):
    """``event_detection/rois`` may name fewer cells than the cell table (AllenSDK's
    ``raise_if_rois_missing=False``): AllenSDK's events table has only those rows."""
    group = "processing/ophys/event_detection"

    def edit(f):
        keep = [0, 1, 2, 4, 5, 6, 7, 8, 9]
        for key in ("data", "lambdas", "noise_stds", "rois"):
            values = f[f"{group}/{key}"][()]
            values = values[:, keep] if key == "data" else values[keep]
            attrs = dict(f[f"{group}/{key}"].attrs)
            del f[f"{group}/{key}"]
            f[f"{group}/{key}"] = values
            f[f"{group}/{key}"].attrs.update(attrs)

    ds = _edited_copy(tmp_path, edit)
    want = ref.table(STEM, "events").drop(index=ref.table(STEM, "events").index[3])
    got = ds.ophys.events
    np.testing.assert_array_equal(got.index, want.index)
    np.testing.assert_array_equal(_stack(got["events"]), _stack(want["events"]))
    np.testing.assert_array_equal(got["lambda"], want["lambda"])
    assert np.isnan(ds["events"].values[3]).all()  # the lake pads the missing cell with NaN


def test_legacy_getters_are_allensdks(exp):
    """``get_cell_specimen_ids``, ``get_cell_specimen_indices``, ``get_dff_traces`` and
    ``get_segmentation_mask_image``, as AllenSDK derives them from its tables."""
    dff = ref.table(STEM, "dff_traces")
    ids = exp.ophys.get_cell_specimen_ids()
    np.testing.assert_array_equal(ids, ref.table(STEM, "cell_specimen_table").index)
    assert exp.ophys.get_cell_specimen_indices(ids[[3, 1]]) == [3, 1]
    t, traces = exp.ophys.get_dff_traces()
    np.testing.assert_array_equal(t, ref.array(STEM, "ophys_timestamps"))
    np.testing.assert_array_equal(traces, _stack(dff["dff"]))
    _, two = exp.ophys.get_dff_traces([ids[4], ids[2]])  # in the table's order, as AllenSDK
    np.testing.assert_array_equal(two, _stack(dff["dff"])[[2, 4]])
    with pytest.raises(KeyError, match="no valid cell_specimen_id"):
        exp.ophys.get_dff_traces([12345])
    np.testing.assert_array_equal(
        exp.ophys.get_segmentation_mask_image(), ref.array(STEM, "segmentation_mask_image")
    )
    meta = ref.value(STEM, "metadata")
    assert exp.ophys.ophys_experiment_id == meta["ophys_experiment_id"]
    assert exp.ophys.ophys_session_id == meta["ophys_session_id"]
