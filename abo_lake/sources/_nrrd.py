"""NRRD volumes without holding them in memory.

``pynrrd.read`` decompresses a whole gzip volume into memory (a 10 µm CCF annotation is
4.8 GB, a 10 µm connectivity volume as much). :func:`open_volume` instead streams the
compressed data once into an anonymous temporary file and memory-maps it: reads of any block
then cost a page-cache copy, and the space is freed when the last array using it goes away.
Raw (uncompressed) data is memory-mapped in place. A detached data file is read only from the
header's own folder, and compressed data is never inflated beyond the size the header
declares. ASCII data falls back to ``pynrrd.read``.
"""

from __future__ import annotations

import bz2
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from abo_lake.errors import SourceFileError

__all__ = ["Blocks", "data_file", "open_volume"]

#: Compressed bytes read, and decompressed bytes produced, per step while streaming.
STEP_BYTES = 16 << 20
_STREAMED = ("raw", "gzip", "gz", "bzip2", "bz2")


def open_volume(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The data of an NRRD file as a read-only array in file (Fortran) axis order, and its
    header, as ``nrrd.read(path, index_order="F")`` gives them, but memory-mapped.

    A detached data file (``data file:``) is read only from the header's own folder
    (:func:`data_file`); compressed data is inflated at most to the size the header declares.

    Raises
    ------
    SourceFileError
        Naming the file: unreadable header, data that ends early (a truncated download) or
        inflates beyond its declared size, a data file outside the header's folder.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
        source = data_file(p, header)
        encoding = header.get("encoding")
        if encoding not in _STREAMED:  # text: nothing to inflate, parsed from the checked file
            return nrrd.read(str(p), index_order="F")
        dtype = nrrd.reader._determine_datatype(header)
        shape = tuple(int(s) for s in header["sizes"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        line_skip = int(header.get("lineskip", header.get("line skip", 0)))
        byte_skip = int(header.get("byteskip", header.get("byte skip", 0)))
        if line_skip < 0 or byte_skip < -1 or (byte_skip == -1 and encoding != "raw"):
            raise SourceFileError(
                f"{p}: line skip {line_skip} / byte skip {byte_skip} with {encoding!r} "
                "encoding is not supported (skips are >= 0; -1 only for raw data)"
            )
        with source.open("rb") as fh:
            fh.seek(offset if source == p else 0)
            for _ in range(line_skip):
                fh.readline()
            start = fh.tell()
            if encoding == "raw":
                size = source.stat().st_size
                # byte skip -1: the data is the file's last bytes, after the header
                start = max(start, size - nbytes) if byte_skip == -1 else start + byte_skip
                _check_size(source, size - start, nbytes, "raw")
                return np.memmap(source, dtype, "r", start, shape, order="F"), header
            with tempfile.TemporaryFile(prefix="abo-lake-nrrd-") as out:
                stream = _gunzip if encoding in ("gzip", "gz") else _bunzip2
                _inflate(source, stream(fh), out, byte_skip, nbytes)
                out.flush()
                # the map keeps the (unlinked) file until the array is gone
                return np.memmap(out, dtype, "r", 0, shape, order="F"), header
    except SourceFileError:
        raise
    except (nrrd.NRRDError, ValueError, TypeError, UnicodeDecodeError, zlib.error, EOFError) as err:
        raise SourceFileError(f"{p}: cannot read the NRRD ({err})") from err


def data_file(path: str | Path, header: dict[str, Any]) -> Path:
    """The file holding an NRRD's data: ``path`` itself, or its detached data file, which
    must be a plain file name in ``path``'s own folder (so it is a member of the source,
    part of its resume key, and never a file elsewhere on disk).

    Raises
    ------
    SourceFileError
        Naming the NRRD and the data file: an absolute path, a path with folders or
        ``..``, a file list or pattern, or a missing file.
    """
    p = Path(path)
    name = header.get("datafile", header.get("data file"))
    if name is None:
        return p
    name = str(name)
    plain = name.strip() == name and not any(c in name for c in "/\\:\0")
    if not plain or name in ("", ".", ".."):
        raise SourceFileError(
            f"{p}: its header's data file {name!r} is not a file name in the folder "
            f"{p.parent}; abo_lake reads detached NRRD data only from the header's own folder "
            "(a plain file name: no folders, '..', drive or absolute path)"
        )
    target = p.parent / name
    if not target.is_file():
        raise SourceFileError(
            f"{p}: its header's data file {name!r} is not a file in {p.parent} "
            "(file lists and name patterns are not supported)"
        )
    return target


class Blocks:
    """An array-like over a memory-mapped volume that dask reads block by block.

    ``dask.array.from_array`` copies a NumPy array (a ``np.memmap`` included) into its graph
    block by block when the graph is built, i.e. the whole volume at once; through this
    wrapper each task reads its own block when it runs.
    """

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._data[key])


def _check_size(p: Path, found: int, nbytes: int, what: str) -> None:
    if found != nbytes:
        raise SourceFileError(
            f"{p}: {found} bytes of {what} data, expected {nbytes} from the header's sizes "
            "and type; the file is truncated or corrupt"
        )


def _inflate(p: Path, stream: Iterator[bytes], out: Any, skip: int, nbytes: int) -> None:
    """Write the decompressed ``stream`` less its first ``skip`` bytes to ``out``, stopping
    as soon as it holds more than ``skip + nbytes`` bytes (a gzip bomb is not inflated)."""
    limit, found = skip + nbytes, 0
    for block in stream:
        if found + len(block) > limit:
            raise SourceFileError(
                f"{p}: the compressed data inflates to more than the {nbytes} bytes the "
                f"header's sizes and type declare (after a byte skip of {skip}); refusing "
                "to decompress further (a corrupt file or a decompression bomb)"
            )
        lo = max(0, skip - found)
        if lo < len(block):
            out.write(block[lo:] if lo else block)
        found += len(block)
    _check_size(p, max(0, found - skip), nbytes, "decompressed")


def _gunzip(fh: Any) -> Iterator[bytes]:
    """The gzip stream from ``fh`` decompressed, at most :data:`STEP_BYTES` at a time."""
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
    data = fh.read(STEP_BYTES)
    while data:
        yield decoder.decompress(data, STEP_BYTES)
        data = decoder.unconsumed_tail or fh.read(STEP_BYTES)
    yield decoder.flush()


def _bunzip2(fh: Any) -> Iterator[bytes]:
    """The bzip2 stream from ``fh`` decompressed, at most :data:`STEP_BYTES` at a time."""
    decoder = bz2.BZ2Decompressor()
    while not decoder.eof:
        data = fh.read(STEP_BYTES) if decoder.needs_input else b""
        if decoder.needs_input and not data:
            return
        yield decoder.decompress(data, STEP_BYTES)
