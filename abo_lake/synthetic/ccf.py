"""Seeded CCF volumes, ontology and Mouse Connectivity experiments in Allen's NRRD layouts.

The anatomy is a deterministic cartoon of the mouse brain defined in µm (``ALLEN_DATA.md`` §4):
an ellipsoid split recursively among real structures of the CCF ontology (grey matter →
cerebrum → isocortex → visual areas → layers, hippocampus, striatum, thalamus, midbrain,
hindbrain, cerebellum, a fibre-tract sheet and the ventricles). Each rule relabels only voxels
still labelled with an ontology ancestor, so every structure lies inside its parent. The left
half (LR index < n_lr / 2) is computed and mirrored, so hemispheres are exact mirror images.
Labels are sampled at voxel centres ``(i + 0.5) * resolution``; every resolution samples the
same geometry.

Volumes are written as Allen ships them: gzip NRRD, ``space directions`` = diag(resolution),
``space: left-posterior-superior`` and ``sizes`` = AP DV LR, so ``nrrd.read(path)`` (pynrrd's
default ``index_order="F"``, as AllenSDK calls it) returns an array indexed ``[ap, dv, lr]``.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from abo_lake.sources.ccf import CCF_SHAPES

__all__ = [
    "CCF_SHAPES",
    "annotation_volume",
    "load_ontology",
    "template_volume",
    "write_ccf",
    "write_connectivity",
]

_EXTENT_UM = (13200.0, 8000.0, 11400.0)
_MIDLINE_UM = _EXTENT_UM[2] / 2
_DEFAULT_RESOLUTIONS = {"tiny": (100,), "realistic": (25, 100)}
_DEFAULT_CONNECTIVITY_RESOLUTION = {"tiny": 100, "realistic": 25}
_SLAB_VOXELS = 2_000_000

# Brain ellipsoid (centre, radii) in µm; m is the distance from the midline.
_BRAIN_C = (6600.0, 4300.0, 0.0)
_BRAIN_R = (6200.0, 3500.0, 5200.0)
_CTX_T = 0.28  # cortical thickness, in normalised depth 1 - r
_WM_T = 0.035  # fibre-tract sheet under the cortex
_LAYER_FRACTIONS = {"1": 0.10, "2/3": 0.22, "4": 0.13, "5": 0.22, "6a": 0.26, "6b": 0.07}


def _ellipsoid(g: _Grid, centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    """Normalised squared radius of (a, d, m) in an ellipsoid (< 1 inside)."""
    return (
        ((g.a - centre[0]) / radii[0]) ** 2
        + ((g.d - centre[1]) / radii[1]) ** 2
        + ((g.m - centre[2]) / radii[2]) ** 2
    )


class _Grid:
    """Sample points of one slab: AP, DV and distance from the midline, in µm."""

    def __init__(self, a: np.ndarray, d: np.ndarray, m: np.ndarray) -> None:
        self.a, self.d, self.m = a, d, m
        self.r = np.sqrt(_ellipsoid(self, _BRAIN_C, _BRAIN_R))
        self.depth = 1.0 - self.r  # 0 at the brain surface
        # the point of the brain surface above this voxel (radial projection): areas use it
        r = np.maximum(self.r, 1e-9)
        self.a_s = _BRAIN_C[0] + (a - _BRAIN_C[0]) / r
        self.m_s = m / r
        self.shell = (self.depth < _CTX_T) & (self.d < 5400)
        self.hpf = _ellipsoid(self, (7600.0, 2900.0, 2300.0), (1500.0, 1000.0, 1800.0))
        self.bs = _ellipsoid(self, (8800.0, 5400.0, 0.0), (3600.0, 2300.0, 3000.0)) < 1


Rule = tuple[str, str, Callable[[_Grid], np.ndarray]]

# Ordered: (acronym, acronym of the region it is carved from, predicate). A rule relabels only
# voxels whose current label is exactly the parent's id, so children nest inside parents.
_BASE_RULES: list[Rule] = [
    ("root", "", lambda g: g.r < 1),
    ("VL", "root", lambda g: _ellipsoid(g, (5200, 3300, 1300), (1300, 250, 350)) < 1),
    ("V4", "root", lambda g: _ellipsoid(g, (10800, 5200, 0), (600, 250, 300)) < 1),
    (
        "ccb",
        "root",
        lambda g: (
            (g.depth >= _CTX_T)
            & (g.depth < _CTX_T + _WM_T)
            & (g.d < 5000)
            & (g.a >= 2200)
            & (g.a < 10200)
        ),
    ),
    ("grey", "root", lambda g: np.ones_like(g.r, dtype=bool)),
    ("CB", "grey", lambda g: (g.a >= 10200) & (g.d < 4800)),
    ("BS", "grey", lambda g: g.bs | (g.a >= 10200)),
    ("CH", "grey", lambda g: np.ones_like(g.r, dtype=bool)),
    # cerebellum
    ("VERM", "CB", lambda g: g.m < 900),
    ("HEM", "CB", lambda g: np.ones_like(g.r, dtype=bool)),
    # brain stem
    ("IB", "BS", lambda g: g.a < 7600),
    ("MB", "BS", lambda g: g.a < 9400),
    ("HB", "BS", lambda g: np.ones_like(g.r, dtype=bool)),
    ("TH", "IB", lambda g: g.d < 5000),
    ("HY", "IB", lambda g: np.ones_like(g.r, dtype=bool)),
    ("LGd", "TH", lambda g: (g.m >= 1500) & (g.a >= 6400) & (g.d < 4600)),
    ("LP", "TH", lambda g: (g.m >= 500) & (g.a >= 6800) & (g.d < 4300)),
    ("VPM", "TH", lambda g: (g.m >= 700) & (g.d >= 4300)),
    ("SCs", "MB", lambda g: g.d < 3900),
    ("SCm", "MB", lambda g: g.d < 4500),
    ("MRN", "MB", lambda g: np.ones_like(g.r, dtype=bool)),
    ("P", "HB", lambda g: g.a < 10600),
    ("MY", "HB", lambda g: np.ones_like(g.r, dtype=bool)),
    # cerebrum
    ("OLF", "CH", lambda g: g.a < 2200),
    ("MOB", "OLF", lambda g: g.a < 1400),
    ("AON", "OLF", lambda g: np.ones_like(g.r, dtype=bool)),
    ("Isocortex", "CH", lambda g: g.shell),
    ("HPF", "CH", lambda g: g.hpf < 1),
    ("DG", "HPF", lambda g: g.hpf < 0.35),
    ("DG-sg", "DG", lambda g: g.hpf < 0.12),
    ("CA1", "HPF", lambda g: g.d < 2900),
    ("CA3", "HPF", lambda g: np.ones_like(g.r, dtype=bool)),
    ("CP", "CH", lambda g: (g.a < 6400) & (g.m >= 500) & (g.d < 5400)),
    ("ACB", "CH", lambda g: g.a < 4800),
    ("BLA", "CH", lambda g: (g.m >= 2600) & (g.d >= 4200)),
    ("GPe", "CH", lambda g: np.ones_like(g.r, dtype=bool)),
]

# Isocortical areas on the (AP, distance from midline) surface map; first match wins.
_AREAS: list[tuple[str, Callable[[_Grid], np.ndarray]]] = [
    ("RSPv", lambda g: (g.a_s >= 6000) & (g.m_s < 700)),
    ("MOs", lambda g: (g.a_s < 6000) & (g.m_s < 1200)),
    ("MOp", lambda g: (g.a_s < 4800) & (g.m_s < 2600)),
    ("VISam", lambda g: (g.a_s >= 7200) & (g.a_s < 8400) & (g.m_s < 1700)),
    ("VISpm", lambda g: (g.a_s >= 8400) & (g.m_s < 1700)),
    ("VISp", lambda g: (g.a_s >= 8400) & (g.m_s < 3400)),
    ("VISrl", lambda g: (g.a_s >= 7200) & (g.a_s < 8400) & (g.m_s < 2700)),
    ("VISal", lambda g: (g.a_s >= 7200) & (g.a_s < 8400) & (g.m_s < 3500)),
    ("VISl", lambda g: (g.a_s >= 8400) & (g.m_s < 4300)),
    ("SSp-ll", lambda g: (g.a_s < 7200) & (g.m_s < 2400)),
    ("SSp-bfd", lambda g: (g.a_s < 7200) & (g.m_s < 4300)),
    ("SSs", lambda g: g.a_s < 6000),
    ("AUDp", lambda g: np.ones_like(g.r, dtype=bool)),
]


def load_ontology() -> list[dict[str, Any]]:
    """Return the vendored real CCF structure ontology (840 nodes, structure graph 1)."""
    text = resources.files("abo_lake.synthetic").joinpath("data/structures.json").read_text()
    return json.loads(text)


def _rules() -> list[tuple[int, int, Callable[[_Grid], np.ndarray]]]:
    """The anatomy rules as (id, parent id, predicate), checked against the ontology."""
    nodes = load_ontology()
    ids = {n["acronym"]: n["id"] for n in nodes}
    paths = {n["id"]: n["structure_id_path"] for n in nodes}
    rules: list[Rule] = list(_BASE_RULES)
    for area, pred in _AREAS:
        rules.append((area, "Isocortex", pred))
        layers = [s for s in _LAYER_FRACTIONS if f"{area}{s}" in ids]
        total = sum(_LAYER_FRACTIONS[s] for s in layers)
        top = 0.0
        for i, s in enumerate(layers):
            top += _LAYER_FRACTIONS[s] / total
            bound = _CTX_T * (top if i < len(layers) - 1 else 2.0)
            rules.append((f"{area}{s}", area, lambda g, b=bound: g.depth < b))
    out = []
    for acronym, parent, pred in rules:
        sid = ids[acronym]
        pid = ids[parent] if parent else 0
        if parent and pid not in paths[sid][:-1]:
            raise AssertionError(f"anatomy rule {acronym!r} is carved from a non-ancestor")
        out.append((sid, pid, pred))
    return out


def _slabs(n_ap: int, plane: int) -> list[slice]:
    step = max(1, _SLAB_VOXELS // plane)
    return [slice(i, min(i + step, n_ap)) for i in range(0, n_ap, step)]


def annotation_volume(resolution: int) -> np.ndarray:
    """Return the synthetic annotation (uint32 structure ids, 0 outside) as [ap, dv, lr].

    Parameters
    ----------
    resolution
        Voxel size in µm, one of :data:`CCF_SHAPES`.

    Returns
    -------
    numpy.ndarray
        uint32, shape ``CCF_SHAPES[resolution]``; mirror-symmetric along LR.
    """
    n_ap, n_dv, n_lr = _shape(resolution)
    half = n_lr // 2
    centres = [(np.arange(n) + 0.5) * resolution for n in (n_ap, n_dv, half)]
    m = np.abs(centres[2] - _MIDLINE_UM)
    rules = _rules()
    out = np.zeros((n_ap, n_dv, n_lr), dtype=np.uint32)
    for sl in _slabs(n_ap, n_dv * half):
        g = _Grid(centres[0][sl, None, None], centres[1][None, :, None], m[None, None, :])
        label = np.zeros(g.r.shape, dtype=np.uint32)
        for sid, pid, pred in rules:
            sel = label == pid
            if sel.any():
                label[sel & pred(g)] = sid
        out[sl, :, :half] = label
        out[sl, :, half:] = label[:, :, ::-1]
    return out


def template_volume(annotation: np.ndarray, resolution: int, seed: int = 0) -> np.ndarray:
    """Return an average-template-like uint16 volume for ``annotation``.

    Intensity per structure, plus a smooth variation and Gaussian noise, all seeded.
    """
    rng = np.random.default_rng([seed, resolution, 1])
    ids = np.unique(annotation)
    levels = rng.uniform(120.0, 420.0, size=ids.size)
    levels[ids == 0] = 8.0
    fibre = np.isin(ids, [_id("ccb")])
    levels[fibre] = 520.0
    lut_idx = np.searchsorted(ids, annotation)
    n_ap, n_dv, n_lr = annotation.shape
    waves = rng.uniform(0.5, 2.0, size=(3, 2))
    out = np.empty(annotation.shape, dtype=np.uint16)
    centres = [(np.arange(n) + 0.5) * resolution / e for n, e in zip(annotation.shape, _EXTENT_UM)]
    smooth = [
        1.0 + 0.08 * np.cos(2 * np.pi * waves[k, 0] * c + waves[k, 1])
        for k, c in enumerate(centres)
    ]
    for sl in _slabs(n_ap, n_dv * n_lr):
        vals = levels[lut_idx[sl]].astype(np.float32)
        vals *= smooth[0][sl, None, None] * smooth[1][None, :, None] * smooth[2][None, None, :]
        vals += rng.standard_normal(vals.shape, dtype=np.float32) * 12.0
        out[sl] = np.clip(np.rint(vals), 0, 65535).astype(np.uint16)
    return out


def _shape(resolution: int) -> tuple[int, int, int]:
    if resolution not in CCF_SHAPES:
        raise ValueError(
            f"unknown CCF resolution {resolution!r} µm; choose one of {sorted(CCF_SHAPES)}"
        )
    return CCF_SHAPES[resolution]


def _id(acronym: str) -> int:
    return next(n["id"] for n in load_ontology() if n["acronym"] == acronym)


def _write_nrrd(path: Path, data: np.ndarray, resolution: int) -> Path:
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([float(resolution)] * 3),
        "space origin": np.zeros(3),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        "endian": "little",
    }
    buf = io.BytesIO()
    nrrd.write(buf, data, header, compression_level=6, index_order="F")
    raw = buf.getvalue()
    # pynrrd stamps the write time into a comment; pin it so equal seeds give equal files
    end = raw.index(b"\n\n")
    head = re.sub(rb"# on [^\n]*\(GMT\)\.", b"# on 1970-01-01 00:00:00(GMT).", raw[:end])
    path.write_bytes(head + raw[end:])
    return path


def write_ccf(
    out_dir: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    resolutions: list[int] | tuple[int, ...] | None = None,
) -> list[Path]:
    """Write ``annotation_<res>.nrrd``, ``average_template_<res>.nrrd`` and ``structures.json``.

    Parameters
    ----------
    out_dir
        Folder to write into (created if needed).
    scale
        ``"tiny"`` (100 µm) or ``"realistic"`` (25 and 100 µm).
    seed
        Seeds the template intensities and noise; the annotation does not depend on it.
    resolutions
        Override the resolutions (µm) to write, e.g. ``[50, 100]``.

    Returns
    -------
    list of Path
        The files written.

    Examples
    --------
    >>> files = write_ccf(tmp_path)  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res_list = tuple(resolutions) if resolutions else _DEFAULT_RESOLUTIONS[scale]
    written = []
    for res in res_list:
        ann = annotation_volume(res)
        written.append(_write_nrrd(out / f"annotation_{res}.nrrd", ann, res))
        tpl = template_volume(ann, res, seed=seed)
        written.append(_write_nrrd(out / f"average_template_{res}.nrrd", tpl, res))
    src = resources.files("abo_lake.synthetic").joinpath("data/structures.json")
    with resources.as_file(src) as p:
        written.append(Path(shutil.copyfile(p, out / "structures.json")))
    return written


# source acronym -> [(target acronym, ipsilateral strength, contralateral strength)]
_PROJECTIONS: dict[str, list[tuple[str, float, float]]] = {
    "VISp": [
        ("VISl", 0.8, 0.15),
        ("VISal", 0.6, 0.1),
        ("VISam", 0.5, 0.1),
        ("VISpm", 0.5, 0.1),
        ("LP", 0.7, 0.02),
        ("LGd", 0.5, 0.02),
        ("CP", 0.35, 0.03),
        ("SCs", 0.6, 0.03),
        ("VISp", 0.0, 0.2),
    ],
    "MOp": [
        ("MOs", 0.7, 0.15),
        ("SSp-ll", 0.6, 0.1),
        ("SSp-bfd", 0.4, 0.05),
        ("CP", 0.8, 0.2),
        ("VPM", 0.3, 0.02),
        ("MRN", 0.3, 0.02),
        ("P", 0.4, 0.02),
        ("MOp", 0.0, 0.25),
    ],
    "SSp-bfd": [
        ("MOp", 0.5, 0.05),
        ("SSs", 0.7, 0.1),
        ("VPM", 0.8, 0.02),
        ("CP", 0.5, 0.05),
        ("SCm", 0.3, 0.02),
        ("SSp-bfd", 0.0, 0.2),
    ],
    "VISl": [
        ("VISp", 0.7, 0.1),
        ("VISal", 0.5, 0.1),
        ("LP", 0.6, 0.02),
        ("CP", 0.3, 0.02),
        ("SCs", 0.3, 0.02),
        ("VISl", 0.0, 0.2),
    ],
}
_LINES = ["", "Rbp4-Cre_KL100", "Cux2-IRES-Cre", "Tlx3-Cre_PL56", "Sim1-Cre_KJ18"]
_INJECTION_RADIUS_UM = 450.0


class _Atlas:
    """An annotation volume with fast structure masks (a structure and its descendants)."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self.annotation = annotation_volume(resolution)
        self.nodes = {n["acronym"]: n for n in load_ontology()}
        # every voxel holds 0 or a rule's id: those ids sorted, and each voxel's index among
        # them (np.unique(return_inverse=True) sorts every voxel: 14 s instead of 1 s at 25 µm)
        ids = sorted({0, *(sid for sid, _, _ in _rules())})
        self.labels = np.array(ids, dtype=self.annotation.dtype)
        self.inv = np.searchsorted(self.labels, self.annotation)
        self.right = np.arange(self.annotation.shape[2]) >= round(self.annotation.shape[2] / 2)

    def mask(self, acronym: str) -> np.ndarray:
        sid = self.nodes[acronym]["id"]
        sub = [n["id"] for n in self.nodes.values() if sid in n["structure_id_path"]]
        return np.isin(self.labels, sub)[self.inv]


def _blob(
    atlas: _Atlas, region: np.ndarray, sigma_um: float, centre: np.ndarray | None = None
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Voxels of ``region``, a Gaussian falloff around ``centre`` (default: the medoid), centre."""
    idx = np.nonzero(region)
    pts = np.stack(idx, axis=1).astype(np.float64)
    if centre is None:
        centre = pts[np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1))]
    dist2 = (((pts - centre) * atlas.resolution) ** 2).sum(axis=1)
    return idx, np.exp(-dist2 / (2 * sigma_um**2)), centre


def _experiment(atlas: _Atlas, exp_id: int, source: str, rng: np.random.Generator) -> dict:
    """The four volumes and the metadata of one synthetic experiment."""
    shape = atlas.annotation.shape
    res = atlas.resolution
    inj_density = np.zeros(shape, dtype=np.float32)
    proj = np.zeros(shape, dtype=np.float32)
    src_region = atlas.mask(source) & atlas.right[None, None, :]
    idx, fall, centre = _blob(atlas, src_region, _INJECTION_RADIUS_UM / 2)
    inside = fall > np.exp(-2.0)  # within the injection radius
    idx_in = tuple(i[inside] for i in idx)
    inj_density[idx_in] = np.clip(fall[inside] * rng.uniform(0.85, 1.0), 0, 1)
    inj_fraction = np.clip(inj_density * 4.0, 0, 1).astype(np.float32)
    targets = []
    for target, ipsi, contra in _PROJECTIONS[source]:
        scale = rng.uniform(0.8, 1.0)
        for side, strength in ((atlas.right, ipsi), (~atlas.right, contra)):
            if strength <= 0:
                continue
            region = atlas.mask(target) & side[None, None, :]
            if target == source:
                region &= inj_density == 0
            t_idx, t_fall, _ = _blob(atlas, region, 600.0)
            noise = rng.uniform(0.7, 1.0, size=t_fall.size)
            vals = strength * scale * (0.25 + 0.75 * t_fall) * noise
            proj[t_idx] = np.maximum(proj[t_idx], vals.astype(np.float32))
        targets.append((target, round(ipsi * scale, 4), round(contra * scale, 4)))
    np.maximum(proj, inj_density, out=proj)
    mask = np.ones(shape, dtype=np.float32)
    # two missing coronal sections (not through the injection)
    for _ in range(2):
        a0 = int(rng.integers(0, shape[0] - 2))
        if abs(a0 - centre[0]) * res > 2 * _INJECTION_RADIUS_UM:
            mask[a0 : a0 + max(1, 100 // res)] = 0
    proj *= mask
    n = atlas.nodes[source]
    vox_mm3 = (res / 1000.0) ** 3
    inj_ids = np.unique(atlas.annotation[inj_density > 0]).tolist()
    centre_um = [float(c * res) for c in centre]
    line = _LINES[int(rng.integers(len(_LINES)))]
    meta = {
        "id": exp_id,
        "structure_id": n["id"],
        "structure_abbrev": source,
        "structure_name": n["name"],
        "primary_injection_structure": n["id"],
        "injection_structures": [int(i) for i in inj_ids],
        "injection_volume": round(float(inj_fraction.sum()) * vox_mm3, 6),
        "injection_x": centre_um[0],
        "injection_y": centre_um[1],
        "injection_z": centre_um[2],
        "injection_hemisphere_id": 2,
        "transgenic_line": line,
        "product_id": 5 if line else 35,
        "strain": "C57BL/6J",
        "gender": "M" if rng.integers(2) else "F",
        "specimen_name": f"{line or 'C57BL/6J'}-{exp_id % 100000}",
        "resolution_um": res,
        "target_structure_acronyms": [t[0] for t in targets],
        "target_structure_ids": [atlas.nodes[t[0]]["id"] for t in targets],
        "target_strength_ipsi": [t[1] for t in targets],
        "target_strength_contra": [t[2] for t in targets],
    }
    return {
        "projection_density": proj,
        "injection_density": inj_density,
        "injection_fraction": inj_fraction,
        "data_mask": mask,
        "metadata": meta,
    }


def write_connectivity(
    out_dir: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    n_experiments: int = 2,
    resolution: int | None = None,
) -> list[Path]:
    """Write Mouse Connectivity experiments: ``experiment_<id>/<volume>_<res>.nrrd`` + metadata.

    Each experiment injects one real source structure (VISp, MOp, SSp-bfd, VISl in turn) in the
    right hemisphere and projects into real targets of the :func:`annotation_volume` anatomy,
    ipsilateral stronger than contralateral. ``metadata.json`` holds the Allen experiment
    fields plus the ground truth (``target_structure_acronyms``, strengths).

    Parameters
    ----------
    out_dir
        Folder to write into (created if needed).
    scale
        ``"tiny"`` (100 µm) or ``"realistic"`` (25 µm).
    seed
        Seed of ``np.random.default_rng``.
    n_experiments
        How many experiments to write.
    resolution
        Override the resolution (µm).

    Returns
    -------
    list of Path
        The files written (four NRRD volumes and a ``metadata.json`` per experiment).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = resolution or _DEFAULT_CONNECTIVITY_RESOLUTION[scale]
    atlas = _Atlas(res)
    rng = np.random.default_rng(seed)
    sources = list(_PROJECTIONS)
    exp_ids: list[int] = []
    while len(exp_ids) < n_experiments:
        exp_ids = sorted({*exp_ids, int(rng.integers(100_000_000, 700_000_000))})
    written = []
    for k, exp_id in enumerate(exp_ids):
        exp = _experiment(atlas, int(exp_id), sources[k % len(sources)], rng)
        folder = out / f"experiment_{exp_id}"
        folder.mkdir(exist_ok=True)
        for name in ("projection_density", "injection_density", "injection_fraction", "data_mask"):
            written.append(_write_nrrd(folder / f"{name}_{res}.nrrd", exp[name], res))
        meta_path = folder / "metadata.json"
        meta_path.write_text(json.dumps(exp["metadata"], indent=1))
        written.append(meta_path)
    return written
