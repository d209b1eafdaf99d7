"""S3 faults between s3fs and the moto server (issue 17): 5xx, SlowDown, connection resets
before and after the server acted, truncated bodies, injected by ``tests/faultproxy.py``.

For storage operations, publishing, reading, verifying and conversion: nothing is lost,
nothing wrong is served (values equal the fault-free ones), and every fault is either retried
(the operation succeeds) or reported by an error naming the object.

With the project's defaults (s3fs with botocore's default retry mode), every one of these
faults, injected once per request, is retried by botocore or s3fs; a persistent fault ends
in an error after botocore's attempts.

Botocore waits between attempts (a random fraction of 1, 2, 4, 8 s); these tests keep its
retry decisions, attempt counts and schedule, and only shorten each wait to
:data:`BACKOFF_SCALE` of what botocore asked for (:func:`shorten_backoff`, in the test process
and on the cluster's workers), so the suite spends seconds, not minutes, sleeping.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from faultproxy import FAULTS, FaultProxy
from test_lake import make_dataset

import abo_lake
from abo_lake import jobs

DATASET = "ophys/experiment/1"
#: Each of botocore's waits between attempts lasts this fraction of what it asked for.
BACKOFF_SCALE = 0.02

_original_sleep = None
_asked: list[float] = []


def shorten_backoff(scale: float = BACKOFF_SCALE) -> None:
    """Make each wait of aiobotocore's endpoint between attempts last ``scale`` times the delay
    botocore computed (retry handler, attempts and schedule unchanged), in this process until
    :func:`restore_backoff`; the delays asked for are recorded."""
    global _original_sleep
    from aiobotocore.endpoint import AioEndpoint

    if _original_sleep is None:
        _original_sleep = AioEndpoint._sleep
    original = _original_sleep
    _asked.clear()

    async def _sleep(endpoint: object, seconds: float) -> None:
        _asked.append(seconds)
        await original(endpoint, seconds * scale)

    AioEndpoint._sleep = _sleep


def restore_backoff() -> list[float]:
    """Undo :func:`shorten_backoff`; return the delays (seconds) botocore asked for meanwhile."""
    global _original_sleep
    from aiobotocore.endpoint import AioEndpoint

    if _original_sleep is not None:
        AioEndpoint._sleep = _original_sleep
        _original_sleep = None
    asked = list(_asked)
    _asked.clear()
    return asked


@pytest.fixture(autouse=True)
def backoff():
    """botocore's waits shortened in the test process; the list of delays it asked for."""
    shorten_backoff()
    try:
        yield _asked
    finally:
        restore_backoff()


@pytest.fixture
def proxy(s3_endpoint):
    """A fault proxy in front of the session's moto server, stopped after the test."""
    with FaultProxy(s3_endpoint, max_requests=5_000) as p:
        yield p


@pytest.fixture
def proxied(proxy, s3_bucket):
    """Options for a lake reached through the proxy (same bucket as the direct options)."""
    return {
        "url": f"s3://{s3_bucket}/lake",
        "endpoint_url": proxy.url,
        "key": "testing",
        "secret": "testing",
        "anon": False,
        "skip_instance_cache": True,
    }


def _lake(options: dict) -> abo_lake.Lake:
    options = dict(options)
    return abo_lake.open_lake(options.pop("url"), **options)


def _small() -> xr.Dataset:
    return make_dataset(n_cells=4, n_time=600)


def _publish(lake, name: str = "r1") -> None:
    with lake.stage(name) as stage:
        stage.write(DATASET, _small())


def _assert_served_equal(lake, name: str = "r1") -> None:
    got = lake.release(name).open(DATASET).load()
    want = _small()
    for var in want.data_vars:
        np.testing.assert_array_equal(got[var].values, want[var].values)


# -- storage operations --------------------------------------------------------------------
@pytest.mark.parametrize("fault", FAULTS)
def test_each_storage_operation_retries_a_fault(proxy, proxied, fault):
    lake = _lake(proxied)
    st = lake.storage
    st.write("x/a", b"a" * 5000)
    ops = {
        "GET": lambda: st.read("x/a") == b"a" * 5000,
        "PUT": lambda: st.write("x/b", b"b" * 100) is None and st.read("x/b") == b"b" * 100,
        "HEAD": lambda: st.exists("x/a"),
    }
    for method, op in ops.items():
        proxy.clear()
        proxy.add(fault, "/x/", method, times=2)
        assert op(), (fault, method)
        if fault != "truncate" or method == "GET":  # PUT/HEAD responses have no body to cut
            assert [h.fault for h in proxy.faults()] == [fault, fault], method
    proxy.clear()
    proxy.add(fault, "/x/", "PUT", times=2)
    written = st.put_if_absent("x/c", b"c")
    assert st.read("x/c") == b"c"
    # a lost response to a put-if-absent that the server performed reads as "already there"
    assert written is (fault != "reset-after")


@pytest.mark.parametrize("fault", ["500", "slowdown", "reset-before", "truncate"])
def test_a_persistent_fault_is_reported_naming_the_object(proxy, proxied, backoff, fault):
    lake = _lake(proxied)
    lake.storage.write("x/a", b"a" * 5000)
    proxy.add(fault, "/x/a", "GET", times=1000)
    with pytest.raises(Exception) as err:
        lake.storage.read("x/a")
    assert "x/a" in str(err.value), repr(err.value)
    assert len(proxy.faults()) >= 2  # retried before giving up
    if fault != "truncate":  # a cut body is retried by s3fs, the others by botocore too
        assert len(backoff) >= 4, backoff  # botocore's default attempts, with its backoff


# -- publish, read, verify ----------------------------------------------------------------
@pytest.mark.parametrize("fault", FAULTS)
def test_publish_under_faults_completes_the_same_release(proxy, proxied, s3_options, fault):
    lake = _lake(proxied)
    proxy.add(fault, "/lake/", every=3)  # every third request of any kind, retried
    _publish(lake)
    assert proxy.faults(), "no fault was injected"
    proxy.clear()
    # verify through the proxy (the catalogs name its endpoint), now fault-free
    report = lake.verify("r1")
    assert report.ok, str(report)
    # read directly from moto: what is stored is complete and right
    direct = abo_lake.open_lake(proxied["url"], **s3_options)
    assert direct.releases() == ["r1"]
    _assert_served_equal(direct)
    reference = abo_lake.open_lake(proxied["url"] + "-ref", **s3_options)
    _publish(reference)
    got, want = direct.release("r1"), reference.release("r1")
    assert got.datasets() == want.datasets()
    # the same chunk objects (manifest hashes can differ by metadata written at publish)
    assert got.manifest(DATASET).chunks == want.manifest(DATASET).chunks


def test_a_reset_after_the_record_put_completes_the_release_end_to_end(proxy, proxied):
    """The server stored release.json, the client lost the response and retried into
    put-if-absent: the publish completes (catalog, root catalog) instead of stopping."""
    lake = _lake(proxied)
    proxy.add("reset-after", "releases/r1/release.json", "PUT")
    _publish(lake)
    assert [h.fault for h in proxy.faults()] == ["reset-after"]
    proxy.clear()
    assert lake.storage.exists("releases/r1/catalog.yaml")
    assert lake.storage.exists("catalog.yaml")
    report = lake.verify("r1")
    assert report.ok, str(report)
    assert not report.incomplete
    assert lake.releases() == ["r1"]
    _assert_served_equal(lake)


@pytest.mark.parametrize("fault", FAULTS)
def test_reads_under_faults_serve_the_fault_free_values(proxy, proxied, fault):
    lake = _lake(proxied)
    _publish(lake)
    proxy.add(fault, "/cas/", "GET", every=2)
    _assert_served_equal(lake)
    assert proxy.faults()
    proxy.clear()
    proxy.add(fault, "/cas/", "GET", every=2)
    got = lake.release("r1").open(DATASET, chunks={})["dff"].mean().compute()
    assert float(got) == float(_small()["dff"].mean())


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_under_faults_passes_and_finds_nothing_wrong(proxy, proxied, fault):
    lake = _lake(proxied)
    _publish(lake)
    proxy.add(fault, "/lake/", "GET", every=2)
    report = lake.verify("r1")
    assert report.ok, str(report)
    assert proxy.faults()


def test_a_chunk_that_never_arrives_is_reported_naming_the_object(proxy, proxied):
    lake = _lake(proxied)
    _publish(lake)
    rel = lake.release("r1")
    h = next(iter(rel.manifest(DATASET).chunks.values()))
    proxy.add("500", h, "GET", times=1000)
    with pytest.raises(OSError) as err:
        rel.open(DATASET).load()
    assert h in str(err.value), repr(err.value)
    assert DATASET in str(err.value), repr(err.value)


# -- conversion ----------------------------------------------------------------------------
@pytest.mark.slow
def test_conversion_under_faults_publishes_the_fault_free_release(
    proxy, proxied, s3_options, tiny_sources, dask_cluster, dask_client
):
    """Every fault kind at once, each on its own rhythm (one conversion takes minutes under
    botocore's full backoff, so the kinds share a run rather than one run each)."""
    source = tiny_sources["celltypes"]
    lake = _lake(proxied)
    for fault, every in zip(FAULTS, (23, 29, 31, 37, 41, 43)):  # ~17% of requests
        proxy.add(fault, "/lake/", every=every)
    dask_client.run(shorten_backoff)  # the workers put the chunks
    try:
        report = jobs.run([source], lake, "r1", scheduler=dask_cluster.scheduler_address)
    finally:
        on_workers = dask_client.run(restore_backoff)
    assert not report.failures, report.summary()
    assert any(on_workers.values()), "no worker retried through botocore's backoff"
    assert len({hit.fault for hit in proxy.faults()}) >= 4, proxy.faults()
    proxy.clear()
    assert lake.verify("r1").ok, str(lake.verify("r1"))
    direct = abo_lake.open_lake(proxied["url"], **s3_options)
    reference = abo_lake.open_lake(proxied["url"] + "-ref", **s3_options)
    jobs.run([source], reference, "r1", scheduler=dask_cluster.scheduler_address)
    got, want = direct.release("r1"), reference.release("r1")
    assert got.datasets() == want.datasets()
    # the same chunk objects (manifest hashes differ by what each lake's metadata records)
    for path in want.datasets():
        assert got.manifest(path).chunks == want.manifest(path).chunks, path
    assert got.tables() == want.tables()
