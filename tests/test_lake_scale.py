"""What grows with the number of datasets (issue 18): diff reads only the manifests that
differ, stats and releases() read no manifest and parse no record, Stage.add writes O(1)
bytes per dataset, GC reads each manifest once. Counted on the lake's own Storage calls."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import xarray as xr

import abo_lake
from abo_lake import lake as lake_module
from abo_lake.errors import ManifestError
from abo_lake.lake import Lake, object_sizes
from abo_lake.manifest import MANIFEST_PREFIX, manifest_key
from abo_lake.release import ReleaseRecord


def dataset(seed: int, n: int = 64) -> xr.Dataset:
    """A tiny dataset: ``x`` differs by ``seed``; ``shared`` is equal in every dataset
    (deduplicated across datasets and releases)."""
    return xr.Dataset(
        {
            "x": ("t", np.arange(n, dtype="float64") + seed),
            "shared": ("t", np.zeros(n)),
        }
    )


def counting(lake: Lake) -> Counter:
    """Count the keys ``lake.storage`` reads (by kind) and the bytes it writes."""
    counts: Counter = Counter()
    st = lake.storage
    read, read_many, write = st.read, st.read_many, st.write

    def kind(key: str) -> str:
        if key.startswith(MANIFEST_PREFIX):
            return "manifest"
        return key.rsplit("/", 1)[-1] if key.startswith("releases/") else key.split("/")[0]

    def counted_read(key):
        counts[kind(key)] += 1
        return read(key)

    def counted_read_many(keys):
        for key in keys:
            counts[kind(key)] += 1
        return read_many(keys)

    def counted_write(key, data):
        if key.startswith("stages/"):
            counts["stage bytes"] += len(data)
        return write(key, data)

    st.read, st.read_many, st.write = counted_read, counted_read_many, counted_write
    return counts


N = 12


@pytest.fixture
def three_releases(local_lake) -> Lake:
    """r1: N datasets; r2: two of them changed, one removed, one added; r3: another change,
    and one r1 version brought back (its objects were dropped by r2)."""
    lake = local_lake
    with lake.stage("r1") as stage:
        for i in range(N):
            stage.write(f"d/{i}", dataset(i))
    with lake.stage("r2") as stage:
        for i in range(1, N):
            stage.write(f"d/{i}", dataset(100 + i if i in (3, 7) else i))
        stage.write("d/new", dataset(1))  # equal to d/1 (unchanged): nothing new to fetch
    with lake.stage("r3") as stage:
        for path, entry in lake.release("r2").record.datasets.items():
            stage.add(path, entry["manifest"], kind=entry["kind"])
        stage.write("d/5", dataset(500))
    return lake


def reference_stats(lake: Lake) -> dict:
    """stats() as it was computed before: every manifest of every release read."""
    per_release, referenced = {}, {}
    for name in lake.releases():
        rel = lake.release(name)
        per_release[name] = sum(rel.manifest(p).nbytes for p in rel.datasets())
        for p in rel.datasets():
            referenced.update(object_sizes(rel.manifest(p)))
    return {
        "releases": per_release,
        "referenced_objects": len(referenced),
        "referenced_bytes": sum(referenced.values()),
    }


def reference_diff(lake: Lake, a: str, b: str) -> dict:
    """Bytes to fetch per dataset from every manifest of ``a`` (objects counted once)."""
    ra, rb = lake.release(a), lake.release(b)
    held = {h for p in ra.datasets() for h in ra.manifest(p).chunks.values()}
    out = {}
    for p in rb.datasets():
        if ra.record.datasets.get(p, {}).get("manifest") == rb.record.datasets[p]["manifest"]:
            continue
        sizes = object_sizes(rb.manifest(p))
        old = ra.manifest(p).chunks if p in ra.record.datasets else {}
        new = {h for k, h in rb.manifest(p).chunks.items() if h not in held and old.get(k) != h}
        out[p] = sum(sizes[h] for h in new)
    return out


def test_diff_reads_only_the_manifests_that_differ(three_releases):
    lake = abo_lake.open_lake(three_releases.url)
    counts = counting(lake)
    diff = lake.diff("r1", "r2")
    # d/3, d/7 (both sides), d/0 removed (a side), d/new added (b side)
    assert counts["manifest"] == 2 + 2 + 1 + 1
    status = {d.path: d.status for d in diff.datasets}
    assert status["d/0"] == "removed"
    assert status["d/new"] == "added"
    assert status["d/3"] == status["d/7"] == "changed"
    assert sum(s == "unchanged" for s in status.values()) == N - 3
    changed = {d.path: d for d in diff.datasets}
    assert [(a.array, a.changed) for a in changed["d/3"].arrays] == [("x", 1)]
    exact = abo_lake.open_lake(lake.url).diff("r1", "r2", exact_bytes=True)
    want = reference_diff(lake, "r1", "r2")
    assert {d.path: d.bytes_to_fetch for d in exact.datasets if d.status != "unchanged"} == {
        **want,
        "d/0": 0,
    }
    assert want["d/new"] == 0  # its objects are d/1's of r1: the exact count knows it
    # without reading every manifest of r1, d/new's objects are counted (an upper bound)
    assert changed["d/new"].bytes_to_fetch > 0
    for path in ("d/3", "d/7"):  # changed datasets: equal either way
        assert changed[path].bytes_to_fetch == want[path] > 0


def test_stats_reads_no_manifest_and_equals_the_full_computation(three_releases):
    lake = abo_lake.open_lake(three_releases.url)
    counts = counting(lake)
    stats = lake.stats()
    assert counts["manifest"] == 0
    assert counts["release.json"] == 3
    assert counts["head.json"] == 3
    want = reference_stats(abo_lake.open_lake(lake.url))
    assert stats["releases"] == want["releases"]
    assert stats["referenced_objects"] == want["referenced_objects"]
    assert stats["stored_bytes"] == want["referenced_bytes"]
    assert stats == abo_lake.open_lake(lake.url).stats(exact=True)
    assert stats["logical_bytes"] == sum(want["releases"].values())
    assert stats["dedup_ratio"] > 1


def test_stats_counts_a_returning_object_again_unless_exact(local_lake):
    """The documented approximation: an object dropped by r2 and referenced again by r3."""
    lake = local_lake
    for name, seed in (("r1", 1), ("r2", 2), ("r3", 1)):
        with lake.stage(name) as stage:
            stage.write("d/0", dataset(seed))
    fast, exact = lake.stats(), lake.stats(exact=True)
    assert exact["referenced_objects"] == reference_stats(lake)["referenced_objects"]
    assert fast["referenced_objects"] == exact["referenced_objects"] + 1  # x of seed 1
    assert fast["releases"] == exact["releases"]


def test_stats_without_a_head_falls_back_and_repair_writes_it(three_releases):
    lake = three_releases
    want = lake.stats()
    lake.storage.delete(["releases/r2/head.json"])
    fresh = abo_lake.open_lake(lake.url)
    counts = counting(fresh)
    assert fresh.releases() == ["r1", "r2", "r3"]  # r2 checked on its own
    assert fresh.stats() == want
    assert counts["manifest"] > 0  # the full computation
    assert fresh.verify("r2").ok  # a missing head costs speed only
    assert ("releases/r2/head.json", "missing") in fresh.repair("r2")
    again = abo_lake.open_lake(lake.url)
    counts = counting(again)
    assert again.stats() == want
    assert counts["manifest"] == 0


def test_releases_lists_by_heads_without_parsing_records(three_releases, monkeypatch):
    lake = abo_lake.open_lake(three_releases.url)
    counts = counting(lake)
    parsed = []
    real = ReleaseRecord.from_bytes.__func__
    monkeypatch.setattr(
        ReleaseRecord,
        "from_bytes",
        classmethod(lambda cls, data, where: parsed.append(where) or real(cls, data, where=where)),
    )
    assert lake.releases() == ["r1", "r2", "r3"]
    assert parsed == []
    assert sum(counts.values()) == 6  # every record and head, in one read_many
    lake.release("latest").datasets()
    assert len(parsed) == 1  # the latest record only, from the bytes the listing read
    assert counts["release.json"] == 6  # two listings, no third read


def test_a_record_altered_behind_its_head_is_not_listed(three_releases):
    """Same size, one byte changed: the head's digest no longer matches, and the record's own
    root check fails, so it is not listed (the integrity rule of test_integrity)."""
    lake = three_releases
    key = "releases/r2/release.json"
    data = lake.storage.read(key)
    doc = json.loads(data)
    old = doc["notes"] or doc["created"]
    altered = data.replace(json.dumps(old).encode(), json.dumps(old[:-1] + "X").encode(), 1)
    assert len(altered) == len(data)
    assert altered != data
    lake.storage.write(key, altered)
    with pytest.warns(UserWarning, match="not listed"):
        assert abo_lake.open_lake(lake.url).releases() == ["r1", "r3"]


def test_an_altered_head_is_not_trusted_and_repaired(three_releases):
    lake = three_releases
    key = "releases/r2/head.json"
    doc = json.loads(lake.storage.read(key))
    doc["summary"]["new_objects"] += 5
    lake.storage.write(key, json.dumps(doc).encode())
    fresh = abo_lake.open_lake(lake.url)
    assert fresh.releases() == ["r1", "r2", "r3"]  # the record checks on its own
    report = fresh.verify("r2")
    assert report.incomplete == [(key, "altered")]
    assert fresh.repair("r2") == [(key, "altered")]
    assert abo_lake.open_lake(lake.url).verify("r2").ok


@pytest.mark.parametrize("n", [20, 80])
def test_stage_add_writes_constant_bytes_per_dataset(three_releases, monkeypatch, n):
    """Each add appends a part of one manifest (heartbeat forced on every add): the stage's
    bytes grow linearly (the whole document on every add was quadratic)."""
    lake = three_releases
    h = lake.release("r1").record.datasets["d/1"]["manifest"]
    monkeypatch.setattr(lake_module, "HEARTBEAT_SECONDS", 0.0)
    counts = counting(lake)
    with pytest.raises(RuntimeError), lake.stage("probe") as stage:
        start = counts["stage bytes"]
        for i in range(n):
            stage.add(f"p/{i}", h)
        per_add = (counts["stage bytes"] - start) / n
        marks = lake._marks(datetime.now(UTC) - timedelta(hours=1))
        assert h in marks.manifests
        assert marks.live == [stage.id]
        raise RuntimeError("discard")
    assert per_add < 400  # one part (one hash) + the small stage document
    assert lake.storage.glob("stages/*") == []


def test_stage_add_without_heartbeat_due_writes_nothing(three_releases):
    lake = three_releases
    h = lake.release("r1").record.datasets["d/1"]["manifest"]
    counts = counting(lake)
    with lake.stage("r4") as stage:
        before = counts["stage bytes"]
        for i in range(50):
            stage.add(f"p/{i}", h)
        assert counts["stage bytes"] == before
        stage.heartbeat()  # the next beat sends them, as one part
        parts = lake.storage.glob(f"stages/{stage.id}/parts/*")
        assert len(parts) == 1
        assert json.loads(lake.storage.read(parts[0]))["manifests"] == [h]
        assert json.loads(lake.storage.read(f"stages/{stage.id}/stage.json"))["parts"] == 1
    assert len(lake.release("r4").datasets()) == 50


def test_add_many_reads_the_manifests_at_once(three_releases):
    lake = abo_lake.open_lake(three_releases.url)
    entries = [(p, e["manifest"], e["kind"]) for p, e in lake.release("r2").record.datasets.items()]
    calls = []
    read_many = lake.storage.read_many
    lake.storage.read_many = lambda keys: calls.append(list(keys)) or read_many(keys)
    with lake.stage("r4") as stage:
        stage.add_many(entries)
        with pytest.raises(ManifestError, match="stage 'r4', dataset 'x/1'"):
            stage.add_many([("x/1", "0" * 64, None)])
    newest = {e["manifest"] for e in lake.release("r3").record.datasets.values()}
    unknown = {manifest_key(h) for _, h, _ in entries if h not in newest}
    batches = [c for c in calls if any(k.startswith("manifests/") for k in c)]
    assert unknown  # r2's versions that r3 replaced: read, in one batch
    assert set(batches[0]) == unknown  # those the newest release holds are not read
    assert lake.release("r4").record.datasets == lake.release("r2").record.datasets


def test_gc_reads_each_manifest_once(three_releases):
    lake = three_releases
    with pytest.raises(RuntimeError), lake.stage("r9") as stage:
        stage.write("d/x", dataset(999))  # abandoned work
        raise RuntimeError("the job failed")
    fresh = abo_lake.open_lake(lake.url)
    counts = counting(fresh)
    later = datetime.now(UTC) + timedelta(hours=2)
    report = fresh.gc(grace="1h", dry_run=False, now=later)
    manifests = {
        d["manifest"] for n in fresh.releases() for d in fresh._record(n).datasets.values()
    }
    assert counts["manifest"] == len(manifests)  # two marking passes, one read each
    assert len(report.manifests) == 1
    assert report.chunks
    for name in ("r1", "r2", "r3"):
        assert fresh.verify(name).ok
    # once GC has run, what the heads sum up is what the listing finds
    listed = fresh.stats(storage=True)
    assert listed["stored_bytes"] == fresh.stats()["stored_bytes"]
    assert listed["chunk_objects"] == fresh.stats()["chunk_objects"]
    assert listed["manifest_bytes"] > 0


def test_format3_datasets_read_path_by_path_check_each_part_once(monkeypatch):
    """``record.datasets[path]`` for every path of a format-3 record (what diff, GC's
    marking, a head's summary and verify do): each stored part is read once and each part
    (stored or inline) is parsed and checked once, however many paths are asked for; a path
    not in the record is a KeyError, whether or not its part was read."""
    from abo_lake.record import PartitionedDatasets, part_key

    paths = [f"ophys/experiment/{9_000_000 + i}" for i in range(600)]  # 6 stored parts
    paths += [f"behavior/session/{1_000_000 + i}" for i in range(5)]  # a small family: 1 part
    entries = {
        p: {"manifest": f"{i:064x}", "kind": "vbo_ophys", "nbytes": i} for i, p in enumerate(paths)
    }
    record, parts = ReleaseRecord.partitioned(
        datasets=entries,
        url_of=lambda key: f"file:///lake/{key}",
        where="test",
        name="r1",
        created="2026-01-01T00:00:00+00:00",
        abo_lake_version="0",
        notes="",
        tables={},
    )
    parsed = ReleaseRecord.from_bytes(record.to_bytes(), where="test")
    view = parsed.datasets
    assert len(view.hashes) >= 3  # stored parts
    assert len(view.routes) == len(view.hashes)  # together too big to be inline: all stored
    reads: Counter = Counter()

    def read_many(keys):
        reads.update(keys)
        return {k: parts[k] for k in keys}

    checks: Counter = Counter()
    check = PartitionedDatasets._check

    def counted_check(self, route, data, place):
        checks[route] += 1
        return check(self, route, data, place)

    monkeypatch.setattr(PartitionedDatasets, "_check", counted_check)
    view.bind(read_many, {})
    assert {p: view[p] for p in reversed(paths)} == entries
    assert dict(view.items()) == entries
    assert reads == Counter({part_key(h): 1 for h in view.hashes.values()})
    assert checks == Counter(dict.fromkeys(view.routes, 1))
    with pytest.raises(KeyError):
        view["ophys/experiment/90005999"]  # its part is read: not in it
    with pytest.raises(KeyError):
        view["connectivity/experiment/1"]  # no such part
    assert view.get("ophys/experiment/90005999") is None
    assert list(view) == sorted(paths)
    assert {p: view[p] for p in paths} == entries
    assert view.errors(fresh=True) == {}  # verify: every stored part read again
    assert reads == Counter({part_key(h): 2 for h in view.hashes.values()})
    assert {p: view[p] for p in view} == entries
