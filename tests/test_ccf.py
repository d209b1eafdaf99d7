"""The ``.ccf`` accessor and :mod:`abo_lake.ccf`: ontology, masks, point lookups, unionizes."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import abo_lake
import abo_lake.accessors
from abo_lake import ccf
from abo_lake.errors import SchemaError
from abo_lake.sources import read
from abo_lake.synthetic import synthesize
from abo_lake.testing import raise_if_dask_computes

ANN = "ccf/ccf_2017/annotation"
STRUCT = "ccf/ccf_2017/structures"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    out = tmp_path_factory.mktemp("ccf_src")
    synthesize("ccf", out)
    synthesize("connectivity", out / "conn", n_experiments=2)
    return out


@pytest.fixture(scope="module")
def tree(src):
    return read(src / "annotation_100.nrrd")[ANN]


@pytest.fixture(scope="module")
def ann(tree):
    """The 100 µm level, chunked once as the lake stores it (64³)."""
    return tree["100um"].to_dataset().chunk({"ap": 64, "dv": 64, "lr": 64})


@pytest.fixture(scope="module")
def ann_np(ann):
    return ann["annotation"].values


@pytest.fixture(scope="module")
def structures(src):
    return read(src / "structures.json")[STRUCT]


@pytest.fixture(scope="module")
def onto(structures):
    return ccf.Ontology(structures)


@pytest.fixture(scope="module")
def nodes(src):
    return json.loads((src / "structures.json").read_text())


@pytest.fixture(scope="module")
def exps(src):
    out = []
    for meta in sorted((src / "conn").glob("experiment_*/metadata.json")):
        (ds,) = read(meta).values()
        out.append(ds)
    return out


def _desc(nodes, sid):
    return [n["id"] for n in nodes if sid in n["structure_id_path"]]


class _SimpleTree:
    """AllenSDK 2.16.2's ``SimpleTree`` walks, transcribed (parents from structure_id_path)."""

    def __init__(self, nodes):
        self.parent = {
            n["id"]: n["structure_id_path"][-2] if len(n["structure_id_path"]) > 1 else None
            for n in nodes
        }
        self.children = {n["id"]: [] for n in nodes}
        for nid, pid in self.parent.items():
            if pid is not None:
                self.children[pid].append(nid)

    def ancestor_ids(self, node_ids):
        out = []
        for nid in node_ids:
            current = [nid]
            while current[-1] is not None:
                current.append(self.parent[current[-1]])
            out.append(current[:-1])
        return out

    def descendant_ids(self, node_ids):
        out = []
        for nid in node_ids:
            current = [nid]
            for kids in self.descendant_ids(self.children[nid]):
                current.extend(kids)
            out.append(current)
        return out


# -- ontology ------------------------------------------------------------------------------------


def test_ontology_lookup_by_id_and_acronym(onto, nodes):
    by_acr = {n["acronym"]: n for n in nodes}
    assert onto.structure_id("VISp") == by_acr["VISp"]["id"] == 385
    assert onto.structure_id("visp") == 385  # case-insensitive fallback
    assert onto.structure_id(np.int64(385)) == 385
    assert onto.acronym(385) == "VISp"
    assert onto.name("VISp") == by_acr["VISp"]["name"]
    assert "VISp" in onto
    assert "nope" not in onto
    assert len(onto) == len(nodes)
    assert "840 structures" in repr(onto)
    assert onto.id_acronym_map()["CA1"] == by_acr["CA1"]["id"]


def test_ancestors_descendants_colours_match_the_json(onto, structures, nodes):
    for n in nodes[::37]:
        sid = n["id"]
        assert onto.ancestor_ids(sid) == n["structure_id_path"][::-1]  # AllenSDK: self first
        assert ccf.ancestor_ids(structures, n["acronym"]) == n["structure_id_path"][::-1]
        assert sorted(onto.descendant_ids(sid)) == sorted(_desc(nodes, sid))
        assert onto.descendant_ids(sid)[0] == sid
        assert ccf.rgb_triplet(structures, sid) == tuple(n["rgb_triplet"])
        parent = n["structure_id_path"][-2] if len(n["structure_id_path"]) > 1 else None
        assert onto.parent_id(sid) == parent
    kids = onto.child_ids("VISp")
    assert kids
    assert all(onto.parent_id(k) == 385 for k in kids)
    assert sorted(ccf.descendant_ids(onto, "VISp")) == sorted([385, *kids])  # layers are leaves
    assert onto.colormap()[385] == list(onto.rgb_triplet(385))
    assert ccf.structure_id(structures, "Isocortex") == 315


def test_tree_walks_in_allensdk_order(onto, structures, nodes):
    """StructureTree.ancestor_ids/descendant_ids/child_ids/parent_ids: order and list form."""
    allen = _SimpleTree(nodes)
    ids = [n["id"] for n in nodes]
    assert onto.ancestor_ids(ids) == allen.ancestor_ids(ids)
    assert onto.descendant_ids(ids[::53]) == allen.descendant_ids(ids[::53])
    assert onto.child_ids(ids[::29]) == [allen.children[i] for i in ids[::29]]
    assert onto.parent_ids(ids[::31]) == [allen.parent[i] for i in ids[::31]]
    visp = onto.ancestor_ids("VISp")
    assert visp[0] == 385
    assert visp[1] == onto.parent_id(385)
    assert visp[-1] == 997
    assert onto.ancestor_ids([385]) == [visp]
    ca1 = onto.structure_id("CA1")
    assert structures.ccf.ancestor_ids([385, "CA1"]) == allen.ancestor_ids([385, ca1])
    assert onto.get_ancestor_id_map()[385] == visp
    assert onto.structure_descends_from(385, "Isocortex")
    assert not onto.structure_descends_from("Isocortex", 385)
    assert onto.get_name_map()[385] == onto.name(385)
    assert onto.get_id_acronym_map() == onto.id_acronym_map()
    assert onto.get_colormap() == onto.colormap()


def test_descendants_depth_first_whatever_the_row_order(src, nodes):
    """AllenSDK orders descendants depth first (children in row order), not by row."""
    shuffled = [nodes[0], *nodes[:0:-1]]  # root first, the other rows reversed
    path = src / "shuffled" / "structures.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(shuffled))
    onto = ccf.Ontology(read(path)[STRUCT])
    allen = _SimpleTree(shuffled)
    ids = [n["id"] for n in shuffled]
    assert onto.descendant_ids(ids[:40]) == allen.descendant_ids(ids[:40])
    assert onto.descendant_ids(997) != sorted(onto.descendant_ids(997))


def test_structure_dicts_as_allensdk(onto, nodes):
    """StructureTree.get_structures_by_id/acronym/name: AllenSDK's cleaned node dicts."""
    want = {n["id"]: n for n in nodes}
    got = onto.get_structures_by_id([385, 315, 123456789])
    assert got[2] is None  # AllenSDK's nodes() gives None for an unknown id
    for node in got[:2]:
        raw = want[node["id"]]
        assert node["acronym"] == raw["acronym"]
        assert node["name"] == raw["name"]
        assert node["structure_id_path"] == raw["structure_id_path"]
        assert node["rgb_triplet"] == list(raw["rgb_triplet"])
    assert onto.get_structures_by_acronym(["VISp"]) == got[:1]
    assert onto.get_structures_by_name([got[1]["name"]]) == got[1:2]
    with pytest.raises(KeyError, match="no structure named"):
        onto.get_structures_by_name(["Nowhere"])
    with pytest.raises(SchemaError, match="structure_set_ids"):
        onto.get_structures_by_set_id([ccf.SUMMARY_STRUCTURE_SET_ID])
    # SimpleTree's node-dict walks
    allen = _SimpleTree(nodes)
    assert onto.node_ids() == [n["id"] for n in nodes]
    assert onto.nodes([385, 123456789]) == [got[0], None]
    assert len(onto.nodes()) == len(nodes)
    root = nodes[0]["id"]
    assert onto.parents([385, root]) == [onto.nodes([allen.parent[385]])[0], None]
    kids = allen.children[385]
    assert [n["id"] for n in onto.children([385])[0]] == kids
    assert [n["id"] for n in onto.ancestors([385])[0]] == allen.ancestor_ids([385])[0]
    assert [n["id"] for n in onto.descendants([385])[0]] == allen.descendant_ids([385])[0]
    assert [n["id"] for n in onto.filter_nodes(lambda n: n["id"] in kids)] == kids
    assert onto.value_map(lambda n: n["id"], lambda n: n["acronym"])[385] == "VISp"
    with pytest.raises(ValueError, match="not unique"):
        onto.value_map(lambda n: 1, lambda n: n["id"])


def test_projection_matrix_defaults_to_summary_structures(src, nodes, exps, tree, onto):
    """get_projection_matrix(experiment_ids): the summary structure set, in row order."""
    summary = {"VISp", "LP", "CP", "MOs"}
    tagged = [
        {**n, "structure_set_ids": [ccf.SUMMARY_STRUCTURE_SET_ID, 3] if n["acronym"] in summary
         else [3]}
        for n in nodes
    ]  # fmt: skip
    path = src / "with_sets" / "structures.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(tagged))
    with_sets = ccf.Ontology(read(path)[STRUCT])
    in_set = with_sets.get_structures_by_set_id([ccf.SUMMARY_STRUCTURE_SET_ID])
    ids = [n["id"] for n in in_set]
    assert ids == [n["id"] for n in nodes if n["acronym"] in summary]
    assert in_set[0]["structure_set_ids"] == [ccf.SUMMARY_STRUCTURE_SET_ID, 3]
    out = ccf.projection_matrix(exps, annotation=tree, ontology=with_sets)
    explicit = ccf.projection_matrix(exps, ids, annotation=tree, ontology=onto)
    assert out["columns"] == explicit["columns"]
    np.testing.assert_array_equal(out["matrix"], explicit["matrix"])


class TestOntologyErrors:
    def test_unknown_acronym_suggests_close_matches(self, onto):
        with pytest.raises(KeyError, match=r"'VISpp'.*did you mean.*'VISp'"):
            onto.structure_id("VISpp")
        with pytest.raises(ccf.StructureNotFoundError):
            ccf.descendant_ids(onto, "Isocortx")

    def test_unknown_id_and_bad_type(self, onto):
        with pytest.raises(KeyError, match="no structure with id 123456789"):
            onto.ancestor_ids(123456789)
        with pytest.raises(TypeError, match="int id or a str acronym"):
            onto.structure_id(3.5)

    def test_wrong_dataset_kind(self, ann):
        with pytest.raises(SchemaError, match="ccf_structures"):
            ccf.Ontology(ann)
        with pytest.raises(TypeError, match="ccf_structures"):
            ccf.structure_id({"a": 1}, "VISp")


def test_real_ontology_descendants(shared_data):
    path = shared_data / "ccf" / "structures.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    (structures,) = read(path).values()
    onto = ccf.Ontology(structures)
    nodes = list(_flatten(json.loads(path.read_text())))
    for acronym in ("Isocortex", "VISp", "TH", "root"):
        sid = onto.structure_id(acronym)
        assert sorted(onto.descendant_ids(sid)) == sorted(_desc(nodes, sid))


def _flatten(doc):
    doc = doc.get("msg", doc) if isinstance(doc, dict) else doc
    stack = list(doc if isinstance(doc, list) else [doc])
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.get("children") or [])


# -- masks, lookups, counts ------------------------------------------------------------------------


@pytest.mark.parametrize("acronym", ["root", "grey", "Isocortex", "VISp", "TH", "CA1", "DG"])
def test_structure_mask_equals_isin(ann, ann_np, onto, nodes, acronym):
    sid = onto.structure_id(acronym)
    mask = ccf.structure_mask(ann, acronym, ontology=onto)
    assert mask.dtype == bool
    assert mask.dims == ("ap", "dv", "lr")
    assert mask.chunks == ((64, 64, 4), (64, 16), (64, 50))
    ref = np.isin(ann_np, _desc(nodes, sid))
    assert ref.any()
    np.testing.assert_array_equal(mask.values, ref)
    direct = ccf.structure_mask(ann, sid, ontology=onto, descendants=False)
    np.testing.assert_array_equal(direct.values, ann_np == sid)


def test_structure_mask_of_large_ids(ann, ann_np, onto):
    big = [int(i) for i in np.unique(ann_np) if i >= 2**16]  # past the dense lookup table
    assert big
    for ids in (big, [*big[:1], 385, 593]):
        mask = ccf.structure_mask(ann, ids, ontology=onto, descendants=False).values
        np.testing.assert_array_equal(mask, np.isin(ann_np, ids))
    with_parents = [onto.parent_id(i) for i in big]
    mask = ccf.structure_mask(ann, with_parents, ontology=onto).values
    np.testing.assert_array_equal(
        mask, np.isin(ann_np, [d for p in with_parents for d in onto.descendant_ids(p)])
    )


def test_structure_mask_of_single_label_chunks(ann, ann_np, onto):
    """Chunks of one label (outside, inside a structure, a large id) are constants."""
    big = sorted(int(i) for i in np.unique(ann_np) if i >= 2**16)
    selected = np.array(sorted([385, 593, big[0]]))
    lut, large = ccf._lut(selected)
    for label, inside in ((0, False), (385, True), (8, False), (big[0], True), (big[1], False),
                          (2**20, False), (lut.size + 5, False)):  # fmt: skip
        block = np.full((3, 4, 5), label, dtype=np.uint32)
        out = ccf._in_lut(block, lut, large, None)
        assert out.dtype == bool
        assert out.shape == block.shape
        assert out.all() if inside else not out.any(), label
    mixed = np.array([0, 385, 8, big[0], big[1], 593, 2**20], dtype=np.uint32).reshape(1, 1, 7)
    np.testing.assert_array_equal(ccf._in_lut(mixed, lut, large, None), np.isin(mixed, selected))
    # through structure_mask, with small chunks: many single-label chunks, one hemisphere
    fine = ann.chunk({"ap": 8, "dv": 8, "lr": 8})
    left = ccf.structure_mask(fine, "grey", ontology=onto, hemisphere_id=1).values
    expect = np.isin(ann_np, onto.descendant_ids("grey"))
    expect[:, :, 57:] = False
    np.testing.assert_array_equal(left, expect)


def test_structure_mask_of_a_list_is_the_union(ann, ann_np, onto):
    mask = ann.ccf.structure_mask(["VISp", "LGd"], ontology=onto).values
    both = np.isin(ann_np, onto.descendant_ids("VISp") + onto.descendant_ids("LGd"))
    np.testing.assert_array_equal(mask, both)


def test_reference_space_names(ann, ann_np, onto):
    """ReferenceSpace.make_structure_mask / many_structure_masks, AllenSDK's way (uint8)."""
    visp = onto.descendant_ids("VISp")
    mask = ann.ccf.make_structure_mask([385], ontology=onto)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask.values, np.isin(ann_np, visp).astype(np.uint8))
    direct = ann.ccf.make_structure_mask([385], True, ontology=onto)
    np.testing.assert_array_equal(direct.values, (ann_np == 385).astype(np.uint8))
    got = dict(ann.ccf.many_structure_masks([385, "LGd"], ontology=onto))
    assert list(got) == [385, "LGd"]
    np.testing.assert_array_equal(got[385].values, mask.values)
    sizes = list(
        ann.ccf.many_structure_masks([385], lambda sid, fn: (sid, int(fn().sum())), ontology=onto)
    )
    assert sizes == [(385, int(np.isin(ann_np, visp).sum()))]


def test_child_masks_lie_inside_parent_masks(ann, ann_np, onto):
    present = set(np.unique(ann_np).tolist()) - {0}
    pairs = [(sid, onto.parent_id(sid)) for sid in sorted(present) if onto.parent_id(sid)]
    ids = sorted({i for pair in pairs for i in pair})
    masks = dask.compute(*[ccf.structure_mask(ann, i, ontology=onto).data for i in ids])
    mask = dict(zip(ids, masks))
    assert len(pairs) > 40
    for child, parent in pairs:
        assert mask[child].any()
        assert not (mask[child] & ~mask[parent]).any()
    for acronym in ("Isocortex", "VISp", "TH", "HPF"):  # a parent is its children plus itself
        union = ccf.structure_mask(ann, acronym, ontology=onto, descendants=False).values
        for kid in onto.child_ids(acronym):
            union |= ccf.structure_mask(ann, kid, ontology=onto).values
        np.testing.assert_array_equal(union, ccf.structure_mask(ann, acronym, ontology=onto).values)


def test_hemispheres_are_mirror_images_and_partition(ann, onto):
    both = ccf.structure_mask(ann, "VISp", ontology=onto).values
    left = ccf.structure_mask(ann, "VISp", ontology=onto, hemisphere_id=1).values
    right = ccf.structure_mask(ann, "VISp", ontology=onto, hemisphere_id=2).values
    mid = round(ann.sizes["lr"] / 2)
    assert mid == 57
    assert not left[:, :, mid:].any()
    assert not right[:, :, :mid].any()
    np.testing.assert_array_equal(left | right, both)
    assert not (left & right).any()
    np.testing.assert_array_equal(left[:, :, :mid], right[:, :, mid:][:, :, ::-1])


def test_structure_at_equals_indexing(ann, ann_np):
    rng = np.random.default_rng(3)
    n = np.array(ann_np.shape)
    idx = rng.integers(0, n, size=(200, 3))
    pts = (idx + rng.uniform(0, 1, size=idx.shape)) * 100.0
    out = ccf.structure_at(ann, pts)
    assert out.dims == ("point",)
    assert out.name == "structure_id"
    np.testing.assert_array_equal(out.values, ann_np[idx[:, 0], idx[:, 1], idx[:, 2]])
    np.testing.assert_array_equal(out["ap"].values, pts[:, 0])
    one = ann.ccf.structure_at([8000.0, 2000.0, 3000.0])
    assert one.values.tolist() == [int(ann_np[80, 20, 30])]
    assert one.values[0] != 0


def test_voxel_counts(ann, ann_np, onto):
    counts = ann.ccf.voxel_counts()
    ids, ref = np.unique(ann_np, return_counts=True)
    expected = pd.Series(ref[ids != 0], index=ids[ids != 0])
    np.testing.assert_array_equal(counts.index.to_numpy(), expected.index.to_numpy())
    np.testing.assert_array_equal(counts.to_numpy(), expected.to_numpy())
    deep = ccf.voxel_counts(ann, ontology=onto, descendants=True)
    for acronym in ("Isocortex", "root", "VISp", "HPF"):
        sid = onto.structure_id(acronym)
        assert deep[sid] == np.isin(ann_np, onto.descendant_ids(sid)).sum()
    left = ccf.voxel_counts(ann, hemisphere_id=1)
    right = ccf.voxel_counts(ann, hemisphere_id=2)
    pd.testing.assert_series_equal(left, right)  # mirror images
    pd.testing.assert_series_equal(left + right, counts)


def test_choose_level_and_tree_accessor(tree, onto):
    assert list(ccf.levels(tree)) == [100.0, 200.0]
    assert ccf.choose_level(tree, 100).attrs["resolution_um"] == 100
    assert ccf.choose_level(tree, 150).attrs["resolution_um"] == 100
    assert ccf.choose_level(tree, 200).attrs["resolution_um"] == 200
    assert ccf.choose_level(tree, 1000).attrs["resolution_um"] == 200
    assert ccf.choose_level(tree, 25).attrs["resolution_um"] == 100  # finer than any: nearest
    assert ccf.choose_level(tree).attrs["resolution_um"] == 100
    assert "levels [100.0, 200.0]" in repr(tree.ccf)
    # the 200 µm annotation is a stride-2 subsample, so its masks are too
    m200 = tree.ccf.structure_mask("Isocortex", ontology=onto, resolution_um=200)
    m100 = tree.ccf.structure_mask("Isocortex", ontology=onto)
    assert m200.shape == (66, 40, 57)
    np.testing.assert_array_equal(m200.values, m100.values[::2, ::2, ::2])
    pts = [[8050.0, 2050.0, 3050.0]]  # voxel (80, 20, 30) at 100 µm, (40, 10, 15) at 200 µm
    at200 = tree.ccf.structure_at(pts, resolution_um=200).values
    assert at200[0] == tree.ccf.structure_at(pts).values[0] != 0
    ann200 = tree["200um"]["annotation"].values
    assert tree.ccf.voxel_counts(resolution_um=200).sum() == (ann200 != 0).sum()


class TestVolumeErrors:
    def test_points_outside_the_volume(self, ann):
        with pytest.raises(ValueError, match=r"1 of 2 points lie outside the volume"):
            ccf.structure_at(ann, [[100.0, 100.0, 100.0], [-5.0, 0.0, 0.0]])
        with pytest.raises(ValueError, match=r"\(n, 3\)"):
            ccf.structure_at(ann, [[1.0, 2.0]])

    def test_counts_with_descendants_need_the_ontology(self, ann):
        with pytest.raises(ValueError, match="descendants=True needs the ontology"):
            ccf.voxel_counts(ann, descendants=True)

    def test_bad_hemisphere(self, ann, onto):
        with pytest.raises(ValueError, match="hemisphere_id must be 1"):
            ccf.structure_mask(ann, "VISp", ontology=onto, hemisphere_id=4)

    def test_wrong_kind_for_the_method(self, ann, structures, exps, onto):
        with pytest.raises(SchemaError, match="structure_mask needs a 'ccf_volume'"):
            structures.ccf.structure_mask("VISp", ontology=onto)
        with pytest.raises(SchemaError, match="unionize needs a 'connectivity_experiment'"):
            ann.ccf.unionize(annotation=ann, ontology=onto)
        with pytest.raises(SchemaError, match="ontology needs a 'ccf_structures'"):
            _ = exps[0].ccf.ontology

    def test_wrong_dataset_kind(self):
        ds = xr.Dataset({"dff": (("cell_specimen_id", "time"), np.zeros((2, 3)))})
        ds.attrs["abo_lake_kind"] = "ophys_experiment"
        with pytest.raises(SchemaError, match=r"\.ccf needs a .*'ccf_volume'"):
            _ = ds.ccf
        with pytest.raises(SchemaError, match=r"\.ccf needs"):
            _ = xr.Dataset({"x": ("t", [1.0])}).ccf

    def test_template_is_not_an_annotation(self, src, onto):
        tpl = read(src / "average_template_100.nrrd")["ccf/ccf_2017/template"]["100um"]
        tpl = tpl.to_dataset()
        assert "100 µm" in repr(tpl.ccf)
        with pytest.raises(ValueError, match="not 'annotation'"):
            tpl.ccf.structure_mask("VISp", ontology=onto)


def test_accessor_reprs(ann, structures, exps):
    assert repr(ann.ccf) == "<.ccf volume ['annotation'] · 132×80×114 voxels at 100 µm>"
    assert repr(structures.ccf) == "<.ccf ontology · 840 structures>"
    assert repr(exps[0].ccf).startswith(f"<.ccf connectivity experiment {exps[0].attrs['id']}")
    assert structures.ccf.descendant_ids("VISp")[0] == 385
    assert structures.ccf.ancestor_ids("VISp")[0] == 385
    assert structures.ccf.ancestor_ids("VISp")[-1] == 997
    assert structures.ccf.structure_id("VISp") == 385
    assert structures.ccf.rgb_triplet("VISp") == ccf.rgb_triplet(structures, 385)


# -- laziness and partial reads -------------------------------------------------------------------


def test_building_results_computes_nothing(ann, tree, onto, exps):
    with raise_if_dask_computes():
        mask = ccf.structure_mask(ann, "Isocortex", ontology=onto, hemisphere_id=2)
        at = ccf.structure_at(ann, [[8000.0, 2000.0, 3000.0]])
        direct = ccf.direct_unionize(exps[0], annotation=tree, ontology=onto)
        tree.ccf.structure_mask("VISp", ontology=onto, resolution_um=200)
    assert isinstance(mask.data, dask.array.Array)
    assert isinstance(at.data, dask.array.Array)
    assert all(isinstance(v.data, dask.array.Array) for v in direct.data_vars.values())
    # unionize reads every chunk in exactly one compute
    with raise_if_dask_computes(max_computes=1) as sched:
        ccf.unionize(exps[0], annotation=tree, ontology=onto)
    assert sched.total == 1


@pytest.fixture(scope="module")
def local_release(tmp_path_factory, tree, structures, exps):
    lake = abo_lake.open_lake(str(tmp_path_factory.mktemp("ccf_lake")))
    with lake.stage("r1") as st:
        st.write(ANN, tree)
        st.write(STRUCT, structures)
        st.write(f"connectivity/experiment/{exps[0].attrs['id']}", exps[0])
    return lake.release("r1")


def _open_level(rel, group="100um"):
    store = rel.store(ANN)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        ds = xr.open_zarr(store, group=group, consolidated=True, chunks={}, zarr_format=3)
    return ds, store


def test_point_query_reads_only_the_chunks_holding_the_points(local_release, ann_np):
    """From the lake, structure_at builds no dask graph: nothing is read until the values are
    asked for, then exactly the chunks holding points, once, with no dask compute."""
    ds, store = _open_level(local_release)
    assert ds["annotation"].chunks == ((64, 64, 4), (64, 16), (64, 50))
    pts = np.array([[100.0, 100.0, 100.0], [7000.0, 6000.0, 6000.0], [6300.0, 6100.0, 6200.0]])
    before = store.chunk_reads
    with raise_if_dask_computes():
        at = ds.ccf.structure_at(pts)
        assert store.chunk_reads == before  # lazy: nothing read yet
        out = at.values
        reads = store.chunk_reads - before
        np.testing.assert_array_equal(at.values, out)  # read once, then held
    assert store.chunk_reads - before == reads == 2  # chunks (0, 0, 0) and (1, 0, 0) of the 12
    idx = (pts // 100).astype(int)
    np.testing.assert_array_equal(out, ann_np[idx[:, 0], idx[:, 1], idx[:, 2]])
    assert at.dims == ("point",)
    assert at.name == "structure_id"
    assert out.dtype == ann_np.dtype
    np.testing.assert_array_equal(at["lr"].values, pts[:, 2])
    # still usable with dask when asked for
    np.testing.assert_array_equal(at.chunk({"point": 2}).compute().values, out)


def _isocortex(ann_np, onto):
    return np.isin(ann_np, onto.descendant_ids("Isocortex"))


def test_mask_window_reads_only_overlapping_chunks(local_release, structures, ann_np):
    ds, store = _open_level(local_release)
    onto = ccf.Ontology(structures)
    with dask.config.set(scheduler="synchronous"):
        before = store.chunk_reads
        mask = ds.ccf.structure_mask("Isocortex", ontology=onto)
        window = mask.isel(ap=slice(0, 40)).values
        reads = store.chunk_reads - before
    assert reads == 4  # one AP block of 3: (1 × 2 × 2) chunks
    opened = local_release.open_datatree(ANN)
    assert list(opened.ccf.levels) == [100.0, 200.0]
    (image,) = opened.attrs["ome"]["multiscales"]  # OME-Zarr 0.5 readers see the same levels
    assert [(d["path"], d["coordinateTransformations"][0]["scale"]) for d in image["datasets"]] == [
        (f"{name}/annotation", [res] * 3) for res, name in opened.ccf.levels.items()
    ]
    with raise_if_dask_computes():
        coarse = opened.ccf.structure_mask("Isocortex", ontology=onto, resolution_um=200)
    np.testing.assert_array_equal(coarse.values, _isocortex(ann_np, onto)[::2, ::2, ::2])
    np.testing.assert_array_equal(window, np.isin(ann_np[:40], onto.descendant_ids("Isocortex")))
    # the multiscale root has no voxels: the error says how to pick a level
    with pytest.raises(SchemaError, match=r"multiscale group .* group='100um'.*levels: \['100um'"):
        local_release.open(ANN).ccf.structure_mask("Isocortex", ontology=onto)


# -- unionize ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref_arrays(exps, ann_np, onto):
    out = []
    for exp in exps:
        arrays = {
            n: exp[n].values.astype(np.float64)
            for n in ("projection_density", "injection_density", "injection_fraction")
        }
        arrays["valid"] = exp["data_mask"].values > 0
        labelled = np.isin(ann_np, onto.ids) & arrays["valid"]
        arrays["total_injection"] = arrays["injection_density"][labelled].sum() * 1e-3
        out.append(arrays)
    return out


def _ref_record(arrays, dom, injection, shape, res=100.0):
    """AllenSDK's definitions, directly on the full NumPy arrays, one domain at a time."""
    pdens = arrays["projection_density"]
    idens = arrays["injection_density"]
    ifrac = arrays["injection_fraction"]
    if injection:
        px, ppx, dens = ifrac[dom].sum(), idens[dom].sum(), idens
    else:
        px, ppx = (1 - ifrac[dom]).sum(), (pdens[dom] - idens[dom]).sum()
        dens = pdens * (1 - ifrac)
    vox = (res / 1000) ** 3
    rec = {
        "sum_pixels": px,
        "sum_projection_pixels": ppx,
        "sum_projection_pixel_intensity": ppx,
        "sum_pixel_intensity": ppx,
        "projection_density": ppx / px if px > 0 else 0.0,
        "projection_energy": ppx / px if px > 0 else 0.0,
        "projection_intensity": 1.0 if ppx > 0 else 0.0,
        "volume": px * vox,
        "projection_volume": ppx * vox,
        "normalized_projection_volume": ppx * vox / arrays["total_injection"],
        "max_voxel_density": 0.0,
        "max_voxel_x": 0.0,
        "max_voxel_y": 0.0,
        "max_voxel_z": 0.0,
    }
    if ppx > 0:
        flat = int(np.argmax(np.where(dom, dens, -np.inf)))
        a, d, l_ = np.unravel_index(flat, shape)
        rec.update(
            max_voxel_density=dens.flat[flat],
            max_voxel_x=a * res,
            max_voxel_y=d * res,
            max_voxel_z=l_ * res,
        )
    return rec


@pytest.fixture(scope="module")
def records(exps, tree, onto):
    return [ccf.unionize(e, annotation=tree, ontology=onto) for e in exps]


@pytest.mark.parametrize("acronym", ["root", "Isocortex", "VISp", "VISp4", "LP", "CP"])
def test_unionize_matches_a_direct_numpy_reference(
    exps, records, ref_arrays, ann_np, onto, acronym
):
    sid = onto.structure_id(acronym)
    region = np.isin(ann_np, onto.descendant_ids(sid))
    lr = np.arange(ann_np.shape[2])
    sides = {1: lr < 57, 2: lr >= 57, 3: lr >= 0}
    for exp, rec, arrays in zip(exps, records, ref_arrays):
        assert list(rec.columns) == list(ccf.UNIONIZE_FIELDS)
        for hid in (1, 2, 3):
            dom = region & arrays["valid"] & sides[hid][None, None, :]
            for injection in (True, False):
                ref = _ref_record(arrays, dom, injection, ann_np.shape)
                row = rec[
                    (rec.structure_id == sid)
                    & (rec.hemisphere_id == hid)
                    & (rec.is_injection == injection)
                ]
                if ref["sum_pixels"] <= 0:
                    assert row.empty
                    continue
                assert len(row) == 1
                got = row.iloc[0]
                assert got["experiment_id"] == exp.attrs["id"]
                for key, value in ref.items():
                    np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=key)


def test_unionize_known_by_construction(exps, records, onto):
    for exp, rec in zip(exps, records):
        source = exp.attrs["structure_id"]
        inj = rec[rec.is_injection]
        # the injection is in the right hemisphere only
        assert set(inj.hemisphere_id) == {2, 3}
        # the injected area has the largest injection volume among structures of its depth
        depth = len(onto.ancestor_ids(source))
        peers = [i for i in onto.ids.tolist() if len(onto.ancestor_ids(i)) == depth]
        both = inj[(inj.hemisphere_id == 3) & inj.structure_id.isin(peers)]
        assert both.loc[both.sum_pixels.idxmax(), "structure_id"] == source
        # its injection max voxel lies inside the injected area
        row = both[both.structure_id == source].iloc[0]
        assert row.max_voxel_density > 0.5
        # the whole-brain injection record normalises to 1
        root = inj[(inj.structure_id == 997) & (inj.hemisphere_id == 3)].iloc[0]
        assert root.normalized_projection_volume == pytest.approx(1.0)
        # ipsilateral (right) projections are denser than contralateral ones
        proj = rec[~rec.is_injection].set_index(["structure_id", "hemisphere_id"])
        for acronym, ipsi, contra in zip(
            exp.attrs["target_structure_acronyms"],
            exp.attrs["target_strength_ipsi"],
            exp.attrs["target_strength_contra"],
        ):
            if acronym == exp.attrs["structure_abbrev"] or ipsi <= contra:
                continue
            sid = onto.structure_id(acronym)
            assert (
                proj.loc[(sid, 2), "projection_density"] > proj.loc[(sid, 1), "projection_density"]
            )
        # both hemispheres add up
        for field in ("sum_pixels", "sum_projection_pixels", "volume", "projection_volume"):
            wide = rec.pivot_table(
                index=["structure_id", "is_injection"],
                columns="hemisphere_id",
                values=field,
                fill_value=0.0,
            )
            np.testing.assert_allclose(wide[1] + wide[2], wide[3], rtol=1e-9, atol=1e-12)


def test_unionize_filters(exps, tree, onto, records):
    rec = ccf.unionize(
        exps[0],
        annotation=tree,
        ontology=onto,
        structure_ids=["VISp"],
        include_descendants=True,
        hemisphere_ids=[2],
        is_injection=False,
    )
    assert set(rec.structure_id) <= set(onto.descendant_ids("VISp"))
    assert 385 in set(rec.structure_id)
    assert set(rec.hemisphere_id) == {2}
    assert not rec.is_injection.any()
    full = records[0]
    sel = full[(full.structure_id.isin(rec.structure_id)) & (full.hemisphere_id == 2)]
    sel = sel[~sel.is_injection].reset_index(drop=True)
    pd.testing.assert_frame_equal(rec, sel)
    only = exps[0].ccf.unionize(annotation=tree, ontology=onto, structure_ids=[385])
    assert set(only.structure_id) == {385}
    # AllenSDK's positions: get_structure_unionizes(ids, is_injection, structure_ids,
    # include_descendants, hemisphere_ids)
    positional = exps[0].ccf.unionize(False, ["VISp"], True, [2], annotation=tree, ontology=onto)
    pd.testing.assert_frame_equal(positional, rec)


def test_projection_matrix(exps, tree, onto, records):
    targets = ["VISp", "VISl", "LP", "CP", "MOs"]
    out = ccf.projection_matrix(exps, targets, (1, 2), annotation=tree, ontology=onto)
    assert out["rows"] == [e.attrs["id"] for e in exps]
    assert out["matrix"].shape == (2, 10)
    assert out["columns"][0] == {"hemisphere_id": 1, "structure_id": 385, "label": "VISp-L"}
    assert out["columns"][5]["label"] == "VISp-R"
    for r, rec in enumerate(records):
        proj = rec[~rec.is_injection].set_index(["hemisphere_id", "structure_id"])
        for c, col in enumerate(out["columns"]):
            key = (col["hemisphere_id"], col["structure_id"])
            assert out["matrix"][r, c] == proj.loc[key, "projection_volume"]
    by_id = ccf.projection_matrix(
        {7: exps[0]},
        annotation=tree,
        ontology=onto,
        projection_structure_ids=["VISp"],
        parameter="projection_density",
    )
    assert by_id["rows"] == [7]
    # AllenSDK's default hemisphere_ids (None): every hemisphere with records, ascending
    assert [c["label"] for c in by_id["columns"]] == ["VISp-L", "VISp-R", "VISp"]
    proj = records[0][~records[0].is_injection].set_index(["hemisphere_id", "structure_id"])
    expect = [proj.loc[(h, 385), "projection_density"] for h in (1, 2, 3)]
    np.testing.assert_array_equal(by_id["matrix"][0], expect)


class TestUnionizeErrors:
    def test_grid_mismatch(self, exps, tree, onto):
        with pytest.raises(ValueError, match=r"annotation shape \(66, 40, 57\) differs"):
            ccf.unionize(exps[0], annotation=tree["200um"].to_dataset(), ontology=onto)
        coarse = (
            exps[0]
            .isel(ap=slice(None, None, 2), dv=slice(None, None, 2), lr=slice(None, None, 2))
            .assign_attrs(resolution_um=50)
        )
        with pytest.raises(ValueError, match="no 50 µm level"):
            ccf.unionize(coarse, annotation=tree, ontology=onto)

    def test_bad_arguments(self, exps, tree, onto):
        with pytest.raises(ValueError, match="parameter must be one of"):
            ccf.projection_matrix(exps, [385], parameter="nope", annotation=tree, ontology=onto)
        with pytest.raises(ValueError, match="at least one experiment"):
            ccf.projection_matrix([], [385], annotation=tree, ontology=onto)
        with pytest.raises(ValueError, match="hemisphere_ids must be among"):
            ccf.unionize(exps[0], annotation=tree, ontology=onto, hemisphere_ids=[4])
        with pytest.raises(KeyError, match="did you mean"):
            ccf.unionize(exps[0], annotation=tree, ontology=onto, structure_ids=["VISpq"])
        with pytest.raises(SchemaError, match="connectivity_experiment"):
            ccf.unionize(tree["100um"].to_dataset(), annotation=tree, ontology=onto)


# -- on a cluster, from S3 ------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.slow
def test_unionize_on_a_cluster_from_s3_equals_threaded(
    dask_client, s3_bucket, s3_options, tree, structures, exps
):
    lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", **s3_options)
    path = f"connectivity/experiment/{exps[0].attrs['id']}"
    # the writer computes the in-memory source arrays: keep that off the cluster
    with lake.stage("r1") as st, dask.config.set(scheduler="threads"):
        st.write(ANN, tree)
        st.write(STRUCT, structures)
        st.write(path, exps[0])
    rel = lake.release("r1")
    ann = rel.open(ANN, group="100um")
    exp = rel.open(path)
    onto = ccf.Ontology(rel.open(STRUCT).load())
    on_cluster = exp.ccf.unionize(annotation=ann, ontology=onto)
    mask_cluster = ann.ccf.structure_mask("VISp", ontology=onto).sum().values
    n_tasks = len(
        exp.ccf.direct_unionize(annotation=ann, ontology=onto)[
            "projection.sum_pixels"
        ].data.__dask_graph__()
    )
    with dask.config.set(scheduler="threads"):
        threaded = exp.ccf.unionize(annotation=ann, ontology=onto)
        mask_threaded = ann.ccf.structure_mask("VISp", ontology=onto).sum().values
    pd.testing.assert_frame_equal(on_cluster, threaded)
    assert mask_cluster == mask_threaded > 0
    # point lookups from S3: no dask graph, the same ids as the in-memory volume
    pts = np.array([[8000.0, 2000.0, 3000.0], [6300.0, 6100.0, 6200.0]])
    np.testing.assert_array_equal(
        ann.ccf.structure_at(pts).values, ccf.structure_at(tree["100um"].to_dataset(), pts).values
    )
    assert len(on_cluster) > 100
    assert n_tasks < 20 * 12  # ∝ the 12 chunks, not the voxels or the structures


# -- against AllenSDK 2.16.2 (its results computed by tests/reference/ccf_allensdk.py) -------------

ALLENSDK_REFERENCE = Path(__file__).parent / "reference" / "ccf_allensdk_100um.npz"


@pytest.fixture(scope="module")
def allensdk(src):
    """AllenSDK's masks, point ids and unionize of the first test experiment, at 100 µm."""
    with np.load(ALLENSDK_REFERENCE) as z:
        ref = {k: z[k] for k in z.files}
    inputs = json.loads(str(ref["inputs"]))
    changed = [
        name
        for name, digest in inputs.items()
        if hashlib.sha256((src / name).read_bytes()).hexdigest() != digest
    ]
    if changed:
        pytest.fail(
            f"the synthetic sources changed since {ALLENSDK_REFERENCE.name} was computed "
            f"({changed}); rerun: .venv/bin/python tests/reference/ccf_allensdk.py make"
        )
    return ref


@pytest.fixture(scope="module")
def lake_level(local_release):
    """The 100 µm annotation and the ontology, opened from the lake."""
    onto = ccf.Ontology(local_release.open(STRUCT))
    return local_release.open(ANN, group="100um"), onto


def test_structure_masks_equal_allensdk(lake_level, allensdk):
    ds, onto = lake_level
    assert allensdk["mask_structure_id"].tolist() == [315, 385, 672]
    for sid, voxels in zip(allensdk["mask_structure_id"], allensdk["mask_voxels"]):
        expected = np.unpackbits(allensdk[f"mask_{sid}_packed"], axis=-1, count=ds.sizes["lr"])
        mask = ds.ccf.structure_mask(int(sid), ontology=onto, descendants=True).values
        assert int(mask.sum()) == voxels > 0
        np.testing.assert_array_equal(mask, expected.astype(bool), err_msg=str(sid))
        made = ds.ccf.make_structure_mask([int(sid)], ontology=onto).values
        assert made.dtype == np.uint8
        np.testing.assert_array_equal(made, expected)
    assert allensdk["mask_voxels"][0] == 140400  # Isocortex with descendants


def test_structure_at_equals_allensdk(lake_level, allensdk):
    ds, _ = lake_level
    ids = ds.ccf.structure_at(allensdk["points_um"]).values
    assert len(ids) == 1000
    assert len(np.unique(ids)) > 50
    np.testing.assert_array_equal(ids, allensdk["structure_id"])


def test_unionize_equals_allensdk(local_release, lake_level, exps, allensdk):
    ann, onto = lake_level
    exp = local_release.open(f"connectivity/experiment/{exps[0].attrs['id']}")
    assert int(allensdk["unionize_experiment_id"]) == exps[0].attrs["id"]
    rec = exp.ccf.unionize(annotation=ann, ontology=onto)
    rec = rec.sort_values(["hemisphere_id", "structure_id", "is_injection"])
    assert len(rec) == len(allensdk["unionize_structure_id"]) > 400
    assert (rec["experiment_id"] == exps[0].attrs["id"]).all()
    for col in ("hemisphere_id", "structure_id", "is_injection"):
        np.testing.assert_array_equal(rec[col].to_numpy(np.float64), allensdk[f"unionize_{col}"])
    for col in ("max_voxel_x", "max_voxel_y", "max_voxel_z"):
        np.testing.assert_array_equal(rec[col].to_numpy(), allensdk[f"unionize_{col}"], col)
    for col in ccf.UNIONIZE_FIELDS[4:]:
        # AllenSDK sums float32 grids in float32; the lake sums in float64
        np.testing.assert_allclose(
            rec[col].to_numpy(), allensdk[f"unionize_{col}"], rtol=1e-5, atol=1e-9, err_msg=col
        )


def test_unionize_with_energy_grids_equal_to_the_densities(exps, tree, onto, records):
    """Energy and intensity grids, when present, are used; equal to the densities they give
    the records of the density stand-ins."""
    exp = exps[0]
    grids = {
        "injection_energy": exp["injection_density"],
        "projection_energy": exp["projection_density"],
        "injection_sum_pixel_intensities": exp["injection_density"],
        "sum_pixel_intensities": exp["projection_density"],
    }
    with_energy = exp.assign({k: v.copy(deep=True) for k, v in grids.items()})
    rec = ccf.unionize(with_energy, annotation=tree, ontology=onto)
    pd.testing.assert_frame_equal(rec, records[0], check_exact=False, rtol=1e-12)
    doubled = with_energy.assign(projection_energy=2 * with_energy["projection_energy"])
    rec2 = ccf.unionize(doubled, annotation=tree, ontology=onto)
    proj = ~rec2.is_injection & (rec2.sum_projection_pixels > 0)
    assert (rec2.loc[proj, "projection_energy"] > rec.loc[proj, "projection_energy"]).all()


# -- slabs: several stored chunks per dask task (the lake's read path) ----------------------------


@pytest.mark.parametrize("slab_bytes", [None, 2 * 64**3 * 4])
def test_slab_path_equals_the_chunked_path(
    local_release, ann, ann_np, onto, tree, exps, monkeypatch, slab_bytes
):
    """Datasets opened from the lake are read in slabs of stored chunks; masks, points and
    unionizes equal the one-task-per-chunk path (in-memory data) exactly."""
    if slab_bytes is not None:  # two stored chunks per slab: several slabs per AP block
        monkeypatch.setattr(ccf, "_SLAB_BYTES", slab_bytes)
    opened = local_release.open(ANN, group="100um")
    assert opened["annotation"].chunks == ((64, 64, 4), (64, 16), (64, 50))
    for hid in (1, 2, 3):
        slab = ccf.structure_mask(opened, "Isocortex", ontology=onto, hemisphere_id=hid)
        chunked = ccf.structure_mask(ann, "Isocortex", ontology=onto, hemisphere_id=hid)
        assert slab.data.chunks[0] == (64, 64, 4)  # never merged along AP
        assert slab.data.npartitions == (3 if slab_bytes is None else 6)
        assert chunked.data.npartitions == 12
        np.testing.assert_array_equal(slab.values, chunked.values)
    rng = np.random.default_rng(5)
    pts = rng.uniform(0, np.array(ann_np.shape) * 100.0, size=(2000, 3))
    at = ccf.structure_at(opened, pts)
    idx = (pts // 100).astype(int)
    np.testing.assert_array_equal(at.values, ann_np[idx[:, 0], idx[:, 1], idx[:, 2]])
    np.testing.assert_array_equal(at.values, ccf.structure_at(ann, pts).values)
    exp = local_release.open(f"connectivity/experiment/{exps[0].attrs['id']}")
    lake_onto = ccf.Ontology(local_release.open(STRUCT))
    pd.testing.assert_frame_equal(
        ccf.unionize(exp, annotation=opened, ontology=lake_onto),
        ccf.unionize(exps[0], annotation=tree, ontology=onto),
    )


@pytest.mark.parametrize("negative", [False, True])
def test_first_maxima_equal_a_brute_force_reference(negative):
    """Per-key maxima and the first position holding them (ties, all-zero keys, empty keys),
    on the sparse fast path (no negative density) and the full path."""
    rng = np.random.default_rng(7)
    n_keys, n = 40, 5000
    key = np.sort(rng.integers(2, n_keys - 4, n))[rng.permutation(n)]  # keys n_keys-4.. unused
    dens = np.where(rng.random(n) < 0.8, 0.0, rng.integers(1, 4, n) / 4.0)
    if negative:
        dens[rng.random(n) < 0.1] = -0.5
    first = np.full(n_keys, ccf._NONE)
    np.minimum.at(first, key, np.arange(n))
    best, at = ccf._first_maxima(key, dens, first, n_keys)
    for k in range(n_keys):
        pos = np.flatnonzero(key == k)
        if not pos.size:
            assert best[k] == -np.inf
            assert at[k] == ccf._NONE
            continue
        assert best[k] == dens[pos].max()
        assert at[k] == pos[np.argmax(dens[pos])]  # argmax: the first of the ties


# -- schedulers (abo_lake.scheduling: the eager analyses' rule) -----------------------------------


def _thread_name() -> str:
    import threading

    return threading.current_thread().name


def test_eager_analyses_use_local_threads_without_a_client(tree, onto):
    """No Client and no dask.config scheduler: dask's local threads, named by the function
    (a string such as "threads" would make dask import distributed); a configured scheduler
    is left to dask."""
    import threading

    from abo_lake.scheduling import compute, eager_scheduler

    assert eager_scheduler() is dask.threaded.get
    (name,) = compute(dask.delayed(_thread_name)())
    assert name != threading.current_thread().name  # a pool thread, not the caller's
    with dask.config.set(scheduler="synchronous"):
        assert eager_scheduler() is None
        assert compute(dask.delayed(_thread_name)()) == (threading.current_thread().name,)
        with raise_if_dask_computes(max_computes=1) as sched:  # dask.config's scheduler
            ccf.voxel_counts(tree)
        assert sched.total == 1


@pytest.mark.slow
def test_eager_analyses_use_a_running_distributed_client(dask_client, local_release, exps):
    """With a Client running, the rule gives that Client: voxel_counts and unionize of the
    lake's volumes compute on its cluster (their tasks are in its task stream), with the
    threaded results; a scheduler set in dask.config still wins."""
    import distributed

    from abo_lake.scheduling import eager_scheduler

    ann = local_release.open(ANN, group="100um")
    exp = local_release.open(f"connectivity/experiment/{exps[0].attrs['id']}")
    onto = ccf.Ontology(local_release.open(STRUCT))
    # the Client made itself dask's default ("dask.distributed" in dask.config)
    assert dask.base.get_scheduler(scheduler=eager_scheduler()) == dask_client.get
    with dask.config.set(scheduler="threads"):
        assert dask.base.get_scheduler(scheduler=eager_scheduler()) is dask.threaded.get
        counts = ccf.voxel_counts(ann)
        rec = ccf.unionize(exp, annotation=ann, ontology=onto)
    with distributed.get_task_stream(dask_client) as stream:
        on_cluster = ccf.voxel_counts(ann)
    assert any("_merge_counts" in str(t["key"]) for t in stream.data), stream.data
    pd.testing.assert_series_equal(on_cluster, counts)
    with distributed.get_task_stream(dask_client) as stream:
        on_cluster = ccf.unionize(exp, annotation=ann, ontology=onto)
    assert len(stream.data) > 0
    pd.testing.assert_frame_equal(on_cluster, rec)
    with dask.config.set(scheduler=None):  # a Client found only by looking for one
        assert eager_scheduler() is dask_client


def test_lake_analyses_do_not_import_distributed(local_release, exps):
    """In a fresh process, a point query, voxel counts, the ontology and a unionize from the
    lake run without importing ``distributed`` (dask imports it to look for a Client, or for
    a scheduler named by a string: ~0.2 s of CPU) and give the in-process results."""
    import subprocess
    import sys

    exp = f"connectivity/experiment/{exps[0].attrs['id']}"
    code = f"""
import json, sys
import abo_lake
from abo_lake import ccf
rel = abo_lake.open_lake({local_release.lake.url!r}).release("r1")
ann = rel.open({ANN!r}, group="100um")
at = ann.ccf.structure_at([[6300.0, 6100.0, 6200.0]]).values.tolist()
counts = int(ccf.voxel_counts(ann).sum())
onto = ccf.Ontology(rel.open({STRUCT!r}))
rec = rel.open({exp!r}).ccf.unionize(annotation=ann, ontology=onto)
print(json.dumps([at, counts, len(rec), "distributed" in sys.modules]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    at, counts, n_records, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert not imported
    ann = local_release.open(ANN, group="100um")
    assert at == ann.ccf.structure_at([[6300.0, 6100.0, 6200.0]]).values.tolist()
    assert counts == int(ccf.voxel_counts(ann).sum()) > 0
    onto = ccf.Ontology(local_release.open(STRUCT))
    rec = local_release.open(exp).ccf.unionize(annotation=ann, ontology=onto)
    assert n_records == len(rec) > 100
