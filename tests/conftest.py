"""Shared fixtures: a real moto S3 server, lakes on a local folder and on S3, a real cluster."""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

import pytest

import abo_lake

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 *server* on loopback for the whole session (as s3fs's own tests do)."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(
        ip_address="127.0.0.1", port=_free_port(), verbose=False
    )
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_options(s3_endpoint):
    return {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing", "anon": False}


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket for one test."""
    import boto3

    name = f"abo-{uuid.uuid4().hex[:16]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    """An empty lake, once on a local folder and once on the moto S3 server."""
    if request.param == "local":
        return abo_lake.open_lake(str(tmp_path / "lake"))
    bucket = request.getfixturevalue("s3_bucket")
    options = request.getfixturevalue("s3_options")
    return abo_lake.open_lake(f"s3://{bucket}/lake", **options)


@pytest.fixture
def local_lake(tmp_path):
    return abo_lake.open_lake(str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def dask_cluster():
    """A real distributed LocalCluster with two worker processes, for the whole session.

    Its scheduler and dashboard take free ports (``":0"``; the default dashboard port 8787
    is taken by the second of two sessions at once, as under pytest-xdist)."""
    distributed = pytest.importorskip("distributed")
    from abo_lake.jobs import worker_malloc

    with worker_malloc():  # as jobs.run starts its workers
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    with cluster:
        yield cluster


@pytest.fixture
def dask_client(dask_cluster):
    """A client of the session cluster, the default scheduler only during one test."""
    import distributed

    with distributed.Client(dask_cluster) as client:
        yield client


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (the read-only shared/ folder beside the clone)")
    return SHARED_DATA


class _TinySources(dict):
    """Kind -> folder of tiny synthetic sources, each generated on first use, once a session."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, kind: str) -> Path:
        from abo_lake.synthetic import synthesize

        folder = self.root / kind
        synthesize(kind, folder, scale="tiny", seed=1)
        self[kind] = folder
        return folder


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory):
    """Tiny sources of every kind (``tiny_sources["vbo-ophys"]`` -> folder), shared by tests."""
    return _TinySources(tmp_path_factory.mktemp("tiny_sources"))


class _AllenSDKReleases(dict):
    """Fixture key (``vbo_ophys``, ``vbo_behavior``, ``vcn``, ``vbn``) -> a published release of
    that AllenSDK-written fixture's files, each in its own local lake, converted on first use."""

    def __init__(self, root: Path, scheduler: str) -> None:
        super().__init__()
        self.root, self.scheduler = root, scheduler

    def __missing__(self, key: str):
        import allensdk_reference as ref

        from abo_lake import jobs

        lake = abo_lake.open_lake(str(self.root / key))
        report = jobs.run(
            [str(p) for p in ref.files(ref.STEMS[key])],
            lake,
            "allensdk",
            scheduler=self.scheduler,
            progress=False,
        )
        assert report.published, report.summary()
        self[key] = lake.release("allensdk")
        return self[key]


@pytest.fixture(scope="session")
def allensdk_releases(tmp_path_factory, dask_cluster):
    """Releases of the AllenSDK-written fixtures (skips when ``shared/data/allensdk`` is absent)."""
    import allensdk_reference as ref

    ref.require()
    return _AllenSDKReleases(
        tmp_path_factory.mktemp("allensdk_lakes"), dask_cluster.scheduler_address
    )
