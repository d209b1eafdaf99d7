"""Parity of the lake's Neuropixels sessions with AllenSDK 2.16.2, on the AllenSDK-written fixtures.

One parametrised test per fixture and kind of quantity, over the names the reference holds
(``tests/allensdk_reference.py``): what the lake serves through ``Release.open`` and the
``.ecephys`` accessor is compared with what AllenSDK's own readers returned from the same files
(``EcephysSession`` for Visual Coding Neuropixels, ``BehaviorEcephysSession`` for Visual Behavior
Neuropixels): index name and values, column names (as sets: AllenSDK's order is hash-seed
dependent), dtypes and values. Integers, ids, strings and stored floats are compared exactly;
quantities AllenSDK computes in floating point (spike statistics) with ``np.allclose`` at the
tolerance stated beside them. A quantity the lake does not serve yet is marked
``xfail(strict=True)`` with the reason, so the list of gaps stays visible. Everything skips when
``shared/data/allensdk`` is absent.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import allensdk_reference as ref
import numpy as np
import pandas as pd
import pytest

import abo_lake.accessors  # noqa: F401  (registers .ecephys)

VCN, VBN = ref.STEMS["vcn"], ref.STEMS["vbn"]

#: Reference entries that are inputs of a call or notes about the fixture, not lake quantities.
NOT_QUANTITIES = {
    VCN: {"psc_bin_edges", "lfp_probe_id", "reader", "unpatched_writer_failures"},
    VBN: {"lfp_probe_id", "reader"},
}

#: Columns AllenSDK takes from outside the NWB file (``external_channel_columns``, i.e. the
#: project's channels.csv), which no reader of the file can serve.
EXTERNAL = {
    (VCN, "units"): {"ecephys_structure_id"},
    (VCN, "channels"): {"ecephys_structure_id"},
}

#: VBN quantities of the behavior part, read by the Visual Behavior reader
#: (``sources/_vb_behavior.py``) and served through :mod:`abo_lake.behavior`.
VBN_BEHAVIOR_TABLES = ("trials", "licks", "rewards", "running_speed", "raw_running_speed",
                       "stimulus_presentations", "eye_tracking")  # fmt: skip

#: (stem, name) -> why the lake does not serve it yet (strict xfail).
#: (VBN's get_rolling_performance_df, get_reward_rate and get_performance_metrics are served by
#: abo_lake.task_performance; tests/test_allensdk_task_performance.py tests them per column/key)
GAPS: dict[tuple[str, str], str] = {}


# --- opening what the lake serves -------------------------------------------------------------


def _session(rel: Any) -> Any:
    (path,) = rel.datasets("ecephys/session/")
    return rel.open(path)


def _probe(rel: Any, stem: str, what: str) -> Any:
    pid = int(ref.array(stem, "lfp_probe_id"))
    return rel.open(f"ecephys/probe/{pid}/{what}")


# --- comparisons ------------------------------------------------------------------------------


def _is_text(series: pd.Series) -> bool:
    return series.dtype == object or pd.api.types.is_string_dtype(series.dtype)


def _json_value(text: Any) -> Any:
    value = json.loads(text) if isinstance(text, str) else text
    return np.nan if value is None else value


def _same(a: Any, b: Any) -> bool:
    """Exact equality of scalars, NaN equal to NaN, a float never equal to a string."""
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return (a is None or pd.isna(a)) and (b is None or pd.isna(b))
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return (np.isnan(a) and np.isnan(b)) or a == b
    return bool(a == b)


def _compare_column(stem: str, table: str, column: str, got: pd.Series, want: pd.Series,
                    rtol: float | None) -> None:  # fmt: skip
    info = ref.table_info(stem, table)["columns"][column]
    enc, dtype = info["encoding"], info["dtype"]
    where = f"{table}.{column}"
    if enc.startswith(("ragged", "stacked")):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape, f"{where}[{i}]: shape {g.shape} != {w.shape}"
            if w.dtype.kind in "US" or g.dtype.kind in "OUT":
                assert [str(x) for x in g.ravel()] == [str(x) for x in w.ravel()], where
            else:
                np.testing.assert_array_equal(g, w, err_msg=where)
        return
    if enc.startswith("json"):
        assert got.dtype == object, f"{where}: dtype {got.dtype}, AllenSDK object"
        w = [_json_value(x) for x in want]
        bad = [i for i, (a, b) in enumerate(zip(got.tolist(), w, strict=True)) if not _same(a, b)]
        assert not bad, f"{where}: rows {bad[:5]} differ: {got.iloc[bad[:3]].tolist()} vs " + str(
            [w[i] for i in bad[:3]]
        )
        return
    if enc.startswith("str"):
        assert _is_text(got), f"{where}: dtype {got.dtype}, AllenSDK {dtype}"
        g = [None if (x is None or (isinstance(x, float) and np.isnan(x))) else str(x)
             for x in got.tolist()]  # fmt: skip
        w = [None if (x is None or (isinstance(x, float) and np.isnan(x))) else str(x)
             for x in want.tolist()]  # fmt: skip
        bad = [i for i, (a, b) in enumerate(zip(g, w, strict=True)) if a != b]
        assert not bad, f"{where}: rows {bad[:5]} differ: {[g[i] for i in bad[:3]]} vs " + str(
            [w[i] for i in bad[:3]]
        )
        return
    if dtype == "boolean":  # nullable boolean, stored as float64 1/0/NaN
        assert str(got.dtype) == "boolean", f"{where}: dtype {got.dtype}, AllenSDK boolean"
        np.testing.assert_array_equal(
            got.astype("Float64").to_numpy(np.float64, na_value=np.nan),
            want.to_numpy(np.float64),
            err_msg=where,
        )
        return
    assert str(got.dtype) == dtype, f"{where}: dtype {got.dtype}, AllenSDK {dtype}"
    if rtol is not None and dtype.startswith("float"):
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=rtol, err_msg=where)
    else:
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(), err_msg=where)


def _compare_table(stem: str, name: str, got: pd.DataFrame, rtol: float | None = None) -> None:
    want = ref.table(stem, name)
    info = ref.table_info(stem, name)
    assert isinstance(got, pd.DataFrame), type(got)
    assert got.index.name == info["index_name"], (got.index.name, info["index_name"])
    assert str(got.index.dtype) == info["index_dtype"], (got.index.dtype, info["index_dtype"])
    np.testing.assert_array_equal(got.index.to_numpy(), want.index.to_numpy())
    external = EXTERNAL.get((stem, name), set())
    assert set(got.columns) == set(want.columns) - external, (
        f"missing {sorted(set(want.columns) - external - set(got.columns))}, "
        f"extra {sorted(set(got.columns) - set(want.columns))}"
    )
    for column in want.columns:
        if column not in external:
            _compare_column(stem, name, column, got[column], want[column], rtol)


def _compare_array(stem: str, name: str, got: Any, rtol: float | None = None) -> None:
    want = ref.array(stem, name)
    got = np.asarray(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if rtol is not None:
        np.testing.assert_allclose(got, want, rtol=rtol)
    else:
        np.testing.assert_array_equal(got, want)


# --- what the lake serves, by reference name ---------------------------------------------------


def _unit_ids(stem: str) -> np.ndarray:
    return ref.array(stem, "spike_times_unit_ids")


def _psc_args(stem: str) -> dict[str, Any]:
    return {
        "stimulus_presentation_ids": ref.array(stem, "psc_presentation_ids"),
        "unit_ids": ref.array(stem, "psc_unit_ids"),
    }


def _vcn_tables() -> dict[str, Callable[[Any], pd.DataFrame]]:
    return {
        "units": lambda rel: _session(rel).ecephys.units,
        "channels": lambda rel: _session(rel).ecephys.channels,
        "probes": lambda rel: _session(rel).ecephys.probes,
        "stimulus_presentations": lambda rel: _session(rel).ecephys.stimulus_presentations,
        "stimulus_conditions": lambda rel: _session(rel).ecephys.stimulus_conditions,
        "optogenetic_stimulation_epochs": lambda rel: (
            _session(rel).ecephys.optogenetic_stimulation_epochs
        ),
        "invalid_times": lambda rel: _session(rel).ecephys.invalid_times,
        "running_speed": lambda rel: _session(rel).ecephys.running_speed,
        "pupil_data": lambda rel: _session(rel).ecephys.get_pupil_data(),
        "screen_gaze_data": lambda rel: _session(rel).ecephys.get_screen_gaze_data(),
        "conditionwise_spike_statistics": lambda rel: (
            _session(rel).ecephys.conditionwise_spike_statistics(**_psc_args(VCN)).reset_index()
        ),
    }


def _vbn_tables() -> dict[str, Callable[[Any], pd.DataFrame]]:
    return {
        "units": lambda rel: _session(rel).ecephys.get_units(),
        "units_filtered": lambda rel: _session(rel).ecephys.get_units(
            filter_by_validity=True,
            filter_out_of_brain_units=True,
            amplitude_cutoff_maximum=0.1,
            presence_ratio_minimum=0.95,
            isi_violations_maximum=0.5,
        ),
        "channels": lambda rel: _session(rel).ecephys.get_channels(),
        "probes": lambda rel: _session(rel).ecephys.probes,
        "optotagging_table": lambda rel: _session(rel).ecephys.optotagging_table,
        **{n: lambda rel, n=n: getattr(_session(rel).ecephys, n) for n in VBN_BEHAVIOR_TABLES},
        "get_rolling_performance_df": lambda rel: _session(
            rel
        ).ecephys.get_rolling_performance_df(),
    }


def _arrays(stem: str) -> dict[str, Callable[[Any], Any]]:
    out: dict[str, Callable[[Any], Any]] = {
        "spike_times_unit_ids": lambda rel: (
            _session(rel).ecephys.units.index.to_numpy()[:6]
            if stem == VCN
            else _session(rel).ecephys.get_units().index.to_numpy()[:6]
        ),
        "lfp_shape": lambda rel: np.asarray(_lfp(rel, stem).shape),
        "lfp_slice": lambda rel: _lfp_slice(rel, stem).values,
        "lfp_slice_time": lambda rel: _lfp_slice(rel, stem)["time"].values,
        "lfp_slice_channel": lambda rel: _lfp_slice(rel, stem)["channel"].values,
        "csd": lambda rel: _csd(rel, stem).values,
        "csd_time": lambda rel: _csd(rel, stem)["time"].values,
    }
    for uid in _unit_ids(stem).tolist():
        out[f"spike_times__{uid}"] = lambda rel, u=uid: _session(rel).ecephys.spike_times[u]
        out[f"spike_amplitudes__{uid}"] = lambda rel, u=uid: _session(rel).ecephys.spike_amplitudes[
            u
        ]
        out[f"mean_waveforms__{uid}"] = lambda rel, u=uid: np.asarray(
            _session(rel).ecephys.mean_waveforms[u]
        )
    if stem == VBN:
        out["stimulus_timestamps"] = lambda rel: _session(rel).ecephys.stimulus_timestamps
        out["get_reward_rate"] = lambda rel: _session(rel).ecephys.get_reward_rate()
        for column in ("image_name", "warped", "unwarped"):
            out[f"stimulus_templates__{column}"] = lambda rel, c=column: _template(rel, c)
    if stem == VCN:
        out["psc_unit_ids"] = lambda rel: _session(rel).ecephys.units.index.to_numpy()
        out["psc_presentation_ids"] = lambda rel: (
            _session(rel).ecephys.get_stimulus_table(["drifting_gratings"]).index.to_numpy()
        )
        out["presentationwise_spike_counts"] = lambda rel: (
            _session(rel)
            .ecephys.presentationwise_spike_counts(
                bin_edges=ref.array(VCN, "psc_bin_edges"), **_psc_args(VCN)
            )
            .values
        )
    return out


def _template(rel: Any, column: str) -> np.ndarray:
    templates = _session(rel).ecephys.stimulus_templates
    if column == "image_name":
        return templates.index.to_numpy().astype(str)
    return np.stack(templates[column].to_list())


def _lfp(rel: Any, stem: str) -> Any:
    """``session.get_lfp(probe_id)``; the probe's own dataset must give the same."""
    pid = int(ref.array(stem, "lfp_probe_id"))
    got = _session(rel).ecephys.get_lfp(pid, release=rel)
    assert (got.name, got.dims) == ("LFP", ("time", "channel"))
    assert got.identical(_probe(rel, stem, "lfp").ecephys.lfp())  # nothing masked here
    return got


def _csd(rel: Any, stem: str) -> Any:
    pid = int(ref.array(stem, "lfp_probe_id"))
    got = _session(rel).ecephys.get_current_source_density(pid, release=rel)
    assert (got.name, got.dims) == ("CSD", ("virtual_channel_index", "time"))
    return got


def _lfp_slice(rel: Any, stem: str) -> Any:
    return _lfp(rel, stem).isel(time=slice(1000, 1500))


#: Quantities AllenSDK computes in floating point: (stem, name) -> relative tolerance.
RTOL = {(VCN, "conditionwise_spike_statistics"): 1e-12}


def _params(what: str) -> list[Any]:
    out = []
    for key, stem in (("vcn", VCN), ("vbn", VBN)):
        for name in ref.names(stem, what):
            if name in NOT_QUANTITIES[stem]:
                continue
            marks = []
            if (stem, name) in GAPS:
                marks.append(pytest.mark.xfail(strict=True, reason=GAPS[(stem, name)]))
            out.append(pytest.param(key, name, id=f"{key}-{name}", marks=marks))
    return out


def _served(kind: str, stem: str, name: str) -> Callable[[Any], Any]:
    if kind == "tables":
        getters = (_vcn_tables if stem == VCN else _vbn_tables)()
    elif kind == "arrays":
        getters = _arrays(stem)
    else:
        getters = _values(stem)
    if name not in getters:
        pytest.fail(f"{stem}: the test has no way to ask the lake for {kind[:-1]} {name!r}")
    return getters[name]


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "name"), _params("tables"))
def test_table(allensdk_releases, key, name):
    """Each AllenSDK table of the fixture, as the lake serves it."""
    stem = ref.STEMS[key]
    got = _served("tables", stem, name)(allensdk_releases[key])
    _compare_table(stem, name, got, RTOL.get((stem, name)))


@pytest.mark.parametrize(("key", "name"), _params("arrays"))
def test_array(allensdk_releases, key, name):
    """Each AllenSDK array of the fixture (spikes, waveforms, counts, LFP, CSD)."""
    stem = ref.STEMS[key]
    got = _served("arrays", stem, name)(allensdk_releases[key])
    _compare_array(stem, name, got, RTOL.get((stem, name)))


def _rig_geometry_repr(rel: Any) -> str:
    # the reference holds the repr AllenSDK's pandas printed at its automatic width (2 columns)
    with pd.option_context("display.width", 80, "display.max_columns", 2):
        return repr(_session(rel).ecephys.rig_geometry_data)


def _values(stem: str) -> dict[str, Callable[[Any], Any]]:
    if stem == VCN:
        return {
            "metadata": lambda rel: _session(rel).ecephys.metadata,
            "rig_geometry_data": _rig_geometry_repr,
            "rig_equipment_name": lambda rel: _session(rel).ecephys.rig_equipment_name,
        }
    out = {
        n: lambda rel, n=n: getattr(_session(rel).ecephys, n)
        for n in ("metadata", "task_parameters", "eye_tracking_rig_geometry")
    }
    out["stimulus_templates_name"] = lambda rel: _session(rel).attrs["stimulus_templates_name"]
    out["get_performance_metrics"] = lambda rel: _session(rel).ecephys.get_performance_metrics()
    return out


def _plain(value: Any, name: str = "") -> Any:
    """A served value as the JSON of the reference holds it (datetimes and UUIDs as text,
    the rig's coordinates as '[x, y, z]', NaN as None)."""
    if isinstance(value, dict):
        return {k: _plain(v, name) for k, v in value.items()}
    if name == "eye_tracking_rig_geometry" and isinstance(value, list):
        return str(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if type(value).__name__ == "UUID":
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


@pytest.mark.parametrize(("key", "name"), _params("values"))
def test_value(allensdk_releases, key, name):
    """Each AllenSDK value of the fixture (metadata, rig geometry)."""
    stem = ref.STEMS[key]
    got = _served("values", stem, name)(allensdk_releases[key])
    want = ref.value(stem, name)
    if name == "rig_geometry_data":  # the reference holds AllenSDK's DataFrame as its repr
        assert got == want
        return
    if name == "metadata" and key == "vbn":  # AllenSDK's types, before the JSON rendering
        assert type(got["behavior_session_uuid"]).__name__ == "UUID"
        assert got["date_of_acquisition"].tzinfo is not None
    got = _plain(got, name)
    assert got == want, (
        {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
        if isinstance(got, dict) and isinstance(want, dict)
        else (got, want)
    )


@pytest.mark.parametrize(
    ("key", "name", "column"),
    [
        pytest.param(
            k,
            t,
            c,
            id=f"{k}-{t}-{c}",
            marks=pytest.mark.xfail(
                strict=True,
                reason="AllenSDK takes it from the project's channels.csv "
                "(external_channel_columns), not from the NWB file; nor is it the CCF "
                "ontology's id of the acronym (the fixture's VISp2/3 is 593, CCF 2017's 821)",
            ),
        )
        for (stem, t), cols in EXTERNAL.items()
        for k in [next(k for k, s in ref.STEMS.items() if s == stem)]
        for c in sorted(cols)
    ],
)
def test_external_column(allensdk_releases, key, name, column):
    """Columns AllenSDK adds from outside the NWB file: listed as gaps, never skipped."""
    stem = ref.STEMS[key]
    got = _served("tables", stem, name)(allensdk_releases[key])
    assert column in got
    _compare_column(stem, name, column, got[column], ref.table(stem, name)[column], None)


@pytest.mark.parametrize(
    ("key", "session_format"), [("vcn", "vcn-ecephys"), ("vbn", "vbn-ecephys")]
)
def test_formats(key, session_format):
    """A VBN session file is read by its own reader (the VCN one took it and failed the
    fidelity check); both projects' probe LFP files share the Visual Coding layout."""
    from abo_lake import sources
    from abo_lake.sources import vbn_ecephys

    session, *lfps = ref.files(ref.STEMS[key])
    assert sources.detect_format(session) == session_format
    assert [sources.detect_format(p) for p in lfps] == ["vcn-ecephys"] * len(lfps)
    assert not any(vbn_ecephys.sniff(p) for p in lfps)
    (ds,) = sources.read(session).values()
    assert ds.attrs["allensdk_session_class"] == (
        "EcephysSession" if key == "vcn" else "BehaviorEcephysSession"
    )


def test_vbn_reader_names_what_is_missing(tmp_path):
    """A VCN session given to the VBN reader: a SourceFileError naming the missing group."""
    from abo_lake.errors import SourceFileError
    from abo_lake.sources import vbn_ecephys

    with pytest.raises(SourceFileError, match="general/metadata"):
        vbn_ecephys.read(ref.files(VCN)[0])


def _with_invalid(session: Any, start: float, stop: float, tags: list[str]) -> Any:
    return session.assign(
        {
            "invalid_times.start_time": ("invalid_time_id", [start]),
            "invalid_times.stop_time": ("invalid_time_id", [stop]),
            "invalid_times.tags": ("invalid_time_tag", tags),
            "invalid_times.tags_index": ("invalid_time_id", [len(tags)]),
        }
    )


def test_vcn_get_lfp_masks_invalid_intervals_as_allensdk(allensdk_releases):
    """EcephysSession.get_lfp: NaN on the closed intervals tagged all_probes or the probe's
    name; an interval naming only the probe id masks nothing (AllenSDK's fail_tags)."""
    rel = allensdk_releases["vcn"]
    session = _session(rel)
    pid = int(ref.array(VCN, "lfp_probe_id"))
    time = _probe(rel, VCN, "lfp")["time"].values
    a, b = time[1000], time[1010]
    masked = _with_invalid(session, a, b, ["EcephysProbe", str(pid), "probeA"])
    got = masked.ecephys.get_lfp(pid, release=rel)
    nan_rows = np.flatnonzero(np.isnan(got.values).all(axis=1))
    np.testing.assert_array_equal(nan_rows, np.arange(1000, 1011))
    assert not np.isnan(masked.ecephys.get_lfp(pid, False, release=rel).values).any()
    by_id = _with_invalid(session, a, b, ["EcephysProbe", str(pid)])
    assert not np.isnan(by_id.ecephys.get_lfp(pid, release=rel).values).any()
    everywhere = _with_invalid(session, a, b, ["all_probes"])
    assert np.isnan(everywhere.ecephys.get_lfp(pid, release=rel).values).all(axis=1).sum() == 11
    with pytest.raises(TypeError, match=f"ecephys/probe/{pid}/lfp"):
        session.ecephys.get_lfp(pid)
    with pytest.raises(KeyError, match="probe id"):
        session.ecephys.get_lfp(12345, release=rel)


def test_units_in_structure_both_projects(allensdk_releases):
    """units_in on either project: the (default-filtered) units of one structure acronym."""
    for key in ("vcn", "vbn"):
        session = _session(allensdk_releases[key])
        table = session.ecephys.units
        got = session.ecephys.units_in("CA1")
        assert len(got) > 0
        np.testing.assert_array_equal(
            got.index, table.index[table["structure_acronym"].to_numpy(object) == "CA1"]
        )
        with pytest.raises(KeyError, match="CA1"):
            session.ecephys.units_in("CA2")


@pytest.mark.parametrize("key", ["vcn", "vbn"])
def test_every_mapped_dataset_is_faithful(key):
    """The readers' fidelity mappings cover every mapped dataset of the AllenSDK-written files
    and hold them exactly (what ``abo-lake convert`` checks, here on the read Datasets)."""
    from abo_lake import sources
    from abo_lake.fidelity_mapped import check_reader

    for path in ref.files(ref.STEMS[key]):
        fmt = sources.detect_format(path)
        for ds in sources.read(path, fmt).values():
            assert check_reader(path, fmt, ds) == []


def _variant(tmp_path: Any, edit: Callable[[Any], None]) -> Any:
    import shutil

    import h5py

    path = tmp_path / f"{edit.__name__}.nwb"  # a new file each: the reader keeps files open
    shutil.copy(ref.files(VCN)[0], path)
    path.chmod(0o644)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def test_vcn_eye_tracking_variants_name_the_hdf5_path(tmp_path):
    """Eye tracking without the gaze timestamps AllenSDK indexes it by, or a rig vector that
    is not (x, y, z): a SourceFileError naming the file and the HDF5 path."""
    from abo_lake.errors import SourceFileError
    from abo_lake.sources import vcn_ecephys

    def no_time(f: Any) -> None:
        del f["processing/raw_gaze_mapping/eye_area/timestamps"]

    with pytest.raises(SourceFileError, match="raw_gaze_mapping/eye_area/timestamps"):
        vcn_ecephys.read(_variant(tmp_path, no_time))

    def flat_rig(f: Any) -> None:
        rig = "processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata"
        del f[f"{rig}/led_position"]
        f[f"{rig}/led_position"] = [1.0, 2.0]

    with pytest.raises(SourceFileError, match="led_position.*3 values"):
        vcn_ecephys.read(_variant(tmp_path, flat_rig))


@pytest.mark.parametrize(("key", "n_units"), [("vcn", 22), ("vbn", 30)])
def test_per_unit_dicts_hold_allensdks_units(allensdk_releases, key, n_units):
    """spike_times, spike_amplitudes and mean_waveforms are dicts of AllenSDK's units: the
    default-filtered ones for EcephysSession (it drops the others), all for VBN; calling them
    gives any unit's lazy DataArray."""
    session = _session(allensdk_releases[key])
    every = session["unit_id"].values
    for mapping in (session.ecephys.spike_times, session.ecephys.spike_amplitudes,
                    session.ecephys.mean_waveforms):  # fmt: skip
        assert len(mapping) == n_units
        assert set(mapping) <= set(every.tolist())
    dropped = sorted(set(every.tolist()) - set(session.ecephys.spike_times))
    assert len(dropped) == every.size - n_units
    if dropped:
        with pytest.raises(KeyError):
            session.ecephys.spike_times[dropped[0]]
        lazy = session.ecephys.spike_times(dropped[0])
        assert lazy.dims == ("spike",)
        assert lazy.chunks is not None  # not read yet
    first = int(next(iter(session.ecephys.spike_times)))
    np.testing.assert_array_equal(
        session.ecephys.spike_times[first], session.ecephys.spike_times(first).values
    )


def test_vbn_spike_counts_over_behavior_presentations(allensdk_releases):
    """The lake's spike analyses work on a VBN session's (behavior) presentations: counts in
    [start + e_i, start + e_{i+1}] as AllenSDK's rule, from the served spike times."""
    session = _session(allensdk_releases["vbn"])
    units = session.ecephys.get_units().index.to_numpy()[:3]
    table = session.ecephys.stimulus_presentations
    ids = table.index.to_numpy()[20:25]
    edges = np.arange(0.0, 0.26, 0.05)
    got = session.ecephys.presentationwise_spike_counts(edges, ids, units)
    assert got.dims == ("stimulus_presentation_id", "time_relative_to_stimulus_onset", "unit_id")
    for j, uid in enumerate(units):
        spikes = session.ecephys.spike_times[uid]
        for i, start in enumerate(table.loc[ids, "start_time"].to_numpy()):
            lo = np.searchsorted(spikes, start + edges[:-1], side="left")
            hi = np.searchsorted(spikes, start + edges[1:], side="right")
            np.testing.assert_array_equal(got.values[i, :, j], hi - lo)
    with pytest.raises(KeyError, match="no stimulus conditions"):
        session.ecephys.conditionwise_spike_statistics(ids, units)


def _allensdk_presentations() -> pd.DataFrame:
    """AllenSDK's VCN stimulus_presentations from the reference, JSON cells decoded."""
    table = ref.table(VCN, "stimulus_presentations")
    for column, info in ref.table_info(VCN, "stimulus_presentations")["columns"].items():
        if info["encoding"].startswith("json"):
            table[column] = pd.Series([json.loads(v) for v in table[column]], index=table.index,
                                      dtype=object)  # fmt: skip
    return table


@pytest.mark.parametrize(
    "name",
    ["num_units", "num_channels", "num_probes", "num_stimulus_presentations", "stimulus_names",
     "structure_acronyms", "specimen_name", "age_in_days", "sex", "full_genotype",
     "session_type", "ecephys_session_id", "session_start_time"],
)  # fmt: skip
def test_vcn_session_properties(allensdk_releases, name):
    """EcephysSession's scalar properties: those its metadata dict is made of."""
    got = getattr(_session(allensdk_releases["vcn"]).ecephys, name)
    assert _plain(got) == ref.value(VCN, "metadata")[name]


def test_vcn_structurewise_unit_counts(allensdk_releases):
    got = _session(allensdk_releases["vcn"]).ecephys.structurewise_unit_counts
    want = ref.table(VCN, "units")["ecephys_structure_acronym"].astype(object).value_counts()
    assert got.to_dict() == want.to_dict()


def test_vcn_stimulus_epochs_as_allensdk(allensdk_releases):
    """get_stimulus_epochs: AllenSDK's algorithm (nan_intervals over stimulus_block) applied
    to AllenSDK's own stimulus table gives what the lake gives."""
    table = _allensdk_presentations()
    blocks = table["stimulus_block"].tolist()

    def distinct(a: Any, b: Any) -> bool:
        return type(a) is not type(b) or (not (pd.isna(a) and pd.isna(b)) and a != b)

    cuts = [0, *(i for i in range(1, len(blocks)) if distinct(blocks[i], blocks[i - 1]))]
    cuts = sorted({*cuts, len(blocks)})
    want = pd.DataFrame(
        [
            {"start_time": table["start_time"].iloc[a], "stop_time": table["stop_time"].iloc[b - 1],
             "stimulus_name": table["stimulus_name"].iloc[a],
             "stimulus_block": table["stimulus_block"].iloc[a]}
            for a, b in itertools.pairwise(cuts)
        ]
    )  # fmt: skip
    want["duration"] = want["stop_time"] - want["start_time"]
    got = _session(allensdk_releases["vcn"]).ecephys.get_stimulus_epochs({})
    assert list(got.columns) == ["start_time", "stop_time", "duration", "stimulus_name",
                                 "stimulus_block"]  # fmt: skip
    for column in got.columns:
        pairs = zip(got[column].tolist(), want[column].tolist(), strict=True)
        assert all(_same(a, b) for a, b in pairs), (column, got[column], want[column])
    short = _session(allensdk_releases["vcn"]).ecephys.get_stimulus_epochs({"spontaneous": 25.0})
    assert "spontaneous" not in set(short["stimulus_name"])  # the fixture's is 20 s


def test_vcn_stimulus_parameter_values_as_allensdk(allensdk_releases):
    """get_parameter_values_for_stimulus: AllenSDK's rule on AllenSDK's table."""
    session = _session(allensdk_releases["vcn"])
    table = _allensdk_presentations()
    for stimulus in ("drifting_gratings", "flashes"):
        rows = table[table["stimulus_name"] == stimulus].drop(
            columns=["start_time", "stop_time", "duration", "stimulus_block",
                     "stimulus_condition_id", "stimulus_name"]
        )  # fmt: skip
        used = [c for c in rows.columns
                if not rows[c].astype(str).isin(["", "null", "nan"]).all()]  # fmt: skip
        got = session.ecephys.get_parameter_values_for_stimulus(stimulus)
        assert set(got) == set(used), stimulus
        for column in used:
            want = [v for v in pd.unique(rows[column].to_numpy(object)) if v != "null"]
            assert [str(v) for v in got[column]] == [str(v) for v in want], (stimulus, column)


@pytest.mark.parametrize("key", ["vcn", "vbn"])
def test_unfiltered_channels_keep_valid_data(allensdk_releases, key):
    """get_channels(filter_by_validity=False): every electrode, valid_data kept as a column
    (AllenSDK drops it only when it filters by it)."""
    session = _session(allensdk_releases[key])
    every = session.ecephys.get_channels(filter_by_validity=False)
    valid = session.ecephys.get_channels()
    assert len(every) == session.sizes["channel_id"]
    assert "valid_data" in every
    assert "valid_data" not in valid
    np.testing.assert_array_equal(every.index[every["valid_data"]], valid.index)
    assert set(every.columns) - {"valid_data"} == set(valid.columns)


def test_vcn_inter_presentation_intervals_as_allensdk(allensdk_releases):
    """inter_presentation_intervals: next start - this stop over AllenSDK's stimulus table;
    for a stimulus, only pairs of its own presentations."""
    session = _session(allensdk_releases["vcn"])
    table = ref.table(VCN, "stimulus_presentations")
    got = session.ecephys.inter_presentation_intervals
    assert got.index.names == ["from_presentation_id", "to_presentation_id"]
    np.testing.assert_array_equal(got.index.get_level_values(0), table.index[:-1])
    np.testing.assert_array_equal(
        got["interval"], table["start_time"].to_numpy()[1:] - table["stop_time"].to_numpy()[:-1]
    )
    flashes = session.ecephys.get_inter_presentation_intervals_for_stimulus(["flashes"])
    ids = set(table.index[table["stimulus_name"] == "flashes"].tolist())
    assert len(flashes) == len(ids) - 1  # one contiguous block
    assert set(flashes.index.get_level_values(0)) | set(flashes.index.get_level_values(1)) == ids
