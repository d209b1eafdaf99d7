"""Intake catalogs of releases, and table-first search over release metadata tables.

Publishing a release writes ``releases/<name>/catalog.yaml``, an intake 2 (V2) catalog that
plain ``intake`` opens without abo_lake, and refreshes the lake's root ``catalog.yaml``.
A release catalog has:

- one entry per dataset (``ophys_experiment_951980471``), read lazily by intake's built-in
  ``XArrayDatasetReader`` through ``reference://`` and that release's own manifest;
- one entry per modality chosen by id through a catalog-level user parameter
  (``cat(ophys_experiment_id=951980471).ophys_experiment.read()``). A manifest URL is the hash
  of its content, so no template on the id can reach it directly; these entries read it
  through the release's by-id index ``releases/<name>/byid.json``, itself an fsspec
  reference file mapping ``<dataset path>.json`` to the content-addressed manifest object
  (``fo`` templated on the id, ``target_protocol="reference"``): one small object per
  release instead of a copy of every manifest (issue 18);
- one entry per metadata table (intake's ``PandasParquet``).

Stored catalogs never hold credentials: users give them through their environment (or to
:func:`open_catalog`, which adds them in memory only).

:class:`Table` is the search side: ``release_table(rel, "ophys_experiments").search(...)``
(defined in :mod:`abo_lake.tables`, re-exported here).
"""

from __future__ import annotations

import json
import re
import warnings
from functools import cache
from typing import TYPE_CHECKING, Any

import xarray as xr
import yaml

from abo_lake.kinds import KINDS
from abo_lake.lake import (
    COMPLETENESS_HOOKS,
    PUBLISH_HOOKS,
    VERIFY_HOOKS,
    Lake,
    VerifyReport,
    open_lake,
)
from abo_lake.manifest import manifest_key
from abo_lake.release import Release, ReleaseRecord
from abo_lake.tables import (
    Table,
    _warn_if_not_newest,
    parse_value,
    release_table,
    search_table,
)

if TYPE_CHECKING:
    from intake.readers.entry import Catalog

__all__ = [
    "PARAMETRISED",
    "WRITABLE_OPTIONS",
    "Table",
    "catalog_dict",
    "open_catalog",
    "parse_value",
    "release_table",
    "root_catalog",
    "root_catalog_dict",
    "search_table",
    "write_catalog",
]

CATALOG_KEY = "catalog.yaml"
#: The by-id index of a release, beside its catalog (see the module docstring).
BYID_KEY = "byid.json"
_READER = "intake.readers.readers:XArrayDatasetReader"
_OPTIONS_UP = "intake.readers.user_parameters:OptionsUserParameter"
_SIMPLE_UP = "intake.readers.user_parameters:SimpleUserParameter"
#: Storage options that may be written into a stored catalog: an allow-list, since a
#: credential can hide under any name (``config_kwargs.proxies`` holds proxy passwords,
#: ``s3_additional_kwargs.SSECustomerKey`` an encryption key). ``True`` allows a plain value
#: (bool, number, string without ``user:password@`` in a URL); a dict allows those keys of a
#: dict value. Everything else (keys, secrets, tokens, profiles, proxies) is given again when
#: the catalog is opened (:func:`open_catalog` adds it in memory only).
WRITABLE_OPTIONS: dict[str, Any] = {
    "anon": True,
    "endpoint_url": True,
    "requester_pays": True,
    "use_ssl": True,
    "version_aware": True,
    "cache_regions": True,
    "max_concurrency": True,
    "default_block_size": True,
    "default_fill_cache": True,
    "default_cache_type": True,
    "skip_instance_cache": True,
    "use_listings_cache": True,
    "listings_expiry_time": True,
    "auto_mkdir": True,
    "project": True,  # gcsfs
    "account_name": True,  # adlfs: the storage account, not its key
    "client_kwargs": {"region_name": True, "endpoint_url": True, "verify": True},
    "config_kwargs": {
        "region_name": True,
        "connect_timeout": True,
        "read_timeout": True,
        "max_pool_connections": True,
        "signature_version": True,
        "retries": {"max_attempts": True, "total_max_attempts": True, "mode": True},
        "s3": {"addressing_style": True, "use_accelerate_endpoint": True},
    },
    "s3_additional_kwargs": {"RequestPayer": True},
}
_URL_CREDENTIALS_RE = re.compile(r"://[^/@]*@")

#: Entry name -> (dataset path template, its parameter), from the kinds' declarations
#: (:mod:`abo_lake.kinds`). ``ccf_annotation`` and ``ccf_template`` also take
#: ``resolution_um`` (the multiscale level).
PARAMETRISED: dict[str, tuple[str, str]] = {
    entry: (template, re.search(r"\{(\w+)\}", template).group(1))
    for kind in KINDS.values()
    for entry, template in kind.catalog_entries.items()
}
_MULTISCALE = ("ccf_annotation", "ccf_template")
_LEVEL_RE = re.compile(r"^(\d+)um/zarr\.json$")


# -- writing catalogs ----------------------------------------------------------------------
def _public(options: dict[str, Any], allowed: dict[str, Any] = WRITABLE_OPTIONS) -> dict[str, Any]:
    """The storage options that may be stored (:data:`WRITABLE_OPTIONS`); nothing else."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        rule = allowed.get(k)
        if isinstance(rule, dict) and isinstance(v, dict):
            out[k] = _public(v, rule)
        elif rule is True and isinstance(v, bool | int | float | str | None):
            if isinstance(v, str) and _URL_CREDENTIALS_RE.search(v):
                continue  # a URL carrying user:password@
            out[k] = v
    return out


def _options(lake: Lake) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reference-filesystem options without ``fo``, plain file options), credential-free."""
    st = lake.storage
    plain = _public(st.storage_options)
    ref = {
        "remote_protocol": "file" if st.local else st.protocol,
        "remote_options": {**plain, "asynchronous": True},
    }
    if plain:  # how to read the manifest itself (its protocol comes from its URL)
        ref["target_options"] = plain
    return ref, plain


def _index_key(record: ReleaseRecord) -> str:
    return f"releases/{record.name}/{BYID_KEY}"


def index_bytes(lake: Lake, record: ReleaseRecord) -> bytes:
    """The release's by-id index: an fsspec reference file whose keys are
    ``<dataset path>.json`` (each dataset a parametrised catalog entry reaches) and whose
    values are whole-object references to the datasets' manifests."""
    refs = {
        f"{path}.json": [lake.storage.url_of(manifest_key(entry["manifest"]))]
        for path, entry in sorted(record.datasets.items())
        if _match(path)
    }
    doc = {"version": 1, "refs": refs}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _entry_name(path: str, taken: set[str]) -> str:
    name = re.sub(r"[^0-9A-Za-z_]", "_", path)
    while name in taken:
        name += "_"
    taken.add(name)
    return name


_PATTERNS = {
    entry: re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(t)) + "$")
    for entry, (t, _) in PARAMETRISED.items()
}


def _match(path: str) -> tuple[str, dict[str, str]] | None:
    """(parametrised entry, {parameter: value}) a dataset path belongs to, if any."""
    for entry, pattern in _PATTERNS.items():
        m = pattern.match(path)
        if m:
            return entry, m.groupdict()
    return None


def _levels(lake: Lake, record: ReleaseRecord, path: str) -> list[int]:
    h = record.datasets[path]["manifest"]
    metadata = lake._manifest(h, where=f"catalog of {record.name}, {path!r}").metadata
    return sorted(int(m.group(1)) for k in metadata if (m := _LEVEL_RE.match(k)))


def _reader(data: str, meta: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {
        "reader": _READER,
        "kwargs": {
            "data": f"{{data({data})}}",
            "chunks": {},
            "consolidated": True,
            "zarr_format": 3,
            **kwargs,
        },
        "metadata": meta,
        "user_parameters": {},
        "output_instance": "xarray:Dataset",
    }


def _zarr(fo: str, ref_options: dict[str, Any], root: str = "") -> dict[str, Any]:
    kwargs: dict[str, Any] = {"url": "reference://", "storage_options": {"fo": fo, **ref_options}}
    if root:
        kwargs["root"] = root
    return {
        "datatype": "intake.readers.datatypes:Zarr",
        "kwargs": kwargs,
        "metadata": {},
        "user_parameters": {},
    }


def _route_template(template: str, widths: dict[str, int]) -> str:
    """The record part a by-id template's datasets live in, as a template itself
    (:func:`abo_lake.record.route_of` at the family's width, written with a format spec:
    ``ophys/experiment/{ophys_experiment_id:.2}``). A family with a parameter in it
    (``ccf/{ccf_version}``) takes the widest of the families it matches (they are small:
    width 0)."""
    seg = template.split("/")
    if len(seg) <= 2:
        return template
    family = re.compile(
        "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(f"{seg[0]}/{seg[1]}")) + "$"
    )
    digits = max((w for f, w in widths.items() if family.match(f)), default=0)
    m = re.fullmatch(r"\{(\w+)\}", seg[2])
    third = f"{{{m.group(1)}:.{digits}}}" if m else seg[2][:digits]
    return "/".join([seg[0], seg[1], third])


def _by_id_route(lake: Lake, record: ReleaseRecord, template: str) -> dict[str, Any]:
    """How a by-id entry reaches a manifest: the ``fo`` ``<template>.json`` is read from the
    dataset's record part, itself read as ``<route>.json`` from the release record (or, in a
    record with an index level, from the index object read as ``<index route>.json`` from
    the record); the record, its index objects and parts are fsspec reference files, so plain
    intake follows the chain.
    Format-1/2 records go through the release's by-id index instead."""
    ref_options, plain = _options(lake)
    remote = {"remote_protocol": ref_options["remote_protocol"], "remote_options": dict(plain)}
    if record.format != 3:
        return {
            "target_protocol": "reference",
            "target_options": {
                "fo": lake.storage.url_of(_index_key(record)),
                **remote,  # reads the manifests
                **({"target_options": dict(plain)} if plain else {}),  # reads the index
            },
        }
    fs = {
        "fo": lake.storage.url_of(f"releases/{record.name}/release.json"),
        **remote,  # reads the record's parts (or index objects)
        **({"target_options": dict(plain)} if plain else {}),  # reads the record
    }
    if "index" in record.summary:  # record -> index object -> part
        fs = {
            "fo": f"{_route_template(template, record.summary['index'])}.json",
            **remote,  # reads the parts
            "target_protocol": "reference",
            "target_options": fs,
        }
    part_fs = {
        "fo": f"{_route_template(template, record.summary['route'])}.json",
        **remote,  # reads the manifests
        "target_protocol": "reference",
        "target_options": fs,
    }
    return {"target_protocol": "reference", "target_options": part_fs}


def catalog_dict(lake: Lake, record: ReleaseRecord, *, stored: bool = False) -> dict[str, Any]:
    """The intake V2 catalog of a release, as a plain dict.

    ``stored``: the one written as YAML. For a format-3 record it holds no line per dataset
    a by-id entry reaches (its size does not grow with the release): the by-id entries,
    whose id parameters name how many ids the release has (the ids are in its tables), the
    tables, and an entry for each dataset whose path no kind's by-id template matches.
    Otherwise (the catalog :func:`open_catalog` builds) it has one entry per dataset and the
    ids as options.
    """
    rel = Release(lake, record)
    per_dataset = not (stored and record.format == 3)
    ref_options, plain = _options(lake)
    pin = {"abo_lake_release": record.name, "abo_lake_release_root": record.root}
    data: dict[str, Any] = {}
    entries: dict[str, Any] = {}
    taken: set[str] = set(PARAMETRISED) | set(record.tables)
    ids: dict[str, set[str]] = {}
    found: dict[str, set[str]] = {}
    levels: set[int] = set()
    for path in rel.datasets():
        entry = record.datasets[path]
        name = _entry_name(path, taken)
        meta = {
            **pin,
            "abo_lake_dataset": path,
            "abo_lake_kind": entry.get("kind"),
            "nbytes": int(entry.get("nbytes", 0)),
        }
        match = _match(path)
        root = ""
        if match and match[0] in _MULTISCALE:
            res = _levels(lake, record, path)
            levels.update(res)
            if res:
                root = f"{res[0]}um"
                meta["resolutions_um"] = res
        if per_dataset or not match:  # by id, or else by name
            data[f"{name}_zarr"] = _zarr(rel.manifest_url(path), ref_options, root)
            entries[name] = _reader(f"{name}_zarr", meta)
        if match:
            found.setdefault(match[0], set()).add(path)
            for param, value in match[1].items():
                ids.setdefault(param, set()).add(value)
    user_parameters: dict[str, Any] = {}
    for param, values in sorted(ids.items()):
        numeric = all(v.isdigit() for v in values)
        options = sorted(int(v) for v in values) if numeric else sorted(values)
        description = f"{param} ({len(options)} in release {record.name})"
        if record.format == 3:  # str: the by-id route takes its first digits
            options = [str(v) for v in options]
        user_parameters[param] = {
            "cls": _OPTIONS_UP,
            "options": options,
            "dtype": "int" if numeric and record.format != 3 else "str",
            "default": options[0],
            "description": description,
        }
        if not per_dataset:  # the ids are in the release's tables, not in its catalog
            del user_parameters[param]["options"]
            user_parameters[param]["cls"] = _SIMPLE_UP
            user_parameters[param]["description"] += "; its tables list them"
    if levels:
        user_parameters["resolution_um"] = {
            "cls": _OPTIONS_UP,
            "options": sorted(levels),
            "dtype": "int",
            "default": min(levels),
            "description": "CCF multiscale level (µm per voxel)",
        }
    for entry_name, (template, _) in PARAMETRISED.items():
        if entry_name not in found:
            continue
        root = "{resolution_um}um" if entry_name in _MULTISCALE and levels else ""
        route = _by_id_route(lake, record, template)
        by_id = {k: v for k, v in ref_options.items() if k != "target_options"} | route
        data[f"{entry_name}_by_id"] = _zarr(f"{template}.json", by_id, root)
        meta = {
            **pin,
            "abo_lake_dataset": template,
            "parameters": re.findall(r"\{(\w+)\}", template),  # GLIF paths have two
            "datasets": len(found[entry_name]),
        }
        if root:
            meta["parameters"].append("resolution_um")
        entries[entry_name] = _reader(f"{entry_name}_by_id", meta)
    for table, info in sorted(record.tables.items()):
        data[f"{table}_parquet"] = {
            "datatype": "intake.readers.datatypes:Parquet",
            "kwargs": {"url": rel.table_url(table), "storage_options": plain or None},
            "metadata": {},
            "user_parameters": {},
        }
        entries[table] = {
            "reader": "intake.readers.readers:PandasParquet",
            "kwargs": {"data": f"{{data({table}_parquet)}}"},
            "metadata": {**pin, "rows": info.get("rows"), "columns": info.get("columns", [])},
            "user_parameters": {},
            "output_instance": "pandas:DataFrame",
        }
    return {
        "version": 2,
        "metadata": {
            "description": f"abo_lake release {record.name} of lake {lake.url}",
            **pin,
            "created": record.created,
            "abo_lake_version": record.abo_lake_version,
            "notes": record.notes,
            "lake": lake.url,
        },
        "aliases": {name: name for name in entries},
        "user_parameters": user_parameters,
        "data": data,
        "entries": entries,
    }


def write_catalog(lake: Lake, record: ReleaseRecord) -> None:
    """Write a release's by-id index and catalog, and refresh the root catalog.

    Registered in :data:`abo_lake.lake.PUBLISH_HOOKS`: runs just after ``release.json`` is
    written by the writer that won the name, so a catalog never shows content that was not
    published; a release killed in between is completed by ``repair`` or a rerun.
    """
    doc = catalog_dict(lake, record, stored=True)
    if record.format != 3:  # format 3: the record and its parts route by id themselves
        lake.storage.write(_index_key(record), index_bytes(lake, record))
    lake.storage.write(f"releases/{record.name}/{CATALOG_KEY}", _dump(doc))
    names = lake.releases()  # oldest first, as verify derives it
    if record.name not in names:
        names.append(record.name)
    lake.storage.write(CATALOG_KEY, _dump(root_catalog_dict(lake, names)))


def _dump(doc: dict[str, Any]) -> bytes:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True).encode()


def root_catalog_dict(lake: Lake, names: list[str]) -> dict[str, Any]:
    """The lake's root catalog: one nested catalog entry per release, ``latest`` and ``release``."""
    _, plain = _options(lake)
    data, entries = {}, {}

    def nested(key: str, url: str, meta: dict[str, Any]) -> None:
        data[f"{key}_yaml"] = {
            "datatype": "intake.readers.datatypes:CatalogFile",
            "kwargs": {"url": url, "storage_options": plain or None},
            "metadata": {},
            "user_parameters": {},
        }
        entries[key] = {
            "reader": "intake.readers.readers:YAMLCatalogReader",
            "kwargs": {"data": f"{{data({key}_yaml)}}"},
            "metadata": meta,
            "user_parameters": {},
            "output_instance": "intake.readers.entry:Catalog",
        }

    for name in names:
        url = lake.storage.url_of(f"releases/{name}/{CATALOG_KEY}")
        nested(name, url, {"abo_lake_release": name})
    ups = {}
    if names:
        latest = names[-1]
        url = lake.storage.url_of(f"releases/{latest}/{CATALOG_KEY}")
        nested("latest", url, {"abo_lake_release": latest, "note": "newest when written"})
        if "release" not in names:
            nested("release", lake.storage.url_of(f"releases/{{release}}/{CATALOG_KEY}"), {})
        ups["release"] = {
            "cls": _OPTIONS_UP,
            "options": list(names),
            "dtype": "str",
            "default": latest,
            "description": "release name",
        }
    return {
        "version": 2,
        "metadata": {
            "description": f"abo_lake lake {lake.url}",
            "lake": lake.url,
            "releases": list(names),
        },
        "aliases": {k: k for k in entries},
        "user_parameters": ups,
        "data": data,
        "entries": entries,
    }


def catalog_completeness(lake: Lake, record: ReleaseRecord) -> list[tuple[str, str]]:
    """(key, "missing" | "altered" | "stale") of what :func:`write_catalog` writes: the by-id
    index and the release catalog, compared byte for byte with what the verified record
    derives, and the root catalog, with what the lake's releases derive; so no entry, reader
    or URL in them can differ from what the root hash covers. Registered in
    :data:`abo_lake.lake.COMPLETENESS_HOOKS` (for ``repair``)."""
    own, index = f"releases/{record.name}/{CATALOG_KEY}", _index_key(record)
    derived = {own: lambda: _dump(catalog_dict(lake, record, stored=True))}
    if record.format != 3:
        derived[index] = lambda: index_bytes(lake, record)
    got = lake.storage.read_many([*derived, CATALOG_KEY])
    out = []
    for key, derive in derived.items():
        if isinstance(got[key], Exception):
            out.append((key, "missing"))
        elif got[key] != derive():
            out.append((key, "altered"))
    if isinstance(got[CATALOG_KEY], Exception):
        out.append((CATALOG_KEY, "missing"))
    elif got[CATALOG_KEY] != _dump(root_catalog_dict(lake, lake.releases())):
        out.append((CATALOG_KEY, "stale"))
    return out


def verify_catalog(lake: Lake, record: ReleaseRecord, report: VerifyReport) -> None:
    """Check a release's by-id index, catalog and the root catalog (for :meth:`Lake.verify`;
    registered in :data:`abo_lake.lake.VERIFY_HOOKS`).

    Each must equal what the record derives. A missing one or a root catalog without this
    release makes the release incomplete (``abo-lake repair`` completes it); one that differs
    from its derivation is corrupt.
    """
    for key, state in catalog_completeness(lake, record):
        if state == "altered":
            report.corrupt.append(("catalog", key, ""))
        else:
            report.incomplete.append((key, state))
    report.checked += 3 if record.format != 3 else 2


PUBLISH_HOOKS.append(write_catalog)
VERIFY_HOOKS.append(verify_catalog)
COMPLETENESS_HOOKS.append(catalog_completeness)


# -- opening catalogs ----------------------------------------------------------------------
@cache
def _pinned_classes() -> tuple[type, type]:
    """(reader, catalog) subclasses of intake's that stamp the release in Dataset attrs."""
    from intake.readers.entry import Catalog
    from intake.readers.readers import XArrayDatasetReader

    class PinnedXArrayReader(XArrayDatasetReader):
        """XArrayDatasetReader recording the release in the opened Dataset's attrs."""

        def _read(self, data: Any, **kw: Any) -> xr.Dataset:
            ds = super()._read(data, **kw)
            ds.attrs.update({k: v for k, v in self.metadata.items() if k.startswith("abo_lake_")})
            return ds

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            new = super().__call__(*args, **kwargs)
            new.metadata = {**self.metadata, **new.metadata}
            return new

    class ReleaseCatalog(Catalog):
        """An intake catalog whose xarray entries stamp the release in the attrs."""

        def __getitem__(self, item: str) -> Any:
            reader = super().__getitem__(item)
            if type(reader) is not XArrayDatasetReader:
                return reader
            meta = dict(reader.metadata)
            template = meta.get("abo_lake_dataset", "")
            if "{" in template:
                values = {k: getattr(v, "default", v) for k, v in self.user_parameters.items()}
                for k, v in self._up_overrides.items():
                    up = self.user_parameters.get(k)
                    values[k] = up.coerce(v) if hasattr(up, "coerce") else v
                meta["abo_lake_dataset"] = template.format_map(values)
            return PinnedXArrayReader(metadata=meta, **reader.kwargs)

        def __call__(self, **kwargs: Any) -> Any:
            new = super().__call__(**kwargs)
            new.__class__ = type(self)
            return new

    return PinnedXArrayReader, ReleaseCatalog


def _with_credentials(doc: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Add runtime storage options (credentials) to every data entry, in memory only."""
    if not options:
        return doc
    for desc in doc["data"].values():
        so = desc["kwargs"].get("storage_options")
        if isinstance(so, dict) and "fo" in so:
            so = dict(so)
            so["remote_options"] = {**so.get("remote_options", {}), **options}
            so["target_options"] = _credentials_of_target(so, options)
            so["remote_options"]["asynchronous"] = True
        elif "url" in desc["kwargs"]:
            so = {**(so or {}), **options}
        desc["kwargs"] = {**desc["kwargs"], "storage_options": so}
    return doc


def _credentials_of_target(so: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The ``target_options`` of reference-filesystem options ``so`` with ``options`` added
    wherever storage is read: down a by-id chain (reference over reference) to the end."""
    target = dict(so.get("target_options", {}))
    if so.get("target_protocol") != "reference":
        return {**target, **options}
    target["remote_options"] = {**target.get("remote_options", {}), **options}
    target["target_options"] = _credentials_of_target(target, options)
    return target


def open_catalog(
    url: str | None = None, release: str | None = "latest", **storage_options: Any
) -> Catalog:
    """Open the intake catalog of a release (or, with ``release=None``, of the whole lake).

    Parameters
    ----------
    url
        The lake (as for :func:`abo_lake.open_lake`).
    release
        ``"latest"`` (resolved to a concrete name), a name, ``"name@root"``, or ``None``
        for the root catalog listing every release.
    **storage_options
        For the lake's filesystem (credentials stay in memory; never written).

    Returns
    -------
    intake.readers.entry.Catalog
        Entries open lazily; Datasets carry ``abo_lake_release`` and ``..._root`` attrs.

    Examples
    --------
    >>> cat = open_catalog(release="2026.1")  # doctest: +SKIP
    >>> ds = cat(ophys_experiment_id=951980471).ophys_experiment.read()  # doctest: +SKIP
    """
    from intake.readers.entry import Catalog

    lake = open_lake(url, **storage_options)
    secrets = dict(lake.storage.storage_options)
    if release is None:
        doc = root_catalog_dict(lake, lake.releases())
        return Catalog.from_dict(_with_credentials(doc, secrets))
    rel = lake.release(release)
    _warn_if_not_newest(rel)
    if not lake.storage.exists(f"releases/{rel.name}/{CATALOG_KEY}"):
        _backfill(lake, rel.record)
    # Built from the verified release record (same content as the stored YAML, which is
    # for plain intake; parsing thousands of YAML entries takes seconds).
    doc = catalog_dict(lake, rel.record)
    return _pinned_classes()[1].from_dict(_with_credentials(doc, secrets))


def _backfill(lake: Lake, record: ReleaseRecord) -> None:
    """Write the catalog of a release published without one (if the lake is writable)."""
    try:
        write_catalog(lake, record)
    except OSError as err:
        warnings.warn(
            f"release {record.name!r} has no stored catalog and it cannot be written "
            f"({type(err).__name__}: {err}); entries chosen by id will not open",
            UserWarning,
            stacklevel=3,
        )


def root_catalog(url: str | None = None, **storage_options: Any) -> Catalog:
    """The lake's root catalog (every release as a nested catalog), built now."""
    return open_catalog(url, release=None, **storage_options)
