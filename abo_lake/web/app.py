"""The read-only web app over a lake (Starlette + Jinja2): releases, diffs, tables, datasets.

Every page names the release and root it shows; release links are pinned
(``/r/<name>@<root12>/...``) and a name without a root redirects to its pin. Nothing here
writes to the lake. Storage options never reach a page: the code shown to open a dataset keeps
only the options :data:`abo_lake.catalog.WRITABLE_OPTIONS` allows, and every page's text is
scrubbed of the lake's secret option values. Bad input is a 4xx page; an unexpected error is a
500 page without a traceback (the traceback goes to the server's log).
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from abo_lake.catalog import _public
from abo_lake.errors import (
    DatasetNotFoundError,
    IntegrityError,
    ManifestError,
    ReleaseNotFoundError,
    SchemaError,
    StructureNotFoundError,
)
from abo_lake.lake import Lake
from abo_lake.release import Release
from abo_lake.release_tables import ROW_TABLES, TABLES
from abo_lake.tables import parse_value, release_table
from abo_lake.web.params import MAX_PAGE_SIZE, BadRequest, int_param, text_param
from abo_lake.web.plots import plots_for, render

__all__ = ["create_app"]

log = logging.getLogger("abo_lake.web")

_PIN_RE = re.compile(r"^[0-9a-f]{12,64}$")
#: Query parameters of a table page that are not column filters.
_RESERVED = {"_sort", "_desc", "_page", "_size", "_col", "_val"}
#: At most this many column filters in one search.
MAX_FILTERS = 20
#: Columns offered first in a table's search form and shown first in its rows.
PREFERRED_COLUMNS = (
    "cre_line",
    "targeted_structure",
    "imaging_depth",
    "session_type",
    "experience_level",
    "project_code",
    "ecephys_structure_acronym",
    "structure_acronym",
    "stimulus_name",
    "specimen_name",
    "sex",
    "genotype",
    "full_genotype",
    "firing_rate",
    "probe_description",
    "structure_abbrev",
    "injection_structures",
    "location",
)
_SHOWN_COLUMNS = 9

_ENV = Environment(
    loader=PackageLoader("abo_lake.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.6g}"
    if value is None or (not isinstance(value, list | np.ndarray) and pd.isna(value)):
        return ""
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "…"


_ENV.filters["bytes"] = _bytes
_ENV.filters["cell"] = _cell


class _StripBase:
    """Serve under ``base`` too: a proxy that keeps the prefix (jupyter-server-proxy's
    ``absolute_url``) reaches the same routes as one that strips it."""

    def __init__(self, app: ASGIApp, base: str) -> None:
        self.app, self.base = app, base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.base:
            path = scope["path"]
            if path == self.base or path.startswith(self.base + "/"):
                scope = {**scope, "path": path[len(self.base) :] or "/"}
        await self.app(scope, receive, send)


@dataclass
class _Context:
    """What every handler needs: the lake, the URL prefix and the secrets to keep out."""

    lake: Lake
    base: str
    secrets: tuple[str, ...]
    public_options: dict[str, Any]
    withheld: bool
    stats_cache: dict[tuple, dict[str, Any]]

    def url(self, path: str) -> str:
        return self.base + path

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "[withheld]")
        return text

    def page(self, template: str, code: int = 200, /, **values: Any) -> HTMLResponse:
        values.setdefault("pinned", None)
        body = _ENV.get_template(template).render(
            url=self.url, lake_url=self.lake.url, base=self.base, **values
        )
        return HTMLResponse(self.redact(body), status_code=code)

    def release(self, spec: str) -> Release:
        """A release by pin; :class:`ReleaseNotFoundError` for anything else."""
        _, at, root = spec.partition("@")
        if at and not _PIN_RE.match(root):
            raise ReleaseNotFoundError(
                f"{spec[:80]!r} is not a pin: use name@root with at least 12 hex digits"
            )
        return self.lake.release(spec)


def _secrets(options: dict[str, Any], public: dict[str, Any]) -> tuple[str, ...]:
    """Every string option value that is not public (keys, secrets, tokens, passwords)."""
    found: list[str] = []

    def walk(value: Any, shown: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, shown.get(k) if isinstance(shown, dict) else None)
        elif isinstance(value, str) and value != shown and len(value) >= 4:
            found.append(value)

    walk(options, public)
    return tuple(sorted(set(found), key=len, reverse=True))


def _pinned_redirect(ctx: _Context, request: Request, rel: Release, spec: str) -> Response | None:
    """A redirect to the pinned form of this URL when ``spec`` is not ``rel.pin``."""
    if spec == rel.pin:
        return None
    rest = request.url.path.split("/", 3)[3] if request.url.path.count("/") >= 3 else ""
    target = ctx.url(f"/r/{rel.pin}" + (f"/{rest}" if rest else ""))
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(target, status_code=302)


# -- handlers ---------------------------------------------------------------------------------
def _releases(ctx: _Context, request: Request) -> Response:
    rels = [ctx.lake.release(n) for n in ctx.lake.releases()]
    key = tuple(r.pin for r in rels)
    if key not in ctx.stats_cache:
        ctx.stats_cache.clear()
        ctx.stats_cache[key] = ctx.lake.stats() if rels else {}
    stats = ctx.stats_cache[key]
    rows = [
        {
            "rel": r,
            "datasets": len(r.record.datasets),
            "tables": len(r.record.tables),
            "logical": stats.get("releases", {}).get(r.name, 0),
        }
        for r in reversed(rels)
    ]
    return ctx.page("releases.html", rows=rows, stats=stats)


def _diff(ctx: _Context, request: Request) -> Response:
    q = request.query_params
    a, b = text_param(q, "a"), text_param(q, "b")
    if not a or not b:
        raise BadRequest("choose two releases: parameters 'a' and 'b'")
    ra, rb = ctx.release(a), ctx.release(b)
    if (a, b) != (ra.pin, rb.pin):
        return RedirectResponse(ctx.url(f"/diff?a={ra.pin}&b={rb.pin}"), status_code=302)
    diff = ctx.lake.diff(ra.pin, rb.pin)
    counts: dict[str, int] = {}
    for d in diff.datasets:
        counts[d.status] = counts.get(d.status, 0) + 1
    return ctx.page("diff.html", a=ra, b=rb, diff=diff, counts=counts)


def _release_page(ctx: _Context, request: Request) -> Response:
    spec = request.path_params["spec"]
    rel = ctx.release(spec)
    if (redirect := _pinned_redirect(ctx, request, rel, spec)) is not None:
        return redirect
    by_kind: dict[str, list[str]] = {}
    for path in rel.datasets():
        by_kind.setdefault(rel.kind(path) or "other", []).append(path)
    tables = [(n, rel.record.tables[n].get("rows")) for n in rel.tables()]
    others = [n for n in ctx.lake.releases() if n != rel.name]
    return ctx.page(
        "release.html", rel=rel, pinned=rel, by_kind=by_kind, tables=tables, others=others
    )


def _filters(query: Any) -> dict[str, Any]:
    terms = {k: v for k, v in query.multi_items() if k not in _RESERVED and v.strip()}
    col, val = query.get("_col", "").strip(), query.get("_val", "").strip()
    if col and val:
        terms[col] = val
    if len(terms) > MAX_FILTERS:
        raise BadRequest(f"{len(terms)} search terms; at most {MAX_FILTERS}")
    for k, v in terms.items():
        if len(k) > 100 or len(v) > 200:
            raise BadRequest(f"search term {k[:40]!r} is too long")
    return terms


def _table_page(ctx: _Context, request: Request) -> Response:
    spec, name = request.path_params["spec"], request.path_params["table"]
    rel = ctx.release(spec)
    if (redirect := _pinned_redirect(ctx, request, rel, spec)) is not None:
        return redirect
    q = request.query_params
    size = int_param(q, "_size", 50, lo=1, hi=MAX_PAGE_SIZE)
    page = int_param(q, "_page", 1, lo=1, hi=10**6)
    terms = _filters(q)
    table = release_table(rel, name)
    try:
        found = table.search(**{k: parse_value(v) for k, v in terms.items()})
    except DatasetNotFoundError as err:  # an unknown column: the request is wrong
        raise BadRequest(_message(err)) from None
    df = found.df
    sort = q.get("_sort", "")
    desc = q.get("_desc", "") == "1"
    if sort:
        if sort not in table.columns:
            raise BadRequest(f"table {name!r} has no column {sort[:60]!r} to sort by")
        try:
            if sort == df.index.name:
                df = df.sort_index(ascending=not desc, na_position="last", kind="stable")
            else:
                df = df.sort_values(sort, ascending=not desc, na_position="last", kind="stable")
        except TypeError:  # mixed types: by their text
            text = df[sort].astype(str).to_numpy() if sort in df else df.index.astype(str)
            order = np.argsort(text, kind="stable")
            df = df.iloc[order[::-1] if desc else order]
    pages = max(1, -(-len(df) // size))
    rows = df.iloc[(page - 1) * size : page * size]
    cols = [c for c in PREFERRED_COLUMNS if c in df.columns]
    cols += [c for c in terms if c in df.columns and c not in cols]
    cols += [c for c in df.columns if c not in cols and c != "dataset_path"]
    cols = cols[:_SHOWN_COLUMNS]
    links = _row_links(ctx, rel, name, rows)
    body = [
        {"id": idx, "href": href, "values": [row[c] for c in cols]}
        for (idx, row), href in zip(rows.iterrows(), links)
    ]
    form_cols = [c for c in PREFERRED_COLUMNS if c in table.columns][:6]
    params = dict(terms)
    return ctx.page(
        "table.html",
        rel=rel,
        pinned=rel,
        name=name,
        total=len(table),
        count=len(df),
        page=page,
        pages=pages,
        size=size,
        cols=cols,
        index_name=df.index.name or "id",
        rows=body,
        terms=terms,
        form_cols=form_cols,
        all_cols=table.columns,
        sort=sort,
        desc=desc,
        params=params,
        code=_search_code(ctx, rel, name, terms),
    )


#: Row table -> (plot, its id parameter): a unit's row opens its raster, a cell's its response.
_ROW_PLOTS = {"units": ("raster", "unit"), "cells": ("response", "cells")}


def _row_links(ctx: _Context, rel: Release, name: str, rows: pd.DataFrame) -> list[str | None]:
    """Each row's dataset page: its own ``dataset_path``, or (units, cells, channels, probes)
    its owner's, opening the row's plot where there is one."""
    has_data = set(rel.record.datasets)
    if "dataset_path" in rows.columns:
        paths = list(rows["dataset_path"])
        query = [""] * len(rows)
    elif name in ROW_TABLES and ROW_TABLES[name][2] in rows.columns:
        _, kind, owner = ROW_TABLES[name]
        owners = next((t for t, (k, _) in TABLES.items() if k == kind), None)
        if owners is None or owners not in rel.record.tables:
            return [None] * len(rows)
        df = release_table(rel, owners).df
        by_owner = df["dataset_path"].to_dict() if "dataset_path" in df.columns else {}
        paths = [by_owner.get(o) for o in rows[owner]]
        plot = _ROW_PLOTS.get(name)
        query = [f"?plot={plot[0]}&{plot[1]}={i}" if plot else "" for i in rows.index]
    else:
        return [None] * len(rows)
    return [
        ctx.url(f"/r/{rel.pin}/d/{p}{q}") if isinstance(p, str) and p in has_data else None
        for p, q in zip(paths, query)
    ]


def _open_lines(ctx: _Context, rel: Release) -> list[str]:
    opts = "".join(f", {k}={v!r}" for k, v in ctx.public_options.items())
    lines = ["import abo_lake", "", f"lake = abo_lake.open_lake({ctx.lake.url!r}{opts})"]
    if ctx.withheld:
        lines[-1] += "  # and your credentials"
    lines.append(f"rel = lake.release({rel.pin!r})")
    return lines


def _search_code(ctx: _Context, rel: Release, name: str, terms: dict[str, str]) -> str:
    args = ", ".join(f"{k}={parse_value(v)!r}" for k, v in terms.items() if k.isidentifier())
    return "\n".join([*_open_lines(ctx, rel), f"rel.{name}.search({args}).df"])


def _dataset_code(ctx: _Context, rel: Release, path: str, kind: str | None, ds: Any) -> str:
    lines = _open_lines(ctx, rel)
    if kind in ("ccf_volume",):
        lines += [f"tree = rel.open_datatree({path!r})", "tree.ccf.levels"]
        return "\n".join(lines)
    lines.append(f"ds = rel.open({path!r})")
    if kind == "ophys_experiment":
        cells = [int(c) for c in ds["cell_specimen_id"].values[:3]]
        lines += [f"ds.ophys.dff.sel(cell_specimen_id={cells})", "ds.ophys.stimulus_presentations"]
    elif kind == "ecephys_session":
        lines += ["ds.ecephys.units", "ds.ecephys.spike_times"]
    elif kind == "celltypes_ephys":
        n = ds.celltypes.get_sweep_numbers()[0]
        lines += ["ds.celltypes.sweeps", f"ds.celltypes.get_sweep({n})"]
    elif (kind and kind.startswith("ccf")) or kind == "connectivity_experiment":
        lines.append("ds.ccf")
    elif kind == "celltypes_morphology":
        lines.append("ds.morphology.compartment_list")
    return "\n".join(lines)


def _ids(values: Any, most: int = 12) -> str:
    shown = ", ".join(str(v) for v in list(values)[:most])
    return shown + (f", … ({len(values)} in all)" if len(values) > most else "")


def _choices(ds: Any, kind: str | None) -> dict[str, str]:
    """Plot name -> what its fields accept in this dataset (ids, names, ranges)."""
    if kind == "ophys_experiment":
        cells = f"cells: {_ids(ds['cell_specimen_id'].values)}"
        t = ds["time"].values
        span = f"; time {float(t[0]):.1f}–{float(t[-1]):.1f} s" if t.size else ""
        return {"dff": cells + span, "response": cells}
    if kind == "ecephys_session":
        names = sorted({str(v) for v in ds["stimulus_presentations.stimulus_name"].values})
        return {"raster": f"units: {_ids(ds['unit_id'].values)}; stimuli: {', '.join(names)}"}
    if kind == "celltypes_ephys":
        numbers = ds.celltypes.get_sweep_numbers()
        return {"sweep": f"sweeps: {_ids(numbers, 40)}"}
    if kind == "ccf_volume":
        return {"slice": "a structure acronym of the CCF ontology, e.g. VISp, MOp, CA1, LGd"}
    return {}


def _table_row(rel: Release, kind: str | None, path: str) -> tuple[str, dict[str, Any]] | None:
    for name, (table_kind, _) in TABLES.items():
        if table_kind == kind and name in rel.record.tables:
            df = release_table(rel, name).df
            if "dataset_path" in df.columns:
                hit = df[df["dataset_path"] == path]
                if len(hit):
                    row = {str(df.index.name): hit.index[0], **hit.iloc[0].to_dict()}
                    return name, {k: v for k, v in row.items() if _cell(v) != ""}
    return None


def _dataset_page(ctx: _Context, request: Request) -> Response:
    spec, path = request.path_params["spec"], request.path_params["path"]
    rel = ctx.release(spec)
    if (redirect := _pinned_redirect(ctx, request, rel, spec)) is not None:
        return redirect
    kind = rel.kind(path)  # DatasetNotFoundError for a path the release does not have
    manifest = rel.manifest(path)
    ds = rel.open(path)
    attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("abo_lake_release")}
    variables = [(n, " × ".join(f"{d} {ds.sizes[d]}" for d in v.dims)) for n, v in ds.items()]
    if not variables and manifest.arrays():  # a multiscale volume: its groups' arrays
        tree = rel.open_datatree(path)
        variables = [
            (f"{node.path.strip('/')}/{n}", " × ".join(f"{d} {v.sizes[d]}" for d in v.dims))
            for node in tree.subtree
            for n, v in node.ds.data_vars.items()
        ]
    plots = plots_for(kind, path)
    try:
        choices = _choices(ds, kind) if plots else {}
    except (KeyError, ValueError, SchemaError):
        choices = {}
    q = request.query_params
    chosen = q.get("plot", "")
    image = reads = None
    plot_query = ""
    if chosen:
        result = render(rel, path, chosen, q)
        image = base64.b64encode(result.png).decode()
        reads = result.chunk_reads
        plot_query = str(request.url.query)
    return ctx.page(
        "dataset.html",
        rel=rel,
        pinned=rel,
        path=path,
        kind=kind,
        nbytes=int(rel.record.datasets[path].get("nbytes", 0)),
        chunks=len(manifest.chunks),
        attrs=attrs,
        variables=variables[:80],
        more_variables=max(0, len(variables) - 80),
        sizes=dict(ds.sizes),
        row=_table_row(rel, kind, path),
        code=_dataset_code(ctx, rel, path, kind, ds),
        plots=plots,
        choices=choices,
        chosen=chosen,
        query=q,
        image=image,
        reads=reads,
        plot_query=plot_query,
    )


def _plot_png(ctx: _Context, request: Request) -> Response:
    spec, plot, path = (request.path_params[k] for k in ("spec", "plot", "path"))
    rel = ctx.release(spec)
    if (redirect := _pinned_redirect(ctx, request, rel, spec)) is not None:
        return redirect
    rel.kind(path)
    result = render(rel, path, plot, request.query_params)
    return Response(
        result.png,
        media_type="image/png",
        headers={
            "X-Abo-Lake-Chunk-Reads": str(result.chunk_reads),
            "X-Abo-Lake-Release": rel.pin,
            "Cache-Control": "public, max-age=31536000, immutable",
        },
    )


# -- errors -----------------------------------------------------------------------------------
_CLIENT_ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (BadRequest, 400),
    (ReleaseNotFoundError, 404),
    (DatasetNotFoundError, 404),
    (StructureNotFoundError, 400),
    (SchemaError, 400),
    (ValueError, 400),
)


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def _handler(ctx: _Context, fn: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            return await run_in_threadpool(fn, ctx, request)
        except Exception as err:  # every failure becomes a page, never a traceback
            if isinstance(err, ManifestError | IntegrityError):  # the lake, not the request
                log.error("abo-lake serve: %s: %s", request.url.path, err)
                message = f"the lake cannot serve this: {_message(err)}"
                return ctx.page("error.html", 500, status=500, message=message)
            for cls, status in _CLIENT_ERRORS:
                if isinstance(err, cls):
                    return ctx.page("error.html", status, status=status, message=_message(err))
            log.exception("abo-lake serve: %s failed", request.url.path)
            return ctx.page(
                "error.html",
                500,
                status=500,
                message="the server failed to answer this request (see its log)",
            )

    return endpoint


def create_app(lake: Lake, *, base_url: str = "") -> ASGIApp:
    """The web app over ``lake`` (read-only).

    Parameters
    ----------
    lake
        The lake to show (local or remote; its storage options stay on the server).
    base_url
        A URL prefix the app is served under, e.g. ``/user/me/proxy/8050`` behind
        jupyter-server-proxy; links carry it, and requests arrive with or without it.

    Returns
    -------
    ASGIApp
        The Starlette app behind the base-URL handling (run it with uvicorn, or test it
        with ``starlette.testclient``).
    """
    base = "/" + base_url.strip("/") if base_url.strip("/") else ""
    options = dict(lake.storage.storage_options)
    public = _public(options)
    ctx = _Context(
        lake=lake,
        base=base,
        secrets=_secrets(options, public),
        public_options=public,
        withheld=public != options,
        stats_cache={},
    )

    async def not_found(request: Request, exc: HTTPException) -> Response:
        status = exc.status_code if 400 <= exc.status_code < 500 else 404
        message = "no such page" if status == 404 else (exc.detail or "bad request")
        return ctx.page("error.html", status, status=status, message=message)

    h = partial(_handler, ctx)
    app = Starlette(
        routes=[
            Route("/", h(_releases)),
            Route("/diff", h(_diff)),
            Route("/r/{spec}", h(_release_page)),
            Route("/r/{spec}/", h(_release_page)),
            Route("/r/{spec}/t/{table}", h(_table_page)),
            Route("/r/{spec}/d/{path:path}", h(_dataset_page)),
            Route("/r/{spec}/plot/{plot}/{path:path}", h(_plot_png)),
            Mount("/static", StaticFiles(packages=[("abo_lake.web", "static")]), name="static"),
        ],
        exception_handlers={HTTPException: not_found},
    )
    return _StripBase(app, base)
