"""Metadata is small and deduplicated (issue 18): a re-release that changes one chunk of one
dataset stores that chunk, that dataset's manifest and a fixed number of small objects,
whatever the number of datasets; plain intake and plain xarray still open everything."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_lake import make_dataset

from abo_lake.manifest import manifest_key


def _keys(lake) -> dict[str, int]:
    return {k: v["size"] for k, v in lake.storage.find("").items()}


def _rerelease(lake, n: int) -> tuple[dict[str, int], dict[str, int], list[int]]:
    """Publish ``n`` experiments as r1, then r2 with one chunk of one of them changed;
    return (objects added by r2, objects r2 rewrote, the ids)."""
    ids = [951_000_000 + i for i in range(n)]
    with lake.stage("r1") as stage:
        for i, ident in enumerate(ids):
            stage.write(f"ophys/experiment/{ident}", make_dataset(seed=i, n_time=600))
    before = _keys(lake)
    with lake.stage("r2") as stage:
        for i, ident in enumerate(ids):
            ds = make_dataset(seed=i, n_time=600)
            if i == 0:
                ds["dff"].values[0, 0] += 1.0  # one chunk of one dataset changes
            stage.write(f"ophys/experiment/{ident}", ds)
    after = _keys(lake)
    added = {k: s for k, s in after.items() if k not in before}
    rewritten = {k: s for k, s in after.items() if k in before and before[k] != s}
    return added, rewritten, ids


@pytest.mark.parametrize("n", [2, 6])
def test_a_one_chunk_rerelease_adds_a_fixed_number_of_small_objects(local_lake, n):
    added, rewritten, ids = _rerelease(local_lake, n)
    rel = local_lake.release("r2")
    changed = rel.record.datasets[f"ophys/experiment/{ids[0]}"]["manifest"]
    chunks = [k for k in added if k.startswith("cas/")]
    assert len(chunks) == 1  # the changed dff chunk
    assert [k for k in added if k.startswith("manifests/")] == [manifest_key(changed)]
    assert sorted(k for k in added if k.startswith("releases/")) == [
        "releases/r2/catalog.yaml",
        "releases/r2/head.json",
        "releases/r2/release.json",
    ]
    assert len(added) == 5  # nothing else: the few datasets' part is inline in the record
    assert set(rewritten) <= {"catalog.yaml"}  # the root catalog lists r2
    assert local_lake.verify("r2").ok


def _plain_intake_by_id(lake, release: str, ids: list[str]) -> list[float]:
    """``dff[0, 0]`` of each id, read by plain intake (no abo_lake) from the stored catalog."""
    root = lake.storage.url_of("catalog.yaml")
    script = textwrap.dedent(
        f"""
        import sys, intake
        cat = intake.from_yaml_file({root!r})[{release!r}].read()
        for ident in {ids!r}:
            print(float(cat(ophys_experiment_id=ident).ophys_experiment.read()["dff"][0, 0]))
        assert "abo_lake" not in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return [float(v) for v in out.stdout.split()]


def _stage_many(
    lake, name: str, n: int, changed: str | None = None, wide: bool = False
) -> tuple[list[str], str]:
    """Stage ``n`` experiment paths sharing one stored dataset (as a re-release of unchanged
    data does: manifests are content-addressed); ``changed`` gets a dataset of its own.
    Ids go from 951,000,000 by 7919, like a few years of Allen ids; ``wide``: half of them
    9-digit from 780,000,000 and half 10-digit from 1,000,000,000, like the Observatory's."""
    ids = [951_000_000 + 7919 * i for i in range(n)]
    if wide:
        ids = [780_000_000 + 73_000 * i for i in range(n // 2)]
        ids += [1_000_000_000 + 100_000 * i for i in range(n - n // 2)]
    paths = [f"ophys/experiment/{i}" for i in ids]
    with lake.stage(name) as stage:
        h = stage.write(paths[0], make_dataset(seed=0, n_time=60))
        stage.add_many((p, h, "ophys_experiment") for p in paths[1:])
        if changed:
            ds = make_dataset(seed=0, n_time=60)
            ds["dff"].values[0, 0] += 1.0
            stage.write(changed, ds)
    return paths, h


@pytest.mark.parametrize("n", [1_500, 6_000])
def test_metadata_a_rerelease_adds_does_not_grow_with_the_release(local_lake, n):
    """At Observatory-like sizes the record keeps its datasets in content-addressed parts of
    at most PART_MAX, reached through index objects: a re-release changing one dataset adds
    that part, the index object routing to it (inline in the record while the index is
    small), a record the size of the index, a head and a catalog the size of the kinds,
    nothing per dataset."""
    from abo_lake.record import INDEX_INLINE_MAX, PART_MAX

    wide = n == 6_000
    paths, _ = _stage_many(local_lake, "r1", n, wide=wide)
    before = _keys(local_lake)
    _stage_many(local_lake, "r2", n, changed=paths[n // 2], wide=wide)
    after = _keys(local_lake)
    added = {k: s for k, s in after.items() if k not in before}
    rel = local_lake.release("r2")
    stored_index = bool(rel.record.datasets.index_hashes)
    assert stored_index == (n == 6_000)  # the index outgrows the record between the two
    records = [k for k in added if k.startswith("records/")]
    parts = [k for k in records if b'"datasets"' in local_lake.storage.read(k)]
    assert len(parts) == 1  # the one part holding the changed dataset
    assert len(records) == 1 + stored_index  # and the one index object routing to it
    assert len([k for k in added if k.startswith("cas/")]) == 1
    assert len([k for k in added if k.startswith("manifests/")]) == 1
    assert sorted(k for k in added if k.startswith("releases/")) == [
        "releases/r2/catalog.yaml",
        "releases/r2/head.json",
        "releases/r2/release.json",
    ]
    assert len(added) == 6 + stored_index
    assert added[parts[0]] < PART_MAX * 400  # a path, its manifest URL, kind and size each
    record = added["releases/r2/release.json"]
    assert record < INDEX_INLINE_MAX + 2_000  # bounded: neither datasets nor parts
    if stored_index:
        assert record < 1_000 + 200 * len(rel.record.refs)  # a reference per index object
        assert len(rel.record.refs) <= 10
        assert added[records[records[0] in parts]] < 128 * 150  # route -> part URL each
    assert added["releases/r2/catalog.yaml"] < 8_000  # kinds and tables, not datasets
    # everything is still reachable, by path and by id, and checks
    assert rel.datasets() == sorted(paths)
    assert len(rel.datasets("ophys/experiment/951")) == len([p for p in paths if "/951" in p])
    diff = local_lake.diff("r1", "r2")
    assert [d.path for d in diff.datasets if d.status != "unchanged"] == [paths[n // 2]]
    assert local_lake.verify("r2").ok
    # plain intake follows record -> (stored) index -> stored part -> manifest, by id
    want = float(make_dataset(seed=0, n_time=60)["dff"][0, 0])
    ids = [paths[n // 2].rsplit("/", 1)[1], paths[-1].rsplit("/", 1)[1]]
    assert _plain_intake_by_id(local_lake, "r2", ids) == [want + 1.0, want]


def test_plain_intake_and_xarray_open_every_dataset_of_the_rerelease(local_lake):
    _, _, ids = _rerelease(local_lake, 2)
    rel = local_lake.release("r2")
    root = local_lake.storage.url_of("catalog.yaml")
    manifests = [rel.manifest_url(f"ophys/experiment/{i}") for i in ids]
    script = textwrap.dedent(
        f"""
        import sys, intake, xarray as xr
        cat = intake.from_yaml_file({root!r}).r2.read()
        for ident, fo in zip({ids!r}, {manifests!r}):
            a = cat(ophys_experiment_id=ident).ophys_experiment.read()
            b = cat(ophys_experiment_id=str(ident)).ophys_experiment.read()
            c = xr.open_dataset(
                "reference://", engine="zarr", chunks={{}}, consolidated=True, zarr_format=3,
                storage_options={{"fo": fo, "remote_protocol": "file",
                                 "remote_options": {{"asynchronous": True}}}},
            )
            print(float(a["dff"][0, 0]), float(b["dff"][0, 0]), float(c["dff"][0, 0]))
        assert "abo_lake" not in sys.modules
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [list(map(float, line.split())) for line in out.stdout.split("\n") if line]
    for i, row in enumerate(rows):
        want = make_dataset(seed=i, n_time=600)["dff"].values[0, 0] + (1.0 if i == 0 else 0)
        np.testing.assert_array_equal(row, [want] * 3)
