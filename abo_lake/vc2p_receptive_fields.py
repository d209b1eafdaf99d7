"""AllenSDK's locally sparse noise receptive fields (Visual Coding 2P) on a lake experiment.

The same definitions as AllenSDK 2.16.2's ``LocallySparseNoise`` and
``brain_observatory.receptive_field_analysis``, written again and vectorised:

- **events** (``eventdetection.detect_events``): each cell's dF/F is smoothed with a 5-point
  Hanning window (reflected ends); per sweep ``xx`` (rise over 3 frames) and ``yy`` (largest
  rise over 3 frames, 2-4 frames later) are taken from the 10 smoothed frames after its start;
  a sweep is an event when it lies 4 Mahalanobis units outside the robust noise blob, rises by
  more than 0.05, later than early and ends above half the noise threshold;
- **pixel p-values**: the event-triggered average of the blurred ON (``> 127``) and OFF
  (``< 127``) template against 10000 shuffles of the events (their number jittered by 10 %),
  drawn from ``np.random.seed(1)`` exactly as AllenSDK draws them (the same shuffles; a
  p-value differs only where a shuffle ties the events' value within rounding), Holm-Sidak
  corrected at alpha 0.05 over ON and OFF pixels; significant pixels
  grouped into 8-connected subfields (in AllenSDK's order);
- **Gaussian fits** of each subfield on the template upsampled to ~1 degree pixels (moments,
  then Nelder-Mead, as ``fitgaussian2D``): area ``pi (3/2)^2 w_x w_y``, centres, ON/OFF
  distance and overlap;
- **chi-square test** (``chisquarerf``): events per pixel smoothed, a chi-square statistic in
  a 7x7 exclusion disc around each pixel, Sidak corrected; ``rf_chi2_lsn`` is its minimum.

The blurs (AllenSDK's ``convolve`` and ``smooth_STA``: bilinear upsampling, a Gaussian filter,
block sums) are linear and separable, so they run here as small matrix products for all
frames at once. Only the dF/F of the cells asked for is read, and of it only the frames the
sweeps cover; the per-cell work runs as one dask task per cell chunk.

What AllenSDK's ``LocallySparseNoise`` inherits from its base ``StimulusAnalysis`` comes from
:mod:`abo_lake.vc2p_metrics` with LSN's windows (``sweeplength`` L the second sweep's length,
``interlength`` 4 L, ``extralength`` L): ``sweep_response``, ``mean_sweep_response``, ``pval``
and the running speed ``dx`` (a coordinate, also of ``mean_response``); and from
:mod:`abo_lake.vc2p_speed_tuning` ``get_speed_tuning``, ``binned_*`` and ``peak_run``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage, optimize, sparse, stats

from abo_lake import ophys, vc2p_speed_tuning
from abo_lake.scheduling import compute

__all__ = [
    "LSN_STIMULI",
    "PEAK_COLUMNS",
    "LocallySparseNoise",
    "locally_sparse_noise",
]

CELL, TIME, PRESENTATION = ophys.CELL, ophys.TIME, ophys.PRESENTATION
#: stimulus name -> (rows, columns) of its template, as AllenSDK's stimulus_info.
LSN_STIMULI = {
    "locally_sparse_noise": (16, 28),
    "locally_sparse_noise_4deg": (16, 28),
    "locally_sparse_noise_8deg": (8, 14),
}
#: AllenSDK's ``LocallySparseNoise.peak`` columns (``cell_specimen_id`` is the index here).
PEAK_COLUMNS = [
    "rf_center_on_x_lsn",
    "rf_center_on_y_lsn",
    "rf_center_off_x_lsn",
    "rf_center_off_y_lsn",
    "rf_area_on_lsn",
    "rf_area_off_lsn",
    "rf_distance_lsn",
    "rf_overlap_index_lsn",
    "rf_chi2_lsn",
]
LSN_ON, LSN_OFF, LSN_GREY = 255, 0, 127
ALPHA = 0.05
NUMBER_OF_SHUFFLES = 10000
_SHUFFLE_SEED = 1
_SHUFFLE_JITTER = 0.1  # response_detection_error_std_dev
_SHUFFLE_BLOCK = 2500


def template_variable(stimulus: str) -> str:
    """Name of the lake variable holding a stimulus's template (frames, rows, columns)."""
    return f"stimulus_template.{stimulus}"


def template_dims(stimulus: str) -> tuple[str, str, str]:
    """Dims of :func:`template_variable`: ``<stimulus>_frame``, ``_row``, ``_col``."""
    return (f"{stimulus}_frame", f"{stimulus}_row", f"{stimulus}_col")


# --------------------------------------------------------------------------- linear blurs


def _interp_matrix(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(points, grid) weights of linear interpolation, clamped at the ends (FITPACK's
    degree-1 spline as ``interp2d`` evaluates it)."""
    eye = np.eye(len(grid))
    return np.stack([np.interp(points, grid, eye[j]) for j in range(len(grid))], axis=1)


def _gauss_matrix(n: int, sigma: float, mode: str) -> np.ndarray:
    return ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode=mode)


def _convolve_axis_with(n: int, upsample: int, offset: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.arange(3 * n, dtype=np.float64)
    points = offset + np.arange(0, 3 * n, 1.0 / upsample)
    w = _interp_matrix(grid, points)[:, n : 2 * n]  # only the middle third is non-zero
    g = _gauss_matrix(len(points), 4.0, "constant") @ w
    blocks = g.reshape(3 * n, upsample, n).sum(axis=1)
    return blocks[n : 2 * n], blocks.sum(axis=0)


@dataclass(frozen=True)
class _Blur:
    rows: np.ndarray
    cols: np.ndarray
    row_sums: np.ndarray
    col_sums: np.ndarray

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """AllenSDK's ``convolve`` of each (rows, cols) image of a stack, normalised to the
        image's sum (an all-zero image stays zero)."""
        full = self.rows @ img @ self.cols.T
        total = (self.row_sums @ img) @ self.col_sums
        s = img.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = full / total[:, None, None] * s[:, None, None]
        return np.where(s[:, None, None] == 0, img, out)


def _blur(shape: tuple[int, int]) -> _Blur:
    ny, nx = shape
    if ny == 16:
        up, off = 4, -(1 - 0.625)
    elif ny == 8:
        up, off = 8, -(1 - 0.5625)
    else:
        raise ValueError(f"AllenSDK blurs 16- or 8-row templates only, not {ny} rows")
    r, rs = _convolve_axis_with(ny, up, off)
    c, cs = _convolve_axis_with(nx, up, off)
    return _Blur(r, c, rs, cs)


def _smooth_sta_axis(n: int, deg_per_pnt: int) -> np.ndarray:
    """One axis of AllenSDK's ``smooth_STA`` (upsample to degrees, Gaussian 0.75, sample)."""
    coor = np.arange(-(n - 1) * deg_per_pnt / 2, (n + 1) * deg_per_pnt / 2, deg_per_pnt)
    fine = np.arange(-(n - 1) * deg_per_pnt / 2, deg_per_pnt / 2 + (n / 2 - 1) * deg_per_pnt + 1, 1)
    w = _interp_matrix(coor, fine)
    g = _gauss_matrix(len(fine), 0.75, "reflect") @ w
    return g[np.arange(0, len(fine), deg_per_pnt)]


def _upsample_axis(n: int, upsample: float) -> np.ndarray:
    """One axis of AllenSDK's ``upsample_image_to_degrees``."""
    return _interp_matrix(np.arange(n, dtype=np.float64), np.arange(0, n, 1.0 / upsample))


# --------------------------------------------------------------------------- statistics


def _holm_sidak(p: np.ndarray) -> np.ndarray:
    """Holm-Sidak step-down corrected p-values (statsmodels' ``multipletests`` default)."""
    order = np.argsort(p)
    ps = p[order]
    with np.errstate(divide="ignore"):  # p = 1 gives log1p(-1) = -inf, corrected 1
        raw = -np.expm1(np.arange(len(p), 0, -1) * np.log1p(-ps))
    corrected = np.minimum(np.maximum.accumulate(raw), 1)
    out = np.empty_like(corrected)
    out[order] = corrected
    return out


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected subfields of a pixel mask, in AllenSDK's order (by their last pixel in
    row-major order), as (n, rows, cols) 0/1 float; (1, rows, cols) zeros for none."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((1, *mask.shape)), 0
    flat = labels.ravel()
    last = ndimage.maximum(np.arange(flat.size), flat, index=np.arange(1, n + 1))
    order = np.argsort(last) + 1
    return np.stack([(labels == k).astype(float) for k in order]), n


def _smooth_dff(segments: np.ndarray) -> np.ndarray:
    """AllenSDK's ``smooth(dff, 5)`` at each sweep's 10 frames: segments (..., 14) of the
    reflected trace, convolved segment by segment (same products and sums as the whole)."""
    w = np.hanning(5)
    w = w / w.sum()
    shape = segments.shape[:-1]
    flat = segments.reshape(-1, segments.shape[-1]).astype(np.float64)
    out = np.empty((flat.shape[0], 10))
    for i, seg in enumerate(flat):
        out[i] = np.convolve(w, seg, mode="valid")
    return out.reshape(*shape, 10)


def _events(trace: np.ndarray) -> np.ndarray:
    """AllenSDK's ``detect_events`` of one cell from its (sweeps, 10) smoothed frames."""
    t0 = trace[:, :1]
    rel = trace - t0
    xx = rel[:, 3] - rel[:, 0]
    yy = np.maximum.reduce([rel[:, 3 + d] - rel[:, d] for d in (2, 3, 4)])
    tf = trace[:, -1]
    mu_x, mu_y = np.median(xx), np.median(yy)
    xc, yc = xx - mu_x, yy - mu_y
    q = [100 * (1 - 2 * (1 - stats.norm.cdf(1)))]
    std_x = 1.0 / 1 * np.percentile(np.abs(xc), q)
    std_y = 1.0 / 1 * np.percentile(np.abs(yc), q)
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.sqrt((xc / std_x) ** 2 + (yc / std_y) ** 2) < 4
    cov = np.cov(xc[inside], yc[inside])
    try:
        inv = np.linalg.inv(np.linalg.cholesky(cov))
    except np.linalg.LinAlgError:  # AllenSDK fails here (a flat trace): no events
        return np.zeros(len(xx), dtype=bool)
    noise = max(4 * std_x + mu_x, 4 * std_y + mu_y)
    dx, dy = xx - mu_x, yy - mu_y
    xz = inv[0, 0] * dx + inv[0, 1] * dy
    yz = inv[1, 0] * dx + inv[1, 1] * dy
    return (np.sqrt(xz**2 + yz**2) > 4) & (yy > 0.05) & (xx < yy) & (tf > noise / 2)


@functools.lru_cache(maxsize=2)  # a realistic cell's sets are ~100 MB
def _shuffles(n_events: int, n_sweeps: int) -> sparse.csr_matrix:
    """AllenSDK's shuffled event sets for ``n_events`` events as a (shuffles, sweeps) 0/1
    sparse matrix: ``np.random.seed(1)``, then per shuffle a jittered size from ``randn`` and
    ``choice(range(n), size, replace=False)`` (its ``permutation(n)[:size]``). The seed is
    reset for every cell, so cells with as many events share the sets."""
    rs = np.random.RandomState(_SHUFFLE_SEED)
    picks = []
    for _ in range(NUMBER_OF_SHUFFLES):
        size = n_events + round(_SHUFFLE_JITTER * n_events * rs.randn())  # half-even, as np.round
        if size > n_sweeps or size < 0:
            raise ValueError(
                f"a shuffle of {n_events} events draws {size} of {n_sweeps} sweeps; "
                "AllenSDK's shuffle fails on this cell too"
            )
        picks.append(rs.permutation(n_sweeps)[:size].copy())  # not a view of all n_sweeps
    indptr = np.r_[0, np.cumsum([len(p) for p in picks])]
    indices = np.concatenate(picks) if indptr[-1] else np.zeros(0, dtype=np.int64)
    return sparse.csr_matrix(
        (np.ones(len(indices)), indices, indptr), shape=(NUMBER_OF_SHUFFLES, n_sweeps)
    )


def _pixel_pvalues(a_blur: np.ndarray, events: np.ndarray) -> np.ndarray:
    """AllenSDK's ``events_to_pvalues_no_fdr_correction``: (2 * pixels,) p-values, the share
    of shuffles whose triggered average is not below the events'."""
    n_events = int(events.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rts = a_blur @ events.astype(float) / n_events
    sets = _shuffles(n_events, a_blur.shape[1])
    sizes = np.diff(sets.indptr).astype(float)
    a_t = np.ascontiguousarray(a_blur.T)
    below = np.zeros(a_blur.shape[0], dtype=np.int64)
    for start in range(0, NUMBER_OF_SHUFFLES, _SHUFFLE_BLOCK):
        stop = min(start + _SHUFFLE_BLOCK, NUMBER_OF_SHUFFLES)
        with np.errstate(invalid="ignore", divide="ignore"):
            shuffled = (sets[start:stop] @ a_t) / sizes[start:stop, None]
        below += (shuffled < rts[None, :]).sum(axis=0)
    return 1 - below * 1.0 / NUMBER_OF_SHUFFLES


def _gaussian(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """AllenSDK's ``gaussian2D(height, cy, cx, wy, wx, rotation)`` on the pixel grid."""
    height, cx, cy, wx, wy, rotation = (float(v) for v in p)
    rot = np.deg2rad(rotation)
    cxp = cx * np.cos(rot) - cy * np.sin(rot)
    cyp = cx * np.sin(rot) + cy * np.cos(rot)
    x, y = np.indices(shape)
    xp = x * np.cos(rot) - y * np.sin(rot)
    yp = x * np.sin(rot) + y * np.cos(rot)
    return height * np.exp(-(((cxp - xp) / wx) ** 2) / 2.0 - ((cyp - yp) / wy) ** 2 / 2.0)


def _fit_gaussian(data: np.ndarray) -> tuple[list[float | None], np.ndarray]:
    """AllenSDK's ``fitgaussian2D``: moments, then Nelder-Mead on height, widths, rotation.
    Returns ([height, center_y, center_x, width_y, width_x, rotation], fitted image); Nones and
    zeros where the optimiser fails as AllenSDK's does (not converged, not precision loss)."""
    total = data.sum()
    rows, cols = np.indices(data.shape)
    x = (cols * data).sum() / total
    y = (rows * data).sum() / total
    col = data[:, int(np.around(x))]
    width_x = np.sqrt(abs((np.arange(col.size) - y) ** 2 * col).sum() / col.sum())
    row = data[int(np.around(y)), :]
    width_y = np.sqrt(abs((np.arange(row.size) - x) ** 2 * row).sum() / row.sum())
    height = data.max()

    def full(p: np.ndarray) -> np.ndarray:
        return np.array([p[0], y, x, np.abs(p[1]), np.abs(p[2]), p[3]])

    def error(p: np.ndarray) -> float:
        return float((np.ravel(_gaussian(full(p), data.shape) - data) ** 2).sum())

    res = optimize.minimize(
        error, [height, width_y, width_x, 0.0], method="Nelder-Mead", options={"maxfev": 2500}
    )
    if not res.success and res.status != 2:
        warnings.warn("GaussianFitError (on subfield) caught", RuntimeWarning, stacklevel=2)
        return [None] * 6, np.zeros_like(data)
    p = full(res.x)
    return [float(v) for v in p], _gaussian(p, data.shape)


def _overlap(on: np.ndarray, off: np.ndarray) -> float:
    on_bin = np.where(on > 0.001, 1, 0)
    off_bin = np.where(off > 0.001, 1, 0)
    return float((on_bin * off_bin).sum()) / (np.sqrt(on_bin.sum()) * np.sqrt(off_bin.sum()))


# --------------------------------------------------------------------------- the design


@dataclass(frozen=True)
class _Design:
    """What every cell of one LSN stimulus shares: the sweeps, the template's operators."""

    stimulus: str
    table: pd.DataFrame  # start, end, frame
    template: np.ndarray  # (frames, rows, cols) uint8, the whole stack
    a: np.ndarray  # AllenSDK's get_A: (2 * pixels, sweeps) ON then OFF
    a_blur: np.ndarray  # get_A_blur
    segments: np.ndarray  # (sweeps, 14) frame indices of the reflected dF/F each sweep needs
    trial_matrix: np.ndarray  # (2 * pixels, sweeps): chi-square's ON/OFF of frame i on trial i
    trials_per_pixel: np.ndarray  # (rows, cols, 2)
    disc_masks: np.ndarray  # (rows, cols, rows, cols) 0/1
    sta_rows: np.ndarray
    sta_cols: np.ndarray
    up_rows: np.ndarray
    up_cols: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.template.shape[1], self.template.shape[2]


def _disc_masks(template: np.ndarray, radius: int = 3) -> np.ndarray:
    """AllenSDK's ``get_disc_masks``: per pixel the 7x7 box around it without the pixels
    ever shown together with it (and itself included)."""
    nt, ny, nx = template.shape
    binary = ((template == LSN_OFF) | (template == LSN_ON)).reshape(nt, ny * nx).astype(float)
    shown = binary.sum(axis=0)
    together = binary.T @ binary
    masks = np.zeros((ny, nx, ny, nx))
    with np.errstate(invalid="ignore", divide="ignore"):
        raw_all = together / shown[None, :]
    for p in range(ny * nx):
        raw = raw_all[p].reshape(ny, nx).copy()
        cy, cx = np.unravel_index(raw.argmax(), (ny, nx))
        raw[cy, cx] = 0.0
        y0, y1 = max(cy - radius, 0), min(cy + radius + 1, ny)
        x0, x1 = max(cx - radius, 0), min(cx + radius + 1, nx)
        clean = np.ones((ny, nx))
        clean[y0:y1, x0:x1] = raw[y0:y1, x0:x1]
        masks[p // nx, p % nx] = clean
    return np.where(masks > 0, 0.0, 1.0)


def _reflect(m: np.ndarray, n: int) -> np.ndarray:
    """Index into the dF/F of index ``m`` of AllenSDK's reflected, padded trace (pad 4)."""
    x = m - 4
    return np.where(x < 0, -x, np.where(x >= n, 2 * (n - 1) - x, x))


def _design(ds: xr.Dataset, stimulus: str) -> _Design:
    if stimulus not in LSN_STIMULI:
        raise ValueError(
            f"{stimulus!r} is not a locally sparse noise stimulus; choose one of "
            f"{sorted(LSN_STIMULI)}"
        )
    rows = ophys.presentations_of(
        ds,
        stimulus,
        "locally_sparse_noise is shown in three_session_C, the 4deg and 8deg variants in "
        "three_session_C2",
    )
    var = template_variable(stimulus)
    if var not in ds.variables:
        raise ValueError(
            f"{stimulus}: the experiment has no {var!r} (frames, rows, columns) template; "
            "convert the NWB file again with this version (the reader maps "
            f"stimulus/templates/{stimulus}_image_stack)"
        )
    template = np.asarray(ds[var].values)
    if template.shape[1:] != LSN_STIMULI[stimulus]:
        raise ValueError(
            f"{stimulus}: template {var!r} has shape {template.shape}, expected "
            f"(frames, {LSN_STIMULI[stimulus][0]}, {LSN_STIMULI[stimulus][1]})"
        )
    st = pd.DataFrame(
        {
            "start": rows["start_frame"].to_numpy(dtype=np.int64),
            "end": rows["end_frame"].to_numpy(dtype=np.int64),
            "frame": rows["frame"].to_numpy(dtype=np.int64),
        },
        index=pd.Index(rows.index, name=PRESENTATION),
    )
    if len(st) < 2:
        raise ValueError(f"{stimulus} has {len(st)} presentation(s); AllenSDK's analysis needs 2+")
    if st["frame"].max() >= len(template) or st["frame"].min() < 0:
        raise ValueError(
            f"{stimulus}: presentation frames {st['frame'].min()}..{st['frame'].max()} fall "
            f"outside the template's {len(template)} frames"
        )
    if len(st) > len(template):
        raise ValueError(
            f"{stimulus}: {len(st)} sweeps but a {len(template)}-frame template; AllenSDK's "
            "chi-square test takes trial i's pixels from template frame i"
        )
    n_t = ds.sizes[TIME]
    starts = st["start"].to_numpy()
    offset = np.r_[0, (starts[1:] == st["end"].to_numpy()[:-1]).astype(np.int64)]
    first = starts + 1 + offset  # index into the smoothed trace (length n + 4)
    if (first + 9 >= n_t + 4).any() or (starts < 0).any():
        raise ValueError(
            f"{stimulus}: a sweep starts within 10 frames of the end of the recording "
            f"({n_t} frames); AllenSDK's event detection needs 10 frames after each start"
        )
    segments = _reflect(first[:, None] + np.arange(14)[None, :], n_t)
    ny, nx = LSN_STIMULI[stimulus]
    shown = template[st["frame"].to_numpy()].reshape(len(st), ny * nx)
    a = np.vstack([(shown > LSN_GREY).T, (shown < LSN_GREY).T]).astype(float)
    blur = _blur((ny, nx))
    a_blur = np.vstack(
        [
            blur(a[: ny * nx].T.reshape(-1, ny, nx)).reshape(-1, ny * nx).T,
            blur(a[ny * nx :].T.reshape(-1, ny, nx)).reshape(-1, ny * nx).T,
        ]
    )
    trials = template[: len(st)].reshape(len(st), ny * nx)
    trial_matrix = np.vstack([(trials == LSN_ON).T, (trials == LSN_OFF).T]).astype(float)
    tpp = np.stack([trial_matrix[: ny * nx].sum(1), trial_matrix[ny * nx :].sum(1)], -1)
    deg = 64 // ny
    up = 74.4 / ny
    return _Design(
        stimulus=stimulus,
        table=st,
        template=template,
        a=a,
        a_blur=a_blur,
        segments=segments,
        trial_matrix=trial_matrix,
        trials_per_pixel=tpp.reshape(ny, nx, 2),
        disc_masks=_disc_masks(template),
        sta_rows=_smooth_sta_axis(ny, deg),
        sta_cols=_smooth_sta_axis(nx, deg),
        up_rows=_upsample_axis(ny, up),
        up_cols=_upsample_axis(nx, up),
    )


# --------------------------------------------------------------------------- one cell


def _chi_square(d: _Design, events: np.ndarray) -> dict[str, Any]:
    """AllenSDK's ``chi_square_binary`` + ``get_peak_significance`` for one cell."""
    ny, nx = d.shape
    per_pixel = (d.trial_matrix @ events.astype(float)).reshape(2, ny, nx)
    smoothed = np.stack([d.sta_rows @ per_pixel[k] @ d.sta_cols.T for k in (0, 1)], axis=-1)
    masks = d.disc_masks.reshape(ny * nx, ny, nx, 1)  # include both channels
    trials = d.trials_per_pixel[None]
    masked_trials = masks * trials
    total_trials = masked_trials.sum(axis=(1, 2, 3))
    total_events = (masks * smoothed[None]).sum(axis=(1, 2, 3))
    expected = masked_trials * (total_events / total_trials)[:, None, None, None]
    observed = smoothed[None] * masks
    with np.errstate(invalid="ignore", divide="ignore"):
        chi = (observed - expected) ** 2 / expected
    chi_sum = np.nansum(chi, axis=(1, 2, 3))
    dof = (2 * masks.sum(axis=(1, 2, 3))).astype(int) - 1
    p = (1.0 - stats.chi2.cdf(chi_sum, dof)).reshape(ny, nx)
    nll = np.where(p == 0.0, 10.0, -np.log10(np.where(p == 0.0, 1.0, p)))
    p = 10.0 ** (-nll)
    factor = 1.0 * ny * nx / d.disc_masks.sum(axis=(2, 3))
    corrected = 1 - np.power(1 - p, factor)
    y, x = np.unravel_index(corrected.argmin(), (ny, nx))
    best = float(corrected[y, x])
    significant = best < ALPHA
    region = d.disc_masks[y, x].astype(bool) if significant else np.zeros((ny, nx), bool)
    return {
        "pvalues": corrected,
        "min_p": best,
        "significant": bool(significant),
        "best_exclusion_region_mask": region,
    }


def _subfields(d: _Design, rts_conv: np.ndarray, components: np.ndarray, n: int) -> dict:
    """Gaussian fits of each subfield (AllenSDK's ``get_gaussian_fit`` for one polarity)."""
    fits: dict[str, list] = {
        k: [] for k in ("height", "center_y", "center_x", "width_y", "width_x", "rotation")
    }
    fits["area"], fits["data"] = [], []
    up = d.up_rows @ rts_conv @ d.up_cols.T
    for ci in range(n):
        outside = (d.up_rows @ (1.0 - components[ci]) @ d.up_cols.T) > 0.5
        response = np.where(outside, 0.0, up)
        if response.sum() > 0:
            p, fitted = _fit_gaussian(response)
            for k, v in zip(
                ("height", "center_y", "center_x", "width_y", "width_x", "rotation"), p, strict=True
            ):
                fits[k].append(v)
            fits["area"].append(
                None if p[3] is None else np.pi * (3.0 / 2) ** 2 * abs(p[3]) * abs(p[4])
            )
            fits["data"].append(fitted)
    return fits


def _cell(d: _Design, segments: np.ndarray) -> dict[str, Any]:
    """Everything AllenSDK computes for one cell, from its (sweeps, 14) dF/F segments."""
    ny, nx = d.shape
    npx = ny * nx
    events = _events(_smooth_dff(segments))
    pvalues = _pixel_pvalues(d.a_blur, events)
    fdr = _holm_sidak(pvalues)
    rts = d.a @ events.astype(float)
    rts_conv = d.a_blur @ events.astype(float)
    out: dict[str, Any] = {"events": events, "n_events": int(events.sum())}
    for k, name in enumerate(("on", "off")):
        sl = slice(k * npx, (k + 1) * npx)
        corrected = fdr[sl].reshape(ny, nx)
        comps, n = _components(corrected < ALPHA)
        conv = rts_conv[sl].reshape(ny, nx)
        out[name] = {
            "pvalues": pvalues[sl].reshape(ny, nx),
            "fdr_corrected": corrected,
            "min_p": float(corrected.min()),
            "fdr_mask": comps,
            "number_of_components": n,
            "rts": rts[sl].reshape(ny, nx),
            "rts_convolution": conv,
            "gaussian_fit": _subfields(d, conv, comps, n),
        }
    on, off = out["on"]["gaussian_fit"], out["off"]["gaussian_fit"]
    n_on, n_off = len(on["area"]), len(off["area"])
    dist = np.full((n_on, n_off), np.nan)
    overlap = np.full((n_on, n_off), np.nan)
    for i in range(n_on):
        for j in range(n_off):
            if None not in (on["center_x"][i], on["center_y"][i], off["center_x"][j]):
                dist[i, j] = np.sqrt(
                    (off["center_x"][j] - on["center_x"][i]) ** 2
                    + (off["center_y"][j] - on["center_y"][i]) ** 2
                )
            overlap[i, j] = _overlap(on["data"][i], off["data"][j])
    on["distance"], on["overlap"] = dist, overlap
    off["distance"], off["overlap"] = dist.T, overlap.T
    out["chi_squared_analysis"] = _chi_square(d, events)
    out["peak"] = _peak_row(out)
    return out


def _largest(fit: dict) -> int | None:
    area = np.array([np.nan if a is None else a for a in fit["area"]], dtype=float)
    if area.size == 0 or np.all(np.isnan(area)):
        return None
    return int(np.nanargmax(area))


def _peak_row(rf: dict[str, Any]) -> dict[str, float]:
    """AllenSDK's ``get_peak`` columns of one cell: the largest ON and OFF subfields."""
    row = dict.fromkeys(PEAK_COLUMNS, np.nan)
    row["rf_chi2_lsn"] = rf["chi_squared_analysis"]["min_p"]
    picks = {}
    for name in ("on", "off"):
        fit = rf[name]["gaussian_fit"]
        i = _largest(fit)
        picks[name] = i
        if i is not None:
            row[f"rf_area_{name}_lsn"] = fit["area"][i]
            row[f"rf_center_{name}_x_lsn"] = fit["center_x"][i]
            row[f"rf_center_{name}_y_lsn"] = fit["center_y"][i]
    if picks["on"] is not None and picks["off"] is not None:
        on = rf["on"]["gaussian_fit"]
        row["rf_distance_lsn"] = on["distance"][picks["on"], picks["off"]]
        row["rf_overlap_index_lsn"] = on["overlap"][picks["on"], picks["off"]]
    return {k: (np.nan if v is None else float(v)) for k, v in row.items()}


def _sweep_stats(d: Any, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One dask task: AllenSDK's mean_sweep_response (cell, sweep) float32 and the sweeps'
    ANOVA ``pval`` of a cell chunk."""
    from abo_lake import vc2p_metrics

    b = vc2p_metrics._block(d, block)
    return b["msr"], b["pval"]


def _cells(d: _Design, block: np.ndarray) -> list[dict[str, Any]]:
    """One dask task: every cell of a chunk; block (sweeps, 14, cells) of dF/F."""
    return [_cell(d, block[:, :, c]) for c in range(block.shape[2])]


# --------------------------------------------------------------------------- public API


class LocallySparseNoise(vc2p_speed_tuning.SpeedTuningMixin):
    """AllenSDK's ``LocallySparseNoise(data_set, stimulus)`` on one lake experiment.

    ``peak`` (AllenSDK's ``rf_*_lsn`` columns), ``receptive_field`` (ON/OFF maps masked to
    their significant subfields), ``cell_index_receptive_field_analysis_data`` (AllenSDK's
    nested per-cell results) and :meth:`receptive_field_analysis` (one cell's), computed once
    on first use; from AllenSDK's base ``StimulusAnalysis`` also ``sweep_response``,
    ``mean_sweep_response``, ``mean_response`` (running speed ``dx`` as a coordinate) and
    :meth:`get_speed_tuning` with ``binned_*``/``peak_run``. Built by
    :func:`locally_sparse_noise` or ``ds.ophys.stimulus_analysis("locally_sparse_noise")``.
    """

    def __init__(self, ds: xr.Dataset, stimulus: str, cells: Sequence[int] | None = None):
        if "dff" not in ds.data_vars:
            raise ValueError(
                "LocallySparseNoise needs 'dff' (cell_specimen_id, time): AllenSDK detects "
                "receptive-field events on dF/F"
            )
        if cells is not None:
            ids = np.atleast_1d(np.asarray(cells, dtype=np.int64))
            missing = ids[~np.isin(ids, ds.indexes[CELL])]
            if len(missing):
                raise KeyError(f"cell_specimen_id {missing.tolist()} not in this experiment")
            ds = ds.sel({CELL: ids})
        self._ds = ds
        self.stimulus = stimulus
        self._design = _design(ds, stimulus)

    def __repr__(self) -> str:
        d = self._design
        return (
            f"<LocallySparseNoise {self.stimulus} · {len(d.table)} sweeps · "
            f"{self._ds.sizes[CELL]} cells · {d.shape[0]}x{d.shape[1]} pixels>"
        )

    @property
    def nrows(self) -> int:
        """Template rows (AllenSDK's ``nrows``)."""
        return self._design.shape[0]

    @property
    def ncols(self) -> int:
        """Template columns (AllenSDK's ``ncols``)."""
        return self._design.shape[1]

    @property
    def stim_table(self) -> pd.DataFrame:
        """AllenSDK's ``stim_table``: ``start``/``end`` ophys frames and template ``frame``."""
        return self._design.table.copy()

    @property
    def sweeplength(self) -> int:
        """Frames of one sweep (AllenSDK's ``sweeplength``: the second sweep's length)."""
        t = self._design.table
        return int(t["end"].iloc[1] - t["start"].iloc[1])

    @property
    def LSN(self) -> np.ndarray:
        """The template stack (frames, rows, columns), uint8 0/127/255 (AllenSDK's ``LSN``)."""
        return self._design.template.copy()

    @cached_property
    def _results(self) -> list[dict[str, Any]]:
        d = self._design
        dff = ophys._trace(self._ds, "dff").data
        raw = ophys._sample(dff, d.segments, np.zeros(d.segments.shape)).rechunk({0: -1, 1: -1})
        parts = [dask.delayed(_cells)(d, blk) for blk in raw.to_delayed().ravel()]
        return [cell for part in compute(*parts) for cell in part]

    @property
    def interlength(self) -> int:
        """Frames before (and after) a sweep's window: ``4 * sweeplength`` (AllenSDK's)."""
        return 4 * self.sweeplength

    @property
    def extralength(self) -> int:
        """Frames after the sweep averaged too: ``sweeplength`` (AllenSDK's)."""
        return self.sweeplength

    @cached_property
    def _sweep_design(self) -> Any:
        """The sweeps as :mod:`abo_lake.vc2p_metrics` windows them (AllenSDK's base
        ``StimulusAnalysis``): ``interlength`` frames before the start to ``sweeplength +
        interlength`` after it, the mean over ``sweeplength + extralength`` from the start."""
        from abo_lake import vc2p_metrics

        t = np.asarray(self._ds.indexes[TIME], dtype=np.float64)
        table = self._design.table[["start", "end"]]
        length = self.sweeplength
        return vc2p_metrics._Design(
            self.stimulus, table, length, 4 * length, length, (), (), 1.0 / (t[1] - t[0])
        )

    @cached_property
    def _sweep_idx(self) -> np.ndarray:
        from abo_lake import vc2p_metrics

        return vc2p_metrics._windows(self._ds, self._sweep_design)

    @cached_property
    def _raw_sweeps(self) -> Any:
        """(sweep, frame, cell) corrected fluorescence of the windows, lazy (dask)."""
        if "corrected_fluorescence" not in self._ds.data_vars:
            raise ValueError(
                "sweep responses need 'corrected_fluorescence' (cell_specimen_id, time), as "
                "AllenSDK's do"
            )
        idx = self._sweep_idx
        arr = ophys._trace(self._ds, "corrected_fluorescence").data
        return ophys._sample(arr, idx, np.zeros(idx.shape))

    @cached_property
    def _dx(self) -> tuple[np.ndarray, np.ndarray]:
        """Running speed of each window (sweep, frame) and its float32 mean over the response
        window (AllenSDK's ``dx`` column); a SchemaError without running speed."""
        from abo_lake import vc2p_metrics

        d = self._sweep_design
        speed = ophys.running_speed(self._ds).data
        lo, hi = d.interlength, d.interlength + d.sweeplength + d.extralength
        windows = dask.delayed(vc2p_metrics._window_speed)(speed, self._sweep_idx, lo, hi)
        return compute(windows)[0]

    @cached_property
    def _sweep_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(cell, sweep) mean sweep responses and ANOVA p-values, as AllenSDK's
        ``StimulusAnalysis`` computes them for LSN: sweeps of the second sweep's length ``L``,
        ``4 L`` frames before (the baseline), the mean over ``2 L`` frames from the start, %
        ΔF/F of corrected fluorescence, float32; p of the frames before against those."""
        d = self._sweep_design
        raw = self._raw_sweeps.rechunk({0: -1, 1: -1})
        parts = [dask.delayed(_sweep_stats)(d, blk) for blk in raw.to_delayed().ravel()]
        done = compute(*parts)
        return tuple(np.concatenate([p[k] for p in done], axis=0) for k in (0, 1))

    @property
    def _msr(self) -> np.ndarray:
        return self._sweep_stats[0]

    def _sweep_coords(self) -> dict[str, Any]:
        st = self._design.table
        return {
            PRESENTATION: st.index.to_numpy(),
            CELL: self.cell_specimen_ids,
            "frame": (PRESENTATION, st["frame"].to_numpy()),
        }

    @property
    def sweep_response(self) -> xr.DataArray:
        """AllenSDK's ``sweep_response`` (sweep, cell, sweep_frame): each window's corrected
        fluorescence as % ΔF/F from its ``interlength`` frames before the start, float32, lazy
        (dask); AllenSDK's ``dx`` column is the coordinate ``dx`` (running speed, cm/s)."""
        from abo_lake import vc2p_metrics

        return vc2p_metrics._sweep_response(
            self._raw_sweeps, self._sweep_design, self._sweep_coords(), self._dx[0]
        )

    @property
    def mean_sweep_response(self) -> xr.DataArray:
        """AllenSDK's ``mean_sweep_response`` (sweep, cell): % ΔF/F from the 4-sweep baseline,
        averaged over two sweep lengths from the start, float32; its ``dx`` column (the mean
        running speed over the same frames) is the coordinate ``dx``."""
        coords = self._sweep_coords()
        coords["dx"] = (PRESENTATION, self._dx[1])
        return xr.DataArray(
            self._msr.T,
            dims=(PRESENTATION, CELL),
            coords=coords,
            name="mean_sweep_response",
            attrs={"units": "%", "stimulus": self.stimulus},
        )

    @property
    def pval(self) -> xr.DataArray:
        """AllenSDK's ``pval`` (sweep, cell): one-way ANOVA p of each sweep's ``interlength``
        frames before against its response window (its ``dx`` column apart)."""
        return xr.DataArray(
            self._sweep_stats[1].T,
            dims=(PRESENTATION, CELL),
            coords=self._sweep_coords(),
            name="pval",
            attrs={"units": "1", "stimulus": self.stimulus},
        )

    @property
    def mean_response(self) -> xr.DataArray:
        """AllenSDK's ``mean_response``: per pixel the mean ``mean_sweep_response`` of the
        sweeps showing it ON (255) and OFF (0); dims (row, col, cell_specimen_id, on_off);
        AllenSDK's extra ``dx`` cell (the same mean of the sweeps' running speed) is the
        coordinate ``dx`` (row, col, on_off). NaN where a pixel is never ON or OFF."""
        msr = np.concatenate([self._msr, self._dx[1][None].astype(self._msr.dtype)])
        d = self._design
        shown = d.template[d.table["frame"].to_numpy()]  # (sweep, row, col)
        out = np.full((self.nrows, self.ncols, msr.shape[0], 2), np.nan)
        for k, value in enumerate((LSN_ON, LSN_OFF)):
            hit = shown == value
            for r in range(self.nrows):
                for c in range(self.ncols):
                    rows = np.flatnonzero(hit[:, r, c])
                    if len(rows):  # pandas' float32 mean: a float32 sum over the sweeps
                        out[r, c, :, k] = np.ascontiguousarray(msr[:, rows]).mean(axis=-1)
        return xr.DataArray(
            out[:, :, :-1],
            dims=("row", "col", CELL, "on_off"),
            coords={
                CELL: self.cell_specimen_ids,
                "on_off": ["on", "off"],
                "dx": (("row", "col", "on_off"), out[:, :, -1]),
            },
            name="mean_response",
            attrs={"units": "%", "stimulus": self.stimulus},
        )

    @property
    def cell_specimen_ids(self) -> np.ndarray:
        """The analysed cells, in order."""
        return np.asarray(self._ds.indexes[CELL])

    @property
    def peak(self) -> pd.DataFrame:
        """AllenSDK's ``peak`` table (``rf_center_on_x_lsn``, ..., ``rf_chi2_lsn``), indexed by
        ``cell_specimen_id``; NaN where a cell has no ON or OFF subfield."""
        rows = [r["peak"] for r in self._results]
        return pd.DataFrame.from_records(
            rows, index=pd.Index(self.cell_specimen_ids, name=CELL), columns=PEAK_COLUMNS
        )

    def receptive_field_analysis(self, cell_specimen_id: int) -> dict[str, Any]:
        """One cell's results, as AllenSDK's ``compute_receptive_field_with_postprocessing``
        nests them (``event_vector``, ``on``/``off`` with ``pvalues``, ``fdr_corrected``,
        ``fdr_mask``, ``rts``, ``rts_convolution``, ``gaussian_fit``, and
        ``chi_squared_analysis``), with plain arrays and attributes."""
        ids = list(self.cell_specimen_ids)
        if cell_specimen_id not in ids:
            raise KeyError(f"cell_specimen_id {cell_specimen_id} not analysed here")
        return self._results[ids.index(cell_specimen_id)]

    @property
    def cell_index_receptive_field_analysis_data(self) -> dict[str, dict[str, Any]]:
        """AllenSDK's per-cell results keyed by the cell's index as a string."""
        return {str(i): r for i, r in enumerate(self._results)}

    @property
    def receptive_field(self) -> xr.DataArray:
        """AllenSDK's ``receptive_field``: the event-triggered blurred template per cell, ON and
        OFF, NaN outside the significant subfields; dims (row, col, cell_specimen_id, on_off)."""
        arr = np.zeros((self.nrows, self.ncols, len(self._results), 2))
        for c, r in enumerate(self._results):
            for k, name in enumerate(("on", "off")):
                rf = r[name]["rts_convolution"].copy()
                rf[np.logical_not(r[name]["fdr_mask"].sum(axis=0))] = np.nan
                arr[:, :, c, k] = rf
        return xr.DataArray(
            arr,
            dims=("row", "col", CELL, "on_off"),
            coords={CELL: self.cell_specimen_ids, "on_off": ["on", "off"]},
            name="receptive_field",
            attrs={"stimulus": self.stimulus},
        )


def locally_sparse_noise(
    ds: xr.Dataset, stimulus: str = "locally_sparse_noise", cells: Sequence[int] | None = None
) -> LocallySparseNoise:
    """AllenSDK's ``LocallySparseNoise(data_set, stimulus)``: receptive fields of the cells.

    Parameters
    ----------
    ds
        A Visual Coding 2P ``ophys_experiment`` Dataset (three_session_C or C2).
    stimulus
        ``locally_sparse_noise``, ``locally_sparse_noise_4deg`` or ``_8deg``.
    cells
        ``cell_specimen_id`` values (default: every cell); only their dF/F is read.

    Raises
    ------
    ValueError
        If the experiment did not show the stimulus (names its session type and stimuli) or
        has no template for it.

    Examples
    --------
    >>> locally_sparse_noise(ds).peak[["rf_area_on_lsn", "rf_chi2_lsn"]]  # doctest: +SKIP
    """
    return LocallySparseNoise(ds, stimulus, cells)
