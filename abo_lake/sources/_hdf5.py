"""Lazy, picklable access to HDF5 datasets, shared by the NWB readers.

``lazy_array(path, "/processing/ophys/dff/traces/data")`` is a dask array that opens the file
only when a block is computed, so a Dataset built from it streams through a conversion on
any scheduler (h5py objects themselves cannot be pickled to dask workers). Each thread keeps
its last few files open (keyed by path, size, mtime and inode, so a rewritten file is
reopened): a raw copy reads hundreds of small datasets of one file.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
from dask.base import tokenize

from abo_lake.errors import SourceFileError

__all__ = ["H5Lazy", "close_files", "lazy_array", "open_hdf5", "read_str", "require_hdf5"]


#: The first bytes of an HDF5 file (at offset 0, as every Allen file has it).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_OPEN = threading.local()
#: Files each thread keeps open.
KEEP_OPEN = 4
#: Every kept handle by path, so :func:`close_files` reaches other threads' handles too.
_KEPT: dict[str, list[h5py.File]] = {}
_KEPT_LOCK = threading.Lock()


def _open(path: str) -> h5py.File:
    """This thread's open handle of ``path`` (reopened if the file changed or was closed)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    files: OrderedDict[tuple, h5py.File] = _OPEN.__dict__.setdefault("files", OrderedDict())
    f = files.get(key)
    if f is not None and f.id.valid:
        files.move_to_end(key)
        return f
    files[key] = f = h5py.File(path, "r")
    with _KEPT_LOCK:
        _KEPT.setdefault(path, []).append(f)
    while len(files) > KEEP_OPEN:
        files.popitem(last=False)[1].close()
    return f


def close_files(path: str | os.PathLike) -> None:
    """Close every kept handle of ``path``, in all threads (a conversion calls this when it
    is done with a source, so a fetched temporary copy's disk space is freed)."""
    with _KEPT_LOCK:
        handles = _KEPT.pop(str(path), [])
    for f in handles:
        if f.id.valid:
            f.close()


def open_hdf5(path: str | os.PathLike, expected: str) -> h5py.File:
    """Open ``path`` read-only, or raise :class:`~abo_lake.errors.SourceFileError` naming the
    file, why it cannot be opened (truncated or corrupt) and what was ``expected``."""
    path = Path(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise SourceFileError(
            f"{path}: cannot open as HDF5 ({err}); the file is truncated or corrupt "
            f"(size {path.stat().st_size if path.exists() else 0} bytes); {expected}; "
            "download it again"
        ) from err


def require_hdf5(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`~abo_lake.errors.SourceFileError` if ``path`` is not HDF5, naming the
    bytes it starts with and what was ``expected`` (an HTML error page saved as .nwb, say)."""
    path = Path(path)
    if not h5py.is_hdf5(path):
        with path.open("rb") as fh:
            head = fh.read(8)
        raise SourceFileError(
            f"{path}: not an HDF5 file (starts with {head!r}, expected {HDF5_SIGNATURE!r}); "
            f"{expected}"
        )


class H5Lazy:
    """A picklable stand-in for one HDF5 dataset: reads through this thread's open file.

    Parameters
    ----------
    path
        The HDF5 file.
    name
        Absolute path of the dataset inside the file.
    """

    def __init__(self, path: str | Path, name: str) -> None:
        self.path = str(path)
        self.name = name
        dset = _open(self.path)[name]
        self.shape: tuple[int, ...] = dset.shape
        self.dtype: np.dtype = dset.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(_open(self.path)[self.name][key])
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as err:  # e.g. a corrupt compressed chunk: name the dataset and block
            raise SourceFileError(
                f"{self.path}: cannot read {self.name}{_selection(key)} (HDF5: {err}); the "
                "file is corrupt; download it again"
            ) from err

    def __repr__(self) -> str:
        return f"H5Lazy({self.path!r}, {self.name!r}, shape={self.shape}, dtype={self.dtype})"


def _selection(key: Any) -> str:
    """``key`` as a reader would write it: ``[0:8192, 32:64]``."""
    key = key if isinstance(key, tuple) else (key,)
    parts = [
        f"{k.start or 0}:{'' if k.stop is None else k.stop}" if isinstance(k, slice) else repr(k)
        for k in key
    ]
    return f"[{', '.join(parts)}]"


def lazy_array(path: str | Path, name: str, chunks: Any = "auto") -> da.Array:
    """Return a dask array over one HDF5 dataset, read block by block on demand.

    The graph name is ``h5-<token>`` with a token of the file (path, size, mtime), the dataset
    and the chunks: a name made of the paths alone is split by dask's key heuristics into the
    same prefix for every dataset, and fused graphs of different datasets then collided (one
    ROI's mask was stored for another's; the fidelity check caught it).
    """
    src = H5Lazy(path, name)
    stat = Path(path).stat()
    token = tokenize(str(path), stat.st_size, stat.st_mtime_ns, name, chunks)
    return da.from_array(src, chunks=chunks, lock=False, asarray=True, name=f"h5-{token}")


def read_str(value: Any) -> str:
    """Decode an HDF5 scalar or attribute that may be bytes, a 0-d array or a str."""
    if isinstance(value, np.ndarray):
        value = value[()] if value.ndim == 0 else value.ravel()[0]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def require_dataset(
    f: h5py.File,
    name: str,
    path: str | Path,
    *,
    ndim: int | None = None,
    length: int | None = None,
    what: str = "",
) -> h5py.Dataset:
    """The dataset ``name`` of ``f``, or a :class:`SourceFileError` naming the file, the HDF5
    path and what was expected there (absent, a group, a scalar, another shape).

    Parameters
    ----------
    ndim, length
        The expected number of dimensions and length of the first axis, when given.
    what
        What the dataset is, for the message (``"dF/F timestamps (s)"``).
    """
    want = (
        (f"{ndim}-D dataset" if ndim is not None else "dataset")
        + (f" of {length} rows" if length is not None else "")
        + (f" ({what})" if what else "")
    )
    obj = f.get(name)
    where = f"{path}: /{name.lstrip('/')}"
    if obj is None:
        raise SourceFileError(f"{where} is missing, expected a {want}")
    if not isinstance(obj, h5py.Dataset):
        raise SourceFileError(f"{where} is a {type(obj).__name__}, expected a {want}")
    if ndim is not None and obj.ndim != ndim:
        raise SourceFileError(f"{where} has shape {obj.shape}, expected a {want}")
    if length is not None and (not obj.ndim or obj.shape[0] != length):
        raise SourceFileError(f"{where} has shape {obj.shape}, expected a {want}")
    return obj
