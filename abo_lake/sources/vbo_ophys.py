"""Reader of Visual Behavior 2P ``behavior_ophys_experiment_<id>.nwb`` files (NWB 2).

Reads with h5py at fixed paths (no pynwb object construction); big arrays stay lazy through
:func:`~abo_lake.sources._hdf5.lazy_array`. Returns one ``ophys_experiment`` Dataset:

- dims ``cell_specimen_id`` (coord; ``cell_roi_id``, the cell table's row ``id``, along it),
  ``time`` (the ``dff`` timestamps, AllenSDK's ``ophys_timestamps``, s), ``y``, ``x`` (pixel
  index × pixel size in µm, from the max projection's ``resolution``).
- ``dff``, ``corrected_fluorescence``, ``neuropil_fluorescence`` (``neuropil_trace``: the
  real neuropil traces), ``demixed_fluorescence`` (``demixed_trace``), ``events``
  (``event_detection``) (``cell_specimen_id``, ``time``) float64, transposed lazily from the
  file's (T, N); ``event_lambda``, ``event_noise_std`` and ``r``, ``RMSE`` (the
  ``corrected_fluorescence/r`` and ``/RMSE`` RoiResponseSeries groups, layout note 1) along
  the cell dim, ordered through each series' ``rois``.
- cell table columns along ``cell_specimen_id`` (Allen names, except ``x``/``y`` -> ``roi_x``/
  ``roi_y``, which would clash with the image dims); ``roi_mask`` (cell, y, x) bool;
  ``max_projection``, ``average_projection`` (the file's ``average_image``),
  ``segmentation_mask_image`` (y, x), each with AllenSDK's ``spacing`` (``resolution`` * 10,
  mm) and ``unit`` attrs; ``motion_correction.x``/``.y`` (the ``ophys_motion_correction_x``/
  ``_y`` series, named as AllenSDK's ``MotionCorrection.from_nwb`` names them) along ``time``.
- the behavior part (presentations, trials, licks, rewards, running, stimulus timestamps,
  eye tracking, templates, task parameters, rig geometry): see
  :mod:`abo_lake.sources._vb_behavior`.

Unmatched ROIs have ``cell_specimen_id == -1`` in Allen files; so that the dim stays unique,
such ROIs get ``cell_specimen_id = -cell_roi_id`` (still negative; ``cell_roi_id`` is kept).

Metadata become attrs under AllenSDK's names with AllenSDK's values
(``BehaviorOphysExperiment.metadata``, see :func:`_metadata`), plus ``task_parameters.<name>``
from ``general/task_parameters``. ``cre_line`` is AllenSDK's Visual Behavior one
(``FullGenotype.parse_cre_line``: the genotype's first part without ``/wt``,
``Slc17a7-IRES2-Cre``); Visual Coding 2P keeps ``/wt`` (:mod:`abo_lake.sources.vc2p_ophys`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.sources import _vb_behavior
from abo_lake.sources._hdf5 import (
    lazy_array,
    open_hdf5,
    read_str,
    require_dataset,
    require_hdf5,
)
from abo_lake.sources._vb_behavior import as_dtype, decoded_strings
from abo_lake.writer import cell_major_layout

__all__ = ["MAPPED_HDF5", "fidelity_mappings", "read", "sniff"]

_OPHYS = "processing/ophys"
_TABLE = f"{_OPHYS}/image_segmentation/cell_specimen_table"
_DFF = f"{_OPHYS}/dff/traces"
_CORRECTED = f"{_OPHYS}/corrected_fluorescence"
_TRACES = {
    "dff": _DFF,
    "corrected_fluorescence": f"{_OPHYS}/corrected_fluorescence/traces",
    "neuropil_fluorescence": f"{_OPHYS}/neuropil_trace/traces",
    "demixed_fluorescence": f"{_OPHYS}/demixed_trace/traces",
    "events": f"{_OPHYS}/event_detection",
}
_IMAGES = {
    "max_projection": "max_projection",
    "average_projection": "average_image",
    "segmentation_mask_image": "segmentation_mask_image",
}
_TARGET_BYTES = 2**21  # ~2 MB chunks
_MIN_FRAMES = 8192  # time per trace chunk, at least


def _not_id(group: str) -> tuple[str, ...]:
    """Globs of the datasets of ``group`` other than its ``id`` (left to the raw copy)."""
    return (f"{group}/*", f"!{group}/id")


_PLANE = "/general/optophysiology/imaging_plane_1"
_SERIES_DATA = ("data", "timestamps")

#: fnmatch globs of the absolute HDF5 dataset paths this reader maps (for the raw copier).
#: Only what the Dataset holds: ROI index datasets (``rois``), descriptions, ``grid_spacing``,
#: ``reference_frame``, table ``id`` columns that are not stored and the like go to raw.
MAPPED_HDF5: tuple[str, ...] = (
    *(f"/general/subject/{k}" for k in ("genotype", "sex", "subject_id", "age")),
    "/session_start_time",
    *(f"{_PLANE}/{k}" for k in ("location", "imaging_rate", "excitation_lambda")),
    f"{_PLANE}/channel_1/emission_lambda",
    f"/{_TABLE}/*",
    *(f"/{g}/{k}" for g in _TRACES.values() for k in _SERIES_DATA),
    *(f"/{_OPHYS}/event_detection/{k}" for k in ("lambdas", "noise_stds")),
    *(f"/{_CORRECTED}/{k}/data" for k in ("r", "RMSE")),
    *(f"/{_OPHYS}/images/{k}" for k in _IMAGES.values()),
    f"/{_OPHYS}/ophys_motion_correction_x/data",
    f"/{_OPHYS}/ophys_motion_correction_y/data",
    *_vb_behavior.MAPPED_HDF5,
)


def sniff(path: str | Path) -> bool:
    """Return True if ``path`` looks like a Visual Behavior ophys NWB 2 file (never raises)."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return _is_vbo(f)
    except Exception:
        return False


def _is_vbo(f: h5py.File) -> bool:
    version = read_str(f.attrs.get("nwb_version", ""))
    return version.startswith("2") and f"{_DFF}/data" in f and f"{_TABLE}/id" in f


@contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    expected = "expected a Visual Behavior 2P NWB 2 file (behavior_ophys_experiment_<id>.nwb)"
    if not path.is_file():
        raise SourceFileError(f"{path}: no such file; {expected}")
    require_hdf5(path, expected)
    with open_hdf5(path, expected) as f:
        if not _is_vbo(f):
            modules = sorted(f["processing"]) if "processing" in f else []
            raise SourceFileError(
                f"{path}: not a Visual Behavior ophys NWB file; found nwb_version "
                f"{read_str(f.attrs.get('nwb_version', ''))!r} and processing modules "
                f"{modules!r}, expected /{_DFF}/data and /{_TABLE}"
            )
        try:
            yield f
        except (KeyError, OSError, ValueError, IndexError) as err:
            if isinstance(err, SourceFileError):
                raise
            raise SourceFileError(f"{path}: cannot read the ophys experiment: {err}") from err


def _column(dset: h5py.Dataset) -> np.ndarray:
    """Read a small dataset eagerly; strings become a plain ``<U`` array."""
    if h5py.check_string_dtype(dset.dtype) is not None:
        values = dset.asstr()[()]
        return np.asarray(values, dtype=str) if np.ndim(values) else np.asarray(str(values))
    return np.asarray(dset[()])


def _scalar(value: Any) -> Any:
    """Make an HDF5 scalar JSON-friendly (str, int, float, bool)."""
    if isinstance(value, bytes | np.bytes_ | str):
        return read_str(value)
    arr = np.asarray(value)
    if arr.size != 1:
        return [_scalar(v) for v in arr.ravel()]
    item = arr.ravel()[0]
    item = item.item() if isinstance(item, np.generic) else item  # object arrays hold str
    return read_str(item) if isinstance(item, bytes | str) else item


#: HDMF's own attributes of every typed group: not metadata.
_NWB_BOOKKEEPING = frozenset({"namespace", "neurodata_type", "object_id", "help"})
#: AllenSDK's ``ReporterLine.parse_indicator``: reporter substring -> indicator.
_INDICATORS = (("GCaMP6f", "GCaMP6f"), ("GC6f", "GCaMP6f"), ("GCaMP6s", "GCaMP6s"))


def _age_in_days(age: str) -> int | None:
    """AllenSDK's ``Age._age_code_to_days``: the digits of an ISO code ``P<days>D``."""
    match = re.search(r"\d+", age) if age.startswith("P") else None
    return int(match.group()) if match else None


def _metadata(f: h5py.File, path: Path) -> dict[str, Any]:
    """``BehaviorOphysExperiment.metadata`` of AllenSDK 2.16.2 as attrs, names and values.

    From ``general/metadata`` (OphysBehaviorMetadata: its fields are group attributes), the
    ``BehaviorSubject`` (``sex``, ``age`` -> ``age_in_days``, ``subject_id`` -> ``mouse_id``
    as the string it is, ``genotype`` -> ``full_genotype``, ``driver_line`` sorted,
    ``reporter_line``), ``session_start_time`` -> ``date_of_acquisition`` (ISO text) and the
    imaging plane (``imaging_rate`` -> ``ophys_frame_rate``, ``location`` ->
    ``targeted_structure``, excitation and emission wavelengths). As AllenSDK does,
    ``cre_line`` is the genotype's first part without ``/wt`` (``FullGenotype.parse_cre_line``:
    only when the genotype has a ';') and ``indicator`` is parsed from the reporter line
    (``ReporterLine.parse_indicator``), not read from the imaging plane. Values AllenSDK
    returns as None are stored as the file has them (``imaging_plane_group`` -1) or left
    out; :func:`abo_lake.ophys.metadata` gives them back as None. ``general/task_parameters``
    attributes become ``task_parameters.<name>``.
    """
    attrs: dict[str, Any] = {}
    for group_path, prefix in (
        ("general/metadata", ""),
        ("general/task_parameters", "task_parameters."),
    ):
        group = f.get(group_path)
        if isinstance(group, h5py.Group):
            for key, value in group.attrs.items():
                if key not in _NWB_BOOKKEEPING:
                    attrs[prefix + key] = _scalar(value)
    subject = f.get("general/subject")
    if isinstance(subject, h5py.Group):
        for key, name in (
            ("sex", "sex"),
            ("subject_id", "mouse_id"),
            ("genotype", "full_genotype"),
        ):
            if isinstance(subject.get(key), h5py.Dataset):
                attrs[name] = read_str(subject[key][()])
        if isinstance(subject.get("age"), h5py.Dataset):
            days = _age_in_days(read_str(subject["age"][()]))
            if days is not None:
                attrs["age_in_days"] = days
        if "driver_line" in subject.attrs:
            lines = _scalar(subject.attrs["driver_line"])
            attrs["driver_line"] = sorted([lines] if isinstance(lines, str) else lines)
        if "reporter_line" in subject.attrs:
            attrs["reporter_line"] = read_str(subject.attrs["reporter_line"])
    if isinstance(f.get("session_start_time"), h5py.Dataset):
        attrs["date_of_acquisition"] = read_str(f["session_start_time"][()])
    plane = f.get(_PLANE.lstrip("/"))
    if isinstance(plane, h5py.Group):
        for key, name in (
            ("location", "targeted_structure"),
            ("imaging_rate", "ophys_frame_rate"),
            ("excitation_lambda", "excitation_lambda"),
            ("channel_1/emission_lambda", "emission_lambda"),
        ):
            if isinstance(plane.get(key), h5py.Dataset):
                attrs[name] = _scalar(plane[key][()])
    genotype = attrs.get("full_genotype")
    if isinstance(genotype, str) and ";" in genotype:
        attrs["cre_line"] = genotype.split(";")[0].replace("/wt", "")
    reporter = attrs.get("reporter_line")
    indicator = next(
        (v for k, v in _INDICATORS if isinstance(reporter, str) and k in reporter), None
    )
    if indicator is not None:
        attrs["indicator"] = indicator
    if "ophys_experiment_id" not in attrs and "identifier" in f:
        identifier = read_str(f["identifier"][()])
        if identifier.isdigit():
            attrs["ophys_experiment_id"] = int(identifier)
    if "ophys_experiment_id" not in attrs:
        raise SourceFileError(
            f"{path}: no ophys_experiment_id (attribute of /general/metadata, or a numeric "
            "/identifier)"
        )
    attrs["source_file"] = path.name
    attrs["abo_lake_kind"] = "ophys_experiment"
    return attrs


def _chunk(n: int, other: int, itemsize: int) -> int:
    return int(max(1, min(n, _TARGET_BYTES // max(1, other * itemsize))))


def _roi_order(f: h5py.File, group: str, n_cells: int, path: Path) -> np.ndarray | None:
    """Row of the cell table for each column of a (T, N') series; None when it is 0..N-1."""
    if f"{group}/rois" not in f:
        return None
    rows = np.asarray(f[f"{group}/rois"][()], dtype=np.int64)
    if len(rows) == n_cells and np.array_equal(rows, np.arange(n_cells)):
        return None
    if rows.min(initial=0) < 0 or rows.max(initial=-1) >= n_cells:
        raise SourceFileError(f"{path}: /{group}/rois points outside the {n_cells}-row cell table")
    return rows


def _trace(path: Path, f: h5py.File, group: str, n_cells: int, n_time: int) -> da.Array:
    """(cell, time) lazy view of a (T, N') series, NaN for cells the series lacks."""
    dset = f[f"{group}/data"]
    if dset.ndim != 2 or dset.shape[0] != n_time:
        raise SourceFileError(
            f"{path}: /{group}/data has shape {dset.shape}, expected ({n_time}, n_rois)"
        )
    n_rois = dset.shape[1]
    # ~2 MB blocks balanced between the two access patterns: one cell over all time reads
    # n_time / t_chunk chunks, all cells in a window n_rois / c_chunk; at most ~32 cells
    # (float64) by at least 8192 frames (longer when a session has few cells)
    item = dset.dtype.itemsize
    c_chunk = _chunk(n_rois, min(n_time, _MIN_FRAMES), item)
    t_chunk = min(n_time, max(_MIN_FRAMES, _TARGET_BYTES // (c_chunk * item) // 4096 * 4096))
    # read whole HDF5 chunks (each gzip chunk decompressed once), then split into stored chunks
    h5_cols = dset.chunks[1] if dset.chunks else n_rois
    read_cols = min(n_rois, -(-c_chunk // h5_cols) * h5_cols)
    arr = lazy_array(path, f"/{group}/data", chunks=(t_chunk, read_cols)).T
    if read_cols != c_chunk:
        arr = arr.rechunk((c_chunk, t_chunk))
    rows = _roi_order(f, group, n_cells, path)
    if rows is None and n_rois == n_cells:
        return arr
    if rows is None:
        raise SourceFileError(f"{path}: /{group}/data has {n_rois} ROIs, expected {n_cells}")
    where = np.full(n_cells, n_rois)
    where[rows] = np.arange(n_rois)
    pad = da.full((1, n_time), np.nan, dtype=np.float64, chunks=(1, t_chunk))
    return da.concatenate([arr.astype(np.float64), pad], axis=0)[where]


def _roi_values(f: h5py.File, series: str, n_cells: int, path: Path) -> np.ndarray:
    """A per-ROI RoiResponseSeries (``corrected_fluorescence/r``, ``/RMSE``: ``data`` (n_roi,)
    with dummy timestamps, layout note 1) ordered like the cell table, via its ``rois``."""
    group = f[series]
    if not isinstance(group, h5py.Group) or not isinstance(group.get("data"), h5py.Dataset):
        raise SourceFileError(
            f"{path}: /{series} is a {type(group).__name__}, expected a RoiResponseSeries "
            "group with a 'data' dataset of one value per ROI (as AllenSDK writes it)"
        )
    if group["data"].ndim != 1:
        raise SourceFileError(
            f"{path}: /{series}/data has shape {group['data'].shape}, expected (n_rois,)"
        )
    return _per_cell(f, f"{series}/data", series, n_cells, path)


def _per_cell(f: h5py.File, name: str, group: str, n_cells: int, path: Path) -> np.ndarray:
    """A per-ROI dataset ``name`` ordered like the cell table, via the ``rois`` of ``group``."""
    values = np.asarray(f[name][()], dtype=np.float64)
    rows = _roi_order(f, group, n_cells, path)
    if rows is None:
        return values
    out = np.full(n_cells, np.nan)
    out[rows] = values
    return out


def read(path: str | Path) -> dict[str, xr.Dataset]:
    """Read one VBO ``behavior_ophys_experiment_<id>.nwb`` into a lazy Dataset.

    Parameters
    ----------
    path
        The NWB file.

    Returns
    -------
    dict
        ``{"ophys/experiment/<ophys_experiment_id>": Dataset}`` of kind ``ophys_experiment``.

    Raises
    ------
    SourceFileError
        If the file is missing, not HDF5, truncated, of another modality or inconsistent.

    Examples
    --------
    >>> read("behavior_ophys_experiment_951980471.nwb")  # doctest: +SKIP
    """
    p = Path(path)
    with _open(p) as f:
        attrs = _metadata(f, p)
        stamps = require_dataset(f, f"{_DFF}/timestamps", p, ndim=1, what="dF/F frame times")
        time = np.asarray(stamps[()], dtype=np.float64)
        ids = require_dataset(f, f"{_TABLE}/id", p, ndim=1, what="cell_roi_id of each ROI")
        roi_id = np.asarray(ids[()], dtype=np.int64)
        n, n_t = len(roi_id), len(time)
        table = f[_TABLE]
        specimen = (
            np.asarray(table["cell_specimen_id"][()], dtype=np.int64)
            if "cell_specimen_id" in table
            else np.full(n, -1, np.int64)
        )
        specimen = np.where(specimen < 0, -roi_id, specimen)
        if len(np.unique(specimen)) != n:
            raise SourceFileError(f"{p}: duplicate cell_specimen_id in /{_TABLE}")
        cell = "cell_specimen_id"
        data: dict[str, Any] = {}
        for name, group in _TRACES.items():
            if f"{group}/data" in f:
                var = xr.Variable((cell, "time"), _trace(p, f, group, n, n_t))
                # one chunk per cell (its whole trace), packed ~4 MB
                var.encoding.update(cell_major_layout(var.shape, var.dtype.itemsize))
                data[name] = var
        if "events" in data:
            group = _TRACES["events"]
            for key, name in (("lambdas", "event_lambda"), ("noise_stds", "event_noise_std")):
                # AllenSDK's Events.from_nwb needs both beside the events
                require_dataset(f, f"{group}/{key}", p, ndim=1, what="one value per ROI")
                values = _per_cell(f, f"{group}/{key}", group, n, p)
                data[name] = xr.Variable(cell, values)
        for key in ("r", "RMSE"):
            series = f"{_CORRECTED}/{key}"
            if series in f:
                data[key] = xr.Variable(cell, _roi_values(f, series, n, p))
        for col in (read_str(c) for c in table.attrs.get("colnames", [])):
            if col in {"image_mask", "cell_specimen_id"} or not isinstance(
                table.get(col), h5py.Dataset
            ):
                continue
            values = _column(table[col])
            if values.shape[:1] == (n,) and values.ndim == 1:
                data[{"x": "roi_x", "y": "roi_y"}.get(col, col)] = xr.Variable(cell, values)
        if "image_mask" in table:
            mask = table["image_mask"]
            c = _chunk(n, mask.shape[1] * mask.shape[2], 1)
            arr = lazy_array(p, f"/{_TABLE}/image_mask", chunks=(c, *mask.shape[1:]))
            data["roi_mask"] = xr.Variable((cell, "y", "x"), arr.astype(bool))
            data["roi_mask"].encoding["chunks"] = arr.chunksize
        for name, key in _IMAGES.items():
            if f"{_OPHYS}/images/{key}" in f:
                image = f[f"{_OPHYS}/images/{key}"]
                data[name] = xr.Variable(("y", "x"), np.asarray(image[()]), _spacing(image))
        for axis in "xy":
            group = f"{_OPHYS}/ophys_motion_correction_{axis}/data"
            if group in f and f[group].shape == (n_t,):
                data[f"motion_correction.{axis}"] = xr.Variable(
                    "time", f[group][()], {"units": "pixels"}
                )
        extra, behavior_attrs = _vb_behavior.read_behavior(p, f)
        data.update(extra)
        for key, value in behavior_attrs.items():
            attrs.setdefault(key, value)
        coords: dict[str, Any] = {}
        spacing = _pixel_um(data.get("max_projection"))
        ny, nx = data["roi_mask"].shape[1:] if "roi_mask" in data else (0, 0)
        coords.update(
            {
                cell: xr.Variable(cell, specimen),
                "cell_roi_id": xr.Variable(cell, roi_id),
                "time": xr.Variable("time", time, {"units": "s"}),
                "y": xr.Variable("y", np.arange(ny) * spacing, {"units": "um"}),
                "x": xr.Variable("x", np.arange(nx) * spacing, {"units": "um"}),
            }
        )
        attrs.setdefault("field_of_view_width", int(nx))
        attrs.setdefault("field_of_view_height", int(ny))
    if "roi_mask" not in data or "max_projection" not in data:
        raise SourceFileError(f"{p}: no image_mask or max_projection under /{_OPHYS}")
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    return {f"ophys/experiment/{attrs['ophys_experiment_id']}": ds}


def _spacing(image: h5py.Dataset) -> dict[str, Any]:
    """AllenSDK's ``Image.spacing`` (mm) and ``unit`` of a GrayscaleImage (``nwb_utils.get_image``).

    The ``resolution`` attribute holds the pixel size in cm although the NWB schema says
    pixels/cm (layout note 6); AllenSDK reads it back as ``resolution * 10`` mm on both axes.
    """
    if "resolution" not in image.attrs:
        return {}
    resolution = float(np.asarray(image.attrs["resolution"]).ravel()[0])
    return {"spacing": [resolution * 10, resolution * 10], "unit": "mm"}


def _pixel_um(image: xr.Variable | None) -> float:
    """Pixel size (µm) from the max projection's spacing; 400 µm / 512 px without one."""
    if image is not None and "spacing" in image.attrs:
        return float(image.attrs["spacing"][0]) * 1000.0
    return 400.0 / 512.0


# --- fidelity ----------------------------------------------------------------------------------


def _traces_view(ds: xr.Dataset, rows: dict[str, np.ndarray | None]) -> xr.Dataset:
    """Traces back in the source's (time, ROI) order; per-cell values in the ``rois`` order."""
    cell = "cell_specimen_id"
    out = {}
    for name, order in rows.items():
        var = ds[name]
        if var.ndim == 2:
            var = var.transpose("time", cell)
        out[name] = var if order is None else var.isel({cell: order})
    return xr.Dataset(out)


def _roi_specimen(roi_id: np.ndarray) -> Any:
    """``cell_specimen_id``: -1 (unmatched ROI) is stored as ``-cell_roi_id``."""

    def transform(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.int64)
        return np.where(a < 0, -roi_id, a)

    return transform


def fidelity_mappings(ds: xr.Dataset, path: str | Path) -> list[tuple[Any, dict[str, Any]]]:
    """How each dataset matched by :data:`MAPPED_HDF5` is held by ``ds``, for a fidelity check.

    Used by :func:`abo_lake.fidelity_mapped.check_reader` (which explains ``view`` and
    ``mapping``). Documented transforms: the (T, N) traces are compared with the stored
    (cell, time) arrays transposed back and, when a series has a ``rois`` region, with the
    cells it names in its order (float64 then, since missing cells are NaN-padded); per-ROI
    ``lambdas``/``noise_stds``/``r``/``RMSE`` likewise; cell table ``id`` -> ``cell_roi_id``,
    ``cell_specimen_id`` with -1 -> ``-cell_roi_id``, ``x``/``y`` -> ``roi_x``/``roi_y``,
    ``image_mask`` -> ``roi_mask`` as bool (not invertible for non-binary masks); the
    behavior part as :func:`abo_lake.sources._vb_behavior.fidelity_mappings` says; the
    subject, session start and imaging plane datasets -> the attributes :func:`_metadata`
    makes of them under AllenSDK's names (``age`` as ``age_in_days``); group attributes are
    in the raw copy. A value overwritten by another source of the same attribute is reported.

    Parameters
    ----------
    ds
        The ``ophys_experiment`` Dataset :func:`read` made of ``path`` (maybe re-opened).
    path
        The source file.

    Returns
    -------
    list of (view, mapping)
        Pairs for :func:`abo_lake.fidelity.check_mapped`.
    """
    p = Path(path)
    out: list[tuple[Any, dict[str, Any]]] = []
    with h5py.File(p, "r") as f:
        n = f[f"{_TABLE}/id"].shape[0]
        roi_id = np.asarray(f[f"{_TABLE}/id"][()], dtype=np.int64)
        # traces and per-ROI values, in the source's ROI order
        rows: dict[str, np.ndarray | None] = {}
        traces: dict[str, Any] = {}
        for name, group in _TRACES.items():
            if f"{group}/data" not in f:
                continue
            order = _roi_order(f, group, n, p)
            n_rois = f[f"{group}/data"].shape[1]
            rows[name] = order
            plain = order is None and n_rois == n
            traces[f"/{group}/data"] = (name, None if plain else as_dtype(np.float64))
            if f"{group}/timestamps" in f:
                traces[f"/{group}/timestamps"] = ("time", as_dtype(np.float64))
        for key, name, group in (
            ("lambdas", "event_lambda", _TRACES["events"]),
            ("noise_stds", "event_noise_std", _TRACES["events"]),
            ("data", "r", f"{_CORRECTED}/r"),
            ("data", "RMSE", f"{_CORRECTED}/RMSE"),
        ):
            if f"{group}/{key}" in f:
                rows[name] = _roi_order(f, group, n, p)
                traces[f"/{group}/{key}"] = (name, as_dtype(np.float64))
        out.append((functools.partial(_traces_view, rows=rows), traces))
        # cell table, images, motion correction, behaviour tables and series
        main: dict[str, Any] = {
            f"/{_TABLE}/id": ("cell_roi_id", as_dtype(np.int64)),
            f"/{_TABLE}/image_mask": ("roi_mask", as_dtype(bool)),
        }
        if f"{_TABLE}/cell_specimen_id" in f:
            main[f"/{_TABLE}/cell_specimen_id"] = ("cell_specimen_id", _roi_specimen(roi_id))
        for col, obj in f[_TABLE].items():
            if col in {"image_mask", "cell_specimen_id", "id"} or not isinstance(obj, h5py.Dataset):
                continue
            main[f"/{_TABLE}/{col}"] = ({"x": "roi_x", "y": "roi_y"}.get(col, col), decoded_strings)
        for name, key in _IMAGES.items():
            main[f"/{_OPHYS}/images/{key}"] = (name, None)
        for axis in "xy":
            main[f"/{_OPHYS}/ophys_motion_correction_{axis}/data"] = (
                f"motion_correction.{axis}",
                None,
            )
        out.append(({}, {k: v for k, v in main.items() if k in f}))
        out.extend(_vb_behavior.fidelity_mappings(ds, p, f))
        meta = {k: v for k, v in _META_DATASETS.items() if isinstance(f.get(k), h5py.Dataset)}
        age = "/general/subject/age"
        if age in meta and _age_in_days(read_str(f[age][()])) is None:
            del meta[age]  # not an ISO age: no age_in_days attribute (AllenSDK: None)
    keys = tuple(key for key, _ in meta.values())
    views = {hpath: (f"attrs.{key}", func) for hpath, (key, func) in meta.items()}
    out.append((functools.partial(_attrs_view, keys=keys), views))
    return out


def _attrs_view(ds: xr.Dataset, keys: tuple[str, ...]) -> xr.Dataset:
    """The attributes ``keys`` as variables ``attrs.<key>`` (missing ones are left out)."""
    return xr.Dataset({f"attrs.{k}": np.asarray(ds.attrs[k]) for k in keys if k in ds.attrs})


def _text_attr(a: np.ndarray) -> np.ndarray:
    return np.asarray(read_str(a))


def _number_attr(a: np.ndarray) -> np.ndarray:
    return np.asarray(_scalar(a))


def _age_attr(a: np.ndarray) -> np.ndarray:
    return np.asarray(_age_in_days(read_str(a)))


#: Metadata datasets and the attribute :func:`_metadata` makes of each (AllenSDK's name, and
#: the transform of the source value); the fidelity check compares them.
_META_DATASETS: dict[str, tuple[str, Any]] = {
    "/general/subject/genotype": ("full_genotype", _text_attr),
    "/general/subject/sex": ("sex", _text_attr),
    "/general/subject/subject_id": ("mouse_id", _text_attr),
    "/general/subject/age": ("age_in_days", _age_attr),
    "/session_start_time": ("date_of_acquisition", _text_attr),
    f"{_PLANE}/location": ("targeted_structure", _text_attr),
    f"{_PLANE}/imaging_rate": ("ophys_frame_rate", _number_attr),
    f"{_PLANE}/excitation_lambda": ("excitation_lambda", _number_attr),
    f"{_PLANE}/channel_1/emission_lambda": ("emission_lambda", _number_attr),
}
