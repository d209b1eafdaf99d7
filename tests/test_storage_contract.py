"""The storage contract (issue 17), modelled on zarr's ``zarr/testing/store.py``.

:class:`TestStorageContract` runs one set of tests of :class:`abo_lake.storage.Storage`'s
interface on a local folder and on the moto S3 server. :class:`TestCaptureStore` and
:class:`TestManifestStore` run zarr's own ``StoreTests`` against the lake's zarr stores.
"""

from __future__ import annotations

import pickle
import threading

import pytest
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.core.sync import sync
from zarr.testing.store import StoreTests

from abo_lake import cas
from abo_lake.manifest import Manifest
from abo_lake.storage import Storage
from abo_lake.stores import CaptureStore, ManifestStore

# zarr's StoreTests are coroutines: run them with anyio's pytest plugin (anyio is already a
# dependency, through httpx/jupyter), on asyncio.
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    """An empty lake root, on a local folder and on moto S3."""
    if request.param == "local":
        return Storage(tmp_path / "lake")
    bucket = request.getfixturevalue("s3_bucket")
    return Storage(f"s3://{bucket}/lake", **request.getfixturevalue("s3_options"))


class TestStorageContract:
    """What every lake storage does, whatever it lives on."""

    def test_write_then_read_returns_the_bytes(self, storage):
        storage.write("a/b/c", b"\x00\x01abc")
        assert storage.read("a/b/c") == b"\x00\x01abc"
        storage.write("empty", b"")
        assert storage.read("empty") == b""

    def test_write_overwrites(self, storage):
        storage.write("k", b"one")
        storage.write("k", b"two")
        assert storage.read("k") == b"two"

    def test_reading_a_missing_key_raises_file_not_found(self, storage):
        with pytest.raises(FileNotFoundError):
            storage.read("nope/missing")
        got = storage.read_many(["nope/missing"])
        assert isinstance(got["nope/missing"], FileNotFoundError)

    def test_read_many_maps_each_key(self, storage):
        storage.write("m/1", b"1")
        storage.write("m/2", b"22")
        assert storage.read_many([]) == {}
        got = storage.read_many(["m/1", "m/2", "m/3"])
        assert got["m/1"] == b"1"
        assert got["m/2"] == b"22"
        assert isinstance(got["m/3"], FileNotFoundError)

    def test_size_and_root(self, storage):
        storage.write("s/x", b"12345")
        assert storage.size("s/x") == 5
        assert storage.root_exists()
        with pytest.raises(FileNotFoundError, match="s/missing"):
            storage.size("s/missing")

    def test_exists(self, storage):
        assert not storage.exists("e/x")
        storage.write("e/x", b"x")
        assert storage.exists("e/x")

    def test_put_if_absent_writes_once(self, storage):
        assert storage.put_if_absent("p/x", b"first") is True
        assert storage.put_if_absent("p/x", b"second") is False
        assert storage.read("p/x") == b"first"

    def test_put_if_absent_racing_writers_one_wins(self, storage):
        results: list[bool] = []

        def put(i: int) -> None:
            results.append(storage.put_if_absent("race/x", f"writer {i}".encode()))

        threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, False, False, True]
        assert storage.read("race/x").startswith(b"writer ")

    def test_find_lists_objects_with_sizes_recursively(self, storage):
        storage.write("f/a", b"1")
        storage.write("f/b/c", b"333")
        storage.write("g/other", b"x")
        found = storage.find("f")
        assert {k: v["size"] for k, v in found.items()} == {"f/a": 1, "f/b/c": 3}
        assert all(v["mtime"].tzinfo is not None for v in found.values())
        assert storage.find("nothing-here") == {}

    def test_find_sees_objects_written_after_a_listing(self, storage):
        storage.write("l/a", b"1")
        assert set(storage.find("l")) == {"l/a"}
        storage.write("l/b", b"2")  # a listing cache must not hide it
        assert set(storage.find("l")) == {"l/a", "l/b"}

    def test_glob(self, storage):
        storage.write("releases/r1/release.json", b"{}")
        storage.write("releases/r2/release.json", b"{}")
        storage.write("releases/r2/catalog.yaml", b"")
        assert storage.glob("releases/*/release.json") == [
            "releases/r1/release.json",
            "releases/r2/release.json",
        ]

    def test_delete_ignores_absent_keys(self, storage):
        storage.write("d/a", b"1")
        storage.write("d/b", b"1")
        storage.delete(["d/a", "d/never"])
        storage.delete([])
        assert not storage.exists("d/a")
        assert storage.exists("d/b")

    def test_delete_prefix(self, storage):
        storage.write("dp/x/1", b"1")
        storage.write("dp/x/2", b"1")
        storage.write("dp/y", b"1")
        storage.delete_prefix("dp/x")
        storage.delete_prefix("dp/absent")
        assert set(storage.find("dp")) == {"dp/y"}

    def test_writes_leave_no_temporary_objects(self, storage):
        storage.write("t/a", b"1")
        storage.put_if_absent("t/b", b"2")
        storage.put_if_absent("t/b", b"3")
        assert set(storage.find("t")) == {"t/a", "t/b"}

    def test_urls_and_paths(self, storage):
        assert storage.url_of("cas/ab/x").endswith("/lake/cas/ab/x")
        assert storage.url_of("k").startswith(storage.url)
        assert storage.path("k").endswith("/lake/k")

    def test_survives_pickling(self, storage):
        storage.write("pk", b"v")
        again = pickle.loads(pickle.dumps(storage))
        assert again.url == storage.url
        assert again.read("pk") == b"v"

    def test_zarr_store_is_read_only_and_reads_objects(self, storage):
        # on zarr's own event loop (as the lake reads), not the test runner's: an s3fs
        # instance bound to a loop that ends with the test would break later tests
        storage.write("z/obj", b"bytes")
        store = storage.zarr_store("z")
        assert store.read_only
        got = sync(store.get("obj", default_buffer_prototype()))
        assert got.to_bytes() == b"bytes"
        assert sync(store.get("missing", default_buffer_prototype())) is None

    def test_errors_name_the_object(self, storage):
        with pytest.raises(FileNotFoundError, match="nope/missing-object"):
            storage.read("nope/missing-object")
        if storage.local:  # a folder where an object should be
            storage.write("dir/x", b"1")
            with pytest.raises(OSError, match="dir"):
                storage.read("dir")


# -- zarr's own StoreTests against the lake's zarr stores ----------------------------------
class TestCaptureStore(StoreTests[CaptureStore, cpu.Buffer]):
    """The writable store conversions capture chunks with (chunks go into the lake's CAS)."""

    store_cls = CaptureStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, tmp_path) -> dict:
        return {"storage": Storage(tmp_path / "lake")}

    @pytest.fixture
    def store(self, store_kwargs) -> CaptureStore:
        return CaptureStore(**store_kwargs)

    @pytest.fixture
    def store_not_open(self, store_kwargs) -> CaptureStore:
        return CaptureStore(**store_kwargs)

    async def set(self, store: CaptureStore, key: str, value) -> None:
        await store.set(key, value)

    async def get(self, store: CaptureStore, key: str):
        return await store.get(key, default_buffer_prototype())

    def test_store_repr(self, store) -> None:
        assert "CaptureStore" in repr(store)

    def test_store_supports_writes(self, store) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store) -> None:
        assert store.supports_listing

    def test_store_eq(self, store, store_kwargs) -> None:
        pytest.skip("a CaptureStore is one capture: equal only to itself")

    async def test_serializable_store(self, store) -> None:
        pytest.skip("a CaptureStore cannot leave its process (pickles by reference)")

    async def test_store_open_read_only(self, *args, **kwargs) -> None:
        pytest.skip("a CaptureStore is always writable")

    async def test_get_raises(self, store) -> None:
        await super().test_get_raises(store)

    async def test_read_only_store_raises(self, open_kwargs) -> None:
        pytest.skip("a CaptureStore is always writable")

    async def test_with_read_only_store(self, open_kwargs) -> None:
        pytest.skip("a CaptureStore is always writable")


def _manifest_store(storage: Storage, items: dict[str, bytes]) -> ManifestStore:
    meta = {k: v.decode() for k, v in items.items() if k.endswith("zarr.json")}
    chunks, sizes = {}, {}
    for key, data in items.items():
        if key not in meta:
            chunks[key], _ = cas.put(storage, data)
            sizes[key] = len(data)
    return ManifestStore(storage, Manifest(meta, chunks, sizes), label="test", verify=True)


class TestManifestStore(StoreTests[ManifestStore, cpu.Buffer]):
    """The read-only store every dataset of a release is opened through. Its content is
    fixed at construction (a manifest), so the ``set`` hook rebuilds it with one more key;
    zarr's write tests are skipped (a release is immutable), as for zarr's read-only stores."""

    store_cls = ManifestStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, tmp_path) -> dict:
        storage = Storage(tmp_path / "lake")
        return {"storage": storage, "manifest": Manifest({}, {}, {}), "label": "test"}

    @pytest.fixture
    def store(self, store_kwargs) -> ManifestStore:
        return ManifestStore(**store_kwargs)

    @pytest.fixture
    def store_not_open(self, store_kwargs) -> ManifestStore:
        return ManifestStore(**store_kwargs)

    async def set(self, store: ManifestStore, key: str, value) -> None:
        items = dict(store._meta.items())
        for k, h in store._chunks.items():
            items[k] = store.storage.read(cas.key_of(h))
        items[key] = value.to_bytes()
        rebuilt = _manifest_store(store.storage, items)
        store._meta, store._chunks, store.manifest = (
            rebuilt._meta,
            rebuilt._chunks,
            rebuilt.manifest,
        )

    async def get(self, store: ManifestStore, key: str):
        return await store.get(key, default_buffer_prototype())

    def test_store_repr(self, store) -> None:
        assert "ManifestStore" in repr(store)

    def test_store_supports_writes(self, store) -> None:
        assert not store.supports_writes

    def test_store_supports_listing(self, store) -> None:
        assert store.supports_listing

    def test_store_read_only(self, store) -> None:
        assert store.read_only

    async def test_serializable_store(self, store) -> None:
        # zarr's version writes through store.set first; a release store pickles by content
        copy = pickle.loads(pickle.dumps(store))
        assert copy == store
        for key in [k async for k in store.list()]:
            assert (await copy.get(key, cpu.buffer_prototype)).to_bytes() == (
                await store.get(key, cpu.buffer_prototype)
            ).to_bytes()

    async def test_writes_are_refused(self, store) -> None:
        with pytest.raises(PermissionError, match="immutable"):
            await store.set("a", cpu.Buffer.from_bytes(b"x"))
        with pytest.raises(ValueError, match="immutable"):
            store.with_read_only(False)


_READ_ONLY = (
    "a release is immutable: the store refuses writes (as zarr's read-only stores), and this "
    "zarr test writes with store.set itself, not through the set hook"
)
_WRITES_DIRECTLY = {
    "test_exists",
    "test_list",
    "test_list_prefix",
    "test_list_empty_path",
    "test_list_dir",
    "test_getsize_prefix",
}
for _name in [n for n in dir(StoreTests) if n.startswith("test_")]:
    if (
        _name in _WRITES_DIRECTLY
        or any(w in _name for w in ("set", "delete", "clear", "open_read_only", "read_only_store"))
    ) and _name not in TestManifestStore.__dict__:

        def _skipped(self, *args, _n=_name, **kwargs) -> None:
            pytest.skip(_READ_ONLY)

        setattr(TestManifestStore, _name, _skipped)
