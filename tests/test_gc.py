"""Garbage collection never loses a referenced chunk (hypothesis over random histories)."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime

import numpy as np
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import abo_lake
from abo_lake import cas
from abo_lake.lake import MIN_GRACE


def dataset(seed: int) -> xr.Dataset:
    ds = xr.Dataset({"x": ("t", np.random.default_rng(seed % 3).normal(size=3000))})
    ds["x"].encoding["chunks"] = (1000,)
    if seed >= 3:  # share two chunks with the seed-3 dataset, change one
        ds["x"][:10] = seed
    return ds


OPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "write", "publish", "abandon", "crash", "gc"]),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_gc_never_deletes_what_a_release_or_a_young_stage_references(ops):
    with tempfile.TemporaryDirectory() as tmp:
        lake = abo_lake.open_lake(tmp)
        open_stages: list[tuple[ExitStack, abo_lake.Stage]] = []
        names = iter(f"r{i}" for i in range(100))
        for op, arg in ops:
            if op == "open" and len(open_stages) < 2:
                stack = ExitStack()
                open_stages.append((stack, stack.enter_context(lake.stage(next(names)))))
            elif op == "write" and open_stages:
                open_stages[arg % len(open_stages)][1].write(f"d/{arg % 2}", dataset(arg))
            elif op in ("publish", "abandon", "crash") and open_stages:
                stack, stage = open_stages.pop(0)
                if op == "publish":
                    stack.close()
                elif op == "abandon":
                    stack.__exit__(RuntimeError, RuntimeError("abandoned"), None)
                # "crash": dropped without cleanup, like a killed process
            elif op == "gc":
                if open_stages:
                    lake.gc(grace="1h", dry_run=False)
                else:  # later than any heartbeat (a crashed stage's too) by MIN_GRACE
                    later = datetime.now(UTC) + 2 * MIN_GRACE
                    lake.gc(grace=MIN_GRACE, dry_run=False, now=later)
                if not open_stages:  # everything unreferenced is collected
                    referenced = {
                        h
                        for name in lake.releases()
                        for p in lake.release(name).datasets()
                        for h in lake.release(name).manifest(p).chunks.values()
                    }
                    assert {k.rsplit("/", 1)[1] for k in lake.storage.find("cas")} == referenced
            for name in lake.releases():
                assert lake.verify(name).ok, f"{name} lost a chunk after {op}"
            for _, stage in open_stages:
                for entry in stage.datasets.values():
                    m = lake._manifest(entry["manifest"], where="test")
                    assert all(lake.storage.exists(cas.key_of(h)) for h in m.chunks.values())
        for stack, _ in open_stages:
            stack.close()
        for name in lake.releases():
            assert lake.verify(name).ok
