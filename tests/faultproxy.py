"""A fault-injecting HTTP proxy on loopback, between s3fs and the moto S3 server.

Point a lake's ``endpoint_url`` at :attr:`FaultProxy.url`; every request is forwarded to
the moto server unless a :class:`Rule` matches it, in which case the proxy answers with a
fault instead:

``"500"`` / ``"503"``
    an S3 XML error (``InternalError`` / ``ServiceUnavailable``), not forwarded;
``"slowdown"``
    503 with the S3 ``SlowDown`` error body, not forwarded;
``"reset-before"``
    the connection is dropped before the request is forwarded (the server never acted);
``"reset-after"``
    the request is forwarded (the server acted), then the connection is dropped before any
    byte of the response;
``"truncate"``
    the request is forwarded and the response is sent with its full ``Content-Length`` but
    only half of its body, then the connection is dropped.

The proxy listens on 127.0.0.1 only, forwards only to a loopback upstream, serves at most
``max_requests`` requests and stops at :meth:`FaultProxy.stop` (or leaving its ``with``).

It also counts: every request is a :class:`Hit` with the bytes read from the client
(request line, headers, body) and written to it (status line, headers, body), its status and
``Range`` header; :meth:`FaultProxy.tally` sums them over the requests since a
:meth:`FaultProxy.mark`, so a benchmark can read requests and bytes on the wire of one
operation (``tests/benchmarks/bench_cloud_reads.py``). A response without a fault is streamed
from the server in 1 MiB pieces as it arrives, and only what the client accepted is counted
(a client that hangs up after the headers, as a streaming size probe does, is charged what
was in flight, and the rest is not fetched).
"""

from __future__ import annotations

import http.client
import http.server
import ipaddress
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["FAULTS", "FaultProxy", "Hit", "Rule", "Tally"]

FAULTS = ("500", "503", "slowdown", "reset-before", "reset-after", "truncate")

_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Please reduce your request rate."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
}
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_PIECE = 1 << 20  # bytes per write of a response body


@dataclass
class Rule:
    """Inject ``fault`` into requests matching ``method`` and ``key``.

    Parameters
    ----------
    fault
        One of :data:`FAULTS`.
    key
        A regular expression searched in the unquoted request path (``/bucket/key``).
    method
        ``"GET"``, ``"PUT"``, ... or None for any.
    nth
        The first matching request (1-based) to fault.
    times
        How many consecutive matching requests to fault from ``nth`` on.
    every
        If set, fault every ``every``-th matching request instead (``nth``/``times`` unused),
        and let the next request for an object just faulted through uncounted, so that a
        faulted request's retry gets through even when concurrent requests would otherwise
        put it on the faulted beat again and again.
    """

    fault: str
    key: str = ""
    method: str | None = None
    nth: int = 1
    times: int = 1
    every: int = 0
    seen: int = field(default=0, init=False)
    _faulted: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULTS}")

    def take(self, method: str, path: str) -> bool:
        """Count a request; whether it is one to fault."""
        if self.method is not None and method != self.method:
            return False
        if not re.search(self.key, path):
            return False
        if self.every and (method, path) in self._faulted:
            self._faulted.discard((method, path))  # its retry
            return False
        self.seen += 1
        if self.every:
            if self.seen % self.every:
                return False
            self._faulted.add((method, path))
            return True
        return self.nth <= self.seen < self.nth + self.times


@dataclass
class Hit:
    """One request seen by the proxy: what was asked, which fault (if any) it got, and what
    crossed the client's connection (filled in when the request is done)."""

    method: str
    path: str
    fault: str | None
    range: str | None = None
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    body_out: int = 0
    done: bool = False


@dataclass(frozen=True)
class Tally:
    """Requests and bytes on the client's side of the proxy over some requests.

    ``bytes_out`` is what the proxy wrote to the client (status lines, headers, bodies),
    ``bytes_in`` what it read from the client, ``body_out`` the response bodies alone.
    """

    requests: int
    gets: int
    bytes_in: int
    bytes_out: int
    body_out: int

    @property
    def wire_bytes(self) -> int:
        """Bytes both ways on the client's connection."""
        return self.bytes_in + self.bytes_out

    @classmethod
    def of(cls, hits: list[Hit]) -> Tally:
        """Sum ``hits``."""
        return cls(
            requests=len(hits),
            gets=sum(h.method == "GET" for h in hits),
            bytes_in=sum(h.bytes_in for h in hits),
            bytes_out=sum(h.bytes_out for h in hits),
            body_out=sum(h.body_out for h in hits),
        )


class FaultProxy:
    """A threaded loopback proxy to ``upstream`` (``http://127.0.0.1:PORT``) that injects faults.

    Parameters
    ----------
    upstream
        The moto server's URL; must be a loopback address.
    max_requests
        Requests served before the proxy refuses further ones (bounds a runaway retry loop).
    timeout
        Socket timeout in seconds, for clients and for the upstream.
    """

    def __init__(self, upstream: str, *, max_requests: int = 20_000, timeout: float = 30) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not _loopback(parts.hostname or ""):
            raise ValueError(f"upstream must be http:// on a loopback address, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.max_requests = max_requests
        self.timeout = timeout
        self.rules: list[Rule] = []
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faultproxy", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, fault: str, key: str = "", method: str | None = None, **kw: int) -> Rule:
        """Add a :class:`Rule` and return it."""
        rule = Rule(fault, key, method, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule and forget the requests seen."""
        with self._lock:
            self.rules.clear()
            self.hits.clear()

    def faults(self) -> list[Hit]:
        """The requests that got a fault."""
        with self._lock:
            return [h for h in self.hits if h.fault]

    def mark(self) -> int:
        """A position in the request log, for :meth:`tally` (waits for requests in flight)."""
        self.wait_idle()
        with self._lock:
            return len(self.hits)

    def tally(self, since: int = 0, until: int | None = None) -> Tally:
        """Requests and bytes of the requests from mark ``since`` to mark ``until`` (now)."""
        if until is None:
            until = self.mark()
        with self._lock:
            return Tally.of(self.hits[since:until])

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every request seen so far is done (its bytes counted)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if all(h.done for h in self.hits):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"fault proxy: requests still in flight after {timeout} s")
            time.sleep(0.002)

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _decide(self, method: str, path: str, range_: str | None) -> tuple[str | None, Hit]:
        with self._lock:
            fault = "refuse" if len(self.hits) >= self.max_requests else None
            if fault is None:
                for rule in self.rules:
                    if rule.take(method, path) and fault is None:
                        fault = rule.fault
            hit = Hit(method, path, fault, range_)
            self.hits.append(hit)
            return fault, hit


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handler(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    Handler.timeout = proxy.timeout
    return Handler


class _Counted:
    """A file-like wrapper counting the bytes read from or written to it."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0

    def read(self, *args: int) -> bytes:
        data = self.raw.read(*args)
        self.count += len(data)
        return data

    def readline(self, *args: int) -> bytes:
        data = self.raw.readline(*args)
        self.count += len(data)
        return data

    def write(self, data: bytes) -> int | None:
        out = self.raw.write(data)
        self.count += len(data)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: headers then body, each sent at once
    proxy: FaultProxy
    _hit: Hit | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

    def setup(self) -> None:
        super().setup()
        self.rfile = _Counted(self.rfile)
        self.wfile = _Counted(self.wfile)

    def handle_one_request(self) -> None:
        self._hit = None
        read0, written0 = self.rfile.count, self.wfile.count
        try:
            super().handle_one_request()
        finally:
            hit = self._hit
            if hit is not None:
                hit.bytes_in = self.rfile.count - read0
                hit.bytes_out = self.wfile.count - written0
                hit.done = True

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._hit is not None:
            self._hit.status = code
        super().send_response(code, message)

    def _handle(self) -> None:
        body = self._body()
        path = unquote(urlsplit(self.path).path)
        fault, self._hit = self.proxy._decide(self.command, path, self.headers.get("Range"))
        if fault == "refuse":
            self._error(503, "ServiceUnavailable", "fault proxy: request budget exhausted")
            return
        if fault in _ERRORS:
            self._error(*_ERRORS[fault])
            return
        if fault == "reset-before":
            self._reset()
            return
        conn, resp = self._forward(body)
        try:
            self._respond(fault, resp)
        finally:
            conn.close()

    def _respond(self, fault: str | None, resp: http.client.HTTPResponse) -> None:
        """Relay the upstream response; a plain one is streamed piece by piece as it arrives
        (so a client hanging up early stops the transfer), a faulted one read whole first."""
        headers = resp.getheaders()
        length = {k.lower(): v for k, v in headers}.get("content-length")
        stream = fault is None and self.command != "HEAD" and length is not None
        data = b"" if stream else resp.read()
        if fault == "reset-after":
            self._reset()
            return
        self.send_response(resp.status, resp.reason)
        for name, value in headers:
            if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command != "HEAD" and not stream:
            length = str(len(data))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if fault == "truncate":
            self._write_body(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()
            return
        if stream:
            while piece := resp.read(_PIECE):
                if not self._write_body(piece):
                    return
        elif self.command != "HEAD":
            self._write_body(data)

    def _write_body(self, data: bytes) -> bool:
        """Write ``data`` in pieces, counting the body bytes the client accepted; False if
        the client hung up."""
        view = memoryview(data)
        for start in range(0, len(view), _PIECE):
            piece = view[start : start + _PIECE]
            try:
                self.wfile.write(piece)
            except (ConnectionError, TimeoutError):  # the client hung up: stop here
                self.close_connection = True
                return False
            if self._hit is not None:
                self._hit.body_out += len(piece)
        return True

    def _forward(self, body: bytes) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request upstream; the connection and its response, body not yet read."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=self.proxy.timeout)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def _error(self, status: int, code: str, message: str) -> None:
        data = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>faultproxy</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self._write_body(data)

    def _reset(self) -> None:
        """Drop the connection with a TCP reset (no FIN, no response)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
