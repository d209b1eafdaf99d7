"""One declaration per kind: what the readers make is what ``abo_lake.kinds`` declares, and
every registry of the lake is read from the declarations."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import xarray as xr

from abo_lake import catalog, demo, release_tables, schema, sources, synthetic
from abo_lake.jobs import plan
from abo_lake.kinds import FORMATS, KINDS, kinds_for

DATASET_KINDS = [k for k in KINDS if KINDS[k].path]


def _kind_of_path(path: str) -> list[str]:
    return [
        k.name
        for k in KINDS.values()
        for template in k.catalog_entries.values()
        if k.path and _pattern(template).match(path)
    ]


def _pattern(template: str):
    import re

    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")


@pytest.mark.parametrize("fmt", [f for f in FORMATS if FORMATS[f].synthetic])
def test_each_format_reads_what_its_generator_writes_into_declared_kinds(fmt, tiny_sources):
    """Every dataset a reader makes from its generator's files has a declared path and kind."""
    files = [Path(p) for p in plan([tiny_sources[fmt]])]
    assert files
    seen = set()
    for path in files:
        read_as = sources.detect_format(path)
        for dataset_path, obj in sources.read(path, read_as).items():
            kind = obj.attrs.get(schema.KIND_ATTR)
            assert _kind_of_path(dataset_path) == [kind], (dataset_path, kind)
            if isinstance(obj, xr.Dataset):
                schema.validate(obj, kind)
            seen.add(kind)
    assert seen


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_names_importable_parts(fmt):
    f = FORMATS[fmt]
    if f.reader:
        module = importlib.import_module(f.reader)
        assert callable(module.sniff)
        assert callable(module.read)
        assert sources.READERS[fmt] == f.reader
    if f.synthetic:
        module_name, func = f.synthetic.split(":")
        assert callable(getattr(importlib.import_module(module_name), func))
        assert synthetic.KINDS[fmt] == f.synthetic
    assert (fmt in demo.SOURCES) == (f.demo is not None)


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_registries_are_read_from_the_declaration(kind):
    k = KINDS[kind]
    assert schema.LAYOUTS[kind] is k.layout
    for entry, template in k.catalog_entries.items():
        assert catalog.PARAMETRISED[entry][0] == template
    if k.table:
        assert release_tables.TABLES[k.table] == (kind, k.table_index)
    for table in k.row_tables:
        assert release_tables.ROW_TABLES[table.name][1] == kind
    if k.accessor:
        assert kind in kinds_for(k.accessor)


def test_the_schema_validates_a_kind_from_its_declaration(monkeypatch):
    from abo_lake import kinds

    new = kinds.Kind(
        schema.Layout("widget_session", dims=("widget",), description="a test kind"),
        path="widget/session/{widget_session_id}",
        id="widget_session_id",
    )
    monkeypatch.setitem(kinds.KINDS, new.name, new)
    ds = xr.Dataset(coords={"widget": [1, 2]}, attrs={schema.KIND_ATTR: "widget_session"})
    assert schema.validate(ds, "widget_session") is ds
    with pytest.raises(schema.SchemaError, match="missing dim 'widget'"):
        schema.validate(xr.Dataset(), "widget_session")
