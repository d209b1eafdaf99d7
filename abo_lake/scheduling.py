"""Where the lake's eager analyses compute: one rule, :func:`eager_scheduler`.

An eager analysis (one that returns NumPy/pandas results, such as ``ccf.unionize`` or
``ecephys_metrics``' tables) runs one ``dask.compute`` on the caller's behalf. It runs where
the caller asked, as dask itself would choose: the ``scheduler`` set with ``dask.config``
first, then a running ``distributed`` Client (on a worker, the worker's client). Without
either it runs on dask's local threads, the scheduler dask arrays and delayed objects use by
default, passed as the function :func:`dask.threaded.get`: looking for a Client (or naming a
scheduler by a string such as ``"threads"``) makes dask import ``distributed``, ~0.2 s of CPU
in a fresh process, more than a small analysis or a point query costs. A Client can only exist
once ``distributed`` is imported, so the rule looks for one only then: the choice is dask's
own, without that import.

Small values that decide the shape of a graph (table columns read by ``ophys`` and
``behavior``) are computed in the calling thread instead (:func:`compute_here`), never on a
cluster. Analyses that submit their own futures (``glif.simulate``: the stimulus is scattered
once to every worker) find the Client with :func:`running_client`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import dask
import dask.local
import dask.threaded

__all__ = ["compute", "compute_here", "eager_scheduler", "running_client"]


def eager_scheduler() -> Callable[..., Any] | Any | None:
    """The ``scheduler=`` argument for an eager analysis's ``dask.compute``.

    Returns
    -------
    None, a Client or dask.threaded.get
        None when ``dask.config`` names a scheduler: dask then uses it (a Client made the
        default, as ``distributed.Client()`` is, sets it to ``"dask.distributed"``, so dask
        uses that Client). Else, if ``distributed`` is imported, the Client
        ``distributed.get_client`` finds (as dask would look for one: on a worker, its
        client). Else :func:`dask.threaded.get` (local threads, without importing
        ``distributed``).
    """
    if dask.config.get("scheduler", None) is not None:
        return None
    client = running_client()
    return dask.threaded.get if client is None else client


def running_client() -> Any | None:
    """The ``distributed`` Client dask would look for (``distributed.get_client``: the
    default Client, or on a worker its client), or None. Never imports ``distributed``: a
    Client exists only once it is imported."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:  # no Client running (nor a worker's)
        return None


def compute(*collections: Any, **kwargs: Any) -> tuple:
    """``dask.compute(*collections, **kwargs)`` on :func:`eager_scheduler`'s choice."""
    return dask.compute(*collections, scheduler=eager_scheduler(), **kwargs)


def compute_here(*collections: Any, **kwargs: Any) -> tuple:
    """``dask.compute`` in the calling thread, whatever the caller's scheduler: for small
    values that decide the shape of a graph (table columns), never sent to a cluster. The
    synchronous scheduler named by its function, so ``distributed`` is not imported."""
    return dask.compute(*collections, scheduler=dask.local.get_sync, **kwargs)
