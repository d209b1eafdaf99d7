"""abo_lake: Allen Brain Observatory data as a cloud-native, versioned, chunked data lake.

>>> import abo_lake
>>> lake = abo_lake.open_lake()                        # doctest: +SKIP
>>> ds = lake.release("latest").open("ophys/experiment/951980471")  # doctest: +SKIP
"""

from __future__ import annotations

import warnings

from abo_lake import accessors  # noqa: F401  (registers .ophys, .ecephys, .ccf)
from abo_lake.catalog import open_catalog, root_catalog
from abo_lake.errors import (
    AboLakeError,
    DatasetNotFoundError,
    IntegrityError,
    ManifestError,
    ReleaseExistsError,
    ReleaseNotFoundError,
    SchemaError,
    SourceFileError,
    StructureNotFoundError,
)
from abo_lake.lake import Lake, Stage, open_lake
from abo_lake.release import Release
from abo_lake.tables import Table, release_table

__version__ = "0.1.0"

# Tables keep fixed-width strings exactly (``<U``); zarr warns that their Zarr 3 encoding is
# not yet in the spec. It reads back with zarr-python, which is what a release needs.
warnings.filterwarnings("ignore", message=r"The data type \(FixedLengthUTF32")

__all__ = [
    "AboLakeError",
    "DatasetNotFoundError",
    "IntegrityError",
    "Lake",
    "ManifestError",
    "Release",
    "ReleaseExistsError",
    "ReleaseNotFoundError",
    "SchemaError",
    "SourceFileError",
    "Stage",
    "StructureNotFoundError",
    "Table",
    "__version__",
    "open_catalog",
    "open_lake",
    "release_table",
    "root_catalog",
]
