"""Fidelity check of the curated layout: every mapped HDF5 dataset against what the lake holds.

A reader module that maps HDF5 datasets (its ``MAPPED_HDF5`` globs) into its curated Dataset
exposes ``fidelity_mappings(ds, path) -> list[(view, mapping)]``:

- ``view`` says which part of ``ds`` holds the datasets of ``mapping``: a dict given to
  :meth:`xarray.Dataset.isel`, or a callable ``view(ds) -> xr.Dataset`` (used to transpose a
  variable back to the source's axis order, pick one source table's rows out of a concatenated
  and sorted table, or expose attributes as variables), or ``None`` when the datasets are held
  by another Dataset read from the same file (a probe file's LFP and CSD) and checked with it;
- ``mapping`` is ``{hdf5 dataset path: (variable name in the view, transform or None)}`` as
  :func:`abo_lake.fidelity.check_mapped` takes it: ``transform(source values)`` must equal the
  variable bit for bit. Transforms marked :func:`~abo_lake.fidelity.blockwise` are streamed.

:func:`check_reader` runs those comparisons and checks that every dataset of the file matched by
``MAPPED_HDF5`` is covered by some mapping: an uncovered one would be in neither the curated
layout nor the raw copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import xarray as xr

from abo_lake import sources
from abo_lake.fidelity import Transform, check_mapped
from abo_lake.sources.hdf5_raw import matches

__all__ = ["View", "check_reader", "mapped_datasets"]

#: What ``fidelity_mappings`` gives with each mapping (see the module docstring).
View = Mapping[str, Any] | Callable[[xr.Dataset], xr.Dataset] | None


def mapped_datasets(path: str | Path, globs: Sequence[str]) -> list[str]:
    """Absolute paths of the HDF5 datasets of ``path`` the ``globs`` select (see
    :func:`abo_lake.sources.hdf5_raw.matches`: fnmatch, ``"!glob"`` deselects).

    Examples
    --------
    >>> mapped_datasets("f.nwb", ["/units/*"])  # doctest: +SKIP
    ['/units/id', '/units/spike_times', ...]
    """
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        full = "/" + name
        if isinstance(obj, h5py.Dataset) and matches(full, globs):
            found.append(full)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return sorted(found)


def check_reader(
    path: str | Path, fmt: str, ds: xr.Dataset, *, chunked: xr.Dataset | None = None
) -> list[str]:
    """Compare the mapped HDF5 datasets of ``path`` with the curated Dataset ``ds``.

    Parameters
    ----------
    path
        The source HDF5 file.
    fmt
        Its format (a key of :data:`abo_lake.sources.READERS`).
    ds
        One curated Dataset the reader made of ``path``, possibly re-opened from the lake
        (lazy variables are streamed, block by block where the transform allows it).
    chunked
        The same Dataset with dask-backed variables, when ``ds`` is opened without dask:
        callable views (transposes, concatenations) then read through it chunk by chunk,
        while direct mappings read ``ds`` straight through zarr, without a dask graph per
        block (xarray turns a transposed lazy array into pointwise indexing, which zarr
        serves slowly).

    Returns
    -------
    list of str
        Human-readable problems, each starting with the HDF5 path; empty if faithful. A
        dataset matched by ``MAPPED_HDF5`` that no mapping covers is a problem.

    Examples
    --------
    >>> check_reader("session_715093703.nwb", "vcn-ecephys", ds)  # doctest: +SKIP
    []
    """
    module = sources._module(fmt)
    globs = tuple(getattr(module, "MAPPED_HDF5", ()))
    if not globs or not h5py.is_hdf5(path):
        return []
    pairs: list[tuple[View, Mapping[str, tuple[str, Transform | None]]]] = []
    problems: list[str] = []
    func = getattr(module, "fidelity_mappings", None)
    if func is None:
        problems.append(f"/: reader {fmt!r} maps HDF5 datasets but has no fidelity_mappings")
    else:
        pairs = list(func(ds, path))
    covered: set[str] = set()
    for view, mapping in pairs:
        covered.update(mapping)
        if view is None:
            continue  # held by another Dataset of the same file
        if isinstance(view, Mapping):
            part = ds.isel(view) if view else ds
        else:
            part = view(ds if chunked is None else chunked)
        problems += check_mapped(path, part, mapping)
    for hpath in mapped_datasets(path, globs):
        if hpath not in covered:
            problems.append(
                f"{hpath}: matched by MAPPED_HDF5 of {fmt!r} (so not in the raw copy) but no "
                "fidelity mapping covers it"
            )
    return problems
