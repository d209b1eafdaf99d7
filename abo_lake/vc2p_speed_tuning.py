"""AllenSDK's Visual Coding 2P speed tuning (``StimulusAnalysis.get_speed_tuning``) on a lake.

The same definitions as AllenSDK 2.16.2 (``allensdk.brain_observatory.stimulus_analysis``),
written again per chunk of cells:

- the frames of the ``spontaneous`` presentations (the last one, then the one before it if
  there are two or more) are "sp", every other frame "vis" (vis frames without running speed
  left out); the dF/F traces are cut to the running-speed length;
- frames are sorted by running speed (NumPy's default ``argsort``); bin 0 holds the frames
  below AllenSDK's first upward crossing of 1 cm/s, then ``binsize`` frames per bin, as many
  full bins as frames at >= 1 cm/s allow; ``binned_dx_*`` is (mean, std / sqrt(n)) of the
  speeds per bin and ``binned_cells_*`` the same of each cell's dF/F (float32 statistics);
- ``peak_run``: per cell ``speed_max_*``/``speed_min_*`` (mean speed of the bin with the
  largest/smallest mean dF/F), ``ptest_*`` (two-sample Kolmogorov-Smirnov p of the frames at
  sorted positions ``k * binsize .. (k + 1) * binsize`` of that bin ``k`` against the others:
  AllenSDK's positions, which ignore bin 0's length) and ``mod_*`` (the variance across bins
  of the mean dF/F above the 99.9th percentile of 200 shuffles of the frames).

The shuffles draw ``permutation`` 200 times for sp then 200 times for vis, as AllenSDK does from
NumPy's global generator; with ``seed`` they come from ``np.random.RandomState(seed)``, so
``mod_*`` equals AllenSDK's after ``np.random.seed(seed)``. Only the running speed and the
dF/F traces of the cells asked for are read; each chunk of cells is one dask task.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dask
import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr

from abo_lake import ophys
from abo_lake.errors import SchemaError
from abo_lake.scheduling import compute

__all__ = ["PEAK_RUN_COLUMNS", "SpeedTuning", "SpeedTuningMixin", "speed_tuning"]

CELL, TIME = ophys.CELL, ophys.TIME
SPEED_BIN, STAT = "speed_bin", "stat"
N_SHUFFLES = 200
#: AllenSDK's ``peak_run`` columns, in its order.
PEAK_RUN_COLUMNS = ("speed_max_sp", "speed_min_sp", "ptest_sp", "mod_sp",
                    "speed_max_vis", "speed_min_vis", "ptest_vis", "mod_vis")  # fmt: skip


@dataclass(frozen=True)
class SpeedTuning:
    """AllenSDK's ``get_speed_tuning(binsize)`` 5-tuple, with named dims.

    ``binned_dx_*``: (speed_bin, stat) running speed; ``binned_cells_*``: (cell_specimen_id,
    speed_bin, stat) dF/F; stat is ``mean`` and ``sem``. ``.values`` are AllenSDK's arrays.
    ``peak_run`` is indexed by ``cell_specimen_id`` (AllenSDK's by row number).
    """

    binned_dx_sp: xr.DataArray
    binned_cells_sp: xr.DataArray
    binned_dx_vis: xr.DataArray
    binned_cells_vis: xr.DataArray
    peak_run: pd.DataFrame

    def __iter__(self):
        """Unpack as AllenSDK's tuple."""
        return iter((self.binned_dx_sp, self.binned_cells_sp, self.binned_dx_vis,
                     self.binned_cells_vis, self.peak_run))  # fmt: skip


def _findlevel(inwave: np.ndarray, threshold: float) -> int | None:
    """AllenSDK's ``findlevel(inwave, threshold, 'up')``: the first upward sign change."""
    crossings = np.nonzero(np.ediff1d(np.sign(inwave - threshold), to_begin=0) > 0)[0]
    return int(crossings[0]) if crossings.size else None


def _bins(dx_sorted: np.ndarray, binsize: int) -> tuple[int, int]:
    """(number of bins, length of bin 0) as AllenSDK counts them."""
    if np.all(np.isnan(dx_sorted)):
        raise ValueError("running speed is NaN at every frame of this epoch")
    nbins = 1 + len(np.where(dx_sorted >= 1)[0]) // binsize
    offset = _findlevel(dx_sorted, 1)
    return nbins, len(dx_sorted) if offset is None else offset


def _slices(nbins: int, offset: int, binsize: int) -> list[slice]:
    return [slice(0, offset)] + [
        slice(offset + (i - 1) * binsize, offset + i * binsize) for i in range(1, nbins)
    ]


def _binned_dx(dx: np.ndarray, binsize: int) -> np.ndarray:
    """(nbins, 2) mean and std / sqrt(n) of the sorted speeds per bin."""
    dx_sorted = dx[np.argsort(dx)]
    nbins, offset = _bins(dx_sorted, binsize)
    out = np.zeros((nbins, 2))
    for i, s in enumerate(_slices(nbins, offset, binsize)):
        n = offset if i == 0 else binsize
        out[i, 0] = np.mean(dx_sorted[s])
        out[i, 1] = np.std(dx_sorted[s]) / np.sqrt(n)
    return out


def _epoch(
    traces: np.ndarray,
    dx: np.ndarray,
    binsize: int,
    perms: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch (sp or vis) of some cells: binned (cells, nbins, 2), the sorted traces and
    AllenSDK's shuffle variance threshold per cell."""
    order = np.argsort(dx)
    dx_sorted = dx[order]
    nbins, offset = _bins(dx_sorted, binsize)
    slices = _slices(nbins, offset, binsize)
    ordered = traces[:, order]
    binned = np.zeros((traces.shape[0], nbins, 2))
    for i, s in enumerate(slices):
        n = offset if i == 0 else binsize
        binned[:, i, 0] = np.mean(ordered[:, s], axis=1)
        binned[:, i, 1] = np.std(ordered[:, s], axis=1) / np.sqrt(n)
    shuffled = np.empty((traces.shape[0], nbins, 2, len(perms)))
    for k, perm in enumerate(perms):
        trial = traces[:, perm][:, order]
        for i, s in enumerate(slices):
            shuffled[:, i, 0, k] = np.mean(trial[:, s], axis=1)
    threshold = np.percentile(shuffled[:, :, 0, :].std(axis=1) ** 2, 99.9, axis=1)
    return binned, ordered, threshold


def _ks_p(a: np.ndarray, b: np.ndarray) -> float:
    """AllenSDK's ``nonraising_ks_2samp`` p value (NaN when a sample is empty)."""
    if min(len(a), len(b)) == 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy.stats.ks_2samp(a, b).pvalue)


def _peak_columns(
    binned: np.ndarray, dx_binned: np.ndarray, ordered: np.ndarray, threshold: np.ndarray,
    binsize: int,
) -> dict[str, list]:  # fmt: skip
    """speed_max, speed_min, ptest and mod of one epoch, per cell (AllenSDK's loop)."""
    variance = binned[:, :, 0].std(axis=1) ** 2
    out: dict[str, list] = {"speed_max": [], "speed_min": [], "ptest": [], "mod": []}
    for nc in range(binned.shape[0]):
        mod: Any = np.nan  # NaN variance: AllenSDK leaves the cell's value unset
        if variance[nc] > threshold[nc]:
            mod = True
        if variance[nc] <= threshold[nc]:
            mod = False
        temp = binned[nc, :, 0]
        k_max, k_min = int(temp.argmax()), int(temp.argmin())
        speed_max, speed_min = dx_binned[k_max, 0], dx_binned[k_min, 0]
        k = k_max if speed_max > speed_min else k_min
        row = ordered[nc, :]
        stop = min(row.size, (k + 1) * binsize)
        test = row[k * binsize : (k + 1) * binsize]
        other = np.delete(row, range(k * binsize, stop))
        out["speed_max"].append(speed_max)
        out["speed_min"].append(speed_min)
        out["ptest"].append(_ks_p(test, other))
        out["mod"].append(mod)
    return out


def _cell_block(
    traces: np.ndarray,
    dx: np.ndarray,
    sp: np.ndarray,
    binsize: int,
    seed: int,
) -> dict[str, Any]:
    """Every speed-tuning quantity of one chunk of cells (traces: (cells, frames))."""
    n = min(dx.size, traces.shape[1])  # AllenSDK trims the traces to the speed's length
    # C order: AllenSDK's per-bin means reduce along contiguous rows (pairwise sums)
    traces, dx = np.ascontiguousarray(np.asarray(traces)[:, :n]), np.asarray(dx)[:n]
    dx_sp, traces_sp = dx[sp], traces[:, sp]
    vis = np.ones(n, bool)
    vis[sp] = False
    dx_vis, traces_vis = dx[vis], traces[:, vis]
    keep = ~np.isnan(dx_vis)
    traces_vis, dx_vis = traces_vis[:, keep], dx_vis[keep]
    rng = np.random.RandomState(seed)
    perms_sp = [rng.permutation(dx_sp.size) for _ in range(N_SHUFFLES)]
    perms_vis = [rng.permutation(dx_vis.size) for _ in range(N_SHUFFLES)]
    out: dict[str, Any] = {}
    for name, x, d, perms in (("sp", traces_sp, dx_sp, perms_sp),
                              ("vis", traces_vis, dx_vis, perms_vis)):  # fmt: skip
        binned, ordered, threshold = _epoch(x, d, binsize, perms)
        dx_binned = _binned_dx(d, binsize)
        out[f"binned_cells_{name}"] = binned
        for column, values in _peak_columns(binned, dx_binned, ordered, threshold,
                                            binsize).items():  # fmt: skip
            out[f"{column}_{name}"] = values
    return out


def _spontaneous_frames(ds: xr.Dataset) -> np.ndarray:
    """Frame indices of AllenSDK's sp epoch: the last spontaneous block, then the one before."""
    table = ophys.stimulus_presentations(ds)
    names = table["stimulus_name"] if "stimulus_name" in table else pd.Series([], dtype=object)
    spont = table[names == "spontaneous"]
    if spont.empty:
        raise ValueError(
            f"speed tuning needs a spontaneous epoch; this experiment's "
            f"(session_type {ds.attrs.get('session_type') or 'unknown'!r}) stimuli are "
            f"{sorted(set(names))!r}"
        )
    start = spont["start_frame"].to_numpy(np.int64)
    end = spont["end_frame"].to_numpy(np.int64)
    parts = [np.arange(start[-1], end[-1])]
    if len(spont) > 1:
        parts.append(np.arange(start[-2], end[-2]))
    return np.concatenate(parts)


def speed_tuning(
    ds: xr.Dataset,
    cells: Sequence[int] | None = None,
    *,
    binsize: int = 800,
    seed: int | None = None,
) -> SpeedTuning:
    """AllenSDK's ``StimulusAnalysis.get_speed_tuning(binsize)`` (eager).

    Parameters
    ----------
    ds
        A Visual Coding 2P ``ophys_experiment`` Dataset with ``dff`` and running speed.
    cells
        ``cell_specimen_id`` values (default every cell); only their traces are read.
    binsize
        Frames per running-speed bin above 1 cm/s (AllenSDK's default 800).
    seed
        Seed of the 400 shuffles behind ``mod_sp``/``mod_vis`` (module doc); None: unseeded.

    Returns
    -------
    SpeedTuning
        ``binned_dx_sp``, ``binned_cells_sp``, ``binned_dx_vis``, ``binned_cells_vis``,
        ``peak_run`` (unpacks as AllenSDK's tuple).

    Raises
    ------
    SchemaError
        If the Dataset has no ``dff`` or no running speed.
    ValueError
        If there is no spontaneous epoch, ``binsize`` < 1, or the speed is all NaN in an epoch.
    """
    if binsize < 1:
        raise ValueError(f"binsize must be a positive number of frames; got {binsize}")
    if "dff" not in ds.data_vars:
        raise SchemaError("speed tuning needs 'dff' (cell_specimen_id, time), as AllenSDK's")
    if cells is not None:
        ids = np.atleast_1d(np.asarray(cells, dtype=np.int64))
        missing = ids[~np.isin(ids, ds.indexes[CELL])]
        if missing.size:
            raise KeyError(f"cell_specimen_id {missing.tolist()} not in this experiment")
        ds = ds.sel({CELL: ids})
    sp = _spontaneous_frames(ds)
    speed = ophys.running_speed(ds).data  # SchemaError without running speed
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])  # one stream for every task
    traces = ophys._trace(ds, "dff").data.rechunk({1: -1})
    parts = [dask.delayed(_cell_block)(blk, speed, sp, binsize, seed)
             for blk in traces.to_delayed().ravel()]  # fmt: skip
    *done, dx = compute(*parts, speed)
    dx = np.asarray(dx)[: min(np.asarray(dx).size, ds.sizes[TIME])]
    vis = np.ones(dx.size, bool)
    vis[sp] = False
    dx_vis = dx[vis]
    dx_sp, dx_vis = dx[sp], dx_vis[~np.isnan(dx_vis)]
    ids = ds.indexes[CELL]
    stat = ["mean", "sem"]
    result: dict[str, Any] = {}
    for name, d in (("sp", dx_sp), ("vis", dx_vis)):
        dx_binned = _binned_dx(d, binsize)
        bins = np.arange(dx_binned.shape[0])
        result[f"binned_dx_{name}"] = xr.DataArray(
            dx_binned, dims=(SPEED_BIN, STAT), coords={SPEED_BIN: bins, STAT: stat},
            name=f"binned_dx_{name}", attrs={"units": "cm/s", "binsize": binsize},
        )  # fmt: skip
        result[f"binned_cells_{name}"] = xr.DataArray(
            np.concatenate([p[f"binned_cells_{name}"] for p in done], axis=0),
            dims=(CELL, SPEED_BIN, STAT), coords={CELL: ids, SPEED_BIN: bins, STAT: stat},
            name=f"binned_cells_{name}", attrs={"units": "dF/F", "binsize": binsize},
        )  # fmt: skip
    peak_run = pd.DataFrame(
        {c: np.array([v for p in done for v in p[c]], dtype=object) for c in PEAK_RUN_COLUMNS},
        index=pd.Index(np.asarray(ids), name=CELL),
    )
    return SpeedTuning(peak_run=peak_run, **result)


class SpeedTuningMixin:
    """AllenSDK's speed tuning as every ``StimulusAnalysis`` has it: :meth:`get_speed_tuning`
    and the ``binned_*``/``peak_run`` properties (binsize 800) of the analysis' cells.

    For classes holding their (cell-selected) experiment as ``self._ds``:
    ``vc2p_metrics.StimulusAnalysis`` and ``vc2p_receptive_fields.LocallySparseNoise``.
    """

    _ds: xr.Dataset

    def get_speed_tuning(self, binsize: int = 800, seed: int | None = None) -> SpeedTuning:
        """AllenSDK's ``get_speed_tuning(binsize)`` of this analysis' cells (unpacks as its
        5-tuple); see :func:`speed_tuning` (``seed``: shuffles)."""
        return speed_tuning(self._ds, binsize=binsize, seed=seed)

    @cached_property
    def _speed_tuning(self) -> SpeedTuning:
        return self.get_speed_tuning(800)  # AllenSDK's properties use binsize 800

    @property
    def binned_dx_sp(self) -> xr.DataArray:
        """AllenSDK's ``binned_dx_sp`` (binsize 800): running speed per bin, spontaneous."""
        return self._speed_tuning.binned_dx_sp

    @property
    def binned_cells_sp(self) -> xr.DataArray:
        """AllenSDK's ``binned_cells_sp`` (binsize 800): dF/F per cell and bin, spontaneous."""
        return self._speed_tuning.binned_cells_sp

    @property
    def binned_dx_vis(self) -> xr.DataArray:
        """AllenSDK's ``binned_dx_vis`` (binsize 800): running speed per bin, other frames."""
        return self._speed_tuning.binned_dx_vis

    @property
    def binned_cells_vis(self) -> xr.DataArray:
        """AllenSDK's ``binned_cells_vis`` (binsize 800): dF/F per cell and bin, other frames."""
        return self._speed_tuning.binned_cells_vis

    @property
    def peak_run(self) -> pd.DataFrame:
        """AllenSDK's ``peak_run`` (binsize 800), indexed by ``cell_specimen_id``."""
        return self._speed_tuning.peak_run.copy()
