"""The lake: round trips, deduplication, atomic publishing, integrity, bad input.

Every test in ``TestLake`` runs twice: on a local folder lake and on the moto S3 server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta

import dask
import numpy as np
import pytest
import xarray as xr

import abo_lake
from abo_lake import cas
from abo_lake.errors import (
    DatasetNotFoundError,
    IntegrityError,
    ManifestError,
    ReleaseExistsError,
    ReleaseNotFoundError,
)
from abo_lake.lake import MIN_GRACE
from abo_lake.manifest import manifest_key
from abo_lake.record import ReleaseRecord
from abo_lake.testing import raise_if_dask_computes


def make_dataset(seed: int = 0, n_cells: int = 24, n_time: int = 6000) -> xr.Dataset:
    """An ophys-like Dataset with every kind of variable a converter produces."""
    rng = np.random.default_rng(seed)
    ds = xr.Dataset(
        {
            "dff": (("cell_specimen_id", "time"), rng.normal(size=(n_cells, n_time))),
            "events": (
                ("cell_specimen_id", "time"),
                np.where(rng.random((n_cells, n_time)) > 0.99, 1.0, 0.0).astype("float32"),
            ),
            "valid_roi": ("cell_specimen_id", rng.random(n_cells) > 0.2),
            "cre_note": ("cell_specimen_id", np.array([f"cell {i}" for i in range(n_cells)])),
            "max_projection": (("y", "x"), rng.integers(0, 4000, (64, 64)).astype("uint16")),
            "frame_rate": 31.0,
        },
        coords={
            "cell_specimen_id": np.arange(n_cells, dtype="int64") + 1_086_000_000,
            "cell_roi_id": ("cell_specimen_id", np.arange(n_cells, dtype="int64") + 1_080_000),
            "time": np.arange(n_time) / 31.0,
        },
        attrs={"abo_lake_kind": "ophys_experiment", "imaging_depth": 175, "cre_line": "Sst"},
    )
    ds["time"].attrs["units"] = "s"
    ds["dff"].encoding["chunks"] = (8, 2000)  # 3 x 3 = 9 chunks
    ds["events"].encoding["chunks"] = (24, 6000)
    return ds


def chunk_objects(lake: abo_lake.Lake) -> set[str]:
    return set(lake.storage.find("cas"))


class TestLake:
    def test_round_trip_is_identical_and_lazy(self, lake):
        ds = make_dataset()
        with lake.stage("2026.1") as stage:
            stage.write("ophys/experiment/1", ds)
        rel = lake.release("2026.1")
        with raise_if_dask_computes():
            opened = rel.open("ophys/experiment/1")
        assert opened["dff"].chunks == ((8, 8, 8), (2000, 2000, 2000))
        loaded = opened.compute()
        for key in ("abo_lake_release", "abo_lake_release_root", "abo_lake_dataset"):
            del loaded.attrs[key]
        xr.testing.assert_identical(loaded, ds)
        assert opened.attrs["abo_lake_release"] == "2026.1"
        assert opened.attrs["abo_lake_release_root"] == rel.root

    def test_one_chunk_read_reads_one_object(self, lake):
        with lake.stage("r1") as stage:
            stage.write("ophys/experiment/1", make_dataset())
        store = lake.release("r1").store("ophys/experiment/1")
        opened = xr.open_zarr(store, consolidated=True, chunks={}, zarr_format=3)
        # metadata and the index coordinates' chunks are inline: opening reads no object
        assert store.chunk_reads == store.requests == 0
        with dask.config.set(scheduler="synchronous"):
            opened["dff"].isel(cell_specimen_id=slice(0, 8), time=slice(0, 2000)).values
        assert store.chunk_reads == store.requests == 1

    def test_same_data_twice_adds_no_object_and_one_changed_chunk_adds_one(self, lake):
        ds = make_dataset()
        with lake.stage("r1") as stage:
            stage.write("ophys/experiment/1", ds)
        before = chunk_objects(lake)
        with lake.stage("r2") as stage:
            h2 = stage.write("ophys/experiment/1", make_dataset())
        assert chunk_objects(lake) == before
        assert lake.release("r1").record.datasets["ophys/experiment/1"]["manifest"] == h2
        changed = make_dataset()
        changed["dff"][0, 0] = 1e6  # one value in one chunk of one array
        with lake.stage("r3") as stage:
            stage.write("ophys/experiment/1", changed)
        assert len(chunk_objects(lake) - before) == 1
        diff = lake.diff("r1", "r3")
        (dataset,) = diff.datasets
        assert dataset.status == "changed"
        assert [(a.array, a.changed) for a in dataset.arrays] == [("dff", 1)]
        assert 0 < diff.bytes_to_fetch < 8 * 2000 * 8

    def test_reopened_dataset_rewrites_to_the_same_manifest(self, lake):
        with lake.stage("r1") as stage:
            h1 = stage.write("a/1", make_dataset())
        reopened = lake.release("r1").open("a/1")
        reopened.attrs = {
            k: v for k, v in reopened.attrs.items() if "abo_lake_" not in k or k == "abo_lake_kind"
        }
        with lake.stage("r2") as stage:
            assert stage.write("a/1", reopened) == h1

    def test_datatree_groups_round_trip(self, lake):
        tree = xr.DataTree.from_dict(
            {"/": make_dataset(), "/raw/general": xr.Dataset({"x": ("n", np.arange(5))})}
        )
        with lake.stage("r1") as stage:
            stage.write("a/1", tree)
        back = lake.release("r1").open_datatree("a/1")
        np.testing.assert_array_equal(back["raw/general"]["x"].values, np.arange(5))
        assert lake.release("r1").open("a/1", group="raw/general")["x"].sum() == 10

    def test_latest_and_pins(self, lake):
        for name in ("2026.1", "2026.2"):
            with lake.stage(name) as stage:
                stage.write("a/1", make_dataset(seed=int(name[-1])))
        assert lake.releases() == ["2026.1", "2026.2"]
        assert lake.release("latest").name == "2026.2"
        pinned = lake.release("2026.1").pin
        assert lake.release(pinned).name == "2026.1"
        with pytest.raises(ReleaseNotFoundError, match="not what the pin"):
            lake.release("2026.1@" + lake.release("2026.2").root[:12])

    def test_error_in_stage_publishes_nothing(self, lake):
        with pytest.raises(RuntimeError, match="boom"), lake.stage("r1") as stage:
            stage.write("a/1", make_dataset())
            raise RuntimeError("boom")
        assert lake.releases() == []
        assert lake.storage.glob("stages/*") == []
        with lake.stage("r1") as stage:  # the name is still free
            stage.write("a/1", make_dataset())
        assert lake.releases() == ["r1"]

    def test_concurrent_publishers_of_one_name(self, lake):
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def publish(seed: int) -> None:
            try:
                with lake.stage("2026.1") as stage:
                    stage.write("a/1", make_dataset(seed=seed, n_time=2000))
                    barrier.wait(timeout=30)  # both are staged before either publishes
                outcomes.append("published")
            except ReleaseExistsError:
                outcomes.append("exists")

        threads = [threading.Thread(target=publish, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["exists", "published"]
        assert lake.releases() == ["2026.1"]
        assert lake.verify("2026.1").ok
        assert lake.storage.glob("stages/*") == []

    def test_flipped_byte_and_missing_chunk(self, lake):
        with lake.stage("r1") as stage:
            stage.write("a/1", make_dataset())
        rel = lake.release("r1")
        manifest = rel.manifest("a/1")
        key, h = sorted(manifest.chunks.items())[0]
        data = bytearray(lake.storage.read(cas.key_of(h)))
        data[len(data) // 2] ^= 0xFF
        lake.storage.write(cas.key_of(h), bytes(data))
        report = lake.verify("r1")
        assert report.corrupt == [("a/1", key, h)]
        assert not report.missing
        with pytest.raises(IntegrityError, match=rf"r1@\w+:a/1: variable '\w+', chunk '{key}' is"):
            rel.open("a/1", verify=True).load()
        lake.storage.delete([cas.key_of(h)])
        report = lake.verify("r1")
        assert report.missing == [("a/1", key, h)]
        with pytest.raises(IntegrityError, match=f"chunk '{key}' is missing"):
            rel.open("a/1").load()

    def test_verify_reports_a_missing_or_corrupt_manifest(self, lake):
        """As missing or corrupt entries (verify's exit status 1), not an exception."""
        with lake.stage("r1") as stage:
            h = stage.write("a/1", make_dataset())
        key = manifest_key(h)
        lake.storage.write(key, lake.storage.read(key).replace(b"{{lake}}", b"{{lakE}}", 1))
        report = lake.verify("r1")
        assert report.corrupt == [("a/1", key, h)]
        lake.storage.delete([key])
        report = lake.verify("r1")
        assert report.missing == [("a/1", key, h)]
        assert not report.ok

    def test_dedup_stats(self, lake):
        with lake.stage("r1") as stage:
            stage.write("a/1", make_dataset())
        with lake.stage("r2") as stage:
            stage.write("a/1", make_dataset())
        stats = lake.stats()
        assert stats["logical_bytes"] == 2 * lake.release("r1").nbytes
        assert stats["dedup_ratio"] == pytest.approx(2.0, rel=0.01)


class TestLakeErrors:
    def test_unknown_release_lists_available(self, local_lake):
        with local_lake.stage("2026.1") as stage:
            stage.write("a/1", make_dataset(n_time=100))
        with pytest.raises(ReleaseNotFoundError, match=r"no release '2025.9'.*available: 2026.1"):
            local_lake.release("2025.9")
        with pytest.raises(ReleaseNotFoundError, match="none yet"):
            abo_lake.open_lake(str(local_lake.storage.root) + "-empty").release("latest")

    def test_unknown_dataset_suggests_near_matches(self, local_lake):
        with local_lake.stage("r1") as stage:
            stage.write("ophys/experiment/951980471", make_dataset(n_time=100))
        with pytest.raises(DatasetNotFoundError, match="did you mean.*951980471"):
            local_lake.release("r1").open("ophys/experiment/951980417")

    def test_existing_release_name_is_refused(self, local_lake):
        with local_lake.stage("r1") as stage:
            stage.write("a/1", make_dataset(n_time=100))
        with pytest.raises(ReleaseExistsError, match="immutable"), local_lake.stage("r1"):
            pass

    @pytest.mark.parametrize(
        ("edit", "message"),
        [
            (lambda r: r.update({"../../etc/zarr.json": "{}"}), "not a plain relative"),
            (lambda r: r.update({"dff/c/0/0": ["s3://elsewhere/x"]}), "outside|under the lake"),
            (lambda r: r.update({"dff/c/0/0": ["{{lake}}/cas/00/" + "1" * 64]}), "cas/"),
            (lambda r: r.update({"dff/c/0/0": "inline data"}), "not 'base64:' data"),
            (lambda r: r.update({"dff/c/0/0": "base64:!!not base64"}), "not valid base64"),
            (
                lambda r: r.update({"dff/c/0/0": [r["dff/c/0/0"][0], -1, 10]}),
                "non-negative integers",
            ),
            (lambda r: r.update({"dff/c/0/0": [r["dff/c/0/0"][0], 0]}), "cas/"),
        ],
    )
    def test_bad_manifest_is_refused(self, local_lake, edit, message):
        with local_lake.stage("r1") as stage:
            h = stage.write("a/1", make_dataset(n_time=100))
        doc = json.loads(local_lake.storage.read(manifest_key(h)))
        edit(doc["refs"])
        bad = json.dumps(doc).encode()
        bad_hash = cas.digest(bad)
        local_lake.storage.write(manifest_key(bad_hash), bad)
        _forge(local_lake, "evil", {"a/1": {"manifest": bad_hash, "kind": None, "nbytes": 1}})
        with pytest.raises(ManifestError, match=message):
            local_lake.release("evil").open("a/1")

    def test_unreadable_release_record(self, local_lake):
        local_lake.storage.write("releases/broken/release.json", b"{not json")
        with pytest.raises(ManifestError, match="unreadable release record"):
            local_lake.release("broken")

    def test_altered_release_record(self, local_lake):
        with local_lake.stage("r1") as stage:
            stage.write("a/1", make_dataset(n_time=100))
        record = json.loads(local_lake.storage.read("releases/r1/release.json"))
        ((key, text),) = record["refs"].items()  # one small part, inline in the record
        part = json.loads(text)
        part["datasets"]["a/2"] = part["datasets"]["a/1"]
        record["refs"][key] = json.dumps(part)
        local_lake.storage.write("releases/r1/release.json", json.dumps(record).encode())
        with pytest.raises(ManifestError, match="does not match its fields"):
            abo_lake.open_lake(local_lake.url).release("r1")

    def test_bad_names(self, local_lake):
        with pytest.raises(ValueError, match="invalid release name"), local_lake.stage("../x"):
            pass
        with local_lake.stage("ok") as stage, pytest.raises(ValueError, match="dataset path"):
            stage.write("a/../b", make_dataset(n_time=10))


def _forge(lake: abo_lake.Lake, name: str, datasets: dict) -> ReleaseRecord:
    """A forged record that checks (its parts stored, its root right): what someone with
    write access could publish by hand."""
    record, parts = ReleaseRecord.partitioned(
        name=name,
        created=datetime.now(UTC).isoformat(),
        abo_lake_version="forged",
        notes="",
        tables={},
        datasets=datasets,
        url_of=lake.storage.url_of,
        where=name,
    )
    for key, data in parts.items():
        lake.storage.write(key, data)
    lake.storage.write(f"releases/{name}/release.json", record.to_bytes())
    return record


def test_killed_stage_leaves_no_release_and_rerun_succeeds(local_lake, tmp_path):
    script = textwrap.dedent(
        f"""
        import os, numpy as np, xarray as xr, abo_lake
        lake = abo_lake.open_lake({local_lake.url!r})
        ds = xr.Dataset({{"x": ("t", np.arange(100000.0))}})
        with lake.stage("r1") as stage:
            stage.write("a/1", ds)
            os.kill(os.getpid(), 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    lake = abo_lake.open_lake(local_lake.url)
    assert lake.releases() == []
    assert len(lake.storage.glob("stages/*")) == 1  # left behind, invisible to readers
    with lake.stage("r1") as stage:
        stage.write("a/1", xr.Dataset({"x": ("t", np.arange(100000.0))}))
    assert lake.releases() == ["r1"]
    with pytest.raises(ValueError, match="a job may be running"):  # it beat seconds ago
        lake.gc(grace="0s", dry_run=False)
    later = datetime.now(UTC) + 2 * MIN_GRACE  # no heartbeat since: the stage is stale
    report = lake.gc(grace=MIN_GRACE, dry_run=False, now=later)
    assert len(report.stale_stages) == 1
    assert lake.verify("r1").ok


def _abandoned_work(lake: abo_lake.Lake) -> str:
    """A dataset written by a stage that then failed: stored, referenced by no release."""
    with pytest.raises(RuntimeError), lake.stage("r0") as stage:
        h = stage.write("a/1", make_dataset())
        raise RuntimeError("the job failed")
    return h


def test_gc_keeps_what_is_published_while_it_lists(local_lake, monkeypatch):
    """A job that resumes old, unreferenced work (its objects keep their old mtimes) and
    publishes while GC lists the lake: GC reads releases again before deleting."""
    lake = local_lake
    h = _abandoned_work(lake)
    real_find = lake.storage.find

    def find(prefix: str) -> dict:
        listing = real_find(prefix)
        if prefix == cas.CAS_PREFIX and not lake.releases():
            with lake.stage("r1") as stage:  # e.g. from the resume ledger
                stage.add("a/1", h)
        return listing

    monkeypatch.setattr(lake.storage, "find", find)
    later = datetime.now(UTC) + timedelta(hours=2)  # every object is older than the grace
    report = lake.gc(grace="1h", dry_run=False, now=later)
    assert lake.releases() == ["r1"]
    assert report.chunks == []
    assert report.manifests == []
    assert lake.verify("r1").ok


def test_gc_deletes_no_manifest_or_resume_record_while_a_stage_is_open(local_lake):
    """An open job may be resuming any manifest from the ledger: only stale stages go."""
    lake = local_lake
    h = _abandoned_work(lake)
    later = datetime.now(UTC) + timedelta(hours=2)
    doc = {"name": "r9", "created": later.isoformat(), "heartbeat": later.isoformat()}
    lake.storage.write("stages/running-job/stage.json", json.dumps(doc).encode())
    report = lake.gc(grace="1h", dry_run=False, now=later)
    assert report.live_stages == ["running-job"]
    assert (report.chunks, report.manifests, report.ledger) == ([], [], [])
    assert lake.storage.exists(manifest_key(h))
    assert "no chunk object, manifest or resume record deleted" in str(report)
    lake.storage.delete_prefix("stages/running-job")
    report = lake.gc(grace="1h", dry_run=False, now=later)
    assert not lake.storage.exists(manifest_key(h))  # collected once the job is gone
    assert report.chunks


def test_gc_removes_temporary_files_of_killed_local_writers(local_lake):
    """A local write is a temporary file linked into place; a writer killed in between
    leaves ``.<name>.<uuid>.partial``, which GC removes once older than its grace period."""
    import os

    lake = local_lake
    with lake.stage("r1") as stage:
        stage.write("a/1", make_dataset())
    old = lake.storage.path("cas/ab/.abcd.0123.partial")
    young = lake.storage.path("releases/r1/refs/.x.json.4567.partial")
    for path in (old, young):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"half a chunk")
    os.utime(old, (1, 1))  # 1970
    report = lake.gc(grace="1h", dry_run=False)
    assert report.temporary == ["cas/ab/.abcd.0123.partial"]
    assert "1 temporary files of interrupted writes" in str(report)
    assert not os.path.exists(old)
    assert os.path.exists(young)
    assert lake.verify("r1").ok


def test_gc_keeps_what_a_job_publishes_between_its_listings(local_lake, monkeypatch):
    """A job opens its stage after GC's first pass (while GC lists the chunks) and publishes
    (release first, then its stage goes) just after GC's second pass listed the releases:
    listing stages first, GC sees the job in one of the two listings (it saw it in neither)."""
    import os
    from contextlib import ExitStack

    lake = local_lake
    h = _abandoned_work(lake)
    for key in [*lake.storage.find("cas"), *lake.storage.find("manifests")]:
        os.utime(lake.storage.path(key), (1, 1))  # old work: older than any grace period
    real_releases, real_find, job, state = lake.releases, lake.storage.find, ExitStack(), [0]

    def find(prefix: str) -> dict:
        listing = real_find(prefix)
        if prefix == cas.CAS_PREFIX and state[0] == 0:  # the job starts, resuming old work
            state[0] = 1
            job.enter_context(lake.stage("r2")).add("a/1", h)
        return listing

    def releases() -> list[str]:
        listed = real_releases()
        if state[0] == 1:  # GC's second pass listed the releases: the job publishes now
            state[0] = 2
            job.close()
        return listed

    monkeypatch.setattr(lake.storage, "find", find)
    monkeypatch.setattr(lake, "releases", releases)
    lake.gc(grace="1h", dry_run=False)
    assert state[0] == 2
    assert real_releases() == ["r2"]
    assert lake.verify("r2").ok


def test_gc_with_a_killed_manifest_write_left_behind(local_lake):
    """A killed local write leaves ``manifests/ab/.<hash>.json.<uuid>.partial``: GC removes it
    once (it was listed as a manifest and as a temporary file, and the second delete failed)."""
    import os

    lake = local_lake
    _abandoned_work(lake)
    partial = lake.storage.path("manifests/ab/.ab12.json.deadbeef.partial")
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    with open(partial, "wb") as fh:
        fh.write(b"{")
    os.utime(partial, (1, 1))
    later = datetime.now(UTC) + timedelta(hours=2)
    report = lake.gc(grace="1h", dry_run=False, now=later)
    assert report.temporary == ["manifests/ab/.ab12.json.deadbeef.partial"]
    assert all(not k.endswith(".partial") for k in report.manifests)
    assert report.manifests  # the abandoned work's manifest
    assert not os.path.exists(partial)


def test_gc_stops_deleting_when_a_job_opens_a_stage(local_lake, monkeypatch):
    """Deletion goes in batches; a stage opened meanwhile (a job that may re-use any of the
    objects still to delete) stops it, and what is left stays."""
    from abo_lake import lake as lake_module

    lake = local_lake
    h = _abandoned_work(lake)
    monkeypatch.setattr(lake_module, "GC_BATCH", 1)
    real_delete, deleted = lake.storage.delete, []

    def delete(keys: list[str]) -> None:
        deleted.extend(keys)
        real_delete(keys)
        if len(deleted) == 1:  # a job opens its stage after the first batch
            doc = {"name": "r9", "created": later.isoformat(), "heartbeat": later.isoformat()}
            lake.storage.write("stages/new-job/stage.json", json.dumps(doc).encode())

    monkeypatch.setattr(lake.storage, "delete", delete)
    later = datetime.now(UTC) + timedelta(hours=2)
    report = lake.gc(grace="1h", dry_run=False, now=later)
    assert report.interrupted
    assert "stopped early" in str(report)
    assert len(deleted) == 1
    assert report.chunks + report.manifests + report.ledger == deleted  # what it did delete
    assert lake.storage.exists(manifest_key(h)) or deleted == [manifest_key(h)]
    assert len(lake.storage.find("cas")) > 0  # the rest of the abandoned work stays


def test_plain_xarray_opens_a_release_without_abo_lake(local_lake):
    ds = make_dataset()
    with local_lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", ds)
    rel = local_lake.release("r1")
    url = rel.manifest_url("ophys/experiment/1")
    script = textwrap.dedent(
        f"""
        import sys, xarray as xr
        ds = xr.open_dataset(
            "reference://", engine="zarr", chunks={{}}, consolidated=True, zarr_format=3,
            storage_options={{"fo": {url!r}, "remote_protocol": "file",
                             "remote_options": {{"asynchronous": True}}}},
        )
        assert "abo_lake" not in sys.modules
        print(float(ds["dff"].sum()), ds["cre_note"].values[3])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert float(out[0]) == pytest.approx(float(ds["dff"].sum()))
    assert out[1:] == ["cell", "3"]


def test_plain_xarray_opens_an_s3_release(s3_bucket, s3_options):
    lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", **s3_options)
    ds = make_dataset()
    with lake.stage("r1") as stage:
        stage.write("a/1", ds)
    rel = lake.release("r1")
    so = rel.storage_options()
    so["fo"] = rel.manifest_url("a/1")
    opened = xr.open_dataset(
        "reference://",
        engine="zarr",
        chunks={},
        consolidated=True,
        zarr_format=3,
        storage_options=so,
    )
    np.testing.assert_array_equal(opened["dff"].values, ds["dff"].values)


def test_many_lazy_hdf5_arrays_in_one_write_keep_their_own_data(tmp_path, local_lake):
    """Many lazy HDF5 arrays written together each store their own data.

    A conversion once stored one ROI's mask for another's (intermittently; the fidelity check
    caught it) when lazy HDF5 arrays had untokenized graph names and each was optimized
    separately before one merged compute. This checks the end result on the same shape of data.
    """
    import h5py

    from abo_lake.sources.hdf5_raw import read_raw

    path = tmp_path / "masks.h5"
    rng = np.random.default_rng(0)
    masks = {}
    for i in range(120):  # sparse 512 x 512 masks, like Brain Observatory ROIs
        mask = np.zeros((512, 512), "float32")
        y, x = rng.integers(0, 500, 2)
        mask[y : y + 12, x : x + 12] = rng.random((12, 12))
        masks[f"roi_{i:04d}"] = mask
    with h5py.File(path, "w") as f:
        for name, mask in masks.items():
            f[f"/seg/{name}/img_mask"] = mask
            f[f"/seg/{name}/pix_mask"] = np.argwhere(mask > 0)
    from abo_lake.writer import groups

    tree = groups(read_raw(path))  # lazy HDF5 arrays, one group per ROI
    with local_lake.stage("r1") as stage:
        stage.write("a/1", tree)
    rel = local_lake.release("r1")
    for name, mask in masks.items():
        np.testing.assert_array_equal(rel.open("a/1", group=f"seg/{name}")["img_mask"], mask)


def test_chunk_objects_are_the_bytes_zarr_itself_writes(tmp_path, local_lake):
    """The writer's synchronous chunk encoding gives exactly the chunks ``to_zarr`` writes.

    Covers float/int/bool/uint8 dtypes, NaN and integer fill values, edge chunks (padded) and
    all-fill chunks (which Zarr does not store), 1-D to 3-D, and small one-chunk arrays.
    """
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 200, (70, 33, 20)).astype("uint8")
    vol[:64, :32] = 0  # whole chunks of fill value: not stored
    dff = rng.normal(size=(13, 1001)).astype("float32")
    dff[:, :500] = np.nan
    ds = xr.Dataset(
        {
            "dff": (("cell", "time"), dff),
            "spikes": ("spike", rng.integers(-(2**40), 2**40, 12345)),
            "mask": (("cell", "y", "x"), rng.random((13, 40, 41)) > 0.7),
            "vol": (("ap", "dv", "lr"), vol),
            "amp": ("spike", rng.random(12345)),
            # small one-chunk arrays: encoded in the writing process, not by a dask task
            "roi_x": ("cell", np.where(rng.random(13) > 0.8, np.nan, rng.random(13))),
            "valid": ("cell", rng.random(13) > 0.5),
            "t0": ((), 3.5),
        }
    )
    ds["dff"].encoding["chunks"] = (4, 250)
    ds["spikes"].encoding["chunks"] = (5000,)
    ds["mask"].encoding["chunks"] = (5, 16, 16)
    ds["vol"].encoding["chunks"] = (32, 16, 16)
    ds["amp"].encoding["chunks"] = (4096,)
    with local_lake.stage("r1") as stage:
        stage.write("a/1", ds)
    manifest = local_lake.release("r1").manifest("a/1")
    ours = {
        key: local_lake.storage.read(cas.key_of(ref))
        for key, ref in manifest.chunks.items()
        if not key.endswith("zarr.json")
    }

    from abo_lake.writer import _prepare

    prepared, encoding = _prepare(ds)  # Blosc-zstd, then crc32c
    prepared.compute().to_zarr(tmp_path / "plain.zarr", encoding=encoding, zarr_format=3)
    plain = {
        str(p.relative_to(tmp_path / "plain.zarr")): p.read_bytes()
        for p in (tmp_path / "plain.zarr").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    }
    assert set(ours) == set(plain)
    assert {"roi_x/c/0", "valid/c/0"} <= set(ours)
    assert all(ours[k] == plain[k] for k in plain)
    assert not any(k.startswith("vol/c/0/0/") or k.startswith("vol/c/0/1/") for k in ours)


def _both_ways(storage, groups_: dict, in_thread: bool) -> tuple[dict, dict]:
    """The documents and in-memory chunks our metadata pass and ``to_zarr`` write."""
    from abo_lake.stores import CaptureStore
    from abo_lake.writer import _prepare, _write_metadata
    from abo_lake.zarr_docs import write_group

    ours, theirs = CaptureStore(storage), CaptureStore(storage)
    for group, ds in groups_.items():
        prepared, encoding = _prepare(ds)
        if in_thread:
            assert write_group(prepared, ours, group, encoding)  # no fallback to Zarr's path
        else:
            _write_metadata(prepared, ours, group, encoding, in_thread=False)
        prepared.to_zarr(
            theirs,
            group=group or None,
            mode="w",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding=encoding,
        )
    return (ours._meta, ours._chunks), (theirs._meta, theirs._chunks)


@pytest.mark.parametrize("in_thread", [True, False])
def test_metadata_is_what_to_zarr_writes(local_lake, in_thread):
    """The writer's metadata pass (built in this thread by ``abo_lake.zarr_docs``, or
    xarray's to_zarr steps without the store graph) writes the same Zarr documents and
    in-memory chunks as ``to_zarr(compute=False)``, for a Dataset with every kind of variable
    (dask and numpy, strings, bools, scalars, datetimes, coordinates, attributes)."""
    ds = make_dataset()
    ds["t0"] = xr.DataArray(np.datetime64("2021-03-01T12:00:00", "ns"))
    ds["dff"].attrs["units"] = "1"
    ds["flag"] = xr.DataArray(np.uint8(3), attrs={"_FillValue": np.uint8(255)})
    ds["names"] = ("cell_specimen_id", np.array([f"c{i}" * i for i in range(24)]))
    ours, theirs = _both_ways(local_lake.storage, {"sub/group": ds}, in_thread)
    assert ours[0]
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]  # the in-memory variables' chunks


def test_metadata_of_a_real_raw_copy_is_what_to_zarr_writes(local_lake, shared_data):
    """Group by group, the raw copy of the real Brain Observatory NWB 1 file (hundreds of
    small datasets: strings, references, scalars, attributes) gets ``to_zarr``'s documents."""
    from abo_lake.sources.hdf5_raw import read_raw
    from abo_lake.writer import groups

    nwb = shared_data / "nwb" / "brain_observatory_496908818_nwb1_truncated.nwb"
    raw = groups(read_raw(nwb))
    assert len(raw) > 50
    ours, theirs = _both_ways(local_lake.storage, raw, True)
    assert len(ours[0]) > 200
    assert len(ours[1]) > 50
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]


def test_metadata_pass_leaves_what_it_does_not_handle_to_zarr(local_lake):
    """An encoding the in-thread pass does not build (here a chunk key encoding) makes it
    step back with the capture untouched, and the writer then gets Zarr's own documents."""
    from abo_lake.stores import CaptureStore
    from abo_lake.writer import _prepare, _write_metadata
    from abo_lake.zarr_docs import write_group

    prepared, encoding = _prepare(make_dataset())
    encoding["frame_rate"]["chunk_key_encoding"] = {"name": "default", "separator": "."}
    capture = CaptureStore(local_lake.storage)
    assert not write_group(prepared, capture, "g", encoding)
    assert capture._meta == {}
    assert capture._chunks == {}
    _write_metadata(prepared, capture, "g", encoding)
    theirs = CaptureStore(local_lake.storage)
    prepared.to_zarr(
        theirs,
        group="g",
        mode="w",
        compute=False,
        consolidated=False,
        zarr_format=3,
        encoding=encoding,
    )
    assert capture._meta == theirs._meta
    assert '"separator": "."' in capture._meta["g/frame_rate/zarr.json"].decode()
