"""The ``.glif`` accessor: simulate a GLIF neuron model from the lake.

Registered on Datasets of kind ``glif_model`` (``celltypes/specimen/<id>/glif/<model_id>``).
Thin: it checks the kind and delegates to :mod:`abo_lake.glif` and
:func:`abo_lake.sources.glif.config_of`.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from abo_lake import glif
from abo_lake.errors import SchemaError
from abo_lake.schema import kind_of, validate
from abo_lake.sources import glif as glif_source

__all__ = ["GlifAccessor"]


@xr.register_dataset_accessor("glif")
class GlifAccessor:
    """``ds.glif``: the model's config and its simulation on a stimulus."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def _checked(self) -> xr.Dataset:
        if kind_of(self._ds) != "glif_model":
            raise SchemaError(
                f".glif works on glif_model Datasets (celltypes/specimen/<id>/glif/<model_id>), "
                f"not kind {kind_of(self._ds)!r}"
            )
        return validate(self._ds, "glif_model")

    @property
    def config(self) -> dict[str, Any]:
        """The model's ``neuron_config.json`` dict."""
        return glif_source.config_of(self._checked())

    def simulate(self, stimulus: Any, dt: float | None = None) -> xr.Dataset:
        """Simulate the model on ``stimulus`` (see :func:`abo_lake.glif.simulate`)."""
        return glif.simulate(self._checked(), stimulus, dt)

    def __repr__(self) -> str:
        a = self._ds.attrs
        return (
            f"<.glif: GLIF{a.get('glif_level', '?')} model {a.get('neuronal_model_id')} of "
            f"specimen {a.get('specimen_id')}>"
        )
