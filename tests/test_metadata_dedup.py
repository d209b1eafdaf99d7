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
        "releases/r2/byid.json",
        "releases/r2/catalog.yaml",
        "releases/r2/head.json",
        "releases/r2/release.json",
    ]
    assert len(added) == 6  # nothing else: no per-dataset copies, whatever n is
    assert set(rewritten) <= {"catalog.yaml"}  # the root catalog lists r2
    assert added["releases/r2/byid.json"] < 64 + 250 * n  # small: a path and a URL each
    assert local_lake.verify("r2").ok


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
            b = cat[f"ophys_experiment_{{ident}}"].read()
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
