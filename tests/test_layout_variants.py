"""A file of a known kind with a layout variant its reader does not know: the error names the
file, the HDF5 path and what was expected there, and nothing converts (never a bare
TypeError or KeyError). Variants are made from the AllenSDK-written fixtures with h5py."""

from __future__ import annotations

import shutil

import allensdk_reference as ref
import h5py
import numpy as np
import pytest

from abo_lake import jobs, sources
from abo_lake.errors import SourceFileError


def _replace_with_dataset(f: h5py.File, path: str) -> None:
    del f[path]
    f[path] = np.zeros(3)


def _delete(f: h5py.File, path: str) -> None:
    del f[path]


def _scalar(f: h5py.File, path: str) -> None:
    del f[path]
    f[path] = 1.0


#: (fixture, HDF5 path, how it is broken, what the error must mention besides the path)
VARIANTS = [
    ("vbo_ophys", "processing/ophys/corrected_fluorescence/r", _replace_with_dataset, "group"),
    ("vbo_ophys", "processing/ophys/dff/traces/data", _delete, ""),
    (
        "vbo_ophys",
        "processing/ophys/image_segmentation/cell_specimen_table/image_mask",
        _delete,
        "",
    ),
    ("vbo_ophys", "processing/ophys/event_detection/lambdas", _delete, ""),
    ("vbo_ophys", "processing/ophys/dff/traces/timestamps", _scalar, ""),
    ("vbo_behavior", "intervals/trials/start_time", _delete, ""),
    ("vbo_behavior", "processing/running/speed/timestamps", _delete, ""),
    ("vbo_behavior", "processing/licking/licks", _replace_with_dataset, ""),
    ("vcn", "units/spike_times_index", _delete, ""),
    ("vbn", "units/spike_amplitudes_index", _delete, ""),
    ("vbn", "processing/running/speed/timestamps", _scalar, ""),
    ("vbn", "intervals/trials/stop_time", _delete, ""),
    ("vcn", "general/extracellular_ephys/electrodes/probe_vertical_position", _scalar, ""),
]


@pytest.mark.parametrize(
    ("key", "hdf5_path", "breaker", "says"),
    VARIANTS,
    ids=[
        f"{k}:{p.rsplit('/', 2)[-2]}/{p.rsplit('/', 1)[-1]}:{b.__name__}" for k, p, b, _ in VARIANTS
    ],
)
def test_unknown_layout_variant_names_file_and_path(key, hdf5_path, breaker, says, tmp_path):
    source = ref.files(ref.STEMS[key])[0]
    path = tmp_path / source.name
    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        breaker(f, hdf5_path)
    with pytest.raises(SourceFileError) as err:
        sources.read(path)
    message = str(err.value)
    assert str(path) in message
    assert hdf5_path.split("/")[-1] in message, message
    assert says in message
    result = jobs.convert_file(str(path), str(tmp_path / "lake"))
    assert result.error.startswith("SourceFileError"), result.error
    assert not result.datasets
