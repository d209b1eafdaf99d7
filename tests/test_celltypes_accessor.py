"""The ``.celltypes`` and ``.morphology`` accessors against AllenSDK 2.16.2, laziness, bad input,
and the ``morphometry`` / ``celltypes_specimens`` release tables.

AllenSDK's results are in ``tests/reference/celltypes_allensdk.{json,npz}``, made by
``tests/reference/celltypes_allensdk.py`` from the specimen the ``tiny`` fixture writes
(``synthetic.celltypes.write(scale="tiny", seed=3, n_specimens=1)``) and the real SWC files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import abo_lake
from abo_lake import celltypes, jobs
from abo_lake.errors import SchemaError
from abo_lake.sources import celltypes as reader
from abo_lake.synthetic import celltypes as synth

REFERENCE = Path(__file__).resolve().parent / "reference" / "celltypes_allensdk"
SHARED_SWC = Path(__file__).resolve().parents[2] / "shared" / "data" / "swc"
REAL_SWC = sorted(p.name for p in SHARED_SWC.glob("*.swc")) or ["(absent)"]
SPECIMEN = 480003000
EPHYS = f"celltypes/specimen/{SPECIMEN}/ephys"


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads(REFERENCE.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def ref_arrays():
    with np.load(REFERENCE.with_suffix(".npz")) as npz:
        return dict(npz)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    paths = synth.write(tmp_path_factory.mktemp("ct"), scale="tiny", seed=3, n_specimens=1)
    return {p.name: p for p in paths}


@pytest.fixture(scope="module")
def ephys(tiny) -> xr.Dataset:
    (ds,) = reader.read(tiny["ephys.nwb"]).values()
    return ds


def _swc(name: str, tiny: dict[str, Path]) -> Path:
    if name == "reconstruction.swc":
        return tiny[name]
    path = SHARED_SWC / name
    if not path.exists():
        pytest.skip(f"real SWC {path} is not available (shared/data is absent)")
    return path


def _morphology(name: str, tiny: dict[str, Path]) -> xr.Dataset:
    (ds,) = reader.read(_swc(name, tiny)).values()
    return ds


# --------------------------------------------------------------------------- ephys parity


class TestNwbDataSetParity:
    def test_sweep_numbers(self, ephys, ref):
        assert ephys.celltypes.get_sweep_numbers() == sorted(ref["sweep_numbers"])
        assert ephys.celltypes.get_sweep_numbers() == [8, 9, 10, 11, 12]

    def test_get_sweep_matches_allensdk_times_conversion(self, ephys, ref, ref_arrays):
        """AllenSDK 2.16.2 under h5py 3 returns the stored values (its pipeline version check
        compares bytes with str); the lake returns them times ``conversion`` (A, V)."""
        stride = ref["stride"]
        for n in ephys.celltypes.get_sweep_numbers():
            theirs = ref["sweeps"][str(n)]
            got = ephys.celltypes.get_sweep(n)
            assert set(got) == {
                "stimulus", "response", "stimulus_unit", "index_range", "sampling_rate",
            }  # fmt: skip
            assert got["stimulus_unit"] == theirs["stimulus_unit"] == "Amps"
            assert got["index_range"] == tuple(theirs["index_range"])
            assert got["sampling_rate"] == theirs["sampling_rate"] == 200_000.0
            i = ephys.indexes["sweep_number"].get_loc(n)
            for part, unit in (("stimulus", 1e-12), ("response", 1e-3)):
                values = got[part]
                conversion = float(ephys[f"{part}_conversion"].values[i])
                assert conversion == unit
                assert isinstance(values, np.ndarray)
                assert values.dtype == np.float64
                assert values.size == theirs[f"{part}_size"]
                stored = ref_arrays[f"sweep_{n}_{part}"]
                assert stored.dtype == np.float32 == np.dtype(theirs[f"{part}_dtype"])
                np.testing.assert_array_equal(
                    values[::stride], stored.astype(np.float64) * conversion
                )
                assert values.sum() == pytest.approx(theirs[f"{part}_sum"] * conversion, 1e-9)

    def test_sweep_metadata_and_spike_times(self, ephys, ref):
        for n in ephys.celltypes.get_sweep_numbers():
            theirs = ref["sweeps"][str(n)]
            assert ephys.celltypes.get_sweep_metadata(n) == pytest.approx(theirs["metadata"])
            assert set(ephys.celltypes.get_sweep_metadata(n)) == set(theirs["metadata"])
            spikes = ephys.celltypes.get_spike_times(n)
            np.testing.assert_array_equal(spikes, theirs["spike_times"])
        assert sum(len(ref["sweeps"][k]["spike_times"]) for k in ref["sweeps"]) > 0

    def test_sweep_is_lazy_and_equals_get_sweep(self, ephys):
        one = ephys.celltypes.sweep(10)
        assert isinstance(one["response"].data, dask.array.Array)
        assert one.attrs["index_range"] == (6000, 99_999)
        assert one["time"].values[1] == 1 / 200_000
        np.testing.assert_array_equal(
            one["response"].values, ephys.celltypes.get_sweep(10)["response"]
        )
        assert one.sizes["time"] == ephys.celltypes.sweep_samples(10).stop - 200_000


class TestSweepsTable:
    def test_columns_are_ephys_sweeps_json(self, ephys, tiny):
        table = ephys.celltypes.sweeps
        records = json.loads(tiny["ephys_sweeps.json"].read_text())
        expected = pd.DataFrame(records).set_index("sweep_number").sort_index()
        assert table.index.name == "sweep_number"
        shared = [c for c in table.columns if c in expected.columns]
        assert len(shared) >= 11
        for col in shared:  # QC fields are null where IPFX computes none (NaN in the table)
            want = [np.nan if v is None else v for v in expected[col].tolist()]
            assert table[col].tolist() == pytest.approx(want, nan_ok=True), col
        assert table["n_samples"].tolist() == [100_000] * 5
        assert table["sampling_rate"].tolist() == [200_000.0] * 5

    def test_search(self, ephys):
        ls = ephys.celltypes.sweeps_by_stimulus("Long Square")
        assert ls.index.tolist() == [9, 10, 11]
        both = ephys.celltypes.sweeps_by_stimulus(["Ramp", "Short Square"])
        assert both.index.tolist() == [8, 12]
        firing = ephys.celltypes.sweeps.query("num_spikes > 0 and stimulus_name == 'Long Square'")
        assert firing.index.tolist() == [10, 11]
        assert ephys.celltypes.stimulus_names == ["Short Square", "Long Square", "Ramp"]


class TestBadInput:
    @pytest.mark.parametrize(
        "call", ["get_sweep", "sweep", "get_sweep_metadata", "get_spike_times", "sweep_samples"]
    )
    def test_missing_sweep_names_it_and_the_specimen(self, ephys, call):
        with pytest.raises(KeyError, match=r"sweep_number 7 does not exist in specimen 480003000"):
            getattr(ephys.celltypes, call)(7)
        with pytest.raises(KeyError, match=r"its sweeps are \[8, 9, 10, 11, 12\]"):
            getattr(ephys.celltypes, call)(13)

    def test_non_integer_sweep(self, ephys):
        with pytest.raises(TypeError, match="sweep_number must be an integer, got 'ten'"):
            ephys.celltypes.get_sweep("ten")
        with pytest.raises(KeyError, match="sweep_number 9.5 does not exist"):
            ephys.celltypes.get_sweep(9.5)

    def test_spike_times_key(self, ephys):
        np.testing.assert_array_equal(
            ephys.celltypes.get_spike_times(10, "spike_times"), ephys.celltypes.get_spike_times(10)
        )
        with pytest.raises(ValueError, match="key 'aibs_spike_times': the lake holds"):
            ephys.celltypes.get_spike_times(10, key="aibs_spike_times")

    def test_unknown_stimulus_name(self, ephys):
        with pytest.raises(KeyError, match=r"stimulus_name 'Noise 1': no sweep of specimen "):
            ephys.celltypes.sweeps_by_stimulus(["Ramp", "Noise 1"])

    def test_wrong_kind(self, ephys, tiny):
        morph = _morphology("reconstruction.swc", tiny)
        with pytest.raises(SchemaError, match=r"\.celltypes needs a 'celltypes_ephys' Dataset"):
            morph.celltypes
        with pytest.raises(SchemaError, match=r"\.morphology needs a 'celltypes_morphology'"):
            ephys.morphology

    def test_missing_node_and_two_somas(self, tiny):
        morph = _morphology("reconstruction.swc", tiny)
        n = morph.sizes["node"]
        assert morph.morphology.node(n) is None  # as AllenSDK
        with pytest.raises(KeyError, match=rf"node {n} does not exist .* rows 0..{n - 1}"):
            morph.morphology.children_of(n)
        with pytest.raises(KeyError, match="node -1 does not exist"):
            morph.morphology.parent_of(-1)
        two = morph.copy(deep=True)
        two["parent"][1] = -1
        two["type"][1] = 1
        with pytest.raises(ValueError, match="multiple somas"):
            two.morphology.soma
        assert two.morphology.num_trees == 2


# --------------------------------------------------------------------------- laziness


def _recording(store) -> list[str]:
    keys: list[str] = []
    get, read_chunk = store.get, store.read_chunk

    async def recording_get(key, *args, **kwargs):
        if key in store._chunks:
            keys.append(key)
        return await get(key, *args, **kwargs)

    def recording_read_chunk(key):
        keys.append(key)
        return read_chunk(key)

    store.get, store.read_chunk = recording_get, recording_read_chunk
    return keys


def test_one_sweep_reads_only_its_chunks(ephys, tmp_path):
    """Chunks of 50,000 samples: sweep 10 (samples 200,000-299,999) is chunks 4 and 5 of
    stimulus and of response; no other sample chunk is read."""
    ds = ephys.copy()
    for name in ("stimulus", "response"):
        ds[name].encoding["chunks"] = (50_000,)
    lake = abo_lake.open_lake(str(tmp_path / "lake"))
    with lake.stage("r1") as stage:
        stage.write(EPHYS, ds)
    store = lake.release("r1").store(EPHYS)
    opened = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
    keys = _recording(store)
    with dask.config.set(scheduler="synchronous"):
        lazy = opened.celltypes.sweep(10)
        assert not [k for k in keys if k.startswith(("stimulus/", "response/"))]
        keys.clear()
        got = opened.celltypes.get_sweep(10)
    samples = sorted(k for k in keys if k.startswith(("stimulus/", "response/")))
    assert samples == ["response/c/4", "response/c/5", "stimulus/c/4", "stimulus/c/5"]
    small = sorted(k for k in keys if k not in samples)  # per-sweep columns, one chunk each
    assert small == [
        f"{n}/c/0"
        for n in sorted(
            [
                *("sweep_index", "sampling_rate", "stimulus_name", "stimulus_unit"),
                *("index_range_start", "index_range_stop"),
            ]
        )
    ]
    np.testing.assert_array_equal(got["response"], ephys.celltypes.get_sweep(10)["response"])
    assert isinstance(lazy["stimulus"].data, dask.array.Array)


# --------------------------------------------------------------------------- morphology parity


@pytest.mark.parametrize("name", ["reconstruction.swc", *REAL_SWC])
class TestMorphologyParity:
    def test_compartments_are_allensdk_read_swc(self, name, tiny, ref, ref_arrays):
        morph = _morphology(name, tiny).morphology
        theirs = ref["morphologies"][name]
        comps = morph.compartment_list
        assert morph.num_nodes == len(comps) == theirs["num_nodes"]
        assert [comps[0]["id"], comps[-1]["id"]] == theirs["ids"]
        for key in ("parent", "tree_id", "type"):
            np.testing.assert_array_equal([c[key] for c in comps], ref_arrays[f"{name}/{key}"])
        np.testing.assert_array_equal(
            [k for c in comps for k in c["children"]], ref_arrays[f"{name}/children"]
        )
        np.testing.assert_array_equal(
            [len(c["children"]) for c in comps], ref_arrays[f"{name}/n_children"]
        )
        assert morph.soma == theirs["soma"]
        assert morph.node(5) == theirs["node_5"]
        assert [c["id"] for c in morph.children_of(morph.soma)] == theirs["children_of_soma"]
        assert [c["id"] for c in morph.children_of(0)] == theirs["children_of_soma"]
        assert morph.parent_of(5) == morph.node(theirs["node_5"]["parent"])
        assert morph.parent_of(morph.soma) is None
        assert morph.num_trees == theirs["num_trees"] == 1
        for t, count in theirs["by_type"].items():
            assert len(morph.compartment_list_by_type(int(t))) == count
            assert list(morph.compartment_index_by_type(int(t))) == [
                c["id"] for c in morph.compartment_list_by_type(int(t))
            ]
        assert morph.tree(0) == comps
        assert morph.tree(1) is None
        assert morph.compartment_index[7] is comps[7]

    def test_morphometry_matches_a_walk_of_allensdk_morphology(self, name, tiny, ref):
        got = _morphology(name, tiny).morphology.morphometry()
        theirs = ref["morphologies"][name]["morphometry"]
        assert set(got) == set(celltypes.MORPHOMETRY)
        for key, value in theirs.items():
            assert got[key] == pytest.approx(value, rel=1e-12), key
        by_type = got["axon_length"] + got["basal_dendrite_length"] + got["apical_dendrite_length"]
        assert by_type == pytest.approx(got["total_length"], rel=1e-12)
        assert min(got["width"], got["height"], got["depth"]) > 0

    def test_renumbered(self, name, tiny, ref_arrays):
        ds = _morphology(name, tiny)
        zero = ds.morphology.renumbered()
        assert zero["node"].values.tolist() == list(range(ds.sizes["node"]))
        np.testing.assert_array_equal(zero["swc_id"].values, ds["node"].values)
        np.testing.assert_array_equal(zero["parent"].values, ref_arrays[f"{name}/parent"])
        np.testing.assert_array_equal(zero["x"].values, ds["x"].values)


def test_real_swc_known_numbers(tiny):
    m = _morphology("Pvalb-IRES-Cre_Ai14_IVSCC_-172096.04.02.01_471781218_m.swc", tiny)
    row = m.morphology.morphometry_table()
    assert row.index.tolist() == [471781218]
    assert row.index.name == "specimen_id"
    assert row.loc[471781218, "n_stems"] == 8
    assert row.loc[471781218, "n_tips"] == 35
    assert row.loc[471781218, "soma_radius"] == 9.8719
    assert row.loc[471781218, "apical_dendrite_length"] == 0.0  # an aspiny Pvalb cell


def test_renumbering_follows_file_order_not_ids(tmp_path):
    """Ids out of order and with holes: AllenSDK numbers rows in file order."""
    folder = tmp_path / "specimen_5"
    folder.mkdir()
    path = folder / "cell.swc"
    path.write_text("10 1 0 0 0 5 -1\n30 3 0 3 0 1 20\n20 3 0 1 0 1 10\n40 2 0 -2 0 1 10\n")
    (ds,) = reader.read(path).values()
    comps = ds.morphology.compartment_list
    assert [c["parent"] for c in comps] == [-1, 2, 0, 0]
    assert [c["children"] for c in comps] == [[2, 3], [], [1], []]
    assert ds.morphology.morphometry()["n_stems"] == 2
    assert ds.morphology.renumbered()["swc_id"].values.tolist() == [10, 30, 20, 40]


# --------------------------------------------------------------------------- release tables


def _api_cell(specimen_id: int, line: str, layer: str, dendrite_type: str) -> dict:
    """One record of the Allen API's cells.json (the fields AllenSDK's simple view reads)."""
    return {
        "specimen__id": specimen_id,
        "specimen__name": f"{line}-{specimen_id}",
        "line_name": line,
        "structure__layer": layer,
        "structure_parent__id": 385,
        "structure_parent__acronym": "VISp",
        "tag__dendrite_type": dendrite_type,
        "tag__apical": "intact",
        "cell_reporter_status": "positive",
        "donor__species": "Mus musculus",
        "donor__disease_state": "",
        "donor__id": 1,
        "specimen__hemisphere": "left",
        "nr__reconstruction_type": "full",
        "csl__x": 1.0,
        "csl__y": 2.0,
        "csl__z": 3.0,
        "csl__normalized_depth": 0.5,
        "erwkf__id": 9,  # a field the simple view drops
    }


def test_cells_json_gets_allensdk_simple_names(tmp_path):
    api = tmp_path / "cells.json"
    api.write_text(json.dumps([_api_cell(5, "Sst-IRES-Cre", "2/3", "aspiny")]))
    table = celltypes.cells_table(api)
    assert table.loc[0, "specimen_id"] == 5
    assert table.loc[0, "transgenic_line"] == "Sst-IRES-Cre"
    assert table.loc[0, "structure_area_abbrev"] == "VISp"
    assert table.loc[0, "structure_layer_name"] == "2/3"
    assert table.loc[0, "reporter_status"] == "positive"
    assert table.loc[0, "cell_soma_location"] == "[1.0, 2.0, 3.0]"
    assert "erwkf__id" not in table.columns
    simple = tmp_path / "simple.json"  # get_cells() saved as it returns
    simple.write_text(json.dumps([{"id": 5, "transgenic_line": "Sst-IRES-Cre"}]))
    assert celltypes.cells_table(simple).columns.tolist() == ["specimen_id", "transgenic_line"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": 5}')
    with pytest.raises(ValueError, match=r"bad\.json: expected a JSON list of records"):
        celltypes.cells_table(bad)


def test_release_tables_morphometry_and_specimens(tiny, tmp_path, dask_cluster):
    real = "Pvalb-IRES-Cre_Ai14_IVSCC_-172096.04.02.01_471781218_m.swc"
    src = tmp_path / "src"
    shutil.copytree(tiny["ephys.nwb"].parent, src / tiny["ephys.nwb"].parent.name)
    (src / "real").mkdir()
    shutil.copy(_swc(real, tiny), src / "real" / real)
    cells = tmp_path / "cells.json"  # CellTypesCache's cells.json: the API's field names
    records = [
        _api_cell(SPECIMEN, "Rorb-IRES2-Cre", "4", "spiny"),
        _api_cell(471781218, "Pvalb-IRES-Cre", "5", "aspiny"),
    ]
    cells.write_text(json.dumps(records))
    lake = abo_lake.open_lake(str(tmp_path / "lake"))
    report = jobs.run(
        [src],
        lake,
        "r1",
        scheduler=dask_cluster.scheduler_address,
        metadata=[cells],
        progress=False,
    )
    assert report.published, report.summary()
    rel = lake.release("r1")
    morphometry = rel.table("morphometry")
    assert morphometry.index.name == "specimen_id"
    assert morphometry.index.tolist() == [471781218, SPECIMEN]
    for specimen_id in morphometry.index:
        ds = rel.open(f"celltypes/specimen/{specimen_id}/morphology")
        expected = ds.morphology.morphometry()
        row = morphometry.loc[specimen_id]
        assert row[list(expected)].to_dict() == pytest.approx(expected)
        assert row["transgenic_line"] in ("Rorb-IRES2-Cre", "Pvalb-IRES-Cre")  # cells.json too
    specimens = rel.table("celltypes_specimens")
    assert specimens.index.tolist() == [471781218, SPECIMEN]
    assert specimens["has_ephys"].tolist() == [False, True]
    assert specimens["has_morphology"].tolist() == [True, True]
    assert specimens.loc[471781218, "morphometry.n_tips"] == 35
    assert specimens.loc[SPECIMEN, "dendrite_type"] == "spiny"
    assert specimens.loc[471781218, "transgenic_line"] == "Pvalb-IRES-Cre"
    assert specimens.loc[SPECIMEN, "dataset_path"] == EPHYS
    assert specimens.loc[SPECIMEN, "structure_layer_name"] == "4"
    assert specimens.loc[SPECIMEN, "reporter_status"] == "positive"
    assert specimens.loc[471781218, "structure_area_abbrev"] == "VISp"
    assert any(
        "cells.json joined celltypes_specimens by specimen_id (2 of 2" in n for n in report.notes
    )
    ephys = rel.open(EPHYS)
    assert ephys.celltypes.get_sweep_numbers() == [8, 9, 10, 11, 12]
