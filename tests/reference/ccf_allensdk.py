"""AllenSDK 2.16.2's structure masks, point lookups and unionizes on CCF NRRD files.

Two uses, one file:

- ``measure`` (run with AllenSDK's Python, e.g. ``/tmp/allensdk-venv/bin/python``): load the
  NRRD files and compute one result with AllenSDK's own code, timing the load and the compute
  separately; prints one JSON line (times, peak RSS) and saves the result to ``--out`` (.npz).
  ``tests/benchmarks/bench_ccf_allensdk.py`` runs it in a subprocess beside the lake.
- ``make`` (run with the project's Python): synthesise the tiny CCF (100 µm) and one
  connectivity experiment (the first of the test's two), run ``measure`` for each result under
  AllenSDK's Python and write the small reference ``tests/reference/ccf_allensdk_100um.npz``
  that ``tests/test_ccf.py`` compares the lake with (CI needs no AllenSDK)::

      .venv/bin/python tests/reference/ccf_allensdk.py make [--allensdk PYTHON]

AllenSDK's calls: ``ReferenceSpace(StructureTree(nodes), annotation, [r, r, r])
.make_structure_mask(ids)``; points: ``rsp.annotation[tuple(floor(p / resolution).T)]`` (AllenSDK
has no point lookup, users index the annotation); unionize: the ``TissuecyteUnionizer`` steps of
``allensdk.internal.mouse_connectivity.interval_unionize.run_tissuecyte_unionize_classic.run``
on the downloadable grids, with the lake's stand-ins for the grids they lack (one pixel per
voxel, energies and intensities = densities, no AAV exclusion; see ``abo_lake.ccf.unionize``).

Only numpy and the standard library are imported at module level: AllenSDK's venv does not
have abo_lake.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "ccf_allensdk_100um.npz"
ALLENSDK_PYTHON = "/tmp/allensdk-venv/bin/python"
#: the structures of the committed mask references (Isocortex with descendants first)
MASK_STRUCTURES = (315, 385, 672)  # Isocortex, VISp, CP
#: unionize record columns, AllenSDK's names
UNIONIZE_COLUMNS = (
    "hemisphere_id", "structure_id", "is_injection", "sum_pixels", "sum_projection_pixels",
    "sum_pixel_intensity", "sum_projection_pixel_intensity", "projection_density",
    "projection_energy", "projection_intensity", "volume", "projection_volume",
    "normalized_projection_volume", "max_voxel_density", "max_voxel_x", "max_voxel_y",
    "max_voxel_z",
)  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ``ru_maxrss``, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def mask_digest(mask: np.ndarray) -> str:
    """sha256 of the mask's bits packed along the last axis (C order): equal iff equal masks."""
    return hashlib.sha256(np.packbits(np.asarray(mask, dtype=bool), axis=-1).tobytes()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (the reference records its inputs)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _structure_tree(structures: str) -> object:
    from allensdk.core.structure_tree import StructureTree

    nodes = json.loads(Path(structures).read_text())
    return StructureTree(nodes)


def _read(path: Path) -> np.ndarray:
    import nrrd

    return np.ascontiguousarray(nrrd.read(str(path))[0])


def _measure_mask(args: argparse.Namespace) -> tuple[dict, dict]:
    from allensdk.core.reference_space import ReferenceSpace

    base = peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    annotation = _read(args.annotation)
    tree = _structure_tree(args.structures)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    rsp = ReferenceSpace(tree, annotation, [args.resolution] * 3)
    masks = [rsp.make_structure_mask([sid]) for sid in args.structure_id]
    t_compute = time.perf_counter() - t0
    cpu = time.process_time() - c0
    out = {}
    for sid, mask in zip(args.structure_id, masks):
        out[f"mask_{sid}_packed"] = np.packbits(mask.astype(bool), axis=-1)
    info = {
        "load_s": t_load,
        "compute_s": t_compute,
        "cpu_s": cpu,
        "voxels": [int(np.count_nonzero(m)) for m in masks],
        "digests": [mask_digest(m) for m in masks],
        "shape": list(annotation.shape),
        "base_rss_mb": base,
    }
    return info, out


def _measure_points(args: argparse.Namespace) -> tuple[dict, dict]:
    from allensdk.core.reference_space import ReferenceSpace

    points = np.load(args.points)
    base = peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    annotation = _read(args.annotation)
    tree = _structure_tree(args.structures)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    rsp = ReferenceSpace(tree, annotation, [args.resolution] * 3)
    idx = np.floor(points / np.asarray(rsp.resolution, dtype=np.float64)).astype(np.int64)
    ids = rsp.annotation[idx[:, 0], idx[:, 1], idx[:, 2]]
    t_compute = time.perf_counter() - t0
    cpu = time.process_time() - c0
    info = {
        "load_s": t_load,
        "compute_s": t_compute,
        "cpu_s": cpu,
        "n_points": len(points),
        "base_rss_mb": base,
    }
    return info, {"points_um": points, "structure_id": ids.astype(np.int64)}


def _grid(folder: Path, name: str) -> Path:
    (path,) = folder.glob(f"{name}_*.nrrd")
    return path


def _measure_unionize(args: argparse.Namespace) -> tuple[dict, dict]:
    from allensdk.core.simple_tree import SimpleTree  # noqa: F401 (used by the map)
    from allensdk.internal.mouse_connectivity.interval_unionize import data_utilities as du
    from allensdk.internal.mouse_connectivity.interval_unionize.run_tissuecyte_unionize_classic import (  # noqa: E501
        get_ancestor_id_map,
        get_volume_scale,
    )
    from allensdk.internal.mouse_connectivity.interval_unionize.tissuecyte_unionizer import (
        TissuecyteUnionizer,
    )

    exp = Path(args.experiment)
    meta = json.loads((exp / "metadata.json").read_text())
    nodes = json.loads(Path(args.structures).read_text())
    for node in nodes:  # the API's parent field, from the id path
        path = node["structure_id_path"]
        node["parent_structure_id"] = path[-2] if len(path) > 1 else None
    res = float(args.resolution)
    base = peak_rss_mb()
    # run_tissuecyte_unionize_classic.run, step by step: its reads, then its computation
    t0, c0 = time.perf_counter(), time.process_time()
    annotation = du.load_annotation(str(args.annotation), str(_grid(exp, "data_mask")))
    inj_fraction = du.read(str(_grid(exp, "injection_fraction")))
    inj_density = du.read(str(_grid(exp, "injection_density")))
    proj_density = du.read(str(_grid(exp, "projection_density")))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ancestor_id_map = get_ancestor_id_map(nodes)
    volume_scale = get_volume_scale(res, res)  # one pixel per voxel
    shape = annotation.shape
    unionizer = TissuecyteUnionizer()
    unionizer.setup_interval_map(annotation)
    del annotation
    signal_arrays = {
        "injection_fraction": inj_fraction,
        "injection_density": inj_density,
        "injection_energy": inj_density,
        "projection_density": proj_density,
        "projection_energy": proj_density,
        "aav_exclusion_fraction": np.zeros(shape, dtype=bool),
        "sum_pixels": np.ones(shape, dtype=np.float32),
        "sum_pixel_intensities": proj_density,
        "injection_sum_pixel_intensities": inj_density,
    }
    for k, v in signal_arrays.items():
        signal_arrays[k] = v.flat[unionizer.sort]
    raw = unionizer.direct_unionize(signal_arrays, pre_sorted=True)
    raw = TissuecyteUnionizer.propagate_unionizes(raw, ancestor_id_map)
    bilateral = TissuecyteUnionizer.propagate_to_bilateral(raw)
    kwargs = {
        "image_series_id": meta["id"],
        "output_spacing_iso": res,
        "volume_scale": volume_scale,
        "target_shape": shape,
        "sort": unionizer.sort,
    }
    records = list(unionizer.postprocess_unionizes(raw, **kwargs))
    for item in unionizer.postprocess_unionizes(bilateral, **kwargs):
        item["hemisphere_id"] = 3
        records.append(item)
    t_compute = time.perf_counter() - t0
    cpu = time.process_time() - c0
    records.sort(key=lambda r: (r["hemisphere_id"], r["structure_id"], r["is_injection"]))
    out = {c: np.array([r[c] for r in records], dtype=np.float64) for c in UNIONIZE_COLUMNS}
    out["experiment_id"] = np.array(meta["id"], dtype=np.int64)
    info = {
        "load_s": t_load,
        "compute_s": t_compute,
        "cpu_s": cpu,
        "n_records": len(records),
        "base_rss_mb": base,
    }
    return info, out


def measure(args: argparse.Namespace) -> None:
    """Run one AllenSDK measurement; print its JSON line, save its arrays to ``args.out``."""
    run = {"mask": _measure_mask, "points": _measure_points, "unionize": _measure_unionize}
    info, arrays = run[args.what](args)
    info["peak_rss_mb"] = peak_rss_mb()
    np.savez_compressed(args.out, **arrays)
    print(json.dumps(info), flush=True)


def run_allensdk(python: str, what: str, out: Path, **options: object) -> dict:
    """``measure`` one result in a subprocess of AllenSDK's Python; its JSON line as a dict."""
    cmd = [python, str(Path(__file__).resolve()), "measure", what, "--out", str(out)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list | tuple) else [value]
        cmd += [flag, *(str(v) for v in values)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"AllenSDK's {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sample_points(annotation: np.ndarray, resolution: float, n: int, seed: int) -> np.ndarray:
    """``n`` seeded points (µm) in labelled voxels, anywhere inside each voxel."""
    rng = np.random.default_rng(seed)
    inside = np.flatnonzero(annotation)
    flat = rng.choice(inside, size=n, replace=False)
    idx = np.stack(np.unravel_index(flat, annotation.shape), axis=1).astype(np.float64)
    return (idx + rng.uniform(0.0, 0.999, size=idx.shape)) * resolution


def make(args: argparse.Namespace) -> None:
    """Synthesise the tiny sources, compute AllenSDK's results, write :data:`REFERENCE`."""
    from abo_lake.synthetic import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        synthesize("ccf", src)
        synthesize("connectivity", src / "conn", n_experiments=2)  # as tests/test_ccf.py
        exp = sorted((src / "conn").glob("experiment_*"))[0]
        annotation, structures = src / "annotation_100.nrrd", src / "structures.json"
        points = sample_points(_read(annotation), 100.0, 1000, seed=20)
        np.save(src / "points.npy", points)
        common = {"annotation": annotation, "structures": structures, "resolution": 100}
        mask = run_allensdk(
            args.allensdk, "mask", src / "mask.npz", structure_id=MASK_STRUCTURES, **common
        )
        points_npy = src / "points.npy"
        run_allensdk(args.allensdk, "points", src / "points.npz", points=points_npy, **common)
        run_allensdk(args.allensdk, "unionize", src / "unionize.npz", experiment=exp, **common)
        arrays: dict[str, np.ndarray] = {}
        for part in ("mask", "points", "unionize"):
            with np.load(src / f"{part}.npz") as z:
                arrays |= {(k if part != "unionize" else f"unionize_{k}"): z[k] for k in z.files}
        inputs = {
            "annotation_100.nrrd": file_digest(annotation),
            "structures.json": file_digest(structures),
            **{f"conn/{exp.name}/{p.name}": file_digest(p) for p in sorted(exp.iterdir())},
        }
        arrays["mask_structure_id"] = np.array(MASK_STRUCTURES, dtype=np.int64)
        arrays["mask_voxels"] = np.array(mask["voxels"], dtype=np.int64)
        arrays["mask_digest"] = np.array(mask["digests"])
        arrays["inputs"] = np.array(json.dumps(inputs, sort_keys=True))
        np.savez_compressed(REFERENCE, **arrays)
    size = REFERENCE.stat().st_size
    voxels = dict(zip(MASK_STRUCTURES, mask["voxels"]))
    print(f"wrote {REFERENCE} ({size / 1024:.0f} kB): mask voxels {voxels}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="one AllenSDK result (AllenSDK's Python)")
    m.add_argument("what", choices=["mask", "points", "unionize"])
    m.add_argument("--annotation", type=Path, required=True)
    m.add_argument("--structures", type=Path, required=True)
    m.add_argument("--resolution", type=float, required=True)
    m.add_argument("--structure-id", type=int, nargs="+", default=[315])
    m.add_argument("--points", type=Path)
    m.add_argument("--experiment", type=Path)
    m.add_argument("--out", type=Path, required=True)
    k = sub.add_parser("make", help="write the committed reference (the project's Python)")
    k.add_argument("--allensdk", default=ALLENSDK_PYTHON, help="AllenSDK's Python")
    args = parser.parse_args()
    if args.command == "measure":
        measure(args)
    else:
        make(args)


if __name__ == "__main__":
    sys.exit(main())
