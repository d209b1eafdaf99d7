"""Running the web app: in the foreground (``abo-lake serve``) or in a thread (tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from abo_lake.lake import Lake
from abo_lake.web.app import create_app

__all__ = ["free_port", "running", "serve"]


def serve(lake: Lake, *, host: str = "127.0.0.1", port: int = 8050, base_url: str = "") -> None:
    """Serve ``lake`` read-only at ``http://host:port/base_url`` until interrupted."""
    app = create_app(lake, base_url=base_url)
    shown = "/" + base_url.strip("/") if base_url.strip("/") else ""
    print(f"abo-lake serve: {lake.url} at http://{host}:{port}{shown}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(lake: Lake, *, base_url: str = "", port: int | None = None) -> Iterator[str]:
    """The app served on 127.0.0.1 in a background thread; yields its root URL."""
    port = port or free_port()
    config = uvicorn.Config(
        create_app(lake, base_url=base_url), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the web app did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        prefix = "/" + base_url.strip("/") if base_url.strip("/") else ""
        yield f"http://127.0.0.1:{port}{prefix}"
    finally:
        server.should_exit = True
        thread.join(10)
