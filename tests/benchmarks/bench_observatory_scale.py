"""Observatory-scale simulation (issue 18): how the lake's read and maintenance paths grow
with the number of datasets, with format-3 release records (datasets in content-addressed
record parts).

A local lake of N datasets in the Observatory's proportions (Visual Behavior, VC2P,
Neuropixels, Cell Types, connectivity; ids drawn at random in AllenSDK-like ranges, seeded)
is generated with the lake's own layout: chunk objects at ``cas.key_of(hash)`` (64 bytes
each: it is their count that matters), manifests built as
:class:`~abo_lake.manifest.Manifest` and stored with :meth:`Lake.put_manifest`. Each release
is published through a real ``lake.stage(...)``: ``Stage.add_many`` of every dataset,
``Stage.write_table`` of a ``datasets`` Parquet table, and ``Stage._publish`` (the format-3
record and its parts, put-if-absent, the head, the publish hooks: catalog and root catalog).

Then three releases each change 1% of the datasets (every 100th, so scattered over the
record parts; a few chunks each, so new chunks and a new manifest), and some unreferenced
objects are left (an abandoned run) for GC to find. Bytes added per release are counted by
object class; beside them, in the same run, what a format-2 record would have added (the
sealed record with a line per dataset, the stored catalog with a line per dataset and the
by-id index ``byid.json``), built in memory and only measured.

Every lake call below runs on a fresh :class:`Lake` (no in-memory record/manifest/part
cache) with its :class:`~abo_lake.storage.Storage` methods wrapped to count calls and keys;
the "req" column estimates S3 requests from them (1 per object read/written, 1 per key of a
``read_many``, 1 per 1000 keys listed or deleted).

Run: ``nice python tests/benchmarks/bench_observatory_scale.py --sizes 1500 15000``
(``--chunks 65`` per dataset, the default, gives ~1 M chunk objects at 15,000 datasets).

Measured 2026-12-07 14:57-15:09 UTC at commit f30c2ff (the record's index level), shared
2-core machine at load ~3-7, local lake, ``--sizes 1500 15000 --chunks 65``: 99 k / 990 k
objects. N = 1.5k / 15k (estimated S3 requests):

- Routes: 21 / 1,260 (widths {behavior 1, celltypes 0, connectivity 1, ecephys 1, ophys 1} /
  {3, 2, 2, 3, 3}); 18 / 176 stored parts; index routes 5 (inline) / 16 (stored objects,
  widths 0-1).
- Bytes added by a 1% release (mean of r1-r3): chunks 6.7 / 67 kB, manifests 168 kB / 1.68 MB,
  record objects 339 kB / 4.08 MB (11 / 136 parts and index objects), release.json 4.1 / 3.0
  kB, head 468 / 474 B, catalog.yaml 9.4 kB, root catalog 2.6 kB; release metadata 356 kB /
  4.10 MB. A format-2 record would have added 1.95 / 19.5 MB.
- Notebook calls (s): releases() 0.00 / 0.00 (9 req); release('r3') 0.00 / 0.00 (1 req);
  release+datasets() 0.02 / 0.11 (19 / 193 req); datasets(prefix='ecephys/session/') 0.00 /
  0.02 (5 / 37 req); datasets(prefix=one path) 0.00 / 0.00 (2 / 3 req); table search 0.02 /
  0.01 (2 req); diff(r2, r3) 0.04 / 0.32 (61 / 630 req); stats() 0.00 / 0.00 (9 req); verify
  of one dataset 0.01 / 0.01 (68 / 69 req). None over 2 s.
- Maintenance (s): GC dry run 6.9 / 25.4 and delete 6.7 / 43.4 (1.7 k / 17.1 k req; 990 /
  9,900 objects found); verify of the release 17.4 s at 1.5k (99 k req); publishing a 1%
  release from a fresh Lake 2.3 / 7.3 s (1.6 k / 15.8 k req).

At commit 753e94f (12:52-13:05, before the index level) release.json was 3.6 / 187 kB: one
reference per route.

Earlier run (11:51-12:08, one route width for all families, parts <= 8 KiB inline): 2,151
routes at 15k, 2,081 parts inline, release.json 3.61 MB per release, metadata 4.44 MB per 1%
release; that is what the per-family widths and shared parts fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

import abo_lake
from abo_lake import cas
from abo_lake.catalog import _dump, catalog_dict, index_bytes
from abo_lake.lake import Lake
from abo_lake.manifest import Manifest, manifest_key
from abo_lake.record import RECORDS_PREFIX, ReleaseRecord
from abo_lake.tables import _TABLE_CACHE, search_table

#: Observatory dataset counts by catalog path template (issue 18), and the id range
#: AllenSDK-like ids are drawn from.
MIX = {
    "behavior/session/{}": (4787, 700_000_000, 1_300_000_000),
    "ophys/experiment/{}": (1941 + 1400, 500_000_000, 1_200_000_000),
    "ecephys/session/{}": (3400, 700_000_000, 1_200_000_000),
    "celltypes/specimen/{}/ephys": (2300, 300_000_000, 700_000_000),
    "connectivity/experiment/{}": (3000, 100_000_000, 700_000_000),
}
KIND = {
    "behavior": "vb_behavior",
    "ophys": "vbo_ophys",
    "ecephys": "vcn_ecephys",
    "celltypes": "celltypes_ephys",
    "connectivity": "connectivity",
}
ARRAYS = ("dff", "events", "timestamps", "running_speed", "stimulus")
INTERACTIVE_S = 2.0
CHUNKS = [65]  # chunks per dataset of the run (set by main)
#: What a notebook user calls (flagged when over :data:`INTERACTIVE_S`); the rest is
#: maintenance (publish, verify of a release, GC).
NOTEBOOK_CALLS = (
    "releases()",
    "release('r3')",
    "release+datasets()",
    "datasets(prefix=modality)",
    "datasets(prefix=1 id)",
    "table search",
    "diff(r2, r3)",
    "stats()",
    "verify 1 dataset (store)",
)
#: Object classes of the bytes a release adds, by key.
CLASSES = ("chunks", "manifests", "record objects", "release.json", "head.json", "catalog.yaml")


def dataset_paths(n: int, seed: int = 18) -> list[str]:
    """``n`` dataset paths in the Observatory's proportions, with AllenSDK-like ids."""
    rng = np.random.default_rng(seed)
    total = sum(c for c, _, _ in MIX.values())
    paths: list[str] = []
    for i, (template, (count, lo, hi)) in enumerate(MIX.items()):
        k = round(n * count / total) if i < len(MIX) - 1 else n - len(paths)
        ids: set[int] = set()
        while len(ids) < k:
            ids.update(int(v) for v in rng.integers(lo, hi, k - len(ids)))
        paths += [template.format(v) for v in sorted(ids)]
    return paths


def array_doc(shape: tuple[int, ...], chunks: tuple[int, ...]) -> str:
    """A Zarr v3 array document like the writer's (float32, zstd)."""
    return json.dumps(
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(shape),
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0.0,
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
            ],
            "attributes": {"units": "a.u.", "long_name": "simulated"},
            "dimension_names": ["cell", "time"][: len(shape)],
        }
    )


class Writer:
    """Writes chunk objects straight into a local lake at their CAS keys and manifests with
    :meth:`Lake.put_manifest`, counting the new ones."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.root = Path(lake.storage.root)
        self.added: Counter = Counter()  # class -> objects / bytes added

    def chunk(self, text: str) -> tuple[str, int]:
        data = text.encode().ljust(64, b".")
        h = cas.digest(data)
        final = self.root / cas.key_of(h)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            final.write_bytes(data)
            self.added["chunks objects"] += 1
            self.added["chunks bytes"] += len(data)
        return h, len(data)

    def manifest(self, path: str, n_chunks: int, version: dict[int, int]) -> str:
        """A dataset of ``n_chunks`` chunks over a few arrays; chunk ``i`` at ``version[i]``."""
        kind = KIND[path.split("/")[0]]
        per = math.ceil(n_chunks / len(ARRAYS))
        metadata = {
            "zarr.json": json.dumps(
                {
                    "zarr_format": 3,
                    "node_type": "group",
                    "attributes": {"abo_lake_kind": kind, "session_id": path.split("/")[2]},
                }
            )
        }
        chunks, sizes = {}, {}
        i = 0
        for a in ARRAYS:
            metadata[f"{a}/zarr.json"] = array_doc((400, 1000 * per), (400, 1000))
            for j in range(per):
                if i == n_chunks:
                    break
                key = f"{a}/c/0/{j}"
                chunks[key], sizes[key] = self.chunk(f"{path}|{key}|{version.get(i, 0)}")
                i += 1
        m = Manifest(metadata, chunks, sizes)
        data = m.to_bytes(self.lake.url)
        if not self.lake.storage.exists(manifest_key(cas.digest(data))):
            self.added["manifests objects"] += 1
            self.added["manifests bytes"] += len(data)
        return self.lake.put_manifest(m)


def metadata_files(lake: Lake) -> dict[str, int]:
    """Key -> size of every release-metadata object (records, parts, heads, catalogs)."""
    found = {}
    for prefix in ("releases", RECORDS_PREFIX, "catalog.yaml", "stages"):
        found |= {k: v["size"] for k, v in lake.storage.find(prefix).items()}
    return found


def class_of(key: str) -> str:
    if key.startswith(RECORDS_PREFIX + "/"):
        return "record objects"
    if key == "catalog.yaml":
        return "root catalog.yaml"
    if key.startswith("stages/"):
        return "stages (left)"
    return key.rsplit("/", 1)[-1]  # release.json, head.json, catalog.yaml, byid.json


def publish(lake: Lake, w: Writer, name: str, datasets: dict[str, str], table: pd.DataFrame):
    """Publish ``datasets`` (path -> manifest hash) as release ``name`` through a real stage
    (``Stage.add_many``, ``Stage.write_table``, ``Stage._publish``); add the bytes it stored
    by class to ``w.added``. Returns the format-3 record and the publish seconds."""
    before = metadata_files(lake)
    t0 = time.perf_counter()
    with lake.stage(name, notes="observatory-scale simulation") as stage:
        stage.add_many((p, h, KIND[p.split("/")[0]]) for p, h in datasets.items())
        stage.write_table("datasets", table)
    seconds = time.perf_counter() - t0
    for key, size in metadata_files(lake).items():
        if key not in before or before[key] != size:  # the root catalog.yaml is rewritten
            w.added[f"{class_of(key)} objects"] += 1
            w.added[f"{class_of(key)} bytes"] += size
    return lake.release(name).record, seconds


def format2_sizes(lake: Lake, record: ReleaseRecord) -> dict[str, int]:
    """What the same release would have stored as a format-2 record: the sealed record with
    every dataset inline, its catalog with an entry per dataset, and its by-id index (only
    built in memory and measured)."""
    old = ReleaseRecord.sealed(
        name=record.name,
        created=record.created,
        abo_lake_version=record.abo_lake_version,
        notes=record.notes,
        datasets={p: dict(record.datasets[p]) for p in sorted(record.datasets)},
        tables=record.tables,
    )
    return {
        "release.json": len(old.to_bytes()),
        "catalog.yaml": len(_dump(catalog_dict(lake, old, stored=True))),
        "byid.json": len(index_bytes(lake, old)),
    }


def counted(lake: Lake) -> Counter:
    """Wrap ``lake.storage``'s methods to count calls, keys and estimated S3 requests."""
    counts: Counter = Counter()
    st = lake.storage

    def wrap(name: str, requests) -> None:
        original = getattr(st, name)

        def call(*args, **kwargs):
            result = original(*args, **kwargs)
            counts[name] += 1
            counts["requests"] += requests(args, result)
            return result

        setattr(st, name, call)

    one = lambda args, result: 1  # noqa: E731
    for name in ("read", "exists", "size", "write", "put_if_absent", "delete_prefix"):
        wrap(name, one)
    wrap("read_many", lambda a, r: len(a[0]))
    wrap("find", lambda a, r: max(1, math.ceil(len(r) / 1000)))
    wrap("glob", lambda a, r: max(1, math.ceil(len(r) / 1000)))
    wrap("delete", lambda a, r: math.ceil(len(a[0]) / 1000))
    return counts


def measure(url: str, op) -> tuple[float, int, object]:
    """Run ``op(lake)`` on a fresh lake; return seconds, estimated requests, result."""
    _TABLE_CACHE.clear()
    lake = abo_lake.open_lake(url)
    counts = counted(lake)
    t0 = time.perf_counter()
    result = op(lake)
    return time.perf_counter() - t0, counts["requests"], result


def simulate(n: int, n_chunks: int, workdir: Path, verify_release_max: int) -> dict:
    url = str(workdir / f"lake-{n}")
    lake = abo_lake.open_lake(url)
    w = Writer(lake)
    paths = dataset_paths(n)
    versions: dict[str, dict[int, int]] = {p: {} for p in paths}
    table = pd.DataFrame(
        {
            "path": paths,
            "kind": [KIND[p.split("/")[0]] for p in paths],
            "id": [int(p.split("/")[2]) for p in paths],
            "depth_um": [150 + (i * 37) % 400 for i in range(len(paths))],
        }
    ).set_index("id")
    out: dict = {"N": n, "chunks/dataset": n_chunks}
    t0 = time.perf_counter()
    datasets = {p: w.manifest(p, n_chunks, versions[p]) for p in paths}
    out["generate r0 s"] = time.perf_counter() - t0
    record, out["publish r0 s"] = publish(lake, w, "r0", datasets, table)
    out["stored parts"] = len(set(record.datasets.hashes.values()))
    out["inline parts"] = len(record.datasets.routes) - len(record.datasets.hashes)
    out["routes"] = len(record.datasets.routes)
    out["stored index objects"] = len(record.datasets.index_hashes)
    out["index routes"] = len(record.refs)
    out["route digits"] = record.summary["route"]
    out["index digits"] = record.summary.get("index")
    out["r0 objects"] = sum(v for k, v in w.added.items() if k.endswith("objects"))
    out["r0 bytes"] = sum(v for k, v in w.added.items() if k.endswith("bytes"))
    per_release = []
    for r in (1, 2, 3):
        w.added.clear()
        for p in paths[r * 7 % 100 :: 100]:  # every 100th dataset: 1%
            for i in range(0, n_chunks, 10):  # every 10th chunk changes
                versions[p][i] = r
            datasets[p] = w.manifest(p, n_chunks, versions[p])
        record, out[f"publish r{r} s"] = publish(lake, w, f"r{r}", datasets, table)
        t1 = time.perf_counter()
        old = format2_sizes(lake, record)
        out[f"format-2 record+catalog r{r} s (CPU, in memory)"] = time.perf_counter() - t1
        per_release.append((dict(w.added), old))
    # bytes added per 1% release by class (r1..r3 averaged; they are alike)
    for cls in [*CLASSES, "root catalog.yaml", "stages (left)"]:
        for unit in ("objects", "bytes"):
            values = [added.get(f"{cls} {unit}", 0) for added, _ in per_release]
            out[f"1% release: {cls} {unit}"] = sum(values) / len(values)
    meta = ("record objects", "release.json", "head.json", "catalog.yaml", "root catalog.yaml")
    out["1% release: metadata bytes (format 3)"] = sum(out[f"1% release: {c} bytes"] for c in meta)
    for cls in ("release.json", "catalog.yaml", "byid.json"):
        out[f"1% release: format-2 {cls} bytes"] = sum(o[cls] for _, o in per_release) / 3
    out["1% release: metadata bytes (format 2)"] = (
        sum(
            out[f"1% release: format-2 {c} bytes"]
            for c in ("release.json", "catalog.yaml", "byid.json")
        )
        + out["1% release: head.json bytes"]
        + out["1% release: root catalog.yaml bytes"]
    )
    # an abandoned run: 1% of datasets' worth of unreferenced chunks and manifests
    for p in paths[50::100]:
        w.manifest(p, n_chunks, dict.fromkeys(range(n_chunks), 99))
    some = paths[len(paths) // 2]
    modality = "ecephys/session/"
    one_id = some  # a prefix that is one whole dataset path: one part

    def ops():
        yield "releases()", lambda lk: lk.releases()
        yield "release('r3')", lambda lk: lk.release("r3")
        yield "release+datasets()", lambda lk: lk.release("r3").datasets()
        yield "datasets(prefix=modality)", lambda lk: lk.release("r3").datasets(modality)
        yield "datasets(prefix=1 id)", lambda lk: lk.release("r3").datasets(one_id)
        yield (
            "table search",
            lambda lk: search_table(
                lk.release("r3"), "datasets", kind="vcn_ecephys", depth_um=(200, 300)
            ),
        )
        yield "diff(r2, r3)", lambda lk: lk.diff("r2", "r3")
        yield "stats()", lambda lk: lk.stats()
        yield "verify 1 dataset (store)", lambda lk: verify_one(lk, some)
        if n <= verify_release_max:
            yield "verify('r3') (release)", lambda lk: lk.verify("r3")
        yield "gc dry run", lambda lk: lk.gc(grace="0s", dry_run=True)
        yield "gc delete", lambda lk: lk.gc(grace="0s", dry_run=False)
        yield "publish 1% release (fresh Lake)", lambda lk: publish_fresh(lk, paths, table)

    for label, op in ops():
        seconds, requests, result = measure(url, op)
        out[f"{label} s"] = seconds
        out[f"{label} req"] = requests
        if label.startswith("gc"):
            out[f"{label} found"] = len(result.chunks) + len(result.manifests) + len(result.parts)
        if label.startswith("diff"):
            out[f"{label} changed"] = sum(d.status == "changed" for d in result.datasets)
        if label.startswith("datasets(prefix"):
            out[f"{label} found"] = len(result)
        if label.startswith("verify('r3')"):
            assert result.ok, str(result)
        print(f"  N={n:>6} {label:<26} {seconds:8.2f} s {requests:>9} req", flush=True)
    return out


def publish_fresh(lake: Lake, paths: list[str], table: pd.DataFrame) -> ReleaseRecord:
    """Publish ``r4`` (1% of datasets changed) from a Lake that has read nothing yet, as a
    job or CLI process does: its manifests are read by ``Stage.add_many`` and the head."""
    w = Writer(lake)
    datasets = {p: e["manifest"] for p, e in lake.release("r3").record.datasets.items()}
    for p in paths[4 * 7 % 100 :: 100]:
        datasets[p] = w.manifest(p, CHUNKS[0], dict.fromkeys(range(0, CHUNKS[0], 10), 4))
    lake._manifests.clear()  # what a fresh process holds: only what it wrote, nothing read
    return publish(lake, w, "r4", datasets, table)[0]


def verify_one(lake: Lake, path: str) -> int:
    """Re-hash every chunk of one dataset (what a per-dataset verify would read)."""
    rel = lake.release("r3")
    m = rel.manifest(path)
    got = lake.storage.read_many([cas.key_of(h) for h in m.chunks.values()])
    bad = [
        k
        for k, data in got.items()
        if isinstance(data, Exception) or cas.digest(data) != k.rsplit("/", 1)[1]
    ]
    assert not bad, bad
    return len(got)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 15000])
    parser.add_argument("--chunks", type=int, default=65, help="chunk objects per dataset")
    parser.add_argument(
        "--verify-release-max",
        type=int,
        default=2000,
        help="verify a whole release only at sizes up to this (one read per object)",
    )
    parser.add_argument("--workdir", default=None, help="keep the lakes here (default: temp)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="abo-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    CHUNKS[0] = args.chunks
    try:
        for n in args.sizes:
            print(f"N = {n} datasets x {args.chunks} chunks", flush=True)
            results.append(simulate(n, args.chunks, workdir, args.verify_release_max))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    table = pd.DataFrame({f"N={r['N']}": pd.Series(r) for r in results})
    if len(results) > 1:
        a, b = table.columns[0], table.columns[-1]
        table["growth"] = pd.to_numeric(table[b], errors="coerce") / pd.to_numeric(
            table[a], errors="coerce"
        )
    pd.set_option("display.width", 160)
    pd.set_option("display.max_rows", 500)
    pd.set_option("display.float_format", lambda v: f"{v:,.2f}")
    print(table.to_string())
    last = results[-1]
    slow = [c for c in NOTEBOOK_CALLS if last.get(f"{c} s", 0) > INTERACTIVE_S]
    print(f"notebook calls over {INTERACTIVE_S} s at N={last['N']}: {slow or 'none'}")
    print(
        f"(machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    main()
