"""Exceptions raised by abo_lake.

Every error is an :class:`AboLakeError` and also a builtin exception, so callers can catch
either (as in zarr: ``ReleaseNotFoundError`` is a ``LookupError``).
"""

from __future__ import annotations

__all__ = [
    "AboLakeError",
    "DatasetNotFoundError",
    "IntegrityError",
    "ManifestError",
    "ReleaseExistsError",
    "ReleaseNotFoundError",
    "SchemaError",
    "SourceFileError",
    "StructureNotFoundError",
]


class AboLakeError(Exception):
    """Base class of every abo_lake error."""


class ReleaseNotFoundError(AboLakeError, LookupError):
    """A release name, pin or ``latest`` does not resolve to a published release."""


class ReleaseExistsError(AboLakeError, FileExistsError):
    """A release with this name is already published; releases are immutable."""


class DatasetNotFoundError(AboLakeError, KeyError):
    """A dataset path is not in the release."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class StructureNotFoundError(AboLakeError, KeyError):
    """A structure id or acronym is not in the ontology."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class ManifestError(AboLakeError, ValueError):
    """A manifest or release record is malformed or points outside the lake."""


class IntegrityError(AboLakeError, OSError):
    """A stored object is missing or its content does not match its hash."""


class SchemaError(AboLakeError, ValueError):
    """A Dataset does not have the layout its kind requires."""


class SourceFileError(AboLakeError, ValueError):
    """A source file cannot be read: wrong format, truncated, or inconsistent."""
