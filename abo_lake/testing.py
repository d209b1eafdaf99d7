"""Test helpers that users of abo_lake can reuse: prove laziness, count reads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask

__all__ = ["raise_if_dask_computes", "recorded_chunk_reads"]


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


@contextmanager
def recorded_chunk_reads(store: Any) -> Iterator[list[str]]:
    """Within the block, the chunk keys a lake store (``release.store(path)``) serves through
    Zarr, in order (metadata documents are not recorded).

    Examples
    --------
    >>> ds = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)  # doctest: +SKIP
    >>> with recorded_chunk_reads(store) as keys:  # doctest: +SKIP
    ...     ds.dff.isel(cell_specimen_id=0).values
    """
    keys: list[str] = []
    get = store.get

    async def recording_get(key: str, *args: Any, **kwargs: Any) -> Any:
        if key in store._chunks:
            keys.append(key)
        return await get(key, *args, **kwargs)

    store.get = recording_get
    try:
        yield keys
    finally:
        del store.get  # the class's method again
