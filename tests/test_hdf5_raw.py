"""Tests of abo_lake.sources.hdf5_raw (lossless carry-over) and abo_lake.fidelity."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr
import zarr

from abo_lake import fidelity
from abo_lake.errors import IntegrityError, SourceFileError
from abo_lake.fidelity import assert_faithful, blockwise, check_mapped, check_raw
from abo_lake.sources.hdf5_raw import (
    escape_attr_key,
    escape_name,
    node_path,
    read_raw,
    unescape_attr_key,
    unescape_name,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nwb"
NWB1 = SHARED / "brain_observatory_496908818_nwb1_truncated.nwb"
NWB2 = SHARED / "dandi_sub_anm00239123_ecephys_and_ogen.nwb"

pytestmark = pytest.mark.filterwarnings(
    "ignore:Consolidated metadata:UserWarning",
    "ignore::zarr.errors.UnstableSpecificationWarning",
)


def _real(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real Allen/DANDI file not available: {path}")
    return path


def _store(tree: xr.DataTree, where: Path, *, fast: bool = False) -> xr.DataTree:
    """Write with to_zarr(zarr_format=3) and re-open with open_datatree.

    ``fast`` writes unconsolidated and consolidates once at the end: xarray's DataTree.to_zarr
    with consolidated=True re-consolidates the whole store after every node (quadratic; 40 s
    for the 212 groups of the NWB 1 file instead of 5 s).
    """
    if fast:
        tree.to_zarr(where, zarr_format=3, consolidated=False)
        zarr.consolidate_metadata(str(where), zarr_format=3)
    else:
        tree.to_zarr(where, zarr_format=3, consolidated=True)
    return xr.open_datatree(where, engine="zarr")


def write_edge_file(path: Path, other: Path) -> None:
    """An HDF5 file with one of each awkward case (seeded)."""
    with h5py.File(other, "w") as g:
        g["x"] = np.arange(3)
    rng = np.random.default_rng(6)
    with h5py.File(path, "w") as f:
        cdt = np.dtype(
            [
                ("a", "<i4"),
                ("b", "<f8"),
                ("s", "S5"),
                ("xy", "<f4", (2,)),
                ("v", h5py.string_dtype()),
            ]
        )
        comp = [(1, 0.5, b"ab", (1, 2), "x"), (2, np.nan, b"cde", (3, 4), "héllo")]
        f.create_dataset("compound", data=np.array(comp, dtype=cdt))
        f.create_dataset("strings/vlen", data=["héllo", "", "x"], dtype=h5py.string_dtype())
        f.create_dataset("strings/fixed", data=np.array([b"ab", b"cde"], dtype="S3"))
        f.create_dataset("strings/latin", data=np.array([b"\xe9t\xe9"], dtype="S3"))
        f["scalar_int"] = np.int16(-7)
        f.create_dataset("scalar_str", data="only one", dtype=h5py.string_dtype())
        f.create_dataset("empty", shape=(0,), dtype="f8")
        f.create_dataset("empty2d", shape=(0, 3), dtype="i2", maxshape=(None, 3), chunks=(4, 3))
        f.create_dataset("null", data=h5py.Empty("f4"))
        f["soft"] = h5py.SoftLink("/compound")
        f["dangling"] = h5py.SoftLink("/nope")
        f["ext"] = h5py.ExternalLink(other.name, "/x")
        f["named_type"] = np.dtype("<i2")  # a committed (named) datatype
        f["grp/alias"] = f["strings/vlen"]  # "grp" sorts first: /strings/vlen is the duplicate
        f["grp2"] = f["strings"]  # a whole group hard-linked twice
        refs = f.create_dataset("refs", shape=(3,), dtype=h5py.ref_dtype)
        refs[0] = f["grp2"].ref
        refs[1] = f["compound"].ref
        rr = f.create_dataset("regionrefs", shape=(1,), dtype=h5py.regionref_dtype)
        rr[0] = f["compound"].regionref[0:1]
        f.create_dataset("big_endian", data=np.arange(4, dtype=">f4"))
        f.create_dataset("flags", data=np.array([True, False, True]))
        enum = h5py.enum_dtype({"RED": 0, "GREEN": 1}, basetype="i1")
        f.create_dataset("enum", data=np.array([0, 1, 1], dtype="i1"), dtype=enum)
        rag = f.create_dataset("ragged", shape=(3,), dtype=h5py.vlen_dtype(np.int32))
        rag[0], rag[1], rag[2] = [1, 2, 3], [], [4]
        f.create_dataset("opaque", data=np.array([b"abcd", b"efgh"], dtype="V4"))
        f.create_dataset("__hidden", data=[1, 2])
        f.create_dataset("a.b", data=[3.0])
        f.create_dataset("with space/x%y", data=[1])
        f.create_dataset("data", data=np.arange(3))
        f.create_dataset("sub/data", data=np.arange(5))  # same name, other size, in a child
        f.create_dataset("clash/a", data=np.zeros((2, 2)))
        f.create_dataset("clash/a_dim_0", data=np.arange(4))  # a variable named like a dim
        big = rng.standard_normal((600, 1000)).astype("f4")
        f.create_dataset("big", data=big, chunks=(50, 1000), compression="gzip")
        words = [f"s{i}" for i in range(70_000)]
        f.create_dataset("big_strings", data=words, dtype=h5py.string_dtype())
        d = f["compound"]
        d.attrs["bytes"] = np.bytes_(b"raw")
        d.attrs["int"] = np.int64(3)
        d.attrs["arr"] = np.arange(3.0)
        d.attrs["ref"] = f["grp2"].ref
        d.attrs["empty"] = h5py.Empty("f4")
        d.attrs["_FillValue"] = -1.0
        d.attrs["scale_factor"] = 2.0
        d.attrs["units"] = "seconds since 2000-01-01"
        d.attrs["abo_lake_kind"] = "not ours"
        d.attrs["complex"] = np.complex64(1 + 2j)
        d.attrs["flag"] = np.bool_(True)
        d.attrs["nan"] = np.nan
        d.attrs["cattr"] = np.array([(1, 2.0)], dtype=[("i", "i4"), ("f", "f8")])
        d.attrs["strs"] = np.array([b"a", b"b"])
        f.attrs["root_attr"] = "r"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("edge")
    write_edge_file(root / "edge.h5", root / "other.h5")
    return root / "edge.h5"


@pytest.fixture(scope="module")
def edge_tree(edge: Path) -> xr.DataTree:
    return read_raw(edge)


@pytest.fixture(scope="module")
def edge_stored(edge_tree: xr.DataTree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("edge_zarr") / "raw.zarr"
    _store(edge_tree, where)
    return where


@pytest.fixture(scope="module")
def nwb1_tree() -> xr.DataTree:
    return read_raw(_real(NWB1))


@pytest.fixture(scope="module")
def nwb2_stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("nwb2") / "raw.zarr"
    _store(read_raw(_real(NWB2)), where)
    return where


# ---------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", ["nwb1", "nwb2"])
def test_real_file_roundtrips_faithfully(name, tmp_path, request):
    path = _real(NWB1 if name == "nwb1" else NWB2)
    if name == "nwb1":
        reopened = _store(request.getfixturevalue("nwb1_tree"), tmp_path / "raw.zarr", fast=True)
    else:  # written with consolidated=True, as the brief of the lake requires
        reopened = xr.open_datatree(request.getfixturevalue("nwb2_stored"), engine="zarr")
    assert reopened.attrs["abo_lake_kind"] == "hdf5_raw"
    assert reopened.attrs["source_file"] == path.name
    with h5py.File(path, "r") as f:
        n_groups = sum(isinstance(o, h5py.Group) for o in _objects(f))
    assert len(list(reopened.subtree)) == n_groups + 1
    assert check_raw(path, reopened) == []


def _objects(f: h5py.File) -> list:
    out: list = []
    f.visititems(lambda _name, obj: out.append(obj))
    return out


def test_nwb1_links_and_layout(nwb1_tree):
    tree = nwb1_tree
    fl = tree["processing/brain_observatory_pipeline/Fluorescence/imaging_plane_1"]
    assert fl.attrs["abo_lake_link.neuropil_traces"] == (
        "soft:/processing/brain_observatory_pipeline/Fluorescence/"
        "imaging_plane_1_neuropil_response/data"
    )
    assert "neuropil_traces" not in fl.dataset.variables
    assert fl.attrs["ancestry"] == ["TimeSeries", "RoiResponseSeries"]
    assert tree.dataset["nwb_version"].values[()] == "NWB-1.0.5"
    assert fl.dataset["data"].dims == ("data_dim_0", "data_dim_1")


def test_nwb2_references_become_paths(nwb2_stored):
    tree = xr.open_datatree(nwb2_stored, engine="zarr")
    electrodes = tree["general/extracellular_ephys/electrodes"]
    groups = electrodes["group"].values
    assert groups.shape == (32,)
    assert set(groups.tolist()) == {"/general/extracellular_ephys/ADunit_32"}
    assert electrodes["group"].attrs["abo_lake_hdf5_dtype"] == "object reference"
    assert tree["units"]["electrodes"].attrs["table"] == (
        "ref:/general/extracellular_ephys/electrodes"
    )
    assert tree.attrs[".specloc"] == "ref:/specifications"
    spec = tree["specifications/core/2%2E1%2E0"]
    assert str(spec["nwb%2Efile"].values[()]).startswith('{"groups"')
    # the ragged VectorIndex is carried verbatim (cumulative end offsets)
    index = tree["units"]["spike_times_index"].values
    assert index[-1] == tree["units"]["spike_times"].size
    with h5py.File(NWB2, "r") as f:
        np.testing.assert_array_equal(index, f["units/spike_times_index"][()])


def test_flipped_value_is_reported(nwb2_stored, tmp_path):
    copy = tmp_path / "tampered.zarr"
    shutil.copytree(nwb2_stored, copy)
    arr = zarr.open_array(str(copy / "units" / "spike_times"), mode="r+")
    arr[5] = arr[5] + 1e-9
    problems = check_raw(NWB2, xr.open_datatree(copy, engine="zarr"))
    assert len(problems) == 1
    assert problems[0].startswith("/units/spike_times: 1 of 34057 values differ (first at (5,))")


def test_skip_globs(tmp_path):
    path = _real(NWB2)
    skip = ["/units/spike_times*", "/specifications/*"]
    tree = read_raw(path, skip=skip)
    skipped = tree.attrs["abo_lake_skipped"]
    assert "/units/spike_times" in skipped
    assert "/units/spike_times_index" in skipped
    assert all(p.startswith(("/units/spike_times", "/specifications/")) for p in skipped)
    assert "spike_times" not in tree["units"].dataset
    assert "unit_x" in tree["units"].dataset
    reopened = _store(tree, tmp_path / "skip.zarr")
    assert reopened.attrs["abo_lake_skipped"] == skipped
    assert check_raw(path, reopened, skip=skip) == []
    missing = check_raw(path, reopened)
    assert sorted(p.split(":")[0] for p in missing) == sorted(skipped)


def test_lazy_variables_pickle(edge, edge_tree):
    big = edge_tree.dataset["big"]
    assert isinstance(big.data, da.Array)
    assert big.encoding["chunks"] == (600, 1000)  # HDF5 (50, 1000) chunks grown to ~4 MB
    assert big.attrs["abo_lake_hdf5_chunks"] == [50, 1000]
    assert big.attrs["abo_lake_hdf5_compression"] == "gzip"
    restored = pickle.loads(pickle.dumps(big.data))
    with h5py.File(edge, "r") as f:
        np.testing.assert_array_equal(restored[10:20].compute(), f["big"][10:20])
    assert pickle.loads(pickle.dumps(edge_tree)).identical(edge_tree)
    words = edge_tree.dataset["big_strings"]
    assert isinstance(words.data, da.Array)
    assert words[69_999].values[()] == "s69999"


def test_deterministic(edge, edge_tree):
    again = read_raw(edge)
    assert again.identical(edge_tree)
    assert again.dataset["big"].data.name == edge_tree.dataset["big"].data.name


# ----------------------------------------------------------------------------- edge cases


def test_edge_file_roundtrips(edge, edge_stored):
    reopened = xr.open_datatree(edge_stored, engine="zarr")
    assert check_raw(edge, reopened) == []
    assert check_raw(edge, read_raw(edge)) == []


def test_compound_vlen_scalar_empty(edge_tree):
    root = edge_tree.dataset
    np.testing.assert_array_equal(root["compound.a"].values, [1, 2])
    np.testing.assert_array_equal(root["compound.b"].values, [0.5, np.nan])
    assert root["compound.s"].values.tolist() == ["ab", "cde"]
    assert root["compound.v"].values.tolist() == ["x", "héllo"]
    assert root["compound.xy"].shape == (2, 2)
    assert root["compound.a"].dims == ("compound_dim_0",)
    assert edge_tree["grp"]["alias"].values.tolist() == ["héllo", "", "x"]
    assert edge_tree["grp2"]["fixed"].values.tolist() == ["ab", "cde"]
    assert edge_tree["grp2"]["latin"].values.tolist() == [b"\xe9t\xe9"]  # not UTF-8: bytes
    assert root["scalar_int"].shape == ()
    assert root["scalar_int"].dtype == np.int16
    assert int(root["scalar_int"]) == -7
    assert root["scalar_str"].values[()] == "only one"
    assert root["empty"].shape == (0,)
    assert root["empty2d"].shape == (0, 3)
    assert root["null"].shape == (0,)
    assert root["null"].attrs["abo_lake_hdf5_null"] is True
    assert root["flags"].dtype == bool
    assert root["enum"].values.tolist() == [0, 1, 1]
    assert root["enum"].attrs["abo_lake_hdf5_enum"] == [["GREEN", 1], ["RED", 0]] or root[
        "enum"
    ].attrs["abo_lake_hdf5_enum"] == [["RED", 0], ["GREEN", 1]]
    assert root["ragged"].values.tolist() == [1, 2, 3, 4]
    assert root["ragged.index"].values.tolist() == [3, 3, 4]
    assert root["opaque"].shape == (2, 4)
    assert bytes(root["opaque"].values[1]) == b"efgh"
    assert root["big_endian"].values.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_links_recorded_not_copied(edge_tree):
    attrs = edge_tree.attrs
    assert attrs["abo_lake_link.soft"] == "soft:/compound"
    assert attrs["abo_lake_link.dangling"] == "soft:/nope"
    assert attrs["abo_lake_link.ext"] == "external:other.h5:/x"
    assert attrs["abo_lake_link.strings"] == "hard:/grp2"
    assert attrs["abo_lake_link.named_type"] == "datatype:<i2"
    assert edge_tree["grp2"].attrs["abo_lake_link.vlen"] == "hard:/grp/alias"
    assert "strings" not in edge_tree.children
    assert "soft" not in edge_tree.dataset.variables


def test_references_and_attrs(edge_tree):
    root = edge_tree.dataset
    assert root["refs"].values.tolist() == ["/grp2", "/compound", ""]
    assert root["regionrefs"].values[0] == '/compound?{"hyperslab": [[[0], [0]]]}'
    attrs = root["compound.a"].attrs
    assert attrs["ref"] == "ref:/grp2"
    assert attrs["bytes"] == "raw"
    assert attrs["int"] == 3
    assert type(attrs["int"]) is int
    assert attrs["arr"] == [0.0, 1.0, 2.0]
    assert attrs["empty"] == "empty:<f4"
    assert attrs["complex"] == [1.0, 2.0]
    assert attrs["flag"] is True
    assert np.isnan(attrs["nan"])
    assert attrs["cattr"] == [[1, 2.0]]
    assert attrs["strs"] == ["a", "b"]
    # keys xarray would interpret, or that clash with ours, are escaped
    assert attrs["%_FillValue"] == -1.0
    assert attrs["%scale_factor"] == 2.0
    assert attrs["%units"] == "seconds since 2000-01-01"
    assert attrs["%abo_lake_kind"] == "not ours"
    assert edge_tree.attrs["root_attr"] == "r"


def test_names_escaped_and_dims_disambiguated(edge_tree):
    root = edge_tree.dataset
    assert "%5F_hidden" in root
    assert "a%2Eb" in root
    assert edge_tree["with space"]["x%25y"].values.tolist() == [1]
    assert root["data"].dims == ("data_dim_0",)
    assert edge_tree["sub"]["data"].dims == ("data_dim_0_1",)  # parent has data_dim_0 of 3
    clash = edge_tree["clash"].dataset
    assert clash["a"].dims == ("a_dim_0_1", "a_dim_1")
    assert clash["a_dim_0"].dims == ("a_dim_0_dim_0",)


def test_edge_values_stored_are_scaled_nowhere(edge_stored):
    reopened = xr.open_datatree(edge_stored, engine="zarr")
    # _FillValue/scale_factor/units are escaped, so nothing is masked, scaled or decoded
    b = reopened.dataset["compound.b"]
    assert b.dtype == np.float64
    np.testing.assert_array_equal(b.values, [0.5, np.nan])


def test_flip_in_compound_field_reports_that_dataset(edge, edge_tree):
    tampered = edge_tree.copy(deep=True)
    original = tampered.dataset["compound.a"]
    values = original.values.copy()
    values[1] = 99
    tampered["compound.a"] = xr.DataArray(values, dims=original.dims, attrs=original.attrs)
    problems = check_raw(edge, tampered)
    assert problems == ["/compound: 1 of 2 values differ (first at (1,)) in /compound.a"]
    tampered.attrs["source_file"] = "other.nwb"
    assert check_raw(edge, tampered)[0] == (
        "/: tree made from 'other.nwb', expected source_file 'edge.h5'"
    )
    del tampered["compound.b"].attrs["bytes"]
    tampered["compound.b"].attrs["int"] = 4
    assert check_raw(edge, tampered)[2:] == [
        "/compound (compound.b): attribute(s) ['bytes'] missing",
        "/compound (compound.b): attribute 'int' is 4, expected 3",
    ]


@pytest.mark.parametrize(
    "name", ["plain", "__dunder", "a.b", "x%2Ey", "%", ".", "..", "_single", "a/b", "é ü"]
)
def test_escape_roundtrip(name):
    escaped = escape_name(name)
    assert unescape_name(escaped) == name
    assert "/" not in escaped
    assert "." not in escaped
    assert not escaped.startswith("__")


@pytest.mark.parametrize("key", ["_FillValue", "abo_lake_kind", "%x", "dtype", "unit", "help"])
def test_attr_key_escape_roundtrip(key):
    assert unescape_attr_key(escape_attr_key(key)) == key


def test_node_path():
    assert node_path("/a.b/__c") == "/a%2Eb/%5F_c"
    assert node_path("/") == "/"


class TestHdf5RawErrors:
    def test_not_hdf5(self, tmp_path):
        bad = tmp_path / "bad.nwb"
        bad.write_text("not hdf5")
        with pytest.raises(SourceFileError, match="cannot open as HDF5"):
            read_raw(bad)


# ------------------------------------------------------------------------------- mapped


def _mapped_dataset() -> xr.Dataset:
    with h5py.File(_real(NWB2), "r") as f:
        spikes = f["units/spike_times"][()]
        waveform = f["units/waveform_mean"][()]
        x = f["general/extracellular_ephys/electrodes/x"][()]
        location = [v.decode() for v in f["general/extracellular_ephys/electrodes/location"][()]]
    return xr.Dataset(
        {
            "spike_times": ("spike", spikes),
            "waveform_mean": (("sample", "unit_id"), waveform.T),
            "x_um": ("channel", x * 1000.0),
            "location": ("channel", np.array(location, dtype=object)),
        }
    )


MAPPING = {
    "/units/spike_times": ("spike_times", None),
    "/units/waveform_mean": ("waveform_mean", np.transpose),
    "/general/extracellular_ephys/electrodes/x": ("x_um", blockwise(lambda a: a * 1000.0)),
    "/general/extracellular_ephys/electrodes/location": ("location", None),
}


def test_check_mapped_faithful(monkeypatch):
    ds = _mapped_dataset()
    assert check_mapped(NWB2, ds, MAPPING) == []
    monkeypatch.setattr(fidelity, "BLOCK_BYTES", 1000)  # many blocks along the first axis
    assert check_mapped(NWB2, ds, MAPPING) == []


def test_check_mapped_reports(monkeypatch):
    monkeypatch.setattr(fidelity, "BLOCK_BYTES", 1000)
    ds = _mapped_dataset()
    ds["spike_times"][30_000] = -1.0
    ds["x_um"] = ds["x_um"].astype("float32")
    problems = check_mapped(
        NWB2,
        ds,
        {**MAPPING, "/nope": ("spike_times", None), "/units/unit_x": ("unit_x", None)},
    )
    assert len(problems) == 4
    assert problems[0] == (
        "/units/spike_times: 1 of 125 values differ (first at (30000,)) in variable "
        "'spike_times' (rows 30000:30125)"
    )
    assert problems[1].startswith("/general/extracellular_ephys/electrodes/x: dtype float32")
    assert problems[2] == f"/nope: no such dataset in {NWB2.name}"
    assert problems[3].startswith("/units/unit_x: mapped variable 'unit_x' missing")


def test_assert_faithful():
    assert_faithful([], source="x.nwb")
    problems = [f"/d{i}: 1 of 2 values differ" for i in range(12)]
    with pytest.raises(IntegrityError, match=r"x\.nwb: .* 12 problem") as info:
        assert_faithful(problems, source="x.nwb")
    text = str(info.value)
    assert "/d9:" in text
    assert "/d10:" not in text
    assert "... and 2 more" in text


def test_check_raw_streams_blocks(edge, edge_tree, monkeypatch):
    monkeypatch.setattr(fidelity, "BLOCK_BYTES", 100_000)  # 25 rows -> HDF5 chunk rows (50)
    assert check_raw(edge, edge_tree) == []
    tampered = edge_tree.copy(deep=True)
    big = tampered.dataset["big"]
    values = big.values.copy()
    values[437, 3] = np.float32(np.nan)
    tampered["big"] = xr.DataArray(values, dims=big.dims, attrs=big.attrs)
    # one 50-row block (50 x 1000 values) differs, reported with the index in the whole array
    assert check_raw(edge, tampered) == [
        "/big: 1 of 50000 values differ (first at (437, 3)) in /big"
    ]
