"""Content-addressed chunk objects: ``<lake>/cas/<2 hex>/<sha256 of the stored bytes>``.

A chunk that is byte-identical in any release, from any conversion run, is one object.
Writes are put-if-absent, so concurrent writers and retried tasks are harmless.
"""

from __future__ import annotations

import hashlib
import re

from abo_lake.storage import Storage

__all__ = ["CAS_PREFIX", "HASH_RE", "digest", "key_of", "put"]

CAS_PREFIX = "cas"
HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def digest(data: bytes) -> str:
    """The content hash of ``data`` (sha256, hex)."""
    return hashlib.sha256(data).hexdigest()


def key_of(h: str) -> str:
    """The lake key of the chunk object with hash ``h``."""
    return f"{CAS_PREFIX}/{h[:2]}/{h}"


def put(storage: Storage, data: bytes) -> tuple[str, bool]:
    """Store ``data`` unless an identical object exists.

    Returns
    -------
    (hash, written)
        ``written`` is False when the object was already in the lake (deduplicated).
    """
    h = digest(data)
    return h, storage.put_if_absent(key_of(h), data)
