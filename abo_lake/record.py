"""The release record and its head: what ``releases/<name>/`` holds, parsed and checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from abo_lake.errors import ManifestError
from abo_lake.manifest import root_hash

__all__ = ["ReleaseHead", "ReleaseRecord", "record_root"]


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
