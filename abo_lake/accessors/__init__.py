"""xarray accessors ``.ophys``, ``.ecephys``, ``.ccf``, ``.celltypes`` and ``.morphology``
(importing this registers them).

Each accessor is thin: it validates the Dataset kind cheaply (no data read) and delegates to
pure, lazy functions in :mod:`abo_lake.ophys`, :mod:`abo_lake.ecephys` and :mod:`abo_lake.ccf`.
"""

from __future__ import annotations

import importlib

for _name in ("ophys", "ecephys", "ccf", "glif", "celltypes"):
    try:
        importlib.import_module(f"abo_lake.accessors.{_name}")
    except ModuleNotFoundError as _err:  # an accessor not built yet
        if _err.name != f"abo_lake.accessors.{_name}":
            raise
