"""The opt-in local chunk cache (abo_lake.cache): reruns fetch nothing, bad entries are
refetched, the size bound holds, and release records are never served stale."""

from __future__ import annotations

import os
import pickle
from collections import Counter

import numpy as np
import pytest
import s3fs
import xarray as xr

import abo_lake
from abo_lake import cas
from abo_lake.cache import CachedStorage, ChunkCache, content_hash, open_cached_lake
from abo_lake.manifest import manifest_key
from abo_lake.record import part_key
from abo_lake.storage import Storage


def make_dataset(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {
            "dff": (("cell", "time"), rng.normal(size=(8, 500)).astype("float32")),
            "events": (("cell", "time"), rng.random((8, 500)).astype("float32")),
        },
        coords={"time": np.arange(500) / 30.0},
    )


@pytest.fixture
def s3_lake_url(s3_bucket, s3_options):
    url = f"s3://{s3_bucket}/lake"
    with abo_lake.open_lake(url, **s3_options).stage("r1") as stage:
        stage.write("ophys/experiment/1", make_dataset())
    return url


@pytest.fixture
def s3_gets(monkeypatch):
    """Every S3 request the client sends: (operation, key)."""
    calls: Counter = Counter()
    original = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls[(method, kwargs.get("Key", kwargs.get("Prefix", "")))] += 1
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    return calls


def gets_under(calls: Counter, folder: str) -> int:
    """GETs/HEADs of objects under ``<lake>/<folder>/``."""
    return sum(
        n
        for (method, key), n in calls.items()
        if method in ("get_object", "head_object") and f"/{folder}/" in key
    )


def immutable_gets(calls: Counter) -> int:
    """GETs/HEADs of chunk objects and manifests."""
    return sum(
        n
        for (method, key), n in calls.items()
        if method in ("get_object", "head_object") and ("/cas/" in key or "/manifests/" in key)
    )


def test_rerun_fetches_nothing_from_s3(s3_lake_url, s3_options, s3_gets, tmp_path):
    cache = tmp_path / "cache"
    first = open_cached_lake(s3_lake_url, cache=cache, **s3_options)
    expected = make_dataset()
    ds = first.release("r1").open("ophys/experiment/1").load()
    xr.testing.assert_equal(ds[["dff", "events"]], expected[["dff", "events"]])
    fetched = immutable_gets(s3_gets)
    n_chunks = len(first.release("r1").manifest("ophys/experiment/1").chunks)
    assert fetched >= n_chunks + 1  # every chunk and the manifest came from S3 once
    assert first.storage.cache.nbytes > 0

    s3_gets.clear()
    rerun = open_cached_lake(s3_lake_url, cache=cache, **s3_options)  # a new session
    ds = rerun.release("r1").open("ophys/experiment/1").load()
    xr.testing.assert_equal(ds[["dff", "events"]], expected[["dff", "events"]])
    assert immutable_gets(s3_gets) == 0, s3_gets
    assert rerun.storage.cache.hits >= n_chunks + 1
    # the release record is not cached: it is read from the lake each session
    assert any("release.json" in key for _, key in s3_gets)


def test_corrupt_cache_entry_is_refetched(s3_lake_url, s3_options, s3_gets, tmp_path):
    cache = tmp_path / "cache"
    lake = open_cached_lake(s3_lake_url, cache=cache, **s3_options)
    lake.release("r1").open("ophys/experiment/1").load()
    h = next(iter(lake.release("r1").manifest("ophys/experiment/1").chunks.values()))
    entry = cache / cas.key_of(h)
    entry.write_bytes(b"\x00" * entry.stat().st_size)  # same size, wrong bytes

    s3_gets.clear()
    again = open_cached_lake(s3_lake_url, cache=cache, **s3_options)
    ds = again.release("r1").open("ophys/experiment/1").load()
    xr.testing.assert_equal(ds[["dff", "events"]], make_dataset()[["dff", "events"]])
    assert again.storage.cache.corrupt == 1
    assert immutable_gets(s3_gets) == 1  # only the bad entry came from S3 again
    assert cas.digest(entry.read_bytes()) == h  # and the entry is good again


def test_verify_sees_a_missing_object_the_cache_still_holds(tmp_path):
    url = str(tmp_path / "lake")
    with abo_lake.open_lake(url).stage("r1") as stage:
        stage.write("ophys/experiment/1", make_dataset())
    lake = open_cached_lake(url, cache=tmp_path / "cache")
    lake.release("r1").open("ophys/experiment/1").load()  # every chunk is now cached
    assert lake.verify("r1").ok
    h = next(iter(lake.release("r1").manifest("ophys/experiment/1").chunks.values()))
    (tmp_path / "lake" / cas.key_of(h)).unlink()
    assert lake.storage.read(cas.key_of(h))  # reads are served from the cache...
    report = open_cached_lake(url, cache=tmp_path / "cache").verify("r1")
    assert [m[2] for m in report.missing] == [h]  # ...but verify checks the lake itself
    missing = "cas/00/" + "0" * 64
    got = lake.storage.read_many([cas.key_of(h), missing])  # batch reads use the cache too
    assert cas.digest(got[cas.key_of(h)]) == h
    assert isinstance(got[missing], FileNotFoundError)
    got = lake.storage.uncached.read_many([cas.key_of(h), missing])
    assert all(isinstance(v, FileNotFoundError) for v in got.values())


def test_staging_never_publishes_a_manifest_only_the_cache_still_holds(tmp_path):
    """A manifest GC removed from the lake (an abandoned run's) may still be in a local cache:
    ``Stage.add`` and ``add_many`` check the lake itself, so no release references it."""
    from abo_lake.errors import ManifestError

    url = str(tmp_path / "lake")
    with abo_lake.open_lake(url).stage("r1") as stage:
        stage.write("ophys/experiment/1", make_dataset())
    with pytest.raises(RuntimeError), abo_lake.open_lake(url).stage("r0") as stage:
        lost = stage.write("ophys/experiment/2", make_dataset(seed=1))
        raise RuntimeError("abandoned")  # its manifest stays, referenced by no release
    key = manifest_key(lost)
    assert open_cached_lake(url, cache=tmp_path / "cache").storage.read_many([key])[key]
    (tmp_path / "lake" / key).unlink()  # what GC does to it after the grace
    for add in (
        lambda stage: stage.add("ophys/experiment/2", lost),
        lambda stage: stage.add_many([("ophys/experiment/2", lost, None)]),
    ):
        lake = open_cached_lake(url, cache=tmp_path / "cache")
        assert lake.storage.read(key)  # the cache still serves it to readers
        with pytest.raises(ManifestError, match="missing from the lake"), lake.stage("r2") as s:
            add(s)
        assert lake.releases() == ["r1"]


def test_size_bound_evicts_least_recently_used(tmp_path):
    cache = ChunkCache(tmp_path / "cache", max_bytes=1000)
    blobs = [bytes([i]) * 300 for i in range(5)]
    keys = [cas.key_of(cas.digest(b)) for b in blobs]
    for i, (k, b) in enumerate(zip(keys, blobs)):
        cache.put(k, b)
        os.utime(cache.directory / k, (1_000_000 + i, 1_000_000 + i))  # distinct ages
        if i == 2:
            assert cache.get(keys[0]) == blobs[0]  # a hit makes it the most recent
            os.utime(cache.directory / keys[0], (1_000_000 + 2.5, 1_000_000 + 2.5))
    on_disk = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert on_disk <= 1000
    assert cache.nbytes == on_disk
    assert cache.get(keys[1]) is None  # the least recently used went first
    assert cache.get(keys[0]) == blobs[0]
    assert cache.get(keys[4]) == blobs[4]
    big = b"x" * 2000  # larger than the bound: not cached at all
    cache.put(cas.key_of(cas.digest(big)), big)
    assert cache.get(cas.key_of(cas.digest(big))) is None


def test_only_content_named_objects_are_cached(tmp_path):
    cache = ChunkCache(tmp_path / "cache", max_bytes=10_000)
    data = b"record"
    h = cas.digest(data)
    assert content_hash(cas.key_of(h)) == h
    assert content_hash(f"manifests/{h[:2]}/{h}.json") == h
    for key in ("releases/r1/release.json", "catalog.yaml", f"cas/zz/{h}", f"cas/{h[:2]}/x"):
        assert content_hash(key) is None
        cache.put(key, data)
        assert cache.get(key) is None
    cache.put(cas.key_of(h), b"not the named content")  # a corrupt download is not kept
    assert cache.get(cas.key_of(h)) is None
    with pytest.raises(ValueError, match="max_bytes"):
        ChunkCache(tmp_path / "c2", max_bytes=0)


def test_new_release_is_seen_and_storage_pickles(tmp_path):
    url = str(tmp_path / "lake")
    with abo_lake.open_lake(url).stage("r1") as stage:
        stage.write("ophys/experiment/1", make_dataset())
    cached = open_cached_lake(url, cache=tmp_path / "cache")
    assert cached.releases() == ["r1"]
    with abo_lake.open_lake(url).stage("r2") as stage:
        stage.write("ophys/experiment/1", make_dataset(1))
    assert cached.releases() == ["r1", "r2"]
    ds = cached.release("r2").open("ophys/experiment/1").load()
    xr.testing.assert_equal(ds[["dff"]], make_dataset(1)[["dff"]])
    clone = pickle.loads(pickle.dumps(cached.storage))  # as dask ships it to workers
    assert isinstance(clone, CachedStorage)
    assert clone.cache.directory == cached.storage.cache.directory
    store = pickle.loads(pickle.dumps(cached.release("r2").store("ophys/experiment/1")))
    assert isinstance(store.storage, CachedStorage)


def test_open_lake_cache_option_and_verify_reads_manifests_from_the_lake(tmp_path):
    url = str(tmp_path / "lake")
    with abo_lake.open_lake(url).stage("r1") as stage:
        stage.write("ophys/experiment/1", make_dataset())
    lake = abo_lake.open_lake(url, cache=tmp_path / "cache", cache_max_bytes=2**20)
    assert lake.storage.cache.max_bytes == 2**20
    lake.release("r1").open("ophys/experiment/1").load()  # manifest and chunks cached
    h = lake.release("r1").record.datasets["ophys/experiment/1"]["manifest"]
    (tmp_path / "lake" / manifest_key(h)).unlink()
    assert lake.storage.read(manifest_key(h))  # the cache still serves it...
    report = abo_lake.open_lake(url, cache=tmp_path / "cache").verify("r1")
    assert not report.ok  # ...but verify reads the lake's own manifest
    assert manifest_key(h) in str(report)


def test_verify_reads_the_lake_itself_while_reads_stay_cached(
    s3_bucket, s3_options, s3_gets, tmp_path
):
    """A chunk object and a record part corrupted in the lake after the cache (and the
    lake's parsed parts) hold them are reported corrupt by verify on the same cached lake,
    which reads them from S3 without touching the cache; ordinary reads are still served from
    the cache (no chunk or manifest request)."""
    url = f"s3://{s3_bucket}/lake"
    with abo_lake.open_lake(url, **s3_options).stage("r1") as stage:
        h = stage.write("ophys/experiment/2", make_dataset())
        # 300 more paths: parts too big (together) to be inline, so stored
        stage.add_many((f"ophys/experiment/1{i:04d}", h, "ophys_experiment") for i in range(300))
    lake = open_cached_lake(url, cache=tmp_path / "cache", **s3_options)
    assert isinstance(lake.storage.uncached, Storage)
    assert not isinstance(lake.storage.uncached, CachedStorage)
    assert lake.storage.uncached.fs is lake.storage.fs
    assert Storage(url, **s3_options).uncached.url == lake.storage.uncached.url == lake.url
    rel = lake.release("r1")
    (route, part_hash), *_ = sorted(rel.record.datasets.hashes.items())
    assert route.startswith("ophys/experiment/1")
    assert len(rel.datasets()) == 301  # every part read and parsed
    manifest = rel.manifest("ophys/experiment/2")
    chunks = sorted(set(manifest.chunks.values()))
    chunk_key = next(k for k, c in manifest.chunks.items() if c == chunks[0])
    rel.open("ophys/experiment/2").load()  # every chunk and the manifest now cached
    assert lake.verify("r1").ok
    writer = abo_lake.open_lake(url, **s3_options).storage  # the lake, not the cache
    for key in (cas.key_of(chunks[0]), part_key(part_hash)):
        writer.write(key, b"\x00" * len(writer.read(key)))  # same size, wrong bytes

    s3_gets.clear()
    hits, misses = lake.storage.cache.hits, lake.storage.cache.misses
    report = lake.verify("r1")
    assert report.corrupt[0] == (f"record part {route}", part_key(part_hash), part_hash)
    assert len(report.corrupt) == 2  # the chunk, named by the first dataset still readable
    assert report.corrupt[1][1:] == (chunk_key, chunks[0])
    assert not report.missing
    # every chunk and the manifest were read from S3, the cache was not consulted
    assert immutable_gets(s3_gets) == len(chunks) + 1, s3_gets
    assert s3_gets[("get_object", f"lake/{part_key(part_hash)}")] >= 1
    assert (lake.storage.cache.hits, lake.storage.cache.misses) == (hits, misses)

    s3_gets.clear()
    ds = lake.release("r1").open("ophys/experiment/2").load()  # the cache's good copies
    xr.testing.assert_equal(ds[["dff", "events"]], make_dataset()[["dff", "events"]])
    assert immutable_gets(s3_gets) == 0, s3_gets
    assert lake.storage.cache.hits >= hits + len(chunks)
    assert cas.digest(lake.storage.read(cas.key_of(chunks[0]))) == chunks[0]


@pytest.fixture
def two_releases(s3_bucket, s3_options):
    """r1 and r2 on S3, differing in two datasets (one changed, one added), with 300 more
    paths sharing one manifest so that the records' parts are stored objects, not inline."""
    url = f"s3://{s3_bucket}/lake"
    lake = abo_lake.open_lake(url, **s3_options)
    with lake.stage("r1") as stage:
        h = stage.write("ophys/experiment/1", make_dataset())
        stage.write("ophys/experiment/2", make_dataset(1))
        stage.add_many((f"ophys/experiment/1{i:04d}", h, "ophys_experiment") for i in range(300))
    with lake.stage("r2") as stage:
        stage.add_many(
            (p, d["manifest"], d["kind"]) for p, d in lake.release("r1").record.datasets.items()
        )
        stage.write("ophys/experiment/2", make_dataset(2))
        stage.write("ophys/experiment/3", make_dataset(3))
    return url


def test_batch_reads_of_manifests_and_parts_come_from_the_cache(
    two_releases, s3_options, s3_gets, tmp_path
):
    """A rerun's diff and exact stats (another session, nothing parsed in memory) read the
    manifests and record parts from the cache: no manifest or part is fetched again, the
    records are; results are equal. A corrupted entry is fetched again, and only it."""
    cache = tmp_path / "cache"
    first = open_cached_lake(two_releases, cache=cache, **s3_options)
    parts = set(first.release("r1").record.datasets.hashes.values())
    parts |= set(first.release("r2").record.datasets.hashes.values())
    assert len(parts) >= 2  # stored parts, read in batches
    diff, stats = first.diff("r1", "r2"), first.stats(exact=True)
    assert [c.status for c in diff.datasets if c.status != "unchanged"] == ["changed", "added"]
    assert gets_under(s3_gets, "manifests") >= 4
    assert gets_under(s3_gets, "records") >= 2

    s3_gets.clear()
    rerun = open_cached_lake(two_releases, cache=cache, **s3_options)
    assert rerun.diff("r1", "r2") == diff
    assert rerun.stats(exact=True) == stats
    assert gets_under(s3_gets, "manifests") == 0, s3_gets
    assert gets_under(s3_gets, "records") == 0, s3_gets
    assert s3_gets[("get_object", "lake/releases/r2/release.json")] >= 1  # records: the lake's
    assert rerun.storage.cache.hits >= 4 + len(parts)

    m2 = rerun.release("r2").record.datasets["ophys/experiment/2"]["manifest"]
    part = sorted(parts)[0]
    for key in (manifest_key(m2), part_key(part)):
        entry = cache / key
        entry.write_bytes(b"\x00" * entry.stat().st_size)  # same size, wrong bytes
    s3_gets.clear()
    again = open_cached_lake(two_releases, cache=cache, **s3_options)
    assert again.diff("r1", "r2") == diff
    assert again.storage.cache.corrupt == 2
    assert gets_under(s3_gets, "manifests") == 1, s3_gets  # only the bad entries came again
    assert gets_under(s3_gets, "records") == 1, s3_gets
    assert s3_gets[("get_object", f"lake/{manifest_key(m2)}")] == 1
    assert cas.digest((cache / manifest_key(m2)).read_bytes()) == m2  # good again
    assert cas.digest((cache / part_key(part)).read_bytes()) == part


def test_verify_reads_manifests_and_parts_from_the_lake_after_batch_reads_cached_them(
    two_releases, s3_options, s3_gets, tmp_path
):
    lake = open_cached_lake(two_releases, cache=tmp_path / "cache", **s3_options)
    lake.diff("r1", "r2")
    lake.stats(exact=True)  # every manifest and part of both releases now cached
    record = lake.release("r2").record
    manifests = {d["manifest"] for d in record.datasets.values()}
    parts = set(record.datasets.hashes.values())
    s3_gets.clear()
    hits, misses = lake.storage.cache.hits, lake.storage.cache.misses
    assert lake.verify("r2").ok
    assert gets_under(s3_gets, "manifests") == len(manifests), s3_gets
    assert gets_under(s3_gets, "records") == len(parts), s3_gets
    assert (lake.storage.cache.hits, lake.storage.cache.misses) == (hits, misses)
