"""Conversion jobs: many source files -> one staged release, on dask.distributed.

``plan`` expands sources; ``convert_file`` (one task per file, on a worker) reads a file,
validates it, writes its Datasets as chunk objects and manifests, checks fidelity, and
records the result in the resume ledger; ``run`` maps it over a cluster, shows progress,
builds the release metadata tables and publishes only if every file succeeded.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dask
import h5py
import pandas as pd
import xarray as xr

from abo_lake import cas, schema, sources
from abo_lake.errors import AboLakeError, ReleaseExistsError, SourceFileError
from abo_lake.lake import HEARTBEAT_SECONDS, LEDGER_PREFIX, Lake, Stage
from abo_lake.progress import BytesDone, FileProgress
from abo_lake.release_tables import build_tables, read_csvs, row_tables
from abo_lake.sources._hdf5 import close_files
from abo_lake.storage import Storage
from abo_lake.writer import WriteOptions, write_dataset

__all__ = ["FileResult", "JobReport", "convert_file", "plan", "run"]

logger = logging.getLogger(__name__)
_SOURCE_SUFFIXES = (".nwb", ".nrrd", ".swc", ".json", ".h5")
#: Part of every resume key: bump it when a reader or the writer changes what a conversion
#: makes of a file, so that reruns convert again instead of resuming the old output
#: (3: Visual Behavior metadata attributes, Visual Coding 2P corrected fluorescence, units;
#: 4: Visual Behavior behavior part read by sources._vb_behavior: templates, rig geometry,
#: presentation columns a table lacks marked by absent_in; 5: a crc32c codec ends every
#: array's codec chain, so every chunk's bytes change; 6: packed cell-major traces and
#: spike chunks, inline index coordinates; 7: compact metadata documents in manifests).
CONVERTER_VERSION = 7


@dataclass
class FileResult:
    """What converting one source file did."""

    source: str
    format: str = ""
    source_sha256: str = ""
    datasets: dict[str, str] = field(default_factory=dict)  # path -> manifest hash
    kinds: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> metadata attrs
    tables: dict[str, list[str]] = field(default_factory=dict)  # table -> Parquet object hashes
    bytes_in: int = 0
    bytes_stored: int = 0  # chunk bytes its datasets reference, deduplicated or not
    new_objects: int = 0
    new_bytes: int = 0  # bytes of the chunk objects that were new to the lake
    bytes_fetched: int = 0  # bytes downloaded of a remote source (0 when resumed by ETag)
    seconds: float = 0.0
    resumed: bool = False
    error: str = ""


def plan(specs: Sequence[str | Path], source_options: dict[str, Any] | None = None) -> list[str]:
    """Expand files, folders (recursively) and globs into a sorted list of source files.

    Remote specs (``s3://bucket/raw/*.nwb``, ``s3://bucket/raw/``) are listed with fsspec;
    a remote folder yields the files in it that look like sources.
    """
    files: set[str] = set()
    local: set[str] = set()
    for spec in map(str, specs):
        if "://" in spec:
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(spec, storage_options=source_options)
            proto = spec.split("://")[0]
            listings: dict[str, list[str]] = {}
            named = not any(c in spec for c in "*?[")
            listed_json: list[str] = []
            for p in paths:
                if named and not fs.exists(p):
                    raise FileNotFoundError(f"{spec}: no such file or folder")
                found = fs.find(p) if fs.isdir(p) else [p]
                for f in found:
                    if Path(f).suffix.lower() not in _SOURCE_SUFFIXES:
                        continue
                    head = _remote_group(fs, f, listings)[0]
                    if head == f and f.lower().endswith(".json") and not (named and found == [p]):
                        listed_json.append(f)  # a source only if its content says so
                        continue
                    files.add(f"{proto}://{head}")
            files.update(f"{proto}://{f}" for f in _remote_json_sources(fs, listed_json))
            continue
        matches = globlib.glob(spec, recursive=True) if any(c in spec for c in "*?[") else [spec]
        for m in matches:
            p = Path(m)
            if p.is_dir():
                local.update(_sources_in(p))
            elif p.is_file():
                local.add(str(_group_head(p) or p))
            else:
                raise FileNotFoundError(f"{m}: no such file or folder")
    # one task per file, however many specs name it (``data/`` and ``data/x.nwb``, ``./x``)
    spellings: dict[str, list[str]] = {}
    for f in local:
        spellings.setdefault(os.path.realpath(f), []).append(f)
    return sorted(files | {min(names, key=lambda n: (len(n), n)) for names in spellings.values()})


def _sources_in(folder: Path) -> list[str]:
    """Source files in a folder, one per Dataset group; auxiliary JSON files are skipped.

    Files that look like sources (``.nwb``, ``.nrrd``, ``.swc``, ``.h5``) are kept even when
    unreadable, so that a broken file fails the job instead of vanishing from it.
    """
    candidates = sorted(f for f in _files_below(folder) if f.suffix.lower() in _SOURCE_SUFFIXES)
    out: set[str] = set()
    for f in candidates:
        head = _group_head(f)
        if head is None and f.suffix.lower() == ".json" and _parses_as_json(f):
            continue  # e.g. ephys_sweeps.json, *.truth.json: not a source
        out.add(str(head or f))
    return sorted(out)


def _files_below(folder: Path) -> Iterator[Path]:
    """Every file below ``folder``, following symbolic links to folders (a folder of links to
    the download cache is common), each real folder once (a link loop ends)."""
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for name in names:
            path = Path(root) / name
            if path.is_file():
                yield path


def _remote_json_sources(fs: Any, paths: list[str]) -> list[str]:
    """The JSON files of a remote listing that belong in a job (see :func:`_json_belongs`),
    fetched in one concurrent batch (a Cell Types bucket lists one per specimen)."""
    if not paths:
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for path, data in fs.cat(paths).items():
            copy = Path(tmp) / Path(path).name
            copy.write_bytes(data)
            if _json_belongs(copy):
                out.append(path.split("://", 1)[-1])
    return out


def _json_belongs(f: Path) -> bool:
    """Whether a JSON file found in a folder belongs in a job: a source (an ontology), or a
    file that does not parse as JSON (truncated, say), which then fails the job by name
    instead of vanishing from it. Other JSON (``ephys_sweeps.json``, ...) is auxiliary."""
    try:
        sources.detect_format(f)
        return True
    except AboLakeError:
        return not _parses_as_json(f)


def _parses_as_json(f: Path) -> bool:
    try:
        json.loads(f.read_bytes())
    except ValueError:
        return False
    return True


def _group_head(f: Path) -> Path | None:
    """The file a job converts ``f``'s group from (its first member: every file of a
    connectivity experiment, every resolution of a CCF volume, is one task); None if ``f``
    is not a readable source."""
    try:
        return sources.members(f)[0]
    except AboLakeError:
        return None


#: glibc malloc settings for conversion workers. distributed's default for its workers,
#: MALLOC_TRIM_THRESHOLD_=65536, also freezes glibc's mmap threshold at 128 KiB, so every
#: chunk-sized buffer is a fresh mmap whose pages fault in again: a Visual Behavior file's
#: conversion took 33 % more CPU (5.8 s vs 4.4 s). Chunk buffers (up to 8 MiB) now come from
#: the heap, and up to 16 MiB of free heap is kept before it is returned to the system
#: (larger thresholds were no faster and kept more memory).
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(16 << 20), "MALLOC_MMAP_THRESHOLD_": str(8 << 20)}


@contextlib.contextmanager
def worker_malloc() -> Iterator[None]:
    """Start dask workers in this context to give them :data:`WORKER_MALLOC`.

    distributed sets ``distributed.nanny.pre-spawn-environ`` in the parent's environment
    before spawning a worker, and an existing variable there wins over the configuration, so
    both are set here and the parent's environment is restored afterwards.
    """
    saved = {k: os.environ.get(k) for k in WORKER_MALLOC}
    os.environ.update(WORKER_MALLOC)
    prefix = "distributed.nanny.pre-spawn-environ"
    try:
        with dask.config.set({f"{prefix}.{k}": v for k, v in WORKER_MALLOC.items()}):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _threads() -> int:
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError):
        return 2


def _remote_group(fs: Any, path: str, listings: dict[str, list[str]] | None = None) -> list[str]:
    """Paths of the remote files converted together with ``path`` (see
    :func:`abo_lake.sources.group_names`), from its folder's listing (cached in
    ``listings``)."""
    parent, _, name = path.rpartition("/")
    listings = {} if listings is None else listings
    if parent not in listings:
        listings[parent] = [e.rpartition("/")[2] for e in fs.ls(parent, detail=False)]
    return [f"{parent}/{n}" for n in sources.group_names(name, listings[parent])]


def _is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def _remote(source: str, options: dict[str, Any] | None) -> tuple[Any, str, list[str]] | None:
    """``(filesystem, path, paths of its group)`` for a remote source; None for a local one."""
    if not _is_remote(source):
        return None
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(source, **(options or {}))
    return fs, path, _remote_group(fs, path)


def _remote_identity(fs: Any, members: list[str]) -> str | None:
    """A key for the content of a remote group from its objects' ETags and sizes (no
    download), or None when the store gives no ETag."""
    parts = []
    for member in members:
        info = fs.info(member)
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        if not etag:
            return None
        parts.append(f"{member.rpartition('/')[2]}:{etag}:{info.get('size')}")
    return "etag-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _fetch(fs: Any, path: str, members: list[str]) -> str:
    """Download a remote group (a connectivity experiment's volumes, a CCF volume's
    resolutions, or just the file) into a temp folder; the local path of ``path``.

    HDF5 is read from a local copy: readers seek all over the file, and over S3 that costs
    far more requests than one download (ALLEN_DATA.md §10).
    """

    # keep the parent folder's name: readers take ids from it (specimen_<id>/, experiment_<id>/)
    folder = Path(tempfile.mkdtemp(prefix="abo-lake-src-")) / Path(path).parent.name
    folder.mkdir()
    for member in members:
        fs.get(member, str(folder / member.rpartition("/")[2]))
    return str(folder / Path(path).name)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _attrs_json(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = str(v)
    return out


def _with_raw(
    path: str, fmt: str, obj: xr.Dataset | xr.DataTree
) -> xr.Dataset | xr.DataTree | dict[str, xr.Dataset]:
    """Add the lossless raw copy of what the reader did not map (HDF5 sources) as ``raw/``."""
    module = sources._module(fmt)
    mapped = getattr(module, "MAPPED_HDF5", None)
    if mapped is None or not isinstance(obj, xr.Dataset) or not h5py.is_hdf5(path):
        return obj
    from abo_lake.sources.hdf5_raw import read_raw
    from abo_lake.writer import groups

    try:
        raw = read_raw(path, skip=mapped)
    except (AboLakeError, MemoryError):
        raise
    except Exception as err:  # h5py on a corrupt file: RuntimeError, KeyError, OSError...
        raise SourceFileError(
            f"{path}: cannot read its HDF5 objects for the raw copy ({type(err).__name__}: "
            f"{err}); the file is corrupt or truncated: download it again"
        ) from err
    # group path -> Dataset: no DataTree assembly (which copies and re-tokenizes every array)
    return {"": obj, **{f"raw/{g}" if g else "raw": ds for g, ds in groups(raw).items()}}


def convert_file(
    source: str,
    lake_url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    raw: bool = True,
    fidelity: bool = True,
    source_options: dict[str, Any] | None = None,
    progress_topic: str | None = None,
    write_options: WriteOptions | None = None,
) -> FileResult:
    """Convert one source file into the lake (chunks + manifests) and record it in the ledger.

    Never raises for a bad file: the error is in ``FileResult.error`` so other files go on.
    Rerunning on an unchanged file finds its ledger record and converts nothing. Remote
    sources (``s3://...``, opened with ``source_options``) are fetched to a temporary file.
    On a ``distributed`` worker, the fraction done is sent as events on ``progress_topic``
    (see :mod:`abo_lake.progress`). ``write_options`` (codec, chunk size) other than the
    defaults are part of the resume key: changing them converts again.
    """
    options = write_options or WriteOptions()
    token = options.token()
    suffix = f"-v{CONVERTER_VERSION}" + (f"-{token}" if token else "")
    t0 = time.perf_counter()
    result = FileResult(source=source)
    if refused := _name_error(source):
        return refused
    storage = Storage(lake_url, **(storage_options or {}))
    fetched = ""
    try:
        remote = _remote(source, source_options)
        # a remote source converted before is known by its objects' ETags: no download
        remote_key = _remote_identity(remote[0], remote[2]) if remote else None
        remote_ledger = f"{LEDGER_PREFIX}/{remote_key}{suffix}.json" if remote_key else None
        if remote_ledger and storage.exists(remote_ledger):
            resumed = _usable(json.loads(storage.read(remote_ledger)))
            if resumed is not None:
                return _resumed(result, resumed)
        if remote:
            source = fetched = _fetch(*remote)
            result.bytes_fetched = sum(p.stat().st_size for p in Path(fetched).parent.iterdir())
        else:
            source = source.removeprefix("file://")
        if Path(source).is_file():  # counted even when the file turns out unreadable
            result.bytes_in = Path(source).stat().st_size
        # the files it reads: members and an NRRD's detached data (in its folder, or refused)
        group = sources.inputs(source) if Path(source).is_file() else [Path(source)]
        result.bytes_in = sum(Path(p).stat().st_size for p in group)
        digests = [_sha256_file(str(p)) for p in group]
        result.source_sha256 = (
            digests[0]
            if len(digests) == 1
            else hashlib.sha256("".join(digests).encode()).hexdigest()
        )
        ledger_key = f"{LEDGER_PREFIX}/{result.source_sha256}{suffix}.json"
        if storage.exists(ledger_key) and (
            resumed := _usable(json.loads(record := storage.read(ledger_key)))
        ):
            if remote_ledger:
                storage.write(remote_ledger, record)
            return _resumed(result, resumed)
        result.format = sources.detect_format(source)
        lake = Lake(storage)
        # inside a worker, stream with as many threads as the worker has (not cpu_count + 4)
        with dask.config.set(scheduler="threads", num_workers=_threads()):
            report = FileProgress(result.source, progress_topic)
            _convert(
                source,
                storage,
                lake,
                result,
                raw=raw,
                fidelity=fidelity,
                report=report,
                options=options,
            )
        record = json.dumps(
            {
                "source": Path(source).name,
                "source_sha256": result.source_sha256,
                "converter_version": CONVERTER_VERSION,
                "bytes_in": result.bytes_in,
                "format": result.format,
                "datasets": result.datasets,
                "manifests": sorted(result.datasets.values()),
                "kinds": result.kinds,
                "attrs": result.attrs,
                "tables": result.tables,
                "bytes_stored": result.bytes_stored,
            },
            sort_keys=True,
        ).encode()
        storage.write(ledger_key, record)
        if remote_ledger:
            storage.write(remote_ledger, record)
    except (AboLakeError, OSError, ValueError, KeyError, TypeError) as err:
        result.error = f"{type(err).__name__}: {err}"
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
    finally:
        if fetched:  # name the remote files, not their deleted temporary copies
            result.error = result.error.replace(
                str(Path(fetched).parent), result.source.rpartition("/")[0]
            )
        result.seconds = time.perf_counter() - t0
        close_files(source)
        if fetched:
            import shutil

            shutil.rmtree(Path(fetched).parent.parent, ignore_errors=True)
    return result


def _name_error(source: str) -> FileResult | None:
    """A failed result for a source whose name is not UTF-8 (None for any other): such a
    name cannot be sent to a ``distributed`` worker (the job hung) nor stored in a
    dataset's attributes or a resume record. The error shows the name with its odd bytes
    escaped (``\\xff``)."""
    try:
        source.encode("utf-8")
        return None
    except UnicodeEncodeError:
        raw = os.fsencode(source)
    shown = raw.decode("utf-8", "backslashreplace")
    return FileResult(
        source=shown,
        error=f"SourceFileError: {shown}: the file name is not UTF-8 ({raw!r}); abo_lake "
        "stores source names as text: rename the file (or its folder) to a UTF-8 name",
    )


def _usable(record: dict[str, Any]) -> dict[str, Any] | None:
    """A resume record, or None if it holds text that is not UTF-8 (written from a file
    name of other bytes by an older version): that file is converted again instead, and its
    record replaced."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        logger.warning("resume record of %s has a name that is not UTF-8; converting again",
                       record.get("source_sha256", "?"))  # fmt: skip
        return None
    return record


def _resumed(result: FileResult, record: dict[str, Any]) -> FileResult:
    """``result`` filled from a resume ledger record: nothing is converted again."""
    result.format = record["format"]
    result.datasets = record["datasets"]
    result.kinds = record["kinds"]
    result.attrs = record["attrs"]
    result.tables = record.get("tables", {})
    result.bytes_stored = record.get("bytes_stored", 0)
    result.source_sha256 = result.source_sha256 or record.get("source_sha256", "")
    result.bytes_in = result.bytes_in or record.get("bytes_in", 0)
    result.resumed = True
    return result


#: Share of a dataset's progress given to writing it (the fidelity check has the rest).
WRITE_SHARE = 0.6


def _convert(
    source: str,
    storage: Storage,
    lake: Lake,
    result: FileResult,
    *,
    raw: bool,
    fidelity: bool,
    report: Callable[..., None] = lambda *a, **k: None,
    options: WriteOptions | None = None,
) -> None:
    datasets = sources.read(source, result.format)
    n = len(datasets)
    for i, (path, obj) in enumerate(datasets.items()):
        kind = obj.attrs.get(schema.KIND_ATTR)
        if kind in schema.LAYOUTS and isinstance(obj, xr.Dataset):
            schema.validate(obj, kind)
        obj.attrs["source_file"] = Path(source).name
        obj.attrs["source_sha256"] = result.source_sha256
        stored = _with_raw(source, result.format, obj) if raw else obj
        manifest, new, new_bytes = write_dataset(
            storage,
            stored,
            progress=lambda f, i=i: report((i + WRITE_SHARE * f) / n),
            options=options,
        )
        if fidelity and isinstance(stored, dict):
            _check_fidelity(
                source,
                lake,
                manifest,
                result.format,
                lambda f, i=i: report((i + WRITE_SHARE + (1 - WRITE_SHARE) * f) / n),
            )
        elif fidelity:
            _check_file_fidelity(source, lake, manifest, result.format, stored)
        report((i + 1) / n, force=True)
        result.datasets[path] = lake.put_manifest(manifest)
        result.new_objects += new
        result.new_bytes += new_bytes
        result.bytes_stored += manifest.nbytes
        result.kinds[path] = kind or ""
        result.attrs[path] = _attrs_json(obj.attrs)
        for name, table in row_tables(obj, kind).items():
            result.tables.setdefault(name, []).append(_put_table(storage, table))


def _put_table(storage: Storage, table: pd.DataFrame) -> str:
    buf = io.BytesIO()
    table.to_parquet(buf, index=True, compression="zstd")
    h, _ = cas.put(storage, buf.getvalue())
    return h


def _check_fidelity(
    source: str,
    lake: Lake,
    manifest: Any,
    fmt: str,
    report: Callable[[float], None] = lambda f: None,
) -> None:
    """Compare what the lake holds with every dataset of the source, reading back from the lake.

    The raw group bit for bit; the curated Dataset through each reader's documented
    transforms (``fidelity_mappings``), including a check that every mapped HDF5 dataset is
    covered. Big arrays are compared block by block.
    """
    from abo_lake.chunk_codec import chunked_as_stored
    from abo_lake.fidelity import assert_faithful, check_raw
    from abo_lake.fidelity_mapped import check_reader
    from abo_lake.stores import ManifestStore

    store = ManifestStore(lake.storage, manifest, label=f"conversion of {Path(source).name}")
    # open the raw group as its own root: no coordinates inherited from the curated Dataset
    raw = _reopened(store, tree=True, group="raw")
    skip = getattr(sources._module(fmt), "MAPPED_HDF5", ())
    curated = _reopened(store)
    chunked = chunked_as_stored(curated)
    problems = check_raw(source, raw, skip=skip)
    report(0.5)  # the raw group checked; the curated layout next
    problems += check_reader(source, fmt, curated, chunked=chunked)
    assert_faithful(problems, source=source)


def _check_file_fidelity(
    source: str, lake: Lake, manifest: Any, fmt: str, obj: xr.Dataset | xr.DataTree
) -> None:
    """The fidelity check of NRRD, JSON and SWC sources (:mod:`abo_lake.fidelity_files`):
    each file of the group re-parsed on its own and compared with what the lake holds."""
    from abo_lake.fidelity import assert_faithful
    from abo_lake.fidelity_files import check_group
    from abo_lake.stores import ManifestStore

    store = ManifestStore(lake.storage, manifest, label=f"conversion of {Path(source).name}")
    opened = _reopened(store, tree=isinstance(obj, xr.DataTree))
    assert_faithful(check_group(sources.members(source), fmt, opened), source=source)


def _reopened(store: Any, *, tree: bool = False, group: str | None = None) -> Any:
    """A just-written dataset opened lazily from ``store`` (a ManifestStore) for a check; its
    reads decode in this thread (no event-loop hops per, often tiny, array or dask block)."""
    from abo_lake.chunk_codec import read_in_thread

    opened = (
        xr.open_datatree(
            store, engine="zarr", group=group, consolidated=True, chunks=None, zarr_format=3
        )
        if tree
        else xr.open_zarr(store, consolidated=True, chunks=None, zarr_format=3)
    )
    read_in_thread(opened, store.read_chunk, get_many=store.read_chunks)  # a span per pack
    return opened


@dataclass
class JobReport:
    """Outcome of :func:`run`."""

    release: str
    files: list[FileResult]
    published: bool = False
    seconds: float = 0.0
    #: The release was published before this job ran (with this job's content, when no file
    #: failed: otherwise the job raised ReleaseExistsError).
    already_published: bool = False
    #: Things the user should know that did not fail the job (a CSV that matched no table).
    notes: list[str] = field(default_factory=list)
    #: Keys of an already-published release this rerun found missing or stale and wrote.
    repaired: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[FileResult]:
        """Files that could not be converted."""
        return [f for f in self.files if f.error]

    def summary(self) -> str:
        """The table printed at the end of a job."""
        ok = [f for f in self.files if not f.error]
        bytes_in = sum(f.bytes_in for f in self.files)
        new = sum(f.new_objects for f in ok)
        stored, new_bytes = sum(f.bytes_stored for f in ok), sum(f.new_bytes for f in ok)
        resumed = sum(f.resumed for f in ok)
        lines = [
            f"release {self.release}: "
            + (
                (
                    "already published, unchanged (files of this rerun failed)"
                    if self.failures
                    else "already published with this content"
                    + (f"; completed {', '.join(self.repaired)}" if self.repaired else "")
                )
                if self.already_published
                else ("published" if self.published else "NOT published")
            ),
            f"  files      {len(self.files)}: {len(ok) - resumed} converted, {resumed} already "
            f"converted before, {len(self.failures)} failed",
            f"  datasets   {len({p for f in ok for p in f.datasets})}",
            f"  bytes in   {bytes_in / 1e6:.1f} MB"
            + (
                f" ({sum(f.bytes_fetched for f in self.files) / 1e6:.1f} MB downloaded)"
                if any(_is_remote(f.source) for f in self.files)
                else ""
            ),
            f"  stored     {stored / 1e6:.1f} MB of chunks",
            f"  new        {new_bytes / 1e6:.1f} MB in {new} new chunk objects",
            f"  dedup      {1 - new_bytes / stored:.0%} of the stored bytes were stored once "
            "already (in the lake, or earlier in this job)"
            if stored
            else "  dedup      - (nothing stored)",
            f"  time       {self.seconds:.1f} s",
        ]
        lines += [f"  note       {note}" for note in self.notes]
        for f in self.failures:
            lines.append(f"  FAILED {f.source}: {f.error.splitlines()[0]}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "release": self.release,
            "published": self.published,
            "already_published": self.already_published,
            "notes": self.notes,
            "seconds": self.seconds,
            "files": [asdict(f) for f in self.files],
        }


def run(
    specs: Sequence[str | Path],
    lake: Lake,
    release: str,
    *,
    scheduler: str | None = None,
    workers: int = 2,
    publish: bool = True,
    metadata: Sequence[str | Path] = (),
    notes: str = "",
    progress: bool | Callable[[int, int], None] | None = None,
    source_options: dict[str, Any] | None = None,
    write_options: WriteOptions | None = None,
) -> JobReport:
    """Convert sources into a release on dask.distributed; publish if every file succeeded.

    Parameters
    ----------
    specs
        Files, folders or globs.
    lake
        Target lake.
    release
        Name of the release to stage. If it is already published, the job is a rerun (after
        a crash just after publishing, say): every file resumes, and the job succeeds when it
        makes exactly that release, and raises ReleaseExistsError when it makes another.
    scheduler
        Address of a running dask scheduler (``tcp://...``, a dask-gateway cluster's
        address); default: a LocalCluster of ``workers`` processes.
    publish
        Publish when everything succeeded (otherwise only convert; a rerun resumes).
    metadata
        Project metadata CSVs joined into the release tables by id.
    progress
        Show a progress bar of source bytes done, moving within files too (default: when
        stderr is a terminal), or call ``progress(bytes done, bytes in all)`` instead.
    write_options
        Codec and default chunk size (a job specification's ``codec`` and ``chunk_mb``).
    """
    import distributed
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    read_csvs(metadata)  # a broken CSV fails the job before any conversion
    files = plan(specs, source_options)
    if not files:
        raise FileNotFoundError(f"no source files found in {list(map(str, specs))}")
    refused = [r for f in files if (r := _name_error(f))]  # never sent to a worker
    files = [f for f in files if not _name_error(f)]
    sizes = {f: _size(f, source_options) for f in files}
    existing = lake.release(release).record if release in lake.releases() else None
    show = sys.stderr.isatty() if progress is None else bool(progress)
    cluster = None
    if scheduler is None:
        with worker_malloc():
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
    client = distributed.Client(cluster or scheduler, set_as_default=False)
    results: list[FileResult] = list(refused)
    csv_notes: list[str] = []
    opened = lake.stage(release, notes=notes) if existing is None else _rerun(lake, release)
    raced, stage = False, None
    try:
        with opened as stage:
            bar = tqdm(
                total=sum(sizes.values()),
                unit="B",
                unit_scale=True,
                disable=not show or callable(progress),
                desc=f"converting {len(files)} files",
            )
            done = BytesDone(
                sizes, progress if callable(progress) else lambda n, _: bar.update(n - bar.n)
            )
            topic = f"abo_lake.progress.{uuid.uuid4().hex}"  # this job's files only
            client.subscribe_topic(topic, done.event)
            futures = client.map(
                convert_file,
                sorted(files, key=sizes.__getitem__, reverse=True),  # largest first
                lake_url=lake.url,
                storage_options=lake.storage.storage_options,
                source_options=source_options,
                progress_topic=topic,
                write_options=write_options,
                pure=False,
            )
            with _heartbeats(stage):
                for future in distributed.as_completed(futures, loop=client.loop):
                    res = future.result()
                    results.append(res)
                    done.finished(res.source)
                    failed = sum(bool(r.error) for r in results)
                    bar.set_postfix(files=len(results), failed=failed)
            client.unsubscribe_topic(topic)
            bar.close()
            results.sort(key=lambda r: r.source)
            _fail_on_shared_paths(results)
            stage.add_many(  # their manifests read at once, not one request per dataset
                (path, h, res.kinds.get(path) or None)
                for res in results
                if not res.error
                for path, h in res.datasets.items()
            )
            for name, table in build_tables(results, metadata, lake.storage, csv_notes).items():
                stage.write_table(name, table)
            if any(r.error for r in results) or not publish or existing is not None:
                raise _NotPublished
    except _NotPublished:
        pass
    except ReleaseExistsError:
        if stage is None:  # published by another job before ours could open its stage
            raise
        # another job published this name while ours ran: fine if it is the same release
        existing, raced = lake.release(release).record, True
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    report = JobReport(release, results, seconds=time.perf_counter() - t0)
    report.notes += csv_notes
    if existing is None:
        report.published = release in lake.releases()
    else:  # published before (or by another job meanwhile); unchanged by this job
        report.published = report.already_published = True
        if not report.failures:
            _same_as_published(stage, existing, lake.url, raced=raced)
            # the same release: complete what its first publish may have left undone (a
            # lost response to the record's PUT, a kill before the catalog)
            report.repaired = [key for key, _ in lake.repair(release)]
    return report


@contextlib.contextmanager
def _heartbeats(stage: Stage) -> Iterator[None]:
    """Send the stage's heartbeat every ``HEARTBEAT_SECONDS`` while the block runs (files
    converting; nothing else touches the stage meanwhile), so GC counts a job with hour-long
    files as open. A failed heartbeat is tried again at the next beat."""
    import threading

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                stage.heartbeat()
            except Exception as err:  # the job goes on; GC may take the stage as stale
                logger.warning(
                    "stage %s of release %r: heartbeat failed (%s: %s); trying again in %.0f s",
                    stage.id, stage.name, type(err).__name__, err, HEARTBEAT_SECONDS,
                )  # fmt: skip

    thread = threading.Thread(target=beat, name="abo-lake-stage-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _rerun(lake: Lake, release: str) -> Iterator[Stage]:
    """A stage for a job whose release is already published: built as the first run built
    it (every file resumed from the ledger) to be compared with it; never published."""
    stage = Stage(lake, release, notes="")
    stage._heartbeat()  # what it references is protected from gc meanwhile
    try:
        yield stage
    finally:
        stage._discard()


def _same_as_published(stage: Stage, record: Any, lake_url: str, *, raced: bool = False) -> None:
    """Raise ReleaseExistsError unless ``stage`` holds exactly the published ``record``
    (``raced``: another job published it while this one ran)."""
    if stage.root == record.content_root:
        return
    ours = {p: d["manifest"] for p, d in stage.datasets.items()}
    theirs = {p: d["manifest"] for p, d in record.datasets.items()}
    differ = sorted(p for p in ours.keys() | theirs.keys() if ours.get(p) != theirs.get(p))
    tables = sorted(
        n
        for n in stage.tables.keys() | record.tables.keys()
        if (stage.tables.get(n) or {}).get("object") != (record.tables.get(n) or {}).get("object")
    )
    shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
    when = "was published by another job while this one ran" if raced else "already exists"
    raise ReleaseExistsError(
        f"release {record.name!r} {when} in lake {lake_url} with other content: "
        f"{len(differ)} dataset(s) differ ({shown or 'none'}), table(s) differ: "
        f"{', '.join(tables) or 'none'}. Releases are immutable; publish a new name."
    )


def _fail_on_shared_paths(results: Sequence[FileResult]) -> None:
    """Fail each file whose dataset path another file already made with other content: a
    release holds one version of a dataset, and keeping either would silently drop the other
    (e.g. the same session converted from two different files)."""
    owners: dict[str, FileResult] = {}
    for res in results:
        if res.error:
            continue
        for path, h in res.datasets.items():
            first = owners.setdefault(path, res)
            if first is not res and first.datasets[path] != h:
                res.error = (
                    f"ValueError: {res.source} makes dataset {path!r}, which "
                    f"{first.source} also makes with other content; a release "
                    "holds one version of each dataset: convert them into separate releases "
                    "or leave one out"
                )
                break


def _size(source: str, options: dict[str, Any] | None = None) -> int:
    if "://" in source:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(source, **(options or {}))
        return int(fs.size(path) or 0)
    return Path(source).stat().st_size


class _NotPublished(Exception):
    """Leave the stage without publishing (a file failed, or publish=False)."""
