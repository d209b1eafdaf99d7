"""Fidelity of the curated layout: every mapped HDF5 dataset against what the lake holds."""

from __future__ import annotations

import fnmatch

import numpy as np
import pytest
import xarray as xr

import abo_lake
from abo_lake import sources
from abo_lake.fidelity_mapped import check_reader, mapped_datasets
from abo_lake.synthetic import synthesize

FORMATS = ("vbo-ophys", "vc2p-ophys", "vcn-ecephys", "celltypes")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """{fmt: [(source path, dataset key, read Dataset, reopened Dataset)]} from one lake."""
    root = tmp_path_factory.mktemp("fidelity_mapped")
    lake = abo_lake.open_lake(str(root / "lake"))
    out: dict[str, list] = {}
    with lake.stage("r1") as st:
        for fmt in FORMATS:
            out[fmt] = []
            for path in synthesize(fmt, root / fmt, scale="tiny"):
                if path.suffix != ".nwb":
                    continue
                for key, ds in sources.read(path, fmt).items():
                    st.write(key, ds)
                    out[fmt].append((path, key, ds))
    release = lake.release("r1")
    return {
        fmt: [(p, key, ds, release.open(key)) for p, key, ds in items] for fmt, items in out.items()
    }, lake


def _changed(ds: xr.Dataset, name: str, index: tuple[int, ...]) -> xr.Dataset:
    """``ds`` with one value of variable ``name`` changed (in memory)."""
    values = np.array(ds[name].values)
    if values.dtype == bool:
        values[index] = not values[index]
    elif values.dtype.kind in "OUT":
        values[index] = str(values[index]) + "x"
    else:
        values[index] = values[index] + 1
    out = ds.copy()
    out[name] = ds[name].copy(data=values)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_stored_files_are_faithful(stored, fmt):
    items, _ = stored
    assert items[fmt]
    for path, key, ds, back in items[fmt]:
        assert check_reader(path, fmt, ds) == [], key
        assert check_reader(path, fmt, back) == [], key


def test_every_mapped_dataset_of_a_session_is_checked(stored):
    items, _ = stored
    path, _, _, back = items["vcn-ecephys"][0]
    module = sources._module("vcn-ecephys")
    covered = {h for _, m in module.fidelity_mappings(back, path) for h in m}
    assert set(mapped_datasets(path, module.MAPPED_HDF5)) <= covered
    assert len(covered) > 80


@pytest.mark.parametrize(
    ("fmt", "which", "name", "index", "hpath"),
    [
        (
            "vbo-ophys",
            0,
            "dff",
            (1, 5),
            "/processing/ophys/dff/traces/data",
        ),
        (
            "vbo-ophys",
            0,
            "stimulus_presentations.image_name",
            (3,),
            "/intervals/*_presentations/image_name",
        ),
        (
            "vc2p-ophys",
            0,
            "stimulus_presentations.orientation",
            (0,),
            None,  # the first drifting grating row
        ),
        (
            "vc2p-ophys",
            0,
            "motion_correction.y",
            (2,),
            "/processing/brain_observatory_pipeline/MotionCorrection/2p_image_series/"
            "xy_translation/data",
        ),
        ("vcn-ecephys", 0, "spike_times", (7,), "/units/spike_times"),
        ("vcn-ecephys", 0, "waveform_mean", (1, 2, 3), "/units/waveform_mean"),
        (
            "vcn-ecephys",
            1,
            "lfp",
            (100, 4),
            "/acquisition/probe_715093704_lfp/probe_715093704_lfp_data/data",
        ),
        (
            "vcn-ecephys",
            2,
            "csd",
            (3, 10),
            "/processing/current_source_density/ecephys_csd/current_source_density/data",
        ),
    ],
)
def test_one_changed_value_is_reported(stored, fmt, which, name, index, hpath):
    items, _ = stored
    path, _, _, back = items[fmt][which]
    if hpath is None:  # a drifting grating row: the only stimulus with an orientation
        index = (int(np.flatnonzero(~np.isnan(back[name].values))[index[0]]),)
        assert back["stimulus_presentations.stimulus_name"].values[index] == "drifting_gratings"
        hpath = "/stimulus/presentation/drifting_gratings_stimulus/data"
    problems = check_reader(path, fmt, _changed(back, name, index))
    assert len(problems) == 1, problems
    where, what = problems[0].split(": ", 1)
    assert fnmatch.fnmatchcase(where, hpath), problems
    assert what.startswith("1 of "), problems


def test_a_changed_attribute_is_reported(stored):
    items, _ = stored
    path, _, _, back = items["vbo-ophys"][0]
    changed = back.copy()
    changed.attrs = {**back.attrs, "full_genotype": back.attrs["full_genotype"] + "x"}
    problems = check_reader(path, "vbo-ophys", changed)
    assert [p.split(":")[0] for p in problems] == ["/general/subject/genotype"]


def test_a_changed_chunk_in_a_second_release_is_reported(stored):
    items, lake = stored
    path, key, _, back = items["vc2p-ophys"][0]
    changed = _changed(back.load(), "dff", (2, 3))
    with lake.stage("r2") as st:
        st.write(key, changed)
    again = lake.release("r2").open(key)
    problems = check_reader(path, "vc2p-ophys", again)
    assert len(problems) == 1
    assert problems[0].startswith(
        "/processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/data: 1 of "
    )
    assert "first at (2, 3)" in problems[0]


def test_a_mapped_dataset_without_a_mapping_is_reported(stored, monkeypatch):
    items, _ = stored
    path, _, ds, _ = items["vc2p-ophys"][0]
    module = sources._module("vc2p-ophys")
    raw_only = "/processing/brain_observatory_pipeline/Fluorescence/imaging_plane_1/data"
    monkeypatch.setattr(module, "MAPPED_HDF5", (*module.MAPPED_HDF5, raw_only))
    problems = check_reader(path, "vc2p-ophys", ds)
    assert len(problems) == 1
    assert problems[0].startswith(f"{raw_only}: matched by MAPPED_HDF5")


def test_a_mapping_that_forgets_a_dataset_is_reported(stored, monkeypatch):
    items, _ = stored
    path, _, ds, _ = items["vcn-ecephys"][0]
    module = sources._module("vcn-ecephys")
    original = module.fidelity_mappings

    def forgetful(ds, path):
        pairs = original(ds, path)
        view, mapping = pairs[0]
        return [(view, {k: v for k, v in mapping.items() if k != "/units/snr"}), *pairs[1:]]

    monkeypatch.setattr(module, "fidelity_mappings", forgetful)
    problems = check_reader(path, "vcn-ecephys", ds)
    assert [p.split(":")[0] for p in problems] == ["/units/snr"]
