"""CCF analyses: the structure ontology, structure masks and Mouse Connectivity unionizes.

Pure, lazy functions over the Datasets of :mod:`abo_lake.sources.ccf` (``ALLEN_DATA.md`` §4):

- the ontology (kind ``ccf_structures``) as an :class:`Ontology`: ids, acronyms, ancestors and
  descendants (from ``structure_id_path``), colours (defined in :mod:`abo_lake.ontology`,
  re-exported here);
- annotation volumes (kind ``ccf_volume``, multiscale DataTree levels): :func:`structure_mask`
  (boolean lookup-table gathers), :func:`structure_at` (reads only the chunks holding the
  points), :func:`voxel_counts` and :func:`choose_level`;
- connectivity experiments (kind ``connectivity_experiment``): :func:`unionize` gives AllenSDK's
  structure unionize records in one pass over the chunks holding labels (sums per run of equal
  compact label keys per chunk, then a propagation to ancestors), :func:`projection_matrix`
  the matrix of ``MouseConnectivityCache.get_projection_matrix``.

Hemispheres follow AllenSDK: left (``hemisphere_id`` 1) is LR index < ``round(n_lr / 2)``,
right is 2 and both is 3.

The ontology is small and is loaded into memory when an :class:`Ontology` is built; the volumes
stay lazy (dask) until the caller computes. Volumes opened from the lake (one dask task per
~1 MB stored chunk, whose scheduling costs more than its decoding) are read in slabs: one task
per run of stored chunks along DV/LR within one AP block, about 8 MB per array (``_slabs``);
per-voxel work still runs on pieces of about a chunk, so memory is a few chunks per thread.

Schedulers. :func:`structure_at` from the lake uses no dask: a point query reads a few chunks,
and building, scheduling and (in a fresh process) dask's import of ``distributed`` would cost
more than decoding them. The eager analyses (:func:`unionize`, :func:`projection_matrix`,
:func:`voxel_counts`) compute once, on the lake's rule for eager analyses
(:func:`abo_lake.scheduling.eager_scheduler`: the caller's ``dask.config`` scheduler or
distributed Client, else local threads without importing ``distributed``). Masks and
:func:`direct_unionize` stay lazy dask arrays, computed however the caller computes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from xarray.core import indexing as xr_indexing

from abo_lake.errors import SchemaError, StructureNotFoundError
from abo_lake.ontology import (
    Ontology,
    _ontology,
    ancestor_ids,
    descendant_ids,
    rgb_triplet,
    structure_id,
)
from abo_lake.scheduling import compute
from abo_lake.schema import validate

__all__ = [
    "HEMISPHERE_IDS",
    "SUMMARY_STRUCTURE_SET_ID",
    "UNIONIZE_FIELDS",
    "Ontology",
    "StructureNotFoundError",
    "ancestor_ids",
    "choose_level",
    "descendant_ids",
    "direct_unionize",
    "levels",
    "make_structure_mask",
    "many_structure_masks",
    "projection_matrix",
    "rgb_triplet",
    "structure_at",
    "structure_id",
    "structure_mask",
    "unionize",
    "voxel_counts",
]

#: AllenSDK hemisphere ids: 1 = left, 2 = right, 3 = both.
HEMISPHERE_IDS = (1, 2, 3)
#: MouseConnectivityCache's summary structure set: the default projection structures.
SUMMARY_STRUCTURE_SET_ID = 167587189
#: Columns of :func:`unionize`, in AllenSDK's names.
UNIONIZE_FIELDS = (
    "experiment_id",
    "hemisphere_id",
    "structure_id",
    "is_injection",
    "sum_pixels",
    "sum_projection_pixels",
    "sum_pixel_intensity",
    "sum_projection_pixel_intensity",
    "projection_density",
    "projection_energy",
    "projection_intensity",
    "volume",
    "projection_volume",
    "normalized_projection_volume",
    "max_voxel_density",
    "max_voxel_x",
    "max_voxel_y",
    "max_voxel_z",
)
_DIMS = ("ap", "dv", "lr")
_HLABEL = {1: "-L", 2: "-R", 3: ""}
_LUT_IDS = 2**16  # ids below this get a dense lookup table (at most 64 kB per mask)
_PIECE_VOXELS = 2**16  # voxels per LUT gather (_in_lut): the gather's temporaries stay in cache
_NONE = np.iinfo(np.int64).max  # "no position" in per-key first positions
_SLAB_BYTES = 8 * 2**20  # bytes of one array per dask task (several stored chunks; _slabs)
# per-voxel sums of one chunk: injection record, then projection record
_SUMS = ("sum_pixels", "sum_projection_pixels", "sum_projection_pixel_intensity",
         "sum_pixel_intensity")  # fmt: skip
_NSUM = 2 * len(_SUMS)
_NSTAT = _NSUM + 4  # + (max density, flat index) of the injection and the projection record


# -- volumes -------------------------------------------------------------------------------------


def levels(tree: xr.DataTree) -> dict[float, str]:
    """Resolution (µm) -> child name of a multiscale ``ccf_volume`` DataTree, finest first."""
    out = {}
    for name, child in tree.children.items():
        res = child.attrs.get("resolution_um")
        if res is None and "ap" in child.coords and child.sizes.get("ap", 0) > 1:
            res = float(child["ap"].values[1] - child["ap"].values[0])
        if res is not None:
            out[float(res)] = name
    if not out:
        raise SchemaError(
            f"this DataTree has no multiscale levels (children {list(tree.children)}); "
            "expected a 'ccf_volume' group like ccf/<version>/annotation"
        )
    return dict(sorted(out.items()))


def choose_level(tree: xr.DataTree, resolution_um: float | None = None) -> xr.Dataset:
    """The level to use for ``resolution_um``: the coarsest at least as fine as requested.

    Parameters
    ----------
    tree
        A multiscale ``ccf_volume`` DataTree (children ``"<res>um"``).
    resolution_um
        Wanted voxel size; None gives the finest level. When every level is coarser than
        requested, the finest one is returned.

    Returns
    -------
    xarray.Dataset
        The chosen level (lazy), a ``ccf_volume`` Dataset.
    """
    by_res = levels(tree)
    fine = [r for r in by_res if resolution_um is not None and r <= resolution_um + 1e-9]
    res = max(fine) if fine else min(by_res)
    return tree[by_res[res]].to_dataset()


def resolution_um(ds: xr.Dataset) -> float:
    """Isotropic voxel size (µm) of a volume Dataset, from attrs or the ``ap`` coordinate."""
    if "resolution_um" in ds.attrs:
        return float(ds.attrs["resolution_um"])
    ap = ds["ap"].values
    if ap.size < 2:
        raise SchemaError("cannot tell the resolution: no 'resolution_um' attr and one AP plane")
    return float(ap[1] - ap[0])


def _annotation(volume: xr.Dataset | xr.DataTree | xr.DataArray) -> xr.DataArray:
    """The annotation DataArray of a volume, dask-backed."""
    if isinstance(volume, xr.DataTree):
        volume = choose_level(volume)
    if isinstance(volume, xr.Dataset):
        validate(volume, "ccf_volume")
        if "annotation" not in volume:
            raise SchemaError(
                f"this ccf_volume holds {list(volume.data_vars)}, not 'annotation'; open "
                "ccf/<version>/annotation for structure masks and lookups"
            )
        volume = volume["annotation"]
    if tuple(volume.dims) != _DIMS:
        raise SchemaError(f"an annotation has dims {_DIMS}; found {volume.dims}")
    if not np.issubdtype(volume.dtype, np.integer):
        raise SchemaError(f"an annotation holds integer ids; found dtype {volume.dtype}")
    if not isinstance(volume.data, da.Array):
        chunks = volume.encoding.get("chunks") or 64
        volume = volume.copy(data=da.from_array(volume.data, chunks=chunks))
    return volume


def _source(data: da.Array) -> Any | None:
    """The array-like a dask array reads straight from, chunk by chunk, or None.

    ``Release.open`` and ``xr.open_zarr(chunks={})`` give each variable a two-layer graph: the
    backend array (a lazily indexed Zarr array) and one getter task per stored chunk. Other
    graphs (sliced, computed, in memory) give None.
    """
    layers = data.dask.layers
    if len(layers) != 2:
        return None
    originals = [dict(layer) for name, layer in layers.items() if name.startswith("original-")]
    if len(originals) != 1 or len(originals[0]) != 1:
        return None
    (src,) = originals[0].values()
    if getattr(src, "shape", None) != data.shape or not hasattr(src, "__getitem__"):
        return None
    return src


def _slab_chunks(chunks: tuple[tuple[int, ...], ...], itemsize: int) -> tuple[tuple[int, ...], ...]:
    """Dask chunks of whole runs of stored chunks, about :data:`_SLAB_BYTES` each.

    Stored chunks are merged along the last axis first, then the one before, but never along
    the first (AP): a slab is a few contiguous rows of chunks within one AP block, each stored
    chunk lies in exactly one slab, and a window of AP planes reads only its AP blocks.
    """
    out = list(chunks)
    size = itemsize * int(np.prod([max(c) for c in chunks]))
    for ax in reversed(range(1, len(chunks))):
        n = len(chunks[ax])
        k = int(max(1, min(n, _SLAB_BYTES // max(size, 1))))
        out[ax] = tuple(sum(chunks[ax][i : i + k]) for i in range(0, n, k))
        size *= k
        if k < n:
            break
    return tuple(out)


def _slabs(data: da.Array) -> da.Array:
    """``data`` read in slabs of stored chunks (:func:`_slab_chunks`): one dask task reads
    and decodes several stored chunks in turn, instead of one task per ~1 MB chunk, whose
    scheduling costs more than its decoding. Graphs that do not read straight from a stored
    array (:func:`_source`) are returned as they are."""
    src = _source(data)
    if src is None:
        return data
    slabs = _slab_chunks(data.chunks, data.dtype.itemsize)
    if slabs == data.chunks:
        return data
    # name=False: a random graph name (tokenizing would pickle the backend array)
    return da.from_array(src, chunks=slabs, name=False, meta=np.empty((0,) * data.ndim, data.dtype))


def _side(n_lr: int, hemisphere_id: int) -> slice:
    if hemisphere_id not in HEMISPHERE_IDS:
        raise ValueError(
            f"hemisphere_id must be 1 (left), 2 (right) or 3 (both); got {hemisphere_id!r}"
        )
    mid = int(np.round(n_lr / 2))
    return {1: slice(0, mid), 2: slice(mid, n_lr), 3: slice(0, n_lr)}[hemisphere_id]


def _lut(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense boolean LUT of the selected small ids, and the sorted large ones.

    The LUT covers ids below ``_LUT_IDS`` and ends with a False entry; the few late CCF ids
    (~10⁸) are looked up with ``searchsorted``.
    """
    small = table[table < _LUT_IDS]
    lut = np.zeros(int(small.max()) + 2 if small.size else 1, dtype=bool)
    lut[small] = True
    return lut, table[table >= _LUT_IDS]


def _in_lut(
    block: np.ndarray,
    lut: np.ndarray,
    big: np.ndarray,
    side: slice | None,
    block_info: dict | None = None,
) -> np.ndarray:
    """Voxels whose label is selected: LUT gathers over cache-sized pieces of the block.

    Ids past the LUT (and negative ones) clip onto its False end; voxels labelled
    ``>= _LUT_IDS`` are then looked up in ``big`` with ``searchsorted``. Pieces of about
    :data:`_PIECE_VOXELS` keep the index conversion ``take`` makes in the CPU cache.
    """
    out = np.empty(block.shape, dtype=bool)
    rows = max(1, _PIECE_VOXELS // max(1, int(np.prod(block.shape[1:]))))
    for i in range(0, block.shape[0], rows):
        piece, hit = block[i : i + rows], out[i : i + rows]
        lut.take(piece, mode="clip", out=hit)
        if big.size:
            cand = np.flatnonzero(piece >= _LUT_IDS)
            if cand.size:
                vals = piece.ravel()[cand]
                found = big[np.minimum(np.searchsorted(big, vals), big.size - 1)] == vals
                hit.ravel()[cand] = found
    if side is not None:  # one hemisphere
        start, stop = block_info[None]["array-location"][2]
        lr = np.arange(start, stop)
        out &= ((lr >= side.start) & (lr < side.stop))[None, None, :]
    return out


def structure_mask(
    volume: xr.Dataset | xr.DataTree,
    structure: int | str | Sequence[int | str],
    *,
    ontology: Ontology | xr.Dataset,
    descendants: bool = True,
    hemisphere_id: int = 3,
) -> xr.DataArray:
    """Lazy boolean mask of a structure (and, by default, all its descendants).

    AllenSDK's ``ReferenceSpace.make_structure_mask`` (``direct_only = not descendants``), as a
    bool volume computed chunk by chunk: one gather per chunk from a boolean lookup table of
    the selected ids, never a pass per structure.

    Parameters
    ----------
    volume
        An annotation ``ccf_volume`` Dataset (or its multiscale DataTree: the finest level).
    structure
        An id, an acronym, or a list of them (their union).
    ontology
        The ``ccf_structures`` Dataset or an :class:`Ontology`.
    descendants
        Include every descendant (True), or only voxels labelled with the id itself.
    hemisphere_id
        1 left, 2 right, 3 both.

    Returns
    -------
    xarray.DataArray
        bool, dims (ap, dv, lr), dask-backed, in slabs of whole stored chunks (see ``_slabs``).
    """
    onto = _ontology(ontology)
    ids = onto.structure_ids(structure)
    ann = _annotation(volume)
    lut, big = _lut(onto._selection(ids, descendants))
    side = _side(ann.sizes["lr"], hemisphere_id) if hemisphere_id != 3 else None
    data = da.map_blocks(
        _in_lut, _slabs(ann.data), lut=lut, big=big, side=side, meta=np.array((), dtype=bool)
    )
    attrs = {
        "structure_id": ids,
        "acronym": [onto.acronym(i) for i in ids],
        "descendants": bool(descendants),
        "hemisphere_id": int(hemisphere_id),
    }
    return xr.DataArray(data, coords=ann.coords, dims=_DIMS, name="structure_mask", attrs=attrs)


def make_structure_mask(
    volume: xr.Dataset | xr.DataTree,
    structure_ids: int | str | Sequence[int | str],
    direct_only: bool = False,
    *,
    ontology: Ontology | xr.Dataset,
) -> xr.DataArray:
    """AllenSDK's ``ReferenceSpace.make_structure_mask(structure_ids, direct_only=False)``.

    :func:`structure_mask` with AllenSDK's argument and dtype: uint8, 1 inside (lazy).
    """
    mask = structure_mask(volume, structure_ids, ontology=ontology, descendants=not direct_only)
    return mask.astype(np.uint8)


def many_structure_masks(
    volume: xr.Dataset | xr.DataTree,
    structure_ids: Sequence[int | str],
    output_cb: Callable[[int | str, Callable[[], xr.DataArray]], Any] | None = None,
    direct_only: bool = False,
    *,
    ontology: Ontology | xr.Dataset,
) -> Iterator[Any]:
    """AllenSDK's ``ReferenceSpace.many_structure_masks``: a generator of ``output_cb(id, fn)``
    where ``fn()`` makes that structure's :func:`make_structure_mask`; by default ``(id,
    mask)``."""
    onto = _ontology(ontology)

    def return_mask_cb(structure_id: int | str, fn: Callable[[], xr.DataArray]) -> Any:
        return structure_id, fn()

    callback = return_mask_cb if output_cb is None else output_cb
    for sid in structure_ids:
        yield callback(sid, partial(make_structure_mask, volume, [sid], direct_only, ontology=onto))


def structure_at(volume: xr.Dataset | xr.DataTree, points_um: Any) -> xr.DataArray:
    """Structure ids at points, reading only the chunks that hold them (lazy).

    From the lake (a volume opened by ``Release.open``/``open_zarr``), the result is a lazily
    indexed array, as ``xr.open_dataset`` gives without dask: nothing is read until its values
    are asked for, then one Zarr coordinate selection reads and decodes each chunk holding
    points once, concurrently, with no dask graph or scheduler (see :func:`_lazy_points`).
    Other volumes (in memory, or dask graphs that are not a plain read) give a dask array.

    Parameters
    ----------
    volume
        An annotation ``ccf_volume`` Dataset (or its DataTree: the finest level).
    points_um
        (n, 3) or (3,) array of (ap, dv, lr) positions in µm; a point falls in the voxel
        ``floor((p - origin) / resolution)``.

    Returns
    -------
    xarray.DataArray
        ``structure_id`` along ``point`` (0 = outside the brain), with the points as coords.

    Raises
    ------
    ValueError
        If points are not (n, 3) or lie outside the volume.
    """
    ann = _annotation(volume)
    pts = np.asarray(points_um, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.isfinite(pts).all():
        raise ValueError(f"points_um must be finite (n, 3) (ap, dv, lr) µm; got shape {pts.shape}")
    res = resolution_um(volume if isinstance(volume, xr.Dataset) else ann.to_dataset())
    origin = np.array([float(ann[d].values[0]) for d in _DIMS])
    idx = np.floor((pts - origin) / res).astype(np.int64)
    shape = np.array(ann.shape)
    bad = np.nonzero(((idx < 0) | (idx >= shape)).any(axis=1))[0]
    if bad.size:
        extent = (origin + shape * res).tolist()
        raise ValueError(
            f"{bad.size} of {len(pts)} points lie outside the volume (extent {origin.tolist()} to "
            f"{extent} µm), e.g. point {int(bad[0])} at {pts[bad[0]].tolist()}"
        )
    coords = {d: ("point", pts[:, k], {"units": "um"}) for k, d in enumerate(_DIMS)}
    lazy = _lazy_points(ann.data, idx) if len(pts) else None
    if lazy is not None:
        return xr.Dataset({"structure_id": lazy}, coords=coords)["structure_id"]
    if not len(pts):
        data = da.zeros(0, ann.dtype)
    else:
        data = ann.data.vindex[idx[:, 0], idx[:, 1], idx[:, 2]]
    return xr.DataArray(data, dims=("point",), coords=coords, name="structure_id")


def _lazy_points(data: da.Array, idx: np.ndarray) -> xr.Variable | None:
    """The values at voxel indices ``idx`` (n, 3) of a stored array, as a lazy Variable, or
    None when ``data`` is not a plain read of a stored array (:func:`_source`).

    The backend array behind the dask graph (xarray's lazily indexed Zarr array) is indexed
    with one vectorized (pointwise) indexer; xarray defers it and, when the values are asked
    for, hands it to Zarr's coordinate selection, which reads only the chunks holding points.
    Skipping dask here matters for a point query: building and scheduling a graph, and dask's
    import of ``distributed`` to look for a client, cost more than decoding the chunks.
    """
    src = _source(data)
    backend = getattr(src, "array", None)
    if not isinstance(backend, xr_indexing.ExplicitlyIndexed):
        return None
    # kept lazy (an explicitly indexed backend array); the values, once read, are held
    stored = xr.Variable(_DIMS, xr_indexing.MemoryCachedArray(backend))
    point = {d: xr.Variable("point", idx[:, k]) for k, d in enumerate(_DIMS)}
    return stored.isel(point)


def _unique_counts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(block, return_counts=True)


def _merge_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> pd.Series:
    ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
    counts = np.concatenate([p[1] for p in parts]).astype(np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    total = np.bincount(inv, weights=counts, minlength=uniq.size).astype(np.int64)
    return pd.Series(total, index=pd.Index(uniq, name="structure_id"), name="voxel_count")


def voxel_counts(
    volume: xr.Dataset | xr.DataTree,
    *,
    ontology: Ontology | xr.Dataset | None = None,
    descendants: bool = False,
    hemisphere_id: int = 3,
) -> pd.Series:
    """Voxels per structure id (eager: one pass over the chunks, one dask compute).

    Parameters
    ----------
    volume
        An annotation ``ccf_volume`` Dataset (or its DataTree: the finest level).
    ontology
        Needed with ``descendants=True``.
    descendants
        Count each structure with its descendants (every ontology structure with voxels).
    hemisphere_id
        1 left, 2 right, 3 both.

    Returns
    -------
    pandas.Series
        ``voxel_count`` indexed by ``structure_id`` (label 0, outside the brain, left out).
    """
    ann = _annotation(volume)
    arr = ann.data[:, :, _side(ann.sizes["lr"], hemisphere_id)]
    parts = [dask.delayed(_unique_counts)(b) for b in arr.to_delayed().ravel()]
    (counts,) = compute(dask.delayed(_merge_counts)(parts))
    counts = counts.drop(0, errors="ignore")
    if not descendants:
        return counts
    if ontology is None:
        raise ValueError("descendants=True needs the ontology (ontology=<ccf_structures>)")
    onto = _ontology(ontology)
    direct = counts.reindex(onto.ids, fill_value=0).to_numpy().astype(np.float64)
    total = np.rint(onto._propagate_sum(direct)).astype(np.int64)
    out = pd.Series(total, index=pd.Index(onto.ids, name="structure_id"), name="voxel_count")
    return out[out > 0]


# -- connectivity unionizes -----------------------------------------------------------------------


def _key_lut(table: np.ndarray) -> np.ndarray:
    """Dense label -> key table of the ids below ``_LUT_IDS`` (see :func:`_label_keys`)."""
    small = table < _LUT_IDS
    lut = np.ones(int(table[small].max()) + 2 if small.any() else 2, dtype=np.intp)
    lut[0] = 0
    lut[table[small]] = np.flatnonzero(small) + 2
    return lut


def _label_keys(ann: np.ndarray, table: np.ndarray, key_lut: np.ndarray) -> np.ndarray:
    """Key of each voxel's label: 0 outside (label 0), 1 a label not in the sorted ``table``,
    ``2 + i`` for ``table[i]``; one gather from ``key_lut`` (:func:`_key_lut`), ids past it
    clip onto its last entry (unknown), then a ``searchsorted`` for ids ``>= _LUT_IDS``."""
    key = key_lut.take(ann.astype(np.intp, copy=False), mode="clip")
    if ann.dtype.kind == "i" and ann.min() < 0:  # clipped onto label 0: unknown, not outside
        key[ann < 0] = 1
    large = ann >= _LUT_IDS
    if large.any():
        vals = ann[large]
        pos = np.searchsorted(table, vals)
        found = table[np.minimum(pos, table.size - 1)] == vals
        key[large] = np.where(found, pos + 2, 1)
    return key


def _first_maxima(
    key: np.ndarray, dens: np.ndarray, first: np.ndarray, n_keys: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per key: the largest density and the first position holding it (:data:`_NONE` if the
    key has no voxel); ``first`` is each key's first position.

    Densities are mostly 0 (no signal): when none is negative, a key's maximum is 0 at its
    first voxel unless it has a positive voxel, so only the positive voxels are visited.
    """
    if dens.size and dens.min() >= 0:
        best = np.where(first != _NONE, 0.0, -np.inf)
        pos = np.flatnonzero(dens > 0)
        at = first.copy()
        if pos.size:
            kp, dp = key[pos], dens[pos]
            np.maximum.at(best, kp, dp)
            top = dp == best[kp]
            at[kp] = _NONE  # repeated keys: the same value, no np.unique needed
            np.minimum.at(at, kp[top], pos[top])
        return best, at
    best = np.full(n_keys, -np.inf)  # negative (or NaN) densities: visit every voxel
    np.maximum.at(best, key, dens)
    top = np.flatnonzero(dens == best[key])
    at = np.full(n_keys, _NONE)
    np.minimum.at(at, key[top], top)
    return best, at


def _slab_stats(
    ann: np.ndarray,
    *arrays: np.ndarray,
    piece: tuple[int, int, int],
    sources: Sequence[Any] | None = None,
    block_info: dict | None = None,
    **options: Any,
) -> np.ndarray:
    """:func:`_chunk_stats` of a slab, one ``piece`` (a stored chunk's shape) at a time, so the
    per-voxel temporaries stay the size of one chunk; shape (1, 1, 1, n_keys, _NSTAT).

    With ``sources`` (the experiment's stored arrays, :func:`_source`) instead of ``arrays``,
    a piece's experiment chunks are read only when its annotation has a label and its data
    mask a valid voxel: the chunks outside the brain are never decoded.
    """
    loc = block_info[0]["array-location"]
    out = None
    for start in np.ndindex(*(-(-n // p) for n, p in zip(ann.shape, piece))):
        sub = tuple(slice(i * p, (i + 1) * p) for i, p in zip(start, piece))
        labels = ann[sub]
        if not labels.any():  # outside the brain (or never stored): nothing to add
            continue
        where = [(lo + s.start, lo + min(s.stop, hi - lo)) for (lo, hi), s in zip(loc, sub)]
        if sources is None:
            parts = [a[sub] for a in arrays]
        else:
            box = tuple(slice(lo, hi) for lo, hi in where)
            mask = np.asarray(sources[3][box])
            if not (mask > 0).any():
                continue
            parts = [mask if k == 3 else np.asarray(s[box]) for k, s in enumerate(sources)]
        part = _chunk_stats(labels, *parts, where=where, **options)
        out = part if out is None else _merge_stats(out, part)
    if out is None:
        out = _empty_stats(2 * (options["table"].size + 2))
    return out[None, None, None]


def _empty_stats(n_keys: int) -> np.ndarray:
    """Stats of no voxel: sums 0, max density -inf at flat index +inf."""
    out = np.zeros((n_keys, _NSTAT))
    out[:, _NSUM::2] = -np.inf
    out[:, _NSUM + 1 :: 2] = np.inf
    return out


def _merge_stats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two pieces' stats as one: sums added; maxima the larger, the lower index on ties."""
    out = a.copy()
    out[:, :_NSUM] += b[:, :_NSUM]
    for k in (_NSUM, _NSUM + 2):
        take = (b[:, k] > a[:, k]) | ((b[:, k] == a[:, k]) & (b[:, k + 1] < a[:, k + 1]))
        out[take, k : k + 2] = b[take, k : k + 2]
    return out


def _chunk_stats(
    ann: np.ndarray,
    pd_: np.ndarray,
    inj_d: np.ndarray,
    inj_f: np.ndarray,
    mask: np.ndarray,
    *energies: np.ndarray,
    table: np.ndarray,
    key_lut: np.ndarray,
    mid: int,
    shape: tuple[int, int, int],
    where: list[tuple[int, int]],
) -> np.ndarray:
    """Per (label key, side) sums and maxima of one chunk at ``where`` (global bounds); shape
    (n_keys, _NSTAT).

    One selection of the counted voxels (labelled, inside the data mask), then one combined
    key per selected voxel (``2 * label key + side``); each distinct quantity is summed over
    the runs of equal keys (``np.add.reduceat`` of the float32 values gathered once) and the
    runs per key with a small ``bincount``; ``sum(1 - f)`` is ``count - sum(f)``, so no
    whole-chunk float64 copy is made but the projection's ``p - d``.
    """
    n_keys = 2 * (table.size + 2)
    out = _empty_stats(n_keys)
    sel = np.flatnonzero((ann.ravel() != 0) & (mask.ravel() > 0))
    if not sel.size:  # AllenSDK: voxels outside the data mask are unannotated
        return out
    key = 2 * _label_keys(ann.ravel()[sel], table, key_lut)
    (l0, l1) = where[2]
    if l0 >= mid:
        key += 1
    elif l1 > mid:  # the chunk straddles the midline
        key += (sel % (l1 - l0)) >= (mid - l0)

    # keys run in long stretches along LR: each quantity is summed per run (one reduceat
    # pass, float32 accumulated in float64), then the runs per key (a small bincount)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    run_key = key[starts]

    def total(w: np.ndarray) -> np.ndarray:
        runs = np.add.reduceat(w, starts, dtype=np.float64)
        return np.bincount(run_key, weights=runs, minlength=n_keys)

    if sel.size == ann.size:  # every voxel counted: no gather
        f_, d_, p_ = (a.ravel() for a in (inj_f, inj_d, pd_))
    else:
        f_, d_, p_ = (a.ravel()[sel] for a in (inj_f, inj_d, pd_))
    n = np.bincount(run_key, weights=np.diff(np.r_[starts, key.size]), minlength=n_keys)
    s_f, s_d = total(f_), total(d_)
    s_diff = total(np.subtract(p_, d_, dtype=np.float64))
    out[:, 0], out[:, 1], out[:, 4], out[:, 5] = s_f, s_d, n - s_f, s_diff
    if energies:
        e_inj, e_all, i_inj, i_all = (e.ravel()[sel] for e in energies)
        out[:, 2], out[:, 3] = total(e_inj), total(i_inj)
        out[:, 6] = total(np.subtract(e_all, e_inj, dtype=np.float64))
        out[:, 7] = total(np.subtract(i_all, i_inj, dtype=np.float64))
    else:  # the intensities are the densities
        out[:, 2] = out[:, 3] = s_d
        out[:, 6] = out[:, 7] = s_diff
    # the first voxel of each key (positions in ``sel``, which runs in C order)
    first = np.full(n_keys, _NONE)
    np.minimum.at(first, run_key, starts)
    (a0, _), (d0, _), _ = where
    for k in range(2):
        if k == 0:
            best, at = _first_maxima(key, d_, first, n_keys)
        elif p_.min() >= 0 and f_.max() <= 1:  # densities >= 0: visit the positive ones only
            pos = np.flatnonzero(p_ > 0)
            dens = np.zeros(sel.size)
            dens[pos] = p_[pos] * (1.0 - f_[pos].astype(np.float64))
            best, at = _first_maxima(key, dens, first, n_keys)
        else:
            dens = p_.astype(np.float64) * (1.0 - f_.astype(np.float64))
            best, at = _first_maxima(key, dens, first, n_keys)
        hit = at != _NONE
        i, j, m = np.unravel_index(sel[at[hit]], ann.shape)
        flat = np.full(n_keys, np.inf)
        flat[hit] = ((i + a0) * shape[1] + (j + d0)) * shape[2] + (m + l0)
        out[:, _NSUM + 2 * k] = best
        out[:, _NSUM + 2 * k + 1] = flat
    return out


def _experiment_arrays(
    experiment: xr.Dataset, annotation: xr.Dataset | xr.DataTree | xr.DataArray
) -> tuple[xr.DataArray, list[da.Array], float]:
    validate(experiment, "connectivity_experiment")
    res = resolution_um(experiment)
    if isinstance(annotation, xr.DataTree):
        by_res = levels(annotation)
        if res not in by_res:
            raise ValueError(
                f"the annotation has no {res:g} µm level (it has {sorted(by_res)}); the "
                "experiment and the annotation must share one grid"
            )
        annotation = annotation[by_res[res]].to_dataset()
    ann = _annotation(annotation)
    if ann.shape != experiment["projection_density"].shape:
        raise ValueError(
            f"annotation shape {ann.shape} differs from the experiment grid "
            f"{experiment['projection_density'].shape} ({res:g} µm); use the annotation level "
            "of the experiment's resolution"
        )
    names = ["projection_density", "injection_density", "injection_fraction", "data_mask"]
    energy = ["injection_energy", "projection_energy"]
    intensity = ["injection_sum_pixel_intensities", "sum_pixel_intensities"]
    if all(n in experiment for n in energy):
        names += energy + (intensity if all(n in experiment for n in intensity) else energy)
    arrays = []
    for n in names:
        a = experiment[n].data
        a = a if isinstance(a, da.Array) else da.from_array(a, chunks=ann.data.chunks)
        arrays.append(a.rechunk(ann.data.chunks))
    return ann, arrays, res


def direct_unionize(
    experiment: xr.Dataset,
    *,
    annotation: xr.Dataset | xr.DataTree | xr.DataArray,
    ontology: Ontology | xr.Dataset,
) -> xr.Dataset:
    """Lazy per-label, per-hemisphere sums of one experiment (the input of :func:`unionize`).

    One task per slab of the annotation's stored chunks (one per chunk for in-memory data),
    chunk by chunk; from the lake, a chunk's experiment grids are read only where the
    annotation has labels (the ~40% of chunks outside the brain are never decoded). The
    counted voxels' labels are mapped to compact keys with a lookup table (``searchsorted``
    for the large ids), each sum is a ``reduceat`` over runs of equal keys then a small
    ``bincount``, each maximum one ``maximum.at`` over the voxels with signal; the results
    are summed (maxima: max, ties -> lowest flat index).

    Returns
    -------
    xarray.Dataset
        Dims ``label`` (the ontology ids, plus -1 for labels unknown to it) and ``hemisphere_id``
        (1, 2); variables ``injection.<sum>`` and ``projection.<sum>`` for the four AllenSDK
        sums, and ``<record>.max_voxel_density`` / ``<record>.max_voxel_index`` (C-order flat).
    """
    onto = _ontology(ontology)
    ann, arrays, _ = _experiment_arrays(experiment, annotation)
    table = np.sort(onto.ids)
    n_keys = 2 * (table.size + 2)
    sources = [ann.data, *arrays]
    stored = None
    if all(a.chunks == ann.data.chunks and _source(a) is not None for a in sources):
        # the annotation in slabs of stored chunks; the experiment's chunks read in the slab's
        # task, only where the annotation has labels (see _slab_stats)
        stored = [_source(a) for a in arrays]
        sources = [_slabs(ann.data)]
    stats = da.map_blocks(
        _slab_stats,
        *sources,
        sources=stored,
        name=f"unionize-{uuid.uuid4().hex}",  # not tokenized: that would pickle the stores
        piece=tuple(max(c) for c in ann.data.chunks),
        table=table,
        key_lut=_key_lut(table),
        mid=int(np.round(ann.sizes["lr"] / 2)),
        shape=ann.shape,
        new_axis=[3, 4],
        chunks=(*((1,) * len(c) for c in sources[0].chunks), (n_keys,), (_NSTAT,)),
        meta=np.array((), dtype=np.float64),
    )
    sums = stats[..., :_NSUM].sum(axis=(0, 1, 2))
    best = stats[..., _NSUM::2].max(axis=(0, 1, 2))
    at = da.where(stats[..., _NSUM::2] == best, stats[..., _NSUM + 1 :: 2], np.inf)
    at = at.min(axis=(0, 1, 2))
    # keys 2*k + side; drop k = 0 (outside); k = 1 (unknown labels) becomes label -1
    label = np.concatenate([[-1], table])
    dims = ("label", "hemisphere_id")
    data_vars = {}
    for r, record in enumerate(("injection", "projection")):
        for k, name in enumerate(_SUMS):
            v = sums[:, r * len(_SUMS) + k].reshape(-1, 2)[1:]
            data_vars[f"{record}.{name}"] = (dims, v)
        data_vars[f"{record}.max_voxel_density"] = (dims, best[:, r].reshape(-1, 2)[1:])
        data_vars[f"{record}.max_voxel_index"] = (dims, at[:, r].reshape(-1, 2)[1:])
    attrs = {
        "experiment_id": int(experiment.attrs.get("experiment_id", experiment.attrs.get("id", -1))),
        "resolution_um": resolution_um(experiment),
        "shape": list(ann.shape),
    }
    coords = {"label": label, "hemisphere_id": [1, 2]}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _records(direct: xr.Dataset, onto: Ontology) -> pd.DataFrame:
    """AllenSDK unionize records from computed direct sums (propagated to ancestors)."""
    res = float(direct.attrs["resolution_um"])
    scale = (res / 1000.0) ** 3
    shape = tuple(direct.attrs["shape"])
    labels = direct["label"].values
    rows = np.searchsorted(labels, onto.ids)  # labels are [-1, *sorted ids]
    total_injection = float(direct["injection.sum_projection_pixels"].values.sum()) * scale
    frames = []
    for record in ("injection", "projection"):
        sums = {n: direct[f"{record}.{n}"].values[rows] for n in _SUMS}  # (n_ids, 2)
        best = direct[f"{record}.max_voxel_density"].values[rows]
        at = direct[f"{record}.max_voxel_index"].values[rows]
        for hid in HEMISPHERE_IDS:
            cols = [0, 1] if hid == 3 else [hid - 1]
            s = {n: onto._propagate_sum(v[:, cols].sum(axis=1)) for n, v in sums.items()}
            b, a = best[:, cols[0]], at[:, cols[0]]
            if len(cols) == 2:  # both sides: the larger, the lower index on ties
                right = (best[:, 1] > b) | ((best[:, 1] == b) & (at[:, 1] < a))
                b, a = np.where(right, best[:, 1], b), np.where(right, at[:, 1], a)
            top, a = onto._propagate_max(b, a)
            has = s["sum_projection_pixels"] > 0  # AllenSDK sets the max voxel only then
            top = np.where(has, top, 0.0)
            idx = np.where(has & np.isfinite(a), a, 0).astype(np.int64)
            xyz = np.unravel_index(idx, shape)
            px, ppx = s["sum_pixels"], s["sum_projection_pixels"]
            ppi = s["sum_projection_pixel_intensity"]
            frame = pd.DataFrame(
                {
                    "experiment_id": direct.attrs["experiment_id"],
                    "hemisphere_id": hid,
                    "structure_id": onto.ids,
                    "is_injection": record == "injection",
                    "sum_pixels": px,
                    "sum_projection_pixels": ppx,
                    "sum_pixel_intensity": s["sum_pixel_intensity"],
                    "sum_projection_pixel_intensity": ppi,
                    "projection_density": _ratio(ppx, px),
                    "projection_energy": _ratio(ppi, px),
                    "projection_intensity": _ratio(ppi, ppx),
                    "volume": px * scale,
                    "projection_volume": ppx * scale,
                    "normalized_projection_volume": (
                        ppx * scale / total_injection if total_injection > 0 else 0.0
                    ),
                    "max_voxel_density": top,
                    "max_voxel_x": xyz[0] * res,
                    "max_voxel_y": xyz[1] * res,
                    "max_voxel_z": xyz[2] * res,
                }
            )
            frames.append(frame[frame["sum_pixels"] > 0])
    out = pd.concat(frames, ignore_index=True)
    return out.astype({"experiment_id": np.int64, "hemisphere_id": np.int64})


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (AllenSDK leaves such ratios at their initial 0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _filter(
    records: pd.DataFrame,
    onto: Ontology,
    structure_ids: Sequence[int | str] | None,
    include_descendants: bool,
    hemisphere_ids: Sequence[int] | None,
    is_injection: bool | None,
) -> pd.DataFrame:
    keep = np.ones(len(records), dtype=bool)
    if structure_ids is not None:
        ids = onto.structure_ids(structure_ids)
        ids = onto._selection(ids, include_descendants) if include_descendants else ids
        keep &= records["structure_id"].isin(ids).to_numpy()
    if hemisphere_ids is not None:
        bad = set(hemisphere_ids) - set(HEMISPHERE_IDS)
        if bad:
            raise ValueError(f"hemisphere_ids must be among {HEMISPHERE_IDS}; got {sorted(bad)}")
        keep &= records["hemisphere_id"].isin(hemisphere_ids).to_numpy()
    if is_injection is not None:
        keep &= (records["is_injection"] == bool(is_injection)).to_numpy()
    return records[keep].reset_index(drop=True)


def unionize(
    experiment: xr.Dataset,
    is_injection: bool | None = None,
    structure_ids: Sequence[int | str] | None = None,
    include_descendants: bool = False,
    hemisphere_ids: Sequence[int] | None = None,
    *,
    annotation: xr.Dataset | xr.DataTree | xr.DataArray,
    ontology: Ontology | xr.Dataset,
) -> pd.DataFrame:
    """AllenSDK structure unionize records of one connectivity experiment.

    ``MouseConnectivityCache.get_structure_unionizes(experiment_ids, is_injection=None,
    structure_ids=None, include_descendants=False, hemisphere_ids=None)`` for one experiment,
    with its filters in the same positions; the cache's annotation and ontology are keywords.

    Reads every chunk once (one dask compute of :func:`direct_unionize`), then propagates the
    per-label sums to every ancestor in the ontology, as AllenSDK's ``TissuecyteUnionizer``.

    Definitions (AllenSDK ``tissuecyte_unionize_record``), on the downloadable grids: one voxel
    with ``data_mask > 0`` is one "pixel" (``sum_pixels`` per voxel = 1; masked-out voxels are
    unannotated); the injection record sums ``injection_fraction`` (pixels) and
    ``injection_density`` (projection pixels), the projection record sums ``1 -
    injection_fraction`` and ``projection_density - injection_density`` (the injection region is
    subtracted). Intensities use ``injection_energy``/``projection_energy`` (and
    ``*sum_pixel_intensities``) when the Dataset has them; the public grids do not, so the
    density stands in for the energy (each projection pixel has intensity 1): then
    ``projection_energy == projection_density`` and ``projection_intensity == 1``. Ratios are 0
    where the denominator is 0; ``normalized_projection_volume`` divides by the injection
    ``projection_volume`` summed over both hemispheres; the max voxel (``max_voxel_x/y/z`` =
    AP/DV/LR index × resolution, µm) is the densest (projection: ``density × (1 -
    injection_fraction)``) voxel, first in C order on ties, and 0 when there is no signal.
    Records with ``sum_pixels == 0`` are dropped.

    Parameters
    ----------
    experiment
        A ``connectivity_experiment`` Dataset.
    annotation
        The annotation on the same grid: a ``ccf_volume`` Dataset, or the multiscale DataTree
        (the level at the experiment's resolution is used).
    ontology
        The ``ccf_structures`` Dataset or an :class:`Ontology`.
    is_injection, structure_ids, include_descendants, hemisphere_ids
        Filters, as AllenSDK's ``get_structure_unionizes`` (None keeps all).

    Returns
    -------
    pandas.DataFrame
        One row per (hemisphere_id, structure_id, is_injection); columns :data:`UNIONIZE_FIELDS`.
    """
    onto = _ontology(ontology)
    direct = direct_unionize(experiment, annotation=annotation, ontology=onto)
    (direct,) = compute(direct)
    records = _records(direct, onto)
    return _filter(records, onto, structure_ids, include_descendants, hemisphere_ids, is_injection)


def projection_matrix(
    experiments: Sequence[xr.Dataset] | Mapping[int, xr.Dataset],
    projection_structure_ids: Sequence[int | str] | None = None,
    hemisphere_ids: Sequence[int] | None = None,
    parameter: str = "projection_volume",
    *,
    annotation: xr.Dataset | xr.DataTree | xr.DataArray,
    ontology: Ontology | xr.Dataset,
) -> dict[str, Any]:
    """AllenSDK's ``get_projection_matrix``: one row per experiment, one column per structure.

    ``MouseConnectivityCache.get_projection_matrix(experiment_ids, projection_structure_ids=None,
    hemisphere_ids=None, parameter="projection_volume")`` with the experiments' Datasets for
    their ids and the same positions. All experiments are read in one dask compute.

    Parameters
    ----------
    experiments
        ``connectivity_experiment`` Datasets (a list, or experiment id -> Dataset).
    annotation, ontology
        As :func:`unionize`.
    projection_structure_ids
        Projection structures (ids or acronyms), each with its descendants' signal; None: the
        ontology's summary structures (:data:`SUMMARY_STRUCTURE_SET_ID`, AllenSDK's default),
        which needs an ontology converted with ``structure_set_ids``.
    hemisphere_ids
        Column blocks (1 left, 2 right, 3 both); as AllenSDK, the hemispheres of these that have
        records, in ascending order; None: all three.
    parameter
        A numeric column of :func:`unionize` (projection records).

    Returns
    -------
    dict
        ``matrix`` (n_experiments × n_structures·n_hemispheres, NaN where the experiment has no
        record: the structure has no pixels there), ``rows`` (experiment ids) and ``columns``
        (dicts of hemisphere_id, structure_id, label as ``"VISp-L"``).
    """
    onto = _ontology(ontology)
    if parameter not in UNIONIZE_FIELDS[4:]:
        raise ValueError(f"parameter must be one of {list(UNIONIZE_FIELDS[4:])}; got {parameter!r}")
    if isinstance(experiments, Mapping):
        exp_ids, exps = list(experiments), list(experiments.values())
    else:
        exps = list(experiments)
        exp_ids = [
            int(e.attrs.get("experiment_id", e.attrs.get("id", i))) for i, e in enumerate(exps)
        ]
    if not exps:
        raise ValueError("projection_matrix needs at least one experiment")
    if projection_structure_ids is None:
        summary = onto.get_structures_by_set_id([SUMMARY_STRUCTURE_SET_ID])
        projection_structure_ids = [n["id"] for n in summary]
    sids = onto.structure_ids(projection_structure_ids)
    hemis = list(HEMISPHERE_IDS if hemisphere_ids is None else hemisphere_ids)
    directs = compute(*[direct_unionize(e, annotation=annotation, ontology=onto) for e in exps])
    recs = [_filter(_records(d, onto), onto, sids, False, hemis, False) for d in directs]
    present = sorted({int(h) for rec in recs for h in rec.hemisphere_id})  # AllenSDK: a set
    columns = [
        {"hemisphere_id": h, "structure_id": s, "label": onto.acronym(s) + _HLABEL[h]}
        for h in present
        for s in sids
    ]
    matrix = np.full((len(exps), len(columns)), np.nan)
    for r, rec in enumerate(recs):
        value = {(h, s): v for h, s, v in zip(rec.hemisphere_id, rec.structure_id, rec[parameter])}
        for c, col in enumerate(columns):
            matrix[r, c] = value.get((col["hemisphere_id"], col["structure_id"]), np.nan)
    return {"matrix": matrix, "rows": exp_ids, "columns": columns}
