"""Release record format 3: how datasets are grouped into parts (issue 18)."""

from __future__ import annotations

import numpy as np

from abo_lake.record import PART_MAX, ReleaseRecord, route_of, route_widths


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


def test_a_large_record_stores_its_parts_and_lists_only_them():
    """6,000 Allen-like ids: the parts are objects, the record a list of part hashes whose
    size is set by the number of parts, not of datasets."""
    paths = [f"ophys/experiment/{i}" for i in _allen_like_ids(6_000)]
    datasets = {p: {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1} for p in paths}
    record, parts = _partitioned(datasets)
    assert all(isinstance(v, list) for v in record.refs.values())  # every part stored
    assert len(parts) <= 4 * len(paths) / PART_MAX  # full parts, though routes are fine
    assert len(record.refs) > 2 * len(parts)  # consecutive routes share a part
    assert len(record.to_bytes()) < 160 * len(record.refs) + 1_000
    assert sorted(record.datasets) == sorted(paths)  # preloaded: the publisher's view
    parsed = ReleaseRecord.from_bytes(record.to_bytes(), where="test")
    parsed.datasets.bind(lambda keys: {k: parts[k] for k in keys})
    assert {p: parsed.datasets[p] for p in parsed.datasets} == datasets
    # one dataset more, one changed: only their parts are new (part ends are content-defined)
    more = dict(datasets)
    more["ophys/experiment/955555555"] = datasets[paths[0]]
    more[paths[len(paths) // 2]] = {**datasets[paths[0]], "manifest": "b" * 64}
    _, parts2 = _partitioned(more)
    assert 1 <= len(set(parts2) - set(parts)) <= 3  # a part may split when it overflows


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
    second = lake.release("r2").record.datasets
    assert {p: second[p] for p in second} == {p: first[p] for p in first}  # kind, nbytes too
