"""The synthetic Visual Behavior behavior-only writer: deterministic, coherent values."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from abo_lake.synthetic import vbo_behavior as writer


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return writer.write(tmp_path_factory.mktemp("beh"), scale="tiny", seed=3, n_sessions=2)


def _arrays(path) -> dict[str, np.ndarray]:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not obj.dtype.names and obj.dtype.kind != "O":
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _table(f: h5py.File, path: str) -> dict[str, np.ndarray]:
    g = f[path]
    return {k: (g[k].asstr()[()] if g[k].dtype.kind == "O" else g[k][()]) for k in g}


def test_names_ids_and_ground_truth(files):
    truth = writer.ground_truth(3, n_sessions=2)
    assert [p.name for p in files] == [
        f"behavior_session_{t['behavior_session_id']}.nwb" for t in truth
    ]
    for path, gt in zip(files, truth):
        with h5py.File(path, "r") as f:
            assert f["identifier"][()].decode() == str(gt["behavior_session_id"])
            assert f["general/metadata"].attrs["behavior_session_id"] == gt["behavior_session_id"]
            assert f["general/metadata"].attrs["session_type"] == gt["session_type"]
            assert f["session_description"][()].decode() == gt["session_type"]
            trials = _table(f, "intervals/trials")
            for outcome in ("hit", "miss", "false_alarm", "correct_reject", "aborted"):
                assert trials[outcome].sum() == gt[outcome], outcome
            (stem,) = list(f["stimulus/templates"])
            names = f[f"stimulus/templates/{stem}/control_description"].asstr()[()]
            assert list(names) == gt["image_names"]


def test_same_seed_gives_identical_arrays(files, tmp_path):
    again = writer.write(tmp_path, scale="tiny", seed=3, n_sessions=2)
    for a, b in zip(files, again):
        x, y = _arrays(a), _arrays(b)
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    other = writer.write(tmp_path / "other", scale="tiny", seed=4)[0]
    assert not np.array_equal(
        _arrays(files[0])["processing/running/speed/data"][:100],
        _arrays(other)["processing/running/speed/data"][:100],
    )


def test_trials_are_coherent_with_presentations(files):
    for path in files:
        with h5py.File(path, "r") as f:
            (name,) = [k for k in f["intervals"] if k.endswith("_presentations")]
            sp = _table(f, f"intervals/{name}")
            tr = _table(f, "intervals/trials")
            frames = f["processing/stimulus/timestamps/timestamps"][()]
            licks = f["processing/licking/licks/timestamps"][()]
            lick_frames = f["processing/licking/licks/data"][()]
        # training: no omitted flashes, every image familiar, real booleans
        assert sp["omitted"].dtype == bool
        assert not sp["omitted"].any()
        assert not sp["is_image_novel"].any()
        np.testing.assert_allclose(np.diff(sp["start_time"]), 0.75, atol=0.002)
        np.testing.assert_allclose(
            sp["start_time"], frames[sp["start_frame"]] + writer.MONITOR_DELAY
        )
        # a go trial's change is a change flash, at its change_frame
        go = tr["go"]
        changes = sp["start_time"][sp["is_change"]]
        np.testing.assert_allclose(np.sort(tr["change_time"][go]), changes[: go.sum()])
        assert (tr["change_frame"][~(go | tr["catch"])] == -99).all()
        np.testing.assert_array_equal(tr["hit"] | tr["miss"], go)
        np.testing.assert_array_equal(tr["is_change"], go)
        assert (sp["flashes_since_change"][sp["is_change"]] == 0).all()
        # responses: latency of hits inside the response window, inf for misses
        assert (
            (tr["response_latency"][tr["hit"]] >= 0.15)
            & (tr["response_latency"][tr["hit"]] <= 0.75)
        ).all()
        assert np.isinf(tr["response_latency"][tr["miss"]]).all()
        # licks: the ragged trial column holds every lick, on its stimulus frame
        np.testing.assert_array_equal(np.sort(tr["lick_times"]), licks)
        np.testing.assert_array_equal(lick_frames, np.searchsorted(frames, licks))
        np.testing.assert_allclose(tr["trial_length"], tr["stop_time"] - tr["start_time"])


def test_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        writer.write(tmp_path, scale="huge")
    with pytest.raises(ValueError, match="n_sessions"):
        writer.write(tmp_path, n_sessions=0)
