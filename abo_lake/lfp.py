"""LFP and current source density of Neuropixels probes (Visual Coding and Visual Behavior), lazily.

Pure functions over the ``ecephys_lfp`` and ``ecephys_csd`` Datasets of
:mod:`abo_lake.sources.vcn_ecephys` with AllenSDK's semantics (``ALLEN_DATA.md`` §1):
:func:`lfp` windows the probe's LFP in time, keeps channels by id or CCF structure and masks
the session's invalid intervals (tags ``all_probes``, the probe name or id) with NaN;
:func:`csd` gives the flash-evoked ``CSD``. Only small metadata (channel structures, the
invalid_times table) is read; the samples stay dask-backed. The small-metadata readers here
are shared with :mod:`abo_lake.ecephys`, which re-exports both functions.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from dask.base import is_dask_collection

from abo_lake.scheduling import compute

__all__ = ["csd", "lfp"]


# --- metadata ------------------------------------------------------------------------------------


def _load(ds: xr.Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Small variables as NumPy, with at most one dask compute for all of them."""
    lazy = {n: ds[n].data for n in names if is_dask_collection(ds[n].data)}
    done = compute(lazy)[0] if lazy else {}
    return {n: np.asarray(done[n]) if n in done else np.asarray(ds[n].values) for n in names}


def _unknown(what: str, bad: Sequence[Any], valid: Sequence[Any]) -> KeyError:
    text = [str(v) for v in valid]
    close = difflib.get_close_matches(str(bad[0]), text, n=5) if text else []
    hint = f"; did you mean {close}?" if close else f"; valid values include {text[:10]}"
    return KeyError(f"unknown {what} {list(bad)[:10]}{hint}")


def _positions(index: pd.Index, ids: Any, what: str) -> np.ndarray:
    ids = np.atleast_1d(np.asarray(ids))
    pos = index.get_indexer(ids)
    if np.any(pos < 0):
        raise _unknown(what, ids[pos < 0].tolist(), index.tolist())
    return pos


# --- LFP and CSD ---------------------------------------------------------------------------------


def _invalid_intervals(invalid_times: Any, tags: set[str]) -> np.ndarray:
    """(K, 2) start/stop of invalid intervals whose tags name one of ``tags``."""
    if isinstance(invalid_times, pd.DataFrame):
        rows = [(r.start_time, r.stop_time) for r in invalid_times.itertuples()
                if tags & {str(t) for t in r.tags}]  # fmt: skip
        return np.asarray(rows, np.float64).reshape(-1, 2)
    if "invalid_times.start_time" not in invalid_times:
        return np.empty((0, 2))
    meta = _load(invalid_times, ["invalid_times.start_time", "invalid_times.stop_time",
                                 "invalid_times.tags", "invalid_times.tags_index"])  # fmt: skip
    flat, ends = meta["invalid_times.tags"], meta["invalid_times.tags_index"]
    begins = np.r_[0, ends[:-1]]
    hit = np.array([bool(tags & set(flat[a:b].tolist())) for a, b in zip(begins, ends)], bool)
    return np.stack([meta["invalid_times.start_time"], meta["invalid_times.stop_time"]], 1)[hit]


def lfp(
    ds: xr.Dataset,
    *,
    time: slice | tuple[float, float] | None = None,
    channels: Any = None,
    structure: str | None = None,
    invalid_times: xr.Dataset | pd.DataFrame | None = None,
) -> xr.DataArray:
    """The probe's LFP (lazy), optionally windowed, sub-selected and masked.

    Parameters
    ----------
    ds
        An ``ecephys_lfp`` Dataset.
    time
        ``slice(t0, t1)`` or ``(t0, t1)`` in s (inclusive).
    channels
        Channel ids to keep.
    structure
        Keep the channels in this structure acronym.
    invalid_times
        The session Dataset (or AllenSDK's invalid_times DataFrame): samples inside invalid
        intervals tagged ``all_probes``, the probe name or the probe id become NaN.

    Returns
    -------
    xarray.DataArray
        ``LFP`` (V) with dims (time, channel).
    """
    out = ds["lfp"].rename("LFP")
    t = ds.indexes["time"]
    if time is not None:
        t0, t1 = (time.start, time.stop) if isinstance(time, slice) else time
        lo, hi = float(t[0]), float(t[-1])
        if (
            (t0 is not None and t0 > hi)
            or (t1 is not None and t1 < lo)
            or (t0 is not None and t1 is not None and t1 < t0)
        ):
            raise ValueError(f"time window ({t0}, {t1}) s is outside the recording [{lo}, {hi}] s")
        out = out.sel(time=slice(t0, t1))
    if channels is not None:
        out = out.isel(channel=_positions(ds.indexes["channel"], channels, "channel id"))
    if structure is not None:
        acr = _load(out.to_dataset(), ["structure_acronym"])["structure_acronym"]
        if structure not in set(acr.tolist()):
            raise _unknown("structure_acronym", [structure], sorted(set(acr.tolist()) - {""}))
        out = out.isel(channel=np.flatnonzero(acr == structure))
    if invalid_times is not None:
        probe_id = ds.attrs.get("probe_id")
        tags = {"all_probes", str(probe_id)}
        if isinstance(invalid_times, xr.Dataset) and "probes.description" in invalid_times:
            names = dict(zip(invalid_times["probe"].values.tolist(),
                             invalid_times["probes.description"].values.tolist()))  # fmt: skip
            tags.add(str(names.get(probe_id, "")))
        bad = _invalid_intervals(invalid_times, tags - {""})
        tv = out.indexes["time"].to_numpy()
        mask = np.zeros(tv.size, bool)
        for a, b in bad:
            mask |= (tv >= a) & (tv <= b)
        if mask.any():
            out = out.where(xr.DataArray(~mask, dims="time", coords={"time": tv}))
    return out


def csd(ds: xr.Dataset) -> xr.DataArray:
    """The probe's flash-evoked current source density (lazy), as AllenSDK's ``CSD``.

    Returns
    -------
    xarray.DataArray
        ``CSD`` with dims (virtual_channel_index, time [s from flash onset]) and coords
        ``vertical_position`` and ``horizontal_position`` (µm).
    """
    return ds["csd"].rename("CSD")
