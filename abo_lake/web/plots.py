"""Plots computed from a release on request, as PNG bytes (matplotlib, Agg, no pyplot state).

Each plot opens one dataset lazily, reads only the chunks its selection needs (the count is
returned with the image) and draws with the accessors' own analyses:

- ``dff``: ΔF/F of chosen cells over a time range with the stimulus epochs shaded (``.ophys``);
- ``response``: one cell's mean change response (Visual Behavior, ``.ophys.change_responses``)
  or its mean response per grating orientation (Visual Coding, ``.ophys.mean_response``);
- ``raster``: one unit's spike raster and PSTH around a stimulus
  (``.ecephys.presentationwise_spike_times`` and ``presentationwise_spike_counts``);
- ``slice``: a coronal CCF annotation slice with a structure highlighted (``.ccf``);
- ``sweep``: a Cell Types sweep's stimulus and response (``.celltypes.sweep``).

Work per request is bounded by :mod:`abo_lake.web.params`.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from abo_lake import ccf
from abo_lake.release import Release
from abo_lake.web.params import (
    MAX_CELLS,
    MAX_PRESENTATIONS,
    MAX_SWEEP_SECONDS,
    MAX_TIME_SPAN,
    BadRequest,
    float_param,
    id_list,
    int_param,
    text_param,
)

__all__ = ["PLOTS", "Plot", "PlotImage", "plots_for", "render"]

#: One plot at a time: bounded memory and CPU, and exact chunk counts per plot.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class PlotImage:
    """A rendered plot: PNG bytes and the chunk objects read to compute it."""

    png: bytes
    chunk_reads: int


@dataclass(frozen=True)
class Plot:
    """A plot a dataset kind offers: its name, title, and the form fields it takes."""

    name: str
    title: str
    kinds: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]  # (parameter, label)
    draw: Callable[[Release, str, Mapping[str, str]], PlotImage]


def _figure(height: float = 3.6) -> Figure:
    """A figure with fixed margins (a layout engine would draw it twice: too slow here)."""
    fig = Figure(figsize=(8, height), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.5 / height, top=1 - 0.55 / height)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
    return buf.getvalue()


_OPENED: OrderedDict[tuple[str, str, str | None], xr.Dataset] = OrderedDict()


def _open(
    rel: Release, path: str, group: str | None = None
) -> tuple[xr.Dataset, Callable[[], int]]:
    """The lazy dataset (the last few opened are kept) and a counter of chunks read since."""
    key = (rel.record.datasets[path]["manifest"], path, group)
    if key not in _OPENED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _OPENED[key] = rel.open(path, group=group)
        while len(_OPENED) > 8:
            _OPENED.popitem(last=False)
    _OPENED.move_to_end(key)
    ds = _OPENED[key]
    store = ds.encoding["abo_lake_store"]
    start = store.chunk_reads
    return ds, lambda: store.chunk_reads - start


_PRESENTATIONS: OrderedDict[str, pd.DataFrame] = OrderedDict()


def _presentations(rel: Release, path: str, ds: xr.Dataset, accessor: str) -> pd.DataFrame:
    """A dataset's stimulus table through its accessor, kept for the last few datasets."""
    key = rel.record.datasets[path]["manifest"]
    if key not in _PRESENTATIONS:
        try:
            _PRESENTATIONS[key] = getattr(ds, accessor).stimulus_presentations
        except (KeyError, ValueError):  # no stimulus table (SchemaError is a ValueError)
            _PRESENTATIONS[key] = pd.DataFrame()
        while len(_PRESENTATIONS) > 8:
            _PRESENTATIONS.popitem(last=False)
    _PRESENTATIONS.move_to_end(key)
    return _PRESENTATIONS[key]


def _title(rel: Release, path: str, what: str) -> str:
    return f"{what}\n{rel.pin} · {path}"


# -- ophys -----------------------------------------------------------------------------------
def _epochs(pres: pd.DataFrame, t0: float, t1: float) -> list[tuple[float, float, str]]:
    """Contiguous runs of one stimulus (block) name overlapping [t0, t1]."""
    name_col = next((c for c in ("stimulus_block_name", "stimulus_name") if c in pres), None)
    stop_col = "end_time" if "end_time" in pres else "stop_time"
    if name_col is None or "start_time" not in pres or stop_col not in pres:
        return []
    pres = pres.sort_values("start_time")
    names = pres[name_col].astype("string").fillna("").to_numpy()
    starts = pres["start_time"].to_numpy(float)
    stops = pres[stop_col].to_numpy(float)
    out: list[tuple[float, float, str]] = []
    i = 0
    while i < len(names):
        j = i
        while j + 1 < len(names) and names[j + 1] == names[i]:
            j += 1
        a, b = starts[i], np.nanmax(stops[i : j + 1])
        if b >= t0 and a <= t1 and names[i]:
            out.append((max(a, t0), min(b, t1), str(names[i])))
        i = j + 1
    return out


def _cells(ds: xr.Dataset, query: Mapping[str, str], default: int) -> list[int]:
    cells = id_list(query, "cells", most=MAX_CELLS)
    known = ds["cell_specimen_id"].values
    if not cells:
        return [int(c) for c in known[:default]]
    missing = [c for c in cells if c not in set(known.tolist())]
    if missing:
        raise BadRequest(
            f"no cell_specimen_id {missing} in this experiment; it has {known.tolist()[:20]}"
        )
    return cells


def draw_dff(rel: Release, path: str, query: Mapping[str, str]) -> PlotImage:
    """ΔF/F of up to :data:`MAX_CELLS` cells over at most :data:`MAX_TIME_SPAN` seconds."""
    ds, reads = _open(rel, path)
    cells = _cells(ds, query, default=3)
    time = ds["time"].values
    t0 = float_param(query, "t0", float(time[0]), lo=-1e7, hi=1e7)
    t1 = float_param(query, "t1", min(float(time[-1]), t0 + 120.0), lo=-1e7, hi=1e7)
    if not t0 < t1:
        raise BadRequest("parameter 't0' must be before 't1'")
    if t1 - t0 > MAX_TIME_SPAN:
        raise BadRequest(f"time range {t1 - t0:g} s is longer than {MAX_TIME_SPAN:g} s")
    dff = ds["dff"].sel(cell_specimen_id=cells, time=slice(t0, t1)).compute()
    pres = _presentations(rel, path, ds, "ophys")
    fig = _figure(1.4 + 0.9 * len(cells))
    ax = fig.subplots()
    colours = {}
    palette = [f"C{i}" for i in range(10)]
    for a, b, name in _epochs(pres, t0, t1):
        colour = colours.setdefault(name, palette[len(colours) % 10])
        ax.axvspan(a, b, color=colour, alpha=0.12, lw=0, label=name)
    span = float(np.nanmax(np.abs(dff.values))) if dff.size else 1.0
    step = max(span, 1e-6) * 1.1
    for k, cell in enumerate(cells):
        trace = dff.sel(cell_specimen_id=cell)
        ax.plot(trace["time"], trace.values - k * step, lw=0.7, color="k")
        ax.text(t0, -k * step + 0.3 * step, str(cell), fontsize=7, color="0.3")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    if seen:
        ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper right", framealpha=0.8)
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    ax.set_xlim(t0, t1)
    what = f"ΔF/F of {len(cells)} cells, stimulus epochs shaded"
    ax.set_title(_title(rel, path, what), fontsize=9)
    return PlotImage(_png(fig), reads())


def draw_response(rel: Release, path: str, query: Mapping[str, str]) -> PlotImage:
    """One cell's mean change response (Visual Behavior) or orientation tuning (gratings)."""
    ds, reads = _open(rel, path)
    (cell,) = _cells(ds, query, default=1)[:1] or [None]
    if cell is None:
        raise BadRequest("this experiment has no cells")
    one = ds.sel(cell_specimen_id=[cell])
    pres = _presentations(rel, path, ds, "ophys")
    fig = _figure(3.4)
    ax = fig.subplots()
    if "is_change" in pres and pres["is_change"].fillna(False).astype(bool).any():
        resp = one.ophys.change_responses(window=(-1.0, 1.5)).compute()
        other = [d for d in resp.dims if d not in ("cell_specimen_id",) and d != _time_dim(resp)]
        mean = resp.mean(other).squeeze()
        sem = (resp.std(other) / np.sqrt(max(resp.sizes[other[0]], 1))).squeeze() if other else 0
        t = resp[_time_dim(resp)].values
        ax.fill_between(t, mean - sem, mean + sem, color="C0", alpha=0.25, lw=0)
        ax.plot(t, mean, color="C0")
        ax.axvline(0, color="0.5", ls="--", lw=0.8)
        n = resp.sizes[other[0]] if other else 1
        ax.set_xlabel("time from image change (s)")
        ax.set_ylabel("ΔF/F")
        what = f"cell {cell}: mean change response ± s.e.m. ({n} changes)"
    elif "orientation" in pres:
        grating = pres[pres["orientation"].notna()]
        if "stimulus_name" in grating:
            dg = grating[grating["stimulus_name"].astype(str) == "drifting_gratings"]
            grating = dg if len(dg) else grating
        resp = one.ophys.mean_response(
            by=("orientation",), window=(0.0, 2.0), baseline=(-1.0, 0.0), presentations=grating
        ).compute()
        mean = resp.squeeze()
        x = mean["orientation"].values
        ax.plot(x, mean.values, "o-", color="C1")
        ax.set_xticks(x)
        ax.set_xlabel("grating orientation (°)")
        ax.set_ylabel("mean ΔF/F, 0–2 s minus baseline")
        what = f"cell {cell}: drifting-grating response by orientation ({len(grating)} trials)"
    else:
        raise BadRequest("this experiment has neither image changes nor gratings to respond to")
    ax.set_title(_title(rel, path, what), fontsize=9)
    return PlotImage(_png(fig), reads())


def _time_dim(da: xr.DataArray) -> str:
    return next(d for d in da.dims if "time" in d or "offset" in d)


# -- ecephys ---------------------------------------------------------------------------------
def draw_raster(rel: Release, path: str, query: Mapping[str, str]) -> PlotImage:
    """One unit's raster and PSTH around the presentations of one stimulus."""
    ds, reads = _open(rel, path)
    units = ds["unit_id"].values
    unit = int_param(query, "unit", int(units[0]), lo=-(2**62), hi=2**62)
    if unit not in set(units.tolist()):
        raise BadRequest(f"no unit_id {unit} in this session; it has {units.tolist()[:20]}")
    pres = _presentations(rel, path, ds, "ecephys")
    names = pres["stimulus_name"].astype("string").dropna()
    default = names.value_counts().index[0] if len(names) else ""
    stimulus = text_param(query, "stimulus", str(default))
    chosen = pres[pres["stimulus_name"].astype("string") == stimulus]
    if chosen.empty:
        raise BadRequest(
            f"no presentations of stimulus {stimulus!r}; stimuli: {sorted(set(names))}"
        )
    chosen = chosen.iloc[:MAX_PRESENTATIONS]
    duration = float(np.nanmedian(chosen["stop_time"] - chosen["start_time"]))
    pre, post = 0.1 * max(duration, 0.25), 1.2 * max(duration, 0.25)
    ids = chosen.index.to_numpy()
    spikes = ds.ecephys.presentationwise_spike_times(ids, [unit])
    edges = np.linspace(-pre, post, 41)
    counts = ds.ecephys.presentationwise_spike_counts(edges, ids, [unit]).compute()
    rate = counts.mean("stimulus_presentation_id").squeeze() / np.diff(edges)
    row = {p: k for k, p in enumerate(ids)}
    onset = chosen["start_time"]
    fig = _figure(4.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    rel_t = spikes.index.to_numpy() - onset.loc[spikes["stimulus_presentation_id"]].to_numpy()
    keep = (rel_t >= -pre) & (rel_t <= post)
    y = spikes["stimulus_presentation_id"].map(row).to_numpy()
    top.plot(rel_t[keep], y[keep], "|", ms=3, color="k")
    top.set_ylabel("presentation")
    top.axvline(0, color="C3", lw=0.8)
    top.set_title(
        _title(rel, path, f"unit {unit} · {stimulus} · {len(ids)} presentations"), fontsize=9
    )
    centres = (edges[:-1] + edges[1:]) / 2
    bottom.bar(centres, rate.values, width=np.diff(edges), color="C0", align="center")
    bottom.axvline(0, color="C3", lw=0.8)
    bottom.set_ylabel("spikes/s")
    bottom.set_xlabel("time from stimulus onset (s)")
    return PlotImage(_png(fig), reads())


# -- ccf -------------------------------------------------------------------------------------
def _ontology_path(rel: Release, path: str) -> str:
    sibling = path.rsplit("/", 1)[0] + "/structures"
    if rel.record.datasets.get(sibling, {}).get("kind") == "ccf_structures":
        return sibling
    found = [p for p, d in rel.record.datasets.items() if d.get("kind") == "ccf_structures"]
    if not found:
        raise BadRequest(f"release {rel.pin} has no CCF ontology (ccf_structures) to name areas")
    return sorted(found)[0]


def draw_slice(rel: Release, path: str, query: Mapping[str, str]) -> PlotImage:
    """A coronal slice of an annotation volume, one structure (and its descendants) highlighted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = rel.open_datatree(path)
    levels = ccf.levels(tree)  # resolution -> group, finest first
    group = next(
        (g for r, g in levels.items() if tree[g].sizes["dv"] * tree[g].sizes["lr"] <= 1_000_000),
        list(levels.values())[-1],
    )
    ds, reads = _open(rel, path, group=group.strip("/"))
    if "annotation" not in ds:
        raise BadRequest(f"{path} is not an annotation volume (its variables: {list(ds)})")
    onto_ds, _ = _open(rel, _ontology_path(rel, path))
    onto = ccf.Ontology(onto_ds)
    default = "VISp" if "VISp" in onto else onto.acronym(int(onto.ids[0]))
    structure = text_param(query, "structure", default)
    if structure not in onto:
        raise BadRequest(f"no structure {structure!r} in the ontology of {rel.pin}")
    ap = ds["ap"].values
    position = float_param(query, "ap", None, lo=float(ap[0]), hi=float(ap[-1]))
    extra = 0
    if position is None:  # the plane where the structure is largest, on the coarsest level
        coarse, coarse_reads = _open(rel, path, group=list(levels.values())[-1].strip("/"))
        area = ccf.structure_mask(coarse, structure, ontology=onto).sum(("dv", "lr")).compute()
        position = float(area["ap"].values[int(area.values.argmax())])
        extra = coarse_reads()
    i = int(np.abs(ap - position).argmin())
    plane = ds.isel(ap=[i]).compute()  # the plane's chunks, read once
    labels = plane["annotation"].values[0]
    mask = np.asarray(ccf.structure_mask(plane, structure, ontology=onto))[0]
    ids = np.asarray(onto.ids)
    order = np.argsort(ids)
    rgb = np.asarray(onto_ds["rgb_triplet"].values, float)[order] / 255.0
    where = np.clip(np.searchsorted(ids[order], labels), 0, len(ids) - 1)
    colour = np.where((ids[order][where] == labels)[..., None], rgb[where], 1.0)
    colour[labels == 0] = 1.0
    shown = 0.35 * colour + 0.65  # the rest faded
    shown[mask] = colour[mask] * 0.4 + np.array([0.85, 0.1, 0.1]) * 0.6
    fig = _figure(4.2)
    ax = fig.subplots()
    extent = (
        float(ds["lr"].values[0]),
        float(ds["lr"].values[-1]),
        float(ds["dv"].values[-1]),
        float(ds["dv"].values[0]),
    )
    ax.imshow(shown, extent=extent, interpolation="nearest")
    ax.set_xlabel("left–right (µm)")
    ax.set_ylabel("dorsal–ventral (µm)")
    name = onto.name(structure)
    what = (
        f"{onto.acronym(structure)} ({name}) at AP {ap[i]:g} µm · {int(mask.sum())} voxels"
        f" · {group.strip('/')}"
    )
    ax.set_title(_title(rel, path, what), fontsize=9)
    return PlotImage(_png(fig), reads() + extra)


# -- cell types ------------------------------------------------------------------------------
def draw_sweep(rel: Release, path: str, query: Mapping[str, str]) -> PlotImage:
    """One sweep's stimulus and response (at most :data:`MAX_SWEEP_SECONDS` of it)."""
    ds, reads = _open(rel, path)
    numbers = ds.celltypes.get_sweep_numbers()
    n = int_param(query, "sweep", int(numbers[0]), lo=0, hi=10**9)
    if n not in numbers:
        raise BadRequest(f"no sweep {n} in this specimen; sweeps: {numbers}")
    sweep = ds.celltypes.sweep(n)
    rate = float(sweep.attrs["sampling_rate"])
    sweep = sweep.isel(time=slice(0, int(MAX_SWEEP_SECONDS * rate))).compute()
    step = max(1, sweep.sizes["time"] // 20000)  # drawn points, not read samples
    part = sweep.isel(time=slice(None, None, step))
    fig = _figure(4.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    top.plot(part["time"], part["response"] * 1e3, lw=0.6, color="k")
    top.set_ylabel("response (mV)")
    top.set_title(
        _title(rel, path, f"sweep {n} · {sweep.attrs['stimulus_name']} · {rate / 1e3:g} kHz"),
        fontsize=9,
    )
    bottom.plot(part["time"], part["stimulus"] * 1e12, lw=0.6, color="C0")
    bottom.set_ylabel("stimulus (pA)")
    bottom.set_xlabel("time (s)")
    return PlotImage(_png(fig), reads())


PLOTS: dict[str, Plot] = {
    p.name: p
    for p in [
        Plot(
            "dff",
            "ΔF/F with stimulus epochs",
            ("ophys_experiment",),
            (("cells", "cell_specimen_ids, comma-separated"), ("t0", "from (s)"), ("t1", "to (s)")),
            draw_dff,
        ),
        Plot(
            "response",
            "a cell's change / grating response",
            ("ophys_experiment",),
            (("cells", "cell_specimen_id"),),
            draw_response,
        ),
        Plot(
            "raster",
            "unit raster and PSTH",
            ("ecephys_session",),
            (("unit", "unit_id"), ("stimulus", "stimulus_name")),
            draw_raster,
        ),
        Plot(
            "slice",
            "CCF slice, structure highlighted",
            ("ccf_volume",),
            (("structure", "structure acronym"), ("ap", "anterior-posterior (µm)")),
            draw_slice,
        ),
        Plot(
            "sweep",
            "Cell Types sweep",
            ("celltypes_ephys",),
            (("sweep", "sweep number"),),
            draw_sweep,
        ),
    ]
}


def plots_for(kind: str | None, path: str) -> list[Plot]:
    """The plots a dataset of ``kind`` offers (a CCF slice only for annotation volumes)."""
    out = [p for p in PLOTS.values() if kind in p.kinds]
    if kind == "ccf_volume" and not path.endswith("annotation"):
        out = []
    return out


def render(rel: Release, path: str, plot: str, query: Mapping[str, str]) -> PlotImage:
    """Draw plot ``plot`` of dataset ``path``; :class:`BadRequest` for what does not fit."""
    spec = PLOTS.get(plot)
    if spec is None or spec not in plots_for(rel.kind(path), path):
        raise BadRequest(f"no plot {plot[:40]!r} for dataset {path} (kind {rel.kind(path)})")
    with _LOCK:
        return spec.draw(rel, path, query)
