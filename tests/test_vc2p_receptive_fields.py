"""Locally sparse noise receptive fields (:mod:`abo_lake.vc2p_receptive_fields`) against
AllenSDK 2.16.2's ``LocallySparseNoise``.

``tests/reference/vc2p_lsn_allensdk.py`` wrote two seeded ``small`` synthetic experiments
(three_session_C: ``locally_sparse_noise``; three_session_C2: ``_4deg`` and ``_8deg``; the first
three cells with both an ON and an OFF subfield) and stored AllenSDK's per-cell receptive-field
analysis data and ``peak`` table. Here the same files are written again, converted into a
local lake, and compared cell by cell:

- the detected events, the ``rts`` event counts, the significant-pixel subfield masks (and
  their number and order) and the Holm-Sidak ``min_p`` of each polarity exactly (``min_p`` at
  rtol 1e-12);
- the shuffle p-values replay AllenSDK's ``np.random.seed(1)`` draws; the blur of the template
  is computed here as matrix products rather than per-frame FITPACK/ndimage calls, which
  differs from AllenSDK's by ~1e-16, so shuffles that tie AllenSDK's event-triggered value
  within rounding may count the other way: each pixel's p within 0.02 (200 of 10000 shuffles)
  and the mean difference under 0.002;
- ``mean_response`` (per pixel the mean ON / OFF sweep response, and its ``dx`` running-speed
  entry) exactly;
- on three_session_C, the base ``StimulusAnalysis`` surface: ``sweep_response`` (120 sampled
  sweeps, every cell and frame, and its ``dx`` windows) and ``mean_sweep_response`` with its
  ``dx`` column exactly, ``pval`` at rtol 1e-9; ``get_speed_tuning(binsize, seed)`` for
  binsize 800 and 150 (seeded as AllenSDK after ``np.random.seed``): ``ptest_*``/``mod_*``
  exactly, the binned means and standard errors and ``speed_max_*``/``speed_min_*`` at rtol
  2.5e-7 (AllenSDK's NumPy 1.23 float32 ``std``/``mean`` differ by a float32 step, as
  ``tests/test_vc2p_speed_tuning.py`` measured); the ``binned_*``/``peak_run`` properties as
  binsize 800;
- the blurred event-triggered maps at atol 1e-12, the chi-square p-value grid at rtol 1e-9,
  every ``rf_*_lsn`` column and the Gaussian fits' parameters at rtol 1e-7 (Nelder-Mead from
  inputs equal to ~1e-16).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import abo_lake
import abo_lake.accessors
from abo_lake import sources, vc2p_metrics, vc2p_receptive_fields, vc2p_speed_tuning
from abo_lake.errors import SchemaError
from abo_lake.testing import recorded_chunk_reads
from abo_lake.vc2p_receptive_fields import PEAK_COLUMNS

REF = Path(__file__).parent / "reference"
META = json.loads((REF / "vc2p_lsn_allensdk.json").read_text())
ARRAYS = np.load(REF / "vc2p_lsn_allensdk.npz")
CASES = [(s, st) for s, e in META["sessions"].items() for st in e["stimuli"]]
CELL = "cell_specimen_id"
CHUNK = (2, 4096)


def _reference_module():
    spec = importlib.util.spec_from_file_location("vc2p_lsn_allensdk", REF / "vc2p_lsn_allensdk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lake_dataset(nwb: Path, root: Path) -> tuple[abo_lake.Release, xr.Dataset]:
    """The experiment in a local lake, dF/F in (2 cells, 4096 frames) chunks."""
    (full,) = sources.read(nwb).values()
    keep = [
        n
        for n in full.data_vars
        if n in ("dff", "corrected_fluorescence", "roi_mask", "max_projection")
        or n.startswith(("stimulus_presentations.", "stimulus_template.", "running_speed."))
    ]
    ds = full[keep]
    ds.attrs = dict(full.attrs)
    for name in ("corrected_fluorescence", "dff"):
        ds[name].encoding["chunks"] = CHUNK
    lake = abo_lake.open_lake(str(root))
    with lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", ds)
    release = lake.release("r1")
    return release, release.open("ophys/experiment/1")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _reference_module().write_files(tmp_path_factory.mktemp("vc2p_lsn"))


@pytest.fixture(scope="module")
def lakes(files, tmp_path_factory):
    return {s: _lake_dataset(p, tmp_path_factory.mktemp(f"lake_{s}")) for s, p in files.items()}


@pytest.fixture(scope="module")
def analyses(lakes):
    out = {}
    for s, st in CASES:
        a = vc2p_metrics.stimulus_analysis(lakes[s][1], st)
        a.peak
        out[s, st] = a
    return out


def _ref(session: str, stimulus: str, cell: int, path: str) -> np.ndarray:
    return ARRAYS[f"{session}/{stimulus}/{cell}/{path}"]


def _none_nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.mark.parametrize(("session", "stimulus"), CASES)
def test_events_and_subfields_equal_allensdk(analyses, session, stimulus):
    a = analyses[session, stimulus]
    cells = META["sessions"][session]["stimuli"][stimulus]["cells"]
    assert len(cells) == len(a.cell_specimen_ids)
    for i, attrs in enumerate(cells):
        rf = a.cell_index_receptive_field_analysis_data[str(i)]
        np.testing.assert_array_equal(rf["events"], _ref(session, stimulus, i, "event_vector"))
        assert rf["n_events"] == attrs["event_vector/number_of_events"]
        for pol in ("on", "off"):
            got = rf[pol]
            np.testing.assert_array_equal(got["rts"], _ref(session, stimulus, i, f"{pol}/rts"))
            np.testing.assert_allclose(
                got["rts_convolution"],
                _ref(session, stimulus, i, f"{pol}/rts_convolution"),
                rtol=0,
                atol=1e-12,
            )
            np.testing.assert_array_equal(
                got["fdr_mask"], _ref(session, stimulus, i, f"{pol}/fdr_mask")
            )
            assert got["number_of_components"] == attrs[f"{pol}/fdr_mask/number_of_components"]
            ref_min = attrs[f"{pol}/fdr_corrected/min_p"]
            np.testing.assert_allclose(got["min_p"], ref_min, rtol=1e-12)
            ref_p = _ref(session, stimulus, i, f"{pol}/pvalues")
            diff = np.abs(got["pvalues"] - ref_p)
            assert diff.max() <= 0.02, (i, pol, diff.max())
            assert diff.mean() < 0.002, (i, pol, diff.mean())
        chi = rf["chi_squared_analysis"]
        np.testing.assert_allclose(
            chi["pvalues"], _ref(session, stimulus, i, "chi_squared_analysis/pvalues"), rtol=1e-9
        )
        assert chi["significant"] == attrs["chi_squared_analysis/significant"]
        np.testing.assert_array_equal(
            chi["best_exclusion_region_mask"],
            _ref(session, stimulus, i, "chi_squared_analysis/best_exclusion_region_mask"),
        )


@pytest.mark.parametrize(("session", "stimulus"), CASES)
def test_gaussian_fits_equal_allensdk(analyses, session, stimulus):
    a = analyses[session, stimulus]
    cells = META["sessions"][session]["stimuli"][stimulus]["cells"]
    fitted = 0
    for i, attrs in enumerate(cells):
        rf = a.cell_index_receptive_field_analysis_data[str(i)]
        for pol in ("on", "off"):
            fit = rf[pol]["gaussian_fit"]
            for key in ("area", "center_x", "center_y", "width_x", "width_y", "height"):
                ref = attrs.get(f"{pol}/gaussian_fit/{key}")
                if ref is None:  # AllenSDK writes no gaussian_fit without a fitted subfield
                    assert fit[key] == []
                    continue
                np.testing.assert_allclose(_none_nan(fit[key]), _none_nan(ref), rtol=1e-7)
            fitted += len(fit["area"])
    assert fitted > 0  # the seeded cells have subfields to fit


@pytest.mark.parametrize(("session", "stimulus"), CASES)
def test_peak_equals_allensdk(analyses, session, stimulus):
    ref = META["sessions"][session]["stimuli"][stimulus]["peak"]
    peak = analyses[session, stimulus].peak
    assert list(peak.columns) == PEAK_COLUMNS
    np.testing.assert_array_equal(peak.index, ref["cell_specimen_id"])
    for col in PEAK_COLUMNS:
        expected = _none_nan(ref[col])
        np.testing.assert_allclose(peak[col].to_numpy(), expected, rtol=1e-7, err_msg=col)
    assert peak["rf_chi2_lsn"].notna().all()


@pytest.mark.parametrize(("session", "stimulus"), CASES)
def test_receptive_field_map_equals_allensdk(analyses, session, stimulus):
    rf = analyses[session, stimulus].receptive_field
    ref = ARRAYS[f"{session}/{stimulus}/receptive_field"]
    assert rf.dims == ("row", "col", CELL, "on_off")
    np.testing.assert_allclose(rf.values, ref, rtol=0, atol=1e-12)
    assert np.isfinite(ref).any() == np.isfinite(rf.values).any()


@pytest.mark.parametrize(("session", "stimulus"), CASES)
def test_mean_response_equals_allensdk(analyses, session, stimulus):
    """Per pixel the mean of the ON / OFF sweeps' mean_sweep_response: exactly AllenSDK's
    (float32 sweep means, pandas' float32 averages); AllenSDK's last cell is its dx column."""
    a = analyses[session, stimulus]
    ref = ARRAYS[f"{session}/{stimulus}/mean_response"]
    got = a.mean_response
    assert got.dims == ("row", "col", CELL, "on_off")
    np.testing.assert_array_equal(got.values, ref[:, :, :-1])
    assert got["dx"].dims == ("row", "col", "on_off")
    np.testing.assert_array_equal(got["dx"].values, ref[:, :, -1])
    assert np.isfinite(ref[:, :, -1]).any()
    msr = a.mean_sweep_response
    assert msr.dtype == np.float32
    assert msr.sizes == {"stimulus_presentation_id": len(a.stim_table), CELL: ref.shape[2] - 1}


LSN_C = ("three_session_C", "locally_sparse_noise")
LSN_C_KEY = "/".join(LSN_C)
SPEED_RTOL = 2.5e-7  # two float32 steps (module doc)


def test_sweep_response_equals_allensdk(analyses):
    """AllenSDK's base ``get_sweep_response`` on LSN: windows of 4 L + L + 4 L frames (L = 8),
    % ΔF/F of corrected fluorescence from the 4 L frames before; the ``dx`` column as the
    running speed of the same frames; ``mean_sweep_response`` of every sweep with its ``dx``;
    ``pval``."""
    a = analyses[LSN_C]
    sample = _reference_module().SWEEP_SAMPLE
    ref_cells = ARRAYS[f"{LSN_C_KEY}/sweep_response/cells"]
    sr = a.sweep_response
    assert sr.dims == ("stimulus_presentation_id", CELL, "sweep_frame")
    assert (a.interlength, a.sweeplength, a.extralength) == (32, 8, 8)
    assert sr.sizes["sweep_frame"] == ref_cells.shape[-1] == 72
    got = sr.isel(stimulus_presentation_id=sample)
    assert got.dtype == np.float32
    for c in range(ref_cells.shape[1]):
        np.testing.assert_array_equal(got.values[:, c], ref_cells[:, c], err_msg=f"cell {c}")
    np.testing.assert_array_equal(got["dx"].values, ARRAYS[f"{LSN_C_KEY}/sweep_response/dx"])
    ref_msr = ARRAYS[f"{LSN_C_KEY}/mean_sweep_response"]  # cells, then AllenSDK's dx column
    msr = a.mean_sweep_response
    for c in range(msr.sizes[CELL]):
        np.testing.assert_array_equal(msr.values[:, c], ref_msr[:, c], err_msg=f"cell {c}")
    np.testing.assert_array_equal(msr["dx"].values, ref_msr[:, -1])
    ref_p = ARRAYS[f"{LSN_C_KEY}/pval"]  # ANOVA in float64 from float32 sweeps
    for c in range(msr.sizes[CELL]):
        np.testing.assert_allclose(a.pval.values[:, c], ref_p[:, c], rtol=1e-9, err_msg=f"{c}")
    assert (ref_p[:, :-1] < 0.05).any()
    assert (ref_p[:, :-1] > 0.5).any()


def _speed_ref(binsize: int, name: str) -> np.ndarray:
    return ARRAYS[f"{LSN_C_KEY}/speed_tuning/{binsize}/{name}"]


@pytest.mark.parametrize("binsize", [800, 150])
def test_speed_tuning_equals_allensdk(analyses, binsize):
    """``get_speed_tuning(binsize, seed)`` of the LSN analysis equals AllenSDK's
    ``LocallySparseNoise.get_speed_tuning(binsize)`` after ``np.random.seed(seed)``, cell by
    cell (the shuffles behind ``mod_*`` replayed from the seed)."""
    a = analyses[LSN_C]
    seed = _reference_module().SPEED_SEED
    tuning = a.get_speed_tuning(binsize, seed=seed)
    dx_sp, cells_sp, dx_vis, cells_vis, peak_run = tuning
    for name, got in (("binned_dx_sp", dx_sp), ("binned_dx_vis", dx_vis)):
        np.testing.assert_allclose(got.values, _speed_ref(binsize, name), rtol=SPEED_RTOL)
    for name, got in (("binned_cells_sp", cells_sp), ("binned_cells_vis", cells_vis)):
        ref = _speed_ref(binsize, name)
        assert got.shape == ref.shape
        for c in range(ref.shape[0]):
            err = f"{name} cell {c}"
            np.testing.assert_allclose(got.values[c], ref[c], rtol=SPEED_RTOL, err_msg=err)
    np.testing.assert_array_equal(peak_run.index, a.cell_specimen_ids)
    assert list(peak_run.columns) == list(vc2p_speed_tuning.PEAK_RUN_COLUMNS)
    for column in peak_run.columns:
        got = peak_run[column].to_numpy(dtype=float)
        want = _speed_ref(binsize, f"peak_run/{column}")
        if column.startswith(("ptest", "mod")):
            np.testing.assert_array_equal(got, want, err_msg=column)
        else:
            np.testing.assert_allclose(got, want, rtol=SPEED_RTOL, err_msg=column)
    assert cells_vis.sizes["speed_bin"] > 1  # several speed bins: the binning is exercised


def test_speed_tuning_properties_are_binsize_800(analyses):
    a = analyses[LSN_C]
    assert isinstance(a, vc2p_speed_tuning.SpeedTuningMixin)
    for name in ("binned_dx_sp", "binned_cells_sp", "binned_dx_vis", "binned_cells_vis"):
        np.testing.assert_allclose(
            getattr(a, name).values, _speed_ref(800, name), rtol=SPEED_RTOL, err_msg=name
        )
    # unseeded shuffles: only mod_* may differ from AllenSDK's draws
    run = a.peak_run
    for column in ("ptest_sp", "ptest_vis"):
        got = run[column].to_numpy(dtype=float)
        np.testing.assert_array_equal(got, _speed_ref(800, f"peak_run/{column}"), column)


def test_stimulus_metrics_has_allensdk_rf_columns(lakes, analyses):
    ds = lakes["three_session_C"][1]
    ids = ds.indexes[CELL][:2]  # two cells keep it fast; the table is per cell
    c = ds.ophys.stimulus_metrics(cells=ids)
    peak = analyses["three_session_C", "locally_sparse_noise"].peak.loc[ids]
    pd.testing.assert_frame_equal(c[PEAK_COLUMNS], peak)
    assert {"reliability_nm1", "reliability_nm2"} <= set(c)
    # three_session_C2: SessionAnalysis takes 4deg for VISp, 8deg elsewhere
    c2 = lakes["three_session_C2"][1]
    pick = "4deg" if c2.attrs.get("targeted_structure") == "VISp" else "8deg"
    ids = c2.indexes[CELL][:2]
    m = c2.ophys.stimulus_metrics(cells=ids)
    expected = analyses["three_session_C2", f"locally_sparse_noise_{pick}"].peak.loc[ids]
    pd.testing.assert_frame_equal(m[PEAK_COLUMNS], expected)


def test_two_cells_read_only_their_dff_chunks(lakes, analyses):
    release, _ = lakes["three_session_C"]
    store = release.store("ophys/experiment/1")
    ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
    ids = ds.indexes[CELL][2:4]  # the second cell chunk
    with recorded_chunk_reads(store) as keys:
        a = vc2p_receptive_fields.locally_sparse_noise(ds, "locally_sparse_noise", cells=ids)
        got = a.peak
    traces = [k for k in keys if k.startswith(("corrected_fluorescence/", "dff/"))]
    assert traces
    assert all(k.startswith("dff/c/1/") for k in traces)
    # of that cell chunk only the time chunks the sweeps (start + 1 .. + 15) cover
    starts = a.stim_table["start"].to_numpy()
    covered = {c for s in starts for c in range((s - 3) // CHUNK[1], (s + 15) // CHUNK[1] + 1)}
    read = {int(k.rsplit("/", 1)[1]) for k in traces}
    assert read <= covered
    assert len(read) < -(-ds.sizes["time"] // CHUNK[1])
    full = analyses["three_session_C", "locally_sparse_noise"].peak.loc[ids]
    pd.testing.assert_frame_equal(got, full)


@pytest.mark.slow
@pytest.mark.s3
def test_cluster_on_s3_lake_equals_allensdk(files, s3_bucket, s3_options, dask_client):
    """On a distributed LocalCluster reading the moto S3 lake: the same table as AllenSDK's,
    the per-cell-chunk tasks run on the workers."""
    import dask
    import distributed

    lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", **s3_options)
    (full,) = sources.read(files["three_session_C2"]).values()
    keep = ["dff", "roi_mask", "max_projection"]
    ds = full[[n for n in full.data_vars if n in keep or n.startswith("stimulus_")]]
    ds.attrs = dict(full.attrs)
    ds["dff"].encoding["chunks"] = CHUNK
    with dask.config.set(scheduler="threads"), lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", ds)
    s3 = lake.release("r1").open("ophys/experiment/1")
    stimulus = "locally_sparse_noise_8deg"
    with distributed.get_task_stream(dask_client) as stream:
        on_cluster = vc2p_receptive_fields.locally_sparse_noise(s3, stimulus).peak
    assert any("_cells" in str(t["key"]) for t in stream.data)
    ref = META["sessions"]["three_session_C2"]["stimuli"][stimulus]["peak"]
    for col in PEAK_COLUMNS:
        expected = _none_nan(ref[col])
        np.testing.assert_allclose(on_cluster[col].to_numpy(), expected, rtol=1e-7, err_msg=col)


class TestErrors:
    def test_session_without_lsn_names_session_type(self, lakes):
        ds = lakes["three_session_C2"][1]
        with pytest.raises(ValueError, match=r"three_session_C2.*locally_sparse_noise is shown"):
            vc2p_receptive_fields.locally_sparse_noise(ds, "locally_sparse_noise")

    def test_unknown_lsn_name(self, lakes):
        with pytest.raises(ValueError, match="locally_sparse_noise_4deg"):
            vc2p_receptive_fields.locally_sparse_noise(lakes["three_session_C"][1], "lsn_2deg")

    def test_missing_template_is_named(self, lakes):
        ds = lakes["three_session_C"][1].drop_vars("stimulus_template.locally_sparse_noise")
        with pytest.raises(ValueError, match=r"stimulus_template\.locally_sparse_noise"):
            vc2p_receptive_fields.locally_sparse_noise(ds)

    def test_sweep_response_without_running_speed_names_it(self, lakes):
        ds = lakes["three_session_C"][1]
        ds = ds.drop_vars([n for n in ds.variables if str(n).startswith("running_speed")])
        a = vc2p_receptive_fields.locally_sparse_noise(ds, cells=ds.indexes[CELL][:1])
        with pytest.raises(SchemaError, match="running"):
            a.sweep_response

    def test_unknown_cell(self, lakes):
        with pytest.raises(KeyError, match="cell_specimen_id"):
            vc2p_receptive_fields.locally_sparse_noise(lakes["three_session_C"][1], cells=[1])
