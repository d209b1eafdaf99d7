"""Release record format 3: how datasets are grouped into parts (issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from abo_lake.errors import ManifestError
from abo_lake.record import (
    INDEX_INLINE_MAX,
    INDEX_MAX,
    PART_MAX,
    ReleaseRecord,
    part_key,
    record_root,
    route_of,
    route_widths,
)


def _allen_like_ids(n: int, seed: int = 0) -> list[int]:
    """Ids like Allen's: half 9-digit (7.8e8-1e9), half 10-digit (1.0e9-1.3e9)."""
    rng = np.random.default_rng(seed)
    nine = rng.integers(780_000_000, 1_000_000_000, n // 2)
    ten = rng.integers(1_000_000_000, 1_300_000_000, n - n // 2)
    return sorted({int(i) for i in np.concatenate([nine, ten])})


def test_each_family_gets_its_own_route_width():
    big = [f"ophys/experiment/{i}" for i in _allen_like_ids(6_000)]
    small = [f"ccf/ccf_2017/{name}" for name in ("annotation", "template", "structures")]
    few = [f"celltypes/specimen/{500_000_000 + i}/ephys" for i in range(200)]
    widths = route_widths(big + small + few)
    assert widths["ccf/ccf_2017"] == 0  # one part: the family fits
    assert widths["celltypes/specimen"] == 0
    digits = widths["ophys/experiment"]
    assert digits >= 1
    sizes: dict[str, int] = {}
    for p in big:
        sizes[route_of(p, digits)] = sizes.get(route_of(p, digits), 0) + 1
    assert max(sizes.values()) <= PART_MAX
    coarser: dict[str, int] = {}
    for p in big:
        coarser[route_of(p, digits - 1)] = coarser.get(route_of(p, digits - 1), 0) + 1
    assert max(coarser.values()) > PART_MAX  # the fewest digits that fit


def _partitioned(datasets: dict) -> tuple[ReleaseRecord, dict[str, bytes]]:
    return ReleaseRecord.partitioned(
        name="r",
        created="2026-12-07T00:00:00+00:00",
        abo_lake_version="x",
        notes="",
        tables={},
        datasets=datasets,
        url_of=lambda key: f"s3://bucket/lake/{key}",
        where="test",
    )


def _objects(objects: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """A record's stored objects split into parts (datasets) and index objects (refs only)."""
    parts = {k: v for k, v in objects.items() if b'"datasets"' in v}
    return parts, {k: v for k, v in objects.items() if k not in parts}


def test_a_large_record_stores_parts_and_index_objects_and_lists_only_the_index():
    """6,000 Allen-like ids: the parts and the index objects routing to them are objects;
    the record lists the index objects only, so its size is set by their number (a handful
    of id prefixes), not by the number of datasets or of parts."""
    paths = [f"ophys/experiment/{i}" for i in _allen_like_ids(6_000)]
    datasets = {p: {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1} for p in paths}
    record, objects = _partitioned(datasets)
    parts, index = _objects(objects)
    assert all(isinstance(v, list) for v in record.refs.values())  # every index object stored
    assert len(record.refs) == len(index) <= 10
    assert len(parts) <= 4 * len(paths) / PART_MAX  # full parts, though routes are fine
    routes = {r for doc in index.values() for r in json.loads(doc)["refs"]}
    assert len(routes) > 2 * len(parts)  # consecutive routes share a part
    assert max(len(json.loads(doc)["refs"]) for doc in index.values()) <= INDEX_MAX
    assert len(record.to_bytes()) < 160 * len(record.refs) + 1_000
    assert sorted(record.datasets) == sorted(paths)  # preloaded: the publisher's view
    parsed = ReleaseRecord.from_bytes(record.to_bytes(), where="test")
    parsed.datasets.bind(lambda keys: {k: objects[k] for k in keys})
    assert {p: parsed.datasets[p] for p in parsed.datasets} == datasets
    assert {part_key(h) for h in parsed.datasets.objects()} == set(objects)
    # one dataset more, one changed: only their parts and index objects are new
    more = dict(datasets)
    more["ophys/experiment/955555555"] = datasets[paths[0]]
    more[paths[len(paths) // 2]] = {**datasets[paths[0]], "manifest": "b" * 64}
    _, objects2 = _partitioned(more)
    parts2, index2 = _objects(objects2)
    assert 1 <= len(set(parts2) - set(parts)) <= 3  # a part may split when it overflows
    assert 1 <= len(set(index2) - set(index)) <= 2  # the index objects routing to them


def test_the_record_grows_by_id_prefixes_not_by_datasets():
    """From 6,000 to 60,000 datasets the record grows only when the ids need another index
    digit (x10): what a re-release rewrites besides the changed dataset's part and index
    object stays a few kB, not the 187 kB of one reference per route (stop 24)."""
    sizes = {}
    for n in (6_000, 60_000):
        paths = [f"ophys/experiment/{i}" for i in _allen_like_ids(n)]
        entry = {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1}
        record, objects = _partitioned(dict.fromkeys(paths, entry))
        _, index = _objects(objects)
        sizes[n] = len(record.to_bytes())
        assert max(map(len, index.values())) < INDEX_MAX * 120  # route -> part URL
    assert sizes[60_000] < 5_000  # 25 index objects for 60,000 datasets


def test_a_mid_size_record_keeps_its_index_inline_and_reads_one_part_per_path():
    """Index objects together within INDEX_INLINE_MAX live in the record: a path costs one
    part read, as before the index level; each part is read once."""
    paths = [f"ophys/experiment/{9_000_000 + i}" for i in range(600)]
    entry = {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1}
    record, objects = _partitioned(dict.fromkeys(paths, entry))
    parts, index = _objects(objects)
    assert parts
    assert not index
    assert all(isinstance(v, str) for v in record.refs.values())  # inline index documents
    assert len(record.to_bytes()) <= INDEX_INLINE_MAX + 1_000
    parsed = ReleaseRecord.from_bytes(record.to_bytes(), where="test")
    reads: list[str] = []
    parsed.datasets.bind(lambda keys: reads.extend(keys) or {k: objects[k] for k in keys})
    assert parsed.datasets[paths[0]] == entry
    assert len(reads) == 1
    assert reads[0] in parts
    assert parsed.datasets[paths[1]] == entry
    assert len(reads) == 1
    assert len(parsed.datasets.under("ophys/experiment/90001")) == 100
    assert len(reads) == len(set(reads))


def test_a_path_reads_one_index_object_and_one_part():
    """With stored index objects, ``datasets[path]`` reads the index object its route is in
    and then the part: two small reads, whatever the size of the release."""
    paths = [f"ophys/experiment/{i}" for i in _allen_like_ids(6_000)]
    entry = {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1}
    record, objects = _partitioned(dict.fromkeys(paths, entry))
    _parts, index = _objects(objects)
    parsed = ReleaseRecord.from_bytes(record.to_bytes(), where="test")
    reads: list[str] = []
    parsed.datasets.bind(lambda keys: reads.extend(keys) or {k: objects[k] for k in keys})
    assert parsed.datasets[paths[-1]] == entry
    assert [k in index for k in reads] == [True, False]
    with pytest.raises(KeyError):
        parsed.datasets["ophys/experiment/5"]  # no index route "5": nothing to read
    assert len(reads) == 2
    assert parsed.datasets.get("ophys/experiment/1299999999") is None


def test_an_altered_or_forged_index_object_is_refused():
    """An index object is checked against the hash the record holds; a forged record
    (root recomputed) whose index object routes a route of another index object is refused."""
    paths = [f"ophys/experiment/{i}" for i in _allen_like_ids(6_000)]
    entry = {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1}
    record, objects = _partitioned(dict.fromkeys(paths, entry))
    doc = json.loads(record.to_bytes())
    (first, ref), (_second, ref2) = sorted(doc["refs"].items())[:2]
    altered = dict(objects)
    key = ref[0].removeprefix("s3://bucket/lake/")
    altered[key] = altered[key].replace(b"records/", b"records//", 1)
    parsed = ReleaseRecord.from_bytes(record.to_bytes(), where="test")
    parsed.datasets.bind(lambda keys: {k: altered.get(k, FileNotFoundError(k)) for k in keys})
    bad = parsed.datasets.errors()
    assert bad[f"record index {first.removesuffix('.json')}"] == (key, key[11:-5], False)
    with pytest.raises(ManifestError, match=f"record index {key}.*does not match"):
        list(parsed.datasets)
    # forged: the second index object's document served under the first one's route
    forged = json.loads(objects[ref2[0].removeprefix("s3://bucket/lake/")])
    doc["refs"][first] = json.dumps(forged)
    doc["root"] = record_root(doc)
    parsed = ReleaseRecord.from_bytes(json.dumps(doc).encode(), where="test")
    parsed.datasets.bind(lambda keys: {k: objects[k] for k in keys})
    with pytest.raises(ManifestError, match="which is not in"):
        list(parsed.datasets)


def test_a_rerelease_stages_known_manifests_without_reading_them(local_lake, monkeypatch):
    """Stage.add_many takes a manifest's kind and size from the newest release when it holds
    that manifest: re-releasing N unchanged datasets reads the record's parts, not N
    manifests (a fresh publisher used to read every one)."""
    from test_lake import make_dataset

    import abo_lake

    with local_lake.stage("r1") as stage:
        h = stage.write("ophys/experiment/1", make_dataset(n_time=60))
        stage.add_many((f"ophys/experiment/{2 + 7919 * i}", h, None) for i in range(600))
    first = local_lake.release("r1").record.datasets
    lake = abo_lake.open_lake(local_lake.url)  # a fresh publisher
    read: list[str] = []
    for name in ("read", "read_many"):
        real = getattr(lake.storage, name)

        def counted(keys, _real=real, _name=name):
            read.extend([keys] if _name == "read" else keys)
            return _real(keys)

        monkeypatch.setattr(lake.storage, name, counted)
    with lake.stage("r2") as stage:
        stage.add_many((p, first[p]["manifest"], None) for p in first)
        assert not [k for k in read if k.startswith("manifests/")]  # (the head reads some)
    parts = [k for k in read if k.startswith("records/")]
    assert parts  # r1's parts, read once (by add_many), shared by publish and the head
    assert len(parts) == len(set(parts))
    # the listing that finds the newest release: once per stage (add_many and publish),
    # then the head's summary and the root catalog each list the releases
    assert read.count("releases/r1/release.json") == 3
    second = lake.release("r2").record.datasets
    assert {p: second[p] for p in second} == {p: first[p] for p in first}  # kind, nbytes too


def test_a_record_of_stop_24_without_an_index_level_still_reads():
    """Format-3 records published before the index level reference stored parts from the
    record itself (``<route>.json`` -> part); they read, check and route as before."""
    paths = [f"ophys/experiment/{i}" for i in _allen_like_ids(6_000)]
    datasets = {p: {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1} for p in paths}
    record, objects = _partitioned(datasets)
    parts, index = _objects(objects)
    doc = json.loads(record.to_bytes())
    doc["refs"] = {r: v for i in index.values() for r, v in json.loads(i)["refs"].items()}
    del doc["datasets"]["index"]
    doc["root"] = record_root(doc)
    old = ReleaseRecord.from_bytes(json.dumps(doc).encode(), where="test")
    reads: list[str] = []
    old.datasets.bind(lambda keys: reads.extend(keys) or {k: parts[k] for k in keys})
    assert old.datasets[paths[7]] == datasets[paths[7]]
    assert len(reads) == 1  # the part, straight from the record
    assert {p: old.datasets[p] for p in old.datasets} == datasets
    assert {part_key(h) for h in old.datasets.objects()} == set(parts)
