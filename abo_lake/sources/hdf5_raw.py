"""Lossless carry-over of a whole HDF5 file as an :class:`xarray.DataTree`.

Converters map the interesting parts of an NWB/HDF5 file into a curated Dataset; whatever they
do not map is carried over verbatim by :func:`read_raw` under a ``raw`` group, so nothing in the
source is lost. The translation is documented here because :mod:`abo_lake.fidelity` relies on it:

- **groups** become nodes, at the same path (names escaped, see below); the group's HDF5 attrs
  become the node's attrs;
- **datasets** become variables named after the dataset, with dims ``<name>_dim_<i>`` (NWB has no
  dimension scales). If that dim name clashes with a variable of the node, or with a dim of a
  different size in an ancestor node (DataTree requires alignment), ``_<k>`` is appended.
  Datasets over ~1 MB stay lazy (dask over the file, picklable). ``encoding["chunks"]`` is the
  HDF5 chunk shape grown by whole multiples to ~4 MB (for contiguous datasets: whole rows, ~4 MB);
  the original chunks and compression are kept in ``attrs["abo_lake_hdf5_chunks"]`` and
  ``attrs["abo_lake_hdf5_compression"]``;
- **numbers and booleans** are kept as they are (dtype, bits); enums keep their integer codes and
  record the mapping in ``attrs["abo_lake_hdf5_enum"]`` as ``[name, value]`` pairs;
- **strings** (fixed or variable length) become object arrays of ``str`` decoded as UTF-8 (lazy
  ones, over ~1 MB, use numpy ``StringDType`` so dask need not load them to find a dtype); a
  string dataset that is not valid UTF-8 is kept as bytes (``|S``);
- **object references** become strings holding the path under which the target is copied (the
  first path that reaches it; ``""`` for a null reference); region references append the
  selection as JSON: ``"/path?{"hyperslab": [...]}"`` or ``"/path?{"points": [...]}"``;
- **compound** datasets become one variable per field, ``<name>.<field>`` (nested: ``a.b.c``);
- **variable-length sequences** become a flat variable ``<name>`` along ``<name>_flat`` plus
  ``<name>.index`` of cumulative END offsets (NWB VectorIndex semantics) in the dataset's shape;
- **opaque** data becomes ``uint8`` with a trailing ``<name>_bytes`` dim;
- **scalar** datasets become 0-d variables; **empty** datasets keep their zero-length shape; a
  null dataspace becomes a zero-length 1-d variable with ``attrs["abo_lake_hdf5_null"] = True``;
- **attrs** are made JSON-safe: bytes -> str, numpy scalars -> Python, arrays -> (nested) lists,
  references -> ``"ref:<path>"``, ``h5py.Empty`` -> ``"empty:<dtype>"``, complex -> ``[re, im]``;
- **links**: soft, external and extra hard links (an object already copied under another path)
  are not copied but recorded on the node of their group as ``attrs["abo_lake_link.<name>"]`` =
  ``"soft:<target>"``, ``"external:<file>:<path>"`` or ``"hard:<first path>"`` (a named
  datatype as ``"datatype:<description>"``).

Name escaping (reversible, :func:`escape_name` / :func:`unescape_name`): ``%``, ``/`` and ``.``
are percent-encoded (``.`` is reserved for compound fields), as is the first ``_`` of a name
starting with ``__`` (reserved by Zarr). Attribute keys that xarray or the lake would interpret
(CF keys such as ``_FillValue``, ``scale_factor``, ``dtype``, ``units`` holding "... since ...";
``source_file``; keys starting with ``abo_lake_`` or ``%``) are stored as ``"%" + key``
(:func:`escape_attr_key`), so re-opening with xarray never masks, scales or decodes raw data.

Every variable records its source in ``attrs["abo_lake_hdf5_path"]`` and a description of the
source dtype in ``attrs["abo_lake_hdf5_dtype"]``; the root node records ``abo_lake_kind``
(``"hdf5_raw"``), ``source_file`` and ``abo_lake_skipped`` (paths not copied).
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import xarray as xr

from abo_lake.sources._hdf5 import lazy_array, open_hdf5

__all__ = [
    "KIND",
    "Member",
    "Translator",
    "escape_attr_key",
    "escape_name",
    "iter_members",
    "matches",
    "node_path",
    "read_raw",
    "unescape_attr_key",
    "unescape_name",
]

KIND = "hdf5_raw"

#: Datasets bigger than this stay lazy (dask over the file); smaller ones are read at once.
LAZY_BYTES = 1 << 18  # 256 KiB: per-ROI 1 MiB masks stay lazy (bounded memory)
#: Target size of a stored chunk; HDF5 chunks are grown (by whole multiples) up to it.
CHUNK_BYTES = 4 << 20

_CF_KEYS = frozenset(
    {
        "_FillValue",
        "missing_value",
        "scale_factor",
        "add_offset",
        "calendar",
        "coordinates",
        "grid_mapping",
        "bounds",
        "dtype",
        "_Unsigned",
        "_Encoding",
        "_ARRAY_DIMENSIONS",
        "source_file",
    }
)


# --------------------------------------------------------------------------------- names


def escape_name(name: str) -> str:
    """Escape an HDF5 link name into a variable or node name xarray and Zarr accept.

    ``%``, ``/`` and ``.`` are percent-encoded, as is the first ``_`` of a leading ``__``.

    Examples
    --------
    >>> escape_name("__x.y")
    '%5F_x%2Ey'
    >>> unescape_name(escape_name("__x.y"))
    '__x.y'
    """
    out = name.replace("%", "%25").replace("/", "%2F").replace(".", "%2E")
    if out.startswith("__"):
        out = "%5F" + out[1:]
    return out


def unescape_name(name: str) -> str:
    """Invert :func:`escape_name`."""
    return name.replace("%5F", "_").replace("%2E", ".").replace("%2F", "/").replace("%25", "%")


def node_path(hdf5_path: str) -> str:
    """Return the DataTree path of an HDF5 group path (each component escaped)."""
    parts = [p for p in hdf5_path.split("/") if p]
    return "/" + "/".join(escape_name(p) for p in parts)


def escape_attr_key(key: str, value: Any = None) -> str:
    """Escape an HDF5 attribute key that xarray or the lake would interpret, by a ``%`` prefix.

    ``units`` is escaped only when ``value`` is a time unit xarray would decode ("... since ...").
    """
    if key in _CF_KEYS or key.startswith(("%", "abo_lake_")):
        return "%" + key
    if key == "units" and isinstance(value, str) and " since " in value:
        return "%" + key
    return key


def unescape_attr_key(key: str) -> str:
    """Invert :func:`escape_attr_key`."""
    return key[1:] if key.startswith("%") else key


# ------------------------------------------------------------------------------- walking


@dataclass(frozen=True)
class Member:
    """One link of the HDF5 file, as met by :func:`iter_members`.

    ``kind`` is ``"group"`` or ``"dataset"`` (the first link to an object: it is copied) or
    ``"soft"``, ``"external"``, ``"hard"`` (not copied; ``target`` says where it points) or
    ``"datatype"`` (a named datatype; ``target`` describes it).
    """

    path: str
    kind: str
    target: str = ""

    @property
    def parent(self) -> str:
        """HDF5 path of the group holding the link."""
        return self.path.rsplit("/", 1)[0] or "/"

    @property
    def name(self) -> str:
        """The link name."""
        return self.path.rsplit("/", 1)[1]


def iter_members(f: h5py.File) -> Iterator[Member]:
    """Yield every link below the root, parents before children, in HDF5 iteration order.

    Each object is yielded once as ``group``/``dataset`` under the first path that reaches it;
    further hard links to it are yielded as ``hard`` with ``target`` = that first path.
    """
    seen: dict[tuple[int, int], str] = {_token(f): "/"}

    def walk(group: h5py.Group, prefix: str) -> Iterator[Member]:
        for name in group:
            path = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                yield Member(path, "soft", link.path)
                continue
            if isinstance(link, h5py.ExternalLink):
                yield Member(path, "external", f"{link.filename}:{link.path}")
                continue
            obj = group[name]
            token = _token(obj)
            if token in seen:
                yield Member(path, "hard", seen[token])
                continue
            seen[token] = path
            if isinstance(obj, h5py.Datatype):
                yield Member(path, "datatype", _describe(obj.dtype))
            elif isinstance(obj, h5py.Group):
                yield Member(path, "group")
                yield from walk(obj, path)
            else:
                yield Member(path, "dataset")

    yield from walk(f, "")


def _token(obj: h5py.HLObject) -> tuple[int, int]:
    info = h5py.h5o.get_info(obj.id)
    return (info.fileno, info.addr)


# ------------------------------------------------------------------------------ decoding


def _to_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _decode_strings(arr: np.ndarray) -> np.ndarray:
    """Decode an array of bytes/str into an object array of str (bytes kept if not UTF-8)."""
    try:
        return np.asarray(np.frompyfunc(_to_str, 1, 1)(arr), dtype=object).reshape(arr.shape)
    except UnicodeDecodeError:
        if arr.dtype.kind == "S":
            return arr
        return np.array([bytes(v) for v in arr.ravel()], dtype="S").reshape(arr.shape)


def _decode_lazy_strings(arr: np.ndarray) -> np.ndarray:
    """Decode one block of a lazy string dataset (``StringDType``: dask needs a fixed dtype)."""
    out = np.frompyfunc(_to_str, 1, 1)(arr)
    return np.asarray(out, dtype=np.dtypes.StringDType()).reshape(arr.shape)


class Translator:
    """Translate the values of one open HDF5 file into what :func:`read_raw` stores.

    References resolve to the path under which their target is copied (the first path
    :func:`iter_members` meets), so they can be followed inside the DataTree.

    Parameters
    ----------
    f
        The open file.
    """

    def __init__(self, f: h5py.File) -> None:
        self.f = f
        self._paths: dict[tuple[int, int], str] | None = None  # built at the first reference

    @property
    def paths(self) -> dict[tuple[int, int], str]:
        """Object token -> the path :func:`iter_members` first meets it under."""
        if self._paths is None:
            self._paths = {_token(self.f): "/"}
            for m in iter_members(self.f):
                if m.kind in ("group", "dataset"):
                    self._paths[_token(self.f[m.path])] = m.path
        return self._paths

    def ref(self, ref: Any) -> str:
        """Path of a reference's target (``""`` if null), plus its selection if a region."""
        if not ref:
            return ""
        try:
            obj = self.f[ref]
        except (KeyError, ValueError, RuntimeError):
            return "?unresolved"
        target = self.paths.get(_token(obj))
        if target is None:  # (obj.name costs a quarter millisecond: not for every reference)
            target = obj.name or ""
        if isinstance(ref, h5py.RegionReference):
            space = h5py.h5r.get_region(ref, self.f.id)
            sel = space.get_select_type()
            if sel == h5py.h5s.SEL_HYPERSLABS:
                blocks = space.get_select_hyper_blocklist().tolist()
                target += "?" + json.dumps({"hyperslab": blocks})
            elif sel == h5py.h5s.SEL_POINTS:
                target += "?" + json.dumps({"points": space.get_select_elem_pointlist().tolist()})
        return target

    def decode(self, arr: np.ndarray, dtype: np.dtype) -> dict[str, np.ndarray]:
        """Translate values read from a dataset of ``dtype`` into stored arrays.

        Returns ``{suffix: array}``: ``""`` for the dataset itself, ``".<field>"`` per compound
        field, ``".index"`` for the end offsets of a variable-length sequence.
        """
        arr = np.asarray(arr)
        if dtype.names:
            out: dict[str, np.ndarray] = {}
            for field in dtype.names:
                sub_dtype = dtype.fields[field][0]
                base = sub_dtype.base if sub_dtype.subdtype else sub_dtype
                for suffix, value in self.decode(arr[field], base).items():
                    out[f".{escape_name(field)}{suffix}"] = value
            return out
        if h5py.check_string_dtype(dtype) is not None:
            return {"": _decode_strings(arr)}
        if h5py.check_ref_dtype(dtype) is not None:
            strs = np.array([self.ref(r) for r in arr.ravel()], dtype=object)
            return {"": strs.reshape(arr.shape)}
        vlen = h5py.check_vlen_dtype(dtype)
        if vlen is not None:
            items = list(arr.ravel())
            lengths = np.array([len(v) for v in items], dtype=np.int64)
            values = np.concatenate(items) if items else np.zeros(0, vlen)
            index = np.cumsum(lengths).reshape(arr.shape)
            return {"": self.decode(values, np.dtype(vlen))[""], ".index": index}
        if dtype.kind == "V":
            flat = np.ascontiguousarray(arr).view(np.uint8)
            return {"": flat.reshape((*arr.shape, dtype.itemsize))}
        return {"": arr}

    def json_safe(self, value: Any) -> Any:
        """Make an attribute value JSON-safe (see the module docstring for the rules)."""
        if isinstance(value, (h5py.Reference, h5py.RegionReference)):
            return "ref:" + self.ref(value)
        if isinstance(value, h5py.Empty):
            return f"empty:{np.dtype(value.dtype).str}"
        if isinstance(value, np.ndarray):
            if value.dtype.names or value.dtype.kind == "O":
                items = [self.json_safe(v) for v in value.ravel()]
                return items if value.ndim else items[0]
            return self.json_safe(value.tolist())
        if isinstance(value, np.void) and value.dtype.names:
            return [self.json_safe(value[n]) for n in value.dtype.names]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (list, tuple)):
            return [self.json_safe(v) for v in value]
        if isinstance(value, complex):
            return [value.real, value.imag]
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value

    def attrs(self, obj: h5py.HLObject) -> dict[str, Any]:
        """Return the JSON-safe, key-escaped attrs of an HDF5 group or dataset."""
        out: dict[str, Any] = {}
        for key in obj.attrs:
            try:
                value = self.json_safe(obj.attrs[key])
            except (OSError, TypeError) as err:  # e.g. a datatype h5py cannot read
                value = f"unreadable:{type(err).__name__}"
            out[escape_attr_key(key, value)] = value
        return out


def _describe(dtype: np.dtype) -> str:
    if dtype.subdtype:
        return f"{_describe(dtype.subdtype[0])} {list(dtype.subdtype[1])}"
    if (s := h5py.check_string_dtype(dtype)) is not None:
        length = "vlen" if s.length is None else f"fixed {s.length}"
        return f"string ({length}, {s.encoding})"
    if (r := h5py.check_ref_dtype(dtype)) is not None:
        return "region reference" if r is h5py.RegionReference else "object reference"
    if (v := h5py.check_vlen_dtype(dtype)) is not None:
        return f"vlen {_describe(np.dtype(v))}"
    if dtype.names:
        return "compound {" + ", ".join(f"{n}: {_describe(dtype[n])}" for n in dtype.names) + "}"
    if h5py.check_enum_dtype(dtype) is not None:
        return f"enum {dtype.str}"
    return dtype.str


# -------------------------------------------------------------------------------- chunks


def _chunks(dset: h5py.Dataset, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Stored chunk shape: the HDF5 chunks grown by whole multiples to about ``CHUNK_BYTES``.

    Without HDF5 chunks, whole rows along the first axis (or dask's ``"auto"`` for huge rows).
    """
    if not shape or 0 in shape:
        return ()
    if dset.chunks and len(dset.chunks) == len(shape):
        chunk = [min(c, s) for c, s in zip(dset.chunks, shape, strict=True)]
    elif itemsize * math.prod(shape[1:]) <= CHUNK_BYTES:
        chunk = [1, *shape[1:]]
    else:
        auto = da.core.normalize_chunks(
            "auto", shape, limit=CHUNK_BYTES, dtype=np.dtype((np.void, itemsize))
        )
        return tuple(int(c[0]) for c in auto)
    for axis in range(len(shape)):
        nbytes = itemsize * math.prod(chunk)
        if nbytes >= CHUNK_BYTES:
            break
        chunk[axis] = min(shape[axis], chunk[axis] * max(1, CHUNK_BYTES // nbytes))
    return tuple(chunk)


# ---------------------------------------------------------------------------------- read


def matches(path: str, globs: Sequence[str]) -> bool:
    """Whether ``fnmatch`` globs select the HDF5 path; ``"!glob"`` deselects, last match wins.

    Examples
    --------
    >>> globs = ["/intervals/*_presentations/*", "!/intervals/*/tags*"]
    >>> matches("/intervals/a_presentations/start_time", globs)
    True
    >>> matches("/intervals/a_presentations/tags_index", globs)
    False
    """
    selected = False
    for glob in globs:
        negated = glob.startswith("!")
        if fnmatch.fnmatchcase(path, glob[1:] if negated else glob):
            selected = not negated
    return selected


def read_raw(path: str | Path, *, skip: Sequence[str] = ()) -> xr.DataTree:
    """Read every group, dataset, attribute and link of an HDF5 file into a DataTree.

    Parameters
    ----------
    path
        The HDF5 (NWB 1 or 2, or any) file.
    skip
        ``fnmatch`` globs of absolute dataset paths not to copy (what a converter maps), e.g.
        ``"/processing/ophys/dff/traces/data"``, as :func:`matches` reads them (``"!glob"``
        copies what earlier globs skipped); recorded in ``attrs["abo_lake_skipped"]``.

    Returns
    -------
    xarray.DataTree
        The file's hierarchy (see the module docstring for the translation); datasets bigger
        than ~1 MB are lazy dask arrays that reopen the file per block.

    Raises
    ------
    SourceFileError
        If the file cannot be opened as HDF5.

    Examples
    --------
    >>> tree = read_raw("session.nwb", skip=["/units/spike_times"])  # doctest: +SKIP
    >>> tree["general/extracellular_ephys/electrodes"]["group"].values[0]  # doctest: +SKIP
    '/general/extracellular_ephys/shank0'
    """
    path = Path(path)
    with open_hdf5(path, "expected an HDF5 file") as f:
        tr = Translator(f)
        nodes: dict[str, dict[str, Any]] = {"/": {"attrs": tr.attrs(f), "vars": {}}}
        order = ["/"]
        skipped: list[str] = []
        for m in iter_members(f):
            parent = nodes[m.parent]
            if m.kind == "group":
                nodes[m.path] = {"attrs": tr.attrs(f[m.path]), "vars": {}}
                order.append(m.path)
            elif m.kind == "dataset":
                if matches(m.path, skip):
                    skipped.append(m.path)
                    continue
                parent["vars"].update(_variables(path, tr, f[m.path], m))
            else:  # soft, external, extra hard link, named datatype: recorded, not copied
                parent["attrs"][f"abo_lake_link.{m.name}"] = f"{m.kind}:{m.target}"
    nodes["/"]["attrs"].update(abo_lake_kind=KIND, source_file=path.name, abo_lake_skipped=skipped)
    tree_dims: dict[str, dict[str, int]] = {}
    datasets: dict[str, xr.Dataset] = {}
    for hpath in order:
        node = nodes[hpath]
        inherited = tree_dims.get(hpath.rsplit("/", 1)[0] or "/", {}) if hpath != "/" else {}
        ds, dims = _dataset(node["vars"], node["attrs"], inherited)
        tree_dims[hpath] = {**inherited, **dims}
        datasets[node_path(hpath)] = ds
    return xr.DataTree.from_dict(datasets)


@dataclass
class _Var:
    """A variable before its dims are named: data, base dim name per axis, attrs, chunks."""

    data: Any
    bases: list[str]
    attrs: dict[str, Any]
    chunks: tuple[int, ...]


def _variables(path: Path, tr: Translator, dset: h5py.Dataset, m: Member) -> dict[str, _Var]:
    name = escape_name(m.name)
    attrs = tr.attrs(dset)
    attrs["abo_lake_hdf5_path"] = m.path
    attrs["abo_lake_hdf5_dtype"] = _describe(dset.dtype)
    if dset.chunks:
        attrs["abo_lake_hdf5_chunks"] = list(dset.chunks)
    if dset.compression:
        attrs["abo_lake_hdf5_compression"] = str(dset.compression)
    enum = h5py.check_enum_dtype(dset.dtype)
    if enum is not None and dset.dtype.kind != "b":
        attrs["abo_lake_hdf5_enum"] = [[k, int(v)] for k, v in enum.items()]
    if dset.shape is None:  # null dataspace
        attrs["abo_lake_hdf5_null"] = True
        dtype = dset.dtype if dset.dtype.kind in "biufc" else np.dtype(object)
        return {name: _Var(np.zeros(0, dtype), [f"{name}_dim_0"], attrs, ())}
    shape = tuple(dset.shape)
    bases = [f"{name}_dim_{i}" for i in range(len(shape))]
    dtype = dset.dtype
    plain = dtype.kind in "biufc" and not dtype.names and h5py.check_dtype(vlen=dtype) is None
    if plain and dset.size * dtype.itemsize >= LAZY_BYTES:
        chunks = _chunks(dset, shape, dtype.itemsize)
        return {name: _Var(lazy_array(path, m.path, chunks=chunks), bases, attrs, chunks)}
    strings = h5py.check_string_dtype(dtype) is not None
    if strings and dset.size * max(dtype.itemsize, 16) >= LAZY_BYTES:
        chunks = _chunks(dset, shape, max(dtype.itemsize, 16))
        raw = lazy_array(path, m.path, chunks=chunks)
        text = np.dtypes.StringDType()
        data = raw.map_blocks(_decode_lazy_strings, dtype=text, meta=np.array((), dtype=text))
        return {name: _Var(data, bases, attrs, chunks)}
    out: dict[str, _Var] = {}
    for suffix, arr in tr.decode(dset[()], dtype).items():
        var = name + suffix
        if arr.shape == shape:
            var_bases = bases
        elif suffix == "" and h5py.check_vlen_dtype(dtype) is not None:
            var_bases = [f"{name}_flat"]
        else:  # compound field with a sub-array, or opaque bytes
            extra = "bytes" if dtype.kind == "V" and not dtype.names else None
            var_bases = bases + [
                f"{name}_{extra}" if extra else f"{var}_dim_{i}"
                for i in range(len(shape), arr.ndim)
            ]
        chunks = _chunks(dset, arr.shape, arr.dtype.itemsize) if arr.shape == shape else ()
        out[var] = _Var(arr, var_bases, attrs, chunks)
    return out


def _dataset(
    variables: dict[str, _Var], attrs: dict[str, Any], inherited: dict[str, int]
) -> tuple[xr.Dataset, dict[str, int]]:
    """Build one node's Dataset, naming dims so they clash with nothing (see module docs)."""
    names: dict[str, str] = {}  # base dim name -> final dim name in this node
    dims: dict[str, int] = {}
    data_vars: dict[str, xr.Variable] = {}
    for var_name, var in variables.items():
        var_dims = []
        for base, size in zip(var.bases, np.shape(var.data), strict=True):
            if base not in names:
                final, k = base, 0
                while (
                    final in variables
                    or (final in inherited and inherited[final] != size)
                    or (final in dims and dims[final] != size)
                ):
                    k += 1
                    final = f"{base}_{k}"
                names[base] = final
                dims[final] = size
            var_dims.append(names[base])
        v = xr.Variable(var_dims, var.data, attrs=var.attrs)
        if var.chunks:
            v.encoding["chunks"] = var.chunks
        data_vars[var_name] = v
    return xr.Dataset(data_vars, attrs=attrs), dims
