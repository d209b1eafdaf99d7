"""The proxy's request and byte counters (``tests/faultproxy.py``), the instrument behind
``tests/benchmarks/bench_cloud_reads.py``: checked against reads whose requests and bytes are
known, and against the raw bytes a socket client sees."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import boto3
import numpy as np
import pytest
import s3fs
from faultproxy import FaultProxy

pytestmark = pytest.mark.s3

SIZE = 1_048_576 + 123


@pytest.fixture
def proxy(s3_endpoint):
    with FaultProxy(s3_endpoint) as p:
        yield p


@pytest.fixture
def stored(s3_endpoint, s3_bucket):
    """An object of known bytes, written straight to moto (not through the proxy)."""
    data = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.put_object(Bucket=s3_bucket, Key="obj.bin", Body=data)
    return f"{s3_bucket}/obj.bin", data, client


def _fs(proxy: FaultProxy) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        endpoint_url=proxy.url, key="testing", secret="testing", skip_instance_cache=True
    )


def test_a_range_read_is_one_get_of_its_bytes(proxy, stored):
    path, data, _ = stored
    fs = _fs(proxy)
    start = proxy.mark()
    got = fs.cat_file(path, start=1000, end=301_000)
    tally = proxy.tally(start)
    assert got == data[1000:301_000]
    assert (tally.requests, tally.gets) == (1, 1)
    assert tally.body_out == 300_000
    # status line and headers on top of the body, a request of headers only
    assert 100 < tally.bytes_out - tally.body_out < 2000
    assert 100 < tally.bytes_in < 3000
    (hit,) = proxy.hits[start:]
    assert (hit.method, hit.status, hit.range) == ("GET", 206, "bytes=1000-300999")


def test_marks_split_operations(proxy, stored):
    path, data, _ = stored
    fs = _fs(proxy)
    first = proxy.mark()
    assert fs.cat_file(path) == data
    second = proxy.mark()
    with fs.open(path, "rb", block_size=256 * 1024, cache_type="none") as f:
        f.seek(SIZE - 10)
        assert f.read() == data[-10:]
    whole, tail = proxy.tally(first, second), proxy.tally(second)
    assert whole.gets == 1
    assert whole.body_out == SIZE
    assert tail.gets == 1
    assert tail.body_out == 10
    assert proxy.tally(first).requests == whole.requests + tail.requests


def _presigned(proxy: FaultProxy, bucket: str, key: str) -> str:
    """``/bucket/key?signature`` of a presigned GET through the proxy (moto refuses
    anonymous reads of a private bucket)."""
    client = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    url = client.generate_presigned_url("get_object", {"Bucket": bucket, "Key": key})
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_bytes_out_are_the_bytes_a_client_receives(proxy, stored, s3_bucket):
    """Every byte the proxy counts is one a raw socket client read, and the other way round."""
    _, data, _ = stored
    parts = urlsplit(proxy.url)
    target = _presigned(proxy, s3_bucket, "obj.bin")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nRange: bytes=0-4999\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    start = proxy.mark()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        raw = bytearray()
        while chunk := sock.recv(65536):
            raw += chunk
    (hit,) = proxy.hits[start:]
    proxy.wait_idle()
    assert raw.endswith(data[:5000])
    assert hit.bytes_out == len(raw)
    assert hit.bytes_in == len(request)
    assert hit.body_out == 5000


def test_an_upload_is_counted_on_the_way_in(proxy, s3_bucket):
    fs = _fs(proxy)
    payload = b"x" * 200_000
    start = proxy.mark()
    fs.pipe_file(f"{s3_bucket}/up.bin", payload)
    tally = proxy.tally(start)
    assert tally.requests >= 1
    assert len(payload) < tally.bytes_in < len(payload) + 5000


def test_a_client_hanging_up_is_charged_what_was_in_flight(proxy, stored, s3_bucket):
    """A streaming GET closed after the headers (how remfile probes a file's size)."""
    _, _, client = stored
    big = 48 << 20
    client.put_object(Bucket=s3_bucket, Key="big.bin", Body=b"\0" * big)
    parts = urlsplit(proxy.url)
    start = proxy.mark()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        target = _presigned(proxy, s3_bucket, "big.bin")
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        head = sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    assert head.startswith(b"HTTP/1.1 200")
    tally = proxy.tally(start)
    assert tally.requests == 1
    assert tally.bytes_out >= len(head)
    assert tally.body_out < big // 2
