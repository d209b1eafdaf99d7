"""Test helpers that users of abo_lake can reuse: prove laziness, count reads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dask

__all__ = ["raise_if_dask_computes"]


class _CountingScheduler:
    def __init__(self, max_computes: int) -> None:
        self.max_computes = max_computes
        self.total = 0

    def __call__(self, dsk, keys, **kwargs):
        self.total += 1
        if self.total > self.max_computes:
            raise RuntimeError(
                f"dask computed {self.total} time(s) where at most {self.max_computes} "
                "were allowed: something is not lazy"
            )
        return dask.get(dsk, keys, **kwargs)


@contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[_CountingScheduler]:
    """Within the block, any dask compute beyond ``max_computes`` raises RuntimeError."""
    scheduler = _CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler
