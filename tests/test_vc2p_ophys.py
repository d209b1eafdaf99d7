"""Tests of the Visual Coding 2P (NWB 1.0.5) synthetic writer and reader."""

from __future__ import annotations

import fnmatch
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from abo_lake import schema
from abo_lake.errors import SourceFileError
from abo_lake.sources import vc2p_ophys as reader
from abo_lake.synthetic import vc2p_ophys as writer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = SHARED / "nwb" / "brain_observatory_496908818_nwb1_truncated.nwb"
NWB2 = SHARED / "nwb" / "dandi_sub_anm00239123_ecephys_and_ogen.nwb"
PIPE = "processing/brain_observatory_pipeline"


@pytest.fixture(scope="module")
def tiny_a(tmp_path_factory):
    (path,) = writer.write(tmp_path_factory.mktemp("vc2p_a"), scale="tiny", seed=3)
    return path


@pytest.fixture(scope="module")
def tiny_b(tmp_path_factory):
    (path,) = writer.write(
        tmp_path_factory.mktemp("vc2p_b"), scale="tiny", seed=4, session_type="three_session_B"
    )
    return path


@pytest.fixture(scope="module")
def ds_a(tiny_a):
    (ds,) = reader.read(tiny_a).values()
    return ds


@pytest.fixture
def real_file():
    if not REAL.is_file():
        pytest.skip(f"reference data folder {SHARED} is absent")
    return REAL


def _presentations(ds, name):
    sel = ds["stimulus_presentations.stimulus_name"].values == name
    return {
        k.split(".", 1)[1]: ds[k].values[sel]
        for k in ds.data_vars
        if k.startswith("stimulus_presentations.")
    }


class TestWriter:
    def test_layout_follows_real_file(self, tiny_a):
        with h5py.File(tiny_a, "r") as f:
            assert f["nwb_version"][()] == b"NWB-1.0.5"
            assert f["general/session_type"][()] == b"three_session_A"
            dff = f[f"{PIPE}/DfOverF/imaging_plane_1/data"]
            assert dff.dtype == np.float32
            assert dff.shape[0] == 10  # cells first
            assert dff.shape[1] == len(f[f"{PIPE}/DfOverF/imaging_plane_1/timestamps"])
            plane = f[f"{PIPE}/ImageSegmentation/imaging_plane_1"]
            assert plane["roi_0000/img_mask"].shape == (512, 512)
            assert plane["roi_0000/img_mask"].dtype == np.float32
            dg = f["stimulus/presentation/drifting_gratings_stimulus"]
            assert [s.decode() for s in dg["features"][()]] == [
                "temporal_frequency",
                "orientation",
                "blank_sweep",
            ]
            assert dg["frame_duration"].shape == (dg["data"].shape[0], 2)
            assert set(f["stimulus/presentation"]) == {
                "drifting_gratings_stimulus",
                "natural_movie_one_stimulus",
                "natural_movie_three_stimulus",
                "spontaneous_stimulus",
            }
            assert f[f"{PIPE}/Fluorescence/imaging_plane_1/neuropil_traces"].shape == dff.shape

    def test_layout_matches_every_group_of_real_file(self, tiny_b, real_file):
        def names(path):
            out = set()
            with h5py.File(path, "r") as f:
                f.visit(lambda n: out.add(n) if "/roi_0" not in n else None)
            return out

        missing = names(real_file) - names(tiny_b)
        assert missing == set()

    def test_drifting_gratings_design(self, tiny_a):
        with h5py.File(tiny_a, "r") as f:
            g = f["stimulus/presentation/drifting_gratings_stimulus"]
            tf, ori, blank = g["data"][()].T
        gratings = blank == 0
        assert set(ori[gratings]) == set(np.arange(0.0, 360.0, 45.0))
        assert set(tf[gratings]) == {1.0, 2.0, 4.0, 8.0, 15.0}
        assert gratings.sum() == 8 * 5 * 3
        assert np.isnan(ori[~gratings]).all()
        assert (~gratings).sum() >= 1

    def test_deterministic(self, tiny_a, tmp_path):
        (again,) = writer.write(tmp_path, scale="tiny", seed=3)
        with h5py.File(tiny_a, "r") as f1, h5py.File(again, "r") as f2:
            arrays = []
            f1.visititems(lambda n, o: arrays.append(n) if isinstance(o, h5py.Dataset) else None)
            for name in arrays:
                assert np.array_equal(
                    f1[name][()], f2[name][()], equal_nan=f1[name].dtype.kind == "f"
                ), name
        (other,) = writer.write(tmp_path / "other", scale="tiny", seed=5)
        with h5py.File(tiny_a, "r") as f1, h5py.File(other, "r") as f2:
            key = f"{PIPE}/DfOverF/imaging_plane_1/data"
            assert not np.array_equal(f1[key][:, :100], f2[key][:, :100])

    def test_ground_truth(self, tiny_a):
        truth = writer.ground_truth(tiny_a)
        assert truth["session_type"] == "three_session_A"
        assert len(truth["cells"]) == 10
        for cell in truth["cells"]:
            assert cell["pref_direction"] in np.arange(0.0, 360.0, 45.0)
            assert 0 < cell["dsi_dg"] <= 1
            assert 0 < cell["osi_dg"] <= 1

    def test_bad_arguments(self, tmp_path):
        with pytest.raises(ValueError, match="unknown session_type"):
            writer.write(tmp_path, session_type="three_session_Z")
        with pytest.raises(ValueError, match="unknown scale"):
            writer.write(tmp_path, scale="huge")

    def test_session_c_and_multiple_experiments(self, tmp_path):
        paths = writer.write(tmp_path, seed=1, session_type="three_session_C", n_experiments=2)
        assert len(paths) == 2
        assert paths[0] != paths[1]
        (ds,) = reader.read(paths[1]).values()
        assert set(ds.attrs["stimulus_names"]) == {
            "locally_sparse_noise",
            "natural_movie_one",
            "natural_movie_two",
            "spontaneous",
        }


class TestReader:
    def test_schema_and_ids(self, ds_a, tiny_a):
        schema.validate(ds_a, "ophys_experiment")
        truth = writer.ground_truth(tiny_a)
        assert ds_a.attrs["abo_lake_kind"] == "ophys_experiment"
        assert ds_a.attrs["source_file"] == tiny_a.name
        assert ds_a.attrs["ophys_experiment_id"] == truth["ophys_experiment_id"]
        assert ds_a.attrs["session_type"] == "three_session_A"
        # AllenSDK's BrainObservatoryNwbDataSet.get_metadata keeps "/wt" (Visual Coding 2P)
        assert ds_a.attrs["cre_line"] == truth["metadata"]["cre_line"] + "/wt"
        assert ds_a.attrs["imaging_depth"] == truth["metadata"]["imaging_depth"]
        assert ds_a.cell_specimen_id.values.tolist() == [
            c["cell_specimen_id"] for c in truth["cells"]
        ]
        assert ds_a.cell_roi_id.values.tolist() == [c["cell_roi_id"] for c in truth["cells"]]
        assert 29.9 < ds_a.attrs["ophys_frame_rate"] < 30.1

    def test_values_equal_hdf5(self, ds_a, tiny_a):
        with h5py.File(tiny_a, "r") as f:
            fl = f[f"{PIPE}/Fluorescence/imaging_plane_1"]
            np.testing.assert_array_equal(
                ds_a.dff.values, f[f"{PIPE}/DfOverF/imaging_plane_1/data"][()]
            )
            np.testing.assert_array_equal(ds_a.time.values, fl["timestamps"][()])
            corrected = fl["data"][()] - fl["neuropil_traces"][()] * fl["r"][()][:, None]
            np.testing.assert_array_equal(ds_a.corrected_fluorescence.values, corrected)
            mask = f[f"{PIPE}/ImageSegmentation/imaging_plane_1/roi_0003/img_mask"][()] > 0
            np.testing.assert_array_equal(ds_a.roi_mask.values[3], mask)
            ref = f[f"{PIPE}/ImageSegmentation/imaging_plane_1/reference_images"]
            np.testing.assert_array_equal(
                ds_a.max_projection.values, ref["maximum_intensity_projection_image/data"][()]
            )
            run = f[f"{PIPE}/BehavioralTimeSeries/running_speed"]
            np.testing.assert_array_equal(ds_a["running_speed.speed"].values, run["data"][()])
            np.testing.assert_array_equal(ds_a.running_speed_time.values, run["timestamps"][()])
            xy = f[f"{PIPE}/MotionCorrection/2p_image_series/xy_translation/data"][()]
            np.testing.assert_array_equal(ds_a["motion_correction.y"].values, xy[:, 1])
        assert ds_a.dff.dtype == np.float32
        assert ds_a.roi_mask.dtype == bool
        assert ds_a.average_projection.dims == ("y", "x")

    def test_dff_from_corrected_fluorescence(self, ds_a):
        corrected = ds_a.corrected_fluorescence.values.astype(np.float64)
        f0 = np.median(corrected, axis=1, keepdims=True)
        np.testing.assert_allclose(ds_a.dff.values, (corrected - f0) / f0, rtol=1e-5, atol=1e-6)

    def test_lazy_chunked_and_picklable(self, ds_a):
        assert ds_a.dff.chunks is not None
        assert ds_a.roi_mask.chunks is not None
        assert ds_a.dff.encoding["chunks"][0] <= 32
        clone = pickle.loads(pickle.dumps(ds_a))
        np.testing.assert_array_equal(clone.dff[:, :50].values, ds_a.dff[:, :50].values)

    def test_stimulus_table(self, ds_a, tiny_a):
        start = ds_a["stimulus_presentations.start_time"].values
        assert np.all(np.diff(start) >= 0)
        dg = _presentations(ds_a, "drifting_gratings")
        gratings = dg["blank_sweep"] == 0
        np.testing.assert_allclose(dg["stop_time"] - dg["start_time"], 2.0, atol=0.05)
        assert np.isnan(dg["frame"]).all()
        assert np.isnan(dg["spatial_frequency"]).all()
        assert gratings.sum() == 120
        with h5py.File(tiny_a, "r") as f:
            g = f["stimulus/presentation/drifting_gratings_stimulus"]
            fd = g["frame_duration"][()]
            ts = f[f"{PIPE}/DfOverF/imaging_plane_1/timestamps"][()]
        order = np.argsort(fd[:, 0], kind="stable")
        np.testing.assert_array_equal(dg["start_frame"], fd[order, 0])
        np.testing.assert_array_equal(dg["start_time"], ts[fd[order, 0].astype(int)])
        movie = _presentations(ds_a, "natural_movie_one")
        assert movie["frame"].tolist() == list(range(900))
        assert (movie["repeat"] == 0).all()
        spont = _presentations(ds_a, "spontaneous")
        assert len(spont["start_time"]) == 1
        np.testing.assert_allclose(spont["duration"], 30.0, atol=0.1)

    def test_session_b_stimuli(self, tiny_b):
        (ds,) = reader.read(tiny_b).values()
        schema.validate(ds, "ophys_experiment")
        sg = _presentations(ds, "static_gratings")
        shown = ~np.isnan(sg["orientation"])
        assert set(sg["orientation"][shown]) == set(np.arange(0.0, 180.0, 30.0))
        assert set(sg["phase"][shown]) == {0.0, 0.25, 0.5, 0.75}
        np.testing.assert_allclose(sg["duration"], 0.25, atol=0.05)
        ns = _presentations(ds, "natural_scenes")
        assert set(ns["frame"]) == set(range(-1, 118))

    def test_tuning_recoverable(self, ds_a, tiny_a):
        truth = writer.ground_truth(tiny_a)
        dg = _presentations(ds_a, "drifting_gratings")
        dff = ds_a.dff.values
        resp = np.stack(
            [
                dff[:, s:e].mean(1) - dff[:, s - 30 : s].mean(1)
                for s, e in zip(dg["start_frame"], dg["end_frame"], strict=True)
            ],
            axis=1,
        )
        directions = np.arange(0.0, 360.0, 45.0)
        cells = [(i, c) for i, c in enumerate(truth["cells"]) if c["responsive_dg"]]
        hits = 0
        for i, cell in cells:
            mean = [resp[i, dg["orientation"] == d].mean() for d in directions]
            hits += directions[int(np.argmax(mean))] == cell["pref_direction"]
        assert len(cells) >= 5
        assert hits >= 0.8 * len(cells)

    def test_real_truncated_file(self, real_file):
        out = reader.read(real_file)
        assert list(out) == ["ophys/experiment/496908818"]
        ds = out["ophys/experiment/496908818"]
        schema.validate(ds, "ophys_experiment")
        assert ds.attrs["session_type"] == "three_session_B"
        assert ds.attrs["targeted_structure"] == "VISp"
        assert ds.attrs["cre_line"] == "Rorb-IRES2-Cre/wt"  # as get_metadata() gives it
        assert ds.attrs["imaging_depth"] == 275
        assert ds.attrs["experiment_container_id"] == 511507144
        assert ds.attrs["session_start_time"] == "2016-01-20T10:24:01"
        # arrays are cut to one element: one cell, one frame, and out-of-range frames -> NaN
        assert ds.sizes["cell_specimen_id"] == 1
        assert ds.sizes["time"] == 1
        assert set(ds.attrs["stimulus_names"]) == {
            "natural_movie_one",
            "natural_scenes",
            "spontaneous",
            "static_gratings",
        }
        assert np.isnan(ds["stimulus_presentations.start_time"].values).all()
        with h5py.File(real_file, "r") as f:
            plane = f[f"{PIPE}/ImageSegmentation/imaging_plane_1"]
            assert sum(k.startswith("roi_") and k != "roi_list" for k in plane) == 171
        assert ds.dff.values.shape == (1, 1)

    def test_mapped_globs(self, tiny_a, tiny_b):
        names = []
        for path in (tiny_a, tiny_b):
            with h5py.File(path, "r") as f:
                f.visititems(
                    lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) else None
                )
        mapped = {n for n in names if any(fnmatch.fnmatch(n, g) for g in reader.MAPPED_HDF5)}
        for glob in reader.MAPPED_HDF5:
            if "locally_sparse_noise" not in glob and not glob.endswith("features"):
                assert any(fnmatch.fnmatch(n, glob) for n in names), glob
        assert f"/{PIPE}/DfOverF/imaging_plane_1/data" in mapped
        assert "/stimulus/presentation/drifting_gratings_stimulus/features" in mapped
        # derived or lossy in the layout: left to the raw copier
        assert f"/{PIPE}/Fluorescence/imaging_plane_1/data" not in mapped
        assert f"/{PIPE}/ImageSegmentation/imaging_plane_1/roi_0000/img_mask" not in mapped
        assert "/stimulus/presentation/spontaneous_stimulus/frame_duration" not in mapped


class TestReaderErrors:
    def test_sniff(self, tiny_a, tmp_path, real_file):
        assert reader.sniff(tiny_a)
        assert reader.sniff(real_file)
        text = tmp_path / "notes.nwb"
        text.write_text("not hdf5")
        assert not reader.sniff(text)
        assert not reader.sniff(tmp_path / "missing.nwb")
        if NWB2.is_file():
            assert not reader.sniff(NWB2)

    def test_not_hdf5(self, tmp_path):
        bad = tmp_path / "bad.nwb"
        bad.write_bytes(b"\x00" * 100)
        with pytest.raises(SourceFileError, match=r"bad\.nwb: not an HDF5 file"):
            reader.read(bad)

    def test_missing(self, tmp_path):
        with pytest.raises(SourceFileError, match="no such file"):
            reader.read(tmp_path / "nope.nwb")

    def test_truncated(self, tiny_a, tmp_path):
        cut = tmp_path / "cut.nwb"
        data = tiny_a.read_bytes()
        cut.write_bytes(data[: len(data) // 3])
        assert not reader.sniff(cut)
        with pytest.raises(SourceFileError, match=r"cut\.nwb: .*(truncated|cannot read)"):
            reader.read(cut)

    def test_other_modality(self, tmp_path):
        if not NWB2.is_file():
            pytest.skip(f"reference data folder {SHARED} is absent")
        with pytest.raises(SourceFileError, match="not a Brain Observatory NWB 1 file"):
            reader.read(NWB2)

    def test_other_hdf5(self, tmp_path):
        other = tmp_path / "other.h5"
        with h5py.File(other, "w") as f:
            f["nwb_version"] = "NWB-1.0.5"
            f.create_group("epochs")
        assert not reader.sniff(other)
        with pytest.raises(SourceFileError, match="brain_observatory_pipeline"):
            reader.read(other)

    def test_inconsistent_ids(self, tiny_a, tmp_path):
        broken = tmp_path / "broken.nwb"
        broken.write_bytes(tiny_a.read_bytes())
        with h5py.File(broken, "a") as f:
            del f[f"{PIPE}/ImageSegmentation/cell_specimen_ids"]
            f[f"{PIPE}/ImageSegmentation/cell_specimen_ids"] = np.arange(3)
        with pytest.raises(SourceFileError, match="3 cell_specimen_ids for 10 traces"):
            reader.read(broken)


def test_corrected_fluorescence_follows_the_pipeline_version(tiny_a, tmp_path):
    """AllenSDK: from pipeline version 2.0 on (``general/generated_by``), neuropil correction
    follows demixing, with the neuropil response's own r; before, raw - r * neuropil_traces.
    The conversion still passes its fidelity check."""
    import shutil

    from abo_lake import jobs

    path = tmp_path / tiny_a.name
    shutil.copy(tiny_a, path)
    with h5py.File(path, "r+") as f:
        fl = f[f"{PIPE}/Fluorescence"]
        r2 = fl["imaging_plane_1/r"][()] * 0.5 + 0.1
        response = fl["imaging_plane_1_neuropil_response"]
        if "r" in response:
            del response["r"]
        response.create_dataset("r", data=r2)
        del f["general/generated_by"]
        f["general"].create_dataset("generated_by", data=np.array([b"1.0", b"2.0"]))
        demixed = fl["imaging_plane_1_demixed_signal/data"][()]
        neuropil = fl["imaging_plane_1_neuropil_response/data"][()]
        raw = fl["imaging_plane_1/data"][()]
    (ds,) = reader.read(path).values()
    assert ds.attrs["pipeline_version"] == "2.0"
    want = demixed - neuropil * r2.astype(np.float32)[:, None]
    np.testing.assert_array_equal(ds.corrected_fluorescence.values, want)
    assert not np.allclose(want, raw - neuropil * r2[:, None])
    assert ds.corrected_fluorescence.attrs["long_name"] == "demixed - r * neuropil"
    result = jobs.convert_file(str(path), str(tmp_path / "lake"))
    assert result.error == ""


def test_pipeline_version_of_the_real_file(real_file):
    (ds,) = reader.read(real_file).values()
    assert ds.attrs["pipeline_version"] == "1.0"  # raw - r * neuropil_traces
    assert ds.corrected_fluorescence.attrs["long_name"] == "raw - r * neuropil"


def test_eye_and_pupil_tracking_are_in_the_layout(ds_a, tiny_a, tmp_path):
    """EyeTracking/PupilTracking series (AllenSDK's get_pupil_location/get_pupil_size) are
    ``eye_tracking.*`` columns on ``eye_tracking_time``; a series with other timestamps gets
    its own time dim; conversions stay faithful (checked through the (T, 2) arrays)."""
    import shutil

    from abo_lake import jobs

    eye = f"{PIPE}/EyeTracking"
    with h5py.File(tiny_a, "r") as f:
        spherical = f[f"{eye}/pupil_location_spherical/data"][()]
        size = f[f"{PIPE}/PupilTracking/pupil_size/data"][()]
        t = f[f"{eye}/pupil_location_spherical/timestamps"][()]
    np.testing.assert_array_equal(ds_a["eye_tracking.pupil_location_spherical_x"], spherical[:, 0])
    np.testing.assert_array_equal(ds_a["eye_tracking.pupil_location_spherical_y"], spherical[:, 1])
    np.testing.assert_array_equal(ds_a["eye_tracking.pupil_size"], size)
    np.testing.assert_array_equal(ds_a["eye_tracking_time"], t)
    assert ds_a["eye_tracking.pupil_location_spherical_x"].attrs["units"] == "degrees"
    assert ds_a["eye_tracking.pupil_size"].attrs["units"] == "pixels"

    path = tmp_path / tiny_a.name
    shutil.copy(tiny_a, path)
    with h5py.File(path, "r+") as f:
        stamps = f[f"{PIPE}/PupilTracking/pupil_size/timestamps"]
        stamps[...] = stamps[()] + 0.004  # its own clock
    (ds,) = reader.read(path).values()
    assert ds["eye_tracking.pupil_size"].dims == ("eye_tracking.pupil_size_time",)
    assert ds["eye_tracking.pupil_location_x"].dims == ("eye_tracking_time",)
    for source in (tiny_a, path):
        result = jobs.convert_file(str(source), str(tmp_path / "lake"))
        assert result.error == ""


def test_motion_correction_columns_are_the_feature_description(ds_a, tiny_a, real_file, tmp_path):
    """AllenSDK's ``get_motion_correction`` names its columns by the series'
    ``feature_description`` (the truncated real file's says '1.0'), plus ``timestamp``."""
    import abo_lake.accessors  # noqa: F401  (registers .ophys)

    assert list(ds_a.ophys.motion_correction.columns) == ["x", "y", "timestamp"]
    ((_, real),) = reader.read(real_file).items()
    assert list(real.ophys.motion_correction.columns) == ["1.0", "timestamp"]
    path = tmp_path / tiny_a.name
    path.write_bytes(tiny_a.read_bytes())
    mc = f"{PIPE}/MotionCorrection/2p_image_series/xy_translation"
    with h5py.File(path, "r+") as f:
        del f[f"{mc}/feature_description"]
        f[f"{mc}/feature_description"] = np.array([b"x_motion", b"y_motion"])
    ((_, ds),) = reader.read(path).items()
    table = ds.ophys.motion_correction
    assert list(table.columns) == ["x_motion", "y_motion", "timestamp"]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(table["y_motion"], f[f"{mc}/data"][: len(table), 1])
    twice = tmp_path / "twice.nwb"
    twice.write_bytes(tiny_a.read_bytes())
    with h5py.File(twice, "r+") as f:
        del f[f"{mc}/feature_description"]
        f[f"{mc}/feature_description"] = np.array([b"x", b"x"])
    with pytest.raises(SourceFileError, match="feature_description.*2 distinct names"):
        reader.read(twice)


def _allensdk_get_metadata(path) -> dict:
    """AllenSDK 2.16.2's ``BrainObservatoryNwbDataSet.get_metadata()``, its steps on h5py."""
    import re

    from dateutil import parser

    mapping = {
        "age": "general/subject/age",
        "sex": "general/subject/sex",
        "imaging_depth": "general/optophysiology/imaging_plane_1/imaging depth",
        "targeted_structure": "general/optophysiology/imaging_plane_1/location",
        "ophys_experiment_id": "general/session_id",
        "experiment_container_id": "general/experiment_container_id",
        "device_string": "general/devices/2-photon microscope",
        "excitation_lambda": "general/optophysiology/imaging_plane_1/excitation_lambda",
        "indicator": "general/optophysiology/imaging_plane_1/indicator",
        "fov": "general/fov",
        "genotype": "general/subject/genotype",
        "session_start_time": "session_start_time",
        "session_type": "general/session_type",
        "specimen_name": "general/specimen_name",
        "generated_by": "general/generated_by",
    }
    meta = {}
    with h5py.File(path, "r") as f:
        for key, disk in mapping.items():
            if disk in f:
                v = f[disk][()]
                if v.dtype.type is np.bytes_:
                    v = v.decode("UTF-8") if v.ndim == 0 else [s.decode("UTF-8") for s in v]
                meta[key] = v
    meta["cre_line"] = meta["genotype"].split(";")[0] if meta.get("genotype") else None
    depth = meta.pop("imaging_depth", None)
    meta["imaging_depth_um"] = int(depth.split()[0]) if depth else None
    for key in ("ophys_experiment_id", "experiment_container_id"):
        meta[key] = int(meta[key]) if meta.get(key) else None
    if isinstance(meta.get("session_start_time"), str):
        meta["session_start_time"] = parser.parse(meta["session_start_time"])
    age = meta.pop("age", None)
    if age:
        meta["age_days"] = int(re.match("(.*?) days", age).groups()[0])
    device = meta.pop("device_string", None)
    if device:
        meta["device"], meta["device_name"] = re.match(r"(.*?)\.\s(.*?)\sPlease*", device).groups()
    generated_by = meta.pop("generated_by", None)
    meta["pipeline_version"] = generated_by[-1] if generated_by else "0.9"
    return meta


def test_metadata_is_allensdks_get_metadata(real_file, tiny_a):
    """``.ophys.metadata`` of a Visual Coding 2P experiment: AllenSDK's ``get_metadata()``
    (keys and values; ``cre_line`` keeps '/wt'), on the real file and a synthetic one."""
    import abo_lake.accessors  # noqa: F401  (registers .ophys)

    for path in (real_file, tiny_a):
        ((_, ds),) = reader.read(path).items()
        want = _allensdk_get_metadata(path)
        got = ds.ophys.metadata
        assert got == want
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
