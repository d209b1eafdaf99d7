"""Tests of the Cell Types synthetic writer and reader (NWB 1 ephys, SWC morphology)."""

from __future__ import annotations

import fnmatch
import json
import pickle
import shutil
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest

from abo_lake import schema, sources
from abo_lake.errors import SourceFileError
from abo_lake.sources import celltypes as reader
from abo_lake.synthetic import celltypes as synth

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_SWC = {  # file -> (specimen id, node count)
    "Pvalb-IRES-Cre_Ai14_IVSCC_-172096.04.02.01_471781218_m.swc": (471781218, 3422),
    "Scnn1a-Tg3-Cre_Ai14_IVSCC_-170426.03.01.01_328933585_m.swc": (328933585, 3429),
}


def _shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"real reference file {path} is not available (shared/data is absent)")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("celltypes")
    paths = synth.write(out, scale="tiny", seed=3, n_specimens=2)
    return paths


@pytest.fixture(scope="module")
def nwb(tiny):
    return tiny[0]


@pytest.fixture(scope="module")
def ephys(nwb):
    (ds,) = reader.read(nwb).values()
    return ds


@pytest.fixture(scope="module")
def sweeps_json(tiny):
    return json.loads(tiny[1].read_text())


def _sweep(ds, i, name):
    idx = ds["sweep_index"].values
    lo = 0 if i == 0 else idx[i - 1]
    return ds[name].values[lo : idx[i]]


def _spikes(ds, i):
    idx = ds["spike_times_index"].values
    lo = 0 if i == 0 else idx[i - 1]
    return ds["spike_times"].values[lo : idx[i]]


class TestWriter:
    def test_writes_each_specimen_folder(self, tiny):
        assert len(tiny) == 6
        names = [(p.parent.name, p.name) for p in tiny]
        assert names[:3] == [
            ("specimen_480003000", "ephys.nwb"),
            ("specimen_480003000", "ephys_sweeps.json"),
            ("specimen_480003000", "reconstruction.swc"),
        ]
        assert names[3][0] == "specimen_480003001"
        for p in tiny:
            assert 0 < p.stat().st_size < 4_000_000

    def test_nwb1_layout_as_allensdk_reads_it(self, nwb):
        # what NwbDataSet.get_sweep / get_sweep_metadata / get_spike_times touch
        with h5py.File(nwb, "r") as f:
            assert f["nwb_version"][()] == b"NWB-1.0.5"
            numbers = sorted(int(k.split("_")[1]) for k in f["epochs"] if k.startswith("Sweep_"))
            assert numbers == [8, 9, 10, 11, 12]
            swp = f["epochs"]["Sweep_10"]
            link = swp["stimulus"].get("timeseries", getlink=True)
            assert isinstance(link, h5py.SoftLink)
            assert link.path == "/stimulus/presentation/Sweep_10"
            data = swp["response"]["timeseries"]["data"]
            assert data.attrs["unit"] == b"Volts"
            assert data.attrs["conversion"] == 1e-3
            assert swp["stimulus"]["idx_start"][()] == 0
            assert swp["stimulus"]["count"][()] == data.shape[0] == 100_000
            rate = swp["stimulus"]["timeseries"]["starting_time"].attrs["rate"]
            assert rate == 200_000.0
            meta = f["stimulus/presentation/Sweep_10"]
            assert meta["aibs_stimulus_name"][()] == b"Long Square"
            assert meta["aibs_stimulus_amplitude_pa"][()] == 250.0
            for key in ("gain", "initial_access_resistance", "seal"):
                assert key in meta
            assert f["epochs/Experiment_10/stimulus/idx_start"][()] == 6000
            assert list(f["general/generated_by"][()]).index(b"version") == 2
            assert f["analysis/spike_times/Sweep_10"].dtype == np.float64

    def test_sweeps_json_matches_nwb(self, nwb, sweeps_json):
        with h5py.File(nwb, "r") as f:
            for rec in sweeps_json:
                n = rec["sweep_number"]
                spikes = f[f"analysis/spike_times/Sweep_{n}"][()]
                assert rec["num_spikes"] == spikes.size
                name = f[f"stimulus/presentation/Sweep_{n}/aibs_stimulus_name"][()]
                assert rec["stimulus_name"] == name.decode()
                assert rec["specimen_id"] == 480003000

    def test_same_seed_gives_identical_arrays(self, tmp_path):
        a = synth.write(tmp_path / "a", seed=11)
        b = synth.write(tmp_path / "b", seed=11)
        c = synth.write(tmp_path / "c", seed=12)

        def arrays(path):
            out = {}
            with h5py.File(path, "r") as f:
                f.visititems(
                    lambda name, obj: (
                        out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                    )
                )
            return out

        left, right = arrays(a[0]), arrays(b[0])
        assert left.keys() == right.keys()
        for name in left:
            assert np.array_equal(left[name], right[name]), name
            assert np.asarray(left[name]).tobytes() == np.asarray(right[name]).tobytes()
        assert a[1].read_text() == b[1].read_text()
        assert a[2].read_text() == b[2].read_text()
        other = arrays(c[0])
        resp = "acquisition/timeseries/Sweep_10/data"
        assert not np.array_equal(left[resp], other[resp])
        assert a[2].read_text() != c[2].read_text()


class TestEphys:
    def test_layout(self, ephys, nwb):
        schema.validate(ephys, "celltypes_ephys")
        assert ephys.attrs["abo_lake_kind"] == "celltypes_ephys"
        assert ephys.attrs["source_file"] == "ephys.nwb"
        assert ephys.attrs["specimen_id"] == 480003000
        json.dumps(ephys.attrs)
        assert ephys["sweep_number"].values.tolist() == [8, 9, 10, 11, 12]
        assert ephys.sizes["sample"] == 5 * 100_000
        assert ephys["sweep_index"].dtype == np.int64
        assert ephys["sweep_index"].values.tolist() == [100_000 * k for k in range(1, 6)]
        assert ephys["spike_times_index"].dtype == np.int64
        for name in ("stimulus", "response"):
            assert ephys[name].dtype == np.float64
            assert ephys[name].dims == ("sample",)
            assert isinstance(ephys[name].data, da.Array)  # lazy
            assert ephys[name].encoding["chunks"] == (1 << 19,)
        assert ephys["stimulus"].attrs["units"] == "A"
        assert ephys["response"].attrs["units"] == "V"
        assert ephys["spike_times"].attrs["units"] == "s"
        assert set(ephys["stimulus_unit"].values) == {"Amps"}
        assert set(ephys["response_unit"].values) == {"Volts"}
        assert np.all(ephys["sampling_rate"].values == 200_000.0)
        assert ephys["stimulus_name"].values.tolist() == [
            "Short Square",
            "Long Square",
            "Long Square",
            "Long Square",
            "Ramp",
        ]
        assert ephys["aibs_stimulus_amplitude_pa"].values.tolist() == [800, 50, 250, 400, 400]
        assert ephys["index_range_start"].values.tolist() == [6000] * 5
        assert ephys["index_range_stop"].values.tolist() == [99_999] * 5
        key = next(iter(sources.read(nwb, fmt="celltypes")))
        assert key == "celltypes/specimen/480003000/ephys"

    def test_round_trip_against_h5py(self, ephys, nwb, sweeps_json):
        by_number = {r["sweep_number"]: r for r in sweeps_json}
        with h5py.File(nwb, "r") as f:
            for i, n in enumerate(ephys["sweep_number"].values):
                stim = f[f"stimulus/presentation/Sweep_{n}/data"]
                resp = f[f"acquisition/timeseries/Sweep_{n}/data"]
                expected_stim = stim[()].astype(np.float64) * stim.attrs["conversion"]
                expected_resp = resp[()].astype(np.float64) * resp.attrs["conversion"]
                np.testing.assert_array_equal(_sweep(ephys, i, "stimulus"), expected_stim)
                np.testing.assert_array_equal(_sweep(ephys, i, "response"), expected_resp)
                np.testing.assert_array_equal(
                    _spikes(ephys, i), f[f"analysis/spike_times/Sweep_{n}"][()]
                )
                assert int(ephys["num_spikes"][i]) == by_number[n]["num_spikes"]
                assert ephys["stimulus_name"].values[i] == by_number[n]["stimulus_name"]
                assert ephys["seal"].values[i] == pytest.approx(by_number[n]["seal"])

    def test_values_are_physical(self, ephys):
        # Long Square 250 pA from 0.1 s for 0.3 s; rest potential -75..-65 mV; test pulse -20 pA
        i = 2
        stim = _sweep(ephys, i, "stimulus")
        assert stim[30_000] == pytest.approx(250e-12)
        assert stim[2_000] == pytest.approx(-20e-12)
        assert stim[0] == 0.0
        resp = _sweep(ephys, i, "response")
        assert -0.076 < np.median(resp[6_000:20_000]) < -0.064
        for t in _spikes(ephys, i):  # an action potential overshoots 0 mV after each crossing
            k = round(t * 200_000)
            assert resp[k : k + 200].max() > 0.0
            assert 0.1 <= t <= 0.4 + 0.01

    def test_fires_more_for_larger_long_square(self, tiny):
        for nwb_path in tiny[0::3]:
            (ds,) = reader.read(nwb_path).values()
            ls = np.flatnonzero(ds["stimulus_name"].values == "Long Square")
            amplitudes = ds["aibs_stimulus_amplitude_pa"].values[ls]
            counts = ds["num_spikes"].values[ls][np.argsort(amplitudes)]
            assert counts.size == 3
            assert counts[0] == 0  # 50 pA is below rheobase (100-200 pA) by construction
            assert np.all(np.diff(counts) > 0)

    def test_specimen_id_from_folder_and_old_pipeline_version(self, nwb, tmp_path):
        folder = tmp_path / "specimen_123"
        folder.mkdir()
        copy = folder / "ephys.nwb"
        shutil.copy(nwb, copy)
        with h5py.File(copy, "r+") as f:
            del f["general/specimen_id"]
            del f["general/generated_by"]  # pipeline < 1.1: data used as stored (AllenSDK)
        (key, ds), *_ = reader.read(copy).items()
        assert key == "celltypes/specimen/123/ephys"
        assert np.all(ds["stimulus_conversion"].values == 1.0)
        with h5py.File(copy, "r") as f:
            raw = f["stimulus/presentation/Sweep_8/data"][()].astype(np.float64)
        np.testing.assert_array_equal(_sweep(ds, 0, "stimulus"), raw)

    def test_hard_links_read_like_soft_links(self, nwb, ephys, tmp_path):
        copy = tmp_path / "specimen_480003000" / "ephys.nwb"
        copy.parent.mkdir()
        shutil.copy(nwb, copy)
        with h5py.File(copy, "r+") as f:
            for n in (8, 9, 10, 11, 12):
                for part, target in [
                    ("stimulus", "stimulus/presentation"),
                    ("response", "acquisition/timeseries"),
                ]:
                    group = f[f"epochs/Sweep_{n}/{part}"]
                    del group["timeseries"]
                    group["timeseries"] = f[f"{target}/Sweep_{n}"]  # hard link
        (ds,) = reader.read(copy).values()
        np.testing.assert_array_equal(ds["response"].values, ephys["response"].values)
        np.testing.assert_array_equal(ds["stimulus"].values, ephys["stimulus"].values)

    def test_fidelity_mappings_cover_the_mapped_datasets(self, ephys, nwb):
        items = reader.fidelity_mappings(ephys)
        assert len(items) == ephys.sizes["sweep_number"]
        covered = set()
        with h5py.File(nwb, "r") as f:
            for selection, mapping in items:
                part = ephys.isel(selection)
                for hpath, (name, transform) in mapping.items():
                    covered.add(hpath)
                    np.testing.assert_array_equal(part[name].values, transform(f[hpath][()]))
            mapped = []
            f.visititems(
                lambda name, obj: (
                    mapped.append("/" + name)
                    if isinstance(obj, h5py.Dataset)
                    and any(fnmatch.fnmatchcase("/" + name, g) for g in reader.MAPPED_HDF5)
                    else None
                )
            )
        assert covered == set(mapped)
        assert len(covered) == 3 * 5

    def test_fidelity_check_mapped_finds_no_problem(self, ephys, nwb):
        fidelity = pytest.importorskip("abo_lake.fidelity")
        for selection, mapping in reader.fidelity_mappings(ephys):
            assert fidelity.check_mapped(nwb, ephys.isel(selection), mapping) == []
        selection, mapping = reader.fidelity_mappings(ephys)[2]
        changed = ephys.isel(selection).load()
        changed["response"][10] = 1.0
        assert len(fidelity.check_mapped(nwb, changed, mapping)) == 1

    def test_picklable_and_computes_after_unpickling(self, ephys):
        back = pickle.loads(pickle.dumps(ephys))
        np.testing.assert_array_equal(
            back["response"][:1000].values, ephys["response"][:1000].values
        )


class TestMorphology:
    def test_synthetic_swc(self, tiny):
        (key, ds), *_ = reader.read(tiny[2]).items()
        assert key == "celltypes/specimen/480003000/morphology"
        schema.validate(ds, "celltypes_morphology")
        json.dumps(ds.attrs)
        assert ds.attrs["header"][2] == "id,type,x,y,z,r,pid"
        assert int(ds["type"][0]) == 1
        assert (ds["parent"].values == -1).sum() == 1
        assert set(np.unique(ds["type"].values)) == {1, 2, 3, 4}
        assert ds["x"][0] == ds["y"][0] == ds["z"][0] == 0.0  # soma at the origin
        m = reader.morphometry(ds)
        assert 6.0 <= m["soma_radius"] <= 10.0
        assert m["n_stems"] >= 6  # axon, apical and 4-7 basal dendrites
        assert m["n_tips"] == m["n_stems"] + m["n_bifurcations"]  # binary branching
        assert m["n_branches"] == m["n_stems"] + 2 * m["n_bifurcations"]
        assert 500 < m["total_length"] < 50_000
        assert m["max_path_distance"] >= m["max_euclidean_distance"] - m["soma_radius"]

    @pytest.mark.parametrize("name", sorted(REAL_SWC))
    def test_real_swc(self, name):
        path = _shared(f"swc/{name}")
        specimen_id, n_nodes = REAL_SWC[name]
        assert reader.sniff(path)
        (key, ds), *_ = reader.read(path).items()
        assert key == f"celltypes/specimen/{specimen_id}/morphology"
        schema.validate(ds, "celltypes_morphology")
        assert ds.sizes["node"] == n_nodes
        assert int(ds["type"][0]) == 1
        assert int(ds["parent"][0]) == -1
        assert (ds["parent"].values == -1).sum() == 1
        table = np.loadtxt(path, comments="#")
        np.testing.assert_array_equal(ds["node"].values, table[:, 0])
        np.testing.assert_array_equal(ds["radius"].values, table[:, 5])
        assert reader.morphometry(ds) == pytest.approx(_reference_morphometry(table))
        m = reader.morphometry(ds)
        assert 5.0 < m["soma_radius"] < 12.0
        assert 1_000 < m["total_length"] < 20_000
        assert 20 < m["n_tips"] < 200

    def test_real_swc_known_numbers(self):
        path = _shared("swc/Pvalb-IRES-Cre_Ai14_IVSCC_-172096.04.02.01_471781218_m.swc")
        (ds,) = reader.read(path).values()
        m = reader.morphometry(ds)
        assert m["soma_radius"] == 9.8719
        assert (m["n_stems"], m["n_bifurcations"], m["n_tips"]) == (8, 27, 35)
        assert m["total_length"] == pytest.approx(4343.15, abs=0.01)


def _reference_morphometry(table: np.ndarray) -> dict:
    """Direct NumPy/Python reference for files whose parents precede their children."""
    ids = table[:, 0].astype(int)
    row = {i: k for k, i in enumerate(ids)}
    types = table[:, 1].astype(int)
    xyz = table[:, 2:5]
    parents = table[:, 6].astype(int)
    children = np.zeros(len(ids), dtype=int)
    path = np.zeros(len(ids))
    total = 0.0
    stems = 0
    for k, p in enumerate(parents):
        if p == -1:
            continue
        pk = row[p]
        children[pk] += 1
        length = float(np.sqrt(((xyz[k] - xyz[pk]) ** 2).sum()))
        path[k] = path[pk] + length
        if types[k] != 1:
            total += length
            stems += types[pk] == 1
    neurite = types != 1
    bif = int(np.sum(neurite & (children >= 2)))
    soma = types == 1
    centre = xyz[soma].mean(axis=0)
    return {
        "n_nodes": len(ids),
        "n_stems": stems,
        "n_bifurcations": bif,
        "n_branches": stems + int(np.sum(children[neurite & (children >= 2)])),
        "n_tips": int(np.sum(neurite & (children == 0))),
        "total_length": total,
        "max_path_distance": float(path.max()),
        "max_euclidean_distance": float(np.sqrt(((xyz - centre) ** 2).sum(axis=1)).max()),
        "soma_radius": float(table[soma, 5].mean()),
    }


class TestCellTypesErrors:
    def test_truncated_nwb(self, nwb, tmp_path):
        bad = tmp_path / "ephys.nwb"
        bad.write_bytes(nwb.read_bytes()[:4096])
        with pytest.raises(SourceFileError, match=r"ephys\.nwb: not a readable HDF5 file"):
            reader.read(bad)
        assert reader.sniff(bad) is False

    def test_text_file_named_nwb(self, tmp_path):
        bad = tmp_path / "ephys.nwb"
        bad.write_text("this is not HDF5\n")
        with pytest.raises(SourceFileError, match=r"ephys\.nwb: not a readable HDF5"):
            reader.read(bad)

    def test_nwb2_file(self, tmp_path):
        path = tmp_path / "nwb2.nwb"
        with h5py.File(path, "w") as f:
            f.attrs["nwb_version"] = "2.7.0"
            f.create_group("acquisition")
        with pytest.raises(SourceFileError, match=r"nwb2\.nwb: nwb_version is '2\.7\.0'"):
            reader.read(path)
        assert reader.sniff(path) is False

    def test_real_nwb2_and_brain_observatory_nwb1(self):
        nwb2 = _shared("nwb/dandi_sub_anm00239123_ecephys_and_ogen.nwb")
        with pytest.raises(SourceFileError, match="expected 'NWB-1.0.x'"):
            reader.read(nwb2)
        assert reader.sniff(nwb2) is False
        bo = _shared("nwb/brain_observatory_496908818_nwb1_truncated.nwb")
        with pytest.raises(SourceFileError, match=r"no epochs/Sweep_<n> groups"):
            reader.read(bo)
        assert reader.sniff(bo) is False

    def test_missing_epoch_part(self, nwb, tmp_path):
        copy = tmp_path / "ephys.nwb"
        shutil.copy(nwb, copy)
        with h5py.File(copy, "r+") as f:
            del f["epochs/Sweep_9/response/count"]
        with pytest.raises(SourceFileError, match="sweep 9 is incomplete"):
            reader.read(copy)

    @pytest.mark.parametrize(
        ("body", "match"),
        [
            ("1 1 0 0 0 5 -1\n2 3 1 0 0 1 1\n3 3 2 0 0 1\n", r"line 5: found 6 columns"),
            ("1 1 0 0 0 5 -1\n2 3 1 0 0 1 1\n3 3 2 0 0 1 2 7\n", r"line 5: found 8 columns"),
            ("1 1 0 0 0 5 -1\n2 3 1 0 0 1 1\n3 3 2 0 0 1 99\n", r"line 5: parent 99 of node 3"),
            ("1 1 0 0 0 5 -1\n2 3 1 0 0 1 1\n2 3 2 0 0 1 1\n", r"line 5: node id 2 appears twice"),
            ("1 1 0 0 0 5 -1\n2 3 1 0 0 1 3\n3 3 2 0 0 1 2\n", r"line 4: node 2 is on a cycle"),
            ("1 1 0 0 0 5 -1\n2 3 1 0 x 1 1\n", r"line 4: non-numeric value"),
            ("1 1 0 0 0 5 -1\n2 3 1 0 0 1 1.5\n", r"line 4: parent 1.5 is not an integer"),
            ("", r"no nodes"),
        ],
    )
    def test_bad_swc(self, tmp_path, body, match):
        folder = tmp_path / "specimen_7"
        folder.mkdir()
        path = folder / "reconstruction.swc"
        path.write_text("# header\n# id,type,x,y,z,r,pid\n" + body)
        with pytest.raises(SourceFileError, match=r"reconstruction\.swc: " + match):
            reader.read(path)

    def test_swc_without_specimen_id(self, tmp_path):
        path = tmp_path / "cell.swc"
        path.write_text("1 1 0 0 0 5 -1\n")
        with pytest.raises(SourceFileError, match="cannot tell the specimen id"):
            reader.read(path)

    def test_unknown_file(self, tmp_path):
        path = tmp_path / "notes.txt"
        path.write_text("hello\n")
        with pytest.raises(SourceFileError, match=r"notes\.txt: neither an HDF5"):
            reader.read(path)
        with pytest.raises(SourceFileError, match="no such file"):
            reader.read(tmp_path / "missing.nwb")


class TestSniff:
    def test_mine(self, tiny):
        assert reader.sniff(tiny[0]) is True
        assert reader.sniff(tiny[2]) is True

    def test_not_mine(self, tiny, tmp_path):
        assert reader.sniff(tiny[1]) is False  # ephys_sweeps.json
        cases = {
            "empty.swc": b"",
            "comments.swc": b"# only\n# comments\n",
            "six.swc": b"1 1 0 0 0 5\n",
            "words.txt": b"a b c d e f g\n",
            "binary.bin": bytes(range(256)) * 4,
            "csv.csv": b"id,type,x,y,z,r,pid\n1,1,0,0,0,5,-1\n",
            "nrrd.nrrd": b"NRRD0004\n# comment\ntype: uint32\n",
            "junk.nwb": b"\x89HDF\r\n\x1a\n" + b"\x00" * 100,
        }
        for name, content in cases.items():
            path = tmp_path / name
            path.write_bytes(content)
            assert reader.sniff(path) is False, name
        assert reader.sniff(tmp_path / "missing.swc") is False
        assert reader.sniff(tmp_path) is False

    def test_real_ontology_json_is_not_mine(self):
        assert reader.sniff(_shared("ccf/structures.json")) is False
