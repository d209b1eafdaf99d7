"""Fidelity checks: does the lake hold exactly what the source HDF5 file holds?

Every conversion runs two checks and fails if either reports a problem:

- :func:`check_raw` compares each dataset a reader did not map with the ``raw`` DataTree made
  by :func:`abo_lake.sources.hdf5_raw.read_raw` (bit-equal numbers, equal strings and reference
  paths, equal shapes, attrs and links);
- :func:`check_mapped` compares each mapped dataset with the curated variable it became, after
  the reader's transform (a transpose, a scale, ...).

Both stream big datasets block by block along their first axis, so they never hold a whole
multi-GB array. :func:`assert_faithful` turns their findings into an
:class:`~abo_lake.errors.IntegrityError`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from abo_lake.errors import IntegrityError
from abo_lake.sources.hdf5_raw import Translator, escape_name, iter_members, matches, node_path

__all__ = ["assert_faithful", "blockwise", "check_mapped", "check_raw"]

#: Source bytes read per block when streaming a dataset.
BLOCK_BYTES = 64 << 20
#: Problems listed by :func:`assert_faithful` before "... and N more".
MAX_LISTED = 10

Transform = Callable[[np.ndarray], Any]


def blockwise(func: Transform) -> Transform:
    """Mark a transform as row-preserving, so :func:`check_mapped` can stream it.

    A row-preserving transform maps rows ``i0:i1`` of the source (first axis) to rows
    ``i0:i1`` of the stored variable, e.g. a scale or a dtype cast (not a transpose).

    Examples
    --------
    >>> to_volts = blockwise(lambda a: a * 0.195e-6)
    >>> to_volts.abo_lake_blockwise
    True
    """

    @functools.wraps(func)
    def wrapper(arr: np.ndarray) -> Any:
        return func(arr)

    wrapper.abo_lake_blockwise = True  # type: ignore[attr-defined]
    return wrapper


def assert_faithful(problems: Sequence[str], *, source: str | Path) -> None:
    """Raise if a fidelity check found problems.

    Raises
    ------
    IntegrityError
        Listing up to ten problems and how many more there are.
    """
    if not problems:
        return
    shown = "\n  ".join(problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise IntegrityError(
        f"{source}: the lake does not hold the source faithfully; {len(problems)} "
        f"problem(s):\n  {shown}{tail}\nThe reader or the storage lost or changed data; "
        "fix it and convert again."
    )


# ------------------------------------------------------------------------------ raw check


def check_raw(path: str | Path, tree: xr.DataTree, *, skip: Sequence[str] = ()) -> list[str]:
    """Compare every non-skipped dataset, group, attribute and link of ``path`` with ``tree``.

    Parameters
    ----------
    path
        The source HDF5 file.
    tree
        What :func:`~abo_lake.sources.hdf5_raw.read_raw` made of it, possibly re-opened from
        storage (lazy variables are read block by block).
    skip
        The globs given to ``read_raw``: matching datasets are not expected in ``tree``.

    Returns
    -------
    list of str
        Human-readable problems, each starting with the HDF5 path; empty if faithful.

    Examples
    --------
    >>> tree = read_raw("f.nwb")  # doctest: +SKIP
    >>> check_raw("f.nwb", tree)  # doctest: +SKIP
    []
    """
    problems: list[str] = []
    if tree.attrs.get("source_file") != Path(path).name:
        found = tree.attrs.get("source_file")
        problems.append(f"/: tree made from {found!r}, expected source_file {Path(path).name!r}")
    with h5py.File(path, "r") as f:
        tr = Translator(f)
        problems += _check_attrs(tr, f, tree, "/")
        for m in iter_members(f):
            parent = _node(tree, m.parent)
            if parent is None:
                continue  # reported when the group itself was met
            if m.kind == "group":
                node = _node(tree, m.path)
                if node is None:
                    problems.append(f"{m.path}: group missing; expected node {node_path(m.path)!r}")
                else:
                    problems += _check_attrs(tr, f[m.path], node, m.path)
            elif m.kind == "dataset":
                if not matches(m.path, skip):
                    problems += _check_dataset(tr, f[m.path], m.path, parent)
            else:
                key = f"abo_lake_link.{m.name}"
                want = f"{m.kind}:{m.target}"
                if parent.attrs.get(key) != want:
                    found = parent.attrs.get(key)
                    problems.append(f"{m.path}: link recorded as {found!r}, expected {want!r}")
    return problems


def _node(tree: xr.DataTree, hdf5_path: str) -> xr.DataTree | None:
    try:
        return tree[node_path(hdf5_path)] if hdf5_path != "/" else tree
    except KeyError:
        return None


def _check_attrs(tr: Translator, obj: h5py.HLObject, holder: Any, where: str) -> list[str]:
    problems = []
    missing = []
    for key, want in tr.attrs(obj).items():
        if key not in holder.attrs:
            missing.append(key)
        elif _json(holder.attrs[key]) != _json(want):
            found = holder.attrs[key]
            problems.append(f"{where}: attribute {key!r} is {found!r}, expected {want!r}")
    if missing:
        problems.insert(0, f"{where}: attribute(s) {missing!r} missing")
    return problems


def _json(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    return json.dumps(value, sort_keys=True, default=str)


def _has_vlen(dtype: np.dtype) -> bool:
    if dtype.names:
        return any(_has_vlen(dtype.fields[n][0]) for n in dtype.names)
    base = dtype.base if dtype.subdtype else dtype
    return h5py.check_vlen_dtype(base) is not None and h5py.check_string_dtype(base) is None


def _blocks(dset: h5py.Dataset, row_bytes: int) -> Iterator[slice]:
    """Slices along the first axis of about ``BLOCK_BYTES``, aligned to the HDF5 chunks."""
    n = dset.shape[0]
    rows = max(1, BLOCK_BYTES // max(1, row_bytes))
    if dset.chunks:
        rows = max(dset.chunks[0], rows // dset.chunks[0] * dset.chunks[0])
    if n == 0:
        yield slice(0, 0)
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def _check_dataset(tr: Translator, dset: h5py.Dataset, path: str, node: xr.DataTree) -> list[str]:
    name = escape_name(path.rsplit("/", 1)[1])
    where = node_path(path.rsplit("/", 1)[0] or "/")
    if dset.shape is None:  # null dataspace
        var = node.variables.get(name)
        if var is None or var.size != 0 or not var.attrs.get("abo_lake_hdf5_null"):
            loc = f"{where.rstrip('/')}/{name}"
            return [f"{path}: null dataspace not recorded as {loc} (size 0, null flag)"]
        return []
    if dset.ndim == 0 or _has_vlen(dset.dtype):
        expected = tr.decode(dset[()], dset.dtype)
        return _compare_vars(tr, dset, path, node, where, name, expected, None)
    row_bytes = dset.dtype.itemsize * math.prod(dset.shape[1:])
    problems: list[str] = []
    bad: set[str] = set()
    for sl in _blocks(dset, row_bytes):
        expected = tr.decode(dset[sl], dset.dtype)
        problems += _compare_vars(tr, dset, path, node, where, name, expected, sl, bad)
    return problems


def _compare_vars(
    tr: Translator,
    dset: h5py.Dataset,
    path: str,
    node: xr.DataTree,
    where: str,
    name: str,
    expected: dict[str, np.ndarray],
    sl: slice | None,
    bad: set[str] | None = None,
) -> list[str]:
    """Compare one block of decoded source values with the stored variables."""
    bad = set() if bad is None else bad
    problems = []
    for suffix, want in expected.items():
        var_name = name + suffix
        if var_name in bad:
            continue
        var = node.variables.get(var_name)
        if var is None:
            bad.add(var_name)
            problems.append(f"{path}: no variable {var_name!r} in node {where!r}")
            continue
        loc = f"{where.rstrip('/')}/{var_name}"
        if sl is None or sl.start == 0:
            full = want.shape if sl is None else (dset.shape[0], *want.shape[1:])
            if var.shape != full:
                bad.add(var_name)
                problems.append(f"{path}: shape {var.shape} in {loc}, expected {full}")
                continue
            problems += _check_attrs(tr, dset, var, f"{path} ({var_name})")
        got = np.asarray(var.values if sl is None else var[sl].values)
        if (diff := _difference(want, got, 0 if sl is None else sl.start)) is not None:
            bad.add(var_name)
            problems.append(f"{path}: {diff} in {loc}")
    return problems


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def _bits(arr: np.ndarray) -> np.ndarray:
    """The bits of ``arr`` (native byte order) as unsigned ints, one per element if possible."""
    dtype = _native(arr.dtype)
    flat = np.ascontiguousarray(arr, dtype=dtype).reshape(-1)
    if dtype.itemsize in (1, 2, 4, 8):
        return flat.view(f"u{dtype.itemsize}")
    return flat.view(np.uint8).reshape(-1, dtype.itemsize)


def _difference(want: np.ndarray, got: np.ndarray, offset: int = 0) -> str | None:
    """Describe how ``got`` differs from ``want`` (bit equality for numbers), or None.

    ``offset`` is the block's first row in the whole array, to report absolute indices.
    """
    if want.shape != got.shape:
        return f"shape {got.shape}, expected {want.shape}"
    text = {"O", "U", "T"}
    if want.dtype.kind in text or got.dtype.kind in text:
        if not (want.dtype.kind in text and got.dtype.kind in text):
            return f"dtype {got.dtype}, expected strings ({want.dtype})"
        neq = np.asarray(want.astype(object) != got.astype(object), dtype=bool).reshape(-1)
    else:
        if _native(want.dtype) != _native(got.dtype):
            return f"dtype {got.dtype}, expected {want.dtype}"
        neq = _bits(want) != _bits(got)
        if neq.ndim == 2:
            neq = neq.any(axis=1)
    n = int(np.count_nonzero(neq))
    if n == 0:
        return None
    first = [int(i) for i in np.unravel_index(int(np.argmax(neq)), want.shape)]
    if first:
        first[0] += offset
    return f"{n} of {want.size} values differ (first at {tuple(first)})"


# --------------------------------------------------------------------------- mapped check


def check_mapped(
    path: str | Path,
    ds: xr.Dataset,
    mapping: Mapping[str, tuple[str, Transform | None]],
) -> list[str]:
    """Compare mapped HDF5 datasets with the curated variables they became.

    Parameters
    ----------
    path
        The source HDF5 file.
    ds
        The curated Dataset (possibly re-opened from storage).
    mapping
        ``{hdf5 dataset path: (variable name, transform)}``. The transform is applied to the
        source values (strings decoded, references as paths, as in ``read_raw``) before the
        comparison; ``None`` means identity. Transforms marked with :func:`blockwise` (and
        ``None``) are checked block by block along the first axis; others see the whole array.

    Returns
    -------
    list of str
        Human-readable problems, each starting with the HDF5 path; empty if faithful.

    Examples
    --------
    >>> check_mapped("f.nwb", ds, {"/processing/ophys/dff/data": ("dff", np.transpose)})
    ... # doctest: +SKIP
    []
    """
    problems: list[str] = []
    with h5py.File(path, "r") as f:
        tr = Translator(f)
        for hpath, (var_name, transform) in mapping.items():
            if hpath not in f or not isinstance(f[hpath], h5py.Dataset):
                problems.append(f"{hpath}: no such dataset in {Path(path).name}")
                continue
            if var_name not in ds.variables:
                problems.append(f"{hpath}: mapped variable {var_name!r} missing from the Dataset")
                continue
            dset, var = f[hpath], ds[var_name].variable
            stream = (transform is None or getattr(transform, "abo_lake_blockwise", False)) and (
                dset.ndim > 0 and dset.dtype.names is None and not _has_vlen(dset.dtype)
            )
            func = transform or (lambda a: a)
            problems += (
                _mapped_stream(tr, dset, hpath, var, var_name, func)
                if stream
                else _mapped_whole(tr, dset, hpath, var, var_name, func)
            )
    return problems


def _source(tr: Translator, dset: h5py.Dataset, sel: Any) -> np.ndarray:
    raw = dset[sel]
    if dset.dtype.names or _has_vlen(dset.dtype):
        return np.asarray(raw)
    return tr.decode(raw, dset.dtype)[""]


def _mapped_whole(
    tr: Translator, dset: h5py.Dataset, hpath: str, var: xr.Variable, name: str, func: Transform
) -> list[str]:
    want = np.asarray(func(_source(tr, dset, ())))
    diff = _difference(want, np.asarray(var.values))
    return [] if diff is None else [f"{hpath}: {diff} in variable {name!r}"]


def _mapped_stream(
    tr: Translator, dset: h5py.Dataset, hpath: str, var: xr.Variable, name: str, func: Transform
) -> list[str]:
    if var.ndim == 0 or var.shape[0] != dset.shape[0]:
        return [f"{hpath}: {dset.shape[0]} rows, but variable {name!r} has shape {var.shape}"]
    row_bytes = dset.dtype.itemsize * math.prod(dset.shape[1:])
    for sl in _blocks(dset, row_bytes):
        want = np.asarray(func(_source(tr, dset, sl)))
        if (diff := _difference(want, np.asarray(var[sl].values), sl.start)) is not None:
            return [f"{hpath}: {diff} in variable {name!r} (rows {sl.start}:{sl.stop})"]
    return []
