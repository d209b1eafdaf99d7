"""AllenSDK's behavior tables of Visual Behavior datasets, from what the lake stores.

Pure functions behind the behavior members of the ``.ophys`` accessor, for
``behavior_session`` (AllenSDK's ``BehaviorSession``) and Visual Behavior ``ophys_experiment``
Datasets (``BehaviorOphysExperiment``, which has the same behavior attributes). Each returns
what AllenSDK 2.16.2's property of the same name returns from the same NWB file (names, index,
dtypes), doing on load what AllenSDK does on load:

- ``stimulus_presentations``: the per-stimulus tables united as pandas concatenates them
  (NaN where a table lacks a column), 'N/A' -> '', 0/1 float columns -> nullable boolean,
  ``is_change`` and ``flashes_since_change`` recomputed (``Presentations.from_nwb``,
  ``add_is_change=True``; layout note 18), -99 for missing integers, ``image_set`` dropped,
  ``stop_time`` -> ``end_time``. The rows are in the stored (stable) start-time order;
  AllenSDK sorts with pandas' default quicksort, which may order presentations starting at
  the very same time differently (no two do in the AllenSDK fixtures);
- ``eye_tracking``: AllenSDK ignores the stored ``area`` and ``likely_blink`` (note 27): areas
  are ``area_raw``, blinks are recomputed (NaN areas, z-score outliers, dilation) and the
  area/width/height/phi columns are NaN on blinks;
- ``task_parameters``: the stored string lists as floats, NaN as NaN, plus ``image_set``.

The small tables are read eagerly (as AllenSDK does); the stored variables stay lazy in the
Dataset (``ds["running_speed.speed"]``, ``ds["stimulus_templates.warped"]``).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from abo_lake.errors import SchemaError
from abo_lake.scheduling import compute_here

__all__ = [
    "BEHAVIOR_METADATA_KEYS",
    "EYE_TRACKING_COLUMNS",
    "eye_tracking",
    "eye_tracking_rig_geometry",
    "licks",
    "metadata",
    "raw_running_speed",
    "rewards",
    "running_speed",
    "stimulus_presentations",
    "stimulus_templates",
    "stimulus_timestamps",
    "task_parameters",
    "trials",
]

PRESENTATION = "stimulus_presentation_id"
#: AllenSDK's index name of ``stimulus_presentations``.
SDK_PRESENTATION = "stimulus_presentations_id"
#: Keys of AllenSDK's ``BehaviorSession.metadata``.
BEHAVIOR_METADATA_KEYS = (
    "equipment_name",
    "sex",
    "age_in_days",
    "stimulus_frame_rate",
    "session_type",
    "date_of_acquisition",
    "reporter_line",
    "cre_line",
    "behavior_session_uuid",
    "driver_line",
    "mouse_id",
    "project_code",
    "full_genotype",
    "behavior_session_id",
)
#: Columns of AllenSDK's ``eye_tracking`` table, in its order.
EYE_TRACKING_COLUMNS = (
    "timestamps",
    "cr_area",
    "eye_area",
    "pupil_area",
    "likely_blink",
    "pupil_area_raw",
    "cr_area_raw",
    "eye_area_raw",
    *(
        f"{short}_{col}"
        for short in ("cr", "eye", "pupil")
        for col in ("center_x", "center_y", "width", "height", "phi")
    ),
)
#: Integer columns AllenSDK's ``Presentations`` fills with -99 (``enforce_df_int_typing``).
_INT_COLUMNS = (
    "flashes_since_change",
    "image_index",
    "movie_repeat",
    "movie_frame_index",
    "repeat",
    "stimulus_index",
)
#: AllenSDK's leading presentation columns (``enforce_df_column_order``); the rest follow.
_COLUMN_ORDER = (
    "stimulus_block",
    "stimulus_block_name",
    "image_index",
    "image_name",
    "movie_frame_index",
    "duration",
    "start_time",
    "end_time",
    "stop_time",
    "start_frame",
    "end_frame",
    "is_change",
    "is_image_novel",
    "omitted",
    "movie_repeat",
    "flashes_since_change",
    "trials_id",
)
_BOOKKEEPING = ("units", "absent_in", "source_dtype")


def _missing(ds: xr.Dataset, what: str, needs: str) -> SchemaError:
    kind = ds.attrs.get("abo_lake_kind", "Dataset")
    return SchemaError(
        f"this {kind} has no {what} ({needs}); {what} exists in Visual Behavior files "
        "(behavior_session, behavior_ophys_experiment NWB)"
    )


def _load(variables: list[xr.Variable]) -> list[np.ndarray]:
    """Values of small variables, dask-backed ones computed together, synchronously."""
    values: list[Any] = [v.data for v in variables]
    lazy = [i for i, v in enumerate(values) if isinstance(v, da.Array)]
    if lazy:
        done = compute_here(*(values[i] for i in lazy))
        for i, arr in zip(lazy, done):
            values[i] = arr
    return [np.asarray(v) for v in values]


def _text(a: np.ndarray) -> np.ndarray:
    """Zarr's string arrays as an object array of ``str`` (as pandas holds AllenSDK's)."""
    if a.dtype.kind in "TUSO":
        return np.asarray([str(v) for v in a.ravel()], dtype=object).reshape(a.shape)
    return a


def _columns(ds: xr.Dataset, prefix: str, dim: str) -> dict[str, xr.Variable]:
    return {
        n.removeprefix(prefix + "."): ds.variables[n]
        for n in ds.variables
        if n.startswith(prefix + ".") and ds.variables[n].dims == (dim,)
    }


def _frame(ds: xr.Dataset, prefix: str, dim: str) -> pd.DataFrame:
    """``<prefix>.<column>`` along ``dim`` as a DataFrame (ragged columns as arrays), indexed
    by ``dim``'s coordinate under the same name."""
    cols = _columns(ds, prefix, dim)
    ragged = [c.removesuffix("_index") for c in cols if c.endswith("_index")]
    ragged = [c for c in ragged if f"{prefix}.{c}" in ds.variables]
    plain = [c for c in cols if c not in {f"{r}_index" for r in ragged}]
    loaded = _load(
        [cols[c] for c in plain]
        + [ds.variables[f"{prefix}.{r}"] for r in ragged]
        + [cols[f"{r}_index"] for r in ragged]
    )
    out: dict[str, Any] = {c: _text(v) for c, v in zip(plain, loaded)}
    for k, name in enumerate(ragged):
        flat = loaded[len(plain) + k]
        ends = loaded[len(plain) + len(ragged) + k].astype(np.int64)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        out[name] = [flat[a:b] for a, b in zip(starts, ends)]
    index = pd.Index(_load([ds.variables[dim]])[0] if dim in ds.variables else [], name=dim)
    if dim not in ds.variables:
        index = pd.RangeIndex(ds.sizes[dim], name=dim)
    return pd.DataFrame(out, index=index)


# --------------------------------------------------------------------------- tables


def trials(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``trials``: one row per trial, indexed by ``trials_id``.

    ``lick_times`` holds one array per trial; ``stop_time`` keeps its name (as in AllenSDK).
    """
    if "trials_id" not in ds.dims:
        raise _missing(ds, "trials", "no 'trials_id' dim")
    return _frame(ds, "trials", "trials_id")


def licks(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``licks``: ``timestamps`` (s) and stimulus ``frame`` of each lick."""
    if "licks.timestamps" not in ds.variables:
        raise _missing(ds, "licks", "no 'licks.timestamps'")
    t, frame = _load([ds.variables["licks.timestamps"], ds.variables["licks.frame"]])
    return pd.DataFrame({"timestamps": t.astype(np.float64), "frame": frame.astype(np.int64)})


def rewards(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``rewards``: ``volume`` (mL), ``timestamps`` (s), ``auto_rewarded``."""
    if "rewards.timestamps" not in ds.variables:
        raise _missing(ds, "rewards", "no 'rewards.timestamps'")
    volume, t, auto = _load(
        [ds.variables[f"rewards.{k}"] for k in ("volume", "timestamps", "autorewarded")]
    )
    return pd.DataFrame(
        {"volume": volume.astype(np.float64), "timestamps": t, "auto_rewarded": auto.astype(bool)}
    )


def _running(ds: xr.Dataset, name: str) -> pd.DataFrame:
    var = f"running_speed.{name}"
    if var not in ds.variables:
        raise _missing(ds, "running speed", f"no {var!r} along 'running_speed_time'")
    t, speed = _load([ds.variables["running_speed_time"], ds.variables[var]])
    return pd.DataFrame({"timestamps": t.astype(np.float64), "speed": speed})


def running_speed(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``running_speed`` (filtered, cm/s): ``timestamps`` and ``speed``."""
    return _running(ds, "speed")


def raw_running_speed(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``raw_running_speed`` (unfiltered, cm/s): ``timestamps`` and ``speed``."""
    return _running(ds, "speed_unfiltered")


def stimulus_timestamps(ds: xr.Dataset) -> np.ndarray:
    """AllenSDK's ``stimulus_timestamps``: every stimulus frame's time (s, no monitor delay)."""
    if "stimulus_timestamps" not in ds.variables:
        raise _missing(ds, "stimulus timestamps", "no 'stimulus_timestamps'")
    return _load([ds.variables["stimulus_timestamps"]])[0].astype(np.float64)


# --------------------------------------------------------------------------- presentations


def _united(ds: xr.Dataset) -> pd.DataFrame:
    """The stored presentations as pandas' concat of the per-stimulus tables gives them."""
    cols = _columns(ds, "stimulus_presentations", PRESENTATION)
    names = list(cols)
    loaded = dict(zip(names, _load([cols[n] for n in names])))
    stim = loaded.get("stimulus_name")
    out: dict[str, Any] = {}
    for name in names:
        values = _text(loaded[name])
        absent_in = cols[name].attrs.get("absent_in")
        if absent_in is not None and stim is not None:
            absent = np.isin(_text(stim).astype(str), np.asarray(absent_in, dtype=str))
            if values.dtype == object:
                values = values.copy()
                values[absent] = np.nan
            elif cols[name].attrs.get("source_dtype") == "bool":  # bool + NaN: object
                values = np.where(absent, np.nan, values.astype(bool).astype(object))
            else:
                values = np.where(absent, np.nan, values.astype(np.float64))
        out[name] = values
    table = pd.DataFrame(out)
    for name in table.columns:  # Presentations.from_nwb: .replace({"N/A": ""})
        if table[name].dtype == object:
            table[name] = table[name].where(table[name].ne("N/A"), "")
    return table


def _is_change(table: pd.DataFrame) -> pd.Series:
    """AllenSDK's ``is_change_event``: the first flash of a new image, omitted ones ignored."""
    omitted = pd.array(table["omitted"], dtype="boolean")
    stimuli = table["image_name"][(~omitted).fillna(False).to_numpy(bool)]
    prev = stimuli.shift()
    change = stimuli.iloc[1:] != prev.iloc[1:]
    return change.reindex(table.index).fillna(False).astype(bool).rename("is_change")


def _flashes_since_change(table: pd.DataFrame) -> np.ndarray:
    """AllenSDK's ``get_flashes_since_change``."""
    omitted = pd.array(table["omitted"], dtype="boolean").fillna(False).to_numpy(bool)
    names = table["image_name"].to_numpy(object)
    change = table["is_change"].to_numpy(bool)
    out = np.zeros(len(table), dtype=np.int64)
    for i in range(len(table)):
        if names[i] == "omitted" or omitted[i]:
            out[i] = out[i - 1]  # row 0: out[-1], still 0, as AllenSDK's iloc[-1]
        elif change[i] or i == 0:
            out[i] = 0
        else:
            out[i] = out[i - 1] + 1
    return out


def stimulus_presentations(ds: xr.Dataset, *, add_is_change: bool = True) -> pd.DataFrame:
    """AllenSDK's ``stimulus_presentations``, indexed by ``stimulus_presentations_id``.

    Parameters
    ----------
    ds
        A Visual Behavior Dataset.
    add_is_change
        Recompute ``is_change`` and ``flashes_since_change`` as AllenSDK's
        ``Presentations.from_nwb`` does for Visual Behavior 2P and behavior-only files (its
        default); False keeps the stored ones (AllenSDK's Neuropixels reader).

    Returns
    -------
    pandas.DataFrame
        One row per presentation, in start-time order (the index is that position).

    Raises
    ------
    SchemaError
        If the Dataset has no ``stimulus_presentations.*`` variables.
    """
    if PRESENTATION not in ds.dims:
        raise _missing(ds, "stimulus presentations", f"no {PRESENTATION!r} dim")
    table = _united(ds)
    table = table.astype(dict.fromkeys(table.select_dtypes(include="int").columns, "int64"))
    table = table.astype(
        {
            c: "boolean"
            for c in table.select_dtypes(include="float").columns
            if set(table[c][~table[c].isna()].unique()).issubset({1, 0})
            and not c.endswith("_index")
        }
    )
    if add_is_change and {"image_name", "omitted"} <= set(table.columns):
        table["is_change"] = _is_change(table)
        table["flashes_since_change"] = _flashes_since_change(table)
    for col in _INT_COLUMNS:  # enforce_df_int_typing (a column holding text is left as is)
        if col in table.columns and table[col].dtype.kind in "iuf":
            table[col] = table[col].fillna(-99).astype(int)
    table.index = pd.RangeIndex(len(table), name=SDK_PRESENTATION)
    first = [c for c in _COLUMN_ORDER if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    table = table.drop(columns=["image_set", "index"], errors="ignore")
    return table.rename(columns={"stop_time": "end_time"})


# --------------------------------------------------------------------------- templates, eye


def stimulus_templates(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``stimulus_templates``: ``unwarped`` (float64, NaN off screen) and
    ``warped`` (uint8) image arrays, indexed by ``image_name`` in template order.

    The lazy (image_name, template_y, template_x) arrays are ``ds["stimulus_templates.warped"]``
    and ``ds["stimulus_templates.unwarped"]``.
    """
    if "stimulus_templates.warped" not in ds.variables:
        raise _missing(ds, "stimulus templates", "no 'stimulus_templates.warped'")
    keys = ["image_name", "stimulus_templates.warped"]
    if "stimulus_templates.unwarped" in ds.variables:
        keys.append("stimulus_templates.unwarped")
    loaded = _load([ds.variables[k] for k in keys])
    names = _text(loaded[0])
    unwarped = list(loaded[2]) if len(loaded) > 2 else [None] * len(names)
    return pd.DataFrame(
        {"unwarped": unwarped, "warped": list(loaded[1])},
        index=pd.Index(names, name="image_name"),
    )


def _blinks(eye: np.ndarray, pupil: np.ndarray, z_threshold: float, dilation: int) -> np.ndarray:
    """AllenSDK's ``determine_outliers`` + ``determine_likely_blinks``."""
    outliers = np.zeros(len(eye), dtype=bool)
    for a in (eye, pupil):  # scipy.stats.zscore(nan_policy='omit'): NaN never an outlier
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (a - np.nanmean(a)) / np.nanstd(a)
            outliers |= np.abs(z) > z_threshold
    blinks = np.isnan(eye) | np.isnan(pupil) | outliers
    if dilation > 0:  # ndimage.binary_dilation(iterations=dilation), 1-d cross, zero border
        from scipy import ndimage

        blinks = ndimage.binary_dilation(blinks, iterations=dilation)
    return np.asarray(blinks, dtype=bool)


def eye_tracking(
    ds: xr.Dataset, *, z_threshold: float = 3.0, dilation_frames: int = 2
) -> pd.DataFrame:
    """AllenSDK's ``eye_tracking`` (``EyeTrackingTable.from_nwb``), indexed by ``frame``.

    Parameters
    ----------
    ds
        A Visual Behavior Dataset.
    z_threshold
        Frames whose eye or pupil area is further than this many standard deviations from
        the mean are likely blinks (AllenSDK's default 3.0).
    dilation_frames
        Frames added on each side of a likely blink (AllenSDK's default 2).

    Returns
    -------
    pandas.DataFrame
        AllenSDK's columns (:data:`EYE_TRACKING_COLUMNS`); empty (no rows) when the session
        has no eye tracking, as AllenSDK's. ``*_area`` are the raw areas, NaN on blinks, as
        are ``*_width``, ``*_height`` and ``*_phi`` of the eye and pupil.
    """
    dim = "eye_tracking_time"
    if dim not in ds.dims:
        return pd.DataFrame(
            {c: np.zeros(0) for c in EYE_TRACKING_COLUMNS},
            index=pd.Index([], dtype=object, name="frame"),
        )
    names = {
        c: f"eye_tracking.{c}"
        for c in EYE_TRACKING_COLUMNS
        if c not in ("timestamps", "likely_blink", "cr_area", "eye_area", "pupil_area")
    }
    for short in ("cr", "eye", "pupil"):
        names[f"{short}_area"] = f"eye_tracking.{short}_area_raw"  # AllenSDK: area_raw
    missing = sorted(v for v in names.values() if v not in ds.variables)
    if missing:
        raise SchemaError(f"this Dataset's eye tracking lacks {missing!r}")
    keys = list(names)
    loaded = dict(zip(keys, _load([ds.variables[names[k]] for k in keys])))
    loaded["timestamps"] = _load([ds.variables[dim]])[0]
    loaded["likely_blink"] = _blinks(
        loaded["eye_area_raw"], loaded["pupil_area_raw"], z_threshold, dilation_frames
    )
    table = pd.DataFrame(
        {c: loaded[c] for c in EYE_TRACKING_COLUMNS},
        index=pd.RangeIndex(len(loaded["timestamps"]), name="frame"),
    )
    blink = table["likely_blink"].to_numpy()
    for col in (
        *(f"{s}_area" for s in ("eye", "pupil", "cr")),
        *(f"{s}_{c}" for s in ("eye", "pupil") for c in ("width", "height", "phi")),
    ):
        table.loc[blink, col] = np.nan
    return table


# --------------------------------------------------------------------------- dicts


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def task_parameters(ds: xr.Dataset) -> dict[str, Any]:
    """AllenSDK's ``task_parameters``: the stored task parameters, string lists as floats,
    plus ``image_set`` from the session type (``parse_stimulus_set``)."""
    prefix = "task_parameters."
    out = {k.removeprefix(prefix): _plain(v) for k, v in ds.attrs.items() if k.startswith(prefix)}
    if not out:
        raise _missing(ds, "task parameters", "no 'task_parameters.*' attributes")
    for key in ("blank_duration_sec", "response_window_sec"):
        if isinstance(out.get(key), list):
            out[key] = [float(x) for x in out[key]]
    if out.get("omitted_flash_fraction") is None:
        out["omitted_flash_fraction"] = float("nan")
    session_type = str(out.get("session_type", ""))
    parts = session_type.split("_")
    if len(parts) > 3 and parts[2] == "images":
        out["image_set"] = f"images_{parts[3]}"
    elif len(parts) > 2 and parts[2] == "gratings":
        out["image_set"] = "gratings"
    return dict(sorted(out.items()))


def eye_tracking_rig_geometry(ds: xr.Dataset) -> dict[str, Any]:
    """AllenSDK's ``eye_tracking_rig_geometry``: positions (mm) and rotations (deg) as
    [x, y, z] lists and ``equipment``; ``{}`` when the session has none (as AllenSDK)."""
    prefix = "eye_tracking_rig_geometry."
    return {k.removeprefix(prefix): _plain(v) for k, v in ds.attrs.items() if k.startswith(prefix)}


def metadata(ds: xr.Dataset) -> dict[str, Any]:
    """AllenSDK's ``BehaviorSession.metadata`` of a behavior-only session.

    ``date_of_acquisition`` is a timezone-aware ``datetime``, ``behavior_session_uuid`` a
    :class:`uuid.UUID` (None when stored as 'None'), ``driver_line`` a list, ``mouse_id`` text;
    a field the file lacks is None.
    """
    a = ds.attrs
    if "behavior_session_id" not in a:
        raise _missing(ds, "behavior metadata", "no 'behavior_session_id' attribute")
    out: dict[str, Any] = {k: _plain(a.get(k)) for k in BEHAVIOR_METADATA_KEYS}
    if isinstance(out["driver_line"], str):
        out["driver_line"] = [out["driver_line"]]
    if isinstance(out["date_of_acquisition"], str):
        out["date_of_acquisition"] = datetime.datetime.fromisoformat(out["date_of_acquisition"])
    if out["mouse_id"] is not None:
        out["mouse_id"] = str(out["mouse_id"])
    uid = out["behavior_session_uuid"]
    out["behavior_session_uuid"] = uuid.UUID(uid) if uid not in (None, "None") else None
    return out
