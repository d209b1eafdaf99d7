"""Synthetic CCF / connectivity writers and the ``abo_lake.sources.ccf`` reader."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import dask.array as da
import nrrd
import numpy as np
import pytest
import xarray as xr
import zarr
from scipy import ndimage

from abo_lake import schema
from abo_lake.errors import SourceFileError
from abo_lake.sources import ccf as reader
from abo_lake.synthetic import ccf as synth

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ANN_KEY = "ccf/ccf_2017/annotation"
TPL_KEY = "ccf/ccf_2017/template"
DIMS = ["ap", "dv", "lr"]


@pytest.fixture(scope="module")
def ccf_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ccf")
    files = synth.write_ccf(out, scale="tiny", seed=0)
    assert [f.name for f in files] == [
        "annotation_100.nrrd",
        "average_template_100.nrrd",
        "structures.json",
    ]
    return out


@pytest.fixture(scope="module")
def conn_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("conn")
    synth.write_connectivity(out, scale="tiny", seed=0, n_experiments=2)
    return out


@pytest.fixture(scope="module")
def ontology():
    nodes = synth.load_ontology()
    by_acronym = {n["acronym"]: n for n in nodes}
    return nodes, by_acronym


@pytest.fixture(scope="module")
def ann(ccf_dir):
    return reader.read(ccf_dir / "annotation_100.nrrd")[ANN_KEY]["100um"]["annotation"].values


def _descendants(nodes, sid):
    return [n["id"] for n in nodes if sid in n["structure_id_path"]]


def _region(ann, ontology, acronym):
    nodes, by_acronym = ontology
    return np.isin(ann, _descendants(nodes, by_acronym[acronym]["id"]))


def _experiments(conn_dir):
    return sorted(p for p in conn_dir.iterdir() if p.name.startswith("experiment_"))


# -- the synthetic volumes ------------------------------------------------------------------------


def test_nrrd_header_like_allen(ccf_dir):
    for name, kind in [("annotation_100.nrrd", "uint32"), ("average_template_100.nrrd", "uint16")]:
        header = nrrd.read_header(str(ccf_dir / name))
        assert header["type"] == kind
        assert list(header["sizes"]) == [132, 80, 114]
        assert header["encoding"] == "gzip"
        assert header["space"] == "left-posterior-superior"
        np.testing.assert_array_equal(header["space directions"], np.diag([100.0] * 3))


def test_default_nrrd_read_is_ap_dv_lr(ccf_dir, ann, ontology):
    data, _ = nrrd.read(str(ccf_dir / "annotation_100.nrrd"))  # AllenSDK's call
    assert data.shape == (132, 80, 114)
    assert data.dtype == np.uint32
    np.testing.assert_array_equal(data, ann)
    ap, dv, _ = np.nonzero(ann)
    mob = np.nonzero(_region(ann, ontology, "MOB"))
    cb = np.nonzero(_region(ann, ontology, "CB"))
    ctx = np.nonzero(_region(ann, ontology, "Isocortex"))
    bs = np.nonzero(_region(ann, ontology, "HB"))
    assert mob[0].mean() < ap.mean() < cb[0].mean()  # AP runs anterior -> posterior
    assert ctx[1].mean() < dv.mean() < bs[1].mean()  # DV runs dorsal -> ventral
    assert ann[0].max() == 0  # 0 outside the brain
    assert ann[:, :, 0].max() == 0


def test_labels_are_real_structures_with_meaningful_sizes(ann, ontology):
    nodes, _ = ontology
    labels = set(np.unique(ann).tolist()) - {0}
    assert labels <= {n["id"] for n in nodes}
    half = ann.shape[2] // 2
    for acronym in ["VISp", "VISl", "VISal", "VISam", "CA1", "DG", "LGd", "LP", "CP", "MOp", "SSp"]:
        region = _region(ann, ontology, acronym)
        assert region[:, :, :half].sum() >= 100, acronym
        assert region[:, :, half:].sum() == region[:, :, :half].sum(), acronym


def test_children_inside_parents(ann, ontology):
    nodes, by_acronym = ontology
    for acronym in ["grey", "CH", "Isocortex", "VIS", "VISp", "HPF", "TH", "BS", "CB"]:
        parent = _region(ann, ontology, acronym)
        sid = by_acronym[acronym]["id"]
        children = [
            n
            for n in nodes
            if n["structure_id_path"][:-1] == by_acronym[acronym]["structure_id_path"]
        ]
        union = ann == sid
        for child in children:
            region = np.isin(ann, _descendants(nodes, child["id"]))
            assert not (region & ~parent).any(), (acronym, child["acronym"])
            assert not (region & union).any()  # siblings do not overlap
            union |= region
        np.testing.assert_array_equal(union, parent)


def test_anatomy_is_geometrically_nested(ann, ontology):
    # cortex is a shell under the surface; VISp layers are stacked in order of depth
    depth = ndimage.distance_transform_edt(ann > 0) * 100.0
    assert depth[_region(ann, ontology, "Isocortex")].max() <= 2000
    assert depth[_region(ann, ontology, "TH")].min() >= 1000
    means = [depth[_region(ann, ontology, f"VISp{s}")].mean() for s in ["1", "2/3", "4", "5", "6a"]]
    assert means == sorted(means)
    # one connected piece per hemisphere (a stray voxel at most where boundaries meet)
    half = ann.shape[2] // 2
    for acronym in ["Isocortex", "VISp", "VISl", "CA1", "DG", "LGd", "LP", "CP", "TH", "CB"]:
        labels, _ = ndimage.label(_region(ann, ontology, acronym)[:, :, :half])
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() >= 0.99 * sizes.sum(), acronym
    # visual cortex lies posterior to motor cortex
    ap_visp = np.nonzero(_region(ann, ontology, "VISp"))[0].mean()
    assert ap_visp > np.nonzero(_region(ann, ontology, "MOp"))[0].mean() + 30


def test_mirror_symmetric(ann):
    np.testing.assert_array_equal(ann[:, :, ::-1], ann)
    fine = synth.annotation_volume(50)
    np.testing.assert_array_equal(fine[:, :, ::-1], fine)


def test_resolutions_share_the_geometry(ann):
    fine = synth.annotation_volume(50)
    assert fine.shape == (264, 160, 228)
    assert (fine[::2, ::2, ::2] == ann).mean() > 0.95  # differ only at boundaries
    assert set(np.unique(fine).tolist()) == set(np.unique(ann).tolist())


def test_deterministic(ccf_dir, tmp_path):
    again = synth.write_ccf(tmp_path / "a", seed=0)
    for f in again:
        assert f.read_bytes() == (ccf_dir / f.name).read_bytes(), f.name
    other = synth.write_ccf(tmp_path / "b", seed=1)
    ann0, _ = nrrd.read(str(ccf_dir / "annotation_100.nrrd"))
    ann1, _ = nrrd.read(str(other[0]))
    tpl0, _ = nrrd.read(str(ccf_dir / "average_template_100.nrrd"))
    tpl1, _ = nrrd.read(str(other[1]))
    np.testing.assert_array_equal(ann0, ann1)  # the anatomy does not depend on the seed
    assert (tpl0 != tpl1).mean() > 0.5


def test_template_follows_structures(ccf_dir, ann):
    tpl, _ = nrrd.read(str(ccf_dir / "average_template_100.nrrd"))
    assert tpl.dtype == np.uint16
    assert tpl[ann == 0].mean() < 50 < tpl[ann > 0].mean()


# -- reader: volumes ------------------------------------------------------------------------------


def test_read_annotation_multiscale(ccf_dir, ann):
    out = reader.read(ccf_dir / "annotation_100.nrrd")
    assert list(out) == [ANN_KEY]
    tree = out[ANN_KEY]
    assert isinstance(tree, xr.DataTree)
    assert tree.attrs["abo_lake_kind"] == "ccf_volume"
    assert list(tree.children) == ["100um", "200um"]
    assert "multiscales" not in tree.attrs  # OME-Zarr 0.4 (Zarr v2) keys: not at the top
    assert tree.attrs["ome"]["version"] == "0.5"
    (ms,) = tree.attrs["ome"]["multiscales"]
    assert "version" not in ms  # 0.5 keeps the version beside "multiscales" only
    assert ms["name"] == "annotation"
    assert ms["axes"] == [{"name": d, "type": "space", "unit": "micrometer"} for d in DIMS]
    assert [d["path"] for d in ms["datasets"]] == ["100um/annotation", "200um/annotation"]
    assert ms["datasets"][1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [200.0] * 3}
    ]
    assert ms["type"] == "stride"
    assert "every second voxel" in ms["metadata"]["description"]
    json.dumps(tree.attrs)
    fine, coarse = tree["100um"].to_dataset(), tree["200um"].to_dataset()
    for ds, res in [(fine, 100), (coarse, 200)]:
        schema.validate(ds, "ccf_volume")
        assert ds.attrs["resolution_um"] == res
        assert ds.attrs["source_file"] == "annotation_100.nrrd"
        assert ds["annotation"].dtype == np.uint32
        assert ds["annotation"].dims == ("ap", "dv", "lr")
        assert ds["ap"].attrs["units"] == "um"
        np.testing.assert_array_equal(ds["lr"], np.arange(ds.sizes["lr"]) * float(res))
        json.dumps(ds.attrs)
    assert fine["annotation"].encoding["chunks"] == (64, 64, 64)
    assert coarse.sizes == {"ap": 66, "dv": 40, "lr": 57}
    np.testing.assert_array_equal(coarse["annotation"], ann[::2, ::2, ::2])
    np.testing.assert_array_equal(coarse["ap"], fine["ap"][::2])


def test_read_template_block_mean(ccf_dir):
    tree = reader.read(ccf_dir / "average_template_100.nrrd")[TPL_KEY]
    fine = tree["100um"]["template"].values
    coarse = tree["200um"]["template"].values
    assert fine.dtype == coarse.dtype == np.uint16
    (ms,) = tree.attrs["ome"]["multiscales"]
    assert (ms["name"], ms["type"]) == ("template", "mean")
    assert [d["path"] for d in ms["datasets"]] == ["100um/template", "200um/template"]
    np.testing.assert_array_equal(coarse[10, 7, 3], np.rint(fine[20:22, 14:16, 6:8].mean()))
    assert coarse[10, 7, -1] == fine[20:22, 14:16, 112:114].mean().round()  # full last block


def test_read_version_override(ccf_dir):
    out = reader.read(ccf_dir / "annotation_100.nrrd", ccf_version="ccf_2016")
    assert list(out) == ["ccf/ccf_2016/annotation"]
    assert out["ccf/ccf_2016/annotation"].attrs["ccf_version"] == "ccf_2016"


# -- reader: ontology -----------------------------------------------------------------------------


def _check_structures(ds, nodes):
    schema.validate(ds, "ccf_structures")
    assert ds.sizes["structure_id"] == len(nodes) == 840
    assert ds["structure_id"].dtype == np.int64
    visp = ds.sel(structure_id=385)
    assert visp["acronym"].item() == "VISp"
    assert visp["name"].item() == "Primary visual area"
    assert visp["parent_structure_id"].item() == 669
    assert visp["depth"].item() == 7
    assert ds.sel(structure_id=997)["parent_structure_id"].item() == -1
    idx = ds["structure_id_path_index"].values
    flat = ds["structure_id_path"].values
    for i, node in enumerate(nodes):
        start = idx[i - 1] if i else 0
        assert flat[start : idx[i]].tolist() == node["structure_id_path"]
        assert ds["rgb_triplet"].values[i].tolist() == node["rgb_triplet"]
    assert ds.sel(structure_id=997)["color_hex_triplet"].item() == "FFFFFF"
    assert ds["acronym"].dtype.kind == "U"
    json.dumps(ds.attrs)


def test_read_structures(ccf_dir, ontology):
    assert reader.sniff(ccf_dir / "structures.json")
    ds = reader.read(ccf_dir / "structures.json")["ccf/ccf_2017/structures"]
    _check_structures(ds, ontology[0])
    assert ds.attrs["abo_lake_kind"] == "ccf_structures"


def test_read_real_structures_json():
    real = SHARED / "ccf" / "structures.json"
    if not real.is_file():
        pytest.skip(f"real reference data not found at {real}")
    ds = reader.read(real)["ccf/ccf_2017/structures"]
    _check_structures(ds, json.loads(real.read_text()))


def test_read_structures_api_and_nested_forms(tmp_path, ontology):
    nodes, _ = ontology
    flat = reader.read_structures(Path(synth.__file__).parent / "data" / "structures.json")
    (tmp_path / "msg.json").write_text(json.dumps({"success": True, "msg": nodes}))
    xr.testing.assert_identical(
        reader.read(tmp_path / "msg.json")["ccf/ccf_2017/structures"].drop_attrs(),
        flat.drop_attrs(),
    )
    # a nested tree without paths (the Allen API structure_graph download)
    by_id = {n["id"]: {k: v for k, v in n.items() if k != "structure_id_path"} for n in nodes}
    roots = []
    for n in nodes:
        node = by_id[n["id"]]
        node.setdefault("children", [])
        parent = n["structure_id_path"][-2] if len(n["structure_id_path"]) > 1 else None
        node["parent_structure_id"] = parent
        (by_id[parent].setdefault("children", []) if parent else roots).append(node)
    (tmp_path / "tree.json").write_text(json.dumps(roots))
    nested = reader.read(tmp_path / "tree.json")["ccf/ccf_2017/structures"]
    xr.testing.assert_identical(nested.drop_attrs(), flat.drop_attrs())


# -- connectivity ---------------------------------------------------------------------------------


def test_connectivity_files(conn_dir):
    exps = _experiments(conn_dir)
    assert len(exps) == 2
    for exp in exps:
        names = sorted(p.name for p in exp.iterdir())
        assert names == [
            "data_mask_100.nrrd",
            "injection_density_100.nrrd",
            "injection_fraction_100.nrrd",
            "metadata.json",
            "projection_density_100.nrrd",
        ]
        data, header = nrrd.read(str(exp / "projection_density_100.nrrd"))
        assert data.shape == (132, 80, 114)
        assert data.dtype == np.float32
        assert header["type"] == "float"


def test_read_connectivity_from_any_file(conn_dir):
    exp = _experiments(conn_dir)[0]
    exp_id = int(exp.name.split("_")[1])
    key = f"connectivity/experiment/{exp_id}"
    results = [reader.read(p) for p in sorted(exp.iterdir())]
    assert all(list(r) == [key] for r in results)
    for other in results[1:]:
        xr.testing.assert_identical(results[0][key], other[key])
    ds = results[0][key]
    schema.validate(ds, "connectivity_experiment")
    assert ds.attrs["abo_lake_kind"] == "connectivity_experiment"
    assert ds.attrs["experiment_id"] == exp_id == ds.attrs["id"]
    assert ds.attrs["source_file"] == "projection_density_100.nrrd"
    assert ds.attrs["structure_abbrev"] == "VISp"
    json.dumps(ds.attrs)
    for name in reader.CONNECTIVITY_VOLUMES:
        assert ds[name].dtype == np.float32
        assert ds[name].encoding["chunks"] == (64, 64, 64)
    np.testing.assert_array_equal(ds["dv"], np.arange(80) * 100.0)


def test_an_incomplete_connectivity_experiment_is_one_failing_group(conn_dir, tmp_path):
    exp = tmp_path / _experiments(conn_dir)[0].name
    exp.mkdir()
    for f in _experiments(conn_dir)[0].iterdir():
        if not f.name.startswith("data_mask"):
            (exp / f.name).write_bytes(f.read_bytes())
    members = reader.members(exp / "projection_density_100.nrrd")
    assert [m.name for m in members] == [
        "injection_density_100.nrrd",
        "injection_fraction_100.nrrd",
        "metadata.json",
        "projection_density_100.nrrd",
    ]
    assert all(reader.members(m)[0] == members[0] for m in members)
    with pytest.raises(SourceFileError, match=r"needs .*data_mask.*found \['injection_density"):
        reader.read(members[0])


def test_connectivity_ground_truth(conn_dir, ann, ontology):
    nodes, _ = ontology
    half = ann.shape[2] // 2
    for exp in _experiments(conn_dir):
        meta = json.loads((exp / "metadata.json").read_text())
        ds = next(iter(reader.read(exp / "metadata.json").values()))
        vols = {k: ds[k].values for k in reader.CONNECTIVITY_VOLUMES}
        for v in vols.values():
            assert v.min() >= 0
            assert v.max() <= 1
        assert set(np.unique(vols["data_mask"]).tolist()) <= {0.0, 1.0}
        inj = vols["injection_density"] > 0
        assert inj.sum() > 10
        source = np.isin(ann, _descendants(nodes, meta["structure_id"]))
        assert not (inj & ~source).any()  # the injection lies inside its structure
        assert not inj[:, :, :half].any()  # right hemisphere
        assert (vols["injection_fraction"][inj] > 0).all()
        assert set(meta["injection_structures"]) == set(np.unique(ann[inj]).tolist())
        proj = vols["projection_density"] * (vols["data_mask"] > 0)
        for sid, ipsi, contra in zip(
            meta["target_structure_ids"],
            meta["target_strength_ipsi"],
            meta["target_strength_contra"],
            strict=True,
        ):
            region = np.isin(ann, _descendants(nodes, sid)) & ~inj
            right, left = (
                proj[:, :, half:][region[:, :, half:]],
                proj[:, :, :half][region[:, :, :half]],
            )
            assert (left.mean() > 0) == (contra > 0), sid  # contralateral
            if ipsi > 0:
                assert right.mean() > left.mean(), sid  # ipsilateral stronger
        outside = ~np.isin(
            ann, [i for s in meta["target_structure_ids"] for i in _descendants(nodes, s)]
        )
        assert proj[outside & ~inj].max() == 0


def test_connectivity_deterministic(conn_dir, tmp_path):
    synth.write_connectivity(tmp_path, seed=0, n_experiments=2)
    for exp in _experiments(conn_dir):
        for f in exp.iterdir():
            assert (tmp_path / exp.name / f.name).read_bytes() == f.read_bytes()


# -- errors and sniff -----------------------------------------------------------------------------


def test_sniff(ccf_dir, conn_dir, tmp_path):
    exp = _experiments(conn_dir)[0]
    assert reader.sniff(ccf_dir / "annotation_100.nrrd")
    assert reader.sniff(exp / "metadata.json")
    assert reader.sniff(exp / "data_mask_100.nrrd")
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "table.csv").write_text("id,acronym\n1,VISp\n")
    (tmp_path / "other.json").write_text(json.dumps({"id": 3, "name": "x"}))
    (tmp_path / "cells.swc").write_text("# swc\n1 1 0 0 0 5 -1\n")
    for name in ["random.bin", "table.csv", "other.json", "cells.swc"]:
        assert not reader.sniff(tmp_path / name), name
    assert not reader.sniff(tmp_path / "missing.nrrd")


class TestCcfErrors:
    def test_random_bytes(self, tmp_path):
        path = tmp_path / "annotation_100.nrrd"
        path.write_bytes(np.random.default_rng(1).bytes(1000))
        with pytest.raises(SourceFileError, match="annotation_100.nrrd"):
            reader.read(path)

    def test_broken_header(self, tmp_path):
        path = tmp_path / "annotation_100.nrrd"
        path.write_bytes(b"NRRD0004\ntype: uint32\ndimension: three\nsizes: 1 2\n\n\x00\x00")
        with pytest.raises(SourceFileError, match=r"annotation_100\.nrrd.*header"):
            reader.read(path)

    def test_shape_disagrees_with_resolution(self, tmp_path):
        path = tmp_path / "annotation_100.nrrd"
        synth._write_nrrd(path, np.zeros((66, 40, 57), dtype=np.uint32), 100)
        with pytest.raises(SourceFileError, match=r"\(66, 40, 57\) disagrees .* 100 µm"):
            reader.read(path)

    def test_name_disagrees_with_header(self, tmp_path):
        path = tmp_path / "annotation_50.nrrd"
        synth._write_nrrd(path, np.zeros((132, 80, 114), dtype=np.uint32), 100)
        with pytest.raises(SourceFileError, match="file name says 50"):
            reader.read(path)

    def test_float_annotation(self, tmp_path):
        path = tmp_path / "annotation_100.nrrd"
        synth._write_nrrd(path, np.zeros((132, 80, 114), dtype=np.float32), 100)
        with pytest.raises(SourceFileError, match="integer structure ids"):
            reader.read(path)

    def test_truncated_data(self, ccf_dir, tmp_path):
        raw = (ccf_dir / "annotation_100.nrrd").read_bytes()
        path = tmp_path / "annotation_100.nrrd"
        path.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(SourceFileError, match="annotation_100.nrrd"):
            reader.read(path)

    def test_unnamed_float_volume(self, tmp_path):
        path = tmp_path / "volume.nrrd"
        synth._write_nrrd(path, np.zeros((132, 80, 114), dtype=np.float32), 100)
        with pytest.raises(SourceFileError, match="cannot tell which CCF volume"):
            reader.read(path)

    def test_missing_connectivity_volume(self, conn_dir, tmp_path):
        exp = _experiments(conn_dir)[0]
        copy = tmp_path / exp.name
        copy.mkdir()
        for f in exp.iterdir():
            if not f.name.startswith("data_mask"):
                (copy / f.name).write_bytes(f.read_bytes())
        with pytest.raises(SourceFileError, match="data_mask"):
            reader.read(copy / "projection_density_100.nrrd")

    def test_bad_json(self, tmp_path):
        path = tmp_path / "structures.json"
        path.write_text(json.dumps([{"id": 1, "acronym": "a"}]))
        with pytest.raises(SourceFileError, match="structures.json"):
            reader.read(path)

    def test_gzip_is_not_enough(self, tmp_path):
        path = tmp_path / "annotation_100.nrrd"
        path.write_bytes(gzip.compress(b"NRRD0004\n"))
        assert not reader.sniff(path)
        with pytest.raises(SourceFileError, match="not a CCF"):
            reader.read(path)


def test_every_resolution_in_the_folder_is_a_level_of_one_dataset(tmp_path):
    """annotation_50.nrrd and annotation_100.nrrd are one multiscale dataset: both files as
    levels (each equal to its file), 200 µm derived from the coarsest; a job converts the
    folder once, whichever file it meets, and the release holds both resolutions."""
    from abo_lake import jobs

    synth.write_ccf(tmp_path / "ccf", scale="tiny", seed=0, resolutions=[50, 100])
    folder = tmp_path / "ccf"
    files = [folder / "annotation_50.nrrd", folder / "annotation_100.nrrd"]
    assert reader.members(files[1]) == files  # finest first
    tree = reader.read(files[1])[ANN_KEY]
    assert list(tree.children) == ["50um", "100um", "200um"]
    for name, f in zip(["50um", "100um"], files):
        data, _ = nrrd.read(str(f), index_order="F")
        np.testing.assert_array_equal(tree[name]["annotation"].values, data)
        assert tree[name].attrs["source_file"] == f.name
    coarse = tree["200um"].to_dataset()
    assert coarse.attrs["source_file"] == "annotation_100.nrrd"
    assert coarse.attrs["derived"] == "stride 2"
    np.testing.assert_array_equal(coarse["annotation"], tree["100um"]["annotation"][::2, ::2, ::2])
    (ms,) = tree.attrs["ome"]["multiscales"]
    assert [d["path"] for d in ms["datasets"]] == [
        "50um/annotation",
        "100um/annotation",
        "200um/annotation",
    ]
    assert [d["coordinateTransformations"][0]["scale"][0] for d in ms["datasets"]] == [
        50.0,
        100.0,
        200.0,
    ]
    # a job meets the folder's files one by one (or as listed): one dataset, all levels
    planned = jobs.plan([*files, folder / "average_template_100.nrrd"])
    assert [Path(f).name for f in planned] == ["annotation_50.nrrd", "average_template_50.nrrd"]


def _assert_ome_multiscales(group: zarr.Group) -> list[str]:
    """The stored group's attrs are valid OME-Zarr 0.5 multiscales (as the 0.5 spec words
    them) and describe its levels; returns the image names."""
    attrs = group.attrs.asdict()
    assert "multiscales" not in attrs
    ome = attrs["ome"]
    assert ome["version"] == "0.5"
    images = ome["multiscales"]
    names = [ms["name"] for ms in images]
    assert len(set(names)) == len(names) >= 1
    listed = set()
    for ms in images:
        assert {"name", "axes", "datasets", "type", "metadata"} <= ms.keys()  # "strict" 0.5
        assert isinstance(ms["metadata"], dict)
        assert ms["axes"] == [{"name": d, "type": "space", "unit": "micrometer"} for d in DIMS]
        previous = 0.0
        for dataset in ms["datasets"]:
            # the path names an array (not a group), relative to the image group
            level, name = dataset["path"].split("/")
            assert name == ms["name"]
            array = group[dataset["path"]]
            assert isinstance(array, zarr.Array)
            assert list(array.metadata.dimension_names) == DIMS  # == the axes' names
            listed.add(dataset["path"])
            # exactly one scale, first; the level's voxel size in µm on every axis
            (scale, *others) = dataset["coordinateTransformations"]
            assert [t["type"] for t in others] in ([], ["translation"])
            assert scale["type"] == "scale"
            res = float(group[level].attrs["resolution_um"])
            assert scale["scale"] == [res] * 3
            for i, dim in enumerate(DIMS):
                coord = group[f"{level}/{dim}"][:]
                assert np.allclose(coord, np.arange(array.shape[i]) * scale["scale"][i])
            assert res > previous  # finest first
            previous = res
    # every 3-D (ap, dv, lr) array of every level is a level of an image
    volumes = {
        f"{level}/{name}"
        for level, sub in group.groups()
        for name, arr in sub.arrays()
        if list(arr.metadata.dimension_names or []) == DIMS
    }
    assert listed == volumes
    return names


def test_ome_zarr_05_metadata_of_the_stored_groups(tmp_path):
    """What a lake stores for a CCF volume is an OME-Zarr 0.5 image group: ``ome`` attrs
    whose dataset paths are the stored level arrays, scaled by each level's resolution."""
    import abo_lake

    synth.write_ccf(tmp_path / "ccf", scale="tiny", seed=0, resolutions=[50, 100])
    folder = tmp_path / "ccf"
    trees = {
        **reader.read(folder / "annotation_100.nrrd"),
        **reader.read(folder / "average_template_100.nrrd"),
    }
    lake = abo_lake.open_lake(str(tmp_path / "lake"))
    with lake.stage("r1") as stage:
        for key, tree in trees.items():
            stage.write(key, tree)
    rel = lake.release("r1")
    for key, volume in [(ANN_KEY, "annotation"), (TPL_KEY, "template")]:
        group = zarr.open_group(rel.store(key), mode="r", zarr_format=3)
        assert _assert_ome_multiscales(group) == [volume]
        (ms,) = group.attrs["ome"]["multiscales"]
        assert [d["path"] for d in ms["datasets"]] == [
            f"{level}/{volume}" for level in ("50um", "100um", "200um")
        ]
        assert group["200um"].attrs["derived"]  # abo_lake's own attrs say which are derived
        assert "derived" not in group["50um"].attrs
        opened = rel.open_datatree(key)
        assert opened.attrs["ome"] == trees[key].attrs["ome"]


def test_ome_multiscales_one_image_per_volume_array():
    """A level group holding several (ap, dv, lr) arrays gives one image per array name, each
    listing only the levels that hold it; coordinates are not images."""

    def level(res, names):
        shape = (4 * 100 // res, 2, 3)
        ds = xr.Dataset(
            {n: (DIMS, np.zeros(shape, np.uint16)) for n in names},
            coords={d: np.arange(n) * float(res) for d, n in zip(DIMS, shape)},
        )
        return ds.assign_attrs(resolution_um=res)

    ome = reader.ome_multiscales(
        {"200um": level(200, ["annotation"]), "100um": level(100, ["annotation", "template"])}
    )
    assert ome["version"] == reader.OME_VERSION == "0.5"
    ann_ms, tpl_ms = ome["multiscales"]
    assert [d["path"] for d in ann_ms["datasets"]] == ["100um/annotation", "200um/annotation"]
    assert [d["path"] for d in tpl_ms["datasets"]] == ["100um/template"]
    assert (ann_ms["type"], tpl_ms["type"]) == ("stride", "mean")


@pytest.mark.parametrize("encoding", ["gzip", "raw", "bzip2"])
def test_nrrd_volumes_are_memory_mapped_not_loaded(tmp_path, encoding, monkeypatch):
    """``_nrrd.open_volume`` gives what ``nrrd.read`` gives, as a memory map (a gzip volume is
    decompressed once, in a stream, to an unlinked temporary file), and the CCF reader's
    levels are dask arrays over it: a conversion holds blocks, never a whole volume."""
    from abo_lake.sources import _nrrd
    from abo_lake.sources._nrrd import open_volume

    rng = np.random.default_rng(0)
    data = rng.integers(0, 2000, (132, 80, 114)).astype(np.uint32)
    data[:, :40] = 7  # compressible: the output of one step exceeds its input
    path = tmp_path / "annotation_100.nrrd"
    header = {"encoding": encoding, "space directions": np.diag([100.0] * 3)}
    nrrd.write(str(path), data, header, index_order="F")
    mapped, head = open_volume(path)
    assert isinstance(mapped, np.memmap)
    assert mapped.nbytes > path.stat().st_size or encoding == "raw"
    want, _ = nrrd.read(str(path), index_order="F")
    np.testing.assert_array_equal(mapped, want)
    assert list(head["sizes"]) == [132, 80, 114]
    monkeypatch.setattr(_nrrd, "STEP_BYTES", 1 << 18)  # small steps, to see what stays
    tracemalloc.start()
    tree = reader.read(path)[ANN_KEY]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < data.nbytes / 2  # no copy of the volume (dask copies NumPy inputs)
    for level in tree.children.values():
        assert isinstance(level["annotation"].data, da.Array)
    np.testing.assert_array_equal(tree["100um"]["annotation"].values, data)
    np.testing.assert_array_equal(tree["200um"]["annotation"].values, data[::2, ::2, ::2])
    # data that end early: the file named, and what was expected
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(SourceFileError, match=r"annotation_100\.nrrd: .*(truncated|cannot read)"):
        open_volume(path)


def test_template_block_means_by_block_equal_the_whole_volume_mean():
    """The 2×2×2 means computed block by block (dask) equal the means of the whole volume,
    odd edges included."""
    data = np.random.default_rng(1).integers(0, 600, (131, 79, 113)).astype(np.uint16)
    lazy = da.from_array(data, chunks=(50, 33, 64))  # odd chunks: rechunked to even ones
    np.testing.assert_array_equal(
        reader._half(lazy, "template").compute(), reader._block_mean(data)
    )
    twice = reader._half(reader._half(lazy, "template"), "template").compute()
    np.testing.assert_array_equal(twice, reader._block_mean(reader._block_mean(data)))


ALLEN_RESOLUTIONS = (10, 25, 50, 100)


def _chain(res: int, shape: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    """What the fidelity check expects of one file: its level and ×2 halvings to 200 µm."""
    out = {res: shape}
    while res * 2 <= 200:
        res, shape = res * 2, tuple(-(-n // 2) for n in shape)
        out[res] = shape
    return out


@pytest.mark.parametrize(
    "resolutions",
    [(r,) for r in ALLEN_RESOLUTIONS]
    + [(25, 100), (10, 25), (50, 100), (10, 100), (25, 50, 100), ALLEN_RESOLUTIONS],
    ids=lambda rs: "+".join(map(str, rs)),
)
@pytest.mark.parametrize("shapes", ["allen", "small"])
def test_level_plan_holds_every_files_chain(resolutions, shapes):
    """Any set of Allen's resolutions: every file is a level and every level of every file's
    ×2 chain exists with the halved shape (what the fidelity check expects of each file; the
    25 + 100 µm realistic set lost 50 µm, so the release failed). Allen's shapes, and small
    volumes with their ratios (10 µm : 25 µm = 5 : 2 per axis)."""
    base = {10: (40, 20, 30), 25: (16, 8, 12), 50: (8, 4, 6), 100: (4, 2, 3)}
    files = {r: reader.CCF_SHAPES[r] if shapes == "allen" else base[r] for r in resolutions}
    plan = reader.level_plan(files)
    assert list(plan) == sorted(plan)
    for res, shape in files.items():
        assert plan[res] == (res, shape)  # a file's level is the file
        for level, want in _chain(res, shape).items():
            assert level in plan, f"{level} µm of {res} µm's chain is missing"
            if shapes == "allen" or level not in files:
                assert plan[level][1] == want
    for level, (source, shape) in plan.items():  # a derived level halves an existing one
        if source != level:
            assert source == level // 2
            assert shape == tuple(-(-n // 2) for n in plan[source][1])
    if resolutions == (25, 100):
        assert list(plan) == [25, 50, 100, 200]
        assert plan[50][0] == 25
        assert plan[200][0] == 100
