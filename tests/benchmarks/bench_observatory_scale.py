"""Observatory-scale simulation (issue 18): how the lake's read and maintenance paths grow
with the number of datasets.

A local lake of N datasets in the Observatory's proportions (Visual Behavior, VC2P,
Neuropixels, Cell Types, connectivity) is generated with the lake's own layout: chunk objects
at ``cas.key_of(hash)``, manifests built as :class:`~abo_lake.manifest.Manifest` and stored
with :meth:`Lake.put_manifest`, records built with :meth:`ReleaseRecord.sealed` and published
with put-if-absent, its head (``Lake._write_head``, as ``Stage._publish`` does) and the lake's
publish hooks (catalog, by-id index, root catalog), and a ``datasets`` Parquet table. Chunk
objects are small (64 bytes); it is their count that matters.

Then three releases each change 1% of the datasets (a few chunks each, so new chunks and a
new manifest), and some unreferenced objects are left (an abandoned run) for GC to find.

Every lake call below runs on a fresh :class:`Lake` (no in-memory record/manifest cache)
with its :class:`~abo_lake.storage.Storage` methods wrapped to count calls and keys; the
"requests" column estimates S3 requests from them (1 per object read/written, 1 per key of a
``read_many``, 1 per 1000 keys listed or deleted). Where the old path still exists it runs
in the same run: ``releases() old`` parses and checks every record as ``releases()`` did
before heads; ``diff exact_bytes`` reads every manifest of the older release (the old diff's
work); ``stats(exact, storage)`` reads every manifest and lists ``cas/`` (the old stats'
work). ``stage.add ... beat each`` forces a heartbeat (a part) on every add: the worst case.

Run: ``nice python tests/benchmarks/bench_observatory_scale.py --sizes 1500 15000``
(``--chunks 65`` per dataset gives ~1 M objects at 15,000 datasets).

Measured 2026-12-07 08:42-08:50 UTC on the shared 2-core machine (load 11-18), local lake,
``--chunks 6 --skip-verify-release`` (~105 k objects at 15 k). Seconds at N=1.5k / 15k
(estimated S3 requests at 15k), new path beside the old in the same run:
releases() 0.02 / 0.04 s (9 req: one listing, every record and head in one read_many) vs
old 0.24 / 1.54 s; diff(r2, r3) 0.19 / 0.89 s (302 req: the 150 differing datasets' two
manifests) vs exact_bytes/old 2.20 / 10.2 s (15,152 req); stats() 0.00 / 0.04 s (9 req:
the heads) vs stats(storage=True) 1.69 / 7.37 s (117 req, listing 105 k objects) and old
4.79 / 17.9 s (15,567 req), referenced objects equal (9,045 / 90,450); Stage.add of N/5
0.42 / 1.89 s writing 140 stage bytes (no heartbeat due; the 3,004 requests are the
manifest reads of each add), with a beat on every add 2.46 / 11.6 s and 67.5 kB / 677 kB
(linear: x10.0; before: 1.15 / 50.5 s, quadratic); GC dry run 2.89 / 15.5 s and delete
3.62 / 19.4 s (~15.6 k req: every distinct manifest once, 2 listings; before: 1.34 / 29.1
and 0.68 / 36.3 s at lower load); release() 0.00 / 0.19 s, datasets() 0.03 / 0.23 s and table
search 0.16 / 0.86 s (1-2 req); verify of one dataset 0.09 / 0.21 s (8 req). Bytes added by a
release changing 1% of datasets: 1.99 MB at 1.5 k, 19.9 MB at 15 k (the head adds 462 B;
the rest is release metadata a line per dataset: release.json, catalog.yaml, byid.json).
Before (recorded 2026-12-07, load 9-17): releases() 0.02/1.98 s, diff 0.76/22.2 s, stats
1.25/28.2 s.

Second run 08:58-09:17 UTC, load 21-23 (everything ~2x slower), with verify of a release and
``Stage.add_many``; at 15k: releases() 0.10 s vs old 3.18 s; diff 3.50 s (302 req) vs 20.6 s
(15,152 req): its time is parsing the two 2.5 MB records (release('r3') alone took 1.92 s in
this run); stats() 0.07 s (9 req) vs storage=True 14.9 s and old 39.5 s; verify('r3') 126 s
(105,016 req: one per object; 19.9 s at 1.5k); Stage.add of N/5 4.00 s, add_many 3.09 s (the
same 3,004 manifest reads, but in 12 read_many batches: concurrent on S3); GC 22.3 / 17.0 s.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

import abo_lake
from abo_lake import cas
from abo_lake import lake as lake_module
from abo_lake.lake import PUBLISH_HOOKS, Lake
from abo_lake.manifest import Manifest, manifest_key
from abo_lake.release import ReleaseRecord
from abo_lake.tables import _TABLE_CACHE, search_table

#: Observatory dataset counts by catalog path template (issue 18).
MIX = {
    "behavior/session/{}": 4787,
    "ophys/experiment/{}": 1941 + 1400,
    "ecephys/session/{}": 3400,
    "celltypes/specimen/{}/ephys": 2300,
    "connectivity/experiment/{}": 3000,
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


def dataset_paths(n: int) -> list[str]:
    """``n`` dataset paths in the Observatory's proportions, with AllenSDK-like ids."""
    total = sum(MIX.values())
    paths = []
    for i, (template, count) in enumerate(MIX.items()):
        k = round(n * count / total) if i < len(MIX) - 1 else n - len(paths)
        paths += [template.format(800_000_000 + 1000 * i + j) for j in range(k)]
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
    """Writes chunk objects straight into a local lake at their CAS keys, counting them."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.root = Path(lake.storage.root)
        self.objects = 0
        self.bytes = 0

    def chunk(self, text: str) -> tuple[str, int]:
        data = text.encode().ljust(64, b".")
        h = cas.digest(data)
        final = self.root / cas.key_of(h)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            final.write_bytes(data)
            self.objects += 1
            self.bytes += len(data)
        return h, len(data)

    def manifest(self, path: str, n_chunks: int, version: dict[int, int]) -> tuple[str, int]:
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
        before = self.lake.storage.exists(manifest_key(cas.digest(m.to_bytes(self.lake.url))))
        h = self.lake.put_manifest(m)
        if not before:
            self.objects += 1
            self.bytes += len(m.to_bytes(self.lake.url))
        return h, m.nbytes

    def table(self, paths: list[str]) -> dict:
        df = pd.DataFrame(
            {
                "path": paths,
                "kind": [KIND[p.split("/")[0]] for p in paths],
                "id": [int(p.split("/")[2]) for p in paths],
                "depth_um": [150 + (i * 37) % 400 for i in range(len(paths))],
            }
        ).set_index("id")
        buf = io.BytesIO()
        df.to_parquet(buf, index=True, compression="zstd")
        h, new = cas.put(self.lake.storage, buf.getvalue())
        self.objects += int(new)
        self.bytes += len(buf.getvalue()) if new else 0
        cols = list(map(str, df.columns))
        return {"datasets": {"object": h, "rows": len(df), "columns": cols}}

    def publish(self, name: str, datasets: dict, tables: dict, created: str) -> None:
        """What ``Stage._publish`` writes: the sealed record (put-if-absent), then the hooks."""
        record = ReleaseRecord.sealed(
            name=name,
            created=created,
            abo_lake_version=abo_lake.__version__,
            notes="observatory-scale simulation",
            datasets=dict(sorted(datasets.items())),
            tables=dict(sorted(tables.items())),
        )
        before = self.lake.storage.find("releases") | self.lake.storage.find("catalog.yaml")
        data = record.to_bytes()
        assert self.lake.storage.put_if_absent(f"releases/{name}/release.json", data)
        self.lake._records[name] = record
        self.lake._write_head(record, data)  # as Stage._publish: the head, then the hooks
        for hook in PUBLISH_HOOKS:
            hook(self.lake, record)
        after = self.lake.storage.find("releases") | self.lake.storage.find("catalog.yaml")
        for key, info in after.items():
            if key not in before:
                self.objects += 1
            if key not in before or before[key]["size"] != info["size"]:
                self.bytes += info["size"]  # catalog.yaml at the root is rewritten


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
    wrap("read", one)
    wrap("exists", one)
    wrap("write", one)
    wrap("put_if_absent", one)
    wrap("read_many", lambda a, r: len(a[0]))
    wrap("find", lambda a, r: max(1, math.ceil(len(r) / 1000)))
    wrap("glob", lambda a, r: max(1, math.ceil(len(r) / 1000)))
    wrap("delete", lambda a, r: math.ceil(len(a[0]) / 1000))
    wrap("delete_prefix", one)
    return counts


def measure(url: str, op) -> tuple[float, int, object]:
    """Run ``op(lake)`` on a fresh lake; return seconds, estimated requests, result."""
    _TABLE_CACHE.clear()
    lake = abo_lake.open_lake(url)
    counts = counted(lake)
    t0 = time.perf_counter()
    result = op(lake)
    return time.perf_counter() - t0, counts["requests"], result


def simulate(
    n: int, n_chunks: int, workdir: Path, skip_verify_release: bool, stage_adds: bool = True
) -> dict:
    url = str(workdir / f"lake-{n}")
    lake = abo_lake.open_lake(url)
    w = Writer(lake)
    paths = dataset_paths(n)
    versions: dict[str, dict[int, int]] = {p: {} for p in paths}
    out: dict = {"N": n, "chunks/dataset": n_chunks}
    t0 = time.perf_counter()
    datasets = {}
    for p in paths:
        h, nbytes = w.manifest(p, n_chunks, versions[p])
        datasets[p] = {"manifest": h, "kind": KIND[p.split("/")[0]], "nbytes": nbytes}
    tables = w.table(paths)
    w.publish("r0", datasets, tables, "2026-01-01T00:00:00+00:00")
    out["generate s"] = time.perf_counter() - t0
    out["r0 objects"], out["r0 bytes"] = w.objects, w.bytes
    for r in (1, 2, 3):
        w.objects = w.bytes = 0
        for p in paths[r * 7 % 100 :: 100]:  # every 100th dataset: 1%
            for i in range(0, n_chunks, 10):  # every 10th chunk changes
                versions[p][i] = r
            h, nbytes = w.manifest(p, n_chunks, versions[p])
            datasets[p] = {"manifest": h, "kind": KIND[p.split("/")[0]], "nbytes": nbytes}
        w.publish(f"r{r}", datasets, tables, f"2026-0{r + 1}-01T00:00:00+00:00")
        out[f"r{r} objects added"], out[f"r{r} bytes added"] = w.objects, w.bytes
    # an abandoned run: 1% of datasets' worth of unreferenced chunks and manifests
    for p in paths[50::100]:
        w.manifest(p, n_chunks, dict.fromkeys(range(n_chunks), 99))
    total_objects = sum(1 for _ in (Path(url) / "cas").rglob("*")) + sum(
        1 for _ in (Path(url) / "manifests").rglob("*.json")
    )
    out["objects in lake (cas+manifests, incl. dirs)"] = total_objects
    some = paths[len(paths) // 2]

    def ops():
        yield "releases()", lambda lk: lk.releases()
        yield "releases() old: parse records", old_releases
        yield "release('r3')", lambda lk: lk.release("r3")
        yield "release+datasets()", lambda lk: lk.release("r3").datasets()
        yield (
            "table search",
            lambda lk: search_table(
                lk.release("r3"), "datasets", kind="ecephys", depth_um=(200, 300)
            ),
        )
        yield "diff(r2, r3)", lambda lk: lk.diff("r2", "r3")
        yield "diff exact_bytes (~old)", lambda lk: lk.diff("r2", "r3", exact_bytes=True)
        yield "stats()", lambda lk: lk.stats()
        yield "stats(storage=True)", lambda lk: lk.stats(storage=True)
        yield "stats(exact, storage) (old)", lambda lk: lk.stats(exact=True, storage=True)
        yield "verify 1 dataset (store)", lambda lk: verify_one(lk, some)
        if not skip_verify_release:
            yield "verify('r3') (release)", lambda lk: lk.verify("r3")
        if stage_adds:
            yield "stage.add of N/5 (discarded)", lambda lk: stage_adds_of(lk, n // 5)
            yield "stage.add N/5, beat each", lambda lk: stage_adds_of(lk, n // 5, beat=True)
            yield "stage.add_many of N/5", lambda lk: stage_adds_of(lk, n // 5, many=True)
        yield "gc dry run", lambda lk: lk.gc(grace="0s", dry_run=True)
        yield "gc delete", lambda lk: lk.gc(grace="0s", dry_run=False)

    for label, op in ops():
        seconds, requests, result = measure(url, op)
        out[f"{label} s"] = seconds
        out[f"{label} req"] = requests
        if label.startswith("gc"):
            out[f"{label} found"] = len(result.chunks) + len(result.manifests)
        if label.startswith("stage.add"):
            out[f"{label} stage bytes"] = result
        if label.startswith("diff"):
            out[f"{label} MB to fetch"] = result.bytes_to_fetch / 1e6
        if label.startswith("stats"):
            out[f"{label} referenced"] = result["referenced_objects"]
        if label.startswith("verify('r3')"):
            assert result.ok, str(result)
        print(f"  N={n:>6} {label:<26} {seconds:8.2f} s {requests:>9} req", flush=True)
    return out


class _Discard(Exception):
    pass


def stage_adds_of(lake: Lake, n: int, beat: bool = False, many: bool = False) -> int:
    """Stage ``n`` already-stored datasets with ``Stage.add`` (what a job resuming from its
    ledger does), then discard the stage; return the bytes written under ``stages/``.
    ``beat``: a heartbeat on every add (the worst case: one part per add); ``many``: one
    ``Stage.add_many`` (the manifests read in batches, as a job does)."""
    items = list(lake.release("r0").record.datasets.items())[:n]
    written = [0]
    write = lake.storage.write

    def counting(key: str, data: bytes) -> None:
        written[0] += len(data) if key.startswith("stages/") else 0
        write(key, data)

    lake.storage.write = counting
    saved = lake_module.HEARTBEAT_SECONDS
    lake_module.HEARTBEAT_SECONDS = 0.0 if beat else saved
    try:
        with lake.stage("probe") as stage:
            if many:
                stage.add_many((p, e["manifest"], e["kind"]) for p, e in items)
            for path, entry in [] if many else items:
                stage.add(path, entry["manifest"], kind=entry["kind"])
            raise _Discard
    except _Discard:
        pass
    finally:
        lake_module.HEARTBEAT_SECONDS = saved
    return written[0]


def old_releases(lake: Lake) -> list[str]:
    """What ``releases()`` did before heads: read and fully check every record in turn."""
    names = [k.split("/")[1] for k in lake.storage.glob("releases/*/release.json")]
    created = {}
    for name in names:
        created[name] = lake._checked_record(
            name, lake.storage.read(f"releases/{name}/release.json")
        ).created
    return sorted(names, key=lambda n: (created[n], n))


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
    parser.add_argument("--skip-verify-release", action="store_true")
    parser.add_argument(
        "--skip-stage-add", action="store_true", help="skip timing Stage.add of N/5 datasets"
    )
    parser.add_argument("--workdir", default=None, help="keep the lakes here (default: temp)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="abo-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in args.sizes:
            print(f"N = {n} datasets x {args.chunks} chunks", flush=True)
            results.append(
                simulate(n, args.chunks, workdir, args.skip_verify_release, not args.skip_stage_add)
            )
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
    pd.set_option("display.float_format", lambda v: f"{v:,.2f}")
    print(table.to_string())
    last = results[-1]
    slow = [
        k[:-2]
        for k, v in last.items()
        if k.endswith(" s") and k != "generate s" and v > INTERACTIVE_S
    ]
    print(f"not interactive (> {INTERACTIVE_S} s) at N={last['N']}: {slow or 'none'}")
    print(
        f"(machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    main()
