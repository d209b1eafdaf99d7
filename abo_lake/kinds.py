"""Every kind the lake holds, declared once: the rest of abo_lake reads these declarations.

Two declarations, both data:

- a :class:`Kind` is one kind of dataset in a release (``ophys_experiment``,
  ``behavior_session``, ...): its dataset path template and id, its layout (dims and variables),
  the release table with one row per dataset, the per-dataset row tables (``units``, ``cells``),
  the CSV names that join it and the accessor that analyses it;
- a :class:`SourceFormat` is one kind of source file (``vbo-ophys``, ``ccf``, ...): its reader
  module, the synthetic writer of ``abo-lake synth``, the demo's options and the kinds it makes.

Adding a kind is its reader (and generator) plus a declaration here: the readers' registry
(:mod:`abo_lake.sources`), the schema, the catalog's parametrised entries, the release tables of
a job, the CSV joins, ``abo-lake synth``, the demo and the accessors' checks all read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from abo_lake.schema import Layout

__all__ = [
    "FORMATS",
    "KINDS",
    "Kind",
    "RowTable",
    "SourceFormat",
    "kinds_for",
]


@dataclass(frozen=True)
class RowTable:
    """A release table with one row per thing of a dataset (``units`` of a session).

    Parameters
    ----------
    name
        Table name in a release (``units``).
    dim
        The dataset dim along which rows go (``unit_id``); it becomes the table's index.
    prefix
        Prefix of the variables that are its columns (``channels.``), ``""`` for the main table.
    csv_ids
        Allen's other names of the id in project CSVs (``ecephys_unit_id``).
    csv_file
        Stem of the AllenSDK cache file named after the table (``units`` for ``units.csv``), in
        which a bare ``id`` column is this table's id.
    rows
        ``"module:function"`` computing the rows from the Dataset (a DataFrame indexed by
        ``dim``), for tables not read from variables (``morphometry``); None: the variables.
    """

    name: str
    dim: str
    prefix: str = ""
    csv_ids: tuple[str, ...] = ()
    csv_file: str | None = None
    rows: str | None = None


@dataclass(frozen=True)
class Kind:
    """One kind of dataset in a release.

    Parameters
    ----------
    layout
        Its name (``layout.kind``) and minimum layout (dims and variables).
    path
        Dataset path template in a release, with the id as a ``{field}``.
    id
        Name of the id in ``path``, the attrs, the release table and project CSVs.
    table
        Release table with one row per dataset of this kind (from its attrs), or None.
    csv_file
        Stem of the Allen metadata file named after ``table`` (``sessions`` for
        ``sessions.csv``), in which a bare ``id`` column is this kind's id.
    row_tables
        Per-dataset tables of things (``units``, ``channels``...).
    accessor
        Name of the xarray accessor that analyses it (``ophys``), or None.
    table_id
        Index name of ``table`` when not ``id`` (Allen's connectivity table says ``id``).
    entries
        Parametrised intake entries (name, path template) when not just (kind name, ``path``).
    """

    layout: Layout
    path: str
    id: str
    table: str | None = None
    csv_file: str | None = None
    row_tables: tuple[RowTable, ...] = ()
    accessor: str | None = None
    table_id: str | None = None
    entries: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.layout.kind

    @property
    def catalog_entries(self) -> dict[str, str]:
        """Parametrised intake entry name -> dataset path template (default: one, the kind's)."""
        if self.entries:
            return dict(self.entries)
        return {self.name: self.path} if self.path else {}

    @property
    def table_index(self) -> str:
        """The index of :attr:`table` (:attr:`id` unless the Allen table names it otherwise)."""
        return self.table_id or self.id


@dataclass(frozen=True)
class SourceFormat:
    """One kind of source file.

    Parameters
    ----------
    name
        Format name (``vbo-ophys``): ``abo-lake synth NAME`` and :func:`abo_lake.sources.read`.
    reader
        Module with ``sniff(path)``, ``read(path)`` (and optionally ``members``,
        ``MAPPED_HDF5``, ``fidelity_mappings``); None for files another format's reader reads.
    description
        What the files are, for help and errors.
    synthetic
        ``"module:function"`` of its synthetic writer, or None.
    demo
        Options of the demo's tiny sources, or None when the demo leaves it out.
    hdf5
        Whether it is an HDF5 (NWB) format, whose readers explain a file none of them reads.
    """

    name: str
    reader: str | None
    description: str
    synthetic: str | None = None
    demo: dict | None = field(default=None, hash=False)
    hdf5: bool = False


#: Source formats, in the order :func:`abo_lake.sources.detect_format` tries them.
FORMATS: dict[str, SourceFormat] = {
    f.name: f
    for f in [
        SourceFormat(
            "vbo-ophys",
            "abo_lake.sources.vbo_ophys",
            "Visual Behavior 2P experiment (NWB 2, AllenSDK's BehaviorOphysExperiment)",
            synthetic="abo_lake.synthetic.vbo_ophys:write",
            demo={"n_experiments": 2},
            hdf5=True,
        ),
        SourceFormat(
            "vbo-behavior",
            "abo_lake.sources.vbo_behavior",
            "Visual Behavior behavior-only session (NWB 2, AllenSDK's BehaviorSession)",
            synthetic="abo_lake.synthetic.vbo_behavior:write",
            demo={"training_days": 5, "behavior_seconds": 240.0},
            hdf5=True,
        ),
        SourceFormat(
            "vc2p-ophys",
            "abo_lake.sources.vc2p_ophys",
            "Visual Coding 2P experiment (Brain Observatory NWB 1)",
            synthetic="abo_lake.synthetic.vc2p_ophys:write",
            demo={},
            hdf5=True,
        ),
        SourceFormat(
            "vbn-ecephys",
            "abo_lake.sources.vbn_ecephys",
            "Visual Behavior Neuropixels session (NWB 2, AllenSDK's BehaviorEcephysSession; "
            "its probe LFP files are read by 'vcn-ecephys')",
            hdf5=True,
        ),
        SourceFormat(
            "vcn-ecephys",
            "abo_lake.sources.vcn_ecephys",
            "Neuropixels session or probe LFP file (NWB 2, Visual Coding and Visual Behavior)",
            synthetic="abo_lake.synthetic.vcn_ecephys:write",
            demo={},
            hdf5=True,
        ),
        SourceFormat(
            "celltypes",
            "abo_lake.sources.celltypes",
            "Cell Types specimen ephys (NWB 1), SWC reconstruction",
            synthetic="abo_lake.synthetic.celltypes:write",
            demo={},
            hdf5=True,
        ),
        SourceFormat(
            "glif",
            "abo_lake.sources.glif",
            "GLIF neuron model config (Allen's neuron_config.json, GLIF 1-5)",
            synthetic="abo_lake.synthetic.glif:write",
        ),
        SourceFormat(
            "ccf",
            "abo_lake.sources.ccf",
            "CCF annotation/template NRRD volume, ontology JSON, connectivity experiment",
            synthetic="abo_lake.synthetic.ccf:write_ccf",
            demo={},
        ),
        SourceFormat(
            "connectivity",
            None,
            "Mouse Connectivity experiment volumes (NRRD) and metadata (read by 'ccf')",
            synthetic="abo_lake.synthetic.ccf:write_connectivity",
            demo={},
        ),
    ]
}

_ECEPHYS = "ecephys_session_id"

#: Dataset kinds, by name.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
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
            path="ophys/experiment/{ophys_experiment_id}",
            id="ophys_experiment_id",
            table="ophys_experiments",
            row_tables=(RowTable("cells", "cell_specimen_id"),),
            accessor="ophys",
        ),
        Kind(
            Layout(
                "behavior_session",
                dims=("trials_id", "stimulus_presentation_id"),
                variables={
                    "trials.start_time": ("trials_id",),
                    "stimulus_presentations.start_time": ("stimulus_presentation_id",),
                },
                description="one Visual Behavior behavior-only session (no imaging)",
            ),
            path="behavior/session/{behavior_session_id}",
            id="behavior_session_id",
            table="behavior_sessions",
            accessor="ophys",
        ),
        Kind(
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
                description="one Neuropixels session (units, spikes, stimuli)",
            ),
            path="ecephys/session/{ecephys_session_id}",
            id=_ECEPHYS,
            table="ecephys_sessions",
            csv_file="sessions",
            row_tables=(
                RowTable("units", "unit_id", csv_ids=("ecephys_unit_id",), csv_file="units"),
                RowTable(
                    "channels",
                    "channel_id",
                    "channels.",
                    csv_ids=("ecephys_channel_id",),
                    csv_file="channels",
                ),
                RowTable(
                    "probes",
                    "probe",
                    "probes.",
                    csv_ids=("probe_id", "ecephys_probe_id"),
                    csv_file="probes",
                ),
            ),
            accessor="ecephys",
        ),
        Kind(
            Layout(
                "ecephys_lfp",
                dims=("time", "channel"),
                variables={"lfp": ("time", "channel")},
                description="the LFP of one Neuropixels probe",
            ),
            path="ecephys/probe/{probe_id}/lfp",
            id="probe_id",
            accessor="ecephys",
        ),
        Kind(
            Layout(
                "ecephys_csd",
                dims=("virtual_channel_index", "time"),
                variables={"csd": ("virtual_channel_index", "time")},
                description="the current source density of one Neuropixels probe",
            ),
            path="ecephys/probe/{probe_id}/csd",
            id="probe_id",
            accessor="ecephys",
        ),
        Kind(
            Layout(
                "celltypes_ephys",
                dims=("sweep_number",),
                variables={"sweep_number": ("sweep_number",)},
                description="the intracellular sweeps of one Cell Types specimen",
            ),
            path="celltypes/specimen/{specimen_id}/ephys",
            id="specimen_id",
            table="celltypes_specimens",
            row_tables=(
                RowTable(
                    "ephys_features",
                    "specimen_id",
                    rows="abo_lake.ephys_features:ephys_features_table",
                ),
            ),
            accessor="celltypes",
        ),
        Kind(
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
            path="celltypes/specimen/{specimen_id}/morphology",
            id="specimen_id",
            row_tables=(
                RowTable("morphometry", "specimen_id", rows="abo_lake.celltypes:morphometry_table"),
            ),
            accessor="morphology",
        ),
        Kind(
            Layout(
                "glif_model",
                dims=("asc",),
                variables={"asc_tau_array": ("asc",), "asc_amp_array": ("asc",)},
                description="one GLIF neuron model (neuron_config.json)",
            ),
            path="celltypes/specimen/{specimen_id}/glif/{neuronal_model_id}",
            id="neuronal_model_id",
            accessor="glif",
        ),
        Kind(
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
            path="connectivity/experiment/{connectivity_experiment_id}",
            id="connectivity_experiment_id",
            table="connectivity_experiments",
            table_id="id",
            csv_file="connectivity_experiments",
            accessor="ccf",
        ),
        Kind(
            Layout(
                "ccf_volume",
                dims=("ap", "dv", "lr"),
                variables={"ap": ("ap",), "dv": ("dv",), "lr": ("lr",)},
                description="one CCF volume level (annotation or template)",
            ),
            path="ccf/{ccf_version}/annotation",
            id="ccf_version",
            accessor="ccf",
            entries=(
                ("ccf_annotation", "ccf/{ccf_version}/annotation"),
                ("ccf_template", "ccf/{ccf_version}/template"),
            ),
        ),
        Kind(
            Layout(
                "ccf_structures",
                dims=("structure_id",),
                variables={"acronym": ("structure_id",), "name": ("structure_id",)},
                description="the CCF structure ontology",
            ),
            path="ccf/{ccf_version}/structures",
            id="ccf_version",
            accessor="ccf",
        ),
        Kind(Layout("table", dims=(), description="a release metadata table"), path="", id=""),
    ]
}


def kinds_for(accessor: str) -> tuple[str, ...]:
    """The kinds the accessor ``accessor`` (``"ophys"``, ``"ecephys"``, ``"ccf"``) analyses."""
    return tuple(k.name for k in KINDS.values() if k.accessor == accessor)
