"""Tests of abo_lake.ecephys and the .ecephys accessor against AllenSDK's definitions."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr

import abo_lake
import abo_lake.accessors
from abo_lake import ecephys
from abo_lake.errors import SchemaError
from abo_lake.sources import vcn_ecephys as reader
from abo_lake.synthetic import synthesize
from abo_lake.synthetic.vcn_ecephys import ground_truth
from abo_lake.testing import raise_if_dask_computes

EDGES = np.arange(-0.1, 0.5001, 0.01)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = synthesize("vcn-ecephys", tmp_path_factory.mktemp("vcn"))
        out = {}
        for p in paths:
            out.update(reader.read(p))
    session = next(v for k, v in out.items() if k.startswith("ecephys/session/"))
    lfp = next(v for k, v in out.items() if k.endswith("/lfp"))
    csd = next(v for k, v in out.items() if k.endswith("/csd"))
    return {"paths": paths, "session": session, "lfp": lfp, "csd": csd,
            "truth": ground_truth(paths[0])}  # fmt: skip


@pytest.fixture(scope="module")
def session(tiny):
    return tiny["session"]


@pytest.fixture(scope="module")
def all_units(session):
    return session["unit_id"].values


@pytest.fixture(scope="module")
def lake_session(tiny, tmp_path_factory):
    """The tiny session in a local lake, spike_times in 2048-spike chunks."""
    ds = tiny["session"].chunk({"spike": 2048})
    for name in ("spike_times", "spike_amplitudes"):
        ds[name].encoding["chunks"] = (2048,)
        ds[name].encoding.pop("shards", None)  # unpacked: one dask block per 2048 spikes
    lake = abo_lake.open_lake(str(tmp_path_factory.mktemp("lake")))
    with lake.stage("r1") as st:
        st.write("ecephys/session/1", ds)
    return lake.release("r1")


def _open(release):
    store = release.store("ecephys/session/1")
    ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
    return ds, store


def _unit_spikes(ds):
    flat = np.asarray(ds["spike_times"].values)
    ends = np.asarray(ds["spike_times_index"].values)
    begins = np.r_[0, ends[:-1]]
    return {int(u): flat[a:b] for u, a, b in zip(ds["unit_id"].values, begins, ends)}


def _allen_counts(spikes, unit_ids, starts, edges, binarize=False):
    """AllenSDK build_spike_histogram, verbatim in NumPy."""
    domain = starts[:, None] + edges[None, :]
    out = np.zeros((starts.size, edges.size - 1, len(unit_ids)),
                   np.uint8 if binarize else np.uint16)  # fmt: skip
    for ii, uid in enumerate(unit_ids):
        data = spikes[int(uid)]
        a = np.searchsorted(data, domain[:, :-1].flat)
        b = np.searchsorted(data, domain[:, 1:].flat, side="right")
        out[:, :, ii].flat = (b - a) > 0 if binarize else b - a
    return out


def _col(ds, name):
    return np.asarray(ds[f"stimulus_presentations.{name}"].values)


# --- units ---------------------------------------------------------------------------------------


def test_units_default_filter_matches_allen_definition(session):
    table = session.ecephys.units
    q = session
    keep = ((q.quality.values == "good") & (q.amplitude_cutoff.values <= 0.1)
            & (q.presence_ratio.values >= 0.95) & (q.isi_violations.values <= 0.5)
            & q.valid_data.values & (q.ecephys_structure_acronym.values != ""))  # fmt: skip
    assert set(table.index) == set(q.unit_id.values[keep])
    assert 0 < len(table) < q.sizes["unit_id"]
    assert "waveform_PT_ratio" in table
    assert "L_ratio" in table
    assert "PT_ratio" not in table
    key = list(zip(table["probe_description"], table["probe_vertical_position"]))
    assert key == sorted(key)
    relaxed = session.ecephys.filtered_units(
        amplitude_cutoff_maximum=np.inf, presence_ratio_minimum=-np.inf,
        isi_violations_maximum=np.inf,
    )  # fmt: skip
    assert set(relaxed.index) == set(q.unit_id.values[q.quality.values == "good"])


def test_units_in_structure(session):
    every = session.ecephys.filtered_units(presence_ratio_minimum=0.0)
    visp = session.ecephys.units_in("VISp", presence_ratio_minimum=0.0)
    assert len(visp) > 0
    assert set(visp.index) == set(every.index[every["ecephys_structure_acronym"] == "VISp"])
    with pytest.raises(KeyError, match="VISp"):
        session.ecephys.units_in("VISq")


def test_spike_times_of_one_unit(session):
    spikes = _unit_spikes(session)
    for uid in session["unit_id"].values[[0, 5, -1]]:
        got = session.ecephys.spike_times(int(uid))
        np.testing.assert_array_equal(got.values, spikes[int(uid)])
        assert got.attrs["units"] == "s"
    with pytest.raises(KeyError, match="unit_id"):
        session.ecephys.spike_times(12345)


# --- presentationwise spike counts --------------------------------------------------------------


def test_counts_equal_allensdk_loop(session, all_units):
    got = session.ecephys.presentationwise_spike_counts(bin_edges=EDGES, unit_ids=all_units)
    assert got.name == "spike_counts"
    assert got.dtype == np.uint16
    assert got.dims == ("stimulus_presentation_id", "time_relative_to_stimulus_onset", "unit_id")
    np.testing.assert_allclose(got.time_relative_to_stimulus_onset, EDGES[:-1] + 0.005)
    ref = _allen_counts(_unit_spikes(session), all_units, _col(session, "start_time"), EDGES)
    np.testing.assert_array_equal(got.values, ref)
    assert ref.sum() > 1000


def test_counts_binarized_and_subsets(session, all_units):
    units = all_units[[7, 2, 19]]  # not in file order
    ids = session["stimulus_presentation_id"].values[10:60:3]
    fine = np.arange(0.0, 0.0505, 0.001)
    got = session.ecephys.presentationwise_spike_counts(
        bin_edges=fine, stimulus_presentation_ids=ids, unit_ids=units, binarize=True
    )
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got.unit_id, units)
    np.testing.assert_array_equal(got.stimulus_presentation_id, ids)
    starts = _col(session, "start_time")[ids]
    ref = _allen_counts(_unit_spikes(session), units, starts, fine, binarize=True)
    np.testing.assert_array_equal(got.values, ref)
    wide = session.ecephys.presentationwise_spike_counts(
        bin_edges=[0.0, 0.25], unit_ids=units, dtype=np.int32
    )
    assert wide.dtype == np.int32
    assert wide.shape[1] == 1


def test_counts_take_allensdk_positional_arguments(session, all_units):
    """AllenSDK's call, unchanged: (bin_edges, stimulus_presentation_ids, unit_ids, ...)."""
    units = all_units[[3, 0]]
    ids = session["stimulus_presentation_id"].values[:40]
    by_name = session.ecephys.presentationwise_spike_counts(
        bin_edges=EDGES, stimulus_presentation_ids=ids, unit_ids=units
    )
    got = session.ecephys.presentationwise_spike_counts(EDGES, ids, units)
    xr.testing.assert_identical(got, by_name)
    full = session.ecephys.presentationwise_spike_counts(EDGES, ids, units, False, np.int32, 0.001)
    assert full.dtype == np.int32
    np.testing.assert_array_equal(full.values, by_name.values)
    times = session.ecephys.presentationwise_spike_times(ids, units)
    pd.testing.assert_frame_equal(
        times,
        session.ecephys.presentationwise_spike_times(stimulus_presentation_ids=ids, unit_ids=units),
    )
    rates = session.ecephys.conditionwise_spike_statistics(ids, units, True)
    assert "spike_count" not in rates
    with pytest.warns(UserWarning, match="binarize"):
        session.ecephys.presentationwise_spike_counts(EDGES, ids, units, True)


def test_counts_time_domain_callback(session, all_units):
    """AllenSDK applies the callback to the (presentation, edge) domain before counting."""
    units = all_units[:4]
    shifted = session.ecephys.presentationwise_spike_counts(
        EDGES, None, units, time_domain_callback=lambda d: d + 0.02
    )
    moved = session.ecephys.presentationwise_spike_counts(EDGES + 0.02, None, units)
    np.testing.assert_array_equal(shifted.values, moved.values)
    np.testing.assert_allclose(shifted.time_relative_to_stimulus_onset, EDGES[:-1] + 0.005)
    with pytest.raises(ValueError, match="out-of-order"):
        session.ecephys.presentationwise_spike_counts(
            EDGES, None, units, time_domain_callback=lambda d: d[:, ::-1]
        )


def _handmade():
    """Two units with spikes at known times, one presentation at t=10 s."""
    spikes = np.array([10.0, 10.05, 10.1, 10.2, 9.0, 10.1, 10.1, 11.0])
    ds = xr.Dataset(
        {
            "spike_times": ("spike", spikes),
            "spike_times_index": ("unit_id", np.array([4, 8])),
            "stimulus_presentations.start_time": ("stimulus_presentation_id", [10.0, 20.0]),
            "stimulus_presentations.stop_time": ("stimulus_presentation_id", [10.2, 21.0]),
            "stimulus_presentations.stimulus_condition_id": ("stimulus_presentation_id", [0, 0]),
        },
        coords={"unit_id": [1, 2], "stimulus_presentation_id": [0, 1]},
        attrs={"abo_lake_kind": "ecephys_session"},
    )
    return ds


def test_counts_known_by_construction_including_edges():
    ds = _handmade()
    got = ds.ecephys.presentationwise_spike_counts(
        bin_edges=[0.0, 0.1, 0.2], unit_ids=[1, 2]
    ).values
    # AllenSDK bins are closed: a spike on an inner edge counts in both bins.
    assert got[0, :, 0].tolist() == [3, 2]  # 10.0, 10.05, 10.1 | 10.1, 10.2
    assert got[0, :, 1].tolist() == [2, 2]  # 10.1 twice, in both bins
    assert got[1].sum() == 0
    times = ds.ecephys.presentationwise_spike_times(unit_ids=[1, 2])
    # (start, stop]: 10.0 is excluded (on start), 10.2 is kept (on stop)
    assert times.index.tolist() == [10.05, 10.1, 10.1, 10.1, 10.2]
    assert times["unit_id"].tolist() == [1, 1, 2, 2, 1]
    np.testing.assert_allclose(times["time_since_stimulus_presentation_onset"],
                               [0.05, 0.1, 0.1, 0.1, 0.2])  # fmt: skip
    stats = ds.ecephys.conditionwise_spike_statistics(unit_ids=[1, 2])
    # unit 1 counts (3, 0) and unit 2 counts (2, 0) over the two presentations
    assert stats.loc[(1, 0), "spike_count"] == 3
    assert stats.loc[(2, 0), "spike_count"] == 2
    assert stats.loc[(1, 0), "spike_mean"] == 1.5
    np.testing.assert_allclose(stats.loc[(2, 0), "spike_std"], np.std([2, 0], ddof=1))
    np.testing.assert_allclose(stats.loc[(2, 0), "spike_sem"], np.std([2, 0], ddof=1) / 2**0.5)


def test_counts_with_ties_and_overlapping_windows():
    rng = np.random.default_rng(3)
    spikes = np.sort(np.round(rng.uniform(0, 30, 3000), 2))  # on a 10 ms grid: many ties
    starts = np.round(np.sort(rng.uniform(1, 28, 120)), 2)  # windows overlap
    ds = xr.Dataset(
        {
            "spike_times": ("spike", np.r_[spikes, spikes[:50]]),
            "spike_times_index": ("unit_id", np.array([3000, 3050])),
            "stimulus_presentations.start_time": ("stimulus_presentation_id", starts),
            "stimulus_presentations.stop_time": ("stimulus_presentation_id", starts + 0.3),
        },
        coords={"unit_id": [1, 2], "stimulus_presentation_id": np.arange(120)},
    )
    spikes_by_unit = {1: spikes, 2: spikes[:50]}
    for edges in (EDGES, np.array([0.0, 0.05, 0.05, 0.1]), np.arange(0.0, 0.301, 0.1)):
        got = ds.ecephys.presentationwise_spike_counts(bin_edges=edges, unit_ids=[1, 2])
        np.testing.assert_array_equal(got.values, _allen_counts(spikes_by_unit, [1, 2],
                                                                starts, edges))  # fmt: skip


# --- tables --------------------------------------------------------------------------------------


def _allen_spike_times(spikes, unit_ids, starts, stops, pres_ids):
    """AllenSDK presentationwise_spike_times (sorted, non-overlapping presentations)."""
    bounds = np.zeros(starts.size * 2)
    bounds[::2], bounds[1::2] = starts, stops
    rows = []
    for uid in unit_ids:
        data = spikes[int(uid)]
        idx = np.searchsorted(bounds, data) - 1
        ok = (idx % 2 == 0) & (idx >= 0)
        for t, i in zip(data[ok], idx[ok] // 2):
            rows.append((t, pres_ids[i], int(uid), t - starts[i]))
    return pd.DataFrame(rows, columns=["spike_time", "stimulus_presentation_id", "unit_id",
                                       "time_since"]).sort_values("spike_time")  # fmt: skip


def test_presentationwise_spike_times_equal_allensdk(session, all_units):
    names = _col(session, "stimulus_name")
    ids = session["stimulus_presentation_id"].values[names != "spontaneous"]
    got = session.ecephys.presentationwise_spike_times(
        stimulus_presentation_ids=ids, unit_ids=all_units
    )
    ref = _allen_spike_times(_unit_spikes(session), all_units, _col(session, "start_time")[ids],
                             _col(session, "stop_time")[ids], ids)  # fmt: skip
    assert got.index.name == "spike_time"
    assert len(got) == len(ref) > 1000
    key = ["spike_time", "unit_id"]
    a = got.reset_index().sort_values(key).to_numpy(float)
    b = ref.sort_values(key).to_numpy(float)
    np.testing.assert_allclose(a, b)


def _allen_conditionwise(session, unit_ids, cond, ids=None):
    """AllenSDK conditionwise_spike_statistics in pandas: a groupby on ``cond`` (NaN left out)."""
    ids = np.arange(cond.size) if ids is None else np.asarray(ids)
    starts, stops = _col(session, "start_time")[ids], _col(session, "stop_time")[ids]
    spikes = _unit_spikes(session)
    counts = {}
    for uid in unit_ids:
        s = spikes[int(uid)]
        counts[uid] = np.searchsorted(s, stops, "right") - np.searchsorted(s, starts, "right")
    long = pd.DataFrame({"unit_id": np.repeat(unit_ids, ids.size),
                         "stimulus_condition_id": np.tile(cond[ids], len(unit_ids)),
                         "c": np.concatenate([counts[u] for u in unit_ids])})  # fmt: skip
    g = long.groupby(["stimulus_condition_id", "unit_id"])["c"]
    ref = pd.DataFrame({"spike_count": g.sum(), "stimulus_presentation_count": g.size(),
                        "spike_mean": g.mean(), "spike_std": g.std(ddof=1),
                        "spike_sem": g.agg(scipy.stats.sem)})  # fmt: skip
    return ref.reset_index().set_index(["unit_id", "stimulus_condition_id"])


def test_conditionwise_statistics_equal_pandas_reference(session, all_units):
    got = session.ecephys.conditionwise_spike_statistics(unit_ids=all_units)
    starts, stops = _col(session, "start_time"), _col(session, "stop_time")
    cond = _col(session, "stimulus_condition_id")
    ref = _allen_conditionwise(session, all_units, cond)
    assert list(got.columns) == list(ref.columns)
    assert got.index.tolist() == ref.index.tolist()
    np.testing.assert_allclose(got.to_numpy(float), ref.to_numpy(float), equal_nan=True)
    rates = session.ecephys.conditionwise_spike_statistics(unit_ids=all_units, use_rates=True)
    assert "spike_count" not in rates
    dur = pd.Series(stops - starts).groupby(cond).first()
    expect = got["spike_mean"] / dur.reindex(got.index.get_level_values(1)).to_numpy()
    np.testing.assert_allclose(rates["spike_mean"], expect)


def test_psth_is_mean_rate_per_condition(session, all_units):
    names = _col(session, "stimulus_name")
    ids = session["stimulus_presentation_id"].values[names == "flashes"]
    got = session.ecephys.psth(bin_edges=EDGES, stimulus_presentation_ids=ids,
                               unit_ids=all_units)  # fmt: skip
    counts = session.ecephys.presentationwise_spike_counts(
        bin_edges=EDGES, stimulus_presentation_ids=ids, unit_ids=all_units
    ).values.astype(float)
    cond = _col(session, "stimulus_condition_id")[ids]
    assert got.dims[0] == "stimulus_condition_id"
    assert got.attrs["units"] == "Hz"
    for k, c in enumerate(got.stimulus_condition_id.values):
        np.testing.assert_allclose(got.values[k], counts[cond == c].mean(0) / 0.01)


def test_drifting_gratings_metrics_recover_ground_truth(tiny, session, all_units):
    got = session.ecephys.drifting_gratings_metrics(unit_ids=all_units)
    truth = pd.DataFrame(tiny["truth"]["units"]).set_index("unit_id").loc[got.index]
    tuned = truth["tuned"].to_numpy(bool)
    assert tuned.sum() >= 5
    np.testing.assert_array_equal(got["pref_ori_dg"][tuned], truth["pref_ori"][tuned])
    np.testing.assert_array_equal(got["pref_tf_dg"][tuned], truth["pref_tf"][tuned])
    assert got["g_osi_dg"][tuned].min() > got["g_osi_dg"][~tuned].median()
    # the definitions, recomputed from conditionwise statistics
    names = _col(session, "stimulus_name")
    ids = session["stimulus_presentation_id"].values[names == "drifting_gratings"]
    stats = session.ecephys.conditionwise_spike_statistics(
        stimulus_presentation_ids=ids, unit_ids=all_units
    )
    ori = pd.Series(_col(session, "orientation"), index=_col(session, "stimulus_condition_id"))
    tf = pd.Series(_col(session, "temporal_frequency"),
                   index=_col(session, "stimulus_condition_id"))  # fmt: skip
    ori, tf = ori.groupby(level=0).first(), tf.groupby(level=0).first()
    for uid in all_units[:6]:
        m = stats.loc[uid, "spike_mean"]
        pref_tf = m.groupby(tf.loc[m.index].to_numpy()).mean().idxmax()
        at = m[tf.loc[m.index].to_numpy() == pref_tf]
        theta = np.deg2rad(ori.loc[at.index].to_numpy())
        r = at.to_numpy()
        osi = np.abs(np.sum(r * np.exp(2j * theta))) / r.sum()
        dsi = np.abs(np.sum(r * np.exp(1j * theta))) / r.sum()
        np.testing.assert_allclose(got.loc[uid, ["g_osi_dg", "g_dsi_dg"]], [osi, dsi])
        s = _unit_spikes(session)[int(uid)]
        start, stop = _col(session, "start_time")[ids], _col(session, "stop_time")[ids]
        # AllenSDK: over stimulus blocks (gaps > 2 trial durations split them); one block here
        block = np.searchsorted(s, stop[-1]) - np.searchsorted(s, start[0])
        rate = block / (stop[-1] - start[0])
        np.testing.assert_allclose(got.loc[uid, "firing_rate_dg"], rate)
        pref_cond = m.idxmax()
        sel = _col(session, "stimulus_condition_id")[ids] == pref_cond
        c = np.searchsorted(s, start[sel] + 2.0, "right") - np.searchsorted(s, start[sel])
        np.testing.assert_allclose(got.loc[uid, "fano_dg"], np.var(c) / np.mean(c))


# --- invalid presentations -----------------------------------------------------------------------


def _with_invalid(session, intervals):
    """The session with its invalid_times replaced by ``[(start, stop, tags), ...]``."""
    ds = session.drop_vars([k for k in session.variables if str(k).startswith("invalid_time")])
    tags = [t for _, _, tt in intervals for t in tt]
    ends = np.cumsum([len(tt) for _, _, tt in intervals])
    return ds.assign(
        {
            "invalid_times.start_time": ("invalid_time_id", [a for a, _, _ in intervals]),
            "invalid_times.stop_time": ("invalid_time_id", [b for _, b, _ in intervals]),
            "invalid_times.tags": ("invalid_time_tag", tags),
            "invalid_times.tags_index": ("invalid_time_id", ends),
        }
    ).assign_coords(invalid_time_id=np.arange(len(intervals)))


def _allen_mask(table, invalid):
    """AllenSDK EcephysSession._mask_invalid_stimulus_presentations, verbatim in pandas."""
    table = table.astype(object)
    invalid = invalid[invalid["tags"].apply(lambda x: any(t in x for t in ["stimulus"]))]
    for ix_sp, sp in table.iterrows():
        stim_epoch = sp["start_time"], sp["stop_time"]
        for _, it in invalid.iterrows():
            invalid_interval = it["start_time"], it["stop_time"]
            if max(stim_epoch[0], invalid_interval[0]) <= min(stim_epoch[1], invalid_interval[1]):
                table.loc[ix_sp, :] = np.nan
                table.at[ix_sp, "stimulus_name"] = "invalid_presentation"
                table.at[ix_sp, "start_time"] = stim_epoch[0]
                table.at[ix_sp, "stop_time"] = stim_epoch[1]
    return table


@pytest.fixture(scope="module")
def invalid_intervals(session):
    """Two intervals tagged "stimulus" and one tagged only with a probe, plus the ids masked."""
    start, stop = _col(session, "start_time"), _col(session, "stop_time")
    names = _col(session, "stimulus_name")
    assert list(names[:4]) == ["flashes"] * 4
    assert stop[1] < start[2] < stop[2] < start[3]
    dg = np.flatnonzero(names == "drifting_gratings")[10]
    ns = np.flatnonzero(names == "natural_scenes")
    pid = int(session["probe"].values[0])
    probe = str(session["probes.description"].sel(probe=pid).values)
    intervals = [
        # closed overlap: touches flash 1 at its stop and flash 3 at its start
        (stop[1], start[3], ["EcephysSession", "stimulus"]),
        (start[dg] + 0.5, start[dg + 3] + 0.1, ["stimulus"]),
        (start[ns[5]], stop[ns[20]], ["EcephysProbe", str(pid), probe]),  # masks nothing
    ]
    return intervals, [1, 2, 3, dg, dg + 1, dg + 2, dg + 3]


@pytest.fixture(scope="module")
def masked_session(session, invalid_intervals):
    return _with_invalid(session, invalid_intervals[0])


def test_stimulus_presentations_mask_invalid_as_allensdk(session, masked_session,
                                                          invalid_intervals):  # fmt: skip
    intervals, bad = invalid_intervals
    raw = session.ecephys.stimulus_presentations
    prefix = "stimulus_presentations."
    # AllenSDK leaves out stimulus_index and the detailed parameters (mask, opacity, units...)
    left_out = {"stimulus_index", *ecephys.DETAILED_STIMULUS_PARAMETERS}
    assert list(raw.columns) == [k.removeprefix(prefix) for k in session.data_vars
                                 if k.startswith(prefix)
                                 and k.removeprefix(prefix) not in left_out]  # fmt: skip
    assert raw.index.name == "stimulus_presentation_id"
    for col in ("start_time", "stop_time", "stimulus_name", "stimulus_condition_id"):
        np.testing.assert_array_equal(raw[col].to_numpy(), _col(session, col))
    assert "invalid_presentation" not in set(raw["stimulus_name"])
    assert raw["stimulus_condition_id"].dtype == np.int64
    assert pd.api.types.is_string_dtype(raw["stimulus_name"])

    got = masked_session.ecephys.stimulus_presentations
    invalid = np.asarray(bad)
    assert got.index[got["stimulus_name"] == "invalid_presentation"].tolist() == bad
    kept = ["start_time", "stop_time", "stimulus_name"]
    assert got.drop(columns=kept).loc[invalid].isna().all(axis=None)
    pd.testing.assert_frame_equal(got[["start_time", "stop_time"]],
                                  raw[["start_time", "stop_time"]])  # fmt: skip
    good = got.index.difference(invalid)
    pd.testing.assert_frame_equal(got.loc[good].astype(object), raw.loc[good].astype(object))
    assert got["stimulus_condition_id"].dtype == np.float64  # NaN, as in AllenSDK
    assert pd.api.types.is_string_dtype(got["stimulus_name"])
    assert got["phase"].dtype == object  # text and NaN, as in AllenSDK
    assert got["phase"].isna().sum() == len(bad)

    frame = pd.DataFrame(intervals, columns=["start_time", "stop_time", "tags"])
    ref = _allen_mask(raw, frame)
    pd.testing.assert_frame_equal(got.astype(object), ref)
    # an interval tagged only with a probe masks nothing
    probe_only = _with_invalid(session, intervals[2:])
    pd.testing.assert_frame_equal(probe_only.ecephys.stimulus_presentations, raw)


def test_conditionwise_statistics_leave_out_invalid_presentations(
    session, masked_session, invalid_intervals, all_units
):
    _, bad = invalid_intervals
    units = all_units[:6]
    raw_cond = _col(session, "stimulus_condition_id")
    before = session.ecephys.conditionwise_spike_statistics(unit_ids=units)
    after = masked_session.ecephys.conditionwise_spike_statistics(unit_ids=units)
    # stimulus_presentation_count drops by exactly the masked presentations of each condition
    dropped = pd.Series(raw_cond[bad]).value_counts()
    n_before = before["stimulus_presentation_count"].xs(units[0], level="unit_id")
    n_after = after["stimulus_presentation_count"].xs(units[0], level="unit_id")
    diff = n_before.sub(n_after.reindex(n_before.index, fill_value=0))
    assert diff[diff > 0].sort_index().to_dict() == dropped.sort_index().to_dict()
    assert n_before.sum() - n_after.sum() == len(bad)
    # AllenSDK: a groupby over the masked table's condition ids (NaN rows in no group)
    cond = masked_session.ecephys.stimulus_presentations["stimulus_condition_id"].to_numpy()
    assert np.isnan(cond).sum() == len(bad)
    for ids in (None, np.flatnonzero(np.isin(_col(session, "stimulus_name"),
                                             ["flashes", "drifting_gratings"]))):  # fmt: skip
        got = masked_session.ecephys.conditionwise_spike_statistics(
            stimulus_presentation_ids=ids, unit_ids=units
        )
        ref = _allen_conditionwise(session, units, cond, ids)
        assert got.index.tolist() == ref.index.tolist()
        np.testing.assert_allclose(got.to_numpy(float), ref.to_numpy(float), equal_nan=True)
    with pytest.raises(ValueError, match="invalid_presentation"):
        masked_session.ecephys.conditionwise_spike_statistics(
            stimulus_presentation_ids=bad[:3], unit_ids=units
        )
    # presentationwise counts still cover the masked presentations (start/stop are kept)
    counts = masked_session.ecephys.presentationwise_spike_counts(
        bin_edges=EDGES, stimulus_presentation_ids=bad, unit_ids=units
    )
    np.testing.assert_array_equal(counts.stimulus_presentation_id, bad)
    ref = _allen_counts(_unit_spikes(session), units, _col(session, "start_time")[bad], EDGES)
    np.testing.assert_array_equal(counts.values, ref)
    times = masked_session.ecephys.presentationwise_spike_times(unit_ids=units)
    assert set(bad) <= set(times["stimulus_presentation_id"])
    # psth: a masked presentation is in no condition either
    flashes = np.flatnonzero(_col(session, "stimulus_name") == "flashes")
    psth = masked_session.ecephys.psth(bin_edges=EDGES, stimulus_presentation_ids=flashes,
                                       unit_ids=units)  # fmt: skip
    valid = flashes[~np.isin(flashes, bad)]
    all_counts = session.ecephys.presentationwise_spike_counts(
        bin_edges=EDGES, stimulus_presentation_ids=valid, unit_ids=units
    ).values.astype(float)
    for k, c in enumerate(psth.stimulus_condition_id.values):
        np.testing.assert_allclose(psth.values[k], all_counts[raw_cond[valid] == c].mean(0) / 0.01)


# --- laziness, partial reads, cluster ------------------------------------------------------------


def test_building_reads_no_spikes_and_compute_reads_only_needed_chunks(lake_session):
    ds, store = _open(lake_session)
    ends = np.asarray(ds["spike_times_index"].values)
    uid = ds["unit_id"].values[[3, 4]]
    reads0 = store.chunk_reads
    with raise_if_dask_computes(max_computes=1):  # one compute: the tiny offsets + start times
        counts = ds.ecephys.presentationwise_spike_counts(bin_edges=EDGES, unit_ids=uid)
    with raise_if_dask_computes(max_computes=1):  # one compute: two offsets
        one = ds.ecephys.spike_times(int(uid[0]))
    assert isinstance(counts.data, dask.array.Array)
    built = store.chunk_reads - reads0
    assert built <= 6  # metadata chunks only (index, start times, unit index for the slice)
    reads1 = store.chunk_reads
    with dask.config.set(scheduler="synchronous"):
        values = counts.values
    first, last = int(ends[2]), int(ends[4])
    touched = len(range(first // 2048, (last - 1) // 2048 + 1))
    assert store.chunk_reads - reads1 == touched < ds["spike_times"].data.numblocks[0]
    reads2 = store.chunk_reads
    with dask.config.set(scheduler="synchronous"):
        times = one.values
    assert store.chunk_reads - reads2 == len(range(first // 2048, (int(ends[3]) - 1) // 2048 + 1))
    assert values.sum() > 0
    assert times.size == ends[3] - ends[2]


def test_invalid_masking_reads_metadata_in_one_compute(lake_session):
    ds, _ = _open(lake_session)
    with raise_if_dask_computes(max_computes=1):  # presentation columns + invalid_times together
        table = ds.ecephys.stimulus_presentations
    assert len(table) == ds.sizes["stimulus_presentation_id"]
    assert pd.api.types.is_string_dtype(table["stimulus_name"])
    assert "invalid_presentation" not in set(table["stimulus_name"])  # only a probe interval
    with raise_if_dask_computes(max_computes=2):  # metadata, then the spike counts
        stats = ds.ecephys.conditionwise_spike_statistics(unit_ids=ds["unit_id"].values[:3])
    assert stats["stimulus_presentation_count"].sum() == 3 * len(table)


def test_graph_has_one_task_per_unit_block(lake_session):
    ds, _ = _open(lake_session)
    counts = ds.ecephys.presentationwise_spike_counts(
        bin_edges=EDGES, unit_ids=ds["unit_id"].values
    )
    n_chunks = ds["spike_times"].data.numblocks[0]
    blocks = counts.data.numblocks[2]
    assert blocks <= ds.sizes["unit_id"]
    assert blocks >= n_chunks // 2
    tasks = len(dict(counts.data.__dask_graph__()))
    assert tasks <= blocks + 2 * n_chunks + 10


def test_counts_on_dask_cluster_from_s3_equal_threaded(tiny, s3_bucket, s3_options, dask_client):
    lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", **s3_options)
    ds = tiny["session"].chunk({"spike": 4096})
    ds["spike_times"].encoding["chunks"] = (4096,)
    ds["spike_amplitudes"].encoding["chunks"] = (4096,)
    with lake.stage("r1") as st:
        st.write("ecephys/session/1", ds)
    opened = lake.release("r1").open("ecephys/session/1")
    units = opened["unit_id"].values
    counts = opened.ecephys.presentationwise_spike_counts(bin_edges=EDGES, unit_ids=units)
    on_cluster = dask_client.compute(counts.sum("stimulus_presentation_id")).result()
    with dask.config.set(scheduler="threads"):
        threaded = counts.sum("stimulus_presentation_id").compute()
    np.testing.assert_array_equal(on_cluster.values, threaded.values)
    assert threaded.values.sum() > 0


# --- LFP and CSD ---------------------------------------------------------------------------------


def test_lfp_window_channels_structure(tiny):
    ds = tiny["lfp"]
    with raise_if_dask_computes():
        win = ds.ecephys.lfp(time=slice(2.0, 3.0))
    assert win.name == "LFP"
    assert win.dims == ("time", "channel")
    assert float(win.time[0]) >= 2.0
    assert float(win.time[-1]) <= 3.0
    np.testing.assert_array_equal(win.values, ds["lfp"].sel(time=slice(2.0, 3.0)).values)
    chans = ds["channel"].values[[5, 1]]
    np.testing.assert_array_equal(ds.ecephys.lfp(channels=chans).channel, chans)
    acr = ds["structure_acronym"].values
    ca1 = ds.ecephys.lfp(structure="CA1")
    assert ca1.sizes["channel"] == (acr == "CA1").sum() > 0
    with pytest.raises(KeyError, match="CA1"):
        ds.ecephys.lfp(structure="CA2x")
    with pytest.raises(ValueError, match="outside the recording"):
        ds.ecephys.lfp(time=(100.0, 200.0))
    with pytest.raises(KeyError, match="channel"):
        ds.ecephys.lfp(channels=[1])


def test_lfp_invalid_times_masked(tiny):
    ds, session = tiny["lfp"], tiny["session"]
    pid = ds.attrs["probe_id"]
    name = str(session["probes.description"].sel(probe=pid).values)
    bad = session.copy()
    bad["invalid_times.start_time"] = ("invalid_time_id", [2.0])
    bad["invalid_times.stop_time"] = ("invalid_time_id", [2.5])
    bad["invalid_times.tags"] = ("invalid_time_tag", ["EcephysProbe", "0", name])
    with raise_if_dask_computes(max_computes=1):
        masked = ds.ecephys.lfp(time=(1.0, 4.0), invalid_times=bad)
    t = masked.time.values
    inside = (t >= 2.0) & (t <= 2.5)
    assert np.isnan(masked.values[inside]).all()
    assert not np.isnan(masked.values[~inside]).any()
    frame = pd.DataFrame({"start_time": [3.0], "stop_time": [3.1],
                          "tags": [["EcephysProbe", "9", "probeZ"]]})  # fmt: skip
    untouched = ds.ecephys.lfp(time=(1.0, 4.0), invalid_times=frame)
    assert not np.isnan(untouched.values).any()
    frame["tags"] = [["EcephysSession", "1", "all_probes"]]
    assert np.isnan(ds.ecephys.lfp(invalid_times=frame).sel(time=3.05, method="nearest")).all()


def test_csd(tiny):
    ds = tiny["csd"]
    got = ds.ecephys.csd
    assert got.name == "CSD"
    assert got.dims == ("virtual_channel_index", "time")
    assert {"vertical_position", "horizontal_position"} <= set(got.coords)
    assert np.all(np.diff(got.vertical_position.values) > 0)
    # the evoked sink: most negative CSD shortly after the flash, near the L4 centre
    l4 = next(iter(tiny["truth"]["probes"].values()))["l4_center_vertical_position"]
    after = got.sel(time=slice(0.03, 0.12))
    depth = float(after.vertical_position[int(np.argmin(after.min("time").values))])
    assert abs(depth - l4) < 200.0


# --- errors and repr -----------------------------------------------------------------------------


class TestEcephysErrors:
    def test_wrong_kind(self):
        ds = xr.Dataset({"dff": (("cell_specimen_id", "time"), np.zeros((2, 3)))},
                        attrs={"abo_lake_kind": "ophys_experiment"})  # fmt: skip
        with pytest.raises(SchemaError, match="ecephys_session, ecephys_lfp or ecephys_csd"):
            _ = ds.ecephys

    def test_session_method_on_lfp(self, tiny):
        with pytest.raises(SchemaError, match="ecephys_session"):
            tiny["lfp"].ecephys.presentationwise_spike_counts(bin_edges=EDGES)
        with pytest.raises(SchemaError, match="ecephys_lfp"):
            _ = tiny["session"].ecephys.lfp()

    def test_missing_variable(self):
        ds = _handmade().drop_vars("spike_times_index")
        with pytest.raises(SchemaError, match="spike_times_index"):
            _ = ds.ecephys

    @pytest.mark.parametrize("edges", [[0.1], [0.2, 0.1], [[0.0, 0.1]]])
    def test_bad_edges(self, edges):
        with pytest.raises(ValueError, match="bin_edges"):
            _handmade().ecephys.presentationwise_spike_counts(bin_edges=edges, unit_ids=[1])

    def test_unknown_ids_and_empty_selection(self, session):
        with pytest.raises(KeyError, match="stimulus_presentation_id"):
            session.ecephys.presentationwise_spike_counts(
                bin_edges=EDGES, stimulus_presentation_ids=[10**6]
            )
        with pytest.raises(ValueError, match="no units selected"):
            session.ecephys.presentationwise_spike_counts(bin_edges=EDGES, unit_ids=[])
        with pytest.raises(KeyError, match="drifting_gratings"):
            session.ecephys.drifting_gratings_metrics(stimulus_name="drifting_grating")

    def test_repr(self, tiny):
        assert "units" in repr(tiny["session"].ecephys)
        assert "channels" in repr(tiny["lfp"].ecephys)
        assert "virtual channels" in repr(tiny["csd"].ecephys)


def test_drifting_grating_metrics_leave_out_invalid_presentations(session):
    """AllenSDK's analyses select presentations by stimulus_name, which masking renames to
    invalid_presentation: with every grating masked, nothing is left to measure."""
    start, stop = _col(session, "start_time"), _col(session, "stop_time")
    dg = np.flatnonzero(_col(session, "stimulus_name") == "drifting_gratings")
    assert session.ecephys.drifting_gratings_metrics() is not None
    masked = _with_invalid(session, [(start[dg[0]], stop[dg[-1]], ["stimulus"])])
    with pytest.raises(ValueError, match="invalid_presentation"):
        masked.ecephys.drifting_gratings_metrics()


def test_mean_waveforms_are_allensdks(session, tiny):
    """AllenSDK's session.mean_waveforms[unit_id]: (channel_id, time), channel ids of the
    unit's probe by on-probe channel number, time = sample / the probe's sampling rate."""
    import h5py

    unit_id = int(session["unit_id"].values[5])
    with raise_if_dask_computes(max_computes=1):  # the small metadata only
        wf = session.ecephys.mean_waveforms(unit_id)
    assert wf.dims == ("channel_id", "time")
    pos = int(np.flatnonzero(session["unit_id"].values == unit_id)[0])
    with h5py.File(tiny["paths"][0], "r") as f:
        rows = f["units/waveform_mean"][()]
        electrodes = f["general/extracellular_ephys/electrodes"]
        numbers = "local_index" if "local_index" in electrodes else "probe_channel_number"
        ids, number, probe, valid = (electrodes[k][()] for k in ("id", numbers, "probe_id",
                                                                  "valid_data"))  # fmt: skip
    per = rows.shape[0] // session.sizes["unit_id"]
    unit_probe = int(session["probe_id"].values[pos])
    # AllenSDK maps channel numbers through session.channels: the valid channels only
    lookup = {int(n): int(i) for i, n, p, v in zip(ids, number, probe, valid)
              if p == unit_probe and v}  # fmt: skip
    want_ids = [lookup[c] for c in range(per) if c in lookup]
    np.testing.assert_array_equal(wf["channel_id"].values, want_ids)
    keep = [c for c in range(per) if c in lookup]
    np.testing.assert_array_equal(wf.values, rows[pos * per : (pos + 1) * per][keep])
    rate = float(session["probe_sampling_rate"].values[pos])
    np.testing.assert_allclose(wf["time"].values, np.arange(rows.shape[1]) / rate)
    with pytest.raises(KeyError):
        session.ecephys.mean_waveforms(-1)


# --- counts: the sparse kernel, the streaming .values, the PSTH from the same bins ---------------


def _stretch_rows(d):
    """Rows stretched by 1-7x (far from the first row's edges): the exact fallback."""
    return d[:, :1] + (d - d[:, :1]) * (1.0 + np.arange(d.shape[0])[:, None] % 7)


@pytest.mark.parametrize(
    ("edges", "callback"),
    [
        (np.arange(-0.1, 0.5001, 0.001), None),  # 1 ms bins: mostly empty
        (np.array([0.0, 0.01, 0.01, 0.02, 0.05, 0.05, 0.05, 0.3]), None),  # zero-width bins
        (np.arange(0.0, 0.2001, 0.01), _stretch_rows),
    ],
)
def test_many_unit_counts_equal_per_unit_counts(lake_session, session, all_units, edges, callback):
    """From the lake (spikes in 2048-spike chunks: several unit blocks), ``.values`` (one
    result filled block by block), dask's compute and one unit at a time all equal AllenSDK's
    loop."""
    ds = lake_session.open("ecephys/session/1")
    counts = ds.ecephys.presentationwise_spike_counts(
        edges, None, all_units, time_domain_callback=callback
    )
    assert counts.data.numblocks[2] > 1
    values = counts.values
    assert values.flags.c_contiguous
    (computed,) = dask.compute(counts.data)
    np.testing.assert_array_equal(values, computed)
    np.testing.assert_array_equal(counts.data.sum(axis=1).compute(), values.sum(axis=1))
    starts = _col(session, "start_time")
    if callback is None:
        ref = _allen_counts(_unit_spikes(session), all_units, starts, edges)
        np.testing.assert_array_equal(values, ref)
    for k in (0, 3, len(all_units) - 1):
        one = ds.ecephys.presentationwise_spike_counts(
            edges, None, [all_units[k]], time_domain_callback=callback
        )
        np.testing.assert_array_equal(one.values[:, :, 0], values[:, :, k])
    assert values.sum() > 100


def test_counts_values_hold_one_result(session, all_units):
    """``.values`` writes every block into one array: the peak is about the result, where
    dask's compute holds all blocks and then copies them (twice the result)."""
    import tracemalloc

    fine = np.arange(-0.1, 0.5001, 0.001)
    counts = session.ecephys.presentationwise_spike_counts(fine, None, all_units)
    with dask.config.set(scheduler="threads"):
        tracemalloc.start()
        values = counts.values
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert values.nbytes > 1_000_000
    assert peak < 1.3 * values.nbytes


def test_psth_from_sparse_bins_equals_the_mean_of_counts(session, all_units):
    ids = session["stimulus_presentation_id"].values[:200]
    fine = np.arange(-0.05, 0.3001, 0.001)
    got = session.ecephys.psth(bin_edges=fine, stimulus_presentation_ids=ids, unit_ids=all_units)
    counts = session.ecephys.presentationwise_spike_counts(fine, ids, all_units).values
    cond = _col(session, "stimulus_condition_id")[ids]
    for k, c in enumerate(got.stimulus_condition_id.values):
        want = counts[cond == c].mean(0) / np.diff(fine)[:, None]
        np.testing.assert_allclose(got.values[k], want, rtol=1e-12)
    assert got.values.sum() > 0
