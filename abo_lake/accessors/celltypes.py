"""The ``.celltypes`` and ``.morphology`` accessors: Cell Types ephys sweeps and SWC morphologies.

``.celltypes`` is registered for Datasets of kind ``celltypes_ephys``
(``celltypes/specimen/<id>/ephys``) and serves AllenSDK's ``NwbDataSet`` calls;
``.morphology`` for kind ``celltypes_morphology`` (``celltypes/specimen/<id>/morphology``)
and serves AllenSDK's ``swc.Morphology``. Thin: they check the kind and delegate to
:mod:`abo_lake.celltypes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from abo_lake import celltypes, ephys_features, glif
from abo_lake.errors import SchemaError
from abo_lake.kinds import kinds_for
from abo_lake.schema import kind_of, validate

__all__ = ["CellTypesAccessor", "MorphologyAccessor"]


def _checked(ds: xr.Dataset, accessor: str, example: str) -> xr.Dataset:
    kinds = kinds_for(accessor)
    recorded = kind_of(ds)
    if recorded in kinds:
        validate(ds, recorded)
        return ds
    if recorded is None:
        for kind in kinds:
            try:
                validate(ds, kind)
            except SchemaError:
                continue
            return ds
    raise SchemaError(
        f".{accessor} needs a {' / '.join(map(repr, kinds))} Dataset ({example}); this one is "
        f"{recorded!r} with variables {list(ds.data_vars)[:10]}"
    )


@xr.register_dataset_accessor("celltypes")
class CellTypesAccessor:
    """AllenSDK's ``NwbDataSet`` on a Cell Types specimen's ephys Dataset.

    Examples
    --------
    >>> ds = rel.open("celltypes/specimen/480003000/ephys")  # doctest: +SKIP
    >>> ds.celltypes.sweeps_by_stimulus("Long Square")  # doctest: +SKIP
    >>> ds.celltypes.get_sweep(10)["response"]  # V, only this sweep's chunks read  # doctest: +SKIP
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = _checked(ds, "celltypes", "rel.open('celltypes/specimen/<id>/ephys')")

    def __repr__(self) -> str:
        ds = self._ds
        return (
            f"<.celltypes specimen {ds.attrs.get('specimen_id', '?')} · "
            f"{ds.sizes['sweep_number']} sweeps · {celltypes.stimulus_names(ds)}>"
        )

    def spike_features(
        self, sweep_number: int, start: float | None = None, end: float | None = None
    ) -> pd.DataFrame:
        """One row per spike of a sweep (threshold, peak, trough, upstroke/downstroke, ...)
        between ``start`` and ``end`` (s, default the stimulus window); see
        :func:`abo_lake.ephys_features.spike_features`."""
        return ephys_features.spike_features(self._ds, sweep_number, start, end)

    def long_square_features(self) -> pd.DataFrame:
        """Per Long Square sweep: rate, latency, ISI, adaptation, baseline, deflection, sag;
        see :func:`abo_lake.ephys_features.long_square_features`."""
        return ephys_features.long_square_features(self._ds)

    def fi_curve(self) -> pd.DataFrame:
        """Firing rate (Hz) against Long Square amplitude (pA)."""
        return ephys_features.fi_curve(self._ds)

    def cell_features(self) -> dict[str, Any]:
        """The specimen's ``ephys_features.csv`` row (IPFX's definitions); see
        :func:`abo_lake.ephys_features.cell_features`."""
        return ephys_features.cell_features(self._ds)

    def get_sweep_numbers(self) -> list[int]:
        """Every sweep number, sorted; see :func:`abo_lake.celltypes.get_sweep_numbers`."""
        return celltypes.get_sweep_numbers(self._ds)

    def get_sweep(self, sweep_number: int) -> dict[str, Any]:
        """AllenSDK's dict (stimulus, response, stimulus_unit, index_range, sampling_rate);
        see :func:`abo_lake.celltypes.get_sweep`."""
        return celltypes.get_sweep(self._ds, sweep_number)

    def sweep(self, sweep_number: int) -> xr.Dataset:
        """One sweep as a lazy Dataset along time; see :func:`abo_lake.celltypes.sweep`."""
        return celltypes.sweep(self._ds, sweep_number)

    def sweep_samples(self, sweep_number: int) -> slice:
        """The sample slice of one sweep; see :func:`abo_lake.celltypes.sweep_samples`."""
        return celltypes.sweep_samples(self._ds, sweep_number)

    def get_sweep_metadata(self, sweep_number: int) -> dict[str, Any]:
        """AllenSDK's sweep metadata; see :func:`abo_lake.celltypes.get_sweep_metadata`."""
        return celltypes.get_sweep_metadata(self._ds, sweep_number)

    def get_spike_times(self, sweep_number: int, key: str | None = None) -> np.ndarray:
        """Spike times (s from the sweep start); see :func:`abo_lake.celltypes.get_spike_times`."""
        return celltypes.get_spike_times(self._ds, sweep_number, key)

    @property
    def sweeps(self) -> pd.DataFrame:
        """One row per sweep (``ephys_sweeps.json``'s names); see
        :func:`abo_lake.celltypes.sweeps`."""
        return celltypes.sweeps(self._ds)

    @property
    def stimulus_names(self) -> list[str]:
        """Distinct stimulus names; see :func:`abo_lake.celltypes.stimulus_names`."""
        return celltypes.stimulus_names(self._ds)

    def sweeps_by_stimulus(
        self, stimulus_names: str | Sequence[str], qc: bool = True
    ) -> pd.DataFrame:
        """Sweeps of the named stimuli; see :func:`abo_lake.celltypes.sweeps_by_stimulus`."""
        return celltypes.sweeps_by_stimulus(self._ds, stimulus_names, qc)

    def simulate(
        self, model: xr.Dataset | dict, stimulus: Any, dt: float | None = None
    ) -> xr.Dataset:
        """A GLIF model (``celltypes/specimen/<id>/glif/<model_id>``) on one of this
        specimen's sweeps (a sweep number) or a custom current: voltage, threshold,
        after-spike currents and spike times; see :func:`abo_lake.glif.simulate_sweep`."""
        return glif.simulate_sweep(self._ds, model, stimulus, dt)


@xr.register_dataset_accessor("morphology")
class MorphologyAccessor:
    """AllenSDK's ``swc.Morphology`` on an SWC reconstruction Dataset (ids 0-based, as
    AllenSDK's ``read_swc`` numbers them).

    Examples
    --------
    >>> m = rel.open("celltypes/specimen/471781218/morphology")  # doctest: +SKIP
    >>> m.morphology.children_of(m.morphology.soma)  # doctest: +SKIP
    >>> m.morphology.morphometry()["total_length"]  # doctest: +SKIP
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = _checked(ds, "morphology", "rel.open('celltypes/specimen/<id>/morphology')")

    def __repr__(self) -> str:
        ds = self._ds
        specimen = ds.attrs.get("specimen_id", "?")
        return f"<.morphology specimen {specimen} · {ds.sizes['node']} nodes>"

    @property
    def compartment_list(self) -> list[dict[str, Any]]:
        """AllenSDK's compartments; see :func:`abo_lake.celltypes.compartment_list`."""
        return celltypes.compartment_list(self._ds)

    @property
    def compartment_index(self) -> dict[int, dict[str, Any]]:
        """Compartments by id; see :func:`abo_lake.celltypes.compartment_index`."""
        return celltypes.compartment_index(self._ds)

    @property
    def soma(self) -> dict[str, Any] | None:
        """The root soma compartment; see :func:`abo_lake.celltypes.soma`."""
        return celltypes.soma(self._ds)

    @property
    def num_nodes(self) -> int:
        """Number of compartments."""
        return int(self._ds.sizes["node"])

    @property
    def num_trees(self) -> int:
        """Number of trees; see :func:`abo_lake.celltypes.num_trees`."""
        return celltypes.num_trees(self._ds)

    def tree(self, n: int) -> list[dict[str, Any]] | None:
        """Compartments of tree ``n``; see :func:`abo_lake.celltypes.tree`."""
        return celltypes.tree(self._ds, n)

    def node(self, n: int) -> dict[str, Any] | None:
        """The compartment of id ``n``; see :func:`abo_lake.celltypes.node`."""
        return celltypes.node(self._ds, n)

    def parent_of(self, seg: int | dict) -> dict[str, Any] | None:
        """The parent compartment; see :func:`abo_lake.celltypes.parent_of`."""
        return celltypes.parent_of(self._ds, seg)

    def children_of(self, seg: int | dict) -> list[dict[str, Any]]:
        """The child compartments; see :func:`abo_lake.celltypes.children_of`."""
        return celltypes.children_of(self._ds, seg)

    def compartment_list_by_type(self, compartment_type: int) -> list[dict[str, Any]]:
        """Compartments of one type; see :func:`abo_lake.celltypes.compartment_list_by_type`."""
        return celltypes.compartment_list_by_type(self._ds, compartment_type)

    def compartment_index_by_type(self, compartment_type: int) -> dict[int, dict]:
        """Compartments of one type by id; see
        :func:`abo_lake.celltypes.compartment_index_by_type`."""
        return celltypes.compartment_index_by_type(self._ds, compartment_type)

    def renumbered(self) -> xr.Dataset:
        """The Dataset numbered 0-based as AllenSDK; see :func:`abo_lake.celltypes.renumbered`."""
        return celltypes.renumbered(self._ds)

    def morphometry(self) -> dict[str, float | int]:
        """Whole-cell measures; see :func:`abo_lake.celltypes.morphometry`."""
        return celltypes.morphometry(self._ds)

    def morphometry_table(self) -> pd.DataFrame:
        """The measures as one row; see :func:`abo_lake.celltypes.morphometry_table`."""
        return celltypes.morphometry_table(self._ds)
