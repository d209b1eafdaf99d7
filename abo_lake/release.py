"""The read side of a published release: list its datasets, open them lazily."""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from abo_lake import cas
from abo_lake.chunk_codec import chunked_as_stored, read_in_thread
from abo_lake.errors import DatasetNotFoundError, IntegrityError, ManifestError
from abo_lake.manifest import Manifest, manifest_key, root_hash
from abo_lake.stores import ManifestStore

if TYPE_CHECKING:
    from abo_lake.lake import Lake

__all__ = ["Release", "ReleaseHead", "ReleaseRecord", "record_root"]


#: Fields of a release record; a record with any other field is refused.
_RECORD_FIELDS = {
    "format",
    "name",
    "root",
    "created",
    "abo_lake_version",
    "notes",
    "datasets",
    "tables",
}


def record_root(doc: dict[str, Any]) -> str:
    """The root hash of a format-2 release record: sha256 over its canonical JSON without
    ``root`` itself, so it covers every published field (name, created, notes, each dataset's
    manifest, kind and nbytes, each table's object, rows and columns)."""
    body = {k: v for k, v in doc.items() if k != "root"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ReleaseRecord:
    """What ``releases/<name>/release.json`` holds (written last, never changed).

    ``root`` is what ``name@root`` pins. Format 2 (every record published now): the hash of
    the whole record (:func:`record_root`). Format 1 (older records): the hash of the content
    only (:attr:`content_root`), leaving the other fields unprotected.
    """

    name: str
    root: str
    created: str
    abo_lake_version: str
    notes: str
    datasets: dict[str, dict[str, Any]]  # path -> {"manifest": hash, "kind": ..., "nbytes": ...}
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"object", "rows"}
    format: int = 1

    @classmethod
    def sealed(cls, **fields: Any) -> ReleaseRecord:
        """A format-2 record of ``fields`` (all but ``root`` and ``format``), root computed."""
        record = cls(root="", format=2, **fields)
        return replace(record, root=record_root(record._doc()))

    @property
    def pin(self) -> str:
        """``name@root`` with a 12-hex root: enough to pin a study to this exact content."""
        return f"{self.name}@{self.root[:12]}"

    @property
    def content_root(self) -> str:
        """The hash over the datasets' manifests and the tables' objects only: equal for
        equal content whatever the name, time or notes (what a rerun is compared by)."""
        return root_hash(
            {p: d["manifest"] for p, d in self.datasets.items()},
            {n: t["object"] for n, t in self.tables.items()},
        )

    def _doc(self) -> dict[str, Any]:
        doc = {
            "name": self.name,
            "root": self.root,
            "created": self.created,
            "abo_lake_version": self.abo_lake_version,
            "notes": self.notes,
            "datasets": self.datasets,
            "tables": self.tables,
        }
        if self.format != 1:
            doc["format"] = self.format
        return doc

    def to_bytes(self) -> bytes:
        return json.dumps(self._doc(), indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> ReleaseRecord:
        """Parse and check a release record (its root hash must match what it covers)."""
        try:
            doc = json.loads(data)
            record = cls(
                name=str(doc["name"]),
                root=str(doc["root"]),
                created=str(doc["created"]),
                abo_lake_version=str(doc.get("abo_lake_version", "")),
                notes=str(doc.get("notes", "")),
                datasets={str(k): dict(v) for k, v in doc["datasets"].items()},
                tables={str(k): dict(v) for k, v in (doc.get("tables") or {}).items()},
                format=int(doc.get("format", 1)),
            )
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise ManifestError(f"{where}: unreadable release record ({err!r})") from err
        if record.format == 2:
            unknown = sorted(set(doc) - _RECORD_FIELDS)
            if unknown:
                raise ManifestError(f"{where}: unknown release record field(s) {unknown}")
            expected, what = record_root(doc), "its fields"
        elif record.format == 1:
            expected, what = record.content_root, "its datasets"
        else:
            raise ManifestError(f"{where}: unknown release record format {record.format}")
        if expected != record.root:
            raise ManifestError(
                f"{where}: root hash {record.root[:12]} does not match {what} "
                f"({expected[:12]}); the record was altered"
            )
        return record


@dataclass(frozen=True)
class ReleaseHead:
    """What ``releases/<name>/head.json`` holds: a few hundred bytes that let a lake list
    its releases and sum their sizes without reading every full record.

    Written just after the record by the publisher that won the name (and again by
    :meth:`abo_lake.lake.Lake.repair` if missing or altered). ``record`` is the sha256 of the
    record's exact bytes, so a listing checks a record by hashing it, without parsing it;
    ``seal`` is the sha256 over the head's other fields (an altered head is not trusted: the
    record is then checked on its own). ``summary`` is what :meth:`abo_lake.lake.Lake.stats`
    needs: ``datasets``, ``logical_bytes`` (sum of the datasets' ``nbytes``), ``objects``
    and ``object_bytes`` (unique chunk objects the release references and their stored
    bytes), ``previous`` (the release created just before, or None) and ``new_objects`` /
    ``new_object_bytes`` (those not referenced by ``previous``).
    """

    name: str
    created: str
    root: str
    record: str
    summary: dict[str, Any]
    seal: str = ""

    def _body(self) -> dict[str, Any]:
        return {
            "format": 1,
            "name": self.name,
            "created": self.created,
            "root": self.root,
            "record": self.record,
            "summary": self.summary,
        }

    @classmethod
    def of(cls, record: ReleaseRecord, record_bytes: bytes, summary: dict) -> ReleaseHead:
        """The sealed head of ``record`` (stored as ``record_bytes``)."""
        head = cls(
            record.name,
            record.created,
            record.root,
            hashlib.sha256(record_bytes).hexdigest(),
            dict(summary),
        )
        return replace(head, seal=_seal(head._body()))

    def to_bytes(self) -> bytes:
        return json.dumps({**self._body(), "seal": self.seal}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> ReleaseHead:
        """Parse a head and check its seal; ManifestError naming ``where`` otherwise."""
        try:
            doc = json.loads(data)
            head = cls(
                name=str(doc["name"]),
                created=str(doc["created"]),
                root=str(doc["root"]),
                record=str(doc["record"]),
                summary=dict(doc["summary"]),
                seal=str(doc["seal"]),
            )
            body = {k: v for k, v in doc.items() if k != "seal"}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise ManifestError(f"{where}: unreadable release head ({err!r})") from err
        if doc.get("format") != 1 or _seal(body) != head.seal:
            raise ManifestError(f"{where}: release head does not match its seal; altered")
        return head

    def matches(self, record_bytes: bytes) -> bool:
        """Whether ``record_bytes`` are exactly the record this head was sealed for."""
        return hashlib.sha256(record_bytes).hexdigest() == self.record


def _seal(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


class Release:
    """One published, immutable release of a lake.

    Obtained from :meth:`abo_lake.lake.Lake.release`; never constructed directly.
    """

    def __init__(self, lake: Lake, record: ReleaseRecord) -> None:
        self.lake = lake
        self.record = record

    def __repr__(self) -> str:
        return (
            f"<abo_lake.Release {self.record.pin} · {len(self.record.datasets)} datasets · "
            f"created {self.record.created[:19]}>"
        )

    def __getattr__(self, name: str) -> Any:
        """Metadata tables as attributes: ``rel.ophys_experiments.search(cre_line="Sst")``."""
        record = self.__dict__.get("record")
        if name.startswith("_") or record is None or name not in record.tables:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        from abo_lake.tables import release_table

        return release_table(self, name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.record.tables})

    @property
    def name(self) -> str:
        """The release name, e.g. ``"2026.1"``."""
        return self.record.name

    @property
    def root(self) -> str:
        """The root hash over the release's manifests."""
        return self.record.root

    @property
    def pin(self) -> str:
        """``name@root`` (short root) for reproducible studies."""
        return self.record.pin

    def datasets(self, prefix: str = "") -> list[str]:
        """Dataset paths in this release, optionally only those under ``prefix``."""
        return sorted(p for p in self.record.datasets if p.startswith(prefix))

    def tables(self) -> list[str]:
        """Names of the release's metadata tables (``ophys_experiments``, ``units``, ...)."""
        return sorted(self.record.tables)

    def table(self, name: str) -> pd.DataFrame:
        """Load one metadata table (one Parquet object) as a DataFrame."""
        entry = self.record.tables.get(name)
        if entry is None:
            raise DatasetNotFoundError(
                f"no table {name!r} in release {self.pin}; tables: {self.tables()}"
            )
        data = self.lake.storage.read(cas.key_of(entry["object"]))
        if cas.digest(data) != entry["object"]:
            raise IntegrityError(f"{self.pin}: table {name!r} is corrupt")
        return pd.read_parquet(io.BytesIO(data))

    def table_url(self, name: str) -> str:
        """URL of a table's Parquet object (readable by pandas without abo_lake)."""
        return self.lake.storage.url_of(cas.key_of(self.record.tables[name]["object"]))

    def kind(self, path: str) -> str | None:
        """The ``abo_lake_kind`` recorded for a dataset."""
        return self._entry(path).get("kind")

    def _entry(self, path: str) -> dict[str, Any]:
        path = path.strip("/")
        entry = self.record.datasets.get(path)
        if entry is None:
            paths = list(self.record.datasets)
            near = difflib.get_close_matches(path, paths, n=5, cutoff=0.6)
            near += [p for p in paths if p.startswith(path) and p not in near][:5]
            hint = f"; did you mean {near!r}?" if near else f"; it has {len(paths)} datasets"
            raise DatasetNotFoundError(
                f"no dataset {path!r} in release {self.pin}{hint} (see Release.datasets())"
            )
        return entry

    def manifest(self, path: str) -> Manifest:
        """The manifest of one dataset (validated)."""
        h = self._entry(path)["manifest"]
        return self.lake._manifest(h, where=f"release {self.name}, dataset {path!r}")

    def store(self, path: str, *, verify: bool = False) -> ManifestStore:
        """A read-only Zarr store of one dataset (for zarr users; xarray users call open)."""
        return ManifestStore(
            self.lake.storage, self.manifest(path), label=f"{self.pin}:{path}", verify=verify
        )

    def open(
        self, path: str, *, group: str | None = None, verify: bool = False, chunks: Any = None
    ) -> xr.Dataset:
        """Open one dataset lazily (dask-backed); only the chunks you compute are read.

        Parameters
        ----------
        path
            Dataset path, e.g. ``"ophys/experiment/951980471"``.
        group
            A sub-group of the dataset (multiscale level, ``raw/...``).
        verify
            Hash-check every chunk as it is read; raises :class:`IntegrityError` on mismatch.
        chunks
            Dask chunks; default: one dask chunk per stored object (a pack of chunks, or
            one chunk), each read with one request.

        Returns
        -------
        xarray.Dataset
            With ``attrs["abo_lake_release"]``, ``["abo_lake_release_root"]`` and
            ``["abo_lake_dataset"]`` recording exactly what was opened.
        """
        store = self.store(path, verify=verify)
        # index coordinates too large to be inline: read together, not one after another
        store.prefetch(store.index_chunks(group or ""))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"zarr\..*")
            ds = xr.open_zarr(store, group=group, consolidated=True, chunks=chunks, zarr_format=3)
        if chunks is None:  # one dask chunk per stored object, decoded in the task's thread
            # (no event-loop hop per chunk; the store checked each chunk's CRC already)
            read_in_thread(
                ds,
                store.read_chunk,
                store.decode_error,
                crc_checked=True,
                get_many=store.read_chunks,
            )
            prefix = f"{group.strip('/')}/" if group and group.strip("/") else ""
            packs = {
                k[len(prefix) :]: v
                for k, v in store.manifest.packs.items()
                if k.startswith(prefix) and "/" not in k[len(prefix) :]
            }
            ds = chunked_as_stored(ds, packs)
        # store.chunk_reads / .requests / .bytes_read: what was read from the lake so far
        ds.encoding["abo_lake_store"] = store
        return self._stamp(ds, path)

    def open_datatree(self, path: str, *, verify: bool = False) -> xr.DataTree:
        """Open a dataset with all its groups (multiscale levels, raw carry-over) lazily."""
        store = self.store(path, verify=verify)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"zarr\..*")
            tree = xr.open_datatree(
                store, engine="zarr", consolidated=True, chunks={}, zarr_format=3
            )
        for node in tree.subtree:
            node.attrs.update(self._stamp_attrs(path))
        return tree

    def _stamp_attrs(self, path: str) -> dict[str, str]:
        return {
            "abo_lake_release": self.name,
            "abo_lake_release_root": self.root,
            "abo_lake_dataset": path,
        }

    def _stamp(self, ds: xr.Dataset, path: str) -> xr.Dataset:
        ds.attrs.update(self._stamp_attrs(path))
        return ds

    @cached_property
    def nbytes(self) -> int:
        """Stored bytes of all datasets (what downloading the whole release would move)."""
        return sum(int(d.get("nbytes", 0)) for d in self.record.datasets.values())

    def storage_options(self) -> dict[str, Any]:
        """``storage_options`` for opening a dataset with plain xarray + fsspec (no abo_lake).

        Examples
        --------
        >>> so = rel.storage_options()  # doctest: +SKIP
        >>> so["fo"] = rel.manifest_url("ophys/experiment/1")  # doctest: +SKIP
        >>> xr.open_dataset("reference://", engine="zarr", storage_options=so)  # doctest: +SKIP
        """
        st = self.lake.storage
        remote = "file" if st.local else st.protocol
        return {
            "remote_protocol": remote,
            "remote_options": {**st.storage_options, "asynchronous": True},
            "target_protocol": remote,
            "target_options": dict(st.storage_options),
        }

    def manifest_url(self, path: str) -> str:
        """URL of a dataset's manifest (a standard fsspec reference file)."""
        return self.lake.storage.url_of(manifest_key(self._entry(path)["manifest"]))
