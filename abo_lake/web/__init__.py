"""``abo-lake serve``: a local, read-only web app over any lake.

Pages: releases (with their diff), a release's tables with the Python API's search, and a page
per dataset with its metadata, the code to open exactly that pinned dataset, and plots computed
from the lake on request. :func:`create_app` builds the ASGI app; :func:`serve` runs it.
"""

from __future__ import annotations

from abo_lake.web.app import create_app
from abo_lake.web.server import serve

__all__ = ["create_app", "serve"]
