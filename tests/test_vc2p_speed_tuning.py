"""VC2P speed tuning (:mod:`abo_lake.vc2p_speed_tuning`) against AllenSDK 2.16.2.

``tests/reference/vc2p_speed_allensdk.py`` wrote the seeded ``small`` synthetic experiments
three_session_A (seed 11) and three_session_C (seed 13) and stored AllenSDK's
``get_speed_tuning(binsize)`` for binsize 800 and 150 after ``np.random.seed(SEED)``. Here the
same files go into a local lake and the lake's result is compared cell by cell:

- ``ptest_*`` (Kolmogorov-Smirnov p) and ``mod_*`` (shuffle test, AllenSDK's permutations
  replayed from the seed) exactly;
- the binned means and standard errors and ``speed_max_*``/``speed_min_*`` at rtol 2.5e-7
  (two float32 steps): AllenSDK's own code run under NumPy 2.4 on the same arrays gives our
  values; under its NumPy 1.23 a float32 ``std`` and the 1-D float32 ``mean`` of bin 0 differ
  by one float32 step (measured: at most 1.2e-7 relative).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import abo_lake
import abo_lake.accessors
from abo_lake import sources, vc2p_metrics, vc2p_speed_tuning
from abo_lake.errors import SchemaError
from abo_lake.synthetic import vc2p_ophys
from abo_lake.testing import recorded_chunk_reads

REF = dict(np.load(Path(__file__).parent / "reference" / "vc2p_speed_allensdk.npz"))
SESSIONS = {
    "three_session_A": (11, "drifting_gratings"),
    "three_session_C": (13, "natural_movie_one"),
}
BINSIZES = (800, 150)
SEED = 20240611  # the reference script's np.random.seed
RTOL = 2.5e-7
CELL = "cell_specimen_id"
_UNUSED = ("neuropil_fluorescence", "demixed_fluorescence", "eye_tracking.", "motion_")


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """Each experiment in a local lake, traces in (2 cells, 4096 frames) chunks."""
    out = {}
    for session, (seed, _) in SESSIONS.items():
        root = tmp_path_factory.mktemp(session)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = vc2p_ophys.write(root / "nwb", scale="small", seed=seed, session_type=session)[0]
            (full,) = sources.read(path).values()
        ds = full[[n for n in full.data_vars if not n.startswith(_UNUSED)]]
        ds.attrs = dict(full.attrs)
        for name in ("corrected_fluorescence", "dff"):
            ds[name].encoding["chunks"] = (2, 4096)
        lake = abo_lake.open_lake(str(root / "lake"))
        with lake.stage("r1") as stage:
            stage.write("ophys/experiment/1", ds)
        release = lake.release("r1")
        out[session] = (release, release.open("ophys/experiment/1"))
    return out


def _as_float(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


@pytest.mark.parametrize("binsize", BINSIZES)
@pytest.mark.parametrize("session", list(SESSIONS))
def test_speed_tuning_equals_allensdk(lakes, session, binsize):
    ds = lakes[session][1]
    np.testing.assert_array_equal(ds.indexes[CELL], REF[f"{session}/cell_specimen_id"])
    analysis = vc2p_metrics.stimulus_analysis(ds, SESSIONS[session][1])
    dx_sp, cells_sp, dx_vis, cells_vis, peak_run = analysis.get_speed_tuning(binsize, seed=SEED)
    key = f"{session}/{binsize}"
    for name, got in (("binned_dx_sp", dx_sp), ("binned_cells_sp", cells_sp),
                      ("binned_dx_vis", dx_vis), ("binned_cells_vis", cells_vis)):  # fmt: skip
        want = REF[f"{key}/{name}"]
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got.values, want, rtol=RTOL, atol=0, err_msg=name)
    assert cells_vis.dims == (CELL, "speed_bin", "stat")
    assert list(cells_vis["stat"].values) == ["mean", "sem"]
    assert list(peak_run.columns) == list(vc2p_speed_tuning.PEAK_RUN_COLUMNS)
    np.testing.assert_array_equal(peak_run.index, REF[f"{session}/cell_specimen_id"])
    for column in peak_run.columns:
        got, want = _as_float(peak_run[column]), REF[f"{key}/{column}"]
        if column.startswith(("ptest", "mod")):
            np.testing.assert_array_equal(got, want, err_msg=column)
        else:
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, err_msg=column)


def test_reference_exercises_every_branch():
    """Several speed bins, significant and non-significant cells, both mod outcomes."""
    assert REF["three_session_A/800/binned_dx_vis"].shape[0] > 20
    assert REF["three_session_C/150/binned_dx_sp"].shape[0] > 2
    mods = np.concatenate([REF[f"{s}/{b}/mod_{e}"] for s in SESSIONS for b in BINSIZES
                           for e in ("sp", "vis")])  # fmt: skip
    assert {0.0, 1.0} <= set(mods.tolist())
    p = np.concatenate([REF[f"{s}/{b}/ptest_vis"] for s in SESSIONS for b in BINSIZES])
    assert (p < 0.05).any()
    assert (p > 0.5).any()


def test_properties_are_allensdks_binsize_800(lakes):
    ds = lakes["three_session_A"][1]
    analysis = ds.ophys.stimulus_analysis("drifting_gratings")  # as AllenSDK reaches it
    key = "three_session_A/800"
    np.testing.assert_allclose(analysis.binned_dx_vis.values, REF[f"{key}/binned_dx_vis"],
                               rtol=RTOL)  # fmt: skip
    np.testing.assert_allclose(analysis.binned_cells_sp.values, REF[f"{key}/binned_cells_sp"],
                               rtol=RTOL)  # fmt: skip
    assert analysis.binned_dx_sp.shape == REF[f"{key}/binned_dx_sp"].shape
    assert analysis.binned_cells_vis.sizes[CELL] == ds.sizes[CELL]
    # unseeded shuffles: mod_* may differ from AllenSDK's draws; the rest does not use them
    run = analysis.peak_run
    np.testing.assert_array_equal(_as_float(run["ptest_vis"]), REF[f"{key}/ptest_vis"])
    assert set(_as_float(run["mod_vis"]).tolist()) <= {0.0, 1.0}


def test_a_cell_subset_reads_only_its_dff_chunks_and_the_running_speed(lakes):
    release, _ = lakes["three_session_A"]
    store = release.store("ophys/experiment/1")
    ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
    ids = ds.indexes[CELL][2:4]  # the second cell chunk (2 cells per chunk)
    with recorded_chunk_reads(store) as keys, dask.config.set(scheduler="synchronous"):
        got = vc2p_speed_tuning.speed_tuning(ds, ids, seed=SEED)
    read = {k.split("/c/")[0] for k in keys}
    traces = {n for n, v in ds.data_vars.items() if v.dims == (CELL, "time")}
    assert read & traces == {"dff"}  # not corrected_fluorescence: AllenSDK uses dF/F here
    assert "running_speed.speed" in read
    assert all(k.startswith("dff/c/1/") for k in keys if k.startswith("dff/"))
    np.testing.assert_array_equal(got.peak_run.index, ids)
    for column in ("ptest_vis", "mod_vis", "ptest_sp", "mod_sp"):  # cell by cell as the whole
        np.testing.assert_array_equal(_as_float(got.peak_run[column]),
                                      REF[f"three_session_A/800/{column}"][2:4])  # fmt: skip
    want = REF["three_session_A/800/binned_cells_vis"][2:4]
    np.testing.assert_allclose(got.binned_cells_vis.values, want, rtol=RTOL)


def test_bad_input_is_named(lakes):
    ds = lakes["three_session_A"][1]
    with pytest.raises(ValueError, match="binsize must be a positive"):
        vc2p_speed_tuning.speed_tuning(ds, binsize=0)
    with pytest.raises(KeyError, match=r"cell_specimen_id \[1\] not in this experiment"):
        vc2p_speed_tuning.speed_tuning(ds, [1])
    with pytest.raises(SchemaError, match="needs 'dff'"):
        vc2p_speed_tuning.speed_tuning(ds.drop_vars("dff"))
    names = "stimulus_presentations.stimulus_name"
    renamed = ds.assign({names: ds[names].where(ds[names] != "spontaneous", "gray")})
    with pytest.raises(ValueError, match="needs a spontaneous epoch.*three_session_A"):
        vc2p_speed_tuning.speed_tuning(renamed)
    assert isinstance(vc2p_speed_tuning.speed_tuning(ds, binsize=400, seed=1).peak_run,
                      pd.DataFrame)  # fmt: skip


@pytest.mark.slow
@pytest.mark.s3
def test_cluster_on_s3_lake_equals_threaded(s3_bucket, s3_options, dask_client, tmp_path):
    """On a distributed LocalCluster reading the moto S3 lake: one task per cell chunk, the
    same result as the threaded scheduler (and AllenSDK's). Opened with storage chunks, the
    6 cells are 3 tasks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = vc2p_ophys.write(tmp_path, scale="small", seed=13, session_type="three_session_C")
        (full,) = sources.read(path[0]).values()
    ds = full[["dff", "running_speed.speed"]]
    ds.attrs = dict(full.attrs)
    table = [n for n in full.variables if n.startswith("stimulus_presentations.")]
    ds = ds.assign(**{n: full[n] for n in table})
    ds["dff"].encoding["chunks"] = (2, 8192)
    lake = abo_lake.open_lake(f"s3://{s3_bucket}/speed-lake", **s3_options)
    with dask.config.set(scheduler="threads"), lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", ds)
    s3 = xr.open_zarr(lake.release("r1").store("ophys/experiment/1"), consolidated=True,
                      chunks={}, zarr_format=3)  # fmt: skip
    with dask.config.set(scheduler="threads"):
        threaded = vc2p_speed_tuning.speed_tuning(s3, binsize=150, seed=SEED)
    import distributed

    with distributed.get_task_stream(dask_client) as stream:
        on_cluster = vc2p_speed_tuning.speed_tuning(s3, binsize=150, seed=SEED)
    blocks = s3["dff"].data.numblocks[0]  # one task per cell chunk of the opened Dataset
    assert blocks == 3
    assert sum("_cell_block" in str(t["key"]) for t in stream.data) == blocks
    pd.testing.assert_frame_equal(on_cluster.peak_run, threaded.peak_run)
    xr.testing.assert_equal(on_cluster.binned_cells_vis, threaded.binned_cells_vis)
    np.testing.assert_array_equal(_as_float(on_cluster.peak_run["mod_sp"]),
                                  REF["three_session_C/150/mod_sp"])  # fmt: skip
