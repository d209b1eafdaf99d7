"""``abo_lake.fidelity_files.check_file``: NRRD, ontology JSON, connectivity and SWC sources.

Each source is read with the project's reader, stored in a local lake, re-opened lazily and
checked against the file; the negative tests store a copy corrupted on the lake side.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import abo_lake
from abo_lake.fidelity_files import check_file
from abo_lake.sources import detect_format, members, read


def _roundtrip(tmp_path: Path, key: str, obj: xr.Dataset | xr.DataTree):
    """Store ``obj`` at ``key`` in a fresh local lake and re-open it from there."""
    lake = abo_lake.open_lake(str(tmp_path / "lake"))
    with lake.stage("r1") as stage:
        stage.write(key, obj)
    rel = lake.release("r1")
    return rel.open_datatree(key) if isinstance(obj, xr.DataTree) else rel.open(key)


def _read_one(path: Path) -> tuple[str, xr.Dataset | xr.DataTree]:
    ((key, obj),) = read(path).items()
    return key, obj


@pytest.fixture(scope="module")
def ccf_dir(tiny_sources) -> Path:
    return tiny_sources["ccf"]


@pytest.fixture(scope="module")
def experiment_dir(tiny_sources) -> Path:
    return sorted(tiny_sources["connectivity"].glob("experiment_*"))[0]


@pytest.fixture(scope="module")
def swc_path(tiny_sources) -> Path:
    return next(tiny_sources["celltypes"].glob("specimen_*/reconstruction.swc"))


# -- CCF volumes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["annotation_100.nrrd", "average_template_100.nrrd"])
def test_ccf_volume_faithful(ccf_dir, tmp_path, name):
    path = ccf_dir / name
    key, tree = _read_one(path)
    assert check_file(path, detect_format(path), _roundtrip(tmp_path, key, tree)) == []


def _with_level(tree: xr.DataTree, level: str, ds: xr.Dataset | None) -> xr.DataTree:
    """A copy of ``tree`` with ``level`` replaced by ``ds`` (dropped when None)."""
    nodes = {"/": tree.to_dataset()} | {k: tree[k].to_dataset() for k in tree.children}
    if ds is None:
        del nodes[level]
    else:
        nodes[level] = ds
    return xr.DataTree.from_dict(nodes)


def test_annotation_voxel_differs(ccf_dir, tmp_path):
    path = ccf_dir / "annotation_100.nrrd"
    key, tree = _read_one(path)
    ds = tree["100um"].to_dataset().compute()  # in memory: its values can be edited
    ds["annotation"].values[3, 4, 5] += 1
    problems = check_file(path, "ccf", _roundtrip(tmp_path, key, _with_level(tree, "100um", ds)))
    assert len(problems) == 1
    assert problems[0].startswith("annotation_100.nrrd: 100um/annotation differs in 1 of ")
    assert "first at (3, 4, 5)" in problems[0]


def test_template_coarse_level_missing_and_coords_shifted(ccf_dir, tmp_path):
    path = ccf_dir / "average_template_100.nrrd"
    key, tree = _read_one(path)
    ds = tree["100um"].to_dataset()
    ds = ds.assign_coords(lr=ds["lr"] + 50.0)  # voxel centres instead of corners
    stored = _with_level(_with_level(tree, "200um", None), "100um", ds)
    problems = check_file(path, "ccf", _roundtrip(tmp_path, key, stored))
    assert problems == [
        "average_template_100.nrrd: 100um coordinate lr is not index × 100 µm, expected "
        "[0.0, 100.0, 200.0]... (114 values)",
        "average_template_100.nrrd: no level '200um' in the lake, expected shape (66, 40, 57)",
    ]


def test_ome_multiscales_checked(ccf_dir, tmp_path):
    """The group's OME-Zarr 0.5 attrs must list each level's array with the level's
    resolution as its scale; a 0.4-style group (``multiscales`` at the top) is a problem."""
    path = ccf_dir / "annotation_100.nrrd"
    key, tree = _read_one(path)
    ome = copy.deepcopy(tree.attrs["ome"])
    ome["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] = [100.0] * 3
    wrong = tree.copy()
    wrong.attrs = {**tree.attrs, "ome": ome}
    problems = check_file(path, "ccf", _roundtrip(tmp_path / "scale", key, wrong))
    assert problems == [
        "annotation_100.nrrd: OME scales of '200um/annotation' are [[100.0, 100.0, 100.0]], "
        "expected one scale [200.0, 200.0, 200.0]"
    ]
    old = tree.copy()
    old.attrs = {k: v for k, v in tree.attrs.items() if k != "ome"}
    old.attrs["multiscales"] = tree.attrs["ome"]["multiscales"]
    problems = check_file(path, "ccf", _roundtrip(tmp_path / "old", key, old))
    assert problems == [
        "annotation_100.nrrd: the group has no 'ome' attrs, expected OME-Zarr 0.5 multiscales"
    ]


# -- connectivity ------------------------------------------------------------------------------


def test_connectivity_faithful_from_every_member(experiment_dir, tmp_path):
    files = members(experiment_dir / "metadata.json")
    assert len(files) == 5
    key, ds = _read_one(files[0])
    stored = _roundtrip(tmp_path, key, ds)
    for path in files:
        assert check_file(path, detect_format(path), stored) == [], path.name


def test_connectivity_voxel_and_field_differ(experiment_dir, tmp_path):
    key, ds = _read_one(experiment_dir / "metadata.json")
    ds = ds.compute()  # in memory: its values can be edited
    ds["injection_density"].values[10, 20, 30] = 0.5
    ds.attrs["structure_abbrev"] = "VISl"
    del ds.attrs["injection_structures"]
    problems = check_file(
        experiment_dir / "data_mask_100.nrrd", "ccf", _roundtrip(tmp_path, key, ds)
    )
    want_abbrev = json.loads((experiment_dir / "metadata.json").read_text())["structure_abbrev"]
    assert len(problems) == 3
    assert problems[0].startswith(
        f"injection_density_100.nrrd: {experiment_dir.name}/injection_density (float32) differs "
        "in 1 of 1203840 voxels, first at (10, 20, 30): 0.5, expected"
    )
    assert (
        problems[1]
        == f"metadata.json: field 'structure_abbrev' is 'VISl', expected {want_abbrev!r}"
    )
    assert problems[2].startswith("metadata.json: field 'injection_structures' missing")


def test_connectivity_null_field_kept(experiment_dir, tmp_path):
    folder = tmp_path / experiment_dir.name
    shutil.copytree(experiment_dir, folder)
    meta = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**meta, "transgenic_line": None}))
    key, ds = _read_one(folder / "metadata.json")
    assert check_file(folder / "metadata.json", "ccf", _roundtrip(tmp_path, key, ds)) == []


# -- ontology ----------------------------------------------------------------------------------


def _nested(flat: list[dict]) -> dict:
    """Allen's structure graph layout: ``{"msg": [root]}`` with nested ``children``."""
    by_id = {n["id"]: {**n, "children": []} for n in flat}
    for n in flat:
        if len(n["structure_id_path"]) > 1:
            by_id[n["structure_id_path"][-2]]["children"].append(by_id[n["id"]])
    return {"success": True, "msg": [by_id[flat[0]["id"]]]}


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_structures_faithful(ccf_dir, tmp_path, layout):
    path = ccf_dir / "structures.json"
    if layout == "nested":
        doc = _nested(json.loads(path.read_text()))
        path = tmp_path / "structures.json"
        path.write_text(json.dumps(doc))
    key, ds = _read_one(path)
    assert check_file(path, detect_format(path), _roundtrip(tmp_path, key, ds)) == []


def test_structures_real_file_faithful(shared_data, tmp_path):
    path = shared_data / "ccf" / "structures.json"
    key, ds = _read_one(path)
    assert ds.sizes["structure_id"] == 840
    assert check_file(path, detect_format(path), _roundtrip(tmp_path, key, ds)) == []


def test_structures_acronym_differs_and_id_renamed(ccf_dir, tmp_path):
    path = ccf_dir / "structures.json"
    key, ds = _read_one(path)
    ds = ds.copy(deep=True)
    row = int(np.flatnonzero(ds["acronym"].values == "VISp")[0])
    ds["acronym"].values[row] = "VISq"
    ids = ds["structure_id"].values.copy()
    last, ids[-1] = int(ids[-1]), 123456789  # the file's last structure becomes an extra one
    ds = ds.assign_coords(structure_id=ids)
    problems = check_file(path, "ccf", _roundtrip(tmp_path, key, ds))
    assert problems == [
        "structures.json: structure 385 acronym is 'VISq', expected 'VISp'",
        f"structures.json: structure {last} is not in the lake, expected a row",
        "structures.json: the lake has 1 structure(s) not in the file ([123456789]), expected "
        f"only the file's {len(ids)}",
    ]


def test_structures_allen_api_text_paths(ccf_dir, tmp_path):
    doc = _nested(json.loads((ccf_dir / "structures.json").read_text()))
    stack = list(doc["msg"])
    while stack:
        node = stack.pop()
        node["structure_id_path"] = "/" + "".join(f"{i}/" for i in node["structure_id_path"])
        stack += node["children"]
    path = tmp_path / "structures.json"
    path.write_text(json.dumps(doc))
    key, ds = _read_one(path)
    assert check_file(path, "ccf", _roundtrip(tmp_path, key, ds)) == []


# -- SWC ---------------------------------------------------------------------------------------


def test_swc_faithful(swc_path, tmp_path):
    key, ds = _read_one(swc_path)
    assert check_file(swc_path, detect_format(swc_path), _roundtrip(tmp_path, key, ds)) == []


def test_swc_real_files_faithful(shared_data, tmp_path):
    paths = sorted((shared_data / "swc").glob("*.swc"))
    assert len(paths) == 2
    for i, path in enumerate(paths):
        key, ds = _read_one(path)
        stored = _roundtrip(tmp_path / str(i), key, ds)
        assert check_file(path, detect_format(path), stored) == [], path.name


def test_swc_radius_differs(swc_path, tmp_path):
    key, ds = _read_one(swc_path)
    ds = ds.copy(deep=True)
    want = float(ds["radius"].values[7])
    ds["radius"].values[7] = want + 1e-4
    problems = check_file(swc_path, "celltypes", _roundtrip(tmp_path, key, ds))
    assert problems == [
        f"reconstruction.swc: radius differs in 1 of {ds.sizes['node']} rows, first in row 7 "
        f"(id 8): {want + 1e-4!r}, expected {want!r}"
    ]


# -- other formats -----------------------------------------------------------------------------


def test_other_formats_not_checked(swc_path):
    ephys = swc_path.parent / "ephys.nwb"
    assert detect_format(ephys) == "celltypes"
    assert check_file(ephys, "celltypes", xr.Dataset()) == []
    assert check_file(swc_path, "vbo-ophys", xr.Dataset()) == []


def test_a_conversion_runs_the_file_check(experiment_dir, tmp_path):
    """``convert_file`` checks NRRD/JSON sources too: a metadata field the connectivity reader
    cannot keep (it writes its own ``resolution_um``) fails the file, naming the field."""
    from abo_lake.jobs import convert_file

    folder = tmp_path / experiment_dir.name
    shutil.copytree(experiment_dir, folder)
    ok = convert_file(str(folder / "metadata.json"), str(tmp_path / "lake"))
    assert ok.error == ""
    meta = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**meta, "resolution_um": 25}))
    bad = convert_file(str(folder / "metadata.json"), str(tmp_path / "lake"))
    assert "IntegrityError" in bad.error
    assert "resolution_um" in bad.error
    assert "expected 25" in bad.error
