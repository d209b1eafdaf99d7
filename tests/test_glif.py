"""GLIF models: the reader, the generator, and our simulator against AllenSDK 2.16.2's
``GlifNeuron.run`` (references computed by ``tests/reference/glif_allensdk.py``).

Parity, as stated in :mod:`abo_lake.glif`: spike time steps within one step of AllenSDK's
(they are all equal on the references), the same NaN samples (spike cuts), voltage and
threshold within :data:`VOLT_TOL`, after-spike currents within :data:`AMP_TOL`, interpolated
spike times within :data:`TIME_TOL`. The simulator steps blocks of samples as linear filters
where AllenSDK steps one sample at a time, so the last bits differ (about 1e-14 V).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from abo_lake import glif, jobs, schema, sources
from abo_lake.errors import SourceFileError
from abo_lake.sources import glif as reader
from abo_lake.synthetic import glif as synth

REFERENCE = Path(__file__).parent / "reference" / "glif_allensdk.npz"
VOLT_TOL = 1e-12  # V
AMP_TOL = 1e-21  # A
TIME_TOL = 1e-12  # s


def _reference_script():
    spec = importlib.util.spec_from_file_location(
        "glif_allensdk", REFERENCE.with_name("glif_allensdk.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _reference_script()
_Z = np.load(REFERENCE)
CONFIGS: dict[str, dict] = json.loads(str(_Z["configs"]))
CASES = [(c, s) for c in CONFIGS for s in REF.STIMULI]


@pytest.mark.parametrize(("name", "stim"), CASES, ids=[f"{c}-{s}" for c, s in CASES])
def test_simulation_equals_allensdk(name, stim):
    cfg = CONFIGS[name]
    out = glif.simulate(cfg, REF.stimulus(cfg, stim), dt=REF.DT)
    key = f"{name}__{stim}"
    want_steps = _Z[f"{key}__spike_time_steps"]
    got_steps = out["spike_time_steps"].values
    assert len(want_steps) > 0
    assert len(got_steps) == len(want_steps)
    assert np.abs(got_steps - want_steps).max() <= 1  # spike times exact to one step
    np.testing.assert_array_equal(got_steps, want_steps)  # and here, exactly
    np.testing.assert_allclose(out["spike_times"].values, _Z[f"{key}__grid_spike_times"], rtol=0)
    np.testing.assert_allclose(
        out["interpolated_spike_times"].values,
        _Z[f"{key}__interpolated_spike_times"],
        rtol=0,
        atol=TIME_TOL,
    )
    step = int(_Z["step"])
    for ours, theirs, tol in (
        ("voltage", "voltage", VOLT_TOL),
        ("threshold", "threshold", VOLT_TOL),
        ("after_spike_currents", "AScurrents", AMP_TOL),
    ):
        got, want = out[ours].values[::step], _Z[f"{key}__{theirs}"]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=ours)
    assert out["voltage"].attrs["units"] == "V"
    assert out.sizes["time"] == len(REF.stimulus(cfg, stim))


def test_every_level_is_covered_by_the_references():
    levels = {glif.glif_level(c) for c in CONFIGS.values()}
    assert levels == {1, 2, 3, 4, 5}
    assert any(c["spike_cut_length"] == 0 for c in CONFIGS.values())


def test_a_reset_above_threshold_stops_the_simulation_as_allensdk():
    cfg = dict(CONFIGS["glif2"])
    cfg["voltage_reset_method"] = {"name": "v_before", "params": {"a": 1.0, "b": 0.05}}
    stim = REF.stimulus(cfg, "square")
    out = glif.simulate(cfg, stim, dt=REF.DT)
    assert out.attrs["bad_reset"] == 1
    [spike] = out["spike_time_steps"].values
    last = spike + cfg["spike_cut_length"] + 1 + 5  # the reset values on 5 more samples
    assert np.isfinite(out["voltage"].values[last - 5 : last]).all()
    assert np.isnan(out["voltage"].values[last:]).all()


# -- generator and reader ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> list[Path]:
    return synth.write(tmp_path_factory.mktemp("glif"), seed=3)


def test_generator_is_deterministic_and_makes_every_level(configs, tmp_path):
    again = synth.write(tmp_path, seed=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in configs]
    assert [p.read_bytes() for p in synth.write(tmp_path / "b", seed=4)] != [
        p.read_bytes() for p in configs
    ]
    levels = [glif.glif_level(json.loads(p.read_text())) for p in configs]
    assert levels == [1, 2, 3, 4, 5]


def test_reader_round_trips_the_config(configs):
    for path in configs:
        assert sources.detect_format(path) == "glif"
        [(ds_path, ds)] = sources.read(path).items()
        schema.validate(ds, "glif_model")
        spec = path.parent.parent.name.removeprefix("specimen_")
        model = path.parent.name.removeprefix("glif_")
        assert ds_path == f"celltypes/specimen/{spec}/glif/{model}"
        assert reader.config_of(ds) == json.loads(path.read_text())
        assert reader.fidelity_problems(path, ds) == []
        assert ds["asc_tau_array"].attrs["units"] == "s"


def test_fidelity_names_a_changed_field(configs):
    [ds] = sources.read(configs[4]).values()
    changed = ds.assign_attrs({"th_inf": ds.attrs["th_inf"] * 1.01})
    [problem] = reader.fidelity_problems(configs[4], changed)
    assert "field 'th_inf'" in problem


def test_ids_from_allens_download_name(tmp_path, configs):
    path = tmp_path / "glif_123" / "474626527_neuron_config.json"
    path.parent.mkdir()
    path.write_text(configs[0].read_text())
    assert list(reader.read(path)) == ["celltypes/specimen/474626527/glif/123"]
    lost = tmp_path / "neuron_config.json"
    lost.write_text(configs[0].read_text())
    with pytest.raises(SourceFileError, match="specimen_<id>.*glif_<neuronal_model_id>"):
        reader.read(lost)


def test_other_json_is_not_a_glif_config(tmp_path):
    other = tmp_path / "ephys_sweeps.json"
    other.write_text(json.dumps([{"sweep_number": 1, "stimulus_name": "Ramp"}]))
    assert not reader.sniff(other)
    aux = tmp_path / "neuronal_model.json"
    aux.write_text(json.dumps({"id": 1, "specimen_id": 2, "name": "GLIF 1"}))
    assert not reader.sniff(aux)


def _broken(cfg: dict, change) -> dict:
    cfg = json.loads(json.dumps(cfg))
    change(cfg)
    return cfg


BAD_CONFIGS = {
    "missing_coefficient": (lambda c: c["coeffs"].pop("G"), "coeffs.G"),
    "missing_field": (lambda c: c.pop("th_inf"), "'th_inf'"),
    "unknown_method": (
        lambda c: c["threshold_dynamics_method"].update(name="adaptive"),
        "threshold_dynamics_method.name",
    ),
    "negative_capacitance": (lambda c: c.update(C=-1e-10), "'C'"),
    "non_finite": (lambda c: c.update(R_input=float("nan")), "'R_input'"),
    "infinite_coefficient": (lambda c: c["coeffs"].update(th_inf=float("inf")), "coeffs.th_inf"),
    "missing_method_param": (
        lambda c: c["voltage_reset_method"]["params"].pop("a"),
        "voltage_reset_method.params.a",
    ),
    "unknown_method_param": (
        lambda c: c["voltage_reset_method"]["params"].update(c=1.0),
        "voltage_reset_method.params",
    ),
    "asc_lengths": (lambda c: c.update(asc_amp_array=[1e-12]), "'asc_amp_array'"),
    "negative_tau": (lambda c: c.update(asc_tau_array=[-0.01, 0.1]), "'asc_tau_array'"),
    "fractional_cut": (lambda c: c.update(spike_cut_length=2.5), "'spike_cut_length'"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_invalid_configs_name_the_file_and_field(case, configs, tmp_path):
    change, field = BAD_CONFIGS[case]
    cfg = _broken(json.loads(configs[4].read_text()), change)
    folder = tmp_path / "specimen_1" / "glif_2"
    folder.mkdir(parents=True)
    path = folder / "neuron_config.json"
    path.write_text(json.dumps(cfg))  # NaN/Infinity as Python's json writes them
    assert sources.detect_format(path) == "glif"
    with pytest.raises(SourceFileError, match="neuron_config.json") as err:
        sources.read(path)
    assert field in str(err.value)
    with pytest.raises(glif.GlifConfigError, match=field.replace(".", r"\.")):
        glif.simulate(cfg, np.zeros(10), dt=5e-6)


# -- stimuli ----------------------------------------------------------------------------------


def _da(values, **attrs) -> xr.DataArray:
    return xr.DataArray(np.asarray(values, dtype=float), dims=("time",), attrs=attrs)


def test_stimulus_units_and_rate_are_read_from_a_dataarray():
    cfg = CONFIGS["glif3"]
    amps = REF.stimulus(cfg, "square")
    want = glif.simulate(cfg, amps, dt=REF.DT)
    in_pa = _da(amps * 1e12, units="pA", sampling_rate=1 / REF.DT)
    got = glif.simulate(cfg, in_pa)
    np.testing.assert_array_equal(got["spike_time_steps"], want["spike_time_steps"])
    np.testing.assert_allclose(got["voltage"], want["voltage"], rtol=0, atol=VOLT_TOL)
    timed = xr.DataArray(
        amps, dims=("t",), coords={"t": np.arange(len(amps)) * REF.DT}, attrs={"units": "A"}
    )
    np.testing.assert_array_equal(
        glif.simulate(cfg, timed)["spike_time_steps"], want["spike_time_steps"]
    )


BAD_STIMULI = {
    "volts": (lambda: (_da(np.zeros(10), units="mV", sampling_rate=2e5), None), "'units'"),
    "no_units": (lambda: (_da(np.zeros(10), sampling_rate=2e5), None), "'units'"),
    "no_rate": (lambda: (np.zeros(10), None), "'dt'"),
    "negative_rate": (lambda: (_da(np.zeros(10), units="A", sampling_rate=-1.0), None), "rate"),
    "khz_not_hz": (lambda: (_da(np.zeros(10), units="A", sampling_rate=20.0), None), "'dt'"),
    "nan_sample": (lambda: (np.array([0.0, np.nan]), 5e-6), "'values'"),
    "two_sweeps": (lambda: (np.zeros((2, 10)), 5e-6), "one sweep"),
}


@pytest.mark.parametrize("case", list(BAD_STIMULI))
def test_bad_stimuli_name_the_field(case):
    make, field = BAD_STIMULI[case]
    stim, dt = make()
    with pytest.raises(glif.StimulusError, match=field):
        glif.simulate(CONFIGS["glif1"], stim, dt=dt)


# -- the lake and dask ------------------------------------------------------------------------


def test_convert_publish_and_simulate_from_the_lake(configs, local_lake, dask_cluster):
    folder = configs[0].parents[2]
    assert sorted(jobs.plan([folder])) == sorted(str(p) for p in configs)
    report = jobs.run(
        [folder], local_lake, "g1", scheduler=dask_cluster.scheduler_address, progress=False
    )
    assert not report.failures  # the fidelity check passed
    assert report.published
    rel = local_lake.release("g1")
    path = configs[4]
    spec, model = path.parent.parent.name[9:], path.parent.name[5:]
    ds = rel.open(f"celltypes/specimen/{spec}/glif/{model}")
    assert ds.glif.config == json.loads(path.read_text())
    stim = _da(np.full(20_000, 2e-10), units="A", sampling_rate=2e5)
    got = ds.glif.simulate(stim)
    want = glif.simulate(json.loads(path.read_text()), stim)
    xr.testing.assert_identical(got, want)
    assert repr(ds.glif) == f"<.glif: GLIF5 model {model} of specimen {spec}>"


def test_simulate_many_on_the_cluster_equals_one_by_one(dask_client):
    names = ["glif1", "glif3", "glif5"]
    cfg = CONFIGS["glif5"]
    stim = REF.stimulus(cfg, "noise")
    many = glif.simulate_many([CONFIGS[n] for n in names], stim, dt=REF.DT)
    for name, got in zip(names, many, strict=True):
        xr.testing.assert_identical(got, glif.simulate(CONFIGS[name], stim, dt=REF.DT))
    spikes = glif.simulate_many(
        [CONFIGS[n] for n in names], stim, dt=REF.DT, variables=["spike_times"]
    )
    assert [list(s.data_vars) for s in spikes] == [["spike_times"]] * 3
    for got, full in zip(spikes, many, strict=True):
        xr.testing.assert_identical(got["spike_times"], full["spike_times"])


def test_the_accessor_refuses_another_kind():
    from abo_lake.errors import SchemaError

    with pytest.raises(SchemaError, match="glif_model"):
        xr.Dataset(attrs={"abo_lake_kind": "celltypes_ephys"}).glif.simulate(np.zeros(3), 1e-5)


def test_celltypes_simulate_runs_a_model_on_a_sweep(tiny_sources, configs):
    ephys_path = next(Path(p) for p in jobs.plan([tiny_sources["celltypes"]]) if p.endswith(".nwb"))
    [ephys] = sources.read(ephys_path).values()
    [model] = sources.read(configs[4]).values()
    number = ephys.celltypes.get_sweep_numbers()[1]
    sweep = ephys.celltypes.get_sweep(number)
    assert np.ptp(sweep["stimulus"]) > 0
    got = ephys.celltypes.simulate(model, number)
    stim = xr.DataArray(
        sweep["stimulus"],
        dims=("t",),
        attrs={"units": "A", "sampling_rate": sweep["sampling_rate"]},
    )
    want = glif.simulate(reader.config_of(model), stim)
    np.testing.assert_array_equal(got["voltage"], want["voltage"])
    np.testing.assert_array_equal(got["spike_times"], want["spike_times"])
    assert got.attrs["sweep_number"] == number
    assert got.attrs["dt"] == 1 / sweep["sampling_rate"]
    custom = ephys.celltypes.simulate(model, np.zeros(100), dt=1e-5)
    assert custom.sizes["time"] == 100
    assert custom.sizes["spike"] == 0


def test_an_invalid_config_fails_the_job_by_name_and_nothing_is_published(
    configs, local_lake, dask_cluster, tmp_path
):
    good = tmp_path / "specimen_1" / "glif_10" / "neuron_config.json"
    bad = tmp_path / "specimen_1" / "glif_11" / "neuron_config.json"
    for path in (good, bad):
        path.parent.mkdir(parents=True)
    good.write_text(configs[0].read_text())
    cfg = json.loads(configs[0].read_text())
    cfg["C"] = -1e-10
    bad.write_text(json.dumps(cfg))
    report = jobs.run(
        [tmp_path], local_lake, "bad", scheduler=dask_cluster.scheduler_address, progress=False
    )
    [failure] = report.failures
    assert Path(failure.source) == bad
    assert "field 'C'" in failure.error
    assert not report.published
    assert local_lake.releases() == []
