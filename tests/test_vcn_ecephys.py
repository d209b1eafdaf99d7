"""Synthetic Visual Coding Neuropixels files and their reader."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pandas as pd
import pytest
from pynwb import NWBHDF5IO

from abo_lake import schema
from abo_lake.errors import SourceFileError
from abo_lake.sources import vcn_ecephys as reader
from abo_lake.synthetic import vcn_ecephys as writer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SID = writer.DEFAULT_SESSION_ID


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return writer.write(tmp_path_factory.mktemp("vcn"), scale="tiny", seed=0)


@pytest.fixture(scope="module")
def seed_1(tmp_path_factory):
    """The tiny session with seed 1 and seed 0's session id (so only the seed differs),
    written through :func:`abo_lake.synthetic.synthesize`; shared by the tests that need one."""
    from abo_lake.synthetic import synthesize

    out = tmp_path_factory.mktemp("vcn_seed_1")
    return synthesize("vcn-ecephys", out, scale="tiny", seed=1, session_id=SID)


@pytest.fixture(scope="module")
def session(tiny):
    return reader.read(tiny[0])[f"ecephys/session/{SID}"]


@pytest.fixture(scope="module")
def truth(tiny):
    return writer.ground_truth(tiny[0])


def _unit_spikes(ds, i):
    idx = ds["spike_times_index"].values
    lo = 0 if i == 0 else idx[i - 1]
    return ds["spike_times"].data[lo : idx[i]].compute()


# --- writer --------------------------------------------------------------------------------------


def test_writer_layout_and_sizes(tiny, truth):
    folder = tiny[0].parent
    assert folder.name == f"session_{SID}"
    assert tiny[0].name == f"session_{SID}.nwb"
    pids = [SID + 1, SID + 2]
    assert [p.name for p in tiny[1:]] == [f"probe_{pid}_lfp.nwb" for pid in pids]
    assert all(p.stat().st_size < 8e6 for p in tiny)
    assert truth["session_id"] == SID
    assert sorted(truth["probes"]) == ["probeA", "probeB"]
    with h5py.File(tiny[0], "r") as f:
        assert f["identifier"][()].decode() == str(SID)
        assert f["general/stimulus"][()].decode() == "brain_observatory_1.1"
        assert f["general/subject/age"][()].decode().startswith("P")
        assert f["general/devices/probeA"].attrs["probe_id"] == pids[0]
        assert f["units/waveform_mean"].shape == (24 * 384, 82)
        assert f["units/spike_times"].dtype == np.float64
        assert f["general/extracellular_ephys/electrodes/id"].shape == (768,)
        assert f["intervals/invalid_times/tags"].asstr()[:].tolist() == [
            "EcephysProbe",
            str(pids[1]),
            "probeB",
        ]
    with h5py.File(tiny[1], "r") as f:
        assert f["identifier"][()].decode() == str(pids[0])
        name = f"acquisition/probe_{pids[0]}_lfp_data"
        assert isinstance(f.get(name, getlink=True), h5py.SoftLink)
        assert f[f"{name}/data"].shape == (12500, 96)
        assert f["general/extracellular_ephys/electrodes/id"].shape == (96,)


def test_same_seed_gives_identical_arrays(tiny, seed_1, tmp_path):
    again = writer.write(tmp_path / "a", scale="tiny", seed=0)

    def arrays(path):
        out = {}
        with h5py.File(path, "r") as f:

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiub":
                    out[name] = obj[()]

            f.visititems(visit)
        return out

    first, second = arrays(tiny[0]), arrays(again[0])
    assert first.keys() == second.keys()
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
    lfp_a, lfp_b = arrays(tiny[1]), arrays(again[1])
    for k in lfp_a:
        np.testing.assert_array_equal(lfp_a[k], lfp_b[k], err_msg=k)
    assert not np.array_equal(
        first["units/spike_times"][:100], arrays(seed_1[0])["units/spike_times"][:100]
    )


@pytest.mark.parametrize("which", [0, 1])
def test_nwbinspector_finds_no_critical_or_validation_issue(tiny, which):
    nwbinspector = pytest.importorskip("nwbinspector")
    bad = {nwbinspector.Importance.CRITICAL, nwbinspector.Importance.PYNWB_VALIDATION}
    messages = [m for m in nwbinspector.inspect_nwbfile(nwbfile_path=tiny[which]) if m]
    serious = [(m.check_function_name, m.message) for m in messages if m.importance in bad]
    assert serious == []


def test_pynwb_reads_the_session(tiny):
    with NWBHDF5IO(tiny[0], "r") as io:
        nwb = io.read()
        assert len(nwb.units) == 24
        assert set(nwb.intervals) >= {
            "drifting_gratings_presentations",
            "flashes_presentations",
            "natural_scenes_presentations",
            "spontaneous_presentations",
            "invalid_times",
        }
        assert len(nwb.intervals["drifting_gratings_presentations"]) == 8 * 5 * 3
        assert len(nwb.processing["optotagging"]["optogenetic_stimulation"]) == 18


# --- session reader ----------------------------------------------------------------------------


def test_session_validates_and_is_lazy_and_picklable(session):
    schema.validate(session, "ecephys_session")
    assert session.attrs["abo_lake_kind"] == "ecephys_session"
    assert session.attrs["source_file"] == f"session_{SID}.nwb"
    assert session.attrs["ecephys_session_id"] == SID
    assert session.attrs["session_type"] == "brain_observatory_1.1"
    assert isinstance(session["spike_times"].data, da.Array)
    assert isinstance(session["waveform_mean"].data, da.Array)
    clone = pickle.loads(pickle.dumps(session))
    np.testing.assert_array_equal(clone["spike_times"].values, session["spike_times"].values)


def test_spike_times_round_trip_per_unit(tiny, session):
    assert session["spike_times_index"].dtype == np.int64
    assert session["spike_times"].dtype == np.float64
    assert session["spike_times"].attrs["units"] == "s"
    with NWBHDF5IO(tiny[0], "r") as io:
        units = io.read().units
        ids = units.id[:]
        for i in range(len(ids)):
            assert session["unit_id"].values[i] == ids[i]
            got = _unit_spikes(session, i)
            np.testing.assert_array_equal(got, units["spike_times"][i])
            assert np.all(np.diff(got) >= 0)
            idx = session["spike_times_index"].values
            lo = 0 if i == 0 else idx[i - 1]
            amp = session["spike_amplitudes"].data[lo : idx[i]].compute()
            np.testing.assert_array_equal(amp, units["spike_amplitudes"][i])


def test_units_qc_columns_and_joins(tiny, session):
    with h5py.File(tiny[0], "r") as f:  # AllenSDK 2.16.2 writes no waveform_halfwidth
        stored = [c for c in reader._UNIT_QC if f"units/{c}" in f]
    assert "waveform_halfwidth" not in stored
    for col in stored:
        assert col in session, col
    assert set(session["quality"].values) <= {"good", "noise"}
    with h5py.File(tiny[0], "r") as f:
        np.testing.assert_array_equal(session["snr"].values, f["units/snr"][:])
        duration = f["processing/optotagging/optogenetic_stimulation/stop_time"][-1] + 2.0
    counts = np.diff(np.r_[0, session["spike_times_index"].values])
    np.testing.assert_allclose(session["firing_rate"].values, counts / duration)
    peak = session["peak_channel_id"].values
    chan = session["channels.anterior_posterior_ccf_coordinate"].sel(channel_id=peak).values
    np.testing.assert_array_equal(session["anterior_posterior_ccf_coordinate"].values, chan)
    vert = session["channels.probe_vertical_position"].sel(channel_id=peak).values
    np.testing.assert_array_equal(session["probe_vertical_position"].values, vert)
    assert set(session["probe_description"].values) == {"probeA", "probeB"}
    assert set(session["probe_id"].values) == {SID + 1, SID + 2}
    assert session["waveform_mean"].dims == ("unit_id", "channel", "waveform_sample")
    assert session["waveform_mean"].shape == (24, 384, 82)
    # The largest trough of each unit's mean waveform is on its peak channel.
    wf = session["waveform_mean"].values
    trough_channel = wf.min(axis=2).argmin(axis=1)
    local = session["channels.probe_channel_number"].sel(channel_id=peak).values
    np.testing.assert_array_equal(trough_channel, local)


def test_structure_acronym_under_both_names(session):
    np.testing.assert_array_equal(
        session["structure_acronym"].values, session["ecephys_structure_acronym"].values
    )
    np.testing.assert_array_equal(
        session["channels.structure_acronym"].values,
        session["channels.ecephys_structure_acronym"].values,
    )
    channel_acronyms = set(session["channels.structure_acronym"].values)
    assert {"VISp", "CA1", "DG", "LP", ""} <= channel_acronyms
    assert not any("-" in a or a == "None" for a in channel_acronyms)  # DG-mo -> DG
    assert "" not in set(session["structure_acronym"].values)  # units sit in labelled tissue


def _allensdk_conditions(path):
    """AllenSDK's stimulus_condition_id, computed from pynwb tables as the SDK does."""
    with NWBHDF5IO(path, "r") as io:
        nwb = io.read()
        frames = [
            t.to_dataframe().drop(columns=["tags", "timeseries"])
            for name, t in nwb.intervals.items()
            if name.endswith("_presentations")
        ]
    table = pd.concat(frames, sort=False).sort_values("start_time", kind="stable")
    table = table.reset_index(drop=True).drop(columns=["stimulus_index"])
    table = table.astype(object).replace("", "null").fillna("null")
    params = table.drop(columns=["start_time", "stop_time", "stimulus_block"])
    seen: dict[tuple, int] = {}
    ids = [seen.setdefault(row, len(seen)) for row in params.itertuples(index=False)]
    return table, np.array(ids)


def test_stimulus_presentations_match_allensdk(tiny, session):
    table, expected = _allensdk_conditions(tiny[0])
    sp = "stimulus_presentations."
    n = len(table)
    np.testing.assert_array_equal(session["stimulus_presentation_id"].values, np.arange(n))
    np.testing.assert_array_equal(
        session[sp + "start_time"].values, table["start_time"].to_numpy(float)
    )
    assert np.all(np.diff(session[sp + "start_time"].values) >= 0)
    np.testing.assert_array_equal(session[sp + "stimulus_condition_id"].values, expected)
    np.testing.assert_allclose(
        session[sp + "duration"].values,
        table["stop_time"].to_numpy(float) - table["start_time"].to_numpy(float),
    )
    names = session[sp + "stimulus_name"].values
    assert (names == "drifting_gratings").sum() == 120
    assert (names == "flashes").sum() == 20
    assert (names == "natural_scenes").sum() == 119
    is_dg = names == "drifting_gratings"
    # a parameter a stimulus lacks is NaN (numbers) or "null" (text), as AllenSDK's fill
    no_orientation = (table["orientation"] == "null").to_numpy()
    np.testing.assert_array_equal(np.isnan(session[sp + "orientation"].values), no_orientation)
    assert set(session[sp + "color"].values[is_dg]) == {"[1.0, 1.0, 1.0]"}
    assert set(session[sp + "color"].values[names == "flashes"]) == {"1.0", "-1.0"}
    assert set(session[sp + "color"].values[names == "spontaneous"]) == {"null"}
    assert session[sp + "temporal_frequency"].dtype == np.float64


def test_secondary_tables(session, truth):
    assert session["invalid_times.tags"].values.tolist() == ["EcephysProbe", str(SID + 2), "probeB"]
    np.testing.assert_array_equal(session["invalid_times.tags_index"].values, [3])
    speed = session["running_speed.velocity"]
    assert speed.dims == ("running_speed_time",)
    assert speed.attrs["units"] == "cm/s"
    np.testing.assert_allclose(np.diff(session["running_speed_time"].values[:3]), 1 / 60.0)
    opto = session["optogenetic_stimulation.level"]
    assert opto.dims == ("optogenetic_stimulation_id",)
    assert sorted(set(opto.values)) == [0.5, 1.0, 1.5]
    assert session["probes.description"].values.tolist() == ["probeA", "probeB"]
    assert session["probe"].values.tolist() == [SID + 1, SID + 2]
    np.testing.assert_allclose(session["probes.lfp_sampling_rate"].values, 1250.0)


def test_units_are_tuned_to_the_gratings(session, truth):
    sp = "stimulus_presentations."
    dg = session[sp + "stimulus_name"].values == "drifting_gratings"
    start = session[sp + "start_time"].values[dg]
    stop = session[sp + "stop_time"].values[dg]
    ori = session[sp + "orientation"].values[dg]
    unit_ids = session["unit_id"].values.tolist()
    assert unit_ids == truth["units"]["unit_id"]
    hits, tuned = 0, 0
    for i in range(len(unit_ids)):
        if not truth["units"]["tuned"][i]:
            continue
        tuned += 1
        times = _unit_spikes(session, i)
        counts = np.searchsorted(times, stop) - np.searchsorted(times, start)
        per_ori = np.array([counts[ori == o].sum() for o in writer.ORIENTATIONS])
        best = writer.ORIENTATIONS[int(per_ori.argmax())]
        error = abs((best - truth["units"]["pref_ori"][i] + 180) % 360 - 180)
        assert error <= 45, (unit_ids[i], per_ori)
        hits += error == 0
    assert tuned >= 10
    assert hits >= 0.9 * tuned


def test_flash_responses_follow_on_off_gains(session, truth):
    sp = "stimulus_presentations."
    fl = session[sp + "stimulus_name"].values == "flashes"
    start = session[sp + "start_time"].values[fl]
    white = session[sp + "color"].values[fl] == "1.0"
    gain = np.array(truth["units"]["on_gain"]) - np.array(truth["units"]["off_gain"])
    on_minus_off = []
    for i in range(session.sizes["unit_id"]):
        t = _unit_spikes(session, i)
        counts = np.searchsorted(t, start + 0.1) - np.searchsorted(t, start + 0.03)
        on_minus_off.append(counts[white].mean() - counts[~white].mean())
    assert np.corrcoef(gain, on_minus_off)[0, 1] > 0.6


# --- probe LFP reader --------------------------------------------------------------------------


def test_lfp_and_csd(tiny, session, truth):
    out = reader.read(tiny[1])
    pid = SID + 1
    assert sorted(out) == [f"ecephys/probe/{pid}/csd", f"ecephys/probe/{pid}/lfp"]
    lfp = schema.validate(out[f"ecephys/probe/{pid}/lfp"], "ecephys_lfp")
    assert lfp["lfp"].dims == ("time", "channel")
    assert lfp["lfp"].shape == (12500, 96)
    assert lfp["lfp"].dtype == np.float32
    assert lfp["lfp"].attrs["units"] == "V"
    assert isinstance(lfp["lfp"].data, da.Array)
    assert lfp.attrs["probe_id"] == pid
    np.testing.assert_allclose(np.diff(lfp["time"].values), 1 / 1250.0)
    expected_ids = pid * 1000 + np.arange(0, 384, 4)
    np.testing.assert_array_equal(lfp["channel"].values, expected_ids)
    np.testing.assert_array_equal(
        lfp["structure_acronym"].values,
        session["channels.structure_acronym"].sel(channel_id=expected_ids).values,
    )
    np.testing.assert_array_equal(
        lfp["probe_vertical_position"].values, 20 * np.arange(96) * 2 + 20
    )
    # each channel's CCF position (AllenSDK's names), as the session's channels table has it
    for axis in ("anterior_posterior", "dorsal_ventral", "left_right"):
        name = f"{axis}_ccf_coordinate"
        np.testing.assert_array_equal(
            lfp[name].values, session[f"channels.{name}"].sel(channel_id=expected_ids).values
        )
    # chunked in time, all channels in a chunk
    time_chunk, channel_chunk = lfp["lfp"].encoding["chunks"]
    assert time_chunk < lfp.sizes["time"]
    assert channel_chunk == lfp.sizes["channel"]
    with h5py.File(tiny[1], "r") as f:
        raw = f[f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data/data"][:]
    np.testing.assert_array_equal(lfp["lfp"].values, raw)
    assert 0.5e-6 < float(raw.std()) < 1e-3

    csd = schema.validate(out[f"ecephys/probe/{pid}/csd"], "ecephys_csd")
    assert csd["csd"].dims == ("virtual_channel_index", "time")
    np.testing.assert_allclose(np.diff(csd["vertical_position"].values), 40.0)
    assert {"vertical_position", "horizontal_position"} <= set(csd.coords)
    evoked = csd["csd"].sel(time=slice(0.03, 0.1)).mean("time")
    peak_depth = float(csd["vertical_position"][int(np.argmax(np.abs(evoked.values)))])
    l4 = truth["probes"]["probeA"]["l4_center_vertical_position"]
    assert abs(peak_depth - l4) <= 60.0


# --- bad inputs and sniff ----------------------------------------------------------------------


def test_sniff(tiny, tmp_path):
    assert all(reader.sniff(p) for p in tiny)
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    assert not reader.sniff(text)
    assert not reader.sniff(tmp_path / "missing.nwb")
    nwb1 = SHARED / "nwb" / "brain_observatory_496908818_nwb1_truncated.nwb"
    if nwb1.exists():
        assert not reader.sniff(nwb1)


def test_truncated_and_non_hdf5_files_raise(tiny, tmp_path):
    cut = tmp_path / "session_cut.nwb"
    data = tiny[0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceFileError, match="session_cut.nwb"):
        reader.read(cut)
    assert not reader.sniff(cut)
    text = tmp_path / "notes.nwb"
    text.write_text("hello")
    with pytest.raises(SourceFileError, match=r"notes\.nwb: cannot open as HDF5"):
        reader.read(text)


def test_inconsistent_spike_index_raises(tiny, tmp_path):
    broken = tmp_path / "broken.nwb"
    shutil.copy(tiny[0], broken)
    with h5py.File(broken, "r+") as f:
        idx = f["units/spike_times_index"][:]
        del f["units/spike_times_index"]
        f["units/spike_times_index"] = idx[:-1]
    with pytest.raises(SourceFileError, match=r"broken\.nwb: units/spike_times_index"):
        reader.read(broken)


def test_other_nwb_files_are_rejected():
    ecephys = SHARED / "nwb" / "dandi_sub_anm00239123_ecephys_and_ogen.nwb"
    if not ecephys.exists():
        pytest.skip(f"reference data not available at {SHARED}")
    assert not reader.sniff(ecephys)
    with pytest.raises(SourceFileError, match=r"dandi_sub_anm00239123.*intervals/\*_presentations"):
        reader.read(ecephys)
    nwb1 = SHARED / "nwb" / "brain_observatory_496908818_nwb1_truncated.nwb"
    with pytest.raises(SourceFileError, match="expected 2.x"):
        reader.read(nwb1)


def test_mapped_hdf5_globs_cover_the_read_datasets(tiny):
    import fnmatch

    with h5py.File(tiny[0], "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(f"/{n}") if isinstance(o, h5py.Dataset) else None)

    def mapped(name):
        return any(fnmatch.fnmatchcase(name, g) for g in reader.MAPPED_HDF5)

    assert mapped("/units/spike_times")
    assert mapped("/units/snr")
    assert mapped("/intervals/drifting_gratings_presentations/orientation")
    assert not mapped("/intervals/drifting_gratings_presentations/tags")
    assert not mapped("/general/extracellular_ephys/electrodes/group")
    assert not mapped("/processing/stimulus/timestamps/data")
    assert sum(map(mapped, names)) > 50


def test_time_and_position_columns_carry_units(seed_1):
    """The schema: time in s and space in µm, each with ``attrs["units"]``, on every table's
    time and position columns (invalid times, optotagging, LFP channels had none)."""
    from abo_lake import sources

    checked = 0
    for path in seed_1:
        for ds in sources.read(path).values():
            for name, var in ds.variables.items():
                column = str(name).rsplit(".", 1)[-1]
                if column.endswith(("_time", "_times")) or column == "duration":
                    assert var.attrs.get("units") == "s", name
                    checked += 1
                elif column.endswith("_ccf_coordinate") or column.startswith("probe_vertical"):
                    assert var.attrs.get("units") == "um", name
                    checked += 1
    assert checked > 10
