"""Dataset manifests in the fsspec ReferenceFileSystem format, and release root hashes.

A manifest describes one stored Dataset (or DataTree): its Zarr metadata documents inline
(consolidated), and each chunk key -> the content-addressed object holding it::

    {"version": 1,
     "templates": {"lake": "s3://bucket/lake"},
     "refs": {"zarr.json": "{...}", "dff/c/0/0": ["{{lake}}/cas/ab/ab12..."]},
     "abo_lake": {"format": 1, "sizes": {"dff/c/0/0": 1048576}}}

Because it is the standard reference format, plain ``xarray`` + ``fsspec`` can open it
without abo_lake. The ``lake`` template lets abo_lake read a lake that was moved or mirrored.
Manifests are stored by the hash of their bytes, so an unchanged dataset costs nothing new.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from abo_lake.cas import key_of
from abo_lake.errors import ManifestError

__all__ = ["MANIFEST_PREFIX", "Manifest", "manifest_key", "root_hash"]

MANIFEST_PREFIX = "manifests"
_REF_RE = re.compile(r"^\{\{lake\}\}/cas/([0-9a-f]{2})/([0-9a-f]{64})$")


def manifest_key(h: str) -> str:
    """The lake key of the manifest with hash ``h``."""
    return f"{MANIFEST_PREFIX}/{h[:2]}/{h}.json"


def root_hash(datasets: dict[str, str], tables: dict[str, str] | None = None) -> str:
    """Hash over a release's ``{dataset path: manifest hash}`` (and ``{table: object hash}``).

    This is what ``name@root`` pins: equal roots mean byte-identical content.
    """
    text = "".join(f"{path}\t{h}\n" for path, h in sorted(datasets.items()))
    text += "".join(f"table:{name}\t{h}\n" for name, h in sorted((tables or {}).items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise ManifestError(f"{where}: key {key!r} is not a non-empty string")
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: key {key!r} is not a plain relative Zarr key")
    return key


@dataclass(frozen=True)
class Manifest:
    """One stored Dataset: metadata documents and chunk hashes, by Zarr key.

    Parameters
    ----------
    metadata
        Zarr key (``"zarr.json"``, ``"dff/zarr.json"``) -> JSON text.
    chunks
        Zarr chunk key (``"dff/c/0/0"``) -> sha256 of the stored chunk object.
    sizes
        Zarr chunk key -> stored size in bytes.
    """

    metadata: dict[str, str]
    chunks: dict[str, str]
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Stored bytes of all chunks (what a full download of this dataset moves)."""
        return sum(self.sizes.values())

    def arrays(self) -> dict[str, dict[str, str]]:
        """Array path -> {chunk key: hash}, e.g. ``{"dff": {"dff/c/0/0": "ab12..."}}``."""
        out: dict[str, dict[str, str]] = {}
        for key, h in self.chunks.items():
            array = key.split("/c/")[0] if "/c/" in key else key.rsplit("/", 1)[0]
            out.setdefault(array, {})[key] = h
        return out

    def to_json(self, lake_url: str) -> dict:
        """The reference-format document, pointing chunk keys into ``lake_url``."""
        refs: dict[str, object] = dict(sorted(self.metadata.items()))
        for key, h in sorted(self.chunks.items()):
            refs[key] = ["{{lake}}/" + key_of(h)]
        return {
            "version": 1,
            "templates": {"lake": lake_url},
            "refs": refs,
            "abo_lake": {"format": 1, "sizes": dict(sorted(self.sizes.items()))},
        }

    def to_bytes(self, lake_url: str) -> bytes:
        """Canonical bytes (sorted keys, compact): equal content -> equal hash."""
        return json.dumps(
            self.to_json(lake_url), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "manifest") -> Manifest:
        """Parse and validate a stored manifest.

        Raises
        ------
        ManifestError
            If it is not valid JSON in the reference format, a key is not a plain relative
            Zarr key (``..``, absolute), or a reference points anywhere but the lake's ``cas/``.
        """
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise ManifestError(f"{where}: not valid JSON ({err})") from err
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ManifestError(f"{where}: not a version-1 fsspec reference manifest")
        refs = doc.get("refs")
        if not isinstance(refs, dict):
            raise ManifestError(f"{where}: has no 'refs' mapping")
        sizes = (doc.get("abo_lake") or {}).get("sizes") or {}
        metadata, chunks = {}, {}
        for key, value in refs.items():
            _check_key(key, where)
            if isinstance(value, str):
                if not key.endswith("zarr.json"):
                    raise ManifestError(f"{where}: inline value for non-metadata key {key!r}")
                metadata[key] = value
                continue
            match = _REF_RE.match(value[0]) if isinstance(value, list) and len(value) == 1 else None
            if not match or match.group(1) != match.group(2)[:2]:
                raise ManifestError(
                    f"{where}: reference for {key!r} is {value!r}; every chunk must point "
                    "to one whole object under the lake's cas/ ('{{lake}}/cas/<2 hex>/<sha256>')"
                )
            chunks[key] = match.group(2)
        if "zarr.json" not in metadata:
            raise ManifestError(f"{where}: no root 'zarr.json' metadata document")
        return cls(metadata, chunks, {k: int(v) for k, v in sizes.items() if k in chunks})
