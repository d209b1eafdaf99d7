"""Visual Coding 2P stimulus analyses (:mod:`abo_lake.vc2p_metrics`) against AllenSDK 2.16.2.

``tests/reference/vc2p_metrics_allensdk.py`` wrote three seeded ``small`` synthetic experiments
(three_session_A, _B, _C) and stored what AllenSDK's ``DriftingGratings``, ``StaticGratings``,
``NaturalScenes`` and ``NaturalMovie`` return on them. Here the same files are written again,
converted into a local lake, and the lake's analyses are compared cell by cell:

- choices (preferred condition indices, scene, movie peak frame, time to peak) exactly;
- sweep responses, mean sweep responses (float32, as AllenSDK computes them), the running
  speed ``dx`` and the condition means exactly;
- every float metric of the peak tables and the sweeps' ANOVA p at rtol 1e-9 (the lake follows
  AllenSDK's float32/float64 steps, NumPy 1's scalar promotion and SciPy 1.10's Welch test);
- the responses' standard error at rtol 1e-6: pandas rounds its float64 std to float32 in an
  order that differs by one float32 step for some conditions.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import abo_lake
import abo_lake.accessors
from abo_lake import sources, vc2p_metrics
from abo_lake.errors import SchemaError
from abo_lake.synthetic import vc2p_ophys
from abo_lake.testing import recorded_chunk_reads

REF = Path(__file__).parent / "reference"
META = json.loads((REF / "vc2p_metrics_allensdk.json").read_text())
ARRAYS = np.load(REF / "vc2p_metrics_allensdk.npz")
CASES = [(s, st) for s, e in META["sessions"].items() for st in e["stimuli"]]
CELL, P = "cell_specimen_id", "stimulus_presentation_id"
CHOICES = {"ori_dg", "tf_dg", "ori_sg", "sf_sg", "phase_sg", "scene_ns", "time_to_peak_sg",
           "time_to_peak_ns", "peak_nm1", "peak_nm2", "peak_nm3"}  # fmt: skip


_UNUSED = ("neuropil_fluorescence", "demixed_fluorescence", "eye_tracking.", "motion_")


def _lake_dataset(nwb: Path, root: Path) -> tuple[abo_lake.Release, xr.Dataset]:
    """The experiment in a local lake, traces in (2 cells, 4096 frames) chunks (without the
    variables the analyses do not read, to keep the test fast)."""
    (full,) = sources.read(nwb).values()
    ds = full[[n for n in full.data_vars if not n.startswith(_UNUSED)]]
    ds.attrs = dict(full.attrs)
    for name in ("corrected_fluorescence", "dff"):
        ds[name].encoding["chunks"] = (2, 4096)
    lake = abo_lake.open_lake(str(root))
    with lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", ds)
    release = lake.release("r1")
    return release, release.open("ophys/experiment/1")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vc2p_metrics")
    return {
        s: vc2p_ophys.write(root / s, scale="small", seed=e["seed"], session_type=s)[0]
        for s, e in META["sessions"].items()
    }


@pytest.fixture(scope="module")
def lakes(files, tmp_path_factory):
    return {s: _lake_dataset(p, tmp_path_factory.mktemp(f"lake_{s}")) for s, p in files.items()}


@pytest.fixture(scope="module")
def analyses(lakes):
    return {(s, st): vc2p_metrics.stimulus_analysis(lakes[s][1], st) for s, st in CASES}


@pytest.mark.parametrize(("session", "stimulus"), CASES)
def test_peak_equals_allensdk(analyses, session, stimulus):
    ref = META["sessions"][session]["stimuli"][stimulus]
    expected = pd.DataFrame(ref["peak"]).set_index(CELL)
    a = analyses[session, stimulus]
    got = a.peak
    assert (a.sweeplength, a.interlength) == (ref["sweeplength"], ref["interlength"])
    np.testing.assert_array_equal(got.index, expected.index)
    assert list(got.columns) == list(expected.columns)
    for col in expected.columns:
        want = expected[col].to_numpy(dtype=np.float64)
        have = got[col].to_numpy(dtype=np.float64)
        if col in CHOICES:
            np.testing.assert_array_equal(have, want, err_msg=col)
        else:
            np.testing.assert_allclose(have, want, rtol=1e-9, atol=0, err_msg=col)
    # the metrics are meaningful: most cells respond, some run modulation is defined
    if stimulus == "drifting_gratings":
        assert (got["ptest_dg"] < 0.05).sum() >= 3
    run = [c for c in got.columns if c.startswith("run_modulation")]
    assert all(got[c].notna().any() for c in run)  # running modulation is exercised


@pytest.mark.parametrize(("session", "stimulus"), CASES)
def test_sweep_tables_equal_allensdk(analyses, session, stimulus):
    a = analyses[session, stimulus]
    key = f"{session}/{stimulus}"
    np.testing.assert_array_equal(a.stim_table["start"], ARRAYS[f"{key}/start"])
    sr = a.sweep_response
    assert sr.dims == (P, CELL, "sweep_frame")
    assert isinstance(sr.data, dask.array.Array)
    sample = ARRAYS[f"{key}/sweep_response"]  # 3 sweeps, their first frames
    head = sr.isel({P: slice(0, 3), "sweep_frame": slice(0, sample.shape[-1])})
    np.testing.assert_array_equal(head.values, sample)
    if stimulus.startswith("natural_movie"):
        return
    msr = ARRAYS[f"{key}/mean_sweep_response"]  # cells then AllenSDK's dx column
    got = a.mean_sweep_response
    assert got.dims == (P, CELL)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.values, msr[:, :-1])
    np.testing.assert_array_equal(got["dx"].values, msr[:, -1])
    np.testing.assert_allclose(a.pval.values, ARRAYS[f"{key}/pval"], rtol=1e-9)
    resp = ARRAYS[f"{key}/response"][..., :-1, :]  # without the dx column
    r = a.response
    assert r.dims[-2:] == (CELL, "stat")
    np.testing.assert_array_equal(r.sel(stat="mean").values, resp[..., 0])
    np.testing.assert_allclose(r.sel(stat="sem").values, resp[..., 1], rtol=1e-6)
    np.testing.assert_array_equal(r.sel(stat="n_significant").values, resp[..., 2])


def test_stimulus_metrics_names_and_values(lakes, analyses):
    ds = lakes["three_session_A"][1]
    m = ds.ophys.stimulus_metrics()
    dg = analyses["three_session_A", "drifting_gratings"]
    peak = dg.peak
    np.testing.assert_array_equal(m["pref_dir_dg"], dg.orivals[peak["ori_dg"]])
    np.testing.assert_array_equal(m["pref_tf_dg"], dg.tfvals[peak["tf_dg"]])
    pd.testing.assert_series_equal(m["p_dg"], peak["ptest_dg"], check_names=False)
    pd.testing.assert_series_equal(m["g_osi_dg"], peak["cv_os_dg"], check_names=False)
    assert {"reliability_nm1", "reliability_nm1_a", "reliability_nm3", "tfdi_dg"} <= set(m)
    b = lakes["three_session_B"][1].ophys.stimulus_metrics()
    sg = analyses["three_session_B", "static_gratings"]
    np.testing.assert_array_equal(b["pref_sf_sg"], sg.sfvals[sg.peak["sf_sg"]])
    assert {"pref_image_ns", "image_sel_ns", "p_ns", "time_to_peak_sg", "reliability_nm1_b"} <= set(
        b
    )
    # drifting_grating_metrics: its own first columns, then AllenSDK's names, same values
    d = ds.ophys.drifting_grating_metrics()
    np.testing.assert_array_equal(d["pref_ori_dg"], m["pref_dir_dg"])
    pd.testing.assert_frame_equal(d.iloc[:, 6:], m[d.columns[6:]])


def test_two_cells_read_only_their_trace_chunks(lakes, analyses):
    release, _ = lakes["three_session_A"]
    store = release.store("ophys/experiment/1")
    ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
    ids = ds.indexes[CELL][:2]  # the first cell chunk (2 cells per chunk)
    with recorded_chunk_reads(store) as keys:
        a = vc2p_metrics.stimulus_analysis(ds, "drifting_gratings", cells=ids)
        got = a.peak
    traces = [k for k in keys if k.startswith(("corrected_fluorescence/", "dff/"))]
    assert traces
    assert all(k.startswith("corrected_fluorescence/c/0/") for k in traces)
    # and of that cell chunk only the time chunks the drifting-grating windows cover
    starts = a.stim_table["start"].to_numpy()
    covered = {c for s in starts for c in range((s - 30) // 4096, (s + 89) // 4096 + 1)}
    assert len(covered) < -(-ds.sizes["time"] // 4096)
    full = analyses["three_session_A", "drifting_gratings"].peak.loc[ids]
    pd.testing.assert_frame_equal(got, full)


@pytest.mark.slow
@pytest.mark.s3
def test_cluster_on_s3_lake_equals_threaded(files, s3_bucket, s3_options, dask_client):
    import distributed

    lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", **s3_options)
    (full,) = sources.read(files["three_session_A"]).values()
    ds = full[[n for n in full.data_vars if not n.startswith(("dff", *_UNUSED))]]
    ds.attrs = dict(full.attrs)
    ds["corrected_fluorescence"].encoding["chunks"] = (2, 8192)
    with dask.config.set(scheduler="threads"), lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", ds)
    s3 = lake.release("r1").open("ophys/experiment/1")
    with dask.config.set(scheduler="threads"):
        threaded = vc2p_metrics.stimulus_metrics(s3, stimuli=["drifting_gratings"])
    with distributed.get_task_stream(dask_client) as stream:
        on_cluster = vc2p_metrics.stimulus_metrics(s3, stimuli=["drifting_gratings"])
    assert any("_analyse" in t["key"] for t in stream.data if isinstance(t["key"], str)) or any(
        "_analyse" in str(t["key"]) for t in stream.data
    )
    pd.testing.assert_frame_equal(on_cluster, threaded)


class TestErrors:
    def test_stimulus_not_shown_names_session(self, lakes):
        ds = lakes["three_session_A"][1]
        with pytest.raises(
            ValueError, match="no static_gratings.*three_session_A.*three_session_B"
        ):
            ds.ophys.stimulus_analysis("static_gratings")
        with pytest.raises(ValueError, match="no natural_scenes.*'three_session_A'"):
            ds.ophys.stimulus_metrics(stimuli=["natural_scenes"])

    def test_unknown_stimulus_lists_choices(self, lakes):
        with pytest.raises(ValueError, match="no AllenSDK stimulus analysis for 'flashes'"):
            vc2p_metrics.stimulus_analysis(lakes["three_session_A"][1], "flashes")

    def test_no_analysable_stimulus(self, lakes):
        ds = lakes["three_session_C"][1]
        movies = ds["stimulus_presentations.stimulus_name"].values.astype(str)
        # locally sparse noise is analysable (vc2p_receptive_fields) with its template
        only_lsn = ds.isel({P: np.flatnonzero(~np.char.startswith(movies, "natural_movie"))})
        only_lsn = only_lsn.drop_vars("stimulus_template.locally_sparse_noise")
        with pytest.raises(
            ValueError, match="no stimulus with an AllenSDK analysis.*three_session_C"
        ):
            vc2p_metrics.stimulus_metrics(only_lsn)

    def test_truncated_real_file_is_refused_clearly(self, shared_data):
        nwb = shared_data / "nwb" / "brain_observatory_496908818_nwb1_truncated.nwb"
        (ds,) = sources.read(nwb).values()  # three_session_B, one frame, one sweep a stimulus
        with pytest.raises(ValueError, match="static_gratings: the experiment has 1 ophys time"):
            vc2p_metrics.stimulus_metrics(ds)

    def test_without_running_speed(self, lakes, analyses):
        ds = lakes["three_session_A"][1]
        still = ds.drop_vars([v for v in ds.variables if v.startswith("running_speed")])
        with pytest.raises(SchemaError, match="no running speed"):
            _ = vc2p_metrics.stimulus_analysis(still, "drifting_gratings").peak
        movie = vc2p_metrics.stimulus_analysis(still, "natural_movie_one").peak  # not needed
        pd.testing.assert_frame_equal(movie, analyses["three_session_A", "natural_movie_one"].peak)

    def test_unknown_cell(self, lakes):
        with pytest.raises(KeyError, match="cell_specimen_id \\[1\\] not in"):
            vc2p_metrics.stimulus_analysis(lakes["three_session_A"][1], "drifting_gratings", [1])

    def test_movie_has_no_response_array(self, analyses):
        with pytest.raises(AttributeError, match="NaturalMovie has no response"):
            _ = analyses["three_session_A", "natural_movie_one"].response
