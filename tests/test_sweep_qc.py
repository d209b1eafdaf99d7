"""Sweep QC (``abo_lake.sweep_qc``, the sweeps table's ``passed``) against IPFX 2.1.2.

The reference ``tests/reference/sweep_qc_ipfx.json`` is IPFX's own QC functions
(``check_sweep_integrity``, ``current_clamp_sweep_stim_features``,
``current_clamp_sweep_qc_features``, ``qc_current_clamp_sweep`` with IPFX's default criteria)
run on every sweep of the NWB files of ``sweep_qc_ipfx.SPECIMENS``: the two ``features``
specimens of ``tests/test_ephys_features.py`` with a noisy baseline on sweep 5 of the first
and a drifting Vm on sweep 9 of the second, and a ``tiny`` specimen whose short sweeps IPFX
tags ("Recording stopped before completing the experiment epoch"). Made by
``tests/reference/sweep_qc_ipfx.py make`` in IPFX's own venv.

Tolerances: mV features within 1e-4 mV absolute (the lake's float64 samples vs IPFX's float32
products of the same stored values), stimulus times exact to 1e-12 s, amplitude to 1e-6
relative; every pass/fail decision, fail tag and integrity tag exact.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import abo_lake
from abo_lake import sweep_qc
from abo_lake.sources import celltypes as reader
from abo_lake.synthetic import celltypes as synth

HERE = Path(__file__).parent
REFERENCE = HERE / "reference" / "sweep_qc_ipfx.json"
_spec = importlib.util.spec_from_file_location(
    "sweep_qc_ipfx", HERE / "reference" / "sweep_qc_ipfx.py"
)
_qc_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_qc_reference)
SPECIMENS = _qc_reference.SPECIMENS
MV_ATOL = 1e-4
MV_FEATURES = [f for f in sweep_qc.QC_FEATURES if f.endswith("_mv")]


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads(REFERENCE.read_text())["specimens"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qc")
    for which, kwargs in SPECIMENS.items():
        synth.write(out / which, **kwargs)
    return out


@pytest.fixture(scope="module")
def specimens(sources) -> dict[str, xr.Dataset]:
    out = {}
    for nwb in sorted(sources.glob("*/specimen_*/ephys.nwb")):
        (ds,) = reader.read(nwb).values()
        out[str(ds.attrs["specimen_id"])] = ds
    return out


@pytest.fixture(scope="module")
def tables(specimens) -> dict:
    return {sid: ds.celltypes.sweeps for sid, ds in specimens.items()}


def test_reference_is_for_these_specimens(ref, specimens):
    assert sorted(ref) == sorted(specimens)
    assert len(ref) == 3


def test_every_qc_feature_equals_ipfx(ref, tables):
    compared = 0
    for sid, table in tables.items():
        assert table.index.tolist() == sorted(int(n) for n in ref[sid])
        for number, theirs in ref[sid].items():
            got = table.loc[int(number)]
            assert got["stimulus_start_time"] == pytest.approx(
                theirs["stimulus_start_time"], abs=1e-12
            )
            assert got["stimulus_duration"] == pytest.approx(theirs["stimulus_duration"], abs=1e-12)
            assert got["stimulus_amplitude"] == pytest.approx(
                theirs["stimulus_amplitude"], rel=1e-6
            )
            for name in MV_FEATURES:
                want = theirs.get(name)
                if want is None:  # a ramp's post_* / vm_delta, or a sweep IPFX tagged
                    assert math.isnan(got[name]), (sid, number, name)
                    continue
                assert got[name] == pytest.approx(want, abs=MV_ATOL), (sid, number, name)
                compared += 1
    assert compared > 150


def test_every_decision_and_tag_equals_ipfx(ref, tables):
    decisions = {True: 0, False: 0}
    for sid, table in tables.items():
        for number, theirs in ref[sid].items():
            got = table.loc[int(number)]
            if theirs["tags"]:  # IPFX's pipeline drops a tagged sweep before QC: failed here
                assert got["fail_tags"] == theirs["tags"], (sid, number)
                assert not got["passed"]
                continue
            assert got["passed"] == theirs["passed"], (sid, number)
            assert got["fail_tags"] == theirs["reasons"], (sid, number)
            assert got["workflow_state"] == ("auto_passed" if got["passed"] else "auto_failed")
            decisions[bool(got["passed"])] += 1
    assert decisions[True] >= 20
    assert decisions[False] == 2


def test_the_spoiled_sweeps_fail_for_their_reason(tables):
    first, second = sorted(sid for sid in tables if sid.startswith("480011"))
    noisy = tables[first].loc[5]
    assert not noisy["passed"]
    assert noisy["fail_tags"] == [
        f"pre-noise: {noisy['pre_noise_rms_mv']:.3f} exceeded qc threshold: 0.070"
    ]
    drift = tables[second].loc[9]
    assert drift["vm_delta_mv"] > 2.0
    assert drift["fail_tags"] == [f"Vm delta: {drift['vm_delta_mv']:.3f} above threshold:1.000"]
    for sid in (first, second):  # every other sweep passes
        assert tables[sid]["passed"].sum() == len(tables[sid]) - 1
    ramp = tables[first].loc[13]
    assert ramp["passed"]
    assert math.isnan(ramp["vm_delta_mv"])


def test_table_is_searchable_and_typed(tables):
    table = next(t for sid, t in tables.items() if sid.startswith("480011"))
    assert table["passed"].dtype == bool
    for column in sweep_qc.QC_COLUMNS:
        assert column in table.columns
    usable = table.query("stimulus_name == 'Long Square' and passed and num_spikes > 0")
    assert len(usable) >= 3
    assert table.query("workflow_state == 'auto_failed'").index.tolist() == [5]


def test_ephys_sweeps_json_carries_the_same_qc(sources, tables):
    """The generator writes IPFX's QC fields into ``ephys_sweeps.json``, as Allen's has them."""
    for path in sources.glob("features/specimen_*/ephys_sweeps.json"):
        records = json.loads(path.read_text())
        table = tables[path.parent.name.removeprefix("specimen_")]
        for rec in records:
            for name in MV_FEATURES:
                want = rec[name]
                got = table.loc[rec["sweep_number"], name]
                if want is None:
                    assert math.isnan(got)
                else:
                    assert got == pytest.approx(want, abs=1e-9)


def test_stricter_criteria_fail_more_sweeps(specimens):
    ds = specimens[min(s for s in specimens if s.startswith("480011"))]
    strict = sweep_qc.sweep_qc_table(ds, criteria={"vm_delta_mv_max": 0.01})
    default = sweep_qc.sweep_qc_table(ds)
    assert strict["passed"].sum() < default["passed"].sum()
    assert all(
        any(t.startswith("Vm delta") for t in tags)
        for tags in strict.loc[~strict["passed"] & default["passed"], "fail_tags"]
    )
    assert sweep_qc.QC_CRITERIA["vm_delta_mv_max"] == 1.0  # the defaults are unchanged


def test_qc_from_a_lake_equals_qc_from_the_source(specimens, tables, tmp_path):
    sid = min(s for s in specimens if s.startswith("480011"))
    lake = abo_lake.open_lake(str(tmp_path / "lake"))
    path = f"celltypes/specimen/{sid}/ephys"
    with lake.stage("r1") as stage:
        stage.write(path, specimens[sid])
    from_lake = lake.release("r1").open(path).celltypes.sweeps
    mine = tables[sid]
    assert from_lake["fail_tags"].tolist() == mine["fail_tags"].tolist()
    for name in sweep_qc.QC_FEATURES:
        np.testing.assert_array_equal(from_lake[name].to_numpy(), mine[name].to_numpy())


def test_sweep_qc_of_one_sweep_and_bad_input(specimens):
    ds = specimens[min(s for s in specimens if s.startswith("480011"))]
    one = ds.celltypes.sweeps.loc[5]
    single = sweep_qc.sweep_qc(ds, 5)
    assert single["fail_tags"] == one["fail_tags"]
    assert single["pre_noise_rms_mv"] == one["pre_noise_rms_mv"]
    with pytest.raises(KeyError, match=r"sweep_number 99 does not exist"):
        sweep_qc.sweep_qc(ds, 99)
    units = ds["stimulus_unit"].values.astype(object)
    units[:] = "Volts"
    bad = ds.assign(stimulus_unit=(ds["stimulus_unit"].dims, units))
    row = sweep_qc.sweep_qc(bad, 3)
    assert not row["passed"]
    assert row["fail_tags"] == ["not QC'd: stimulus_unit 'Volts' is not a current clamp in Amps"]


def test_generator_spoils_only_the_named_sweep(tmp_path, sources):
    clean = synth.write(tmp_path / "clean", scale="features", seed=11, n_specimens=1)
    nwb = next(p for p in clean if p.name == "ephys.nwb")
    (plain,) = reader.read(nwb).values()
    (spoiled,) = reader.read(next(sources.glob("features/specimen_480011000/ephys.nwb"))).values()
    for n in plain.celltypes.get_sweep_numbers():
        a = plain.celltypes.get_sweep(n)["response"]
        b = spoiled.celltypes.get_sweep(n)["response"]
        assert np.array_equal(a, b) == (n != 5), n
    with pytest.raises(ValueError, match=r"unknown failure 'bubbles'"):
        synth.write(tmp_path / "bad", scale="features", qc_failures={(0, 3): "bubbles"})
    with pytest.raises(ValueError, match=r"sweep 99 is not in the 'features' protocol"):
        synth.write(tmp_path / "bad2", scale="features", qc_failures={(0, 99): "drifting_vm"})
