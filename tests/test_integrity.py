"""Integrity by default (issue 17): every read is checked (a corrupted chunk object raises,
through the lake and through plain xarray + fsspec, instead of decoding into wrong numbers);
everything a release publishes is covered by its root hash; publishing completes itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr
from test_lake import make_dataset

import abo_lake
from abo_lake import cas
from abo_lake.errors import IntegrityError, ManifestError
from abo_lake.writer import WriteOptions, write_dataset


def _flip(lake, h: str, position: int, bit: int = 0) -> None:
    """Flip one bit of the stored object ``h`` (negative positions count from its end)."""
    data = bytearray(lake.storage.read(cas.key_of(h)))
    data[position] ^= 1 << bit
    lake.storage.write(cas.key_of(h), bytes(data))


def _published(lake):
    with lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", make_dataset())
    rel = lake.release("r1")
    return rel, rel.manifest("ophys/experiment/1")


def test_every_array_ends_with_a_crc32c_codec(local_lake):
    _, manifest = _published(local_lake)
    arrays = {k: json.loads(v) for k, v in manifest.metadata.items() if k != "zarr.json"}
    arrays = {k: v for k, v in arrays.items() if v["node_type"] == "array"}
    assert len(arrays) >= 8
    assert all(doc["codecs"][-1] == {"name": "crc32c"} for doc in arrays.values()), arrays


def test_checksum_keeps_deduplication(local_lake):
    first = write_dataset(local_lake.storage, make_dataset())
    again = write_dataset(local_lake.storage, make_dataset())
    assert first.new_objects > 0
    assert again.new_objects == 0
    assert again.manifest == first.manifest
    unchecked = write_dataset(
        local_lake.storage, make_dataset(), options=WriteOptions(checksum=False)
    )
    assert set(unchecked.manifest.chunks.values()).isdisjoint(first.manifest.chunks.values())
    assert WriteOptions(checksum=False).token() != WriteOptions().token() == ""


@pytest.mark.parametrize("position", [0, 7, "middle", -5, -1])
def test_a_flipped_bit_raises_naming_dataset_variable_chunk_and_object(lake, position):
    rel, manifest = _published(lake)
    key, h = sorted((k, v) for k, v in manifest.chunks.items() if k.startswith("dff/"))[4]
    size = manifest.sizes[key]
    _flip(lake, h, size // 2 if position == "middle" else position, bit=3)
    pattern = rf"r1@\w+:ophys/experiment/1: variable 'dff', chunk '{key}' is corrupt.*{h}"
    with pytest.raises(IntegrityError, match=pattern):
        rel.open("ophys/experiment/1")["dff"].values  # the default read, in-thread decoding
    with pytest.raises(IntegrityError, match=pattern):  # zarr's own read path
        rel.open("ophys/experiment/1", chunks={})["dff"].values
    with pytest.raises(IntegrityError, match=pattern):  # a zarr user of the store
        zarr.open_array(rel.store("ophys/experiment/1"), path="dff", mode="r")[:]
    with pytest.raises(IntegrityError, match=r"does not hash to its name"):
        rel.open("ophys/experiment/1", verify=True)["dff"].values
    # the untouched variables still read
    np.testing.assert_array_equal(
        rel.open("ophys/experiment/1")["events"].values, make_dataset()["events"].values
    )


def test_plain_xarray_raises_on_a_flipped_bit_never_returns_numbers(local_lake):
    rel, manifest = _published(local_lake)
    key, h = sorted((k, v) for k, v in manifest.chunks.items() if k.startswith("dff/"))[0]
    _flip(local_lake, h, manifest.sizes[key] // 2)
    so = rel.storage_options()
    so["fo"] = rel.manifest_url("ophys/experiment/1")
    ds = xr.open_dataset(
        "reference://",
        engine="zarr",
        chunks={},
        consolidated=True,
        zarr_format=3,
        storage_options=so,
    )
    with pytest.raises(ValueError, match="checksum"):
        ds["dff"].values
    np.testing.assert_array_equal(ds["valid_roi"].values, make_dataset()["valid_roi"].values)


def test_an_unchecked_lake_still_names_a_chunk_that_fails_to_decode(local_lake):
    """Data written before the checksum (no crc32c codec): a chunk Blosc cannot decode
    raises naming dataset, variable, chunk and object, not Blosc's bare RuntimeError."""
    written = write_dataset(
        local_lake.storage, make_dataset(), options=WriteOptions(checksum=False)
    )
    with local_lake.stage("r0") as stage:
        stage.add("ophys/experiment/1", local_lake.put_manifest(written.manifest))
    rel = local_lake.release("r0")
    key, h = sorted((k, v) for k, v in written.manifest.chunks.items() if k.startswith("dff/"))[0]
    data = bytearray(local_lake.storage.read(cas.key_of(h)))
    data[4:16] = b"\xff" * 12  # Blosc's header: sizes it cannot trust
    local_lake.storage.write(cas.key_of(h), bytes(data))
    with pytest.raises(IntegrityError, match=rf"variable 'dff', chunk '{key}' is corrupt.*{h}"):
        rel.open("ophys/experiment/1")["dff"].values


# -- everything a release publishes is covered by its root --------------------------------
def _record_doc(lake, name="r1"):
    return json.loads(lake.storage.read(f"releases/{name}/release.json"))


def _edit_entry(doc: dict, **changes) -> None:
    """Change the dataset entry in the record's (inline) part."""
    key = "ophys/experiment/.json"  # a family of one dataset: one part, route width 0
    part = json.loads(doc["refs"][key])
    part["datasets"]["ophys/experiment/1"].update(changes)
    doc["refs"][key] = json.dumps(part)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(created=d["created"].replace("20", "19", 1)),
        lambda d: d.update(notes=d["notes"] + "!"),
        lambda d: d.update(abo_lake_version="0.0.0"),
        lambda d: _edit_entry(d, kind="ecephys_session"),
        lambda d: _edit_entry(d, nbytes=1),
        lambda d: d["datasets"].update(count=2),
        lambda d: d.update(extra="unprotected"),
    ],
    ids=["created", "notes", "version", "kind", "nbytes", "count", "extra-field"],
)
def test_every_field_of_a_release_record_is_covered_by_its_root(local_lake, edit):
    _published(local_lake)
    doc = _record_doc(local_lake)
    assert doc["format"] == 3
    edit(doc)
    local_lake.storage.write("releases/r1/release.json", json.dumps(doc).encode())
    fresh = abo_lake.open_lake(local_lake.url)
    with pytest.raises(ManifestError, match="r1/release.json"):
        fresh.release("r1")
    with pytest.warns(UserWarning, match="not listed"):
        assert fresh.releases() == []


def _partitioned(lake, n: int = 700):
    """A release whose record keeps its datasets in stored parts (too many to be inline)."""
    with lake.stage("r1") as stage:
        h = stage.write("ophys/experiment/1", make_dataset(n_time=60))
        stage.add_many(
            (f"ophys/experiment/{2 + 7919 * i}", h, "ophys_experiment") for i in range(n)
        )
    rel = lake.release("r1")
    assert rel.record.datasets.hashes  # stored parts
    return rel


def test_a_stored_record_part_is_checked_against_the_record(local_lake):
    """The record holds each part's hash (its root covers them): a part altered in storage
    is refused when read, naming it, and verify reports it; a lost part is missing."""
    from abo_lake.record import part_key

    rel = _partitioned(local_lake)
    route, h = sorted(rel.record.datasets.hashes.items())[0]
    other = next(p for p in rel.datasets() if not p.startswith(route))
    key = part_key(h)
    good = local_lake.storage.read(key)
    doc = json.loads(good)
    path = sorted(doc["datasets"])[0]
    doc["datasets"][path]["manifest"] = "0" * 64  # same shape, another manifest
    local_lake.storage.write(key, json.dumps(doc).encode())
    fresh = abo_lake.open_lake(local_lake.url)
    with pytest.raises(ManifestError, match=rf"record part {key}.*does not match the record"):
        fresh.release("r1").open(path)
    assert fresh.release("r1").open(other)["dff"].shape  # other parts still read
    report = fresh.verify("r1")
    assert (f"record part {route}", key, h) in report.corrupt
    local_lake.storage.delete([key])
    report = abo_lake.open_lake(local_lake.url).verify("r1")
    assert (f"record part {route}", key, h) in report.missing
    assert not report.ok
    local_lake.storage.write(key, good)
    assert abo_lake.open_lake(local_lake.url).verify("r1").ok


def test_a_forged_part_cannot_move_a_dataset_into_another_part(local_lake):
    """Each path must route to the part that holds it: a forged record (root recomputed)
    whose index routes a part to a stored part claiming a path of another part is refused."""
    import hashlib

    from abo_lake.record import ReleaseRecord, part_bytes, part_key, record_root

    rel = _partitioned(local_lake)
    doc = _record_doc(local_lake)
    view = rel.record.datasets
    assert "index" in doc["datasets"]  # record -> index (inline here) -> part
    route = next(r for r in sorted(view.hashes) if r != view.route("ophys/experiment/1"))
    entries = {"ophys/experiment/1": dict(view["ophys/experiment/1"])}
    part = part_bytes(entries, local_lake.storage.url_of)
    key = part_key(hashlib.sha256(part).hexdigest())
    local_lake.storage.write(key, part)
    iroute = f"{view.index_route(route)}.json"
    index = json.loads(doc["refs"][iroute])
    index["refs"][f"{route}.json"] = [local_lake.storage.url_of(key)]
    doc["refs"][iroute] = json.dumps(index)
    doc["name"] = "forged"
    doc["root"] = record_root(doc)
    local_lake.storage.write("releases/forged/release.json", json.dumps(doc).encode())
    forged = abo_lake.open_lake(local_lake.url).release("forged")
    assert isinstance(forged.record, ReleaseRecord)
    with pytest.raises(ManifestError, match="which is not in part"):
        forged.datasets()


def test_stored_index_objects_are_verified_and_collected(local_lake, monkeypatch):
    """A record whose index objects are stored (forced here: INDEX_INLINE_MAX 0, and one
    route each: INDEX_MAX 1): a lost or
    altered index object is refused naming it and reported by verify; the paths it does not
    route still open. GC keeps every index object and part of a release, and deletes those a
    publish left behind when it lost its name (after the grace)."""
    from datetime import UTC, datetime, timedelta

    from abo_lake.lake import MIN_GRACE
    from abo_lake.record import ReleaseRecord, part_key

    monkeypatch.setattr("abo_lake.record.INDEX_INLINE_MAX", 0)
    monkeypatch.setattr("abo_lake.record.INDEX_MAX", 1)
    rel = _partitioned(local_lake)
    view = rel.record.datasets
    assert len(view.index_hashes) >= 2
    iroute, h = sorted(view.index_hashes.items())[0]
    key = part_key(h)
    inside = next(p for p in rel.datasets() if view.index_route(view.route(p)) == iroute)
    outside = next(p for p in rel.datasets() if view.index_route(view.route(p)) != iroute)
    good = local_lake.storage.read(key)
    local_lake.storage.write(key, good.replace(b'"version":1', b'"version":2'))
    fresh = abo_lake.open_lake(local_lake.url)
    with pytest.raises(ManifestError, match=rf"record index {key}.*does not match the record"):
        fresh.release("r1").open(inside)
    assert fresh.release("r1").open(outside)["dff"].shape
    assert (f"record index {iroute}", key, h) in fresh.verify("r1").corrupt
    local_lake.storage.delete([key])
    assert (f"record index {iroute}", key, h) in abo_lake.open_lake(local_lake.url).verify(
        "r1"
    ).missing
    local_lake.storage.write(key, good)
    assert abo_lake.open_lake(local_lake.url).verify("r1").ok
    # a publish that lost its name: its index objects and parts reference nothing
    _, objects = ReleaseRecord.partitioned(
        name="lost",
        created="2026-12-07T00:00:00+00:00",
        abo_lake_version="x",
        notes="",
        tables={},
        datasets={p: view[p] for p in rel.datasets()[:300]},
        url_of=local_lake.storage.url_of,
        where="lost",
    )
    local_lake._put_parts(objects)
    orphans = set(objects) - {part_key(o) for o in view.objects()}
    assert orphans
    later = datetime.now(UTC) + timedelta(hours=2)
    report = local_lake.gc(grace=MIN_GRACE, dry_run=False, now=later)
    assert set(report.parts) == orphans
    kept = set(local_lake.storage.glob("records/*/*.json"))
    assert kept == {part_key(o) for o in view.objects()}
    assert abo_lake.open_lake(local_lake.url).verify("r1").ok


def test_table_rows_and_columns_are_covered(local_lake):
    import pandas as pd

    with local_lake.stage("r1") as stage:
        stage.write("ophys/experiment/1", make_dataset())
        stage.write_table("ophys_experiments", pd.DataFrame({"a": [1, 2]}))
    for field_, value in [("rows", 3), ("columns", ["b"])]:
        doc = _record_doc(local_lake)
        doc["tables"]["ophys_experiments"][field_] = value
        local_lake.storage.write("releases/r2/release.json", json.dumps(doc).encode())
        with pytest.raises(ManifestError):
            abo_lake.open_lake(local_lake.url).release("r2")


def test_a_record_copied_under_another_name_is_refused_and_not_listed(local_lake):
    _published(local_lake)
    local_lake.storage.write("releases/r9/release.json", _record_doc_bytes(local_lake))
    fresh = abo_lake.open_lake(local_lake.url)
    with pytest.warns(UserWarning, match="r9"):
        assert fresh.releases() == ["r1"]
    with pytest.raises(ManifestError, match="names release 'r1', not 'r9'"):
        fresh.release("r9")


def _record_doc_bytes(lake, name="r1") -> bytes:
    return lake.storage.read(f"releases/{name}/release.json")


def test_every_byte_flip_in_the_catalog_is_found_by_verify(local_lake):
    _published(local_lake)
    key = "releases/r1/catalog.yaml"
    good = local_lake.storage.read(key)
    assert local_lake.verify("r1").ok
    rng = np.random.default_rng(0)
    for position in rng.choice(len(good), 30, replace=False):
        bad = bytearray(good)
        bad[position] ^= 1 << int(rng.integers(8))
        local_lake.storage.write(key, bytes(bad))
        report = local_lake.verify("r1")
        assert ("catalog", key, "") in report.corrupt, position
        assert not report.ok
    # an entry's reader replaced by one that runs code
    evil = good.replace(
        b"intake.readers.readers:XArrayDatasetReader", b"intake.readers.readers:PythonCode", 1
    )
    assert evil != good
    local_lake.storage.write(key, evil)
    assert ("catalog", key, "") in local_lake.verify("r1").corrupt
    # repair writes what the record derives
    assert local_lake.repair("r1") == [(key, "altered")]
    assert local_lake.storage.read(key) == good
    assert local_lake.verify("r1").ok


# -- publishing is idempotent and self-healing ----------------------------------------------
@pytest.mark.parametrize("lost", ["catalog", "root-catalog", "both"])
def test_a_release_without_its_catalog_is_incomplete_and_repaired(lake, lost):
    _published(lake)
    keys = {"catalog": ["releases/r1/catalog.yaml"], "root-catalog": ["catalog.yaml"]}
    gone = keys.get(lost) or keys["catalog"] + keys["root-catalog"]
    lake.storage.delete(gone)
    report = lake.verify("r1")
    assert not report.ok
    assert sorted(report.incomplete) == sorted((k, "missing") for k in gone)
    assert "INCOMPLETE" in str(report)
    assert sorted(k for k, _ in lake.repair("r1")) == sorted(gone)
    assert lake.verify("r1").ok
    assert lake.repair("r1") == []  # complete: nothing to do


def test_a_lost_response_to_the_record_put_still_completes_the_release(lake, monkeypatch):
    """The server stored release.json but the client saw an error and retried: the retry's
    put-if-absent finds it present. The publish must complete, not report 'exists'."""
    real = lake.storage.put_if_absent

    def stored_then_lost(key, data):
        written = real(key, data)
        if key.endswith("release.json"):
            return False  # what a retry after the lost response sees
        return written

    monkeypatch.setattr(lake.storage, "put_if_absent", stored_then_lost)
    _published(lake)
    monkeypatch.undo()
    assert lake.storage.exists("releases/r1/catalog.yaml")
    assert lake.verify("r1").ok
    assert lake.releases() == ["r1"]


def test_a_publish_that_raised_after_storing_its_record_is_repaired(lake, monkeypatch):
    real = lake.storage.put_if_absent

    def stored_then_raised(key, data):
        written = real(key, data)
        if key.endswith("release.json"):
            raise ConnectionError("connection reset after the server stored the object")
        return written

    monkeypatch.setattr(lake.storage, "put_if_absent", stored_then_raised)
    with pytest.raises(ConnectionError):
        _published(lake)
    monkeypatch.undo()
    report = lake.verify("r1")
    assert report.incomplete
    assert not report.ok
    repaired = {k for k, _ in lake.repair("r1")}
    assert {"releases/r1/catalog.yaml", "catalog.yaml"} <= repaired
    assert lake.verify("r1").ok


def test_repair_cli(local_lake, capsys):
    from abo_lake.cli import main

    _published(local_lake)
    local_lake.storage.delete(["releases/r1/catalog.yaml"])
    assert main(["verify", "r1", "--lake", local_lake.url]) == 1
    capsys.readouterr()
    assert main(["repair", "r1", "--lake", local_lake.url]) == 0
    assert "releases/r1/catalog.yaml" in capsys.readouterr().out
    assert main(["verify", "r1", "--lake", local_lake.url]) == 0
