"""The synthetic generators write the HDF5 structure of the AllenSDK-written fixtures.

A structure walker lists every object of an NWB file (groups, datasets and soft links, with
their neurodata type, attribute names and dataset dtype kind and rank) and the tests compare
each generator's output at scale "tiny" with the AllenSDK 2.16.2 fixture of its kind
(``shared/data/allensdk``). Values and sizes may differ; names that carry ids or values
(device, image set, probe ids) are replaced by placeholders first.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import pytest

from abo_lake.synthetic import vbo_behavior, vbo_ophys, vcn_ecephys

ALLENSDK = Path(__file__).resolve().parents[2] / "shared" / "data" / "allensdk"

pytestmark = pytest.mark.skipif(
    not ALLENSDK.is_dir(), reason=f"AllenSDK fixtures not found at {ALLENSDK}"
)

#: cached namespaces: their versions follow the writing pynwb, not AllenSDK's layout
_SKIP = ("specifications",)


def _placeholders(f: h5py.File) -> list[tuple[str, str]]:
    """(name, placeholder) pairs for the names a file's values choose."""
    out: list[tuple[str, str]] = []
    for key in ("stimulus/templates", "stimulus/presentation"):
        for name in f.get(key, {}):
            out.append((name, "<image_set>"))
            out.append((name.split(".")[0], "<image_set_stem>"))
    probes = sorted(n for n in f.get("general/devices", {}) if n.startswith("probe"))
    out += [(name, f"probe<{i}>") for i, name in enumerate(probes)]  # probeA, probeC, ...
    out += [(n, "<device>") for n in f.get("general/devices", {}) if not n.startswith("probe")]
    # longest first, so a full image-set stem wins over its first-dot cut
    return sorted(set(out), key=lambda p: -len(p[0]))


def _normalise(path: str, names: list[tuple[str, str]]) -> str:
    parts = []
    for part in path.split("/"):
        for name, placeholder in names:
            part = part.replace(name, placeholder)
        part = re.sub(r"probe_\d+", "probe_<id>", part)
        parts.append(part)
    return "/".join(parts)


def structure(path: str | Path) -> dict[str, tuple]:
    """Map each normalised HDF5 path of an NWB file to what its structure says.

    Returns
    -------
    dict
        path -> ("group", neurodata_type, attribute names), ("dataset", neurodata_type,
        attribute names, dtype kind, ndim) or ("link",); attribute ``object_id`` left out,
        compound dtypes as the tuple of their field kinds.
    """
    out: dict[str, tuple] = {}
    with h5py.File(path, "r") as f:
        names = _placeholders(f)

        def attrs(obj) -> tuple:
            keys = sorted(k for k in obj.attrs if k != "object_id")
            ntype = obj.attrs.get("neurodata_type", "")
            ntype = ntype.decode() if isinstance(ntype, bytes) else str(ntype)
            return ntype, tuple(keys)

        def kind(dtype) -> str:
            if dtype.names:
                return "(" + ",".join(dtype[n].kind for n in dtype.names) + ")"
            if h5py.check_string_dtype(dtype) is not None:
                return "str"
            return dtype.kind

        def walk(group: h5py.Group, prefix: str) -> None:
            for name in group:
                full = f"{prefix}/{name}" if prefix else name
                if full in _SKIP:
                    continue
                key = _normalise(full, names)
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.SoftLink):
                    out[key] = ("link",)
                    continue
                obj = group[name]
                if isinstance(obj, h5py.Dataset):
                    out[key] = ("dataset", *attrs(obj), kind(obj.dtype), obj.ndim)
                else:
                    out[key] = ("group", *attrs(obj))
                    walk(obj, full)

        out["/"] = ("group", *attrs(f))
        walk(f, "")
    return out


def _namespaces(path: str | Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return sorted(f.get("specifications", {}))


def differences(ours: str | Path, fixture: str | Path) -> list[str]:
    """Describe, path by path, where ``ours`` differs in structure from ``fixture``.

    Cached specifications are compared by namespace name (their versions follow pynwb).
    """
    a, b = structure(ours), structure(fixture)
    if _namespaces(ours) != _namespaces(fixture):
        a["specifications"] = ("namespaces", *_namespaces(ours))
        b["specifications"] = ("namespaces", *_namespaces(fixture))
    lines = [f"missing: {p} {b[p]}" for p in sorted(b.keys() - a.keys())]
    lines += [f"extra: {p} {a[p]}" for p in sorted(a.keys() - b.keys())]
    lines += [
        f"differs: {p}: ours {a[p]} vs AllenSDK {b[p]}"
        for p in sorted(a.keys() & b.keys())
        if a[p] != b[p]
    ]
    return lines


def _assert_same(ours: Path, fixture: Path, expected: tuple[str, ...] = ()) -> None:
    """Assert equal structures, apart from the ``expected`` differences (line prefixes)."""
    diff = [d for d in differences(ours, fixture) if not d.startswith(expected)]
    assert not diff, f"{ours.name} vs {fixture.name}: {len(diff)} differences\n" + "\n".join(diff)


#: A release LFP file has its session's subject; the AllenSDK 2.16.2 fixture's LFP files lack it
#: (shared/tools/allensdk/README.md, "What differs from a real release file", 5).
LFP_SUBJECT = ("extra: general/subject",)
#: AllenSDK writes no rewards module when a session has no rewards (layout note 24): passive
#: replay sessions.
NO_REWARDS = ("missing: processing/rewards",)


def test_walker_sees_a_difference(tmp_path):
    """The comparison can fail: a dropped dataset and a changed dtype are reported."""
    src = ALLENSDK / "vbo_behavior_session_1000000101.nwb"
    copy = tmp_path / "copy.nwb"
    copy.write_bytes(src.read_bytes())
    assert differences(copy, src) == []
    with h5py.File(copy, "a") as f:
        del f["processing/licking/licks/data"]
        f["processing/licking/licks/data"] = [1.5]
    assert differences(copy, src) == [
        "differs: processing/licking/licks/data: ours ('dataset', '', (), 'f', 1) vs AllenSDK "
        "('dataset', '', ('conversion', 'offset', 'resolution', 'unit'), 'i', 1)"
    ]


@pytest.fixture(scope="module")
def vbo_ophys_file(tmp_path_factory):
    return vbo_ophys.write(tmp_path_factory.mktemp("vbo"), scale="tiny", seed=0)[0]


def test_vbo_ophys_layout(vbo_ophys_file):
    _assert_same(vbo_ophys_file, ALLENSDK / "vbo_ophys_experiment_1000000001.nwb")


def test_vbo_ophys_layout_of_other_rigs_and_passive_sessions(tmp_path):
    """Mesoscope and Scientifica rigs, image sets A/B/G/H, active and passive sessions."""
    paths = vbo_ophys.write(tmp_path, scale="tiny", seed=0, n_experiments=4)
    fixture = ALLENSDK / "vbo_ophys_experiment_1000000001.nwb"
    passive = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            blocks = f[f"intervals/{_image_table(f)}/stimulus_block_name"].asstr()[:2]
        is_passive = blocks[0] == "change_detection_passive"
        passive += is_passive
        _assert_same(path, fixture, NO_REWARDS if is_passive else ())
    assert passive >= 1  # the passive case is covered


def _image_table(f: h5py.File) -> str:
    (name,) = [k for k in f["intervals"] if k.startswith("Natural_Images")]
    return name


def test_vbo_behavior_layout(tmp_path):
    (path,) = vbo_behavior.write(tmp_path, scale="tiny", seed=0)
    _assert_same(path, ALLENSDK / "vbo_behavior_session_1000000101.nwb")


def test_vcn_ecephys_layout(tmp_path):
    session, *lfp = vcn_ecephys.write(tmp_path, scale="tiny", seed=0)
    _assert_same(session, ALLENSDK / "vcn_session_1000000201.nwb")
    for path in lfp:
        _assert_same(
            path, ALLENSDK / "vcn_session_1000000201_probe_1000000211_lfp.nwb", LFP_SUBJECT
        )
