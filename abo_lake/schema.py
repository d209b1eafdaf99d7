"""The layout of a kind of Dataset (declared with the kind in :mod:`abo_lake.kinds`) and a cheap
validator.

A layout names the dims and variables a kind must have (and the dims of each variable).
Validation looks at names and dims only: it never reads data, so accessors can call it on a
lazy Dataset opened from S3 at no cost.

Conventions shared by every kind (see ``DESIGN.md``):

- the main table of a kind is along its id dim, with Allen column names verbatim
  (``cell_specimen_id``, ``unit_id``, ...);
- secondary tables live in the same Dataset with variables named ``<table>.<column>``
  along their own dim (``stimulus_presentations.start_time`` along ``stimulus_presentation_id``);
- ragged columns are stored flat plus an ``<name>_index`` of cumulative end offsets (NWB's
  VectorIndex semantics), never as Python objects;
- time is float64 seconds and space is µm, each with ``attrs["units"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import xarray as xr

from abo_lake.errors import SchemaError

__all__ = ["KIND_ATTR", "Layout", "kind_of", "validate"]

KIND_ATTR = "abo_lake_kind"


@dataclass(frozen=True)
class Layout:
    """Minimum layout of one kind of Dataset.

    Parameters
    ----------
    kind
        The value of ``ds.attrs["abo_lake_kind"]``.
    dims
        Dims the Dataset must have.
    variables
        Variable (or coordinate) name -> the dims it must have, in order.
    description
        One line for error messages.
    """

    kind: str
    dims: tuple[str, ...]
    variables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""


def __getattr__(name: str) -> dict[str, Layout]:
    if name == "LAYOUTS":  # declared with each kind in abo_lake.kinds
        return _layouts()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _layouts() -> dict[str, Layout]:
    """Kind name -> :class:`Layout`, from the declarations in :mod:`abo_lake.kinds`."""
    from abo_lake.kinds import KINDS

    return {name: kind.layout for name, kind in KINDS.items()}


def kind_of(ds: xr.Dataset) -> str | None:
    """Return the kind recorded in ``ds.attrs``, or None."""
    return ds.attrs.get(KIND_ATTR)


def validate(ds: xr.Dataset, kind: str) -> xr.Dataset:
    """Check that ``ds`` has the dims and variables of ``kind``; read no data.

    Parameters
    ----------
    ds
        The Dataset to check.
    kind
        One of the kinds declared in :mod:`abo_lake.kinds`.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, so calls can be chained.

    Raises
    ------
    SchemaError
        Naming what is missing or has the wrong dims, and the kind expected.
    """
    layouts = _layouts()
    if kind not in layouts:
        raise SchemaError(f"unknown Dataset kind {kind!r}; known kinds: {sorted(layouts)}")
    layout = layouts[kind]
    recorded = kind_of(ds)
    if recorded is not None and recorded != kind:
        raise SchemaError(
            f"this Dataset is a {recorded!r}, not a {kind!r} ({layout.description}); "
            f"open a {kind!r} dataset instead"
        )
    problems = [f"missing dim {d!r}" for d in layout.dims if d not in ds.dims]
    for name, dims in layout.variables.items():
        if name not in ds.variables:
            problems.append(f"missing variable {name!r}")
        elif tuple(ds.variables[name].dims) != dims:
            problems.append(f"{name!r} has dims {ds.variables[name].dims}, expected {dims}")
    if problems:
        raise SchemaError(f"not a {kind!r} Dataset ({layout.description}): " + "; ".join(problems))
    return ds
