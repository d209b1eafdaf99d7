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


def test_a_large_record_stores_its_parts_and_lists_only_them():
    """6,000 Allen-like ids: the parts are objects, the record a list of part hashes whose
    size is set by the number of parts, not of datasets."""
    paths = [f"ophys/experiment/{i}" for i in _allen_like_ids(6_000)]
    datasets = {p: {"manifest": "a" * 64, "kind": "ophys_experiment", "nbytes": 1} for p in paths}
    record, parts = ReleaseRecord.partitioned(
        name="r",
        created="2026-12-07T00:00:00+00:00",
        abo_lake_version="x",
        notes="",
        tables={},
        datasets=datasets,
        url_of=lambda key: f"s3://bucket/lake/{key}",
        where="test",
    )
    assert len(parts) == len(record.refs)  # every part stored, none inline
    assert len(parts) <= 4 * len(paths) / PART_MAX * 4  # well filled (mixed id lengths)
    assert len(record.to_bytes()) < 160 * len(parts) + 1_000
    assert sorted(record.datasets) == sorted(paths)  # preloaded: the publisher's view
