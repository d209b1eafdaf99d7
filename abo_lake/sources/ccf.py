"""Reader of CCF volumes, the structure ontology and Mouse Connectivity experiments.

Three kinds of source, told apart by content (NRRD magic or JSON fields), then by Allen's file
names (``ALLEN_DATA.md`` §4):

- ``annotation_<res>.nrrd`` (uint32 ids) and ``average_template_<res>.nrrd`` (uint16) →
  ``{"ccf/<version>/annotation" | "ccf/<version>/template": DataTree}``: a multiscale group
  whose children ``"<res>um"`` are the file's level plus coarser levels made in ×2 steps down
  to 200 µm (stride, i.e. nearest neighbour, for the annotation as AllenSDK's ``downsample``;
  a 2×2×2 block mean for the template).
- ``structures.json`` (flat list, ``{"msg": [...]}`` or nested ``children``) →
  ``{"ccf/<version>/structures": Dataset}`` along ``structure_id``.
- ``experiment_<id>/{projection_density,injection_density,injection_fraction,data_mask}_<res>.nrrd``
  or its ``metadata.json`` → ``{"connectivity/experiment/<id>": Dataset}``. Any one of the
  five files gives the same Dataset: the reader loads all four volumes beside it, at the
  finest resolution where all four exist, plus the metadata as attrs, so a job that meets
  every file of the folder gets equal Datasets under one path and keeps one.

Coordinates ``ap``, ``dv``, ``lr`` are ``index × resolution`` in µm: Allen's voxel-to-µm
mapping (``space origin`` 0), i.e. the voxel's anterior/dorsal/left corner, so a stride-2
level keeps the coordinates of the voxels it keeps. Volumes are dask arrays over memory-maps
(``_nrrd.open_volume`` streams gzip data once into a temporary file), so a conversion holds
blocks, not volumes (a 10 µm annotation is 4.8 GB); stored 64³ through ``encoding["chunks"]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dask.array as da
import nrrd
import numpy as np
import xarray as xr
from dask.base import tokenize

from abo_lake.errors import SourceFileError
from abo_lake.sources._nrrd import Blocks, data_file, open_volume

__all__ = [
    "CCF_SHAPES",
    "CCF_VERSION",
    "CONNECTIVITY_VOLUMES",
    "OME_VERSION",
    "ome_multiscales",
    "read",
    "read_structures",
    "read_volume",
    "sniff",
]

#: Default CCF version of the dataset paths (``ccf/<version>/...``).
CCF_VERSION = "ccf_2017"
#: resolution (µm) -> volume shape (AP, DV, LR) of the CCF v3 grid.
CCF_SHAPES: dict[int, tuple[int, int, int]] = {
    10: (1320, 800, 1140),
    25: (528, 320, 456),
    50: (264, 160, 228),
    100: (132, 80, 114),
}
CONNECTIVITY_VOLUMES = (
    "projection_density",
    "injection_density",
    "injection_fraction",
    "data_mask",
)
_DIMS = ("ap", "dv", "lr")
_CHUNK = 64
_COARSEST_UM = 200
#: OME-Zarr version of the ``"ome"`` attrs: 0.5, the version for Zarr v3 stores.
OME_VERSION = "0.5"
#: volume -> (OME ``type``, description) of the ×2 downscaling that makes derived levels.
_DOWNSCALING = {
    "annotation": ("stride", "every second voxel along each axis (nearest neighbour)"),
    "template": ("mean", "mean of 2x2x2 voxel blocks, rounded to the volume's integer dtype"),
}
_MAX_JSON_BYTES = 64 * 2**20
_NAME_RE = re.compile(
    r"^(?P<volume>annotation|average_template|template|" + "|".join(CONNECTIVITY_VOLUMES) + r")"
    r"_(?P<res>\d+)\.nrrd$"
)
_EXPERIMENT_RE = re.compile(r"^experiment_(\d+)$")


def sniff(path: str | Path) -> bool:
    """Return True for an NRRD file, a structure ontology JSON or a connectivity metadata JSON."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(8)
        if head.startswith(b"NRRD000"):
            return True
        if head.lstrip()[:1] not in (b"[", b"{") or p.stat().st_size > _MAX_JSON_BYTES:
            return False
        doc = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return _is_metadata(doc) or bool(_ontology_nodes(doc))


def read(path: str | Path, *, ccf_version: str = CCF_VERSION) -> dict[str, Any]:
    """Read one CCF, ontology or connectivity source file.

    Parameters
    ----------
    path
        An annotation/template NRRD, ``structures.json``, or any file of an
        ``experiment_<id>/`` folder.
    ccf_version
        The version in the ``ccf/<version>/...`` dataset paths.

    Returns
    -------
    dict
        Dataset path -> ``xarray.DataTree`` (CCF volumes) or ``xarray.Dataset``.

    Raises
    ------
    SourceFileError
        Naming the file: unreadable header, shape disagreeing with the resolution, unknown
        volume kind, missing connectivity volumes.
    """
    p = Path(path)
    if not sniff(p):
        raise SourceFileError(
            f"{p}: not a CCF NRRD volume, ontology JSON or connectivity metadata JSON"
        )
    if p.suffix.lower() == ".json" or not _is_nrrd(p):
        doc = json.loads(p.read_text())
        if _is_metadata(doc):
            return _read_experiment(p.parent, p)
        return {f"ccf/{ccf_version}/structures": read_structures(p, ccf_version=ccf_version)}
    header = _header(p)
    volume, _ = _volume_kind(p, header)
    if volume in CONNECTIVITY_VOLUMES:
        return _read_experiment(p.parent, p)
    return {f"ccf/{ccf_version}/{volume}": read_volume(p, ccf_version=ccf_version)}


# -- NRRD volumes ------------------------------------------------------------------------------


def _is_nrrd(p: Path) -> bool:
    with p.open("rb") as f:
        return f.read(7) == b"NRRD000"


def _header(p: Path) -> dict[str, Any]:
    try:
        header = nrrd.read_header(str(p))
    except (nrrd.NRRDError, OSError, ValueError, TypeError, UnicodeDecodeError) as err:
        raise SourceFileError(f"{p}: broken NRRD header ({err})") from err
    if header.get("dimension") != 3 or len(header.get("sizes", ())) != 3:
        raise SourceFileError(
            f"{p}: a CCF volume is 3-D; found dimension {header.get('dimension')!r}, "
            f"sizes {list(header.get('sizes', []))}"
        )
    return header


def _resolution(p: Path, header: dict[str, Any], name_res: int | None) -> int:
    """Isotropic voxel size (µm) from ``space directions`` (else the file name), checked."""
    dirs = header.get("space directions")
    if dirs is not None:
        try:
            mat = np.asarray(dirs, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise SourceFileError(f"{p}: unreadable 'space directions' {dirs!r}") from err
        steps = np.abs(np.diag(mat)) if mat.shape == (3, 3) else np.array([np.nan])
        if (
            mat.shape != (3, 3)
            or not np.allclose(mat, np.diag(np.diag(mat)))
            or not np.allclose(steps, steps[0])
        ):
            raise SourceFileError(
                f"{p}: 'space directions' must be an isotropic diagonal in µm; found {dirs!r}"
            )
        res = round(float(steps[0]))
        if name_res is not None and name_res != res:
            raise SourceFileError(
                f"{p}: the file name says {name_res} µm but 'space directions' say {res} µm"
            )
    elif name_res is not None:
        res = name_res
    else:
        raise SourceFileError(f"{p}: no 'space directions' and no '_<res>.nrrd' in the name")
    sizes = tuple(int(s) for s in header["sizes"])
    if res not in CCF_SHAPES:
        raise SourceFileError(
            f"{p}: resolution {res} µm is not a CCF v3 grid; expected one of {sorted(CCF_SHAPES)}"
        )
    if sizes != CCF_SHAPES[res]:
        raise SourceFileError(
            f"{p}: volume shape {sizes} disagrees with its declared resolution {res} µm; the "
            f"CCF v3 grid at {res} µm is {CCF_SHAPES[res]} (AP, DV, LR)"
        )
    return res


def _volume_kind(p: Path, header: dict[str, Any]) -> tuple[str, int | None]:
    """(``annotation`` | ``template`` | a connectivity volume, resolution in the name)."""
    kind = str(header.get("type", ""))
    m = _NAME_RE.match(p.name)
    integer = kind in {"uint32", "unsigned int", "uint", "int32", "int", "uint64", "int64"}
    if m:
        volume = "template" if m["volume"].endswith("template") else m["volume"]
        res: int | None = int(m["res"])
    else:
        by_type = {"uint16": "template", "unsigned short": "template", "float": "float"}
        volume = "annotation" if integer else by_type.get(kind, "")
        res = None
        if volume in ("", "float"):
            raise SourceFileError(
                f"{p}: cannot tell which CCF volume this is (NRRD type {kind!r}); name it like "
                "Allen: annotation_<res>.nrrd, average_template_<res>.nrrd or "
                "experiment_<id>/projection_density_<res>.nrrd"
            )
    if volume == "annotation" and not integer:
        raise SourceFileError(f"{p}: an annotation holds integer structure ids; found {kind!r}")
    if volume in CONNECTIVITY_VOLUMES and kind not in {"float", "double"}:
        raise SourceFileError(f"{p}: {volume} is a float volume in [0, 1]; found {kind!r}")
    return volume, res


def _load(p: Path) -> tuple[da.Array, int, str]:
    """The volume as a dask array over its memory-mapped data (``_nrrd.open_volume``: a
    gzip volume is decompressed once, in a stream, never held whole in memory)."""
    header = _header(p)
    volume, name_res = _volume_kind(p, header)
    res = _resolution(p, header, name_res)
    try:
        data, _ = open_volume(p)
    except SourceFileError:
        raise
    except Exception as err:  # pynrrd raises zlib, ValueError, NRRDError... on broken data
        raise SourceFileError(f"{p}: cannot read the NRRD data ({err})") from err
    stat = p.stat()
    name = "nrrd-" + tokenize(str(p), stat.st_size, stat.st_mtime_ns)
    return da.from_array(Blocks(data), chunks=(2 * _CHUNK,) * 3, name=name), res, volume


def _coords(shape: tuple[int, ...], res: int) -> dict[str, xr.Variable]:
    return {
        dim: xr.Variable(dim, np.arange(n, dtype=np.float64) * res, {"units": "um"})
        for dim, n in zip(_DIMS, shape)
    }


def _level(name: str, data: da.Array, res: int, attrs: dict[str, Any]) -> xr.Dataset:
    var = xr.Variable(_DIMS, data)
    var.encoding["chunks"] = tuple(min(_CHUNK, n) for n in data.shape)
    ds = xr.Dataset({name: var}, coords=_coords(data.shape, res))
    ds.attrs = {**attrs, "resolution_um": res}
    return ds


def _half(data: da.Array, volume: str) -> da.Array:
    """The next coarser level: every second voxel (annotation) or 2×2×2 means (template),
    block by block (every block but the last has even sizes, so no pair straddles two)."""
    if volume == "annotation":
        return data[::2, ::2, ::2]
    if any(c % 2 for cs in data.chunks for c in cs[:-1]):
        data = data.rechunk((2 * _CHUNK,) * 3)
    chunks = tuple(tuple(-(-c // 2) for c in cs) for cs in data.chunks)
    return data.map_blocks(_block_mean, chunks=chunks, dtype=data.dtype)


def _block_mean(data: np.ndarray) -> np.ndarray:
    """Mean over 2×2×2 blocks (edge blocks averaged over the voxels they have)."""
    pad = [(0, n % 2) for n in data.shape]
    vals = np.pad(data.astype(np.float64), pad)
    weight = np.pad(np.ones(data.shape, dtype=np.float64), pad)
    shape = [s // 2 for s in vals.shape]
    fold = (shape[0], 2, shape[1], 2, shape[2], 2)
    total = vals.reshape(fold).sum(axis=(1, 3, 5))
    count = weight.reshape(fold).sum(axis=(1, 3, 5))
    out = total / count
    if np.issubdtype(data.dtype, np.integer):
        out = np.rint(out)
    return out.astype(data.dtype)


def ome_multiscales(levels: dict[str, xr.Dataset]) -> dict[str, Any]:
    """The OME-Zarr 0.5 attrs (the ``"ome"`` key of the group's attrs) of a multiscale group.

    One multiscale image per (ap, dv, lr) variable of the levels (a CCF volume has one,
    ``annotation`` or ``template``), named after it. Its datasets are the paths of its arrays
    relative to the group, ``"<res>um/<variable>"``, finest first, each with one ``scale``:
    the level's ``resolution_um`` on every axis, so ``index × scale`` is the level's ``ap``,
    ``dv``, ``lr`` coordinate (Allen's voxel corner: no ``translation``). ``type`` and
    ``metadata`` name how the derived levels were made; which levels are derived stays in
    abo_lake's own level attrs (``derived``, ``source_file``).

    Parameters
    ----------
    levels
        Level name (``"<res>um"``) -> its ``ccf_volume`` Dataset (attr ``resolution_um``).

    Returns
    -------
    dict
        ``{"version": "0.5", "multiscales": [...]}``.
    """
    by_res = sorted(levels.items(), key=lambda item: float(item[1].attrs["resolution_um"]))
    names = list(
        dict.fromkeys(
            str(name) for _, ds in by_res for name, var in ds.data_vars.items() if var.dims == _DIMS
        )
    )
    multiscales = []
    for name in names:
        kind, how = _DOWNSCALING.get(name, ("unknown", "not recorded"))
        multiscales.append(
            {
                "name": name,
                "axes": [{"name": d, "type": "space", "unit": "micrometer"} for d in _DIMS],
                "datasets": [
                    {
                        "path": f"{key}/{name}",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(ds.attrs["resolution_um"])] * 3}
                        ],
                    }
                    for key, ds in by_res
                    if name in ds.data_vars
                ],
                "type": kind,
                "metadata": {
                    "description": (
                        "levels of Allen's files as read; each file's coarser levels, up to "
                        f"the next file's, made from it in x2 steps: {how}"
                    ),
                    "method": "abo_lake.sources.ccf",
                },
            }
        )
    return {"version": OME_VERSION, "multiscales": multiscales}


def level_plan(files: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, tuple[int, ...]]]:
    """The levels of a multiscale CCF volume made of files at resolutions ``files`` (µm ->
    shape): each file's level, and its ×2 chain down to 200 µm up to the next level another
    file holds (25 and 100 µm files give 25, 50 from 25, 100, 200 from 100).

    Returns
    -------
    dict
        Level resolution (µm, finest first) -> (resolution of the file it is, or the level it
        is derived from by halving; its shape, ``ceil(n / 2)`` per axis when derived).
    """
    plan: dict[int, tuple[int, tuple[int, ...]]] = {r: (r, tuple(s)) for r, s in files.items()}
    for res, shape in sorted(files.items()):
        while res * 2 <= _COARSEST_UM and res * 2 not in plan:
            shape = tuple(-(-n // 2) for n in shape)
            plan[res * 2] = (res, shape)
            res *= 2
    return dict(sorted(plan.items()))


def read_volume(path: str | Path, *, ccf_version: str = CCF_VERSION) -> xr.DataTree:
    """Read an annotation or average template into a multiscale DataTree, with every
    resolution of it in the same folder (see :func:`members`).

    Parameters
    ----------
    path
        ``annotation_<res>.nrrd`` or ``average_template_<res>.nrrd``; its siblings
        ``annotation_<other res>.nrrd`` (likewise templates) are levels of the same tree.
    ccf_version
        Recorded in the attrs.

    Returns
    -------
    xarray.DataTree
        Root attrs ``abo_lake_kind="ccf_volume"`` and ``ome``, OME-Zarr 0.5 multiscales
        metadata (:func:`ome_multiscales`, dataset paths ``"<res>um/<volume>"``); children
        ``"<res>um"``, finest first, each a ``ccf_volume`` Dataset with one variable,
        ``annotation`` (uint32) or ``template`` (uint16), dims (ap, dv, lr): one per file
        (attr ``source_file``), and each file's coarser levels in ×2 steps down to 200 µm
        up to a level another file holds (``source_file`` the file it is derived from, attr
        ``derived`` how).
    """
    p = Path(path)
    files = members(p) if _NAME_RE.match(p.name) else [p]
    levels: dict[str, xr.Dataset] = {}
    read: list[tuple[da.Array, int, str, dict[str, Any]]] = []
    for f in files:
        data, res, volume = _load(f)
        if volume not in ("annotation", "template"):
            raise SourceFileError(f"{f}: a {volume} volume belongs to a connectivity experiment")
        if volume == "annotation":
            data = data.astype(np.uint32)
        attrs = {
            "abo_lake_kind": "ccf_volume",
            "source_file": f.name,
            "ccf_version": ccf_version,
            "volume": volume,
        }
        levels[f"{res}um"] = _level(volume, data, res, attrs)
        read.append((data, res, volume, attrs))
    plan = level_plan({res: data.shape for data, res, _, _ in read})
    by_res = {res: (data, volume, attrs) for data, res, volume, attrs in read}
    for res, (source, _) in plan.items():  # finest first: a level's source comes before it
        if res == source:
            continue
        data, volume, attrs = by_res[source]
        derived = {**attrs, "derived": "stride 2" if volume == "annotation" else "2x2x2 mean"}
        by_res[res] = (_half(data, volume), volume, derived)
        levels[f"{res}um"] = _level(volume, by_res[res][0], res, derived)
    levels = dict(sorted(levels.items(), key=lambda item: item[1].attrs["resolution_um"]))
    attrs = {**read[0][3], "source_file": p.name}
    root = xr.Dataset(attrs={**attrs, "ome": ome_multiscales(levels)})
    return xr.DataTree.from_dict({"/": root, **levels})


# -- connectivity ------------------------------------------------------------------------------


def _is_metadata(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and "id" in doc
        and ("injection_structures" in doc or "primary_injection_structure" in doc)
    )


def _attr_value(value: Any) -> Any:
    """A JSON value as an attrs-safe value (scalars and flat lists; the rest as JSON text)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list) and all(
        isinstance(v, str | bool | int | float) and not isinstance(v, dict) for v in value
    ):
        return list(value)
    return json.dumps(value)


def _read_experiment(folder: Path, entry: Path) -> dict[str, xr.Dataset]:
    meta_path = folder / "metadata.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as err:
            raise SourceFileError(f"{meta_path}: not valid JSON ({err})") from err
    m = _EXPERIMENT_RE.match(folder.name)
    exp_id = int(meta["id"]) if "id" in meta else int(m[1]) if m else None
    if exp_id is None:
        raise SourceFileError(
            f"{entry}: cannot tell the experiment id; expected a folder experiment_<id> or a "
            "metadata.json with 'id' beside it"
        )
    if m and int(m[1]) != exp_id:
        raise SourceFileError(f"{meta_path}: id {exp_id} disagrees with the folder {folder.name}")
    complete = _complete_resolutions(f.name for f in folder.glob("*.nrrd"))
    if not complete:
        raise SourceFileError(
            f"{entry}: a connectivity experiment needs {', '.join(CONNECTIVITY_VOLUMES)} "
            f"_<res>.nrrd in {folder}; found {sorted(f.name for f in folder.glob('*.nrrd'))}"
        )
    res = complete[0]
    data_vars = {}
    for name in CONNECTIVITY_VOLUMES:
        data, _, _ = _load(folder / f"{name}_{res}.nrrd")
        var = xr.Variable(_DIMS, data.astype(np.float32))
        var.encoding["chunks"] = tuple(min(_CHUNK, n) for n in data.shape)
        data_vars[name] = var
    shape = data_vars["projection_density"].shape
    attrs = {k: _attr_value(v) for k, v in meta.items()}
    attrs.update(
        abo_lake_kind="connectivity_experiment",
        source_file=f"projection_density_{res}.nrrd",
        source_files=[f"{name}_{res}.nrrd" for name in CONNECTIVITY_VOLUMES]
        + (["metadata.json"] if meta else []),
        experiment_id=exp_id,
        resolution_um=res,
    )
    ds = xr.Dataset(data_vars, coords=_coords(shape, res), attrs=attrs)
    return {f"connectivity/experiment/{exp_id}": ds}


# -- ontology ----------------------------------------------------------------------------------


def _ontology_nodes(doc: Any) -> list[dict[str, Any]]:
    """Flat list of structure nodes from a list, an Allen API ``{"msg": [...]}`` or a tree."""
    if isinstance(doc, dict):
        doc = doc.get("msg", [doc] if "children" in doc else None)
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        return []
    if not {"id", "acronym"} <= doc[0].keys():
        return []
    if not ({"structure_id_path", "children", "parent_structure_id"} & doc[0].keys()):
        return []
    flat: list[dict[str, Any]] = []
    stack = list(reversed(doc))
    while stack:
        node = stack.pop()
        flat.append(node)
        stack.extend(reversed(node.get("children") or []))
    return flat


def _path_ids(path: list[int] | str) -> list[int]:
    """A ``structure_id_path`` as ids: a list, or the Allen API's text ``"/997/8/567/"``."""
    if isinstance(path, str):
        return [int(i) for i in path.strip("/").split("/") if i]
    return [int(i) for i in path]


def _ragged(values: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    flat = np.array([v for row in values for v in row], dtype=np.int64)
    index = np.cumsum([len(row) for row in values], dtype=np.int64)
    return flat, index


def read_structures(path: str | Path, *, ccf_version: str = CCF_VERSION) -> xr.Dataset:
    """Read the structure ontology (``structures.json``) into a table along ``structure_id``.

    Parameters
    ----------
    path
        A flat list of nodes, an Allen API response (``{"msg": [...]}``) or a nested tree.
    ccf_version
        Recorded in the attrs.

    Returns
    -------
    xarray.Dataset
        Kind ``ccf_structures``: acronym, name, parent_structure_id (−1 for the root), depth,
        graph_order, color_hex_triplet, rgb_triplet (structure_id, rgb) uint8 and the ragged
        structure_id_path (+ structure_set_ids when present) with their ``_index``.
    """
    p = Path(path)
    try:
        nodes = _ontology_nodes(json.loads(p.read_text()))
    except (OSError, ValueError) as err:
        raise SourceFileError(f"{p}: not a readable JSON file ({err})") from err
    if not nodes:
        raise SourceFileError(f"{p}: no structure nodes (id, acronym, structure_id_path)")
    ids = [int(n["id"]) for n in nodes]
    if len(set(ids)) != len(ids):
        raise SourceFileError(f"{p}: structure ids are not unique ({len(ids)} nodes)")
    parent_of = {int(n["id"]): n.get("parent_structure_id") for n in nodes}
    paths = []
    for n in nodes:
        if n.get("structure_id_path"):
            path_ids = _path_ids(n["structure_id_path"])
        else:  # walk the parents
            path_ids, cur = [], int(n["id"])
            while cur is not None and cur in parent_of and len(path_ids) <= len(nodes):
                path_ids.insert(0, cur)
                cur = parent_of[cur]
        if path_ids[-1] != int(n["id"]):
            raise SourceFileError(f"{p}: structure {n['id']} has a path not ending in itself")
        paths.append(path_ids)
    rgb = []
    hexes = []
    for n in nodes:
        if n.get("rgb_triplet"):
            triplet = [int(c) for c in n["rgb_triplet"]]
        else:
            h = str(n.get("color_hex_triplet") or "FFFFFF")
            triplet = [int(h[i : i + 2], 16) for i in (0, 2, 4)]
        rgb.append(triplet)
        hexes.append(str(n.get("color_hex_triplet") or "".join(f"{c:02X}" for c in triplet)))
    path_flat, path_index = _ragged(paths)
    data_vars: dict[str, Any] = {
        "acronym": ("structure_id", np.array([str(n["acronym"]) for n in nodes])),
        "name": ("structure_id", np.array([str(n.get("name") or "") for n in nodes])),
        "parent_structure_id": (
            "structure_id",
            np.array([pth[-2] if len(pth) > 1 else -1 for pth in paths], dtype=np.int64),
        ),
        "depth": ("structure_id", np.array([len(pth) - 1 for pth in paths], dtype=np.int64)),
        "graph_order": (
            "structure_id",
            np.array([int(n.get("graph_order", i)) for i, n in enumerate(nodes)], dtype=np.int64),
        ),
        "color_hex_triplet": ("structure_id", np.array(hexes)),
        "rgb_triplet": (("structure_id", "rgb"), np.array(rgb, dtype=np.uint8)),
        "structure_id_path": ("path_element", path_flat),
        "structure_id_path_index": ("structure_id", path_index),
    }
    if any("structure_set_ids" in n for n in nodes):
        set_flat, set_index = _ragged([list(n.get("structure_set_ids") or []) for n in nodes])
        data_vars["structure_set_ids"] = ("structure_set_element", set_flat)
        data_vars["structure_set_ids_index"] = ("structure_id", set_index)
    if any("graph_id" in n for n in nodes):
        graph_ids = [int(n.get("graph_id") or 1) for n in nodes]
        data_vars["graph_id"] = ("structure_id", np.array(graph_ids, dtype=np.int64))
    ds = xr.Dataset(
        data_vars, coords={"structure_id": ("structure_id", np.array(ids, dtype=np.int64))}
    )
    ds.attrs = {
        "abo_lake_kind": "ccf_structures",
        "source_file": p.name,
        "ccf_version": ccf_version,
    }
    return ds


def members(path: str | Path) -> list[Path]:
    """The files that together make the Dataset(s) ``read(path)`` returns (see :func:`group`).

    The conversion job converts each group once (from its first member) and keys its resume
    record on the content of all members, so changing any one of them re-converts.
    """
    p = Path(path)
    siblings = [f.name for f in p.parent.iterdir() if f.is_file()] if p.parent.is_dir() else []
    return [p.parent / name for name in group(p.name, siblings)]


def inputs(path: str | Path) -> list[Path]:
    """Every file a conversion of ``path`` reads: its :func:`members` and the detached data
    files of their NRRD headers, so that the resume key covers the data too.

    Raises
    ------
    SourceFileError
        Naming the NRRD, for a data file outside its own folder (``_nrrd.data_file``).
    """
    out: list[Path] = []
    for f in members(path):
        out.append(f)
        if f.suffix.lower() != ".nrrd" or not f.is_file() or not _is_nrrd(f):
            continue
        try:
            header = nrrd.read_header(str(f))
        except (nrrd.NRRDError, OSError, ValueError, TypeError, UnicodeDecodeError):
            continue  # reading it fails later, by name
        data = data_file(f, header)
        if data not in out:
            out.append(data)
    return out


def group(name: str, siblings: Iterable[str]) -> list[str]:
    """Names of the files that make one Dataset with the file ``name``, by names alone (so a
    remote folder's listing will do), first the one a job converts the group from.

    A connectivity experiment is one Dataset built from its folder: the four volumes at the
    finest complete resolution plus ``metadata.json``. An annotation or template is one
    multiscale dataset of all its resolutions in the folder (``annotation_10.nrrd``,
    ``annotation_25.nrrd``, ..., finest first; Allen ships each CCF version in its own
    folder). The files of a connectivity experiment without a complete resolution are one
    group too, whose conversion fails naming what is missing. Every other file is its own
    group.

    Parameters
    ----------
    name
        A file name.
    siblings
        The names of the files in its folder.
    """
    names = set(siblings) | {name}
    n = _NAME_RE.match(name)
    if n and n["volume"] not in CONNECTIVITY_VOLUMES:
        same = [
            (int(m["res"]), other)
            for other in names
            if (m := _NAME_RE.match(other)) and m["volume"] == n["volume"]
        ]
        return [other for _, other in sorted(same)]
    if not ((n and n["volume"] in CONNECTIVITY_VOLUMES) or name == "metadata.json"):
        return [name]
    complete = _complete_resolutions(names)
    if not complete:  # one task that fails naming what is missing, not one per file
        return sorted(
            other
            for other in names
            if other == "metadata.json"
            or ((m := _NAME_RE.match(other)) and m["volume"] in CONNECTIVITY_VOLUMES)
        )
    out = [f"{volume}_{complete[0]}.nrrd" for volume in CONNECTIVITY_VOLUMES]
    return out + (["metadata.json"] if "metadata.json" in names else [])


def _complete_resolutions(names: Iterable[str]) -> list[int]:
    """Resolutions (µm, finest first) at which all four connectivity volumes are named."""
    found: dict[int, set[str]] = {}
    for name in names:
        m = _NAME_RE.match(name)
        if m and m["volume"] in CONNECTIVITY_VOLUMES:
            found.setdefault(int(m["res"]), set()).add(m["volume"])
    return sorted(r for r, vols in found.items() if vols == set(CONNECTIVITY_VOLUMES))
