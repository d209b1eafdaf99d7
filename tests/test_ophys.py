"""The ``.ophys`` accessor and :mod:`abo_lake.ophys` on Visual Behavior and Coding 2P data."""

from __future__ import annotations

import pickle
import sys
import warnings

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

import abo_lake
import abo_lake.accessors
from abo_lake import sources
from abo_lake.errors import SchemaError
from abo_lake.synthetic import synthesize, vbo_ophys, vc2p_ophys
from abo_lake.testing import raise_if_dask_computes

P, REL, CELL = "stimulus_presentation_id", "time_relative_to_stimulus_onset", "cell_specimen_id"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ophys_sources")
    (vbo,) = synthesize("vbo-ophys", root / "vbo", scale="tiny", seed=0)
    (vc,) = synthesize("vc2p-ophys", root / "vc2p", scale="tiny", seed=0)
    return {"vbo": vbo, "vc2p": vc}


@pytest.fixture(scope="module")
def vbo(files):
    (ds,) = sources.read(files["vbo"]).values()
    return ds


@pytest.fixture(scope="module")
def vc(files):
    (ds,) = sources.read(files["vc2p"]).values()
    return ds


def _flashes(ds: xr.Dataset) -> np.ndarray:
    """The change-detection block's flashes (AllenSDK's sessions also hold gray-screen blocks,
    the first at time 0 before the imaging starts, and a movie that outlasts it)."""
    block = ds["stimulus_presentations.stimulus_block_name"].values.astype(str)
    return ds[P].values[block == "change_detection_behavior"]


def _rechunked(ds: xr.Dataset, time_chunk: int) -> xr.Dataset:
    """Fewer variables, traces in (4 cells, ``time_chunk`` frames) chunks (so windows matter)."""
    keep = [n for n in ds.data_vars if not n.startswith(("eye_tracking.", "roi_mask"))]
    out = ds[keep].copy()
    out["roi_mask"] = ds["roi_mask"]
    for name in ("dff", "events", "corrected_fluorescence"):
        if name in out:
            out[name].encoding["chunks"] = (4, time_chunk)
    return out


@pytest.fixture(scope="module")
def lake_vbo(vbo, tmp_path_factory):
    """The VBO experiment in a local lake: (store, lazily opened Dataset)."""
    lake = abo_lake.open_lake(str(tmp_path_factory.mktemp("lake")))
    with lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", _rechunked(vbo, 256))
    return lake.release("r1")


def _open(release) -> tuple[object, xr.Dataset]:
    """Open the dataset lazily; ``store.keys_read`` lists every chunk key read from then on."""
    store = release.store("ophys/experiment/1")
    store.keys_read = []
    get = store.get

    async def recording_get(key, *args, **kwargs):
        if key in store._chunks:
            store.keys_read.append(key)
        return await get(key, *args, **kwargs)

    store.get = recording_get
    ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
    store.keys_read.clear()  # opening read the index coordinates
    return store, ds


# --------------------------------------------------------------------------- NumPy references


def _ref_trial_responses(ds, ids, window):
    t = ds["time"].values
    rate = 1.0 / np.median(np.diff(t))
    offsets = np.arange(np.ceil(window[0] * rate - 1e-6), np.floor(window[1] * rate + 1e-6) + 1)
    offsets = offsets / rate
    onset = ds["stimulus_presentations.start_time"].to_series().loc[ids].to_numpy()
    dff = ds["dff"].values.astype(np.float64)
    out = np.empty((len(ids), len(offsets), dff.shape[0]))
    for p, t0 in enumerate(onset):
        for c in range(dff.shape[0]):
            out[p, :, c] = np.interp(t0 + offsets, t, dff[c])
    return offsets, out


def _ref_dg_metrics(ds):
    """A loop-by-loop transcription of Brain Observatory 2016's DriftingGratings analysis."""
    table = ds[[v for v in ds.data_vars if v.startswith("stimulus_presentations.")]]
    table = table.to_dataframe()
    table.columns = [c.removeprefix("stimulus_presentations.") for c in table.columns]
    table = table[table.stimulus_name == "drifting_gratings"]
    traces = ds["corrected_fluorescence"].values.astype(np.float64)
    msr = np.empty((len(table), traces.shape[0]))
    for k, start in enumerate(table.start_frame.to_numpy()):
        for c in range(traces.shape[0]):
            temp = traces[c, start - 30 : start + 90]
            sweep = 100 * (temp / np.mean(temp[:30]) - 1)
            msr[k, c] = np.mean(sweep[30:90])
    ori, tf = table.orientation.to_numpy(), table.temporal_frequency.to_numpy()
    orivals, tfvals = np.unique(ori[~np.isnan(ori)]), np.unique(tf[~np.isnan(tf)])
    rows = []
    for c in range(traces.shape[0]):
        resp = np.array([[msr[(ori == o) & (tf == f), c].mean() for f in tfvals] for o in orivals])
        i, j = np.unravel_index(np.argmax(resp), resp.shape)
        pref = resp[i, j]
        orth = (resp[(i + 2) % 8, j] + resp[(i - 2) % 8, j]) / 2
        null = resp[(i + 4) % 8, j]
        groups = [msr[(ori == o) & (tf == f), c] for o in orivals for f in tfvals]
        groups.append(msr[np.isnan(tf), c])
        rows.append(
            {
                "pref_ori_dg": orivals[i],
                "pref_tf_dg": tfvals[j],
                "osi_dg": (pref - orth) / (pref + orth),
                "dsi_dg": (pref - null) / (pref + null),
                "peak_dff_dg": pref,
                "ptest_dg": stats.f_oneway(*groups).pvalue,
            }
        )
    return pd.DataFrame(rows, index=ds.indexes[CELL])


# --------------------------------------------------------------------------- accessor basics


class TestAccessor:
    def test_repr_summarises_the_plane(self, vbo, vc):
        text = repr(vbo.ophys)
        frames = f"{vbo.sizes['time']} frames"
        for part in ("12 cells", frames, "11.00 Hz", "121 µm", "VISal", "Sst-IRES-Cre"):
            assert part in text
        assert "drifting_gratings" in repr(vc.ophys)
        assert "30.00 Hz" in repr(vc.ophys)

    def test_properties(self, vbo, vc):
        assert isinstance(vbo.ophys.dff.data, dask.array.Array)
        assert vbo.ophys.dff.dtype == np.float64
        assert vc.ophys.dff.dtype == np.float32
        events = vbo.ophys.events  # AllenSDK's table; the lazy events are vbo["events"]
        assert set(events.columns) == {
            "cell_roi_id",
            "events",
            "filtered_events",
            "lambda",
            "noise_std",
        }
        assert events.index.name == CELL
        assert vbo.ophys.roi_masks.dims == (CELL, "y", "x")
        assert vbo.ophys.roi_masks.dtype == bool
        assert vbo.ophys.max_projection.shape == (512, 512)
        np.testing.assert_array_equal(vbo.ophys.timestamps.values, vbo["time"].values)
        assert vbo.ophys.frame_rate == pytest.approx(11.0, rel=1e-3)

    def test_stimulus_presentations_table(self, vbo, vc):
        table = vbo.ophys.stimulus_presentations
        assert table.index.name == "stimulus_presentations_id"  # AllenSDK's name
        assert len(table) == vbo.sizes[P]
        assert {"start_time", "image_name", "is_change", "omitted"} <= set(table.columns)
        assert table["is_change"].dtype == bool
        np.testing.assert_array_equal(
            table["start_time"], vbo["stimulus_presentations.start_time"].values
        )
        dg = vc.ophys.stimulus_presentations.query("stimulus_name == 'drifting_gratings'")
        assert {"orientation", "temporal_frequency", "blank_sweep", "start_frame"} <= set(dg)
        assert len(dg) == 126  # 8 directions x 5 TF x 3 repeats + 6 blanks

    def test_trials_with_ragged_lick_times(self, vbo):
        trials = vbo.ophys.trials
        assert trials.index.name == "trials_id"
        assert len(trials) == vbo.sizes["trials_id"]
        flat = vbo["trials.lick_times"].values
        np.testing.assert_array_equal(np.concatenate(trials["lick_times"].tolist()), flat)
        ends = vbo["trials.lick_times_index"].values
        assert [len(x) for x in trials["lick_times"]] == np.diff(ends, prepend=0).tolist()

    def test_running_speed_on_ophys_time(self, vbo, vc):
        for ds in (vbo, vc):
            speed = ds.ophys.running_speed_on_ophys_time()
            assert isinstance(speed.data, dask.array.Array)
            assert speed.dims == ("time",)
            src_t = ds["running_speed_time"].values
            expected = np.interp(
                ds["time"].values,
                src_t,
                np.asarray(ds["running_speed.speed"].values, np.float64),
                left=np.nan,
                right=np.nan,
            )
            np.testing.assert_allclose(speed.values, expected, rtol=1e-6, equal_nan=True)
        # the VC2P wheel starts 5 frames after the movie: NaN there, not extrapolated
        assert np.isnan(vc.ophys.running_speed_on_ophys_time().values[:5]).all()
        assert np.isfinite(vc.ophys.running_speed_on_ophys_time().values[5:]).all()


# --------------------------------------------------------------------------- responses


class TestTrialResponses:
    def test_equals_numpy_reference_vbo(self, vbo):
        flashes = _flashes(vbo)
        tr = vbo.ophys.trial_responses(window=(-0.5, 1.0), presentations=flashes)
        assert tr.dims == (P, REL, CELL)
        offsets, expected = _ref_trial_responses(vbo, tr[P].values, (-0.5, 1.0))
        np.testing.assert_allclose(tr[REL].values, offsets)
        np.testing.assert_allclose(tr.values, expected, rtol=1e-12, atol=1e-14)
        assert 0.0 in tr[REL].values
        assert len(tr[P]) == len(flashes)  # every flash lies inside the recording

    def test_equals_numpy_reference_vc2p_subset(self, vc):
        table = vc.ophys.stimulus_presentations
        ids = table.index[table.stimulus_name == "drifting_gratings"][::7]
        tr = vc.ophys.trial_responses(window=(-1.0, 2.0), presentations=ids)
        assert tr.dtype == np.float32
        _, expected = _ref_trial_responses(vc, ids, (-1.0, 2.0))
        np.testing.assert_allclose(tr.values, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(tr[P].values, ids)

    def test_linear_trace_is_interpolated_exactly(self, vbo):
        # known by construction: a trace linear in time is recovered at any onset
        t = vbo["time"].values
        slope, icpt = np.arange(1.0, 13.0), np.linspace(-1, 1, 12)
        ds = vbo.assign(dff=((CELL, "time"), slope[:, None] * t[None, :] + icpt[:, None]))
        ids = [3, 50, 120]
        tr = ds.ophys.trial_responses(window=(-0.3, 0.6), presentations=ids)
        onset = vbo["stimulus_presentations.start_time"].values[ids]
        when = onset[:, None, None] + tr[REL].values[None, :, None]
        np.testing.assert_allclose(tr.values, slope * when + icpt, rtol=1e-12)

    def test_selection_forms_agree(self, vbo):
        table = vbo.ophys.stimulus_presentations
        mask = table["is_change"].to_numpy()
        by_mask = vbo.ophys.trial_responses(presentations=mask)
        by_frame = vbo.ophys.trial_responses(presentations=table[mask])
        by_ids = vbo.ophys.change_responses()
        xr.testing.assert_identical(by_mask, by_frame)
        xr.testing.assert_identical(by_mask, by_ids)
        np.testing.assert_array_equal(by_ids[P].values, table.index[mask])

    def test_omission_and_change_responses_follow_ground_truth(self, vbo):
        truth = vbo_ophys.ground_truth(0, scale="tiny")[0]
        ids = pd.Index(vbo.indexes[CELL])
        om = vbo.ophys.omission_responses(window=(0.0, 0.75)).mean((P, REL)).values
        om_cells = np.array(truth["omission_responsive"])
        # specimen ids of unmatched ROIs were replaced with -cell_roi_id by the reader
        assert len(ids) == len(om_cells)
        assert om[om_cells].min() > np.median(om[~om_cells])
        ch = vbo.ophys.change_responses(window=(0.0, 0.5)).mean((P, REL)).values
        img = np.array(truth["image_responsive"])
        assert np.median(ch[img]) > np.median(ch[~img & ~om_cells])

    def test_trace_events(self, vbo):
        tr = vbo.ophys.trial_responses(trace="events", presentations=[10, 11])
        assert tr.name == "events"
        assert tr.shape[0] == 2


class TestMeanResponse:
    def test_equals_pandas_groupby_reference(self, vbo):
        flashes = _flashes(vbo)
        got = vbo.ophys.mean_response(
            by="image_name", window=(0.0, 0.5), baseline=(-0.5, 0.0), presentations=flashes
        )
        tr = vbo.ophys.trial_responses(window=(-0.5, 0.5), presentations=flashes).values
        rel = vbo.ophys.trial_responses(window=(-0.5, 0.5), presentations=flashes)[REL].values
        resp = tr[:, (rel >= 0) & (rel < 0.5)].mean(1) - tr[:, (rel >= -0.5) & (rel < 0)].mean(1)
        names = vbo["stimulus_presentations.image_name"].values[flashes]
        expected = pd.DataFrame(resp).groupby(names).mean()
        np.testing.assert_allclose(got.sel(image_name=expected.index).values, expected.values)
        counts = pd.Series(names).value_counts().reindex(expected.index)
        np.testing.assert_array_equal(got["n_presentations"].values, counts.values)

    def test_two_columns_full_grid(self, vc):
        dg = vc.ophys.stimulus_presentations.query("stimulus_name == 'drifting_gratings'")
        got = vc.ophys.mean_response(
            by=["orientation", "temporal_frequency"], window=(0.0, 2.0), presentations=dg
        )
        assert got.dims == ("orientation", "temporal_frequency", CELL)
        assert got.sizes["orientation"] == 9  # 8 directions + NaN (the blank sweeps)
        n = got["n_presentations"]
        assert int(n.sum()) == 126
        assert (n.isel(orientation=slice(0, 8), temporal_frequency=slice(0, 5)) == 3).all()
        # combinations never shown are NaN *and* flagged by a zero count
        empty = (n == 0).values
        assert np.isnan(got.values[empty]).all()
        assert np.isfinite(got.values[~empty]).all()


class TestDriftingGratings:
    def test_equals_reference_implementation(self, vc):
        got = vc.ophys.drifting_grating_metrics()
        expected = _ref_dg_metrics(vc)
        # the first columns are these; AllenSDK's further DG metrics: tests/test_vc2p_metrics.py
        assert list(got.columns[: len(expected.columns)]) == list(expected.columns)
        # the lake computes sweeps in float32 as AllenSDK does (parity: test_vc2p_metrics.py);
        # this float64 reference differs more where osi/dsi's denominator nearly cancels
        ratios = ["osi_dg", "dsi_dg"]
        rest = [c for c in expected.columns if c not in ratios]
        pd.testing.assert_frame_equal(got[rest], expected[rest], rtol=1e-4, check_dtype=False)
        pd.testing.assert_frame_equal(got[ratios], expected[ratios], rtol=1e-2)

    def test_recovers_ground_truth_tuning(self, vc, files):
        truth = pd.DataFrame(vc2p_ophys.ground_truth(files["vc2p"])["cells"])
        truth = truth.set_index(CELL).loc[vc.indexes[CELL]]
        got = vc.ophys.drifting_grating_metrics()
        responsive = truth["responsive_dg"].to_numpy()
        hits = got["pref_ori_dg"].to_numpy() == truth["pref_direction"].to_numpy()
        tf_hits = got["pref_tf_dg"].to_numpy() == truth["pref_temporal_frequency"].to_numpy()
        assert hits[responsive].mean() >= 0.7
        assert tf_hits[responsive].mean() >= 0.7
        assert (got["ptest_dg"][responsive] < 0.05).mean() >= 0.7
        assert (got["peak_dff_dg"][responsive] > got["peak_dff_dg"][~responsive].max()).all()


# --------------------------------------------------------------------------- laziness, reads


class TestLazyAndChunkAware:
    def test_building_results_reads_no_trace_chunk(self, lake_vbo):
        store, ds = _open(lake_vbo)
        before = store.chunk_reads
        with raise_if_dask_computes():
            results = [
                ds.ophys.trial_responses(),
                ds.ophys.mean_response(by="image_name", baseline=(-0.5, 0.0)),
                ds.ophys.change_responses(),
                ds.ophys.omission_responses(trace="events"),
                ds.ophys.running_speed_on_ophys_time(),
                ds.ophys.dff,
            ]
        assert all(isinstance(r.data, dask.array.Array) for r in results)
        # only small table columns were read (in-process, for the graph's shape): no traces
        read = {k.rsplit("/c/", 1)[0] for k in store.keys_read}
        assert store.chunk_reads > before
        assert read <= {n for n in ds.variables if n.startswith("stimulus_presentations.")}

    def test_window_query_reads_only_overlapping_chunks(self, lake_vbo, vbo):
        store, ds = _open(lake_vbo)
        t = ds.indexes["time"]
        starts = ds["stimulus_presentations.start_time"].values
        # presentations whose window (-0.5, 1.0) lies in frames 300..500 (chunk 1: 256..511)
        inside = np.flatnonzero((starts - 0.6 > t[300]) & (starts + 1.1 < t[500]))
        assert len(inside) >= 3
        tr = ds.ophys.trial_responses(presentations=inside)
        before = store.chunk_reads
        with dask.config.set(scheduler="synchronous"):
            values = tr.values
        assert store.chunk_reads - before == 3  # 3 cell chunks x 1 time chunk (of 8 x 3)
        _, expected = _ref_trial_responses(vbo, inside, (-0.5, 1.0))
        np.testing.assert_allclose(values, expected, rtol=1e-12)

    def test_graph_is_proportional_to_chunks_touched(self, lake_vbo):
        ds = lake_vbo.open("ophys/experiment/1")
        few = ds.ophys.trial_responses(presentations=[20, 21, 22])
        every = ds.ophys.trial_responses()
        (opt_few,) = dask.optimize(few.data)
        (opt_all,) = dask.optimize(every.data)
        n_few, n_all = len(opt_few.__dask_graph__()), len(opt_all.__dask_graph__())
        assert n_few <= 20
        # a few tasks per (time chunk, cell chunk) of the 8 x 3, not per presentation (232)
        assert n_all <= 8 * 3 * 8 < every.sizes[P]
        assert len(pickle.dumps(dict(opt_all.__dask_graph__()))) < 2_000_000

    def test_dg_metrics_compute_once(self, vc):
        with raise_if_dask_computes(max_computes=1):
            got = vc.ophys.drifting_grating_metrics()
        assert len(got) == vc.sizes[CELL]


@pytest.mark.slow
@pytest.mark.s3
def test_cluster_on_s3_lake_equals_threaded(vbo, s3_bucket, s3_options, dask_client):
    lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", **s3_options)
    small = _rechunked(vbo, 512)[["dff", "stimulus_presentations.start_time",
                                  "stimulus_presentations.is_change",
                                  "stimulus_presentations.image_name"]]  # fmt: skip
    small.attrs = dict(vbo.attrs)
    small["roi_mask"] = vbo["roi_mask"]
    small["max_projection"] = vbo["max_projection"]
    with dask.config.set(scheduler="threads"), lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", small)
    ds = lake.release("r1").open("ophys/experiment/1")
    tr = ds.ophys.mean_response(by="image_name", window=(0.0, 0.5), baseline=(-0.5, 0.0))
    with dask.config.set(scheduler="threads"):
        threaded = tr.compute()
    on_cluster = dask_client.compute(tr).result()
    xr.testing.assert_allclose(on_cluster, threaded)
    expected = vbo.ophys.mean_response(by="image_name", window=(0.0, 0.5), baseline=(-0.5, 0.0))
    np.testing.assert_allclose(on_cluster.values, expected.values, rtol=1e-12)


# --------------------------------------------------------------------------- bad input


class TestOphysErrors:
    def test_wrong_kind_is_schema_error_not_attribute_error(self, vbo):
        other = xr.Dataset(attrs={"abo_lake_kind": "ecephys_session"})
        with pytest.raises(SchemaError, match="ophys_experiment"):
            _ = other.ophys
        with pytest.raises(SchemaError, match="missing variable 'dff'"):
            _ = vbo.drop_vars("dff").ophys

    def test_events_and_trials_absent_in_vc2p(self, vc):
        with pytest.raises(SchemaError, match="events"):
            _ = vc.ophys.events
        with pytest.raises(SchemaError, match="trials"):
            _ = vc.ophys.trials
        with pytest.raises(SchemaError, match="is_change"):
            vc.ophys.change_responses()

    def test_dg_metrics_need_drifting_gratings(self, vbo):
        with pytest.raises(ValueError, match="no drifting_gratings"):
            vbo.ophys.drifting_grating_metrics()

    def test_unknown_trace_suggests(self, vbo):
        with pytest.raises(KeyError, match="did you mean.*'dff'"):
            vbo.ophys.trial_responses(trace="dfff")

    def test_unknown_presentation_ids(self, vbo):
        with pytest.raises(KeyError, match="unknown stimulus_presentation_id \\[99999\\]"):
            vbo.ophys.trial_responses(presentations=[1, 99999])

    def test_unknown_by_column(self, vbo):
        with pytest.raises(KeyError, match="did you mean.*'image_name'"):
            vbo.ophys.mean_response(by="image_nam")

    @pytest.mark.parametrize("window", [(1.0, 0.0), (0.0, np.nan), (1.0,), "ab"])
    def test_bad_windows(self, vbo, window):
        with pytest.raises(ValueError, match="window"):
            vbo.ophys.trial_responses(window=window)

    def test_empty_selection(self, vbo):
        with pytest.raises(ValueError, match="no stimulus presentations selected"):
            vbo.ophys.trial_responses(presentations=[])

    def test_windows_outside_recording_are_dropped_with_warning(self, vbo):
        # the first flash starts ~4.5 s after the first frame: a 6 s pre-window leaves the recording
        with pytest.warns(UserWarning, match="dropped .* outside the recording"):
            tr = vbo.ophys.trial_responses(window=(-6.0, 0.0), presentations=[0, 1, 2, 30])
        assert 0 in vbo["stimulus_presentation_id"].values
        assert 0 not in tr[P].values
        assert 30 in tr[P].values
        assert np.isfinite(tr.values).all()  # no NaN rows

    def test_all_windows_outside_recording_raise(self, vbo):
        with pytest.raises(ValueError, match="outside the recording"):
            vbo.ophys.trial_responses(window=(500.0, 600.0))

    def test_window_without_frames(self, vbo):
        with pytest.raises(ValueError, match="holds no frame"):
            vbo.ophys.trial_responses(window=(0.01, 0.02))

    def test_to_pynapple_without_pynapple(self, vbo, monkeypatch):
        monkeypatch.setitem(sys.modules, "pynapple", None)  # as if it were not installed
        with pytest.raises(ImportError, match="pip install pynapple"):
            vbo.ophys.to_pynapple()


def test_to_pynapple(vbo):
    nap = pytest.importorskip("pynapple")
    frame = vbo.ophys.to_pynapple(trace="dff")
    assert isinstance(frame, nap.TsdFrame)
    np.testing.assert_array_equal(frame.t, vbo["time"].values)
    np.testing.assert_array_equal(frame.columns, vbo["cell_specimen_id"].values)
    np.testing.assert_array_equal(np.asarray(frame.values), vbo["dff"].values.T)


def test_no_nan_from_dropped_rows_in_mean_response(vbo):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every flash fits the default window: no warning
        got = vbo.ophys.mean_response(by="is_change", presentations=_flashes(vbo))
    assert np.isfinite(got.values).all()


def _ref_filtered_events(ds, scale_seconds=2 / 31, n=20):
    """AllenSDK's filter_events_array: np.convolve with the normalised half-normal pdf."""
    filt = stats.halfnorm(loc=0, scale=scale_seconds * ds.attrs["ophys_frame_rate"]).pdf(
        np.arange(n)
    )
    filt = filt / filt.sum()
    events = ds["events"].values.astype(np.float64)
    return np.stack([np.convolve(trace, filt)[: len(trace)] for trace in events])


def test_filtered_events_are_allensdks_and_read_only_nearby_chunks(lake_vbo):
    store, ds = _open(lake_vbo)
    time_chunks = ds["events"].chunks[1]
    assert time_chunks[0] == 256
    assert len(time_chunks) > 3
    with raise_if_dask_computes():
        fe = ds.ophys.filtered_events()
    assert fe.dims == ("cell_specimen_id", "time")
    assert fe.name == "filtered_events"
    np.testing.assert_allclose(fe.values, _ref_filtered_events(ds), rtol=1e-12, atol=1e-15)
    wider = ds.ophys.filtered_events(filter_scale_seconds=0.5, n_time_steps=40)
    np.testing.assert_allclose(
        wider.values, _ref_filtered_events(ds, 0.5, 40), rtol=1e-12, atol=1e-15
    )
    # a window in time chunk 2 reads that chunk and the one before it (the filter's past)
    store.keys_read.clear()
    fe.isel(time=slice(600, 700)).compute()
    chunks = {int(k.rsplit("/", 1)[1]) for k in store.keys_read if k.startswith("events/c/")}
    assert chunks == {1, 2}
    # and as a trace for the response functions, equal to the same values stored
    window, ids = (-0.3, 0.6), ds["stimulus_presentation_id"].values[:40]
    by_name = ds.ophys.trial_responses(window=window, presentations=ids, trace="filtered_events")
    stored = ds.assign(fe=(("cell_specimen_id", "time"), _ref_filtered_events(ds)))
    by_value = stored.ophys.trial_responses(window=window, presentations=ids, trace="fe")
    np.testing.assert_allclose(by_name.values, by_value.values, rtol=1e-12, atol=1e-15)


def test_filtered_events_need_events(vc):
    with pytest.raises(SchemaError, match="no 'events' to filter"):
        vc.ophys.filtered_events()
    with pytest.raises(ValueError, match="n_time_steps"):
        abo_lake.ophys.filtered_events(vc.assign(events=vc["dff"]), n_time_steps=0)


def test_valid_cells_are_allensdks_default_selection(vbo, vc, files):
    """AllenSDK loads Visual Behavior experiments with exclude_invalid_rois=True: the lake
    keeps every ROI, ``.ophys.valid_cells()`` selects the valid ones, lazily."""
    import h5py

    table = "processing/ophys/image_segmentation/cell_specimen_table"
    with h5py.File(files["vbo"], "r") as f:
        valid = f[f"{table}/valid_roi"][()].astype(bool)
        roi_ids = f[f"{table}/id"][()]
    assert 0 < valid.sum() < len(valid)  # the tiny file has both kinds
    with raise_if_dask_computes():
        sub = vbo.ophys.valid_cells()
    assert sorted(sub.cell_roi_id.values) == sorted(roi_ids[valid])
    assert sub.valid_roi.values.all()
    np.testing.assert_array_equal(
        sub.dff.values, vbo.dff.sel(cell_specimen_id=sub.cell_specimen_id).values
    )
    responses = sub.ophys.trial_responses(window=(-0.2, 0.5))
    assert responses.sizes["cell_specimen_id"] == valid.sum()
    assert vc.ophys.valid_cells() is vc  # Visual Coding files hold valid cells only
