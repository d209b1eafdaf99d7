"""The layout of each kind of Dataset in the lake, as data, and a cheap validator.

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

__all__ = ["KIND_ATTR", "LAYOUTS", "Layout", "kind_of", "validate"]

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


LAYOUTS: dict[str, Layout] = {
    layout.kind: layout
    for layout in [
        Layout(
            "ophys_experiment",
            dims=("cell_specimen_id", "time"),
            variables={
                "dff": ("cell_specimen_id", "time"),
                "time": ("time",),
                "cell_specimen_id": ("cell_specimen_id",),
                "cell_roi_id": ("cell_specimen_id",),
                "roi_mask": ("cell_specimen_id", "y", "x"),
                "max_projection": ("y", "x"),
            },
            description="one two-photon imaging plane (Visual Behavior or Visual Coding 2P)",
        ),
        Layout(
            "ecephys_session",
            dims=("unit_id", "spike", "stimulus_presentation_id"),
            variables={
                "unit_id": ("unit_id",),
                "spike_times": ("spike",),
                "spike_times_index": ("unit_id",),
                "stimulus_presentations.start_time": ("stimulus_presentation_id",),
                "stimulus_presentations.stop_time": ("stimulus_presentation_id",),
            },
            description="one Visual Coding Neuropixels session (units, spikes, stimuli)",
        ),
        Layout(
            "ecephys_lfp",
            dims=("time", "channel"),
            variables={"lfp": ("time", "channel")},
            description="the LFP of one Neuropixels probe",
        ),
        Layout(
            "ecephys_csd",
            dims=("virtual_channel_index", "time"),
            variables={"csd": ("virtual_channel_index", "time")},
            description="the current source density of one Neuropixels probe",
        ),
        Layout(
            "celltypes_ephys",
            dims=("sweep_number",),
            variables={"sweep_number": ("sweep_number",)},
            description="the intracellular sweeps of one Cell Types specimen",
        ),
        Layout(
            "celltypes_morphology",
            dims=("node",),
            variables={
                "type": ("node",),
                "x": ("node",),
                "y": ("node",),
                "z": ("node",),
                "radius": ("node",),
                "parent": ("node",),
            },
            description="one SWC reconstruction",
        ),
        Layout(
            "ccf_volume",
            dims=("ap", "dv", "lr"),
            variables={"ap": ("ap",), "dv": ("dv",), "lr": ("lr",)},
            description="one CCF volume level (annotation or template)",
        ),
        Layout(
            "ccf_structures",
            dims=("structure_id",),
            variables={"acronym": ("structure_id",), "name": ("structure_id",)},
            description="the CCF structure ontology",
        ),
        Layout(
            "connectivity_experiment",
            dims=("ap", "dv", "lr"),
            variables={
                "projection_density": ("ap", "dv", "lr"),
                "injection_density": ("ap", "dv", "lr"),
                "injection_fraction": ("ap", "dv", "lr"),
                "data_mask": ("ap", "dv", "lr"),
            },
            description="one Mouse Connectivity experiment on the CCF grid",
        ),
        Layout("table", dims=(), description="a release metadata table"),
    ]
}


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
        One of :data:`LAYOUTS`.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, so calls can be chained.

    Raises
    ------
    SchemaError
        Naming what is missing or has the wrong dims, and the kind expected.
    """
    if kind not in LAYOUTS:
        raise SchemaError(f"unknown Dataset kind {kind!r}; known kinds: {sorted(LAYOUTS)}")
    layout = LAYOUTS[kind]
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
