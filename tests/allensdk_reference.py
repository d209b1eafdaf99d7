"""What AllenSDK's own readers return from the AllenSDK-written fixtures (shared/data/allensdk).

The fixtures and their references are made by ``shared/tools/allensdk/make_fixtures.py``
(AllenSDK 2.16.2); its README documents the ``<stem>.reference.{json,npz}`` format that
:func:`table`, :func:`array` and :func:`value` decode here. Tests reading them skip, with a
reason, when the shared folder is absent.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "allensdk"

#: fixture stem -> the files a conversion of that fixture reads
STEMS = {
    "vbo_ophys": "vbo_ophys_experiment_1000000001",
    "vbo_behavior": "vbo_behavior_session_1000000101",
    "vcn": "vcn_session_1000000201",
    "vbn": "vbn_ecephys_session_1000000301",
}


def require() -> Path:
    """The fixtures folder, or skip the calling test with the reason."""
    if not (FIXTURES / "manifest.json").is_file():
        pytest.skip(f"{FIXTURES} is absent (the read-only shared/ folder beside the clone)")
    return FIXTURES


def files(stem: str) -> list[Path]:
    """The NWB files of one fixture: the session file first, then its probes' LFP files."""
    folder = require()
    return [folder / f"{stem}.nwb", *sorted(folder.glob(f"{stem}_probe_*_lfp.nwb"))]


@cache
def _meta(stem: str) -> dict[str, Any]:
    return json.loads((require() / f"{stem}.reference.json").read_text())


@cache
def _npz(stem: str) -> Any:
    return np.load(require() / f"{stem}.reference.npz", allow_pickle=False)


def names(stem: str, what: str) -> list[str]:
    """The names of the ``what`` (``tables``, ``arrays`` or ``values``) in a reference."""
    if not (FIXTURES / f"{stem}.reference.json").is_file():
        return []
    return sorted(json.loads((FIXTURES / f"{stem}.reference.json").read_text())[what])


def table_info(stem: str, name: str) -> dict[str, Any]:
    """The reference's description of a table: call, n_rows, index, per-column dtype/encoding."""
    return _meta(stem)["tables"][name]


def table(stem: str, name: str) -> pd.DataFrame:
    """AllenSDK's table ``name`` as stored in the reference, decoded to a DataFrame.

    Ragged columns become lists of arrays, stacked ones lists of rows; nullable booleans stay
    float64 with NaN and gapped strings get None where ``__isnull`` says so.
    """
    meta = table_info(stem, name)
    z = _npz(stem)
    cols: dict[str, Any] = {}
    for column, info in meta["columns"].items():
        key = f"{name}__{column}"
        encoding = info["encoding"]
        if encoding.startswith("ragged"):
            values, offsets = z[key], z[key + "__offsets"]
            cols[column] = [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        elif encoding.startswith("stacked"):
            cols[column] = list(z[key])
        else:
            data = z[key]
            if key + "__isnull" in z.files:
                data = np.where(z[key + "__isnull"], None, data.astype(object))
            cols[column] = data
    index = pd.Index(z[f"{name}__index"], name=meta["index_name"])
    return pd.DataFrame(cols, index=index)


def array(stem: str, name: str) -> np.ndarray:
    """A reference array by name (``dff``-free arrays: ``ophys_timestamps``, ``lfp_slice``...)."""
    return _npz(stem)[name]


def array_info(stem: str, name: str) -> dict[str, Any]:
    return _meta(stem)["arrays"][name]


def value(stem: str, name: str) -> Any:
    """A reference value (``metadata``, ``task_parameters``, ...): what AllenSDK returned."""
    entry = _meta(stem)["values"][name]
    return entry["value"] if isinstance(entry, dict) and "value" in entry else entry
