"""A lake: immutable, versioned releases over content-addressed chunk objects.

Layout (``DESIGN.md``)::

    <lake>/cas/<2 hex>/<sha256>            chunk objects
    <lake>/manifests/<2 hex>/<sha256>.json one per dataset version (fsspec reference format)
    <lake>/releases/<name>/release.json    written last, put-if-absent
    <lake>/releases/<name>/head.json       its digest and size summary (listing, stats)
    <lake>/stages/<id>/stage.json          work in progress, with a heartbeat
    <lake>/stages/<id>/parts/<n>.json      what it staged, appended at each heartbeat
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import pandas as pd
import xarray as xr

from abo_lake import cas
from abo_lake.errors import ManifestError, ReleaseExistsError, ReleaseNotFoundError
from abo_lake.manifest import MANIFEST_PREFIX, Manifest, manifest_key, root_hash
from abo_lake.record import RECORDS_PREFIX, PartitionedDatasets, part_key
from abo_lake.release import Release, ReleaseHead, ReleaseRecord
from abo_lake.storage import Storage, default_lake_url
from abo_lake.writer import write_dataset

__all__ = [
    "COMPLETENESS_HOOKS",
    "LEDGER_PREFIX",
    "MIN_GRACE",
    "PUBLISH_HOOKS",
    "VERIFY_HOOKS",
    "Lake",
    "Stage",
    "object_sizes",
    "open_lake",
]

#: Conversion resume records: ``ledger/<source content hash>.json``.
LEDGER_PREFIX = "ledger"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PATH_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")

#: Called as ``hook(lake, record)`` just after a release is published, by the writer whose
#: record won the name (the catalog module registers the catalog writer here): a writer that
#: lost, or was killed before publishing, leaves no catalog of its content.
PUBLISH_HOOKS: list[Callable[[Lake, ReleaseRecord], None]] = []
#: Manifests read at once (concurrently on S3) by diff, stats, verify, GC and publishing.
MANIFEST_BATCH = 256
#: Keys GC deletes at once; between batches it stops if a new stage has opened.
GC_BATCH = 1000
#: Seconds between the heartbeats a long-running writer (a job) sends (:meth:`Stage.heartbeat`).
HEARTBEAT_SECONDS = 30.0
#: The smallest grace :meth:`Lake.gc` accepts while a stage has sent a heartbeat within it:
#: four heartbeats, so a job whose heartbeat failed three times in a row still counts as open.
MIN_GRACE = timedelta(seconds=4 * HEARTBEAT_SECONDS)
#: Called by :meth:`Lake.verify` with (lake, record, report) to check what a publish hook
#: wrote; they append to ``report.missing`` / ``report.corrupt``.
VERIFY_HOOKS: list[Callable[[Lake, ReleaseRecord, VerifyReport], None]] = []
#: Called as ``hook(lake, record) -> [(key, state)]`` to list what the publish hooks should
#: have written for ``record`` but is ``"missing"``, ``"stale"`` (out of date with the lake)
#: or ``"altered"`` (differs from what the record derives); empty when the release is
#: complete. :meth:`Lake.repair` runs the publish hooks again when any is listed (the
#: :data:`VERIFY_HOOKS` report the same parts: missing or stale as incomplete, altered as
#: corrupt).
COMPLETENESS_HOOKS: list[Callable[[Lake, ReleaseRecord], list[tuple[str, str]]]] = []


def open_lake(
    url: str | None = None,
    *,
    cache: str | os.PathLike | None = None,
    cache_max_bytes: int | None = None,
    **storage_options: Any,
) -> Lake:
    """Open a lake.

    Parameters
    ----------
    url
        ``None`` for ``$ABO_LAKE_URL`` or the local default folder
        (``~/.local/share/abo-lake/lake``); a local path; or any fsspec URL such as
        ``"s3://bucket/prefix"``.
    cache
        Opt-in local folder (e.g. ``"~/.cache/abo-lake"``) caching chunk objects and
        manifests by their content hash (checked on every read; records, catalogs and
        listings are never cached), so a rerun notebook fetches no chunk twice.
    cache_max_bytes
        Bound of the cache folder (least recently used entries go first; 10 GiB default).
    **storage_options
        For the filesystem, e.g. ``anon=True`` for a public bucket, ``endpoint_url=...``
        for an S3-compatible store.

    Examples
    --------
    >>> lake = abo_lake.open_lake()  # doctest: +SKIP
    >>> lake.releases()  # doctest: +SKIP
    ['2026.1', '2026.2']
    """
    url = url or default_lake_url()
    if cache is not None:
        from abo_lake.cache import DEFAULT_MAX_BYTES, CachedStorage

        return Lake(
            CachedStorage(url, cache, cache_max_bytes or DEFAULT_MAX_BYTES, **storage_options)
        )
    return Lake(Storage(url, **storage_options))


def _now() -> datetime:
    return datetime.now(UTC)


def object_sizes(manifest: Manifest) -> dict[str, int]:
    """Object hash -> stored bytes of each object ``manifest`` references, once per object
    (several chunk keys may share one object: a pack, or equal chunks)."""
    sizes = getattr(manifest, "object_sizes", None)  # Manifest.object_sizes (packed chunks)
    if sizes is not None:
        return sizes()
    return {h: manifest.sizes.get(k, 0) for k, h in manifest.chunks.items()}


def parse_duration(text: str | timedelta) -> timedelta:
    """``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` or ``"0"`` -> timedelta."""
    if isinstance(text, timedelta):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise ValueError(f"cannot read duration {text!r}; use e.g. '90s', '30m', '1h', '2d'")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=float(m.group(1)) * unit)


class Lake:
    """Releases, staging and maintenance of one lake. Use :func:`open_lake`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._records: dict[str, ReleaseRecord] = {}
        self._heads: dict[str, ReleaseHead] = {}
        self._listed: dict[str, bytes] = {}  # record bytes read by releases(), not yet parsed
        self._manifests: dict[str, Manifest] = {}
        self._parts: dict[str, Any] = {}  # record part or index object hash -> its content

    def __repr__(self) -> str:
        return f"<abo_lake.Lake {self.storage.url!r}>"

    @property
    def url(self) -> str:
        """The lake's URL."""
        return self.storage.url

    # -- releases --------------------------------------------------------------------------
    def releases(self) -> list[str]:
        """Published release names, oldest first.

        A record that does not check (altered, or copied under another folder name) is left
        out with a warning: it is not a release of this lake. One listing, then every record
        and head read at once; a record whose head (sealed at publish) holds its sha256 is
        checked by hashing its bytes, without parsing it.
        """
        keys = self.storage.glob("releases/*/*.json")
        names = sorted({k.split("/")[1] for k in keys if k.endswith("/release.json")})
        heads = {k.split("/")[1] for k in keys if k.endswith("/head.json")}
        wanted = [f"releases/{n}/release.json" for n in names if _NAME_RE.match(n)]
        wanted += [f"releases/{n}/head.json" for n in names if n in heads and _NAME_RE.match(n)]
        got = self.storage.read_many(wanted)
        created: dict[str, str] = {}
        for name in names:
            try:
                created[name] = self._check_listed(name, got)
            except (ManifestError, ReleaseNotFoundError) as err:
                warnings.warn(f"not listed: {err}", UserWarning, stacklevel=2)
        listed = sorted(created, key=lambda n: (created[n], n))
        # keep the bytes of the newest record only (what release("latest") parses next)
        self._listed = {n: d for n, d in self._listed.items() if listed and n == listed[-1]}
        return listed

    def _check_listed(self, name: str, got: Mapping[str, bytes | Exception]) -> str:
        """Check the record of ``name`` read by :meth:`releases`; return its creation time."""
        _check_release_name(name, self.url)
        key, head_key = f"releases/{name}/release.json", f"releases/{name}/head.json"
        data = got.get(key)
        if isinstance(data, FileNotFoundError):
            raise self._not_found(name)
        if isinstance(data, Exception):
            raise data
        assert isinstance(data, bytes)
        head_data = got.get(head_key)
        if isinstance(head_data, bytes):
            try:
                head = ReleaseHead.from_bytes(head_data, where=self.storage.url_of(head_key))
            except ManifestError:
                head = None  # derived data: the record is checked on its own
            if head is not None and head.name == name and head.matches(data):
                self._heads[name] = head
                if name not in self._records:
                    self._listed[name] = data
                return head.created
        self._heads.pop(name, None)
        self._listed.pop(name, None)
        self._records[name] = self._checked_record(name, data)
        return self._records[name].created

    def _record(self, name: str) -> ReleaseRecord:
        _check_release_name(name, self.url)  # no name reaches outside releases/<name>/
        if name not in self._records:
            key = f"releases/{name}/release.json"
            data = self._listed.pop(name, None)
            if data is None:
                try:
                    data = self.storage.read(key)
                except FileNotFoundError:
                    raise self._not_found(name) from None
            self._records[name] = self._checked_record(name, data)
        return self._records[name]

    def _checked_record(self, name: str, data: bytes) -> ReleaseRecord:
        """Parse the record stored under ``name`` and check its root and its name."""
        key = f"releases/{name}/release.json"
        record = ReleaseRecord.from_bytes(data, where=self.storage.url_of(key))
        self._bind(record)
        if record.name != name:  # its catalog would be written under the other name
            raise ManifestError(
                f"{self.storage.url_of(key)}: the record names release {record.name!r}, "
                f"not {name!r}; it was moved or altered"
            )
        return record

    def _bind(self, record: ReleaseRecord) -> None:
        """Let a format-3 record read its parts from this lake (shared parse cache)."""
        if isinstance(record.datasets, PartitionedDatasets):
            record.datasets.bind(
                self.storage.read_many, self._parts, read_fresh=self.storage.uncached.read_many
            )

    def _not_found(self, spec: str) -> ReleaseNotFoundError:
        names = [k.split("/")[1] for k in self.storage.glob("releases/*/release.json")]
        shown = ", ".join(sorted(names)[-10:]) or "none yet"
        return ReleaseNotFoundError(f"no release {spec!r} in lake {self.url}; available: {shown}")

    def release(self, spec: str = "latest") -> Release:
        """A published release: ``"latest"``, a name, or ``"name@root"`` to pin content.

        Raises
        ------
        ReleaseNotFoundError
            Listing the available releases; also when a pinned root does not match.
        """
        name, _, root = spec.partition("@")
        if name == "latest":
            names = self.releases()
            if not names:
                raise self._not_found(spec)
            name = names[-1]
        record = self._record(name)
        if root and not record.root.startswith(root.lower()):
            raise ReleaseNotFoundError(
                f"release {name!r} in lake {self.url} has root {record.root[:12]}, not "
                f"{root!r}: its content is not what the pin {spec!r} expects"
            )
        return Release(self, record)

    def _manifest(
        self, h: str, *, where: str, fresh: bool = False, lake_only: bool = False
    ) -> Manifest:
        """A manifest, parsed and checked: from memory, else read (``fresh``: read again;
        ``fresh`` or ``lake_only``: from the lake's own objects, never a local cache)."""
        if fresh or h not in self._manifests:
            key = manifest_key(h)
            storage = self.storage.uncached if fresh or lake_only else self.storage
            try:
                data: bytes | Exception = storage.read(key)
            except FileNotFoundError as err:
                data = err
            self._manifests[h] = self._parsed_manifest(h, data, where)
        return self._manifests[h]

    def _manifests_of(
        self,
        hashes: Iterable[str],
        *,
        where: str | Mapping[str, str],
        fresh: bool = False,
        lake_only: bool = False,
    ) -> tuple[dict[str, Manifest], dict[str, ManifestError]]:
        """Many manifests: those not in memory (all, if ``fresh``) read
        :data:`MANIFEST_BATCH` at a time with :meth:`Storage.read_many` (concurrent GETs on
        S3), each checked; ``fresh`` or ``lake_only``: from the lake's own objects, never a
        local cache (what staging needs: a cached copy of a manifest GC has since removed
        must not be published).

        Returns
        -------
        (manifests, errors)
            hash -> Manifest, and hash -> ManifestError for those missing or failing their
            hash or format check. Other storage errors raise.
        """
        wanted = list(dict.fromkeys(hashes))
        todo = wanted if fresh else [h for h in wanted if h not in self._manifests]
        storage = self.storage.uncached if fresh or lake_only else self.storage
        errors: dict[str, ManifestError] = {}
        for i in range(0, len(todo), MANIFEST_BATCH):
            part = todo[i : i + MANIFEST_BATCH]
            got = storage.read_many([manifest_key(h) for h in part])
            for h in part:
                place = where if isinstance(where, str) else where.get(h, "manifest")
                try:
                    self._manifests[h] = self._parsed_manifest(h, got[manifest_key(h)], place)
                except ManifestError as err:
                    errors[h] = err
        return {h: self._manifests[h] for h in wanted if h not in errors}, errors

    def _parsed_manifest(self, h: str, data: bytes | Exception, where: str) -> Manifest:
        key = manifest_key(h)
        if isinstance(data, FileNotFoundError):
            raise ManifestError(f"{where}: manifest {key} is missing from the lake")
        if isinstance(data, Exception):
            raise data
        if cas.digest(data) != h:
            raise ManifestError(f"{where}: manifest {key} does not hash to its name")
        return Manifest.from_bytes(data, where=f"{where} ({key})")

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str, *, notes: str = "") -> Iterator[Stage]:
        """Stage a release; it is published on a clean exit and discarded on an error.

        Raises
        ------
        ReleaseExistsError
            If ``name`` is already published (at entry, or when another writer published it
            first while this stage was open).
        """
        if not _NAME_RE.match(name) or name == "latest":
            raise ValueError(
                f"invalid release name {name!r}: use letters, digits, '.', '_' or '-' "
                "(e.g. '2026.1'), and not 'latest'"
            )
        if self.storage.exists(f"releases/{name}/release.json"):
            raise ReleaseExistsError(
                f"release {name!r} already exists in lake {self.url}; releases are immutable, "
                "publish a new name"
            )
        stage = Stage(self, name, notes)
        stage._heartbeat()
        try:
            yield stage
        except BaseException:
            stage._discard()
            raise
        stage._publish()

    def _newest_datasets(self) -> PartitionedDatasets | None:
        """The datasets of the newest release if it is format 3 and its record reads."""
        names = self.releases()
        try:
            datasets = self._record(names[-1]).datasets if names else None
        except (ManifestError, ReleaseNotFoundError):
            return None
        return datasets if isinstance(datasets, PartitionedDatasets) else None

    @staticmethod
    def _entries_of(datasets: PartitionedDatasets | None) -> dict[str, dict[str, Any]]:
        """Manifest hash -> its dataset entry (kind, nbytes) in ``datasets`` (a format-3
        release's, its parts read at once); empty if None or it does not read."""
        try:
            return {e["manifest"]: e for e in (datasets[p] for p in datasets or {})}
        except ManifestError:
            return {}

    def _put_parts(
        self, parts: Mapping[str, bytes], newest: PartitionedDatasets | None = None
    ) -> None:
        """Store record parts and index objects (content-addressed) that the lake does not
        hold yet: those of ``newest`` (a published release's datasets) are skipped without
        a request; the rest are written at once."""
        try:
            known = {part_key(h) for h in newest.objects()} if newest else set()
        except ManifestError:  # an index object of it does not read: write them all
            known = set()
        todo = [k for k in parts if k not in known]
        if todo:
            with ThreadPoolExecutor(min(16, len(todo))) as pool:
                list(pool.map(lambda k: self.storage.put_if_absent(k, parts[k]), todo))

    def put_manifest(self, manifest: Manifest) -> str:
        """Store a manifest (content-addressed, so idempotent); return its hash."""
        data = manifest.to_bytes(self.storage.url)
        h = cas.digest(data)
        self.storage.put_if_absent(manifest_key(h), data)
        self._manifests[h] = manifest
        return h

    # -- maintenance -----------------------------------------------------------------------
    def diff(self, a: str, b: str, *, exact_bytes: bool = False) -> ReleaseDiff:
        """What changed from release ``a`` to release ``b``, per dataset and array.

        The records' manifest hashes are compared first; only the manifests of datasets whose
        hash differs are read (at once, concurrently on S3).

        Parameters
        ----------
        exact_bytes
            ``bytes_to_fetch`` counts the objects of ``b`` that ``a``'s versions of the
            differing datasets do not hold; an object ``b`` shares with one of ``a``'s
            *unchanged* datasets is counted too, unless ``exact_bytes`` (which reads every
            manifest of ``a``, as many requests as ``a`` has datasets).
        """
        ra, rb = self.release(a), self.release(b)
        da_, db = ra.record.datasets, rb.record.datasets
        differ = sorted(
            p
            for p in set(da_) | set(db)
            if (da_.get(p) or {}).get("manifest") != (db.get(p) or {}).get("manifest")
        )
        a_side = [p for p in (sorted(da_) if exact_bytes else differ) if p in da_]
        where = {da_[p]["manifest"]: f"release {ra.name}, dataset {p!r}" for p in a_side}
        where |= {db[p]["manifest"]: f"release {rb.name}, dataset {p!r}" for p in differ if p in db}
        manifests, errors = self._manifests_of(where, where=where)
        if errors:
            raise next(iter(errors.values()))
        a_hashes = {h for p in a_side for h in manifests[da_[p]["manifest"]].chunks.values()}
        rows = []
        for path in sorted(set(da_) | set(db)):
            if path not in db:
                rows.append(DatasetChange(path, "removed"))
            elif path not in da_:
                new = {
                    h: size
                    for h, size in object_sizes(manifests[db[path]["manifest"]]).items()
                    if h not in a_hashes
                }
                rows.append(DatasetChange(path, "added", bytes_to_fetch=sum(new.values())))
            elif da_[path]["manifest"] == db[path]["manifest"]:
                rows.append(DatasetChange(path, "unchanged"))
            else:
                ma, mb = manifests[da_[path]["manifest"]], manifests[db[path]["manifest"]]
                rows.append(_dataset_change(path, ma, mb, a_hashes))
        ta, tb = ra.record.tables, rb.record.tables
        tables = []
        for name in sorted(set(ta) | set(tb)):
            if name not in tb:
                tables.append(TableChange(name, "removed"))
            elif name not in ta or ta[name]["object"] != tb[name]["object"]:
                size = self.storage.size(cas.key_of(tb[name]["object"]))
                tables.append(TableChange(name, "added" if name not in ta else "changed", size))
            else:
                tables.append(TableChange(name, "unchanged"))
        return ReleaseDiff(ra.pin, rb.pin, rows, tables)

    def stats(self, *, exact: bool = False, storage: bool = False) -> dict[str, Any]:
        """Logical bytes (every release counted in full) against bytes stored, and the ratio.

        By default everything comes from the releases' heads (summed at publish, read with
        the listing of releases: no manifest read, no listing of objects): ``stored_bytes``
        and ``chunk_objects`` are then the chunk objects some release references (what the
        lake holds once GC has run), summed over the releases in order as the objects each
        references that the release before it did not (an object dropped by one release and
        referenced again by a later one counts twice).

        Parameters
        ----------
        exact
            Read every manifest of every release and count the union instead (also done
            when a release has no head, or heads are not chained release after release).
        storage
            Also list ``cas/`` and ``manifests/`` (one request per 1,000 objects on S3,
            seconds per 100,000 objects): ``stored_bytes``, ``chunk_objects`` and
            ``manifest_bytes`` are then what is stored, unreferenced objects included.
        """
        names = self.releases()
        heads = [self._heads.get(n) for n in names]
        chained = all(
            head is not None and head.summary.get("previous") == (names[i - 1] if i else None)
            for i, head in enumerate(heads)
        )
        if chained and not exact:
            per_release = {n: int(h.summary["logical_bytes"]) for n, h in zip(names, heads)}
            referenced = sum(int(h.summary["new_objects"]) for h in heads)
            referenced_bytes = sum(int(h.summary["new_object_bytes"]) for h in heads)
        else:
            per_release, referenced, referenced_bytes = self._stats_from_manifests(names)
        out: dict[str, Any] = {
            "lake": self.url,
            "releases": per_release,
            "logical_bytes": sum(per_release.values()),
            "stored_bytes": referenced_bytes,
            "chunk_objects": referenced,
            "referenced_objects": referenced,
            "referenced_bytes": referenced_bytes,
        }
        if storage:
            objects = self.storage.find(cas.CAS_PREFIX)
            manifests = self.storage.find(MANIFEST_PREFIX)
            out["stored_bytes"] = sum(o["size"] for o in objects.values())
            out["chunk_objects"] = len(objects)
            out["manifest_bytes"] = sum(o["size"] for o in manifests.values())
        stored = out["stored_bytes"]
        out["dedup_ratio"] = (out["logical_bytes"] / stored) if stored else 1.0
        return out

    def _stats_from_manifests(self, names: list[str]) -> tuple[dict[str, int], int, int]:
        """Logical bytes per release, and the number and stored bytes of the distinct
        objects referenced, from every manifest of every release (each read once)."""
        per_release, referenced = {}, {}
        for name in names:
            record = self._record(name)
            where = {d["manifest"]: f"release {name}, dataset {p!r}" for p, d in
                     record.datasets.items()}  # fmt: skip
            manifests, errors = self._manifests_of(where, where=where)
            if errors:
                raise next(iter(errors.values()))
            per_release[name] = sum(
                manifests[d["manifest"]].nbytes for d in record.datasets.values()
            )
            for m in manifests.values():
                referenced.update(object_sizes(m))
        return per_release, len(referenced), sum(referenced.values())

    def repair(self, name: str) -> list[tuple[str, str]]:
        """Complete a published release: write again whatever its publish hooks should have
        written (catalog, root catalog entry) but is missing, stale or altered, e.g. after a
        publisher was killed between its record and its catalog.

        Returns
        -------
        list of (key, state)
            What was found incomplete (and is now written); empty if the release was complete.
        """
        record = self.release(name).record
        parts = []
        head_state = self._head_state(record)
        if head_state:  # written first: the hooks list releases (root catalog)
            self._write_head(record)
            parts.append((_head_key(record.name), head_state))
        hooked = [p for hook in COMPLETENESS_HOOKS for p in hook(self, record)]
        if hooked:
            for hook in PUBLISH_HOOKS:
                hook(self, record)
        return parts + hooked

    def _head_state(self, record: ReleaseRecord) -> str | None:
        """``"missing"`` or ``"altered"`` if the head of ``record`` is not its own; else None."""
        key = _head_key(record.name)
        try:
            head = ReleaseHead.from_bytes(self.storage.read(key), where=self.storage.url_of(key))
        except FileNotFoundError:
            return "missing"
        except ManifestError:
            return "altered"
        data = self.storage.read(f"releases/{record.name}/release.json")
        return None if head.name == record.name and head.matches(data) else "altered"

    def _write_head(self, record: ReleaseRecord, data: bytes | None = None) -> ReleaseHead:
        """Store ``releases/<name>/head.json`` of the published ``record`` (its bytes ``data``)."""
        if data is None:
            data = self.storage.read(f"releases/{record.name}/release.json")
        head = ReleaseHead.of(record, data, self._summary(record))
        self.storage.write(_head_key(record.name), head.to_bytes())
        self._heads[record.name] = head
        return head

    def _summary(self, record: ReleaseRecord) -> dict[str, Any]:
        """What a head sums up (:class:`~abo_lake.release.ReleaseHead`): the unique objects
        ``record`` references and their stored bytes, and those the release listed just
        before it does not reference (read from manifests a publisher mostly has in memory)."""
        names = self.releases()
        i = names.index(record.name) if record.name in names else len(names)
        previous = self._record(names[i - 1]) if i else None

        def objects_of(rec: ReleaseRecord) -> dict[str, int]:
            where = {d["manifest"]: f"release {rec.name}, dataset {p!r}" for p, d in
                     rec.datasets.items()}  # fmt: skip
            manifests, errors = self._manifests_of(where, where=where)
            if errors:
                raise next(iter(errors.values()))
            out: dict[str, int] = {}
            for m in manifests.values():
                out.update(object_sizes(m))
            return out

        objects = objects_of(record)
        before = objects_of(previous) if previous is not None else {}
        new = [size for h, size in objects.items() if h not in before]
        return {
            "datasets": len(record.datasets),
            "logical_bytes": record.logical_bytes,
            "objects": len(objects),
            "object_bytes": sum(objects.values()),
            "previous": previous.name if previous is not None else None,
            "new_objects": len(new),
            "new_object_bytes": sum(new),
        }

    def verify(self, spec: str = "latest", *, batch: int = 64) -> VerifyReport:
        """Re-hash every object a release references; report missing and corrupt ones.

        The chunks of every dataset, the Parquet object of every table, and what the
        :data:`VERIFY_HOOKS` check (the catalog re-derived from the record and compared, the
        root catalog; a release published without them is reported incomplete).
        """
        rel = self.release(spec)
        where: dict[str, tuple[str, str]] = {}
        bad_manifests: list[tuple[str, str, str, bool]] = []
        datasets = rel.record.datasets
        bad_parts = datasets.errors(fresh=True) if isinstance(datasets, PartitionedDatasets) else {}
        paths = datasets.checked() if isinstance(datasets, PartitionedDatasets) else rel.datasets()
        places = {}
        for path in paths:
            places.setdefault(datasets[path]["manifest"], []).append(path)
        # read again from the lake (verify trusts nothing cached), many at once
        manifests, errors = self._manifests_of(
            places,
            where={h: f"release {rel.name}, dataset {ps[0]!r}" for h, ps in places.items()},
            fresh=True,
        )
        for path in paths:
            h = datasets[path]["manifest"]
            if h in errors:
                bad_manifests.append((path, manifest_key(h), h, "missing" in str(errors[h])))
                continue
            for key, c in manifests[h].chunks.items():
                where.setdefault(c, (path, key))
        for name, table in rel.record.tables.items():
            where.setdefault(table["object"], (f"table {name}", "parquet"))
        report = VerifyReport(rel.pin, checked=len(where) + len(paths) + len(bad_parts))
        for label, (key, h, missing) in bad_parts.items():  # "record part|index <route>"
            (report.missing if missing else report.corrupt).append((label, key, h))
        for path, key, h, missing in bad_manifests:
            (report.missing if missing else report.corrupt).append((path, key, h))
        for hook in VERIFY_HOOKS if not bad_parts else ():  # they derive from every part
            hook(self, rel.record, report)
        if self._head_state(rel.record) == "altered":  # a missing head only costs speed
            report.incomplete.append((_head_key(rel.name), "altered"))
        hashes = sorted(where)
        for i in range(0, len(hashes), batch):
            part = hashes[i : i + batch]
            got = self.storage.uncached.read_many([cas.key_of(h) for h in part])
            for h in part:
                data = got[cas.key_of(h)]
                path, key = where[h]
                if isinstance(data, Exception):
                    report.missing.append((path, key, h))
                elif cas.digest(data) != h:
                    report.corrupt.append((path, key, h))
                else:
                    report.bytes += len(data)
        return report

    def gc(
        self, *, grace: str | timedelta = "1h", dry_run: bool = True, now: datetime | None = None
    ) -> GCReport:
        """Delete chunk objects and manifests that no release references.

        Never deletes anything referenced by a published release. While any stage younger
        than ``grace`` (by its heartbeat) is open, nothing but stale stages is deleted: an open
        stage may be re-using an old unreferenced chunk, or resuming a manifest from the
        ledger, at this very moment. Objects younger than ``grace`` are kept too. Stale stages
        (older than ``grace``) are removed. Releases and stages are read again after the
        listing, just before deleting, so a release published (or a job started) while GC
        listed the lake keeps what it references.

        Raises
        ------
        ValueError
            For a grace below :data:`MIN_GRACE` (four heartbeats) while a stage has sent a
            heartbeat within :data:`MIN_GRACE`: that job may be running and re-using any
            unreferenced object. (On a lake without such a stage any grace is accepted.)
        """
        grace_td = parse_duration(grace)
        now = now or _now()
        if grace_td < MIN_GRACE and (recent := self._stages(now - MIN_GRACE)[0]):
            names = sorted({str(doc.get("name")) for doc in recent.values()})
            raise ValueError(
                f"gc grace {grace!r} is shorter than {MIN_GRACE.total_seconds():.0f} s (4 "
                f"stage heartbeats of {HEARTBEAT_SECONDS:.0f} s) while {len(recent)} stage(s) "
                f"of release(s) {', '.join(map(repr, names))} in lake {self.url} sent a "
                "heartbeat within it: a job may be running and re-using unreferenced objects; "
                f"use a grace of at least {MIN_GRACE.total_seconds():.0f}s (e.g. '1h')"
            )
        cutoff = now - grace_td
        marks = self._marks(cutoff)
        report = GCReport(
            dry_run=dry_run,
            live_stages=marks.live,
            stale_stages=marks.stale,
            ledger=[] if marks.live else marks.stale_ledger,
        )
        local = self.storage.local  # a local writer killed mid-write leaves a temporary file
        listings = {
            prefix: self.storage.find(prefix) if local or not marks.live else {}
            for prefix in (MANIFEST_PREFIX, cas.CAS_PREFIX, RECORDS_PREFIX)
        }
        if local:
            listings |= {p: self.storage.find(p) for p in (LEDGER_PREFIX, "releases", "stages")}
        for listing in listings.values():
            report.temporary += [
                k for k, info in listing.items() if _temporary(k) and info["mtime"] < cutoff
            ]
        sizes: dict[str, int] = {}
        if not marks.live:
            keep_chunks = self._chunks_of(marks)
            report.manifests = [
                k
                for k, info in listings[MANIFEST_PREFIX].items()
                if _hash_of(k) not in marks.manifests
                and info["mtime"] < cutoff
                and not _temporary(k)
            ]
            report.parts = [
                k
                for k, info in listings[RECORDS_PREFIX].items()
                if _hash_of(k) not in marks.parts and info["mtime"] < cutoff and not _temporary(k)
            ]
            for key, info in listings[cas.CAS_PREFIX].items():
                h = _hash_of(key)
                if h not in keep_chunks and info["mtime"] < cutoff and cas.HASH_RE.match(h):
                    report.chunks.append(key)
                    sizes[key] = info["size"]
        report.bytes = sum(sizes.values())
        if dry_run:
            return report
        again = self._marks(cutoff)  # what was published or staged while we listed
        if again.live:
            report.live_stages = again.live
            report.keep_only(set(), sizes)
        elif (
            again.manifests - marks.manifests
            or again.objects - marks.objects
            or again.parts - marks.parts
        ):
            keep_chunks = self._chunks_of(again)
            report.keep_only(
                {k for k in report.manifests if _hash_of(k) not in again.manifests}
                | {k for k in report.parts if _hash_of(k) not in again.parts}
                | {k for k in report.chunks if _hash_of(k) not in keep_chunks}
                | {k for k in report.ledger if k in again.stale_ledger},
                sizes,
            )
        doomed = [*report.ledger, *report.chunks, *report.manifests, *report.parts]
        for i in range(0, len(doomed), GC_BATCH):
            if i and any(s not in again.live for s in self._stages(cutoff)[0]):
                # a job started meanwhile may be re-using any of the rest
                report.keep_only(set(doomed[:i]), sizes)
                report.interrupted = True
                break
            self.storage.delete(doomed[i : i + GC_BATCH])
        self.storage.delete(report.temporary)
        for sid in marks.stale:
            if sid not in again.live:
                self.storage.delete_prefix(f"stages/{sid}")
        return report

    def _marks(self, cutoff: datetime) -> _Marks:
        """What GC must keep: the manifests and objects of every release, of every stage
        younger than ``cutoff`` and of every resume record that is young or fully kept."""
        marks = _Marks()
        # stages first: a writer publishes (release.json) before it removes its stage, so
        # one that publishes between the two listings is in at least one of them
        live, marks.stale = self._stages(cutoff)
        marks.live = list(live)
        for sid, doc in live.items():
            marks.manifests.update(doc.get("manifests", []))  # stages written before parts
            marks.objects.update(doc.get("objects", []))
            for data in self.storage.read_many(self.storage.glob(f"stages/{sid}/parts/*")).values():
                if isinstance(data, bytes):
                    marks.manifests.update(json.loads(data).get("manifests", []))
        for name in self.releases():
            record = self._record(name)
            if isinstance(record.datasets, PartitionedDatasets):
                marks.parts.update(record.datasets.objects())
            marks.manifests.update(d["manifest"] for d in record.datasets.values())
            marks.objects.update(t["object"] for t in record.tables.values())
        for key, info in self.storage.find(LEDGER_PREFIX).items():
            if _temporary(key):
                continue
            try:
                entry = json.loads(self.storage.read(key))
            except (FileNotFoundError, ValueError):
                continue
            hashes = set(entry.get("manifests", []))
            parts = {h for part in (entry.get("tables") or {}).values() for h in part}
            if hashes <= marks.manifests or info["mtime"] >= cutoff:
                marks.manifests.update(hashes)  # a kept or young resume record protects its work
                marks.objects.update(parts)  # including its per-file table parts
            else:
                marks.stale_ledger.append(key)  # forget it, so no resume trusts deleted work
        return marks

    def _stages(self, cutoff: datetime) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Open stages (heartbeat at or after ``cutoff``: id -> stage document) and the ids
        of stale ones."""
        live: dict[str, dict[str, Any]] = {}
        stale: list[str] = []
        for key in self.storage.glob("stages/*/stage.json"):
            try:
                doc = json.loads(self.storage.read(key))
                beat = datetime.fromisoformat(doc["heartbeat"])
            except (FileNotFoundError, ValueError, KeyError):
                continue
            if beat >= cutoff:
                live[key.split("/")[1]] = doc
            else:
                stale.append(key.split("/")[1])
        return live, stale

    def _chunks_of(self, marks: _Marks) -> set[str]:
        """Every object the marked manifests reference: each manifest read once per lake
        (cached by hash, so GC's second marking pass reads only new ones), many at once."""
        keep = set(marks.objects)
        manifests, _ = self._manifests_of(sorted(marks.manifests), where="gc")
        for m in manifests.values():  # a missing or bad manifest references nothing
            keep.update(m.chunks.values())
        return keep


def _head_key(name: str) -> str:
    return f"releases/{name}/head.json"


def _check_release_name(name: str, url: str) -> None:
    """ReleaseNotFoundError unless ``name`` can be a release's folder name."""
    if not _NAME_RE.match(name) or name == "latest":
        raise ReleaseNotFoundError(
            f"no release {name!r} in lake {url}: not a release name (letters, "
            "digits, '.', '_' or '-', starting with a letter or digit, e.g. '2026.1')"
        )


def _hash_of(key: str) -> str:
    """The content hash a CAS or manifest key is named by."""
    return key.rsplit("/", 1)[-1].removesuffix(".json")


def _temporary(key: str) -> bool:
    """A local writer's temporary file (``.<name>.<uuid>.partial``), not an object."""
    return key.rsplit("/", 1)[-1].startswith(".") or key.endswith(".partial")


@dataclass
class _Marks:
    """What one marking pass of :meth:`Lake.gc` found."""

    manifests: set[str] = field(default_factory=set)
    objects: set[str] = field(default_factory=set)
    parts: set[str] = field(default_factory=set)  # record parts
    live: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    stale_ledger: list[str] = field(default_factory=list)


class Stage:
    """A release being built. Write datasets, then leave the ``with`` block to publish.

    Its document ``stages/<id>/stage.json`` (name, times, number of parts) is rewritten at
    each heartbeat; what was staged since the previous heartbeat is appended as a new part
    ``stages/<id>/parts/<n>.json``, so staging N datasets writes O(N) bytes. :meth:`add` sends a
    heartbeat when the last is :data:`HEARTBEAT_SECONDS` old. (While any stage has a heartbeat
    younger than GC's grace, GC deletes no object or manifest at all; the parts tell which
    manifests a stage holds.)
    """

    def __init__(self, lake: Lake, name: str, notes: str) -> None:
        self.lake = lake
        self.name = name
        self.notes = notes
        self.id = f"{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        self.datasets: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, dict[str, Any]] = {}
        self.new_objects = 0
        self.new_bytes = 0
        self.created = _now().isoformat()
        self._unsent: list[str] = []  # manifests staged since the last heartbeat
        self._parts = 0
        self._last_beat = -math.inf
        self._lock = threading.Lock()  # a job's heartbeat thread beats too

    def __repr__(self) -> str:
        return f"<abo_lake.Stage {self.name!r} · {len(self.datasets)} datasets>"

    def write(self, path: str, obj: xr.Dataset | xr.DataTree | Mapping[str, xr.Dataset]) -> str:
        """Write one Dataset (or DataTree, or {group: Dataset}) at ``path``; dask data streams.

        Returns
        -------
        str
            The manifest hash (equal data -> equal hash -> nothing new stored).
        """
        path = _check_path(path)
        manifest, new, new_bytes = write_dataset(self.lake.storage, obj)
        self.new_objects += new
        self.new_bytes += new_bytes
        root = obj.get("", xr.Dataset()) if isinstance(obj, Mapping) else obj
        kind = root.attrs.get("abo_lake_kind")
        return self.add(path, self.lake.put_manifest(manifest), kind=kind)

    def write_table(self, name: str, table: pd.DataFrame) -> str:
        """Store a metadata table as one Parquet object (fast to load and search)."""
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid table name {name!r}")
        buf = io.BytesIO()
        table.to_parquet(buf, index=True, compression="zstd")
        data = buf.getvalue()
        h, new = cas.put(self.lake.storage, data)
        self.new_objects += int(new)
        self.new_bytes += len(data) if new else 0
        self.tables[name] = {
            "object": h,
            "rows": len(table),
            "columns": list(map(str, table.columns)),
        }
        self._heartbeat()
        return h

    def add(self, path: str, manifest_hash: str, *, kind: str | None = None) -> str:
        """Put an already-stored manifest in this release (e.g. from the resume ledger); a
        dataset already staged at ``path`` is replaced (jobs refuse two sources for one path).
        """
        path = _check_path(path)
        where = f"stage {self.name!r}, dataset {path!r}"
        m = self.lake._manifest(manifest_hash, where=where, lake_only=True)
        if kind is None:
            root = json.loads(m.metadata["zarr.json"])
            kind = (root.get("attributes") or {}).get("abo_lake_kind")
        self._put(path, manifest_hash, kind, m.nbytes)
        return manifest_hash

    @cached_property
    def _newest_release(self) -> PartitionedDatasets | None:
        """The newest release's datasets (format 3, else None), looked up once per stage (by
        ``add_many`` and by publish). A release published meanwhile does not matter: any
        published release's entries and parts are good to reuse."""
        return self.lake._newest_datasets()

    @cached_property
    def _known(self) -> dict[str, dict[str, Any]]:
        """The newest release's entries by manifest hash (its parts read once, at first use)."""
        return self.lake._entries_of(self._newest_release)

    def _put(self, path: str, manifest_hash: str, kind: str | None, nbytes: int) -> None:
        self.datasets[path] = {"manifest": manifest_hash, "kind": kind, "nbytes": nbytes}
        self._unsent.append(manifest_hash)
        if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self._heartbeat()

    def add_many(self, entries: Iterable[tuple[str, str, str | None]]) -> None:
        """:meth:`add` for many ``(path, manifest hash, kind)``, their manifests read at once
        (:data:`MANIFEST_BATCH` at a time, concurrently on S3) instead of one read per add.
        A manifest the newest release holds is not read at all: its size (and kind, if not
        given) come from that release's record (same hash, same manifest; a published
        release's manifests are never collected)."""
        entries = [(_check_path(p), h, kind) for p, h, kind in entries]
        known = self._known
        where = {h: f"stage {self.name!r}, dataset {p!r}" for p, h, _ in entries if h not in known}
        _, errors = self.lake._manifests_of(where, where=where, lake_only=True)
        if errors:
            raise next(iter(errors.values()))
        for path, h, kind in entries:
            if h in known:
                self._put(path, h, known[h].get("kind") if kind is None else kind,
                          int(known[h].get("nbytes", 0)))  # fmt: skip
            else:
                self.add(path, h, kind=kind)

    @property
    def root(self) -> str:
        """The content root of what is staged (datasets and tables): what a published
        record's :attr:`~abo_lake.release.ReleaseRecord.content_root` is compared with. The
        record's own root also covers its name, time and notes."""
        return root_hash(
            {p: d["manifest"] for p, d in self.datasets.items()},
            {n: t["object"] for n, t in self.tables.items()},
        )

    def heartbeat(self) -> None:
        """Tell GC this stage is still open (a job does so while its files convert)."""
        self._heartbeat()

    def _heartbeat(self) -> None:
        with self._lock:
            unsent, self._unsent = self._unsent, []
            try:
                if unsent:  # append what was staged since the last beat as a new part
                    part = {"manifests": sorted(set(unsent))}
                    key = f"stages/{self.id}/parts/{self._parts:06d}.json"
                    self.lake.storage.write(key, json.dumps(part).encode())
                    self._parts += 1
            except BaseException:
                self._unsent = unsent + self._unsent  # sent with the next beat
                raise
            doc = {
                "name": self.name,
                "created": self.created,
                "heartbeat": _now().isoformat(),
                "parts": self._parts,
                "objects": sorted(t["object"] for t in self.tables.values()),
            }
            self.lake.storage.write(f"stages/{self.id}/stage.json", json.dumps(doc).encode())
            self._last_beat = time.monotonic()

    def _discard(self) -> None:
        self.lake.storage.delete_prefix(f"stages/{self.id}")

    def _publish(self) -> ReleaseRecord:
        from abo_lake import __version__

        key = f"releases/{self.name}/release.json"
        record, parts = ReleaseRecord.partitioned(
            name=self.name,
            created=_now().isoformat(),
            abo_lake_version=__version__,
            notes=self.notes,
            datasets=self.datasets,
            tables=dict(sorted(self.tables.items())),
            url_of=self.lake.storage.url_of,
            where=self.lake.storage.url_of(key),
        )
        self.lake._bind(record)
        data = record.to_bytes()
        try:
            self.lake._put_parts(parts, self._newest_release)  # before the record
            written = self.lake.storage.put_if_absent(key, data)
            if written:  # only the writer that won the name writes its head and catalog
                self.lake._records[self.name] = record
                try:
                    self.lake._write_head(record, data)
                except Exception as err:
                    warnings.warn(
                        f"release {self.name!r} is published, but its head (listing and "
                        f"stats summary) was not written ({type(err).__name__}: {err}); "
                        "`abo-lake repair` writes it",
                        stacklevel=3,
                    )
                for hook in PUBLISH_HOOKS:
                    try:
                        hook(self.lake, record)
                    except Exception as err:
                        warnings.warn(
                            f"release {self.name!r} is published, but {hook.__name__} failed "
                            f"({type(err).__name__}: {err}); opening the release with "
                            "abo_lake writes its catalog again",
                            stacklevel=3,
                        )
            else:
                same = self._same_published()
                if same is not None:  # ours, or an identical one: complete it, as a rerun
                    self.lake.repair(self.name)
                    return same
        finally:
            self._discard()
        if not written:
            raise ReleaseExistsError(
                f"release {self.name!r} was published by another writer while this stage was "
                f"open; nothing of this stage is visible. Publish under a new name."
            )
        return record

    def _same_published(self) -> ReleaseRecord | None:
        """The published record of this name if it holds this stage's content and notes
        (e.g. this writer's own, stored by a PUT whose response was lost); else None."""
        self.lake._records.pop(self.name, None)
        try:
            record = self.lake._record(self.name)
        except (ManifestError, ReleaseNotFoundError):
            return None
        same = record.content_root == self.root and record.notes == self.notes
        return record if same else None


def _check_path(path: str) -> str:
    path = path.strip("/")
    if not _PATH_RE.match(path) or any(p in (".", "..") for p in path.split("/")):
        raise ValueError(
            f"invalid dataset path {path!r}: use '/'-separated names of letters, digits, "
            "'_', '-' or '.', e.g. 'ophys/experiment/951980471'"
        )
    return path


# -- reports ---------------------------------------------------------------------------------
@dataclass
class ArrayChange:
    """Chunk-level change of one array between two releases."""

    array: str
    added: int = 0
    removed: int = 0
    changed: int = 0
    bytes_to_fetch: int = 0


@dataclass
class DatasetChange:
    """How one dataset path differs between two releases."""

    path: str
    status: str  # added | removed | changed | unchanged
    arrays: list[ArrayChange] = field(default_factory=list)
    bytes_to_fetch: int = 0


@dataclass
class TableChange:
    """How one release table differs between two releases (its Parquet object)."""

    name: str
    status: str  # added | removed | changed | unchanged
    bytes_to_fetch: int = 0


def _dataset_change(path: str, ma: Manifest, mb: Manifest, a_hashes: set[str]) -> DatasetChange:
    arrays_a, arrays_b = ma.arrays(), mb.arrays()
    sizes_b = object_sizes(mb)
    change = DatasetChange(path, "changed")
    for array in sorted(set(arrays_a) | set(arrays_b)):
        ca, cb = arrays_a.get(array, {}), arrays_b.get(array, {})
        ac = ArrayChange(array)
        ac.added = len(cb.keys() - ca.keys())
        ac.removed = len(ca.keys() - cb.keys())
        ac.changed = sum(1 for k in ca.keys() & cb.keys() if ca[k] != cb[k])
        fetch = {h for k, h in cb.items() if h not in a_hashes and ca.get(k) != h}
        ac.bytes_to_fetch = sum(sizes_b.get(h, 0) for h in fetch)  # once per object
        if ac.added or ac.removed or ac.changed:
            change.arrays.append(ac)
    change.bytes_to_fetch = sum(a.bytes_to_fetch for a in change.arrays)
    return change


@dataclass
class ReleaseDiff:
    """Result of :meth:`Lake.diff`."""

    a: str
    b: str
    datasets: list[DatasetChange]
    tables: list[TableChange] = field(default_factory=list)

    @property
    def bytes_to_fetch(self) -> int:
        """Bytes a user holding release ``a`` must fetch to have release ``b``."""
        return sum(d.bytes_to_fetch for d in [*self.datasets, *self.tables])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        from dataclasses import asdict

        return {
            "a": self.a,
            "b": self.b,
            "bytes_to_fetch": self.bytes_to_fetch,
            "datasets": [asdict(d) for d in self.datasets],
            "tables": [asdict(t) for t in self.tables],
        }

    def __str__(self) -> str:
        counts: dict[str, int] = {}
        for d in self.datasets:
            counts[d.status] = counts.get(d.status, 0) + 1
        changed = [t for t in self.tables if t.status != "unchanged"]
        lines = [
            f"{self.a} -> {self.b}: "
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"; tables: {len(changed)} of {len(self.tables)} differ"
            + f"; {self.bytes_to_fetch / 1e6:.2f} MB to fetch"
        ]
        for t in changed:
            lines.append(f"  {t.status:9} table {t.name}  ({t.bytes_to_fetch / 1e6:.2f} MB)")
        for d in self.datasets:
            if d.status == "unchanged":
                continue
            lines.append(f"  {d.status:9} {d.path}  ({d.bytes_to_fetch / 1e6:.2f} MB)")
            for a in d.arrays:
                lines.append(f"            {a.array}: +{a.added} -{a.removed} ~{a.changed} chunks")
        return "\n".join(lines)


@dataclass
class VerifyReport:
    """Result of :meth:`Lake.verify`: (dataset, key, hash) of each bad chunk."""

    release: str
    checked: int = 0
    bytes: int = 0
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)
    #: (key, "missing" | "stale") of what publishing writes after the record (the catalog):
    #: the release is published but incomplete; ``abo-lake repair`` completes it.
    incomplete: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if every referenced object is present and intact and the release complete."""
        return not self.missing and not self.corrupt and not self.incomplete

    def __str__(self) -> str:
        head = (
            f"{self.release}: {self.checked} objects, {self.bytes / 1e6:.2f} MB "
            f"checked; {len(self.missing)} missing, {len(self.corrupt)} corrupt"
        )
        rows = [f"  missing {p} {k} ({h[:12]})" for p, k, h in self.missing[:20]]
        rows += [f"  corrupt {p} {k} ({h[:12]})" for p, k, h in self.corrupt[:20]]
        if self.incomplete:
            head += f"; INCOMPLETE ({len(self.incomplete)}: run `abo-lake repair`)"
        rows += [f"  incomplete: {k} {state}" for k, state in self.incomplete[:20]]
        return "\n".join([head, *rows])


@dataclass
class GCReport:
    """Result of :meth:`Lake.gc`."""

    dry_run: bool
    live_stages: list[str] = field(default_factory=list)
    stale_stages: list[str] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    #: Record parts no release references (left by a publish that lost its name or died).
    parts: list[str] = field(default_factory=list)
    ledger: list[str] = field(default_factory=list)
    #: Temporary files of local writers killed mid-write (``*.partial``).
    temporary: list[str] = field(default_factory=list)
    bytes: int = 0
    #: A stage opened while deleting: the rest was kept (run gc again later).
    interrupted: bool = False

    def keep_only(self, deleted: set[str], sizes: dict[str, int]) -> None:
        """Keep in the report only the chunks, manifests and resume records in ``deleted``."""
        self.ledger = [k for k in self.ledger if k in deleted]
        self.manifests = [k for k in self.manifests if k in deleted]
        self.parts = [k for k in self.parts if k in deleted]
        self.chunks = [k for k in self.chunks if k in deleted]
        self.bytes = sum(sizes[k] for k in self.chunks)

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"gc {verb} {len(self.chunks)} chunk objects ({self.bytes / 1e6:.2f} MB), "
            f"{len(self.manifests)} manifests, {len(self.stale_stages)} stale stages"
        )
        if self.parts:
            text += f", {len(self.parts)} unreferenced record parts"
        if self.ledger:
            text += f", {len(self.ledger)} resume records of deleted work"
        if self.temporary:
            text += f", {len(self.temporary)} temporary files of interrupted writes"
        if self.interrupted:
            text += "; stopped early: a job opened a stage meanwhile (run gc again later)"
        if self.live_stages:
            text += (
                f"; {len(self.live_stages)} open stage(s) younger than the grace period: "
                "no chunk object, manifest or resume record deleted while they run"
            )
        return text
