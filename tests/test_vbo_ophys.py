"""Tests of the VBO ophys synthetic writer and the VBO ophys NWB reader."""

from __future__ import annotations

import csv
import importlib.resources
import json
import pickle
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest

from abo_lake import schema
from abo_lake.errors import SourceFileError
from abo_lake.sources import vbo_ophys as reader
from abo_lake.synthetic import vbo_ophys as writer
from abo_lake.writer import cell_major_layout

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED, N_EXP = 0, 4  # rows 0-2 are Mesoscope (11 Hz), row 3 is a passive CAM2P.4 (31 Hz) session
TRACES = {
    "dff": "processing/ophys/dff/traces/data",
    "corrected_fluorescence": "processing/ophys/corrected_fluorescence/traces/data",
    "neuropil_fluorescence": "processing/ophys/neuropil_trace/traces/data",
    "demixed_fluorescence": "processing/ophys/demixed_trace/traces/data",
    "events": "processing/ophys/event_detection/data",
}
EVENT_PATHS = {f"processing/ophys/event_detection/{k}" for k in ("data", "lambdas", "noise_stds")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return writer.write(tmp_path_factory.mktemp("v1"), seed=SEED, n_experiments=N_EXP)


@pytest.fixture(scope="module")
def files_again(tmp_path_factory):
    return writer.write(tmp_path_factory.mktemp("v1b"), seed=SEED, n_experiments=N_EXP)


@pytest.fixture(scope="module")
def files_v2(tmp_path_factory):
    return writer.write(
        tmp_path_factory.mktemp("v2"), seed=SEED, n_experiments=N_EXP, event_detection_version=2
    )


@pytest.fixture(scope="module")
def datasets(files):
    out = []
    for path in files:
        (item,) = reader.read(path).items()
        out.append(item)
    return out


@pytest.fixture(scope="module")
def truth():
    return writer.ground_truth(SEED, n_experiments=N_EXP)


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.dtype.names and any(obj.dtype[n].kind == "O" for n in obj.dtype.names):
            # compound rows holding object references (a timeseries column): compare the
            # referenced paths, not the reference bytes (which are file addresses)
            out[name] = np.array(
                [
                    tuple(f[v].name if isinstance(v, h5py.Reference) else v for v in row)
                    for row in obj[()].tolist()
                ],
                dtype=object,
            )
        elif obj.dtype.kind != "O" or h5py.check_string_dtype(obj.dtype) is not None:
            out[name] = obj.asstr()[()] if obj.dtype.kind == "O" else obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return a.shape == b.shape and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_writer_names_files_by_experiment_id_and_keeps_them_small(files, truth):
    assert [p.name for p in files] == [
        f"behavior_ophys_experiment_{t['ophys_experiment_id']}.nwb" for t in truth
    ]
    assert all(p.stat().st_size < 8e6 for p in files)


def test_read_key_kind_and_schema(datasets, truth):
    for (key, ds), gt in zip(datasets, truth):
        assert key == f"ophys/experiment/{gt['ophys_experiment_id']}"
        assert ds.attrs["abo_lake_kind"] == "ophys_experiment"
        assert schema.validate(ds, "ophys_experiment") is ds
        json.dumps(ds.attrs)  # attrs must be JSON-serialisable


def test_traces_equal_hdf5_and_are_lazy(files, datasets):
    for path, (_, ds) in zip(files, datasets):
        with h5py.File(path, "r") as f:
            n_t, n = f[TRACES["dff"]].shape
            assert ds.sizes["time"] == n_t
            assert ds.sizes["cell_specimen_id"] == n
            for name, h5path in TRACES.items():
                assert isinstance(ds[name].data, da.Array)
                assert ds[name].dims == ("cell_specimen_id", "time")
                assert ds[name].dtype == np.float64
                np.testing.assert_array_equal(ds[name].values, f[h5path][()].T)
                # one chunk per cell (its whole trace), packed ~4 MB (issue 18)
                assert ds[name].encoding["chunks"] == (1, n_t)
                assert ds[name].encoding == {**ds[name].encoding, **cell_major_layout((n, n_t), 8)}
            np.testing.assert_array_equal(
                ds["time"].values, f["processing/ophys/dff/traces/timestamps"][()]
            )
            mask = f["processing/ophys/image_segmentation/cell_specimen_table/image_mask"][()]
            assert ds.roi_mask.dtype == bool
            assert ds.roi_mask.dims == ("cell_specimen_id", "y", "x")
            np.testing.assert_array_equal(ds.roi_mask.values, mask)
            ed = f["processing/ophys/event_detection"]
            np.testing.assert_array_equal(ds.event_lambda.values, ed["lambdas"][()])
            np.testing.assert_array_equal(ds.event_noise_std.values, ed["noise_stds"][()])
            np.testing.assert_array_equal(
                ds.max_projection.values, f["processing/ophys/images/max_projection"][()]
            )
            np.testing.assert_array_equal(
                ds.average_projection.values, f["processing/ophys/images/average_image"][()]
            )
            np.testing.assert_array_equal(
                ds["motion_correction.x"].values,
                f["processing/ophys/ophys_motion_correction_x/data"][()],
            )
    pickle.loads(pickle.dumps(datasets[0][1]))  # picklable for dask.distributed


def test_cell_table_and_unmatched_rois(files, datasets, truth):
    for path, (_, ds), gt in zip(files, datasets, truth):
        np.testing.assert_array_equal(ds.cell_roi_id.values, gt["cell_roi_id"])
        valid = np.array(gt["valid_roi"])
        np.testing.assert_array_equal(ds.valid_roi.values, valid)
        specimen = ds.cell_specimen_id.values
        np.testing.assert_array_equal(specimen[valid], np.array(gt["cell_specimen_id"])[valid])
        np.testing.assert_array_equal(specimen[~valid], -ds.cell_roi_id.values[~valid])
        assert len(np.unique(specimen)) == len(specimen)
        with h5py.File(path, "r") as f:
            table = f["processing/ophys/image_segmentation/cell_specimen_table"]
            np.testing.assert_array_equal(ds.roi_x.values, table["x"][()])
            np.testing.assert_array_equal(ds.height.values, table["height"][()])
        # the bounding box encloses each mask
        for i in range(ds.sizes["cell_specimen_id"]):
            ys, xs = np.nonzero(ds.roi_mask.values[i])
            assert xs.min() == ds.roi_x.values[i]
            assert ys.min() == ds.roi_y.values[i]
            assert xs.max() - xs.min() + 1 == ds.width.values[i]


def test_metadata_attrs_come_from_the_vbo_table(datasets):
    data = importlib.resources.files("abo_lake.synthetic") / "data"
    with (data / "vbo_ophys_experiments_sample.csv").open(encoding="utf-8") as fh:
        rows = {int(r["ophys_experiment_id"]): r for r in csv.DictReader(fh)}
    for _, ds in datasets:
        row = rows[ds.attrs["ophys_experiment_id"]]
        for key in (
            "ophys_session_id",
            "behavior_session_id",
            "ophys_container_id",
            "imaging_depth",
        ):
            assert ds.attrs[key] == int(row[key])
        for key in (
            "targeted_structure",
            "cre_line",
            "reporter_line",
            "session_type",
            "equipment_name",
            "project_code",
            "indicator",
        ):
            assert ds.attrs[key] == row[key]
        rate = 11.0 if row["equipment_name"] == "MESO.1" else 31.0
        assert ds.attrs["ophys_frame_rate"] == rate
        assert np.median(np.diff(ds.time.values)) == pytest.approx(1 / rate, rel=1e-3)
        assert ds.attrs["field_of_view_width"] == ds.sizes["x"] == 512
        assert ds.x.attrs["units"] == "um"
        assert ds.x.values[-1] < 400.0


def test_behavior_tables_equal_hdf5(files, datasets):
    path, (_, ds) = files[0], datasets[0]
    with h5py.File(path, "r") as f:
        # AllenSDK's tables: one per stimulus (image set, spontaneous, natural_movie_one)
        tables = sorted(k for k in f["intervals"] if k.endswith("_presentations"))
        assert tables[1:] == ["natural_movie_one_presentations", "spontaneous_presentations"]
        table = tables[0]
        sp = f[f"intervals/{table}"]
        assert table == f"{sp['stimulus_name'].asstr()[0]}_presentations"  # AllenSDK's naming
        assert "stimulus_presentations.tags" not in ds  # left to the raw copy
        assert "stimulus_presentations.timeseries" not in ds
        name = table[: -len("_presentations")]
        images = ds["stimulus_presentations.stimulus_name"].values == name
        np.testing.assert_array_equal(
            ds["stimulus_presentations.start_time"].values[images], sp["start_time"][()]
        )
        assert ds["stimulus_presentations.image_name"].dtype.kind == "U"
        assert list(ds["stimulus_presentations.image_name"].values[images]) == list(
            sp["image_name"].asstr()[()]
        )
        tr = f["intervals/trials"]
        np.testing.assert_array_equal(ds["trials.lick_times"].values, tr["lick_times"][()])
        np.testing.assert_array_equal(
            ds["trials.lick_times_index"].values, tr["lick_times_index"][()]
        )
        assert ds["trials.lick_times"].dims == ("trials.lick",)
        np.testing.assert_array_equal(
            ds["licks.timestamps"].values, f["processing/licking/licks/timestamps"][()]
        )
        np.testing.assert_array_equal(
            ds["rewards.volume"].values, f["processing/rewards/volume/data"][()]
        )
        np.testing.assert_array_equal(
            ds["running_speed.speed"].values, f["processing/running/speed/data"][()]
        )
        np.testing.assert_array_equal(
            ds["eye_tracking.pupil_area"].values,
            f["acquisition/EyeTracking/pupil_tracking/area"][()],
        )
    assert ds["eye_tracking.pupil_center_x"].dims == ("eye_tracking_time",)
    assert ds["eye_tracking.likely_blink"].dtype == bool
    # blinks are NaN in area but not in area_raw
    blink = ds["eye_tracking.likely_blink"].values
    assert blink.any()
    assert np.isnan(ds["eye_tracking.pupil_area"].values[blink]).all()
    assert not np.isnan(ds["eye_tracking.pupil_area_raw"].values).any()


_NULLABLE = ("is_change", "omitted", "is_image_novel")


def test_change_detection_semantics(datasets, truth):
    for (_, ds), gt in zip(datasets, truth):
        sp = {k.split(".", 1)[1]: ds[k].values for k in ds if k.startswith("stimulus_pres")}
        # the change detection block (AllenSDK's sessions also have gray screen and a movie)
        block = np.char.startswith(sp["stimulus_block_name"].astype(str), "change_detection")
        sp = {k: v[block].astype(bool) if k in _NULLABLE else v[block] for k, v in sp.items()}
        assert np.allclose(np.diff(sp["start_time"]), 0.75, atol=0.002)
        assert np.allclose(sp["duration"], 0.25, atol=0.002)
        assert np.all(np.diff(sp["start_frame"]) == 45)
        assert np.array_equal(sp["image_name"] == "omitted", sp["omitted"])
        assert np.array_equal(sp["image_index"] == 8, sp["omitted"])
        assert 0.01 < sp["omitted"].mean() < 0.1
        assert not (sp["omitted"] & sp["is_change"]).any()
        assert (sp["flashes_since_change"][sp["is_change"]] == 0).all()
        assert set(np.unique(sp["image_name"][~sp["omitted"]])) == set(gt["image_names"])
        tr = {k.split(".", 1)[1]: ds[k].values for k in ds if k.startswith("trials.")}
        go = tr["go"]
        change_starts = sp["start_time"][sp["is_change"]]
        assert np.allclose(np.sort(tr["change_time"][go]), change_starts[: go.sum()])
        assert np.array_equal(tr["hit"] | tr["miss"], go)
        assert not (tr["go"] & tr["catch"]).any()
        if (sp["stimulus_block_name"] == "change_detection_passive").all():
            assert not tr["hit"].any()
            assert ds.sizes["reward"] == 0
        else:
            assert np.isclose(tr["reward_volume"].sum(), ds["rewards.volume"].values.sum())


def test_events_are_sparse_nonnegative_transients(datasets):
    for _, ds in datasets:
        events = ds.events.values
        assert (events >= 0).all()
        assert 0 < (events > 0).mean() < 0.1
        # dF/F rises after events: mean dF/F 0.3 s after an event beats the overall mean
        lag = round(0.3 * ds.attrs["ophys_frame_rate"])
        cells, frames = np.nonzero(events[:, :-lag] > 0)
        after = ds.dff.values[cells, frames + lag].mean()
        assert after > ds.dff.values.mean() + 0.05


def test_tuning_is_recoverable(datasets, truth):
    hits, total = 0, 0
    for (_, ds), gt in zip(datasets, truth):
        dff, t = ds.dff.values, ds.time.values
        starts = ds["stimulus_presentations.start_time"].values
        names = ds["stimulus_presentations.image_name"].values
        resp = np.array(
            [
                dff[:, (t >= s) & (t < s + 0.5)].mean(1) - dff[:, (t >= s - 0.25) & (t < s)].mean(1)
                for s in starts
            ]
        )
        mean = np.array([resp[names == im].mean(0) for im in gt["image_names"]]).T
        best = np.array(gt["image_names"])[mean.argmax(1)]
        for pred, want, responsive in zip(best, gt["preferred_image_name"], gt["image_responsive"]):
            if responsive:
                hits, total = hits + (pred == want), total + 1
        omission = np.array(gt["omission_responsive"])
        if omission.any() and (~omission).any():
            om = resp[names == "omitted"].mean(0)
            assert om[omission].mean() > om[~omission].mean()
    assert total >= 10
    assert hits / total >= 0.8


def test_ground_truth_matches_files(datasets, truth):
    for (_, ds), gt in zip(datasets, truth):
        assert ds.attrs["ophys_experiment_id"] == gt["ophys_experiment_id"]
        assert len(gt["preferred_image_name"]) == ds.sizes["cell_specimen_id"]


def test_same_seed_gives_identical_arrays(files, files_again):
    for a, b in zip(files, files_again):
        da_, db = _datasets(a), _datasets(b)
        assert da_.keys() == db.keys()
        different = [k for k in da_ if not _same(da_[k], db[k])]
        assert different == []


def test_event_detection_version_2_changes_only_events(files, files_v2):
    for a, b in zip(files, files_v2):
        da_, db = _datasets(a), _datasets(b)
        assert da_.keys() == db.keys()
        different = {k for k in da_ if not _same(da_[k], db[k])}
        assert different == EVENT_PATHS
        (ds1,), (ds2,) = reader.read(a).values(), reader.read(b).values()
        assert (ds2.events.values > 0).sum() < (ds1.events.values > 0).sum()


def test_nwbinspector_finds_no_errors(files):
    """One file of each layout: a Mesoscope active session (rows 0-2 share it) and the
    passive CAM2P.4 one."""
    from nwbinspector import Importance, inspect_nwbfile

    bad = {Importance.CRITICAL, Importance.PYNWB_VALIDATION, Importance.ERROR}
    for path in (files[0], files[3]):
        messages = [
            m
            for m in inspect_nwbfile(nwbfile_path=path)
            if m is not None and m.importance in bad and not _allensdk_layout(m)
        ]
        assert messages == [], [m.message for m in messages]


def _allensdk_layout(message) -> bool:
    """What the inspector reports on AllenSDK's own layout: (n, height, width) stimulus
    templates (also on AllenSDK's fixture) and EllipseEyeTracking without the ``spatial_series``
    its parent type EyeTracking requires (AllenSDK never sets it; validated against NWB 2.11)."""
    return (
        message.check_function_name == "check_data_orientation"
        and message.location.startswith("/stimulus/templates/")
    ) or (
        message.message == "missing data type SpatialSeries"
        and message.location.strip("/") == "acquisition/EyeTracking"
    )


def test_sniff(files, tmp_path):
    assert all(reader.sniff(p) for p in files)
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5")
    assert not reader.sniff(text)
    assert not reader.sniff(tmp_path / "missing.nwb")
    truncated = tmp_path / "truncated.nwb"
    truncated.write_bytes(files[0].read_bytes()[:50_000])
    assert not reader.sniff(truncated)
    for name in (
        "dandi_sub_anm00239123_ecephys_and_ogen.nwb",
        "brain_observatory_496908818_nwb1_truncated.nwb",
    ):
        if (SHARED / "nwb" / name).exists():
            assert not reader.sniff(SHARED / "nwb" / name)


class TestVboOphysErrors:
    def test_missing_file(self, tmp_path):
        with pytest.raises(SourceFileError, match="missing.nwb: no such file"):
            reader.read(tmp_path / "missing.nwb")

    def test_not_hdf5(self, tmp_path):
        path = tmp_path / "x.nwb"
        path.write_text("hello")
        with pytest.raises(SourceFileError, match=r"x\.nwb: not an HDF5 file"):
            reader.read(path)

    def test_truncated(self, files, tmp_path):
        path = tmp_path / "cut.nwb"
        path.write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 2])
        with pytest.raises(SourceFileError, match=r"cut\.nwb: cannot open as HDF5.*truncated"):
            reader.read(path)

    def test_other_nwb_modality(self, tmp_path):
        from pynwb import NWBHDF5IO
        from pynwb.testing.mock.file import mock_NWBFile

        path = tmp_path / "other.nwb"
        with NWBHDF5IO(str(path), "w") as io:
            io.write(mock_NWBFile())
        with pytest.raises(SourceFileError, match=r"other\.nwb: not a Visual Behavior ophys"):
            reader.read(path)

    def test_real_ecephys_nwb(self):
        path = SHARED / "nwb" / "dandi_sub_anm00239123_ecephys_and_ogen.nwb"
        if not path.exists():
            pytest.skip(f"{path} not present (needs /work/shared/data)")
        with pytest.raises(SourceFileError, match="expected /processing/ophys/dff/traces/data"):
            reader.read(path)

    def test_writer_rejects_bad_options(self, tmp_path):
        with pytest.raises(ValueError, match="unknown scale"):
            writer.write(tmp_path, scale="huge")
        with pytest.raises(ValueError, match="event_detection_version"):
            writer.write(tmp_path, event_detection_version=3)
        with pytest.raises(ValueError, match="n_experiments"):
            writer.write(tmp_path, n_experiments=0)


def test_several_presentation_tables_are_united_and_convert_faithfully(files, tmp_path):
    """Sessions with more than one stimulus have one ``<stimulus>_presentations`` table each,
    with different columns: the reader unites them in start-time order (text columns a
    table lacks are "", numbers NaN, and name that table in ``absent_in``), and a conversion
    passes the fidelity check. pynwb
    ``tags`` (here also on the trials) go to the raw copy."""
    import shutil

    from pynwb import NWBHDF5IO
    from pynwb.epoch import TimeIntervals

    from abo_lake import jobs, ophys

    path = tmp_path / Path(files[0]).name
    shutil.copy(files[0], path)
    with h5py.File(path, "a") as f:  # keep the image flashes only, then add our own tables
        for name in ("spontaneous_presentations", "natural_movie_one_presentations"):
            del f[f"intervals/{name}"]
    with NWBHDF5IO(path, "a") as io:
        nwb = io.read()
        (flashes,) = [t for t in nwb.intervals.values() if t.name.endswith("_presentations")]
        first, last = float(flashes.start_time[0]), float(flashes.stop_time[-1])
        n, n_change = len(flashes), int(np.sum(flashes["is_change"].data[:]))
        first_image = int(flashes["image_index"].data[0])
        gray = TimeIntervals(name="spontaneous_presentations", description="gray screen")
        # image_index: numbers in the flashes' table, text here (as a parameter can be)
        for column in ("stimulus_name", "stimulus_block", "duration", "image_index"):
            gray.add_column(column, column)
        frames = nwb.processing["stimulus"]["timestamps"]
        for i, (start, stop) in enumerate([(0.5, first), (last, last + 2.0)]):
            gray.add_interval(
                start_time=start,
                stop_time=stop,
                stimulus_name="spontaneous",
                stimulus_block=2 * i + 1,
                duration=stop - start,
                image_index="gray",
                tags=["spontaneous"],
                timeseries=[frames],
            )
        nwb.add_time_intervals(gray)
        n_trials = len(nwb.trials)
        nwb.trials.add_column("tags", "tags", data=[["go"]] * n_trials, index=True)
        io.write(nwb)

    ((_, ds),) = reader.read(path).items()
    sp = {k.split(".", 1)[1]: ds[k].values for k in ds if k.startswith("stimulus_presentations.")}
    assert ds.sizes["stimulus_presentation_id"] == n + 2
    assert np.all(np.diff(sp["start_time"]) >= 0)  # one table in start-time order
    assert list(sp["stimulus_name"][[0, -1]]) == ["spontaneous", "spontaneous"]
    assert list(sp["image_name"][[0, -1]]) == ["", ""]
    assert ds["stimulus_presentations.image_name"].attrs["absent_in"] == ["spontaneous"]
    assert np.isnan(sp["is_change"][[0, -1]]).all()  # bool column NaN-padded, so float
    assert sp["is_change"][1:-1].sum() == n_change
    np.testing.assert_array_equal(sp["stimulus_block"][[0, -1]], [1, 3])
    assert list(sp["image_index"][:2]) == ["gray", str(first_image)]  # text wins
    assert "tags" not in "".join(ds.data_vars)
    assert "trials.start_time" in ds
    # analyses: the gray-screen rows' NaN is_change is no change
    changes = ophys.change_responses(ds, window=(-0.2, 0.2))
    assert changes.sizes["stimulus_presentation_id"] == n_change

    result = jobs.convert_file(str(path), str(tmp_path / "lake"))
    assert result.error == ""  # fidelity checked: every table's rows, raw tags/timeseries


@pytest.mark.parametrize(
    ("n_time", "n_rois", "dtype"),
    [(48_000, 300, "float64"), (140_000, 60, "float64"), (140_000, 500, "float32")],
)
def test_trace_chunks_serve_one_cell_and_one_window_at_realistic_sizes(
    tmp_path, n_time, n_rois, dtype
):
    """Realistic trace shapes (Mesoscope 11 Hz, CAM2P 31 Hz; chunks never written, so the file
    is tiny): stored chunks are 1-8 MB time-major blocks, balanced so that one cell over all
    time and all cells in a window each read a few chunks."""
    path = tmp_path / "traces.nwb"
    group = "processing/ophys/dff/traces"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            f"{group}/data", (n_time, n_rois), dtype=dtype, chunks=(4096, 32), compression="gzip"
        )
    with h5py.File(path, "r") as f:
        arr = reader._trace(path, f, group, n_rois, n_time)
    assert arr.shape == (n_rois, n_time)
    cells, frames = arr.chunks[0][0], arr.chunks[1][0]
    nbytes = cells * frames * arr.dtype.itemsize
    assert 2**20 <= nbytes <= 8 * 2**20
    one_cell = len(arr.chunks[1]) * nbytes  # bytes read for one cell over all time
    window = len(arr.chunks[0]) * nbytes  # for all cells in a window within one time chunk
    assert frames >= min(n_time, 8192)
    assert cells <= 64
    # both patterns read within ~40 MB, for a question of ~0.1-1 MB
    assert one_cell <= 40 * 2**20
    assert window <= 40 * 2**20


def test_allen_metadata_reach_the_release_table(tmp_path):
    """AllenSDK's own file (the shared fixture) keeps the ndx-aibs-behavior-ophys fields as
    *attributes* of ``general/metadata`` (OphysBehaviorMetadata), ``general/task_parameters``
    and ``general/subject`` (BehaviorSubject): the reader takes them under AllenSDK's names,
    the release table can search them and the conversion passes its fidelity check."""
    import allensdk_reference as ref

    from abo_lake import jobs, release_tables

    (path,) = ref.files(ref.STEMS["vbo_ophys"])
    ((_, ds),) = reader.read(path).items()
    a = ds.attrs
    with h5py.File(path, "r") as f:
        meta, subject = f["general/metadata"].attrs, f["general/subject"]
        genotype = subject["genotype"].asstr()[()]
        assert a["ophys_experiment_id"] == int(f["identifier"].asstr()[()])
        assert (a["imaging_depth"], a["session_type"]) == (
            meta["imaging_depth"],
            meta["session_type"],
        )
        assert a["equipment_name"] == meta["equipment_name"]
        assert a["ophys_container_id"] == meta["ophys_container_id"]
        assert a["driver_line"] == sorted(subject.attrs["driver_line"])
        assert a["reporter_line"] == subject.attrs["reporter_line"]
        assert a["mouse_id"] == subject["subject_id"].asstr()[()]
        task = f["general/task_parameters"].attrs
        assert a["task_parameters.response_window_sec"] == list(task["response_window_sec"])
    assert a["cre_line"] == genotype.split(";")[0].replace("/wt", "")
    assert not {"namespace", "neurodata_type", "object_id", "rig_name"} & set(a)
    json.dumps(a)

    result = jobs.convert_file(str(path), str(tmp_path / "lake"))
    assert result.error == ""  # the raw copy keeps the attributes, checked bit for bit
    table = release_tables.build_tables([result])["ophys_experiments"]
    row = table.loc[a["ophys_experiment_id"]]
    assert (row["imaging_depth"], row["session_type"], row["cre_line"]) == (
        a["imaging_depth"],
        a["session_type"],
        a["cre_line"],
    )


def test_durations_and_reward_volumes_carry_units(datasets):
    for _, ds in datasets:
        assert ds["stimulus_presentations.duration"].attrs["units"] == "s"
        if "trials.reward_volume" in ds:
            assert ds["trials.reward_volume"].attrs["units"] == "mL"
