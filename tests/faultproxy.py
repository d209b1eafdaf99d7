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
"""

from __future__ import annotations

import http.client
import http.server
import ipaddress
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["FAULTS", "FaultProxy", "Rule"]

FAULTS = ("500", "503", "slowdown", "reset-before", "reset-after", "truncate")

_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Please reduce your request rate."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
}
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


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
        so that each retry of a faulted request gets through.
    """

    fault: str
    key: str = ""
    method: str | None = None
    nth: int = 1
    times: int = 1
    every: int = 0
    seen: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULTS}")

    def take(self, method: str, path: str) -> bool:
        """Count a request; whether it is one to fault."""
        if self.method is not None and method != self.method:
            return False
        if not re.search(self.key, path):
            return False
        self.seen += 1
        if self.every:
            return self.seen % self.every == 0
        return self.nth <= self.seen < self.nth + self.times


@dataclass(frozen=True)
class Hit:
    """One request seen by the proxy: what was asked and which fault (if any) it got."""

    method: str
    path: str
    fault: str | None


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

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _decide(self, method: str, path: str) -> str | None:
        with self._lock:
            if len(self.hits) >= self.max_requests:
                return "refuse"
            fault = None
            for rule in self.rules:
                if rule.take(method, path) and fault is None:
                    fault = rule.fault
            self.hits.append(Hit(method, path, fault))
            return fault


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


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

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

    def _handle(self) -> None:
        body = self._body()
        path = unquote(urlsplit(self.path).path)
        fault = self.proxy._decide(self.command, path)
        if fault == "refuse":
            self._error(503, "ServiceUnavailable", "fault proxy: request budget exhausted")
            return
        if fault in _ERRORS:
            self._error(*_ERRORS[fault])
            return
        if fault == "reset-before":
            self._reset()
            return
        status, reason, headers, data = self._forward(body)
        if fault == "reset-after":
            self._reset()
            return
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                self.send_header(name, value)
        length = {k.lower(): v for k, v in headers}.get("content-length")
        if self.command != "HEAD":
            length = str(len(data))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=self.proxy.timeout)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

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
            self.wfile.write(data)

    def _reset(self) -> None:
        """Drop the connection with a TCP reset (no FIN, no response)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
