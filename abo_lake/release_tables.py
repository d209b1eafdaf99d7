"""Release metadata tables: one row per dataset, per-dataset row tables, project CSV joins.

What tables a release has, their ids and the CSVs that join them are declared with each kind in
:mod:`abo_lake.kinds`; this module builds them from what a job converted:

- one row per dataset from its attrs (``ophys_experiments``, ``behavior_sessions``,
  ``ecephys_sessions``, ...), and ``ophys_sessions`` grouped from the ophys experiments;
- the per-dataset row tables (``units``, ``channels``, ``probes``, ``cells``), which each
  conversion stores as Parquet objects (:func:`row_tables`);
- project metadata CSVs joined by id (:func:`read_csvs`, :func:`csv_key`), each reported with
  how many of its rows matched.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from abo_lake import cas
from abo_lake.behavior_sessions import CSV_OVERRIDES, behavior_sessions, session_rows
from abo_lake.kinds import KINDS, RowTable
from abo_lake.storage import Storage

if TYPE_CHECKING:
    from abo_lake.jobs import FileResult

__all__ = [
    "TABLES",
    "TABLE_NAMES",
    "build_tables",
    "csv_key",
    "id_names",
    "read_csvs",
    "row_tables",
]

#: Release table name -> (dataset kind, index name): one row per dataset of the kind.
TABLES: dict[str, tuple[str, str]] = {
    k.table: (k.name, k.table_index) for k in KINDS.values() if k.table
}
#: Every table a release can have, for help texts.
TABLE_NAMES: tuple[str, ...] = (
    *TABLES,
    "ophys_sessions",
    *(t.name for k in KINDS.values() for t in k.row_tables),
)
#: Per-dataset row table name -> (its declaration, the dataset kind, its owner's id column).
ROW_TABLES: dict[str, tuple[RowTable, str, str]] = {
    t.name: (t, k.name, k.id) for k in KINDS.values() for t in k.row_tables
}


def row_tables(obj: xr.Dataset | xr.DataTree, kind: str | None) -> dict[str, pd.DataFrame]:
    """The small one-row-per-thing tables of a Dataset (units, channels, probes, cells)."""
    if not isinstance(obj, xr.Dataset):
        return {}
    out = {}
    for name, (table, table_kind, owner) in ROW_TABLES.items():
        dim, prefix = table.dim, table.prefix
        if kind == table_kind and table.rows:  # computed rows (morphometry)
            module, function = table.rows.split(":")
            rows = getattr(importlib.import_module(module), function)(obj)
            out[name] = _uniform_columns(rows[sorted(rows.columns)])
            continue
        if kind != table_kind or dim not in obj.dims:
            continue
        names = [
            n
            for n, v in obj.variables.items()
            if v.dims == (dim,)
            and n != dim
            and n.startswith(prefix)
            and "." not in n[len(prefix) :]
            and not n.endswith("_index")
        ]
        df = (
            obj[names].reset_coords().to_dataframe()
            if names
            else pd.DataFrame(index=obj.indexes[dim])
        )
        df.columns = [c[len(prefix) :] for c in df.columns]
        df.insert(0, owner, obj.attrs.get(owner))
        out[name] = _uniform_columns(df[[df.columns[0], *sorted(df.columns[1:])]])
    return out


def build_tables(
    results: Sequence[FileResult],
    metadata: Sequence[str | Path] = (),
    storage: Storage | None = None,
    notes: list[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Metadata tables from what was converted, joined with project metadata CSVs.

    One row per dataset from its attrs (``ophys_experiments``, ``ecephys_sessions``, ...),
    ``ophys_sessions`` grouped from the ophys experiments, plus the per-file row tables
    (``units``, ``channels``, ``probes``, ``cells``) that each conversion stored as Parquet
    objects in ``storage``. Each table is joined with the CSVs keyed by its id (see
    :func:`csv_key`). One line per CSV is appended to ``notes``: the tables it joined and how
    many of its rows matched a converted dataset, or that it matched no table.
    """
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for f in results:
        for path, kind in f.kinds.items():
            for name, (table_kind, _) in TABLES.items():
                if kind == table_kind:
                    attrs = {
                        k: _cell(v) for k, v in f.attrs[path].items() if not isinstance(v, dict)
                    }
                    rows[name].append({**attrs, "dataset_path": path})
    frames = {name: pd.DataFrame(rows[name]) for name in TABLES if rows[name]}
    if "ophys_experiments" in frames:
        sessions = _ophys_sessions(frames["ophys_experiments"])
        if len(sessions):
            frames["ophys_sessions"] = sessions
    tables = {}
    for name, df in frames.items():
        id_col = TABLES[name][1] if name in TABLES else "ophys_session_id"
        df = df[sorted(df.columns)]  # the same table from fresh and from resumed results
        if id_col in df.columns:
            df = df.drop_duplicates(id_col).set_index(id_col).sort_index()
        tables[name] = df
    if "behavior_sessions" in tables or "ophys_experiments" in tables:
        sessions = behavior_sessions(
            tables.get("behavior_sessions"), tables.get("ophys_experiments")
        )
        if len(sessions):
            tables["behavior_sessions"] = sessions
    if storage is not None:
        for name in sorted({n for f in results for n in f.tables}):
            parts = [
                pd.read_parquet(io.BytesIO(storage.read(cas.key_of(h))))
                for f in results
                for h in f.tables.get(name, [])
            ]
            tables[name] = pd.concat(parts).sort_index()
    if "morphometry" in tables or "ephys_features" in tables:
        tables["celltypes_specimens"] = _specimens(
            tables.get("celltypes_specimens"),
            tables.get("morphometry"),
            tables.get("ephys_features"),
        )
    csvs = read_csvs(metadata)
    joined: dict[str, list[str]] = {path: [] for path in csvs}
    for name, df in tables.items():
        for path, extra in csvs.items():
            key = csv_key(name, df, path, extra)
            if key is None:
                continue
            extra = extra.dropna(subset=[key]).set_index(key)
            matched = int(extra.index.isin(df.index).sum())
            joined[path].append(f"{name} by {key} ({matched} of {len(extra)} rows matched)")
            df = df.join(extra[[c for c in extra.columns if c not in df.columns]])
            for col in [c for c in extra.columns if c in df.columns]:  # fill what is missing
                other = extra[col].reindex(df.index)
                if name == "behavior_sessions" and col in CSV_OVERRIDES:  # the whole history
                    dtype = df[col].dtype
                    df[col] = other.where(other.notna(), df[col]).astype(dtype)
                else:
                    df[col] = df[col].where(df[col].notna(), other)
        if name == "ophys_experiments":
            df = _harmonised(df)
        elif name == "cells" and "rmse" in df.columns:  # Visual Coding's name of the same
            df = df.copy()  # neuropil-fit error (both kept, one searchable column)
            df["RMSE"] = df["RMSE"].fillna(df["rmse"]) if "RMSE" in df.columns else df["rmse"]
        tables[name] = _uniform_columns(df)
    if notes is not None:
        notes += [_csv_note(path, joins) for path, joins in joined.items()]
    return tables


def _specimens(
    ephys: pd.DataFrame | None,
    morphometry: pd.DataFrame | None,
    features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``celltypes_specimens``: one row per specimen with ephys or a morphology (or both),
    flagged ``has_ephys``/``has_morphology``, the morphometry columns prefixed
    ``morphometry.`` and the electrophysiology features prefixed ``ephys_features.`` (the
    ``morphometry`` and ``ephys_features`` tables have them unprefixed); a project CSV keyed by
    ``specimen_id`` (Cre line, area, layer, dendrite type, reporter status) joins it later."""
    if ephys is None:
        ephys = pd.DataFrame(index=pd.Index([], name="specimen_id", dtype="int64"))
    out = ephys
    morph_index = pd.Index([])
    for table, prefix in ((morphometry, "morphometry."), (features, "ephys_features.")):
        if table is None:
            continue
        extra = table.add_prefix(prefix)
        extra = extra[~extra.index.duplicated()]
        out = out.join(extra, how="outer")
        if prefix == "morphometry.":
            morph_index = extra.index
    out.index.name = "specimen_id"
    out["has_ephys"] = out.index.isin(ephys.index)
    out["has_morphology"] = out.index.isin(morph_index)
    return out


def _cell(value: Any) -> Any:
    """An attribute as a table cell: a list as its text, as in Allen's CSVs."""
    return str(value) if isinstance(value, list | tuple) else value


def _csv_note(path: str, joins: list[str]) -> str:
    """One line on what a project CSV joined, for the job's report."""
    if not joins:
        return (
            f"metadata CSV {path} matched no table: no id column of the converted data "
            f"({', '.join(sorted(id_names()))}) with unique values of the table's type"
        )
    note = f"metadata CSV {path} joined " + "; ".join(joins)
    if all(" (0 of " in j for j in joins):
        note += ": none of its ids is a converted dataset's (other ids, or another project?)"
    return note


#: Columns of ``ophys_experiments`` that Visual Coding files name differently from Visual
#: Behavior's tables: (Visual Behavior's name, Visual Coding's). Both stay; the first is
#: filled from the second, so one search finds both projects' experiments.
SHARED_COLUMNS = (("age_in_days", "age_days"), ("equipment_name", "device_name"))
_SEX = {"male": "M", "female": "F", "unknown": "U"}


def _harmonised(df: pd.DataFrame) -> pd.DataFrame:
    """``ophys_experiments`` searchable across projects: shared columns filled (see
    :data:`SHARED_COLUMNS`), ``sex`` as M/F (Visual Coding files say male/female) and
    ``excitation_lambda`` in nm as a number (Visual Coding files say "910 nanometers")."""
    df = df.copy()
    for name, other in SHARED_COLUMNS:
        if other in df.columns:
            df[name] = df[name].fillna(df[other]) if name in df.columns else df[other]
    if "sex" in df.columns:
        df["sex"] = df["sex"].map(lambda v: _SEX.get(v.lower(), v) if isinstance(v, str) else v)
    if "excitation_lambda" in df.columns:
        text = df["excitation_lambda"].astype("string").str.removesuffix(" nanometers")
        numbers = pd.to_numeric(text, errors="coerce")
        if numbers.notna().sum() == df["excitation_lambda"].notna().sum():  # all parsed
            df["excitation_lambda"] = numbers.astype(float)
    return df[sorted(df.columns)]


def read_csvs(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """Project metadata CSVs by path; a file that does not parse raises ValueError naming it
    (a job reads them before converting anything). A ``.json`` file is a list of records,
    such as the Cell Types ``cells.json`` (see :func:`abo_lake.celltypes.cells_table`)."""
    out = {}
    for path in map(str, paths):
        try:
            if path.lower().endswith(".json"):
                from abo_lake.celltypes import cells_table

                out[path] = cells_table(path)
            else:
                out[path] = pd.read_csv(path)
        except (OSError, ValueError) as err:  # pandas' ParserError is a ValueError
            raise ValueError(f"{path}: not a readable metadata CSV ({err})") from err
    return out


#: Allen's other names for each table's id in project CSVs. AllenSDK's caches name the id
#: ``id`` in the table a file is named after (``units.csv``, ``channels.csv``, ...).
CSV_ID_ALIASES: dict[str, tuple[str, ...]] = {
    t.name: t.csv_ids for t, _, _ in ROW_TABLES.values() if t.csv_ids
}
#: CSV file stem -> the table it is named after.
CSV_FILE_TABLES: dict[str, str] = {
    **{k.csv_file: k.table for k in KINDS.values() if k.csv_file and k.table},
    **{t.csv_file: t.name for t, _, _ in ROW_TABLES.values() if t.csv_file},
}


def id_names() -> set[str]:
    """Every id column name a project CSV can join on."""
    names = {id_col for _, id_col in TABLES.values()} | {"ophys_session_id"}
    names |= {t.dim for t, _, _ in ROW_TABLES.values()}
    return names | {a for aliases in CSV_ID_ALIASES.values() for a in aliases}


def csv_key(name: str, df: pd.DataFrame, path: str, extra: pd.DataFrame) -> str | None:
    """The column of a project CSV that keys table ``name`` (indexed by its id), or None.

    The table's own id name, Allen's aliases of it, or ``id`` only in a CSV named after the
    table (a CSV named after another table keys only that one); its values must be unique in
    the CSV and of the same kind as the table's (the session table's ``ophys_experiment_id``
    holds lists, as text).
    """
    named_for = CSV_FILE_TABLES.get(Path(path).stem)
    if named_for not in (None, name):
        return None  # units.csv keys units, though it has channel and probe ids too
    names = [df.index.name] if df.index.name != "id" else []
    names += CSV_ID_ALIASES.get(name, ())
    if named_for == name:
        names.append("id")
    for key in names:
        if key in extra.columns:
            values = extra[key].dropna()
            numeric = pd.api.types.is_numeric_dtype
            if values.is_unique and numeric(values) == numeric(df.index):
                return key
    return None


#: Per-experiment columns of ``ophys_sessions`` given as the sorted list of their values.
SESSION_LISTS = ("ophys_experiment_id", "targeted_structure", "imaging_depth", "dataset_path")


def _ophys_sessions(experiments: pd.DataFrame) -> pd.DataFrame:
    """One row per ``ophys_session_id`` (a Mesoscope session images several planes, each an
    experiment): the columns every experiment of every session agrees on, the experiments'
    ids, areas, depths and dataset paths as lists (text, like the Allen session table's
    ``ophys_experiment_id``), and their number. Experiments without a session id (Visual
    Coding's files name only the experiment) are left out."""
    per_experiment = (*SESSION_LISTS, "source_file", "source_sha256")
    out, groups = session_rows(experiments, "ophys_session_id", per_experiment)
    if groups is None:
        return out
    df = groups.obj
    out["n_experiments"] = groups.size()
    for col in SESSION_LISTS:
        if col in df.columns:
            out[col] = groups[col].agg(lambda v: str(sorted(v.dropna().tolist())))
    return out.reset_index()


def _uniform_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Give each column one type (sources disagree: "910 nm" vs 910.0), so Parquet can hold it;
    ids stay integers where some rows lack them (nullable Int64, not float)."""
    for col in df.columns:
        if df[col].dtype == object:
            values = df[col].dropna()
            if len(values) and all(isinstance(v, int | float | bool) for v in values):
                df[col] = pd.to_numeric(df[col], errors="coerce")
            else:
                df[col] = df[col].astype("string")
        if str(col).endswith("_id") and df[col].dtype.kind == "f" and _integral(df[col]):
            df[col] = df[col].astype("Int64")
    if str(df.index.name).endswith("_id") and df.index.dtype.kind == "f" and _integral(df.index):
        df.index = df.index.astype("Int64")
    return df


def _integral(values: pd.Series | pd.Index) -> bool:
    present = values.dropna()
    return bool(len(present)) and bool((present == present.round()).all())
