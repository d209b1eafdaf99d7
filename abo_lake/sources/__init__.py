"""Readers of source files: ``read(path) -> {dataset path in a release: xarray.Dataset}``.

One module per format. Each exposes ``sniff(path) -> bool`` (a cheap look at the content, not
the file name) and ``read(path) -> dict[str, xarray.Dataset]``. Readers are pure: they know
nothing of the lake. Errors are :class:`~abo_lake.errors.SourceFileError` naming the file.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import xarray as xr

from abo_lake.errors import AboLakeError, SourceFileError
from abo_lake.kinds import FORMATS

__all__ = ["READERS", "detect_format", "inputs", "members", "read"]

#: format name -> reader module, in the order they are tried by :func:`detect_format`
#: (declared with each source format in :mod:`abo_lake.kinds`).
READERS: dict[str, str] = {f.name: f.reader for f in FORMATS.values() if f.reader}


def _module(fmt: str) -> ModuleType:
    return importlib.import_module(READERS[fmt])


def detect_format(path: str | Path) -> str:
    """Return the source format of ``path`` from its content.

    Raises
    ------
    SourceFileError
        If no reader recognises the file.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceFileError(f"{p}: no such file")
    for fmt in READERS:
        if _module(fmt).sniff(p):
            return fmt
    raise SourceFileError(_why_unreadable(p))


#: What :func:`detect_format` expects, in its errors.
EXPECTED = "expected one of: " + "; ".join(
    f.description for f in FORMATS.values() if f.reader or f.synthetic
)
_HDF5_READERS = tuple(f.name for f in FORMATS.values() if f.hdf5 and f.reader)


def _why_unreadable(p: Path) -> str:
    """Why no reader recognises ``p``, as precisely as the readers themselves say it: a
    truncated or corrupt HDF5 file, a file that is not HDF5, or an HDF5 file of no kind
    abo_lake reads (each HDF5 reader's own complaint)."""
    import h5py

    from abo_lake.sources._hdf5 import open_hdf5, read_str, require_hdf5

    if not h5py.is_hdf5(p) and p.suffix.lower() not in (".nwb", ".h5"):
        return f"{p}: not a source abo_lake can read (tried {', '.join(READERS)}); {EXPECTED}"
    try:  # a non-HDF5, truncated or corrupt file fails here, by name
        require_hdf5(p, EXPECTED)
        f = open_hdf5(p, EXPECTED)
    except SourceFileError as err:
        return str(err)
    with f:
        try:
            version = read_str(f.attrs.get("nwb_version", "")) or "no nwb_version"
        except Exception as err:  # h5py: KeyError, RuntimeError... on zeroed blocks
            return (
                f"{p}: an HDF5 file whose root group cannot be read ({type(err).__name__}: "
                f"{err}); it is corrupt or truncated (e.g. zeroed blocks of an interrupted "
                "copy): download it again"
            )
    reasons = []
    for fmt in _HDF5_READERS:
        try:
            _module(fmt).read(p)
        except SourceFileError as err:
            reasons.append(f"{fmt}: {str(err).removeprefix(f'{p}: ')}")
        except Exception as err:  # a reader tripping over a foreign layout
            reasons.append(f"{fmt}: {type(err).__name__}: {err}")
    return (
        f"{p}: an HDF5 file ({version}) of no kind abo_lake reads; {EXPECTED}. "
        "What each reader found missing: " + "; ".join(reasons)
    )


def read(path: str | Path, fmt: str | None = None) -> dict[str, xr.Dataset]:
    """Read one source file into the Datasets it holds, keyed by their path in a release.

    Raises
    ------
    SourceFileError
        Naming the file; a reader's own error as it is, anything else a reader trips over
        (a ``KeyError`` from h5py on a half-zeroed file, say) with its type and message.
    """
    fmt = fmt or detect_format(path)
    try:
        return _module(fmt).read(Path(path))
    except (AboLakeError, MemoryError):
        raise
    except Exception as err:
        raise SourceFileError(
            f"{path}: cannot read it as {fmt} ({type(err).__name__}: {err}); the file is "
            "corrupt or truncated (e.g. zeroed blocks of an interrupted copy), or a layout "
            "abo_lake does not know: check it (h5ls -r for HDF5) or download it again"
        ) from err


def group_names(name: str, siblings: Iterable[str]) -> list[str]:
    """The names of the files converted together with the file ``name``, first the one a job
    converts them from, judged by the names in its folder alone (for a remote listing, before
    any download). Only CCF volumes and connectivity experiments span several files."""
    from abo_lake.sources import ccf

    return ccf.group(name, siblings)


def members(path: str | Path, fmt: str | None = None) -> list[Path]:
    """Files that together make what ``read(path)`` returns (usually just ``path``)."""
    fmt = fmt or detect_format(path)
    module = _module(fmt)
    return module.members(Path(path)) if hasattr(module, "members") else [Path(path)]


def inputs(path: str | Path, fmt: str | None = None) -> list[Path]:
    """Every file whose bytes a conversion of ``path`` reads: its :func:`members` and what
    they reference (an NRRD's detached data file, in its own folder). A resume key covers
    them all."""
    fmt = fmt or detect_format(path)
    module = _module(fmt)
    return module.inputs(Path(path)) if hasattr(module, "inputs") else members(path, fmt)
