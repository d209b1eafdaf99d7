"""The ``behavior_sessions`` release table: Allen's Visual Behavior behavior session table.

One row per behavior session, whether it had imaging or not, with the columns of AllenSDK's
``VisualBehaviorOphysProjectCache.get_behavior_session_table()`` (Allen's
``behavior_session_table.csv``), derived as AllenSDK derives them in
``behavior_project_cache/tables/sessions_table.py`` and ``util/prior_exposure_processing.py``:

- ``session_number`` from ``OPHYS_<n>`` in the session type; ``image_set`` (``images_A``,
  ``gratings``) and ``behavior_type`` (``passive_viewing`` for passive OPHYS sessions) from
  the session type; ``cre_line`` from the genotype (already in the datasets' attrs);
- ``prior_exposures_to_session_type`` / ``_image_set`` / ``_omissions``: the mouse's earlier
  sessions (by ``date_of_acquisition``) of the same type, image set letter, or with omitted
  flashes. AllenSDK counts over every session Allen recorded; the lake can count only the
  sessions in the release, so these (and ``experience_level``, which follows from them) are
  exact for a release holding a mouse's whole history and otherwise a lower bound. A project
  CSV given to the job (``--metadata behavior_session_table.csv``) overrides them;
- imaging sessions take ``ophys_session_id``, ``ophys_container_id`` and the experiments' ids
  (a list, as text, like Allen's CSV) from their experiments; ``num_depths_per_area`` and
  ``num_targeted_structures`` from the experiments' depths and areas.

``file_id`` and ``file_path`` (Allen's download ids) are left empty, and filled by the CSV.
``dataset_path`` opens the session: ``behavior/session/<id>``, or for an imaging session its
first experiment, which holds the same behavior data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "CSV_OVERRIDES", "behavior_sessions"]

#: The columns of Allen's ``behavior_session_table.csv``, in its order (the index first).
COLUMNS = (
    "behavior_session_id",
    "ophys_session_id",
    "ophys_container_id",
    "mouse_id",
    "indicator",
    "full_genotype",
    "driver_line",
    "cre_line",
    "reporter_line",
    "sex",
    "age_in_days",
    "project_code",
    "session_type",
    "session_number",
    "image_set",
    "behavior_type",
    "experience_level",
    "prior_exposures_to_session_type",
    "prior_exposures_to_image_set",
    "prior_exposures_to_omissions",
    "date_of_acquisition",
    "equipment_name",
    "imaging_plane_group_count",
    "num_depths_per_area",
    "num_targeted_structures",
    "ophys_experiment_id",
    "file_id",
    "file_path",
)

#: Columns a project CSV's values replace (the lake counts only the release's sessions).
CSV_OVERRIDES = (
    "experience_level",
    "prior_exposures_to_session_type",
    "prior_exposures_to_image_set",
    "prior_exposures_to_omissions",
    "file_id",
    "file_path",
)

#: Columns of an experiment that are not its session's (the session has several planes).
_EXPERIMENT_ONLY = frozenset(
    {
        "ophys_experiment_id",
        "dataset_path",
        "source_file",
        "source_sha256",
        "abo_lake_kind",
        "imaging_depth",
        "targeted_imaging_depth",
        "targeted_structure",
        "imaging_plane_group",
        "field_of_view_width",
        "field_of_view_height",
    }
)
_PER_SESSION = tuple(c for c in COLUMNS if c not in ("behavior_session_id",))


def session_number(session_type: str | None) -> int | None:
    """``OPHYS_4_images_B`` -> 4; None for training and other sessions (AllenSDK's rule)."""
    m = re.match(r"OPHYS_(?P<n>\d+)", session_type or "")
    return int(m.group("n")) if m else None


def image_set(session_type: str | None) -> str | None:
    """AllenSDK's ``parse_stimulus_set``: ``images_B``, ``gratings``, or None if neither."""
    parts = (session_type or "").split("_")
    if len(parts) > 3 and parts[2] == "images":
        return f"images_{parts[3]}"
    if len(parts) > 2 and parts[2] == "gratings":
        return "gratings"
    return None


def behavior_type(session_type: str | None) -> str:
    """AllenSDK's ``parse_behavior_context``: passive only for passive OPHYS sessions."""
    s = session_type or ""
    return "passive_viewing" if "passive" in s and "OPHYS" in s else "active_behavior"


def _image_set_letter(session_type: str | None) -> str | None:
    m = re.match(r".*images_(?P<letter>\w)", session_type or "")
    return m.group("letter") if m else None


def _has_omissions(row: pd.Series) -> bool:
    """AllenSDK: OPHYS sessions have omissions; habituation sessions only when their task
    parameters omit flashes (AllenSDK asks mtrain; the file's task parameters say it)."""
    s = str(row.get("session_type") or "").lower()
    if "habituation" in s:
        fraction = row.get(
            "omitted_flash_fraction", row.get("task_parameters.omitted_flash_fraction")
        )
        return bool(pd.notna(fraction) and float(fraction) > 0)
    return "ophys" in s


def _prior(df: pd.DataFrame, to: pd.Series, cumsum: bool = False) -> pd.Series:
    """AllenSDK's ``__get_prior_exposure_count``: per mouse, by date of acquisition."""
    order = df.sort_values("date_of_acquisition").index
    order = [i for i in order if pd.notna(df.at[i, "session_type"]) and pd.notna(to.get(i))]
    sub = df.loc[order]
    values = to.loc[order]
    if cumsum:
        counts = (
            values.astype(int)
            .groupby(sub["mouse_id"])
            .transform(lambda x: x.cumsum().shift(fill_value=0))
        )
    else:
        counts = sub.groupby([sub["mouse_id"], values]).cumcount()
    return counts.reindex(df.index).astype("Int64")


def _experience_level(df: pd.DataFrame) -> pd.Series:
    """AllenSDK's ``add_experience_level_ophys``."""
    level = pd.Series("None", index=df.index, dtype=object)
    level[df["session_type"].fillna("").str.startswith("TRAINING")] = "Training"
    number = df["session_number"]
    level[number.isin([0, 1, 2, 3])] = "Familiar"
    novel = number.isin([4, 5, 6])
    prior = df["prior_exposures_to_image_set"]
    level[novel & (prior == 0)] = "Novel 1"
    level[novel & (prior != 0)] = "Novel >1"
    return level


def _list_text(values: pd.Series) -> str:
    return str(sorted(int(v) for v in values.dropna()))


def session_rows(
    experiments: pd.DataFrame, by: str, per_experiment: Iterable[str]
) -> tuple[pd.DataFrame, Any]:
    """Experiments grouped into sessions by ``by``: one row per session holding the columns all
    its experiments agree on, except ``per_experiment`` (depth, area, file, ...), and the groups
    (for per-experiment lists). Experiments without a ``by`` are left out."""
    df = experiments.reset_index() if experiments.index.name else experiments
    if by not in df.columns:
        return pd.DataFrame(), None
    df = df.dropna(subset=[by])
    if not len(df):
        return pd.DataFrame(), None
    groups = df.groupby(by, sort=True)
    skip = {by, *per_experiment}
    shared = [
        c for c in df.columns if c not in skip and (groups[c].nunique(dropna=False) <= 1).all()
    ]
    return groups[shared].first(), groups


def _from_experiments(experiments: pd.DataFrame) -> pd.DataFrame:
    """One row per behavior session of the imaging experiments (one per ophys session)."""
    out, groups = session_rows(experiments, "behavior_session_id", _EXPERIMENT_ONLY)
    if groups is None:
        return out
    df = groups.obj
    out["ophys_experiment_id"] = groups["ophys_experiment_id"].agg(_list_text)
    if "dataset_path" in df.columns:  # its behavior is in each experiment: open the first
        out["dataset_path"] = groups["dataset_path"].min()
    if "ophys_container_id" in df.columns:
        out["ophys_container_id"] = groups["ophys_container_id"].agg(_list_text)
    if {"targeted_structure", "imaging_depth"} <= set(df.columns):
        out["num_targeted_structures"] = groups["targeted_structure"].nunique()
        per_area = df.groupby(["behavior_session_id", "targeted_structure"])["imaging_depth"]
        out["num_depths_per_area"] = per_area.nunique().groupby(level=0).max()
    return out


def behavior_sessions(
    sessions: pd.DataFrame | None, experiments: pd.DataFrame | None
) -> pd.DataFrame:
    """Allen's behavior session table from behavior-only sessions and imaging experiments.

    Parameters
    ----------
    sessions
        One row per behavior-only session (its attrs), indexed by ``behavior_session_id``.
    experiments
        The ``ophys_experiments`` table (indexed by ``ophys_experiment_id``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``behavior_session_id``: :data:`COLUMNS` in Allen's order, then the lake's
        own columns (``dataset_path``, ...); empty when there is neither.
    """
    parts = []
    if sessions is not None and len(sessions):
        parts.append(sessions)
    if experiments is not None and len(experiments):
        imaging = _from_experiments(experiments)
        if len(imaging):
            parts.append(imaging)
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts)
    df = df[~df.index.duplicated(keep="first")].sort_index()
    df.index = df.index.astype("int64")
    df.index.name = "behavior_session_id"
    for col in _PER_SESSION:
        if col not in df.columns:
            df[col] = pd.NA
    mouse = pd.to_numeric(df["mouse_id"], errors="coerce")
    if mouse.notna().all():  # Allen's table has numbers; AllenSDK's metadata text
        df["mouse_id"] = mouse.astype("int64")
    types = df["session_type"]
    df["session_number"] = types.map(session_number).astype("Int64")
    df["image_set"] = types.map(image_set)
    df["behavior_type"] = types.map(behavior_type)
    df["prior_exposures_to_session_type"] = _prior(df, types)
    df["prior_exposures_to_image_set"] = _prior(df, types.map(_image_set_letter))
    omissions = df.apply(_has_omissions, axis=1) if len(df) else pd.Series(dtype=bool)
    df["prior_exposures_to_omissions"] = _prior(df, omissions, cumsum=True)
    df["experience_level"] = _experience_level(df)
    ordered = list(COLUMNS[1:])
    return df[ordered + sorted(c for c in df.columns if c not in ordered)]
