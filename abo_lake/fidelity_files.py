"""Fidelity checks of non-HDF5 sources: does the lake hold what the NRRD, JSON or SWC file holds?

:func:`check_file` re-parses a source file on its own (``pynrrd``, ``json``, ``numpy``), not
through :mod:`abo_lake.sources`, and compares it with the Dataset or DataTree re-opened from
the lake. It returns human-readable problems, ``"<file name>: <what differs>, expected
<what>"``; an empty list means faithful. Feed them to :func:`abo_lake.fidelity.assert_faithful`.

What is compared, by kind of file (format ``"ccf"`` unless said otherwise):

- ``annotation_<res>.nrrd`` / ``average_template_<res>.nrrd`` → multiscale DataTree: the level
  ``"<res>um"`` of the file's own resolution (from ``space directions``) equals the NRRD data
  bit for bit, as uint32 for the annotation (and the ids must fit in it) and in the file's
  own dtype for the template; every level has dims (ap, dv, lr), coordinates ``index × res``
  µm and ``resolution_um`` = its name, and is listed in the group's OME-Zarr 0.5 ``ome``
  multiscales (image named after the volume, axes ap/dv/lr in micrometer) as
  ``"<res>um/<volume>"`` with scale ``res`` per axis; the coarser ×2 levels down to 200 µm
  exist with shape ``ceil(n / 2)`` per step (their values are computed, so not compared).
- a connectivity ``experiment_<id>/`` file (any of its four volumes or ``metadata.json``) →
  one Dataset: at the finest resolution where all four volumes exist, each volume equals its
  NRRD bit for bit as float32 (the reader's storage dtype; a source whose values float32
  cannot hold is a problem) and each ``metadata.json`` field is an attr with an equal value
  (JSON-normalised; a nested dict or list may be stored as its JSON text).
- ``structures.json`` (flat list, ``{"msg": [...]}``, nested ``children``) → ontology Dataset:
  every structure has a row with equal acronym, name, parent id and ``structure_id_path``
  (a list or Allen's ``"/997/8/"`` text) and the lake has no extra rows.
- ``*.swc`` (format ``"celltypes"``) → morphology Dataset: ids, type, x, y, z, radius and
  parent equal the file's rows as ``numpy.loadtxt`` parses them, in file order.

Other formats (and the HDF5 files of ``"celltypes"``, covered by :mod:`abo_lake.fidelity`)
give ``[]``. Lake variables are lazy and are read level by level, volumes in slabs of ap planes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from abo_lake.sources._nrrd import open_volume
from abo_lake.sources.ccf import CONNECTIVITY_VOLUMES

__all__ = ["check_file", "check_group"]

_DIMS = ("ap", "dv", "lr")
#: Coarsest multiscale level (µm) of a CCF volume in the lake.
_COARSEST_UM = 200
_CONNECTIVITY = CONNECTIVITY_VOLUMES  # file names only; the values are re-parsed here
_VOLUME_RE = re.compile(
    r"^(annotation|average_template|template|" + "|".join(_CONNECTIVITY) + r")_(\d+)\.nrrd$"
)
#: Source bytes of a volume compared at a time (whole ap planes).
_SLAB_BYTES = 32 << 20
#: Fields that make a JSON object a connectivity ``metadata.json`` (with ``id``).
_INJECTION_FIELDS = {"injection_structures", "primary_injection_structure"}


def check_file(path: str | Path, fmt: str, obj: xr.Dataset | xr.DataTree) -> list[str]:
    """Compare a non-HDF5 source file with what the lake holds for it.

    Parameters
    ----------
    path
        The source file: a CCF NRRD volume, a connectivity volume or ``metadata.json``, an
        ontology JSON or an SWC file.
    fmt
        Its format key, as :func:`abo_lake.sources.detect_format` returns it (``"ccf"`` or
        ``"celltypes"``); other keys are not checked here.
    obj
        The Dataset (DataTree for a CCF volume) re-opened from the lake for this file.

    Returns
    -------
    list of str
        One line per problem, ``"<file name>: <what differs>, expected <what>"``; empty when
        the lake holds the file faithfully.

    Examples
    --------
    >>> tree = release.open_datatree("ccf/ccf_2017/annotation")  # doctest: +SKIP
    >>> check_file("annotation_100.nrrd", "ccf", tree)  # doctest: +SKIP
    []
    """
    p = Path(path)
    with p.open("rb") as f:
        head = f.read(8)
    if fmt == "celltypes":
        return [] if head.startswith(b"\x89HDF") else _check_swc(p, obj)
    if fmt == "glif":  # neuron_config.json: every field and the ids
        from abo_lake.sources.glif import fidelity_problems

        return fidelity_problems(p, obj)
    if fmt != "ccf":
        return []
    if not head.startswith(b"NRRD000"):
        doc = json.loads(p.read_text())
        if isinstance(doc, dict) and "id" in doc and _INJECTION_FIELDS & doc.keys():
            return _check_experiment(p.parent, obj)
        return _check_structures(p, doc, obj)
    m = _VOLUME_RE.match(p.name)
    if m and m[1] in _CONNECTIVITY:
        return _check_experiment(p.parent, obj)
    return _check_volume(p, obj)


def check_group(paths: list[Path], fmt: str, obj: xr.Dataset | xr.DataTree) -> list[str]:
    """:func:`check_file` for every file a job converted together (``sources.members``):
    each resolution of a CCF volume is its own level; a connectivity experiment is checked
    once, whichever of its files is given."""
    problems: list[str] = []
    for p in map(Path, paths):
        m = _VOLUME_RE.match(p.name)
        connectivity = (m and m[1] in _CONNECTIVITY) or p.name == "metadata.json"
        problems += check_file(p, fmt, obj)
        if connectivity:
            break
    return problems


# -- shared helpers ----------------------------------------------------------------------------


def _bits(a: np.ndarray) -> np.ndarray:
    """Elements of ``a`` as unsigned ints of the same width (bit equality, NaN included)."""
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    return a.view(f"u{a.dtype.itemsize}")


def _compare(
    name: str, label: str, source: np.ndarray, var: xr.DataArray, dtype: Any, lossy: str
) -> list[str]:
    """Compare ``var`` bit for bit with ``source`` cast to ``dtype``, slab by slab along the
    first axis (``source`` may be a memory map: never read whole). A cast that changes a
    source value is reported with ``lossy``."""
    dtype = np.dtype(dtype)
    if var.dtype != dtype:
        return [f"{name}: {label} has dtype {var.dtype}, expected {dtype}"]
    n_diff, n_lossy, first = 0, 0, ""
    plane = source.dtype.itemsize * math.prod(source.shape[1:])
    step = max(1, _SLAB_BYTES // max(1, plane))  # about 32 MB of source at a time
    for i0 in range(0, source.shape[0], step):
        src = np.asarray(source[i0 : i0 + step])
        ref = src.astype(dtype)
        if ref.dtype != src.dtype:
            back = ref.astype(src.dtype)
            changed = back != src
            if src.dtype.kind == "f":
                changed &= ~(np.isnan(back) & np.isnan(src))
            n_lossy += int(np.count_nonzero(changed))
        got = np.asarray(var[i0 : i0 + step].values)
        neq = _bits(got) != _bits(ref)
        if not first and neq.any():
            idx = np.unravel_index(int(np.argmax(neq)), neq.shape)
            at = (i0 + int(idx[0]), *(int(i) for i in idx[1:]))
            first = f"first at {at}: {got[idx].item()!r}, expected {ref[idx].item()!r}"
        n_diff += int(np.count_nonzero(neq))
    problems = [f"{name}: {lossy}"] if n_lossy else []
    if n_diff:
        problems.append(f"{name}: {label} differs in {n_diff} of {source.size} voxels, {first}")
    return problems


def _layout(name: str, label: str, ds: xr.Dataset, var: str, shape: tuple) -> list[str]:
    """``var`` is in ``ds`` on dims (ap, dv, lr) with ``shape``: [] or the one problem."""
    if var not in ds.data_vars:
        return [f"{name}: {label} has no variable {var!r}, expected one"]
    if ds[var].dims != _DIMS:
        return [f"{name}: {label}/{var} has dims {ds[var].dims}, expected {_DIMS}"]
    if ds[var].shape != shape:
        return [f"{name}: {label}/{var} has shape {ds[var].shape}, expected {shape}"]
    return []


def _coords(name: str, label: str, ds: xr.Dataset, shape: tuple, res: int) -> list[str]:
    """Coordinates ``index × res`` µm and ``resolution_um`` of ``ds``."""
    problems = []
    if ds.attrs.get("resolution_um") != res:
        got = ds.attrs.get("resolution_um")
        problems.append(f"{name}: {label} has resolution_um {got!r}, expected {res}")
    for dim, n in zip(_DIMS, shape):
        want = np.arange(n, dtype=np.float64) * res
        got = np.asarray(ds[dim].values) if dim in ds.coords else None
        if got is None or got.shape != want.shape or not np.array_equal(got, want):
            problems.append(
                f"{name}: {label} coordinate {dim} is not index × {res} µm, expected "
                f"{want[:3].tolist()}... ({n} values)"
            )
    return problems


def _json(value: Any) -> str:
    def default(v: Any) -> Any:
        return v.tolist() if isinstance(v, np.ndarray | np.generic) else str(v)

    return json.dumps(value, sort_keys=True, default=default)


# -- CCF volumes -------------------------------------------------------------------------------


def _resolution(name: str, header: dict[str, Any]) -> tuple[int | None, list[str]]:
    """Voxel size (µm) from ``space directions`` (else the file name), and header problems."""
    m = _VOLUME_RE.match(name)
    name_res = int(m[2]) if m else None
    problems = []
    origin = header.get("space origin")
    if origin is not None and np.any(np.asarray(origin, dtype=np.float64) != 0):
        problems.append(
            f"{name}: space origin {np.asarray(origin).tolist()} is not 0, expected 0 "
            "(lake coordinates are index × resolution)"
        )
    dirs = header.get("space directions")
    if dirs is None:
        if name_res is None:
            problems.append(f"{name}: no space directions, expected an isotropic diagonal")
        return name_res, problems
    mat = np.asarray(dirs, dtype=np.float64)
    steps = np.abs(np.diag(mat)) if mat.shape == (3, 3) else None
    if steps is None or not np.array_equal(mat, np.diag(np.diag(mat))) or np.ptp(steps):
        problems.append(f"{name}: space directions {mat.tolist()}, expected isotropic diagonal")
        return None, problems
    res = round(float(steps[0]))
    if res != steps[0] or (name_res is not None and res != name_res):
        want = f"{name_res} µm (the file name)" if name_res else "whole µm"
        problems.append(f"{name}: space directions say {steps[0]} µm, expected {want}")
    return res, problems


def _check_volume(p: Path, tree: xr.Dataset | xr.DataTree) -> list[str]:
    """An annotation/template NRRD against its multiscale DataTree."""
    name = p.name
    if not isinstance(tree, xr.DataTree):
        return [f"{name}: the lake holds a {type(tree).__name__}, expected a multiscale DataTree"]
    data, header = open_volume(p)  # memory-mapped: compared slab by slab
    res, problems = _resolution(name, header)
    if res is None:
        return problems
    want_res = res
    m = _VOLUME_RE.match(name)
    annotation = m[1] == "annotation" if m else data.dtype != np.uint16  # uint16: a template
    volume = "annotation" if annotation else "template"
    dtype = np.uint32 if annotation else data.dtype
    shape = tuple(int(s) for s in header["sizes"])
    image, ome_problems = _ome_image(name, tree.attrs, volume)
    problems += ome_problems
    while True:
        level = f"{res}um"
        if level not in tree.children:
            problems.append(f"{name}: no level {level!r} in the lake, expected shape {shape}")
        else:
            ds = tree[level].to_dataset()
            layout = _layout(name, level, ds, volume, shape)
            problems += layout or _coords(name, level, ds, shape, res)
            if image is not None:
                problems += _ome_scale(name, image, f"{level}/{volume}", res)
            if not layout and level == f"{want_res}um":
                problems += _compare(
                    name,
                    f"{level}/{volume}",
                    data,
                    ds[volume],
                    dtype,
                    "ids do not fit the lake's uint32, expected 0 <= id < 2**32",
                )
        if res * 2 > _COARSEST_UM:
            return problems
        res, shape = res * 2, tuple(math.ceil(n / 2) for n in shape)


def _ome_image(name: str, attrs: dict[str, Any], volume: str) -> tuple[dict | None, list[str]]:
    """The OME-Zarr 0.5 multiscale image ``volume`` of the group's ``ome`` attrs, or the
    problem (no ``ome`` 0.5 attrs, no image of that name, axes other than (ap, dv, lr) µm)."""
    ome = attrs.get("ome")
    if not isinstance(ome, dict):
        return None, [f"{name}: the group has no 'ome' attrs, expected OME-Zarr 0.5 multiscales"]
    if ome.get("version") != "0.5":
        return None, [f"{name}: OME-Zarr version {ome.get('version')!r}, expected '0.5'"]
    images = [m for m in ome.get("multiscales", []) if m.get("name") == volume]
    if len(images) != 1:
        return None, [f"{name}: {len(images)} OME multiscale images named {volume!r}, expected 1"]
    axes = [(a.get("name"), a.get("type"), a.get("unit")) for a in images[0].get("axes", [])]
    want = [(d, "space", "micrometer") for d in _DIMS]
    if axes != want:
        return None, [f"{name}: OME axes {axes} of {volume!r}, expected {want}"]
    return images[0], []


def _ome_scale(name: str, image: dict[str, Any], path: str, res: int) -> list[str]:
    """``path`` is a dataset of the OME multiscale ``image`` with scale ``res`` per axis."""
    datasets = {d.get("path"): d for d in image.get("datasets", [])}
    if path not in datasets:
        return [f"{name}: OME multiscales do not list {path!r}, expected a dataset"]
    scales = [
        t.get("scale")
        for t in datasets[path].get("coordinateTransformations", [])
        if t.get("type") == "scale"
    ]
    if scales != [[float(res)] * 3]:
        want = [float(res)] * 3
        return [f"{name}: OME scales of {path!r} are {scales}, expected one scale {want}"]
    return []


# -- connectivity experiments ------------------------------------------------------------------


def _check_experiment(folder: Path, ds: xr.Dataset | xr.DataTree) -> list[str]:
    """The four volumes and ``metadata.json`` of ``experiment_<id>/`` against one Dataset."""
    if not isinstance(ds, xr.Dataset):
        return [f"{folder.name}: the lake holds a {type(ds).__name__}, expected a Dataset"]
    found: dict[int, set[str]] = {}
    for f in folder.glob("*.nrrd"):
        if (m := _VOLUME_RE.match(f.name)) and m[1] in _CONNECTIVITY:
            found.setdefault(int(m[2]), set()).add(m[1])
    complete = sorted(r for r, names in found.items() if names == set(_CONNECTIVITY))
    if not complete:
        return [f"{folder.name}: no resolution with all of {_CONNECTIVITY}, expected one"]
    res = complete[0]
    problems: list[str] = []
    for volume in _CONNECTIVITY:
        name = f"{volume}_{res}.nrrd"
        data, header = open_volume(folder / name)
        shape = tuple(int(s) for s in header["sizes"])
        if layout := _layout(name, folder.name, ds, volume, shape):
            problems += layout
            continue
        if volume == "projection_density":  # the coordinates are shared: check them once
            problems += _coords(name, folder.name, ds, shape, res)
        problems += _compare(
            name,
            f"{folder.name}/{volume} (float32)",
            data,
            ds[volume],
            np.float32,
            f"{data.dtype} values change when stored as float32, expected values float32 "
            "holds exactly",
        )
    meta_path = folder / "metadata.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        for key, want in meta.items():
            if key not in ds.attrs:
                problems.append(
                    f"metadata.json: field {key!r} missing from the attrs, expected {want!r}"
                )
                continue
            got = ds.attrs[key]
            if _json(got) == _json(want):
                continue
            if isinstance(want, dict | list) and isinstance(got, str):
                try:
                    if _json(json.loads(got)) == _json(want):
                        continue  # a nested value stored as its JSON text
                except ValueError:
                    pass
            problems.append(f"metadata.json: field {key!r} is {got!r}, expected {want!r}")
    return problems


# -- ontology ----------------------------------------------------------------------------------


def _structure_rows(doc: Any) -> list[tuple[dict[str, Any], int | None]]:
    """(node, id of the node it is nested in) for every structure, depth first."""
    if isinstance(doc, dict):
        doc = doc.get("msg", [doc])
    rows: list[tuple[dict[str, Any], int | None]] = []
    stack: list[tuple[dict[str, Any], int | None]] = [(n, None) for n in reversed(doc)]
    while stack:
        node, outer = stack.pop()
        rows.append((node, outer))
        stack += [(c, int(node["id"])) for c in reversed(node.get("children") or [])]
    return rows


def _path(value: Any) -> list[int]:
    """``structure_id_path`` as ids: a JSON list or Allen's ``"/997/8/567/"`` text."""
    if isinstance(value, str):
        return [int(i) for i in value.strip("/").split("/") if i]
    return [int(i) for i in value]


def _check_structures(p: Path, doc: Any, ds: xr.Dataset | xr.DataTree) -> list[str]:
    """Every structure of an ontology JSON against the rows of the structures Dataset."""
    name = p.name
    if not isinstance(ds, xr.Dataset):
        return [f"{name}: the lake holds a {type(ds).__name__}, expected a Dataset"]
    rows = _structure_rows(doc)
    parents: dict[int, int] = {}
    for node, outer in rows:
        if "parent_structure_id" in node:
            parent = node["parent_structure_id"]
        elif outer is not None:
            parent = outer
        elif node.get("structure_id_path"):
            parent = ([-1, *_path(node["structure_id_path"])])[-2]
        else:
            parent = None
        parents[int(node["id"])] = -1 if parent is None else int(parent)

    ids = np.asarray(ds["structure_id"].values).tolist()
    acronyms = np.asarray(ds["acronym"].values).tolist()
    names = np.asarray(ds["name"].values).tolist()
    parent_ids = np.asarray(ds["parent_structure_id"].values).tolist()
    flat = np.asarray(ds["structure_id_path"].values).tolist()
    ends = np.asarray(ds["structure_id_path_index"].values).tolist()
    row_of = {sid: i for i, sid in enumerate(ids)}
    problems = []
    if len(row_of) != len(ids):
        problems.append(f"{name}: the lake repeats structure ids, expected each once")
    for node, _ in rows:
        sid = int(node["id"])
        if sid not in row_of:
            problems.append(f"{name}: structure {sid} is not in the lake, expected a row")
            continue
        i = row_of[sid]
        if node.get("structure_id_path"):
            path = _path(node["structure_id_path"])
        else:  # walk the parents, as the file gives no path
            path, cur = [], sid
            while cur in parents and len(path) <= len(rows):
                path.insert(0, cur)
                cur = parents[cur]
        got_path = flat[(ends[i - 1] if i else 0) : ends[i]]
        for field, got, want in [
            ("acronym", acronyms[i], str(node["acronym"])),
            ("name", names[i], str(node.get("name", ""))),
            ("parent id", parent_ids[i], parents[sid]),
            ("structure_id_path", got_path, path),
        ]:
            if got != want:
                problems.append(f"{name}: structure {sid} {field} is {got!r}, expected {want!r}")
    extra = sorted(set(ids) - set(parents))
    if extra:
        problems.append(
            f"{name}: the lake has {len(extra)} structure(s) not in the file ({extra[:5]}), "
            f"expected only the file's {len(parents)}"
        )
    return problems


# -- SWC ---------------------------------------------------------------------------------------


def _check_swc(p: Path, ds: xr.Dataset | xr.DataTree) -> list[str]:
    """The rows of an SWC file against the morphology node table."""
    name = p.name
    if not isinstance(ds, xr.Dataset):
        return [f"{name}: the lake holds a {type(ds).__name__}, expected a Dataset"]
    try:
        table = np.loadtxt(p, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as err:
        return [f"{name}: numpy cannot parse the text ({err}), expected 7 numbers a line"]
    if table.shape[1] != 7:
        return [f"{name}: {table.shape[1]} columns, expected 7 (id type x y z radius parent)"]
    if ds.sizes.get("node") != len(table):
        return [f"{name}: the lake has {ds.sizes.get('node')} nodes, expected {len(table)}"]
    problems = []
    for col, field in enumerate(["node", "type", "x", "y", "z", "radius", "parent"]):
        if field not in ds.variables:
            problems.append(f"{name}: no {field!r} in the lake, expected column {col + 1}")
            continue
        got = np.asarray(ds[field].values).astype(np.float64)
        bad = np.flatnonzero(got != table[:, col])
        if bad.size:
            r = int(bad[0])
            problems.append(
                f"{name}: {field} differs in {bad.size} of {len(table)} rows, first in row {r} "
                f"(id {table[r, 0]:g}): {got[r].item()!r}, expected {table[r, col].item()!r}"
            )
    return problems
