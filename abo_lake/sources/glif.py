"""Reader of GLIF neuron configs: Allen's ``neuron_config.json`` (GLIF 1–5).

``read(path)`` returns ``{"celltypes/specimen/<specimen_id>/glif/<neuronal_model_id>": ds}`` of
kind ``glif_model``:

- dim ``asc`` (one per after-spike current) with ``asc_tau_array`` (s), ``asc_amp_array`` (A),
  ``init_AScurrents`` (A), ``coeffs.asc_amp_array`` and, for the ``sum`` reset,
  ``AScurrent_reset_method.params.r``;
- every scalar field as an attr of its own name (``El``, ``C``, ``R_input``, ``th_inf``,
  ``spike_cut_length``, ...; a null ``th_adapt`` is left out and listed in ``glif_null_fields``),
  the coefficients as ``coeffs.<name>``, each method as ``<method kind>`` (its name) and
  ``<method kind>.params.<param>``; any other field is kept (a nested one as JSON text,
  listed in ``glif_json_fields``); ``glif_config_attrs`` lists the attrs that are config
  fields (a job adds its own), so :func:`config_of` gives the file's config back;
- ``specimen_id``, ``neuronal_model_id`` and ``glif_level`` (1–5, 0 for another combination).

Ids come from where the file lies, as in Allen's downloads: the specimen id from a folder
``specimen_<id>`` (``CellTypesCache``) or the file name ``<specimen_id>_neuron_config.json``
(the model download's zip), the model id from a folder ``glif_<neuronal_model_id>``: e.g.
``specimen_474626527/glif_566302806/neuron_config.json``. Files are sniffed by content (a JSON
object with the GLIF fields), never by name. The config is validated
(:func:`abo_lake.glif.validate_config`): a missing field or coefficient, an unknown method
name, a capacitance that is not positive, a non-finite value is a ``SourceFileError`` naming
the file and the field.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from abo_lake.errors import SourceFileError
from abo_lake.glif import ARRAYS, METHODS, GlifConfigError, glif_level, validate_config
from abo_lake.schema import KIND_ATTR

__all__ = ["config_of", "dataset", "fidelity_problems", "read", "sniff"]

#: Fields of which a JSON object needs four to be taken for a GLIF config.
_GLIF_KEYS = frozenset(
    {
        "El",
        "th_inf",
        "coeffs",
        "R_input",
        "C",
        "asc_tau_array",
        "asc_amp_array",
        "spike_cut_length",
        "init_threshold",
        "init_AScurrents",
        *METHODS,
    }
)
_MAX_JSON_BYTES = 1 << 20
_SPECIMEN_DIR_RE = re.compile(r"^specimen_(\d+)$")
_SPECIMEN_NAME_RE = re.compile(r"^(\d+)_neuron_config\.json$")
_MODEL_DIR_RE = re.compile(r"^glif_(\d+)$")
_VARIABLES = (*ARRAYS, "coeffs.asc_amp_array")
_UNITS = {"asc_tau_array": "s", "asc_amp_array": "A", "init_AScurrents": "A"}
_SCALAR_UNITS = {
    "El": "V",
    "El_reference": "V",
    "C": "F",
    "R_input": "Ohm",
    "th_inf": "V",
    "th_adapt": "V",
    "dt": "s",
    "init_voltage": "V",
    "init_threshold": "V",
}
#: Attrs the reader adds that are not config fields.
_OWN_ATTRS = (
    "specimen_id",
    "neuronal_model_id",
    "glif_level",
    "glif_config_attrs",
    "glif_json_fields",
    "glif_null_fields",
    "glif_units",
    KIND_ATTR,
)


def _load(path: Path) -> Any:
    with path.open("rb") as f:
        head = f.read(64)
    if head.lstrip()[:1] != b"{" or path.stat().st_size > _MAX_JSON_BYTES:
        return None
    return json.loads(path.read_text())


def sniff(path: str | Path) -> bool:
    """Return True for a JSON object with the fields of a GLIF ``neuron_config.json``."""
    try:
        doc = _load(Path(path))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and len(_GLIF_KEYS & doc.keys()) >= 4


def _ids(p: Path) -> tuple[int, int]:
    specimen = model = None
    m = _SPECIMEN_NAME_RE.match(p.name)
    if m:
        specimen = int(m[1])
    for parent in Path(os.path.abspath(p)).parents:  # not resolve(): links keep names
        if specimen is None and (m := _SPECIMEN_DIR_RE.match(parent.name)):
            specimen = int(m[1])
        if model is None and (m := _MODEL_DIR_RE.match(parent.name)):
            model = int(m[1])
    if specimen is None or model is None:
        raise SourceFileError(
            f"{p}: a GLIF neuron config needs its ids from where it lies: the specimen from a "
            "folder specimen_<id> or the name <specimen_id>_neuron_config.json, the model "
            "from a folder glif_<neuronal_model_id> (e.g. "
            "specimen_474626527/glif_566302806/neuron_config.json); found "
            f"specimen {specimen}, model {model}"
        )
    return specimen, model


def read(path: str | Path) -> dict[str, xr.Dataset]:
    """Read one ``neuron_config.json`` into its ``glif_model`` Dataset (see the module)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise SourceFileError(f"{p}: not a readable JSON file: {err}") from err
    try:
        validate_config(doc)
    except GlifConfigError as err:
        raise SourceFileError(f"{p}: invalid GLIF neuron config: {err}") from err
    specimen, model = _ids(p)
    return {f"celltypes/specimen/{specimen}/glif/{model}": dataset(doc, specimen, model)}


def dataset(config: dict[str, Any], specimen_id: int, neuronal_model_id: int) -> xr.Dataset:
    """The ``glif_model`` Dataset of a validated config."""
    data: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    json_fields: list[str] = []
    null_fields: list[str] = []
    for key in ARRAYS:
        data[key] = ("asc", np.asarray(config[key], dtype=float), {"units": _UNITS[key]})
    data["coeffs.asc_amp_array"] = ("asc", np.asarray(config["coeffs"]["asc_amp_array"], float))
    for key, value in config["coeffs"].items():
        if key != "asc_amp_array":
            _attr(attrs, f"coeffs.{key}", value, json_fields, null_fields)
    for kind in METHODS:
        method = config[kind]
        attrs[kind] = method["name"]
        for p, value in (method["params"] or {}).items():
            if kind == "AScurrent_reset_method" and p == "r":
                data[f"{kind}.params.r"] = ("asc", np.asarray(value, dtype=float))
            else:
                _attr(attrs, f"{kind}.params.{p}", value, json_fields, null_fields)
        if method["params"] is None:
            null_fields.append(f"{kind}.params")
    for key, value in config.items():
        if key in ARRAYS or key in METHODS or key == "coeffs":
            continue
        if key in _OWN_ATTRS:
            raise SourceFileError(f"config field {key!r} clashes with an abo_lake attr")
        _attr(attrs, key, value, json_fields, null_fields)
    n = len(config["asc_tau_array"])
    return xr.Dataset(
        data,
        coords={"asc": np.arange(n)},
        attrs={
            **attrs,
            "glif_config_attrs": sorted(attrs),
            "glif_units": json.dumps({k: u for k, u in _SCALAR_UNITS.items() if k in attrs}),
            "glif_json_fields": json_fields,
            "glif_null_fields": null_fields,
            "specimen_id": specimen_id,
            "neuronal_model_id": neuronal_model_id,
            "glif_level": glif_level(config) or 0,
            KIND_ATTR: "glif_model",
        },
    )


def _attr(attrs: dict, key: str, value: Any, json_fields: list, null_fields: list) -> None:
    if value is None:
        null_fields.append(key)
    elif isinstance(value, (bool, int, float, str)):
        attrs[key] = value
    else:
        attrs[key] = json.dumps(value)
        json_fields.append(key)


def config_of(ds: xr.Dataset) -> dict[str, Any]:
    """The ``neuron_config.json`` dict of a ``glif_model`` Dataset (lazy or loaded)."""
    if ds.attrs.get(KIND_ATTR) != "glif_model":
        raise ValueError(
            f"not a glif_model Dataset (kind {ds.attrs.get(KIND_ATTR)!r}); open one from "
            "celltypes/specimen/<id>/glif/<model_id>"
        )
    json_fields = set(_list(ds.attrs.get("glif_json_fields")))
    flat: dict[str, Any] = {}
    for key in _list(ds.attrs.get("glif_config_attrs")):
        value = ds.attrs[key]
        flat[key] = json.loads(value) if key in json_fields else _plain(value)
    for key in _list(ds.attrs.get("glif_null_fields")):
        flat[key] = None
    for name, var in ds.data_vars.items():
        if name in _VARIABLES or name.endswith(".params.r"):
            flat[name] = [float(x) for x in np.asarray(var.values)]
    config: dict[str, Any] = {"coeffs": {}}
    for kind in METHODS:
        config[kind] = {"name": flat.pop(kind), "params": {}}
    for key in sorted(flat):
        value = flat[key]
        head, _, rest = key.partition(".")
        if head == "coeffs" and rest:
            config["coeffs"][rest] = value
        elif head in METHODS and rest == "params":
            config[head]["params"] = value
        elif head in METHODS and rest.startswith("params."):
            config[head]["params"][rest.removeprefix("params.")] = value
        else:
            config[key] = value
    return config


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in np.asarray(value).ravel()]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def fidelity_problems(path: str | Path, ds: xr.Dataset) -> list[str]:
    """The source ``neuron_config.json`` re-parsed with :mod:`json` against the lake's
    Dataset: each field (JSON-normalised) and the ids; one line per difference."""
    p = Path(path)
    want = json.loads(p.read_text())
    try:
        got = config_of(ds)
    except (KeyError, ValueError) as err:
        return [f"{p.name}: the lake's Dataset is not a readable glif_model: {err}"]
    problems = [
        f"{p.name}: field {key!r} is {got.get(key)!r}, expected {want.get(key)!r}"
        for key in sorted(set(want) | set(got))
        if _normal(got.get(key)) != _normal(want.get(key))
    ]
    specimen, model = _ids(p)
    for attr, value in (("specimen_id", specimen), ("neuronal_model_id", model)):
        if ds.attrs.get(attr) != value:
            problems.append(f"{p.name}: {attr} is {ds.attrs.get(attr)!r}, expected {value}")
    return problems


def _normal(value: Any) -> str:
    """JSON text with numbers as floats (``[0, 0]`` is stored as ``[0.0, 0.0]``)."""

    def floats(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: floats(x) for k, x in v.items()}
        if isinstance(v, list):
            return [floats(x) for x in v]
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    return json.dumps(floats(value), sort_keys=True)
