"""Dataset manifests in the fsspec ReferenceFileSystem format, and release root hashes.

A manifest describes one stored Dataset (or DataTree): its Zarr metadata documents inline
(consolidated), and each chunk key -> the content-addressed object holding it::

    {"version": 1,
     "templates": {"lake": "s3://bucket/lake"},
     "refs": {"zarr.json": "{...}",
              "lfp/c/0/0": ["{{lake}}/cas/ab/ab12..."],            # a whole object
              "dff/c/5/0": ["{{lake}}/cas/cd/cd34...", 81920, 16384],  # a range of a pack
              "time/c/0": "base64:..."},                             # inline (index coords)
     "abo_lake": {"format": 2, "sizes": {"lfp/c/0/0": 1048576, ...},
                  "packs": {"dff": [32, 39600]}}}

A *pack* is one object holding several whole chunks of one array, concatenated in C order
of chunk index (each chunk encoded alone, with its own CRC-32C); the manifest points each
chunk at its byte range, as the reference spec allows, and ``packs`` records the array's
pack shape (the dask chunks :meth:`abo_lake.release.Release.open` uses by default). The
chunks of index coordinates are inline (base64), so opening a dataset reads only the
release record and the manifest.

Because it is the standard reference format, plain ``xarray`` + ``fsspec`` can open it
without abo_lake. The ``lake`` template lets abo_lake read a lake that was moved or mirrored.
Manifests are stored by the hash of their bytes, so an unchanged dataset costs nothing new.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field

from abo_lake.cas import key_of
from abo_lake.errors import ManifestError

__all__ = ["MANIFEST_PREFIX", "Manifest", "manifest_key", "root_hash"]

MANIFEST_PREFIX = "manifests"
#: A chunk reference: the CAS key of a sha256, its folder being the hash's first two digits.
_REF_RE = re.compile(r"\{\{lake\}\}/cas/([0-9a-f]{2})/(\1[0-9a-f]{62})")


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
    if not isinstance(key, str) or not _plain_key(key):
        if isinstance(key, str) and key:
            raise ManifestError(f"{where}: key {key!r} is not a plain relative Zarr key")
        raise ManifestError(f"{where}: key {key!r} is not a non-empty string")
    return key


def _plain_key(key: str) -> bool:
    """Whether ``key`` is a non-empty relative key of non-empty segments, none ``.`` or
    ``..`` and no backslash (string tests first: a manifest has thousands of keys)."""
    if not key or key[0] == "/" or key[-1] == "/" or "//" in key or "\\" in key:
        return False
    return "." not in key or all(p not in (".", "..") for p in key.split("/"))


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
        Zarr chunk key -> stored size in bytes (of its range, for a chunk in a pack).
    ranges
        Zarr chunk key -> ``(offset, length)`` in its object, for chunks stored in packs;
        chunks not listed are whole objects.
    inline
        Zarr chunk key -> the chunk's stored bytes, held in the manifest itself.
    packs
        Array path -> pack shape (in elements), for arrays stored in packs.
    """

    metadata: dict[str, str]
    chunks: dict[str, str]
    sizes: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    inline: dict[str, bytes] = field(default_factory=dict)
    packs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Stored bytes of all chunks (what a full download of this dataset moves)."""
        return sum(self.sizes.values()) + sum(len(v) for v in self.inline.values())

    def object_sizes(self) -> dict[str, int]:
        """Object hash -> its stored bytes (a pack counts once, however many chunks it has)."""
        out: dict[str, int] = {}
        for key, h in self.chunks.items():
            rng = self.ranges.get(key)
            end = rng[0] + rng[1] if rng else self.sizes.get(key, 0)
            out[h] = max(out.get(h, 0), end)
        return out

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
            rng = self.ranges.get(key)
            refs[key] = ["{{lake}}/" + key_of(h), *(rng if rng else ())]
        for key, data in sorted(self.inline.items()):
            refs[key] = "base64:" + base64.b64encode(data).decode()
        # a ranged chunk's size is its range's length: not repeated
        sizes = {k: n for k, n in sorted(self.sizes.items()) if k not in self.ranges}
        extra: dict[str, object] = {"format": 1, "sizes": sizes}
        if self.ranges or self.inline or self.packs:
            extra["format"] = 2
        if self.packs:
            extra["packs"] = {k: list(v) for k, v in sorted(self.packs.items())}
        return {"version": 1, "templates": {"lake": lake_url}, "refs": refs, "abo_lake": extra}

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
        extra = doc.get("abo_lake") or {}
        sizes = extra.get("sizes") or {}
        metadata: dict[str, str] = {}
        chunks: dict[str, str] = {}
        ranges: dict[str, tuple[int, int]] = {}
        inline: dict[str, bytes] = {}
        for key, value in refs.items():
            if type(key) is not str or not _plain_key(key):
                _check_key(key, where)
            if type(value) is str:
                if key.endswith("zarr.json"):
                    metadata[key] = value
                else:
                    inline[key] = _inline_chunk(key, value, where)
                continue
            ok = type(value) is list and len(value) in (1, 3) and type(value[0]) is str
            match = _REF_RE.fullmatch(value[0]) if ok else None
            if match is None:
                raise ManifestError(
                    f"{where}: reference for {key!r} is {value!r}; every chunk must point "
                    "to an object under the lake's cas/ ('{{lake}}/cas/<2 hex>/<sha256>', "
                    "optionally with a byte offset and length)"
                )
            chunks[key] = match.group(2)
            if len(value) == 3:
                offset, length = value[1], value[2]
                if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
                    raise ManifestError(
                        f"{where}: reference for {key!r} has byte range {value[1:]!r}; "
                        "offset and length must be non-negative integers"
                    )
                ranges[key] = (offset, length)
        if "zarr.json" not in metadata:
            raise ManifestError(f"{where}: no root 'zarr.json' metadata document")
        packs = _packs(extra.get("packs") or {}, where)
        sized = {k: int(v) for k, v in sizes.items() if k in chunks}
        sized.update({k: n for k, (_, n) in ranges.items()})
        return cls(metadata, chunks, sized, ranges, inline, packs)


def _inline_chunk(key: str, value: str, where: str) -> bytes:
    """The bytes of an inline chunk reference (``"base64:..."``); ManifestError otherwise."""
    if not value.startswith("base64:"):
        raise ManifestError(
            f"{where}: inline value for chunk key {key!r} is not 'base64:' data (only "
            "metadata documents are inline text)"
        )
    try:
        return base64.b64decode(value[7:], validate=True)
    except (binascii.Error, ValueError) as err:
        raise ManifestError(f"{where}: inline chunk {key!r} is not valid base64 ({err})") from err


def _packs(packs: object, where: str) -> dict[str, tuple[int, ...]]:
    """The ``abo_lake.packs`` mapping, checked: array path -> list of positive ints."""
    if not isinstance(packs, dict):
        raise ManifestError(f"{where}: 'abo_lake.packs' is {packs!r}, not a mapping")
    out = {}
    for array, shape in packs.items():
        if not (isinstance(shape, list) and all(type(n) is int and n > 0 for n in shape)):
            raise ManifestError(
                f"{where}: pack shape of {array!r} is {shape!r}; expected positive integers"
            )
        out[str(array)] = tuple(shape)
    return out
