"""NRRD volumes without holding them in memory.

``pynrrd.read`` decompresses a whole gzip volume into memory (a 10 µm CCF annotation is
4.8 GB, a 10 µm connectivity volume as much). :func:`open_volume` instead streams the
compressed data once into an anonymous temporary file and memory-maps it: reads of any block
then cost a page-cache copy, and the space is freed when the last array using it goes away.
Raw (uncompressed) attached data is memory-mapped in place. Other layouts (detached data
files, skips, ASCII) fall back to ``pynrrd.read``.
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

__all__ = ["Blocks", "open_volume"]

#: Compressed bytes read, and decompressed bytes produced, per step while streaming.
STEP_BYTES = 16 << 20
_SKIPS = ("datafile", "data file", "lineskip", "line skip", "byteskip", "byte skip")
_STREAMED = ("raw", "gzip", "gz", "bzip2", "bz2")


def open_volume(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The data of an NRRD file as a read-only array in file (Fortran) axis order, and its
    header, as ``nrrd.read(path, index_order="F")`` gives them, but memory-mapped.

    Raises
    ------
    SourceFileError
        Naming the file: unreadable header, or data that ends early (a truncated download).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
            encoding = header.get("encoding")
            if any(k in header for k in _SKIPS) or encoding not in _STREAMED:
                return nrrd.read(str(p), index_order="F")
            dtype = nrrd.reader._determine_datatype(header)
            shape = tuple(int(s) for s in header["sizes"])
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if encoding == "raw":
                _check_size(p, p.stat().st_size - offset, nbytes, "raw data")
                return np.memmap(p, dtype, "r", offset, shape, order="F"), header
            with tempfile.TemporaryFile(prefix="abo-lake-nrrd-") as out:
                stream = _gunzip if encoding in ("gzip", "gz") else _bunzip2
                _check_size(p, sum(out.write(b) for b in stream(fh)), nbytes, "decompressed")
                out.flush()
                # the map keeps the (unlinked) file until the array is gone
                return np.memmap(out, dtype, "r", 0, shape, order="F"), header
    except (nrrd.NRRDError, ValueError, TypeError, UnicodeDecodeError, zlib.error, EOFError) as err:
        raise SourceFileError(f"{p}: cannot read the NRRD ({err})") from err


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
