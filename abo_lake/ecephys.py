"""Lazy, chunk-aware analysis of Visual Coding Neuropixels Datasets, with AllenSDK's semantics.

Pure functions over the Datasets of :mod:`abo_lake.sources.vcn_ecephys` (kinds
``ecephys_session``, ``ecephys_lfp`` and ``ecephys_csd``); the ``.ecephys`` accessor delegates
here. Names, dims, dtypes and formulas follow AllenSDK's ``EcephysSession`` and its
``stimulus_analysis`` package (``ALLEN_DATA.md`` §1).

Spike times are one flat ``spike_times`` array (dim ``spike``) plus ``spike_times_index`` end
offsets along ``unit_id``. Spike counting never builds one Python list per unit: units are
grouped into blocks aligned to the chunks of ``spike_times``, one dask task per block, and each
unit is counted with one vectorised ``np.searchsorted`` over every bin edge of every
presentation. Building a result reads only small metadata (``spike_times_index`` and the
presentation table: one dask compute of a few KB); spike chunks are read when you compute.

Invalid presentations follow AllenSDK's ``EcephysSession._mask_invalid_stimulus_presentations``:
a presentation whose closed [start_time, stop_time] overlaps an ``invalid_times`` interval tagged
``"stimulus"`` is shown by :func:`stimulus_presentations` as ``stimulus_name ==
"invalid_presentation"`` with every other column but start/stop NaN. It therefore belongs to no
stimulus condition (:func:`conditionwise_spike_statistics`, :func:`psth` and
:func:`drifting_gratings_metrics` leave it out), while
:func:`presentationwise_spike_counts` and :func:`presentationwise_spike_times` still cover it.

:func:`lfp` and :func:`csd` live in :mod:`abo_lake.lfp` and are re-exported here.
"""

from __future__ import annotations

import ast
import datetime
import itertools
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from abo_lake import behavior
from abo_lake.lfp import _invalid_intervals, _load, _positions, _unknown, csd, lfp
from abo_lake.scheduling import compute

__all__ = [
    "conditionwise_spike_statistics",
    "csd",
    "drifting_gratings_metrics",
    "lfp",
    "mean_waveforms",
    "presentationwise_spike_counts",
    "presentationwise_spike_times",
    "psth",
    "spike_times",
    "stimulus_presentations",
    "units",
    "units_in",
]

_SPIKE_CHUNK = 524_288  # spikes per dask chunk when spike_times is in memory (4 MB of float64)
_BLOCK_BYTES = 64 * 2**20  # cap on the output of one counting task
_RENAMES = {  # AllenSDK EcephysSession._build_units_table
    "PT_ratio": "waveform_PT_ratio",
    "amplitude": "waveform_amplitude",
    "duration": "waveform_duration",
    "halfwidth": "waveform_halfwidth",
    "recovery_slope": "waveform_recovery_slope",
    "repolarization_slope": "waveform_repolarization_slope",
    "spread": "waveform_spread",
    "velocity_above": "waveform_velocity_above",
    "velocity_below": "waveform_velocity_below",
    "l_ratio": "L_ratio",
}
_SP = "stimulus_presentations."
_INVALID = ("invalid_times.start_time", "invalid_times.stop_time", "invalid_times.tags",
            "invalid_times.tags_index")  # fmt: skip
_INVALID_NAME = "invalid_presentation"


# --- metadata ------------------------------------------------------------------------------------


def _unit_frame(cols: dict[str, np.ndarray], unit_id: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(cols, index=pd.Index(unit_id, name="unit_id"))
    return frame.rename(columns={k: v for k, v in _RENAMES.items() if v not in frame})


def _unit_columns(ds: xr.Dataset) -> list[str]:
    return [
        k for k, v in ds.data_vars.items()
        if v.dims == ("unit_id",) and k != "spike_times_index"
    ]  # fmt: skip


#: Unit columns the reader joins from the peak channel's probe (not columns of the NWB units).
_PROBE_JOINED = ("probe_description", "probe_sampling_rate", "probe_lfp_sampling_rate",
                 "probe_has_lfp_data")  # fmt: skip


def _own_unit_columns(ds: xr.Dataset) -> list[str]:
    """The columns of the NWB units table: the unit columns the reader did not join."""
    return [
        k for k in _unit_columns(ds)
        if f"channels.{k}" not in ds.variables and k not in _PROBE_JOINED
        and k not in ("structure_acronym", "ecephys_structure_acronym")
    ]  # fmt: skip


def session_class(ds: xr.Dataset) -> str:
    """The AllenSDK class whose semantics a session follows: ``"EcephysSession"`` (Visual
    Coding Neuropixels) or ``"BehaviorEcephysSession"`` (Visual Behavior Neuropixels)."""
    return str(ds.attrs.get("allensdk_session_class", "EcephysSession"))


def _text(values: np.ndarray) -> np.ndarray:
    """Zarr's StringDType or bytes as a NumPy array of Python ``str`` objects."""
    return np.asarray([str(v) for v in np.asarray(values).tolist()], dtype=object)


def _frame(ds: xr.Dataset, dim: str, prefix: str, index_name: str | None) -> pd.DataFrame:
    """Every ``<prefix><col>`` variable along ``dim`` as a column (text as ``str`` objects)."""
    names = [k for k, v in ds.variables.items()
             if k.startswith(prefix) and v.dims == (dim,) and k != dim]  # fmt: skip
    meta = _load(ds, names)
    cols = {}
    for k in names:
        v = meta[k]
        cols[k.removeprefix(prefix)] = _text(v) if v.dtype.kind in "OTUS" else v
    return pd.DataFrame(cols, index=pd.Index(ds.indexes[dim].to_numpy(), name=index_name))


_CHANNEL_DROP = ("imp", "group_name", "location", "local_index")


def channels(ds: xr.Dataset, filter_by_validity: bool = True) -> pd.DataFrame:
    """AllenSDK's channels table (eager, small): ``session.channels`` (Visual Coding) or
    ``session.get_channels()`` (Visual Behavior Neuropixels).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    filter_by_validity
        Keep only channels with ``valid_data`` and drop that column, as AllenSDK does
        (without filtering, ``valid_data`` is a column).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``id`` (the channel id): CCF coordinates (µm), ``filtering``,
        ``probe_channel_number``, ``probe_horizontal_position``, ``probe_vertical_position``
        (µm), ``probe_id``, ``structure_acronym`` (the file's electrode location) and, for a
        Visual Coding session, ``ecephys_structure_acronym``: the structure acronym, missing
        (None) for ``root`` and unassigned channels, as the project's channels.csv has it.
        AllenSDK's ``ecephys_structure_id`` comes from that CSV, not from the NWB file, and is
        not served.
    """
    frame = _frame(ds, "channel_id", "channels.", "id")
    if filter_by_validity and "valid_data" in frame:  # AllenSDK drops the column then
        frame = frame[frame["valid_data"].to_numpy(bool)].drop(columns=["valid_data"])
    frame = frame.drop(columns=[c for c in _CHANNEL_DROP if c in frame])
    if "ecephys_structure_acronym" in frame:
        if session_class(ds) == "EcephysSession":
            acr = frame["structure_acronym"].to_numpy(object)
            missing = np.isin(acr, ["", "root", "None", "nan"])
            frame["ecephys_structure_acronym"] = np.where(missing, None, acr)
        else:
            frame = frame.drop(columns=["ecephys_structure_acronym"])
    return frame


def probes(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``session.probes`` (eager, small).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``id`` (the probe id): ``description`` (Visual Coding; ``name`` in Visual
        Behavior Neuropixels), ``location``, ``sampling_rate``, ``lfp_sampling_rate`` (Hz) and
        ``has_lfp_data``.
    """
    frame = _frame(ds, "probe", "probes.", "id")
    if session_class(ds) == "BehaviorEcephysSession":
        frame = frame.rename(columns={"description": "name"})
    if "has_lfp_data" in frame:
        frame["has_lfp_data"] = frame["has_lfp_data"].to_numpy(bool)
    return frame


def _or_inf(limit: float | None, sign: float = 1.0) -> float:
    """AllenSDK's ``limit or np.inf``: None and 0 mean no limit."""
    return float(limit) if limit else sign * np.inf


def _allensdk_filter(
    table: pd.DataFrame,
    chans: pd.DataFrame,
    *,
    filter_by_validity: bool,
    filter_out_of_brain_units: bool,
    amplitude_cutoff_maximum: float | None,
    presence_ratio_minimum: float | None,
    isi_violations_maximum: float | None,
) -> pd.DataFrame:
    """``Probes.get_units_table``'s filter: peak channel valid (and in the brain: a structure
    acronym), ``quality == "good"`` (column dropped), then the QC limits (NaN fails them)."""
    if filter_by_validity or filter_out_of_brain_units:
        if filter_out_of_brain_units:
            chans = chans[~np.isin(chans["structure_acronym"].to_numpy(object), ["", None])]
        table = table[table["peak_channel_id"].isin(chans.index)]
    if filter_by_validity and "quality" in table:
        table = table[table["quality"].to_numpy(object) == "good"].drop(columns=["quality"])
    for col, limit, keep in [
        ("amplitude_cutoff", _or_inf(amplitude_cutoff_maximum), np.less_equal),
        ("presence_ratio", _or_inf(presence_ratio_minimum, -1.0), np.greater_equal),
        ("isi_violations", _or_inf(isi_violations_maximum), np.less_equal),
    ]:
        if col in table:
            table = table[keep(table[col].to_numpy(float), limit)]
    return table


def get_units(
    ds: xr.Dataset,
    filter_by_validity: bool = False,
    filter_out_of_brain_units: bool = False,
    amplitude_cutoff_maximum: float | None = None,
    presence_ratio_minimum: float | None = None,
    isi_violations_maximum: float | None = None,
) -> pd.DataFrame:
    """AllenSDK's ``BehaviorEcephysSession.get_units(...)`` (eager, small), defaults included.

    The units table of the NWB file as stored (``PT_ratio``, ``l_ratio``, ...: no channel or
    probe columns), indexed by ``id``, filtered as ``Probes.get_units_table`` does: with
    ``filter_by_validity`` the peak channel must be valid and ``quality == "good"`` (the
    column is then dropped); with ``filter_out_of_brain_units`` the peak channel must have a
    structure acronym; then ``amplitude_cutoff <= amplitude_cutoff_maximum``,
    ``presence_ratio >= presence_ratio_minimum``, ``isi_violations <= isi_violations_maximum``
    (None or 0 means no limit, and, as in AllenSDK, a NaN metric fails even that).
    """
    own = _own_unit_columns(ds)
    meta = _load(ds, own)
    table = pd.DataFrame(
        {k: _text(v) if v.dtype.kind in "OTUS" else v for k, v in meta.items()},
        index=pd.Index(ds.indexes["unit_id"].to_numpy(), name="id"),
    )
    return _allensdk_filter(
        table,
        channels(ds, filter_by_validity=filter_by_validity),
        filter_by_validity=filter_by_validity,
        filter_out_of_brain_units=filter_out_of_brain_units,
        amplitude_cutoff_maximum=amplitude_cutoff_maximum,
        presence_ratio_minimum=presence_ratio_minimum,
        isi_violations_maximum=isi_violations_maximum,
    )


def units(
    ds: xr.Dataset,
    *,
    filter_by_validity: bool = True,
    filter_out_of_brain_units: bool = True,
    amplitude_cutoff_maximum: float = 0.1,
    presence_ratio_minimum: float = 0.95,
    isi_violations_maximum: float = 0.5,
) -> pd.DataFrame:
    """AllenSDK's ``EcephysSession.units``: units with the default quality filter (eager).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    filter_by_validity
        Keep units with ``quality == "good"`` whose peak channel has ``valid_data``.
    filter_out_of_brain_units
        Drop units whose peak channel has no structure acronym.
    amplitude_cutoff_maximum, presence_ratio_minimum, isi_violations_maximum
        QC thresholds (AllenSDK defaults; 0 or None disables one, as in AllenSDK).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``unit_id``: the units (:func:`get_units` with these filters) joined with
        their peak channel (:func:`channels`) and probe (:func:`probes`: ``probe_description``,
        ``location``, ``probe_sampling_rate``, ``probe_lfp_sampling_rate``,
        ``probe_has_lfp_data``), metrics renamed as AllenSDK does (``waveform_*``,
        ``L_ratio``), sorted by probe, then vertical and horizontal position.
    """
    table = get_units(
        ds,
        filter_by_validity=filter_by_validity,
        filter_out_of_brain_units=filter_out_of_brain_units,
        amplitude_cutoff_maximum=amplitude_cutoff_maximum,
        presence_ratio_minimum=presence_ratio_minimum,
        isi_violations_maximum=isi_violations_maximum,
    )
    chans = channels(ds)
    table = table.join(chans, on="peak_channel_id", how="inner", lsuffix="_unit",
                       rsuffix="_channel")  # fmt: skip
    probe = probes(ds).rename(columns={
        "description": "probe_description", "name": "probe_description",
        "sampling_rate": "probe_sampling_rate", "lfp_sampling_rate": "probe_lfp_sampling_rate",
        "has_lfp_data": "probe_has_lfp_data",
    })  # fmt: skip
    table = table.join(probe, on="probe_id", how="inner")
    table.index.name = "unit_id"
    table = table.rename(columns={k: v for k, v in _RENAMES.items() if v not in table})
    order = ["probe_description", "probe_vertical_position", "probe_horizontal_position"]
    return table.sort_values(order, kind="stable")


def units_in(
    ds: xr.Dataset,
    structure_acronym: str,
    *,
    filter_by_validity: bool = True,
    filter_out_of_brain_units: bool = True,
    amplitude_cutoff_maximum: float = 0.1,
    presence_ratio_minimum: float = 0.95,
    isi_violations_maximum: float = 0.5,
) -> pd.DataFrame:
    """Units (the QC filter of :func:`units`, same keywords) in one CCF structure.

    Raises
    ------
    KeyError
        If no unit of the session is in ``structure_acronym``; suggests close acronyms.
    """
    table = units(
        ds,
        filter_by_validity=filter_by_validity,
        filter_out_of_brain_units=filter_out_of_brain_units,
        amplitude_cutoff_maximum=amplitude_cutoff_maximum,
        presence_ratio_minimum=presence_ratio_minimum,
        isi_violations_maximum=isi_violations_maximum,
    )
    acronyms = _load(ds, ["structure_acronym"])["structure_acronym"]
    if structure_acronym not in set(acronyms.tolist()):
        raise _unknown("structure_acronym", [structure_acronym], sorted(set(acronyms) - {""}))
    return table[table["structure_acronym"].to_numpy(object) == structure_acronym]


def _invalid_names(ds: xr.Dataset) -> list[str]:
    """The invalid_times variables to load (none if the session has no tagged intervals)."""
    return list(_INVALID) if all(n in ds.variables for n in _INVALID) else []


def _masked(ds: xr.Dataset, meta: dict[str, np.ndarray], start: Any, stop: Any) -> np.ndarray:
    """Presentations AllenSDK renames ``invalid_presentation``, from already loaded ``meta``.

    True where the closed [start, stop] overlaps an invalid interval whose tags contain
    ``"stimulus"`` (AllenSDK ``_overlap``: ``max(a0, b0) <= min(a1, b1)``).
    """
    start, stop = np.asarray(start, np.float64), np.asarray(stop, np.float64)
    mask = np.zeros(start.shape, bool)
    names = _invalid_names(ds)
    if not names:
        return mask
    loaded = xr.Dataset({n: (ds[n].dims, meta[n]) for n in names})  # numpy: no second compute
    for a, b in _invalid_intervals(loaded, {"stimulus"}):
        mask |= (start <= b) & (a <= stop)
    return mask


#: AllenSDK's ``EcephysSession.DETAILED_STIMULUS_PARAMETERS``: in ``stimulus_conditions``, left
#: out of ``stimulus_presentations``.
DETAILED_STIMULUS_PARAMETERS = (
    "colorSpace", "flipHoriz", "flipVert", "depth", "interpolate", "mask", "opacity",
    "rgbPedestal", "tex", "texRes", "units", "rgb", "signalDots", "noiseDots", "fieldSize",
    "fieldShape", "fieldPos", "nDots", "dotSize", "dotLife", "color_triplet",
)  # fmt: skip
_COLOR_TRIPLET = re.compile(r"\[(-{0,1}\d*\.\d*,\s*)*(-{0,1}\d*\.\d*)\]")  # AllenSDK's
_NULL = "null"  # AllenSDK's "nonapplicable" value
_NOT_PARAMETER = ("start_time", "stop_time", "duration", "stimulus_block",
                  "stimulus_condition_id")  # fmt: skip


def _stored_presentations(ds: xr.Dataset, extra: Sequence[str] = ()) -> tuple[pd.DataFrame, dict]:
    """The stored ``stimulus_presentations.*`` columns (text as ``str``) and loaded ``extra``."""
    cols = [k for k, v in ds.data_vars.items()
            if k.startswith(_SP) and v.dims == ("stimulus_presentation_id",)]  # fmt: skip
    meta = _load(ds, cols + list(extra))
    index = pd.Index(ds.indexes["stimulus_presentation_id"].to_numpy(),
                     name="stimulus_presentation_id")  # fmt: skip
    frame = pd.DataFrame(
        {k.removeprefix(_SP): _text(meta[k]) if meta[k].dtype.kind in "OTUS" else meta[k]
         for k in cols},
        index=index,
    )  # fmt: skip
    return frame, meta


def _as_allensdk(frame: pd.DataFrame) -> pd.DataFrame:
    """A Visual Coding presentation table as ``EcephysSession`` builds it from the file.

    Float columns holding only 0/1 become booleans (``Presentations.from_nwb``); ``color``
    triplets move to ``color_triplet`` and other colors become numbers (the NWB API); every
    missing value of a parameter is ``"null"`` (so such a column holds objects); the
    ``stimulus_index`` column is dropped.
    """
    out = frame.drop(columns=["stimulus_index"], errors="ignore").copy()
    for col in out.columns:
        values = out[col]
        computed = ("duration", "stimulus_condition_id")  # by AllenSDK, after this coercion
        if col in computed or col.endswith("_index") or values.dtype.kind != "f":
            continue
        present = values.dropna()
        if present.size and set(present.unique().tolist()) <= {0.0, 1.0}:
            out[col] = pd.Series(
                [_NULL if pd.isna(v) else bool(v) for v in values], index=out.index, dtype=object
            )
    if "color" in out and _is_text_column(out["color"]):
        color = out["color"].to_numpy(object)
        triplet = np.array([bool(_COLOR_TRIPLET.match(c)) for c in color], bool)
        previous = out.get("color_triplet")
        out["color_triplet"] = np.where(
            triplet, color, _NULL if previous is None else previous.to_numpy(object)
        ).astype(object)
        out["color"] = pd.Series(
            [_NULL if (t or c == _NULL) else float(ast.literal_eval(c))
             for c, t in zip(color, triplet, strict=True)],
            index=out.index, dtype=object,
        )  # fmt: skip
    for col in out.columns:  # AllenSDK's fillna("null") on the whole table
        if out[col].dtype.kind != "f" or not out[col].isna().any():
            continue
        out[col] = pd.Series(
            [_NULL if pd.isna(v) else v for v in out[col].tolist()], index=out.index, dtype=object
        )
    for col in out.columns:  # text columns as object, as pandas 1 gives them to AllenSDK
        if _is_text_column(out[col]):
            out[col] = out[col].astype(object)
    return out


def _is_text_column(series: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(series.dtype) or (
        series.dtype == object and all(isinstance(v, str) for v in series.tolist())
    )


def stimulus_presentations(
    ds: xr.Dataset, *, include_detailed_parameters: bool = False
) -> pd.DataFrame:
    """AllenSDK's ``session.stimulus_presentations`` (eager, small).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    include_detailed_parameters
        Keep AllenSDK's :data:`DETAILED_STIMULUS_PARAMETERS` (``mask``, ``opacity``,
        ``units``, ``color_triplet``...), which ``stimulus_presentations`` leaves out.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``stimulus_presentation_id``. For a Visual Coding session, as
        ``EcephysSession`` builds it: ``color`` triplets in ``color_triplet``, ``"null"`` for
        a parameter a stimulus does not have (such a column holds objects), ``duration`` and
        ``stimulus_condition_id``, no ``stimulus_index``. Rows whose [start_time, stop_time]
        overlaps (closed) an ``invalid_times`` interval tagged ``"stimulus"`` have
        ``stimulus_name == "invalid_presentation"``, their start/stop kept and every other
        column NaN (integer columns then become float64, as in AllenSDK); intervals tagged
        only with a probe mask nothing.
    """
    if session_class(ds) == "BehaviorEcephysSession":  # the stored is_change, as AllenSDK's
        return behavior.stimulus_presentations(ds, add_is_change=False)
    frame, meta = _stored_presentations(ds, _invalid_names(ds))
    if session_class(ds) == "EcephysSession":
        frame = _as_allensdk(frame)
        if not include_detailed_parameters:
            frame = frame.drop(columns=[c for c in DETAILED_STIMULUS_PARAMETERS if c in frame])
    if "start_time" not in frame or "stop_time" not in frame:
        return frame
    masked = _masked(ds, meta, frame["start_time"], frame["stop_time"])
    if masked.any():
        for col in frame.columns.difference(["start_time", "stop_time"], sort=False):
            frame[col] = frame[col].where(~masked)  # upcasts int to float, bool to object
        frame.loc[masked, "stimulus_name"] = _INVALID_NAME
    return frame


def stimulus_conditions(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``session.stimulus_conditions``: one row per distinct parameter set (eager).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``stimulus_condition_id``: every parameter of the presentations as
        ``EcephysSession`` builds them (detailed ones included; not start/stop time, duration
        or stimulus_block), in order of first presentation.
    """
    frame, _ = _stored_presentations(ds)
    if session_class(ds) == "EcephysSession":
        frame = _as_allensdk(frame)
    cond = frame["stimulus_condition_id"].to_numpy()
    _, first = np.unique(cond, return_index=True)
    first = np.sort(first)
    params = [c for c in frame.columns if c not in _NOT_PARAMETER]
    out = frame.iloc[first][params]
    out.index = pd.Index(cond[first], name="stimulus_condition_id")
    for col in out.columns:  # as pandas infers them from the condition tuples
        values = out[col].tolist()
        if all(isinstance(v, bool) for v in values):
            out[col] = np.asarray(values, bool)
    return out


def get_stimulus_table(
    ds: xr.Dataset,
    stimulus_names: Sequence[str] | str | None = None,
    include_detailed_parameters: bool = False,
    include_unused_parameters: bool = False,
) -> pd.DataFrame:
    """AllenSDK's ``session.get_stimulus_table(stimulus_names, ...)`` (eager, small).

    The presentations of the named stimuli (all if None); without
    ``include_unused_parameters`` the columns that are all NaN, '' or "null" in those rows
    are dropped.
    """
    table = stimulus_presentations(ds, include_detailed_parameters=True)
    if stimulus_names is None:
        stimulus_names = table["stimulus_name"].unique().tolist()
    elif isinstance(stimulus_names, str):
        stimulus_names = [stimulus_names]
    table = table[table["stimulus_name"].isin(list(stimulus_names))]
    if not include_detailed_parameters:
        table = table.drop(columns=[c for c in DETAILED_STIMULUS_PARAMETERS if c in table])
    if not include_unused_parameters:
        unused = [
            c for c in table.columns
            if table[c].isna().all() or table[c].astype(str).isin(["", _NULL]).all()
        ]  # fmt: skip
        table = table.drop(columns=unused)
    return table


@dataclass(frozen=True)
class _Selection:
    unit_id: np.ndarray  # output order
    first: np.ndarray  # flat offset of each unit's first spike
    last: np.ndarray  # flat offset past each unit's last spike
    presentation_id: np.ndarray
    pres: dict[str, np.ndarray]


def _select(
    ds: xr.Dataset,
    unit_ids: Any,
    stimulus_presentation_ids: Any,
    columns: Sequence[str] = ("start_time", "stop_time"),
    drop_invalid: bool = False,
) -> _Selection:
    """Resolve ids and load offsets and presentation columns in one compute.

    With ``drop_invalid`` the presentations AllenSDK masks as ``invalid_presentation`` (NaN
    ``stimulus_condition_id``) are left out of the selection.
    """
    names = ["spike_times_index", *(_SP + c for c in columns)]
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise KeyError(
            f"this session has no {missing}"
            + (
                " (Visual Behavior Neuropixels presentations have no stimulus conditions: "
                "AllenSDK's BehaviorEcephysSession has no conditionwise statistics)"
                if session_class(ds) == "BehaviorEcephysSession"
                else ""
            )
        )
    if drop_invalid:
        names += [_SP + "start_time", _SP + "stop_time", *_invalid_names(ds)]
    meta = _load(ds, list(dict.fromkeys(names)))
    uindex = ds.indexes["unit_id"]
    if unit_ids is None:
        unit_ids = units(ds).index.to_numpy()
    upos = _positions(uindex, unit_ids, "unit_id") if np.size(unit_ids) else np.zeros(0, int)
    ends = meta["spike_times_index"].astype(np.int64)
    begins = np.r_[0, ends[:-1]]
    pindex = ds.indexes["stimulus_presentation_id"]
    if stimulus_presentation_ids is None:
        ppos = np.arange(pindex.size)
    else:
        ppos = _positions(pindex, stimulus_presentation_ids, "stimulus_presentation_id")
    if upos.size == 0:
        raise ValueError("no units selected: unit_ids is empty or the QC filter removed all")
    if ppos.size == 0:
        raise ValueError("no stimulus presentations selected")
    if drop_invalid:
        start, stop = meta[_SP + "start_time"][ppos], meta[_SP + "stop_time"][ppos]
        ppos = ppos[~_masked(ds, meta, start, stop)]
        if ppos.size == 0:
            raise ValueError(
                "no valid stimulus presentations selected: every one overlaps an invalid_times "
                "interval tagged 'stimulus' (AllenSDK's 'invalid_presentation')"
            )
    return _Selection(
        unit_id=uindex.to_numpy()[upos],
        first=begins[upos],
        last=ends[upos],
        presentation_id=pindex.to_numpy()[ppos],
        pres={c: meta[_SP + c][ppos] for c in columns},
    )


# --- block graphs over spike_times chunks --------------------------------------------------------


def _spikes(ds: xr.Dataset) -> da.Array:
    data = ds["spike_times"].data
    if isinstance(data, da.Array):
        return data
    chunk = ds["spike_times"].encoding.get("chunks", (_SPIKE_CHUNK,))[0]
    return da.from_array(np.asarray(data), chunks=max(1, int(chunk)))


def _blocks(sel: _Selection, bounds: np.ndarray, max_units: int) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive output units sharing a first spike chunk: (u0, u1, c0, c1)."""
    n_chunks = bounds.size - 1
    c_first = np.clip(np.searchsorted(bounds, sel.first, side="right") - 1, 0, n_chunks - 1)
    c_last = np.clip(np.searchsorted(bounds, np.maximum(sel.last - 1, sel.first), "right") - 1,
                     0, n_chunks - 1)  # fmt: skip
    out, u0 = [], 0
    for u in range(1, sel.unit_id.size + 1):
        if u == sel.unit_id.size or c_first[u] != c_first[u0] or u - u0 >= max_units:
            out.append((u0, u, int(c_first[u0]), int(c_last[u0:u].max())))
            u0 = u
    return out


def _run_block(kernel: Callable, first: int, ranges: np.ndarray, arg: Any, *chunks: np.ndarray):
    flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    units = [flat[a - first : b - first] for a, b in ranges]
    return kernel(units, arg)


def _block_graph(
    ds: xr.Dataset,
    sel: _Selection,
    kernel: Callable,
    arg: np.ndarray,
    name: str,
    unit_bytes: int,
    prefix: tuple[int, ...] = (),
    offsets: bool = False,
) -> tuple[HighLevelGraph, str, list[tuple], list[int]]:
    """One task per block of units, ``kernel(list of unit spike arrays, arg)``, keyed
    ``(name, *prefix, j)``; with ``offsets`` the kernel also gets ``u0=`` (the block's first
    output unit)."""
    spikes = _spikes(ds)
    bounds = np.r_[0, np.cumsum(spikes.chunks[0])]
    if bounds[-1] == 0:  # no spikes at all: a single empty chunk keeps the graph uniform
        spikes = da.zeros(1, chunks=1)
        bounds = np.array([0, 1])
    arg_da = da.from_array(arg, chunks=arg.shape) if isinstance(arg, np.ndarray) else None
    arg_key = (arg_da.name,) + (0,) * arg.ndim if arg_da is not None else arg
    token = dask.base.tokenize(spikes.name, sel.first, sel.last, arg_key, name)
    out = f"{name}-{token}"
    dsk, keys, sizes = {}, [], []
    max_units = max(1, _BLOCK_BYTES // max(unit_bytes, 1))
    for j, (u0, u1, c0, c1) in enumerate(_blocks(sel, bounds, max_units)):
        ranges = np.stack([sel.first[u0:u1], sel.last[u0:u1]], 1)
        block_kernel = partial(kernel, u0=u0) if offsets else kernel
        func = partial(_run_block, block_kernel, int(bounds[c0]), ranges)
        key = (out, *prefix, j)
        dsk[key] = (func, arg_key, *[(spikes.name, c) for c in range(c0, c1 + 1)])
        keys.append(key)
        sizes.append(u1 - u0)
    deps = [spikes] + ([arg_da] if arg_da is not None else [])
    return HighLevelGraph.from_collections(out, dsk, dependencies=deps), out, keys, sizes


def _groups(domain: np.ndarray) -> list[np.ndarray]:
    """Split presentations into k interleaved groups whose windows do not overlap.

    Within a group the flattened edges are non-decreasing, so each spike can be placed with one
    ``searchsorted`` into the edges (n_spikes lookups instead of n_presentations × n_edges).
    """
    order = np.argsort(domain[:, 0], kind="stable")
    first, last = domain[order, 0], domain[order, -1]
    n = order.size
    for k in range(1, min(n, 16)):
        if np.all(first[k:] >= last[:-k]):
            return [order[g::k] for g in range(k)]
    return [order[g::16] for g in range(16)] if n <= 16 else []


def _place(s: np.ndarray, q: np.ndarray, n_edges: int) -> np.ndarray:
    """Counts of the bins [q_i, q_i+1] (closed) of sorted edges ``q``, rows of ``n_edges``."""
    k = np.searchsorted(q, s, side="right") - 1
    ok = k >= 0
    k = k[ok]
    bins = np.bincount(k[k % n_edges != n_edges - 1], minlength=q.size)
    tied = np.flatnonzero(q[k] == s[ok])  # spikes on an edge also count in the bin it closes
    if tied.size:
        hi = k[tied] + 1
        lo = np.searchsorted(q, s[ok][tied], side="left")
        reps = hi - lo
        j = np.repeat(hi - reps.cumsum(), reps) + np.arange(reps.sum())
        j = j[j % n_edges != 0]
        bins += np.bincount(j - 1, minlength=q.size)
    return bins.reshape(-1, n_edges)[:, :-1]


def _edge_index(
    t: np.ndarray, flat: np.ndarray, base: np.ndarray, n_edges: int, guess: np.ndarray, side: str
) -> np.ndarray:
    """``np.searchsorted(row, t[m], side)`` for every m, the row's edges being
    ``flat[base[m] : base[m] + n_edges]`` (increasing), from a close ``guess``: made exact by
    comparing with the row's own edges."""
    k = np.clip(guess, 0, n_edges)

    def below(i: np.ndarray) -> np.ndarray:  # edge i of the row lies below t (or at, "right")
        e = flat.take(base + np.clip(i, 0, n_edges - 1))
        return (i >= 0) & (i < n_edges) & ((e <= t) if side == "right" else (e < t))

    for _ in range(4):
        up, down = below(k), ~below(k - 1) & (k > 0)
        if not (up.any() or down.any()):
            return k
        k = k + up - down
    bad = np.flatnonzero(below(k) | (~below(k - 1) & (k > 0)))
    for m in bad:  # far from the guess (an odd time_domain_callback): search exactly
        k[m] = np.searchsorted(flat[base[m] : base[m] + n_edges], t[m], side=side)
    return k


def _unit_bins(
    s: np.ndarray, domain: np.ndarray, template: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AllenSDK's counts of one unit's sorted spikes ``s`` as (flat bin, count) of the
    non-empty bins (flat bin = presentation × n_bins + bin), in increasing order.

    AllenSDK counts bin i of presentation p as ``#{t: domain[p, i] <= t <= domain[p, i+1]}``:
    a spike adds 1 to the bins ``max(L-1, 0) .. min(R, n_edges-1) - 1``, L and R its left and
    right ``searchsorted`` positions in the row. Only the spikes inside each presentation's
    window are visited (work ∝ the spikes, not the bins); the row positions are guessed from
    ``template`` (relative edges) and made exact against the row's own edges.
    """
    n_pres, n_edges = domain.shape
    a = np.searchsorted(s, domain[:, 0], side="left")
    n = np.searchsorted(s, domain[:, -1], side="right") - a
    n = np.maximum(n, 0)
    total = int(n.sum())
    if not total:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p = np.repeat(np.arange(n_pres), n)
    t = s[np.arange(total) - np.repeat(np.cumsum(n) - n - a, n)]
    flat, base = domain.ravel(), p * n_edges
    guess = np.searchsorted(template, t - flat.take(base), side="right")
    hi = np.minimum(_edge_index(t, flat, base, n_edges, guess, "right"), n_edges - 1)
    lo = _edge_index(t, flat, base, n_edges, guess - 1, "left")
    lo = np.maximum(lo - 1, 0)
    n_bins = n_edges - 1
    one = lo == hi - 1  # the usual case: one bin
    key = p[one] * n_bins + lo[one]
    if not one.all():  # spikes on edges: every bin they close or open
        many = np.flatnonzero(~one & (hi > lo))
        reps = hi[many] - lo[many]
        extra = np.repeat(p[many] * n_bins + lo[many] - np.cumsum(reps) + reps, reps)
        key = np.sort(np.concatenate([key, extra + np.arange(reps.sum())]))
    starts = np.flatnonzero(np.diff(key, prepend=-1))
    return key[starts], np.diff(np.r_[starts, key.size])


def _fill_counts(
    units: list[np.ndarray], domain: np.ndarray, binarize: bool, out: np.ndarray, u0: int = 0
) -> None:
    """AllenSDK's counts of ``units`` written into units ``u0, u0 + 1, ...`` of ``out``
    (presentation, bin, unit; C-contiguous, zeros): only the bins holding spikes are written
    (most 1 ms bins are empty; :func:`_unit_bins`)."""
    if not out.flags.c_contiguous:
        raise ValueError("_fill_counts writes through a flat view: out must be C-contiguous")
    n_units = out.shape[2]
    cells = out.reshape(-1)
    template = domain[0] - domain[0, 0]
    for j, s in enumerate(units):
        key, counts = _unit_bins(s, domain, template)
        cells[key * n_units + (u0 + j)] = 1 if binarize else counts


def _histogram(units: list[np.ndarray], domain: np.ndarray, binarize: bool, dtype: Any):
    """AllenSDK's counts: bin i holds spikes in [e_i, e_{i+1}] of each presentation."""
    n_pres, n_edges = domain.shape
    groups = _groups(domain)
    flat = [domain[g].ravel() for g in groups]
    queries = domain.ravel()
    out = np.empty((len(units), n_pres, n_edges - 1), dtype=dtype)
    for j, s in enumerate(units):
        if groups and s.size * len(groups) < queries.size:
            counts = np.empty((n_pres, n_edges - 1), np.int64)
            for g, q in zip(groups, flat):
                counts[g] = _place(s, q, n_edges)
        else:
            left = np.searchsorted(s, queries)
            counts = np.diff(left.reshape(n_pres, n_edges), axis=1)
            if s.size:
                tie = np.flatnonzero(s[np.minimum(left, s.size - 1)] == queries)
                tie = tie[(tie % n_edges) > 0]
                if tie.size:
                    extra = np.searchsorted(s, queries[tie], side="right") - left[tie]
                    np.add.at(counts, (tie // n_edges, tie % n_edges - 1), extra)
        out[j] = counts > 0 if binarize else counts
    return out.transpose(1, 2, 0)


def _counts_array(
    ds: xr.Dataset,
    sel: _Selection,
    edges: np.ndarray,
    binarize: bool,
    dtype: np.dtype,
    time_domain_callback: Callable[[np.ndarray], np.ndarray] | None = None,
) -> da.Array:
    domain = sel.pres["start_time"][:, None] + edges[None, :]
    if time_domain_callback is not None:
        domain = np.asarray(time_domain_callback(domain), dtype=np.float64)
        if domain.shape != (sel.presentation_id.size, edges.size):
            raise ValueError(
                f"time_domain_callback must return a {(sel.presentation_id.size, edges.size)} "
                f"array (presentations x bin edges); got shape {domain.shape}"
            )
        rows, cols = np.nonzero(np.diff(domain, axis=1) < 0)
        if rows.size:
            raise ValueError(
                "The time domain specified contains out-of-order bin edges at (row, column) "
                f"indices: {list(zip(rows.tolist()[:10], cols.tolist()[:10], strict=True))}"
            )
    kernel = partial(_counts_kernel, binarize=binarize, dtype=dtype)
    graph, name, _, sizes = _block_graph(
        ds, sel, kernel, domain, "spike-counts", domain.size * dtype.itemsize, prefix=(0, 0)
    )
    chunks = ((domain.shape[0],), (edges.size - 1,), tuple(sizes))
    out = _CountsArray(graph, name, chunks=chunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype))
    out.__dict__["_abo_counts"] = (out.name, ds, sel, domain, binarize)
    return out


def _edges(bin_edges: Any) -> np.ndarray:
    edges = np.asarray(bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) < 0):
        raise ValueError(
            f"bin_edges must be 1-D and increasing with at least 2 values; got {edges!r}"
        )
    return edges


def presentationwise_spike_counts(
    ds: xr.Dataset,
    bin_edges: Any,
    stimulus_presentation_ids: Any = None,
    unit_ids: Any = None,
    binarize: bool = False,
    dtype: Any = None,
    large_bin_size_threshold: float = 0.001,
    time_domain_callback: Callable[[np.ndarray], np.ndarray] | None = None,
) -> xr.DataArray:
    """Spike counts around each presentation onset, lazily (one dask task per block of units).

    AllenSDK's ``EcephysSession.presentationwise_spike_counts(bin_edges,
    stimulus_presentation_ids, unit_ids, binarize=False, dtype=None,
    large_bin_size_threshold=0.001, time_domain_callback=None)``, same positional order; the
    two selections may also be left out (None).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    bin_edges
        Increasing bin edges in s relative to each presentation's ``start_time``.
    stimulus_presentation_ids, unit_ids
        Selections; default (None) all presentations and the QC-filtered :func:`units`.
    binarize
        Count > 0 as 1 (uint8).
    dtype
        Output dtype; default uint16 (uint8 when binarized), as AllenSDK.
    large_bin_size_threshold
        With ``binarize``, warn when the widest bin is wider than this (s), as AllenSDK.
    time_domain_callback
        Applied to the (presentation, edge) array of absolute bin edges before counting, as
        AllenSDK; its rows must stay increasing.

    Returns
    -------
    xarray.DataArray
        ``spike_counts`` with dims (stimulus_presentation_id, time_relative_to_stimulus_onset
        [bin centres], unit_id); bins are closed on both sides, as AllenSDK counts them.
    """
    edges = _edges(bin_edges)
    if binarize and np.diff(edges).max() > large_bin_size_threshold:
        warnings.warn(
            f"binarized spike counts with bins up to {np.diff(edges).max():.5f} s wide lose "
            f"counts; binarize bins <= {large_bin_size_threshold} s (AllenSDK's warning)",
            stacklevel=2,
        )
    dtype = np.dtype((np.uint8 if binarize else np.uint16) if dtype is None else dtype)
    sel = _select(ds, unit_ids, stimulus_presentation_ids, ("start_time",))
    return xr.DataArray(
        _counts_array(ds, sel, edges, binarize, dtype, time_domain_callback),
        name="spike_counts",
        dims=("stimulus_presentation_id", "time_relative_to_stimulus_onset", "unit_id"),
        coords={
            "stimulus_presentation_id": sel.presentation_id,
            "time_relative_to_stimulus_onset": edges[:-1] + np.diff(edges) / 2,
            "unit_id": sel.unit_id,
        },
    )


def _counts_kernel(units: list[np.ndarray], domain: np.ndarray, *, binarize: bool, dtype: Any):
    out = np.zeros((domain.shape[0], domain.shape[1] - 1, len(units)), dtype=dtype)
    _fill_counts(units, domain, binarize, out)
    return out


def _fill_kernel(
    units: list[np.ndarray], domain: np.ndarray, *, binarize: bool, out: np.ndarray, u0: int
) -> None:
    _fill_counts(units, domain, binarize, out, u0)


def _psth_kernel(
    units: list[np.ndarray], domain: np.ndarray, *, condition: np.ndarray, n_conditions: int
) -> np.ndarray:
    """Spike counts summed over each condition's presentations, (condition, bin, unit), from
    the non-empty bins alone (:func:`_unit_bins`): no per-presentation array."""
    n_bins = domain.shape[1] - 1
    template = domain[0] - domain[0, 0]
    out = np.empty((n_conditions, n_bins, len(units)))
    for j, s in enumerate(units):
        key, counts = _unit_bins(s, domain, template)
        cell = condition[key // n_bins] * n_bins + key % n_bins
        total = np.bincount(cell, weights=counts, minlength=n_conditions * n_bins)
        out[:, :, j] = total.reshape(n_conditions, n_bins)
    return out


class _CountsArray(da.Array):
    """The dask array of :func:`presentationwise_spike_counts`, whose conversion to NumPy
    (``DataArray.values``, ``np.asarray``) fills one zeroed result block by block.

    ``dask.compute`` holds every block and then copies them into a new array (twice the
    result); here each block task writes its units straight into the result, so the peak is
    the result plus the spike chunks in flight. Everything else is the plain dask array.
    """

    __slots__ = ()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        info = self.__dict__.get("_abo_counts")
        if info is None or info[0] != self.name:  # derived by dask: the plain path
            return super().__array__(dtype=dtype, copy=copy)
        _, ds, sel, domain, binarize = info
        out = np.zeros(self.shape, dtype=self.dtype)
        kernel = partial(_fill_kernel, binarize=binarize, out=out)
        graph, _, keys, _ = _block_graph(
            ds, sel, kernel, domain, "spike-counts-fill", 0, offsets=True
        )
        get = dask.base.get_scheduler()
        if get is not dask.local.get_sync:  # the threads share ``out``
            get = dask.threaded.get
        get(graph, keys)
        return out if dtype is None else out.astype(dtype, copy=False)


def _interval_kernel(units: list[np.ndarray], intervals: np.ndarray, *, sides: tuple[str, str]):
    """(K, n_units) counts: searchsorted(hi, sides[1]) - searchsorted(lo, sides[0])."""
    out = np.empty((intervals.shape[0], len(units)), np.int64)
    for j, s in enumerate(units):
        out[:, j] = np.searchsorted(s, intervals[:, 1], sides[1]) - np.searchsorted(
            s, intervals[:, 0], sides[0]
        )
    return out


def _times_kernel(units: list[np.ndarray], intervals: np.ndarray):
    """Spikes in (start, stop] of each interval: (times, interval index, unit index in block)."""
    times, which, unit = [], [], []
    for j, s in enumerate(units):
        lo = np.searchsorted(s, intervals[:, 0], "right")
        hi = np.searchsorted(s, intervals[:, 1], "right")
        n = np.maximum(hi - lo, 0)
        total = int(n.sum())
        pos = np.arange(total) - np.repeat(np.cumsum(n) - n - lo, n)
        times.append(s[pos])
        which.append(np.repeat(np.arange(n.size), n))
        unit.append(np.full(total, j))
    return np.concatenate(times), np.concatenate(which), np.concatenate(unit)


def _compute_blocks(
    ds: xr.Dataset, sel: _Selection, jobs: list[tuple[Callable, np.ndarray, int]]
) -> tuple[list[list[Any]], np.ndarray]:
    """Run block kernels over the same units in one compute (spike chunks read once).

    Returns the per-job lists of block results and the first unit index of each block.
    """
    delayed, sizes = [], [0]
    for i, (kernel, arg, unit_bytes) in enumerate(jobs):
        graph, name, keys, sizes = _block_graph(ds, sel, kernel, arg, f"ecephys-job{i}", unit_bytes)
        delayed.append([Delayed(k, graph, layer=name) for k in keys])
    return [list(r) for r in compute(*delayed)], np.r_[0, np.cumsum(sizes)[:-1]]


def _interval_counts(
    ds: xr.Dataset, sel: _Selection, specs: list[tuple[np.ndarray, tuple[str, str]]]
) -> list[np.ndarray]:
    jobs = [(partial(_interval_kernel, sides=sides), iv, iv.shape[0] * 8) for iv, sides in specs]
    results, _ = _compute_blocks(ds, sel, jobs)
    return [np.concatenate(blocks, axis=1) for blocks in results]


def presentationwise_spike_times(
    ds: xr.Dataset, stimulus_presentation_ids: Any = None, unit_ids: Any = None
) -> pd.DataFrame:
    """Every spike inside (start, stop] of a presentation, as AllenSDK tabulates them (eager).

    AllenSDK's ``presentationwise_spike_times(stimulus_presentation_ids=None, unit_ids=None)``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``spike_time``, sorted, with columns ``stimulus_presentation_id``,
        ``unit_id`` and ``time_since_stimulus_presentation_onset``.
    """
    sel = _select(ds, unit_ids, stimulus_presentation_ids)
    intervals = np.stack([sel.pres["start_time"], sel.pres["stop_time"]], 1)
    (blocks,), u0 = _compute_blocks(ds, sel, [(_times_kernel, intervals, 0)])
    times = np.concatenate([b[0] for b in blocks])
    which = np.concatenate([b[1] for b in blocks])
    unit = np.concatenate([b[2] + u0[k] for k, b in enumerate(blocks)])
    order = np.argsort(times, kind="stable")
    times, which, unit = times[order], which[order], unit[order]
    return pd.DataFrame(
        {
            "stimulus_presentation_id": sel.presentation_id[which].astype(np.int64),
            "unit_id": sel.unit_id[unit].astype(np.int64),
            "time_since_stimulus_presentation_onset": times - sel.pres["start_time"][which],
        },
        index=pd.Index(times, name="spike_time"),
    )


def _condition_stats(values: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
    """Per (condition, unit) statistics of a (P, U) array, conditions sorted ascending."""
    order = np.argsort(cond, kind="stable")
    cond_sorted = cond[order]
    conds, starts, n = np.unique(cond_sorted, return_index=True, return_counts=True)
    x = values[order].astype(np.float64)
    total = np.add.reduceat(x, starts, axis=0)
    mean = total / n[:, None]
    dev = np.add.reduceat((x - np.repeat(mean, n, axis=0)) ** 2, starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(dev / (n[:, None] - 1))
    return {"condition": conds, "n": n, "sum": total, "mean": mean, "std": std}


def conditionwise_spike_statistics(
    ds: xr.Dataset,
    stimulus_presentation_ids: Any = None,
    unit_ids: Any = None,
    use_rates: bool = False,
) -> pd.DataFrame:
    """Spike statistics per (unit_id, stimulus_condition_id), as AllenSDK (eager, small).

    AllenSDK's ``conditionwise_spike_statistics(stimulus_presentation_ids=None, unit_ids=None,
    use_rates=False)``.

    Counts are of spikes in (start, stop] of each presentation. With ``use_rates`` the
    statistics are over count / duration and, as in AllenSDK, there is no ``spike_count``.
    Presentations masked as ``invalid_presentation`` (see :func:`stimulus_presentations`) have
    no condition id in AllenSDK, so they count in no condition, whether
    ``stimulus_presentation_ids`` is given or defaulted.

    Raises
    ------
    ValueError
        If no unit, or no valid presentation, is selected.

    Returns
    -------
    pandas.DataFrame
        Indexed by (unit_id, stimulus_condition_id), rows ordered by condition then unit:
        ``spike_count``, ``stimulus_presentation_count``, ``spike_mean``, ``spike_std``
        (ddof 1) and ``spike_sem``.
    """
    cols = ("start_time", "stop_time", "stimulus_condition_id")
    sel = _select(ds, unit_ids, stimulus_presentation_ids, cols, drop_invalid=True)
    intervals = np.stack([sel.pres["start_time"], sel.pres["stop_time"]], 1)
    (counts,) = _interval_counts(ds, sel, [(intervals, ("right", "right"))])
    values = counts / (intervals[:, 1] - intervals[:, 0])[:, None] if use_rates else counts
    st = _condition_stats(values, sel.pres["stimulus_condition_id"])
    n_c, n_u = st["mean"].shape
    out = {
        "unit_id": np.tile(sel.unit_id, n_c),
        "stimulus_condition_id": np.repeat(st["condition"], n_u),
    }
    if not use_rates:
        out["spike_count"] = st["sum"].ravel().astype(np.int64)
    out["stimulus_presentation_count"] = np.repeat(st["n"], n_u)
    out["spike_mean"] = st["mean"].ravel()
    out["spike_std"] = st["std"].ravel()
    out["spike_sem"] = (st["std"] / np.sqrt(st["n"])[:, None]).ravel()
    frame = pd.DataFrame(out)
    frame = frame.sort_values(["stimulus_condition_id", "unit_id"], kind="stable")
    return frame.set_index(["unit_id", "stimulus_condition_id"])


def psth(
    ds: xr.Dataset,
    *,
    bin_edges: Any,
    stimulus_presentation_ids: Any = None,
    unit_ids: Any = None,
) -> xr.DataArray:
    """Mean firing rate per bin and stimulus condition (lazy).

    Returns
    -------
    xarray.DataArray
        ``psth`` in spikes/s with dims (stimulus_condition_id, time_relative_to_stimulus_onset,
        unit_id): the mean over each condition's presentations of
        :func:`presentationwise_spike_counts` divided by the bin width. Presentations masked as
        ``invalid_presentation`` belong to no condition and are left out.
    """
    edges = _edges(bin_edges)
    cols = ("start_time", "stimulus_condition_id")
    sel = _select(ds, unit_ids, stimulus_presentation_ids, cols, drop_invalid=True)
    conds, inverse = np.unique(sel.pres["stimulus_condition_id"], return_inverse=True)
    domain = sel.pres["start_time"][:, None] + edges[None, :]
    kernel = partial(_psth_kernel, condition=inverse, n_conditions=conds.size)
    unit_bytes = conds.size * (edges.size - 1) * 8
    graph, name, _, sizes = _block_graph(ds, sel, kernel, domain, "psth", unit_bytes, (0, 0))
    sums = da.Array(
        graph,
        name,
        chunks=((conds.size,), (edges.size - 1,), tuple(sizes)),
        dtype=np.float64,
        meta=np.empty((0, 0, 0), np.float64),
    )
    n = np.bincount(inverse, minlength=conds.size).astype(np.float64)
    rate = sums / n[:, None, None] / np.diff(edges)[None, :, None]
    return xr.DataArray(
        rate,
        name="psth",
        dims=("stimulus_condition_id", "time_relative_to_stimulus_onset", "unit_id"),
        coords={
            "stimulus_condition_id": conds,
            "time_relative_to_stimulus_onset": edges[:-1] + np.diff(edges) / 2,
            "unit_id": sel.unit_id,
        },
        attrs={"units": "Hz"},
    )


#: The columns of :func:`drifting_gratings_metrics`: a subset of AllenSDK's ``DriftingGratings``.
DRIFTING_GRATINGS_COLUMNS = ("pref_ori_dg", "pref_tf_dg", "g_osi_dg", "g_dsi_dg",
                             "firing_rate_dg", "fano_dg")  # fmt: skip


def drifting_gratings_metrics(
    ds: xr.Dataset,
    *,
    unit_ids: Any = None,
    stimulus_name: str = "drifting_gratings",
    trial_duration: float = 2.0,
) -> pd.DataFrame:
    """Six of AllenSDK's ``DriftingGratings(session).metrics`` columns per unit (eager).

    The columns :data:`DRIFTING_GRATINGS_COLUMNS` of
    ``abo_lake.ecephys_metrics.stimulus_metrics(ds, "drifting_gratings", ...)`` (one
    implementation; same names and values): ``pref_ori_dg``/``pref_tf_dg`` maximise the
    condition mean count averaged over the other parameter; ``g_osi_dg``/``g_dsi_dg`` =
    |Σ r·e^{2iθ}|/Σ r and |Σ r·e^{iθ}|/Σ r over the condition means at the preferred TF;
    ``firing_rate_dg`` = spikes per second over the stimulus blocks; ``fano_dg`` = var/mean of
    counts in [0, ``trial_duration``] at the preferred condition. Use ``stimulus_metrics`` for
    all of AllenSDK's columns.

    Raises
    ------
    KeyError
        If ``stimulus_name`` is not presented in the session (suggests close names).
    ValueError
        If every presentation of it is an ``invalid_presentation`` (AllenSDK renames them).
    """
    from abo_lake import ecephys_metrics  # it builds on this module

    names = _load(ds, [_SP + "stimulus_name"])[_SP + "stimulus_name"]
    if stimulus_name not in set(names.tolist()):
        raise _unknown("stimulus_name", [stimulus_name], sorted(set(names.tolist())))
    try:
        return ecephys_metrics.analysis_metrics(
            ds, "drifting_gratings", unit_ids, stimulus_key=stimulus_name,
            trial_duration=trial_duration, columns=DRIFTING_GRATINGS_COLUMNS,
        )  # fmt: skip
    except KeyError:
        if not (stimulus_presentations(ds)["stimulus_name"] == stimulus_name).any():
            raise ValueError(
                f"no valid presentations of {stimulus_name!r}: every one overlaps an "
                "invalid_times interval tagged 'stimulus' (AllenSDK's 'invalid_presentation')"
            ) from None
        raise


def spike_times(ds: xr.Dataset, unit_id: int) -> xr.DataArray:
    """One unit's spike times (lazy): only the chunks holding that unit are read.

    Raises
    ------
    KeyError
        If ``unit_id`` is not in the session (suggests close ids).
    """
    (pos,) = _positions(ds.indexes["unit_id"], [unit_id], "unit_id")
    ends = ds["spike_times_index"].isel(unit_id=slice(max(pos - 1, 0), pos + 1))
    ends = _load(xr.Dataset({"e": ends.drop_vars("unit_id")}), ["e"])["e"]
    first, last = (0, int(ends[0])) if pos == 0 else (int(ends[0]), int(ends[1]))
    out = ds["spike_times"].isel(spike=slice(first, last)).rename("spike_times")
    return out.assign_attrs(unit_id=int(unit_id), units="s", first_spike=first)


def mean_waveforms(ds: xr.Dataset, unit_id: int) -> xr.DataArray:
    """One unit's mean waveform as AllenSDK's ``session.mean_waveforms[unit_id]`` (lazy).

    The stored ``waveform_mean`` is (unit_id, channel = on-probe channel number,
    waveform_sample); AllenSDK gives dims (``channel_id``, ``time``): the channel ids of the
    unit's probe by channel number (numbers the channel table lacks are dropped) and time =
    sample / the probe's sampling rate (s). Only that unit's chunk is read when computed.

    Raises
    ------
    KeyError
        If ``unit_id`` is not in the session (suggests close ids), or the session has no
        per-channel ``waveform_mean``.
    """
    if "waveform_mean" not in ds or ds["waveform_mean"].dims != (
        "unit_id", "channel", "waveform_sample"
    ):  # fmt: skip
        raise KeyError("this session has no per-channel waveform_mean (unit, channel, sample)")
    (pos,) = _positions(ds.indexes["unit_id"], [unit_id], "unit_id")
    names = ["probe_id", "probe_sampling_rate", "channels.probe_id",
             "channels.probe_channel_number"]  # fmt: skip
    valid = "channels.valid_data" in ds.variables
    meta = _load(ds, names + (["channels.valid_data"] if valid else []))
    probe, rate = meta["probe_id"][pos], float(meta["probe_sampling_rate"][pos])
    mine = meta["channels.probe_id"] == probe
    if valid:  # AllenSDK maps channel numbers through session.channels: valid channels only
        mine &= meta["channels.valid_data"].astype(bool)
    lookup = dict(
        zip(
            meta["channels.probe_channel_number"][mine].tolist(),
            ds.indexes["channel_id"].to_numpy()[mine].tolist(),
            strict=True,
        )
    )
    waveform = ds["waveform_mean"].isel(unit_id=pos)
    ids = np.array([lookup.get(i, -1) for i in range(waveform.sizes["channel"])], np.int64)
    keep = np.flatnonzero(ids != -1)
    out = waveform.isel(channel=keep).drop_vars("unit_id", errors="ignore")
    out = out.rename({"channel": "channel_id", "waveform_sample": "time"})
    time = np.arange(out.sizes["time"]) / rate
    out = out.assign_coords(channel_id=ids[keep], time=("time", time, {"units": "s"}))
    return out.rename("mean_waveform").assign_attrs(unit_id=int(unit_id))


def spike_amplitudes(ds: xr.Dataset, unit_id: int) -> xr.DataArray:
    """One unit's spike amplitudes (lazy, V), aligned with :func:`spike_times`.

    Raises
    ------
    KeyError
        If ``unit_id`` is not in the session, or the session has no ``spike_amplitudes``.
    """
    if "spike_amplitudes" not in ds:
        raise KeyError("this session has no spike_amplitudes")
    times = spike_times(ds, unit_id)
    first = int(times.attrs.get("first_spike", 0))
    out = ds["spike_amplitudes"].isel(spike=slice(first, first + times.sizes["spike"]))
    return out.rename("spike_amplitudes").assign_attrs(unit_id=int(unit_id), units="V")


def units_with_spikes(ds: xr.Dataset) -> np.ndarray:
    """The unit ids AllenSDK's ``spike_times``/``spike_amplitudes``/``mean_waveforms`` dicts
    hold: the default-filtered units of a Visual Coding session (``EcephysSession`` drops the
    others), every unit of a Visual Behavior Neuropixels one."""
    if session_class(ds) == "EcephysSession":
        return units(ds).index.to_numpy()
    return ds.indexes["unit_id"].to_numpy()


def raw_mean_waveforms(ds: xr.Dataset, unit_id: int) -> xr.DataArray:
    """One unit's stored mean waveform, (channel, waveform_sample) for every on-probe channel:
    ``BehaviorEcephysSession.mean_waveforms[unit_id]`` (lazy; AllenSDK gives the NumPy array).

    Raises
    ------
    KeyError
        If ``unit_id`` is not in the session (suggests close ids).
    """
    (pos,) = _positions(ds.indexes["unit_id"], [unit_id], "unit_id")
    out = ds["waveform_mean"].isel(unit_id=pos).drop_vars("unit_id", errors="ignore")
    return out.rename("mean_waveform").assign_attrs(unit_id=int(unit_id))


def _table_at(ds: xr.Dataset, dim: str, prefix: str, index_name: str | None) -> pd.DataFrame:
    if dim not in ds.dims:
        raise KeyError(f"this session has no {prefix.rstrip('.')} table (no {dim!r} dim)")
    return _frame(ds, dim, prefix, index_name)


def optogenetic_stimulation_epochs(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``session.optogenetic_stimulation_epochs`` (Visual Coding) and
    ``optotagging_table`` (Visual Behavior Neuropixels): indexed by ``id``, columns
    ``start_time``, ``stop_time``, ``duration`` (s), ``condition``, ``level``,
    ``stimulus_name``.
    """
    return _table_at(ds, "optogenetic_stimulation_id", "optogenetic_stimulation.", "id")


def invalid_times(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``session.invalid_times``: indexed by ``id``, ``start_time``, ``stop_time``
    (s) and ``tags`` (each row's list of tags, e.g. ``[type, id, label]``)."""
    if "invalid_time_id" not in ds.dims:
        return pd.DataFrame(
            {"start_time": np.zeros(0), "stop_time": np.zeros(0), "tags": np.zeros(0, object)},
            index=pd.Index(np.zeros(0, np.int64), name="id"),
        )
    frame = _frame(ds, "invalid_time_id", "invalid_times.", "id")
    meta = _load(ds, ["invalid_times.tags", "invalid_times.tags_index"])
    flat, ends = _text(meta["invalid_times.tags"]), meta["invalid_times.tags_index"]
    begins = np.r_[0, ends[:-1]]
    frame = frame.drop(columns=["tags_index"], errors="ignore")
    frame["tags"] = [list(flat[a:b]) for a, b in zip(begins, ends, strict=True)]
    return frame


def running_speed(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``EcephysSession.running_speed``: ``start_time``, ``end_time`` (s) and
    ``velocity`` (cm/s), one row per sample, on a plain range index."""
    if "running_speed_time" not in ds.dims:
        raise KeyError("this session has no running speed (no 'running_speed_time' dim)")
    frame = _frame(ds, "running_speed_time", "running_speed.", None)
    return frame[["start_time", "end_time", "velocity"]].reset_index(drop=True)


_FIT_NAMES = {"cr": "corneal_reflection", "pupil": "pupil", "eye": "eye"}


def pupil_data(ds: xr.Dataset) -> pd.DataFrame | None:
    """AllenSDK's ``EcephysSession.get_pupil_data()``, or None without eye tracking.

    Returns
    -------
    pandas.DataFrame or None
        Indexed by ``Time (s)`` (the gaze mapping's timestamps): ``<fit>_center_x/_y``,
        ``<fit>_height``, ``<fit>_width`` (the full axes: twice the stored half-axes, as
        AllenSDK) and ``<fit>_phi`` for ``corneal_reflection``, ``pupil`` and ``eye``.
    """
    if "eye_tracking_time" not in ds.dims:
        return None
    names = [f"ellipse_fits.{fit}_{c}" for fit in _FIT_NAMES
             for c in ("center_x", "center_y", "height", "width", "phi")]  # fmt: skip
    meta = _load(ds, names)
    cols = {}
    for name in names:
        fit, col = name.removeprefix("ellipse_fits.").split("_", 1)
        scale = 2.0 if col in ("height", "width") else 1.0
        cols[f"{_FIT_NAMES[fit]}_{col}"] = meta[name] * scale if scale != 1.0 else meta[name]
    index = pd.Index(ds.indexes["eye_tracking_time"].to_numpy(), name="Time (s)")
    return pd.DataFrame(cols, index=index)


def screen_gaze_data(ds: xr.Dataset, include_filtered_data: bool = False) -> pd.DataFrame | None:
    """AllenSDK's ``EcephysSession.get_screen_gaze_data(include_filtered_data)``, or None.

    Returns
    -------
    pandas.DataFrame or None
        Indexed by ``Time (s)``: ``raw_eye_area``, ``raw_pupil_area``,
        ``raw_screen_coordinates_x_cm``/``_y_cm`` and
        ``raw_screen_coordinates_spherical_x_deg``/``_y_deg`` (and the ``filtered_*`` ones).
    """
    if "eye_tracking_time" not in ds.dims:
        return None
    cols = {}
    for kind in ("raw", "filtered") if include_filtered_data else ("raw",):
        series = ("eye_area", "pupil_area", "screen_coordinates", "screen_coordinates_spherical")
        meta = _load(ds, [f"gaze_mapping.{kind}_{n}" for n in series])
        cols[f"{kind}_eye_area"] = meta[f"gaze_mapping.{kind}_eye_area"]
        cols[f"{kind}_pupil_area"] = meta[f"gaze_mapping.{kind}_pupil_area"]
        for name, unit in (("screen_coordinates", "cm"), ("screen_coordinates_spherical", "deg")):
            yx = meta[f"gaze_mapping.{kind}_{name}"]  # stored [y, x]
            cols[f"{kind}_{name}_x_{unit}"] = yx[:, 1]
            cols[f"{kind}_{name}_y_{unit}"] = yx[:, 0]
    index = pd.Index(ds.indexes["eye_tracking_time"].to_numpy(), name="Time (s)")
    return pd.DataFrame(cols, index=index)


def rig_geometry_data(ds: xr.Dataset) -> pd.DataFrame | None:
    """AllenSDK's ``EcephysSession.rig_geometry_data``, or None without rig metadata.

    Returns
    -------
    pandas.DataFrame or None
        Index ``x``, ``y``, ``z``; columns ``<name>_<unit>`` (``monitor_position_mm``,
        ``camera_position_mm``, ``led_position_mm``, ``monitor_rotation_deg``,
        ``camera_rotation_deg``), in AllenSDK's order.
    """
    if "xyz" not in ds.dims:
        return None
    cols = {}
    for name in ("monitor_position", "camera_position", "led_position", "monitor_rotation",
                 "camera_rotation"):  # fmt: skip
        var = ds.get(f"eye_tracking_rig.{name}")
        if var is not None:
            cols[f"{name}_{var.attrs.get('units', '')}"] = np.asarray(var.values, np.float64)
    return pd.DataFrame(cols, index=pd.Index(["x", "y", "z"]))


def rig_equipment_name(ds: xr.Dataset) -> str | None:
    """AllenSDK's ``EcephysSession.rig_equipment_name`` (the eye-tracking rig's equipment)."""
    return ds.attrs.get("eye_tracking_rig_equipment")


def _datetime(text: str | None) -> datetime.datetime | None:
    return None if text is None else datetime.datetime.fromisoformat(str(text))


def metadata(ds: xr.Dataset) -> dict[str, Any]:
    """AllenSDK's ``session.metadata`` dict.

    For a Visual Coding session: specimen, session type, genotype, sex, age, rig, the counts
    of (default-filtered) units, valid channels, probes and presentations, the session start
    time (a timezone-aware datetime), the session id, the channels' structure acronyms (None
    for none) and the stimulus names, in order of first appearance. For a Visual Behavior
    Neuropixels session: :func:`abo_lake.behavior.metadata` (``BehaviorSession``'s fields: a
    datetime ``date_of_acquisition``, a UUID ``behavior_session_uuid``) and
    ``ecephys_session_id``.
    """
    attrs = ds.attrs
    if session_class(ds) == "BehaviorEcephysSession":
        return {**behavior.metadata(ds), "ecephys_session_id": int(attrs["ecephys_session_id"])}
    chans = channels(ds)
    names = _load(ds, [_SP + "stimulus_name"])[_SP + "stimulus_name"]
    age = attrs.get("age_in_days")
    return {
        "specimen_name": attrs.get("specimen_name"),
        "session_type": attrs.get("session_type"),
        "full_genotype": attrs.get("genotype"),
        "sex": attrs.get("sex"),
        "age_in_days": None if age is None else float(age),
        "rig_equipment_name": rig_equipment_name(ds),
        "num_units": int(units(ds).shape[0]),
        "num_channels": int(chans.shape[0]),
        "num_probes": int(ds.sizes.get("probe", 0)),
        "num_stimulus_presentations": int(ds.sizes["stimulus_presentation_id"]),
        "session_start_time": _datetime(attrs.get("session_start_time")),
        "ecephys_session_id": int(attrs["ecephys_session_id"]),
        "structure_acronyms": list(pd.unique(chans["ecephys_structure_acronym"].to_numpy(object))),
        "stimulus_names": list(dict.fromkeys(str(n) for n in names.tolist())),
    }


class UnitMapping(Mapping):
    """AllenSDK's per-unit dicts (``session.spike_times``, ``spike_amplitudes``,
    ``mean_waveforms``) over a lake session, read one unit at a time.

    ``mapping[unit_id]`` is what AllenSDK's dict holds (a NumPy array; for a Visual Coding
    session's mean waveforms an ``xarray.DataArray`` with dims ``channel_id``, ``time``), read
    when asked for; the keys are :func:`units_with_spikes`. ``mapping(unit_id)`` gives the lazy
    DataArray of any unit of the session instead (the accessor's earlier method form).
    """

    def __init__(self, ds: xr.Dataset, lazy: Callable[[xr.Dataset, int], xr.DataArray],
                 eager: Callable[[xr.DataArray], Any],
                 keys: Callable[[], np.ndarray] | None = None) -> None:  # fmt: skip
        self._ds, self._lazy, self._eager = ds, lazy, eager
        self._key_source = keys or (lambda: units_with_spikes(ds))
        self._keys: np.ndarray | None = None
        self._key_set: frozenset[int] = frozenset()

    def _ids(self) -> np.ndarray:
        if self._keys is None:
            self._keys = np.asarray(self._key_source())
            self._key_set = frozenset(self._keys.tolist())
        return self._keys

    def __getitem__(self, unit_id: int) -> Any:
        self._ids()
        if unit_id not in self._key_set:
            raise KeyError(unit_id)
        return self._eager(self._lazy(self._ds, int(unit_id)))

    def __iter__(self) -> Iterator[int]:
        return iter(int(u) for u in self._ids())

    def __len__(self) -> int:
        return int(self._ids().size)

    def __call__(self, unit_id: int) -> xr.DataArray:
        return self._lazy(self._ds, unit_id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self)} units ({self._lazy.__name__})>"


def _values(x: xr.DataArray) -> np.ndarray:
    return np.asarray(x.values)


def spike_times_by_unit(
    ds: xr.Dataset, keys: Callable[[], np.ndarray] | None = None
) -> UnitMapping:
    """AllenSDK's ``session.spike_times`` dict (unit id -> NumPy array, read on access)."""
    return UnitMapping(ds, spike_times, _values, keys)


def spike_amplitudes_by_unit(
    ds: xr.Dataset, keys: Callable[[], np.ndarray] | None = None
) -> UnitMapping:
    """AllenSDK's ``session.spike_amplitudes`` dict (unit id -> NumPy array, read on access)."""
    return UnitMapping(ds, spike_amplitudes, _values, keys)


def mean_waveforms_by_unit(
    ds: xr.Dataset, keys: Callable[[], np.ndarray] | None = None
) -> UnitMapping:
    """AllenSDK's ``session.mean_waveforms`` dict: (channel_id, time) DataArrays of the valid
    channels for Visual Coding, (channel, sample) NumPy arrays for Visual Behavior Neuropixels."""
    if session_class(ds) == "EcephysSession":
        return UnitMapping(ds, mean_waveforms, lambda x: x.load(), keys)
    return UnitMapping(ds, raw_mean_waveforms, _values, keys)


def _probe_dataset(ds: xr.Dataset, probe_id: int, what: str, release: Any) -> xr.Dataset:
    """The probe's ``ecephys/probe/<id>/<what>`` Dataset from ``release`` (anything with
    ``open(path)``, e.g. the :class:`~abo_lake.release.Release` the session came from)."""
    _positions(ds.indexes["probe"], [probe_id], "probe id")
    path = f"ecephys/probe/{int(probe_id)}/{what}"
    if release is None or not hasattr(release, "open"):
        raise TypeError(
            f"the probe's {what.upper()} is its own dataset ({path!r}): pass release=<the "
            f"Release this session was opened from>, or open {path!r} and use its .ecephys"
        )
    return release.open(path)


def get_lfp(
    ds: xr.Dataset, probe_id: int, mask_invalid_intervals: bool = True, *, release: Any = None
) -> xr.DataArray:
    """AllenSDK's ``session.get_lfp(probe_id, mask_invalid_intervals)`` (lazy).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    probe_id
        The probe.
    mask_invalid_intervals
        Visual Coding: samples inside (closed) ``invalid_times`` intervals tagged
        ``all_probes`` or the probe's name become NaN, as ``EcephysSession.get_lfp``.
        ``BehaviorEcephysSession.get_lfp`` masks nothing.
    release
        Where the probe's ``ecephys/probe/<id>/lfp`` dataset is (``release.open(path)``).

    Returns
    -------
    xarray.DataArray
        ``LFP`` (V), dims (time, channel).
    """
    out = lfp(_probe_dataset(ds, probe_id, "lfp", release))
    if not mask_invalid_intervals or session_class(ds) != "EcephysSession":
        return out
    name = str(probes(ds).loc[int(probe_id), "description"])
    bad = _invalid_intervals(invalid_times(ds), {"all_probes", name})
    t = out.indexes["time"].to_numpy()
    mask = np.zeros(t.size, bool)
    for a, b in bad:
        mask |= (t >= a) & (t <= b)
    return out.where(xr.DataArray(~mask, dims="time", coords={"time": t})) if mask.any() else out


def get_current_source_density(
    ds: xr.Dataset, probe_id: int, *, release: Any = None
) -> xr.DataArray:
    """AllenSDK's ``session.get_current_source_density(probe_id)`` (lazy): the probe's
    ``ecephys/probe/<id>/csd`` from ``release`` (see :func:`get_lfp`)."""
    return csd(_probe_dataset(ds, probe_id, "csd", release))


#: AllenSDK's ``NON_STIMULUS_PARAMETERS``.
NON_STIMULUS_PARAMETERS = ("start_time", "stop_time", "duration", "stimulus_block",
                           "stimulus_condition_id")  # fmt: skip


def _is_distinct(left: Any, right: Any) -> bool:
    """AllenSDK's ``is_distinct_from``: NaN equals NaN, values of other types differ."""
    if type(left) is not type(right):
        return True
    if pd.isna(left) and pd.isna(right):
        return False
    return bool(left != right)


def stimulus_epochs(
    ds: xr.Dataset, duration_thresholds: dict[str, float] | None = None
) -> pd.DataFrame:
    """AllenSDK's ``session.get_stimulus_epochs(duration_thresholds)``: runs of presentations
    with the same ``stimulus_block`` (eager, small).

    Parameters
    ----------
    ds
        An ``ecephys_session`` Dataset.
    duration_thresholds
        Stimulus name -> minimum duration (s); shorter epochs of that stimulus are dropped.
        AllenSDK's default is ``{"spontaneous_activity": 90.0}``.

    Returns
    -------
    pandas.DataFrame
        ``start_time``, ``stop_time``, ``duration`` (s), ``stimulus_name``,
        ``stimulus_block`` per epoch.
    """
    if duration_thresholds is None:
        duration_thresholds = {"spontaneous_activity": 90.0}
    table = stimulus_presentations(ds)
    blocks = table["stimulus_block"].tolist()
    bounds = [0] + [i for i in range(1, len(blocks)) if _is_distinct(blocks[i], blocks[i - 1])]
    bounds = sorted({*bounds, len(blocks)})
    rows = [
        {
            "start_time": table["start_time"].iloc[a],
            "stop_time": table["stop_time"].iloc[b - 1],
            "stimulus_name": table["stimulus_name"].iloc[a],
            "stimulus_block": table["stimulus_block"].iloc[a],
        }
        for a, b in itertools.pairwise(bounds)
    ]
    epochs = pd.DataFrame(rows)
    epochs["duration"] = epochs["stop_time"] - epochs["start_time"]
    for name, threshold in duration_thresholds.items():
        epochs = epochs[(epochs["stimulus_name"] != name) | (epochs["duration"] >= threshold)]
    return epochs.loc[:, ["start_time", "stop_time", "duration", "stimulus_name",
                          "stimulus_block"]]  # fmt: skip


def stimulus_parameter_values(
    ds: xr.Dataset, stimulus_presentation_ids: Any = None, drop_nulls: bool = True
) -> dict[str, np.ndarray]:
    """AllenSDK's ``session.get_stimulus_parameter_values(stimulus_presentation_ids,
    drop_nulls)``: each stimulus parameter's distinct values (in order of appearance) over
    the presentations (all if None), ``"null"`` left out unless ``drop_nulls`` is False
    (then last); parameters unused by those presentations are left out."""
    table = stimulus_presentations(ds)
    if stimulus_presentation_ids is not None:
        table = table.loc[np.atleast_1d(stimulus_presentation_ids)]
    table = table.drop(columns=[*NON_STIMULUS_PARAMETERS, "stimulus_name"], errors="ignore")
    unused = [c for c in table.columns
              if table[c].isna().all() or table[c].astype(str).isin(["", _NULL]).all()]  # fmt: skip
    out = {}
    for col in table.drop(columns=unused).columns:
        uniques = pd.unique(table[col].to_numpy(object))
        is_null = np.array([isinstance(u, str) and u == _NULL for u in uniques], bool)
        values = np.array(uniques[~is_null])
        if not drop_nulls and is_null.any():
            values = np.concatenate([values, [_NULL]])
        out[col] = values
    return out


def parameter_values_for_stimulus(
    ds: xr.Dataset, stimulus_name: str, drop_nulls: bool = True
) -> dict[str, np.ndarray]:
    """AllenSDK's ``session.get_parameter_values_for_stimulus(stimulus_name, drop_nulls)``:
    :func:`stimulus_parameter_values` over one stimulus's presentations."""
    ids = get_stimulus_table(ds, [stimulus_name]).index.to_numpy()
    return stimulus_parameter_values(ds, ids, drop_nulls)


def structurewise_unit_counts(ds: xr.Dataset) -> pd.Series:
    """AllenSDK's ``session.structurewise_unit_counts``: units (default filter) per
    ``ecephys_structure_acronym``, most first."""
    return units(ds)["ecephys_structure_acronym"].value_counts()


def inter_presentation_intervals(ds: xr.Dataset) -> pd.DataFrame:
    """AllenSDK's ``session.inter_presentation_intervals``: the time from each presentation's
    stop to the next one's start (s), indexed by (``from_presentation_id``,
    ``to_presentation_id``)."""
    table = stimulus_presentations(ds)
    ids = table.index.to_numpy()
    return pd.DataFrame({
        "from_presentation_id": ids[:-1],
        "to_presentation_id": ids[1:],
        "interval": table["start_time"].to_numpy()[1:] - table["stop_time"].to_numpy()[:-1],
    }).set_index(["from_presentation_id", "to_presentation_id"])  # fmt: skip


def inter_presentation_intervals_for_stimulus(
    ds: xr.Dataset, stimulus_names: Sequence[str] | str
) -> pd.DataFrame:
    """AllenSDK's ``session.get_inter_presentation_intervals_for_stimulus(stimulus_names)``:
    the :func:`inter_presentation_intervals` whose both presentations show one of them."""
    table = stimulus_presentations(ds)
    names = [stimulus_names] if isinstance(stimulus_names, str) else list(stimulus_names)
    keep = set(table.index[table["stimulus_name"].isin(names)].tolist())
    out = inter_presentation_intervals(ds)
    index = out.index
    return out[index.get_level_values(0).isin(keep) & index.get_level_values(1).isin(keep)]
