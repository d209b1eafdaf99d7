"""The read side of a published release: list its datasets, open them lazily."""

from __future__ import annotations

import difflib
import hashlib
import io
import warnings
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from abo_lake import cas
from abo_lake.chunk_codec import chunked_as_stored, read_in_thread
from abo_lake.errors import DatasetNotFoundError, IntegrityError
from abo_lake.manifest import Manifest, manifest_key
from abo_lake.record import PartitionedDatasets, ReleaseHead, ReleaseRecord, record_root
from abo_lake.stores import ManifestStore, array_of

if TYPE_CHECKING:
    from abo_lake.lake import Lake

__all__ = ["Release", "ReleaseHead", "ReleaseRecord", "record_root"]


class Release:
    """One published, immutable release of a lake.

    Obtained from :meth:`abo_lake.lake.Lake.release`; never constructed directly.
    """

    def __init__(self, lake: Lake, record: ReleaseRecord) -> None:
        self.lake = lake
        self.record = record

    def __repr__(self) -> str:
        return (
            f"<abo_lake.Release {self.record.pin} · {len(self.record.datasets)} datasets · "
            f"created {self.record.created[:19]}>"
        )

    def __getattr__(self, name: str) -> Any:
        """Metadata tables as attributes: ``rel.ophys_experiments.search(cre_line="Sst")``."""
        record = self.__dict__.get("record")
        if name.startswith("_") or record is None or name not in record.tables:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        from abo_lake.tables import release_table

        return release_table(self, name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.record.tables})

    @property
    def name(self) -> str:
        """The release name, e.g. ``"2026.1"``."""
        return self.record.name

    @property
    def root(self) -> str:
        """The root hash over the release's manifests."""
        return self.record.root

    @property
    def pin(self) -> str:
        """``name@root`` (short root) for reproducible studies."""
        return self.record.pin

    def datasets(self, prefix: str = "") -> list[str]:
        """Dataset paths in this release, optionally only those under ``prefix`` (then only
        the record parts that can hold them are read)."""
        datasets = self.record.datasets
        if isinstance(datasets, PartitionedDatasets):
            return datasets.under(prefix)
        return sorted(p for p in datasets if p.startswith(prefix))

    def tables(self) -> list[str]:
        """Names of the release's metadata tables (``ophys_experiments``, ``units``, ...)."""
        return sorted(self.record.tables)

    def table(self, name: str) -> pd.DataFrame:
        """Load one metadata table (one Parquet object) as a DataFrame."""
        entry = self.record.tables.get(name)
        if entry is None:
            raise DatasetNotFoundError(
                f"no table {name!r} in release {self.pin}; tables: {self.tables()}"
            )
        data = self.lake.storage.read(cas.key_of(entry["object"]))
        if cas.digest(data) != entry["object"]:
            raise IntegrityError(f"{self.pin}: table {name!r} is corrupt")
        return pd.read_parquet(io.BytesIO(data))

    def table_url(self, name: str) -> str:
        """URL of a table's Parquet object (readable by pandas without abo_lake)."""
        return self.lake.storage.url_of(cas.key_of(self.record.tables[name]["object"]))

    def kind(self, path: str) -> str | None:
        """The ``abo_lake_kind`` recorded for a dataset."""
        return self._entry(path).get("kind")

    def _entry(self, path: str) -> dict[str, Any]:
        path = path.strip("/")
        entry = self.record.datasets.get(path)
        if entry is None:
            paths = list(self.record.datasets)
            near = difflib.get_close_matches(path, paths, n=5, cutoff=0.6)
            near += [p for p in paths if p.startswith(path) and p not in near][:5]
            hint = f"; did you mean {near!r}?" if near else f"; it has {len(paths)} datasets"
            raise DatasetNotFoundError(
                f"no dataset {path!r} in release {self.pin}{hint} (see Release.datasets())"
            )
        return entry

    def manifest(self, path: str) -> Manifest:
        """The manifest of one dataset (validated)."""
        h = self._entry(path)["manifest"]
        return self.lake._manifest(h, where=f"release {self.name}, dataset {path!r}")

    def store(self, path: str, *, verify: bool = False) -> ManifestStore:
        """A read-only Zarr store of one dataset (for zarr users; xarray users call open)."""
        return ManifestStore(
            self.lake.storage, self.manifest(path), label=f"{self.pin}:{path}", verify=verify
        )

    def open(
        self, path: str, *, group: str | None = None, verify: bool = False, chunks: Any = None
    ) -> xr.Dataset:
        """Open one dataset lazily (dask-backed); only the chunks you compute are read.

        Parameters
        ----------
        path
            Dataset path, e.g. ``"ophys/experiment/951980471"``.
        group
            A sub-group of the dataset (multiscale level, ``raw/...``).
        verify
            Hash-check every chunk as it is read; raises :class:`IntegrityError` on mismatch.
        chunks
            Dask chunks; default: one dask chunk per stored object (a pack of chunks, or
            one chunk), each read with one request.

        Returns
        -------
        xarray.Dataset
            With ``attrs["abo_lake_release"]``, ``["abo_lake_release_root"]`` and
            ``["abo_lake_dataset"]`` recording exactly what was opened.
        """
        store = self.store(path, verify=verify)
        if chunks is None:
            ds = self._open_as_stored(store, path, group or "", verify)
        else:
            # index coordinates too large to be inline: read together, not one after another
            store.prefetch(store.index_chunks(group or ""))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module=r"zarr\..*")
                ds = xr.open_zarr(
                    store, group=group, consolidated=True, chunks=chunks, zarr_format=3
                )
        # store.chunk_reads / .requests / .bytes_read: what was read from the lake so far
        ds.encoding["abo_lake_store"] = store
        return self._stamp(ds, path)

    def _open_as_stored(
        self, store: ManifestStore, path: str, group: str, verify: bool
    ) -> xr.Dataset:
        """``open``'s default: one dask chunk per stored object, decoded in the task's thread
        (no event-loop hop per chunk; the store checked each chunk's CRC already).

        What it costs is CPU (``tests/benchmarks/bench_cloud_reads.py``): Zarr parses
        only the group's own members' metadata; index coordinates are read in one batch and
        decoded in this thread before their indexes are made (as ``open_zarr`` makes them);
        dask arrays are built directly, named from the manifest's hash.
        """
        with warnings.catch_warnings(), store.members_only(group):
            warnings.filterwarnings("ignore", category=UserWarning, module=r"zarr\..*")
            ds = xr.open_zarr(
                store,
                group=group or None,
                consolidated=True,
                chunks=None,
                zarr_format=3,
                create_default_indexes=False,
            )
        read_in_thread(
            ds, store.read_chunk, store.decode_error, crc_checked=True, get_many=store.read_chunks
        )
        prefix = f"{group.strip('/')}/" if group.strip("/") else ""
        indexed = [n for n, c in ds.coords.items() if c.dims == (n,)]
        arrays = {f"{prefix}{n}" for n in indexed}
        starts = tuple(f"{a}/" for a in arrays)
        # index coordinates too large to be inline: read together, not one after another
        store.prefetch(
            [k for k in store.manifest.chunks if k.startswith(starts) and array_of(k) in arrays]
        )
        return self._chunked_as_stored(ds, store, path, group, indexed, verify)

    def _chunked_as_stored(
        self,
        ds: xr.Dataset,
        store: ManifestStore,
        path: str,
        group: str,
        indexed: list[str],
        verify: bool,
    ) -> xr.Dataset:
        """Group ``group`` of dataset ``path`` (opened by Zarr without default indexes, its
        index coordinates read) with its indexes and one dask chunk per stored object.

        Dask names come from the manifest's hash (equal names, equal values: nothing is
        tokenized) and the lake's URL: the same dataset opened from two lakes (a copy being
        checked against its source) makes two graphs, so dask reads both.
        """
        group = group.strip("/")
        prefix = f"{group}/" if group else ""
        ds = ds.assign_coords(xr.Coordinates({n: ds.coords[n].variable for n in indexed}))
        packs = {
            k[len(prefix) :]: v
            for k, v in store.manifest.packs.items()
            if k.startswith(prefix) and "/" not in k[len(prefix) :]
        }
        lake = hashlib.sha256(self.lake.storage.url.encode()).hexdigest()[:8]
        name = f"abo_lake-{self._entry(path)['manifest']}-{lake}"
        name += ("-verified" if verify else "") + (f"-{group}" if group else "")
        return chunked_as_stored(ds, packs, name=name)

    def open_datatree(self, path: str, *, verify: bool = False, chunks: Any = None) -> xr.DataTree:
        """Open a dataset with all its groups (multiscale levels, raw carry-over) lazily.

        Parameters
        ----------
        path
            Dataset path, e.g. ``"ccf/ccf_2017/annotation"``.
        verify
            Hash-check every chunk as it is read.
        chunks
            Dask chunks; default: as :meth:`open`'s, one dask chunk per stored object (a
            pack of chunks, or one chunk), each read with one request.

        Returns
        -------
        xarray.DataTree
            Each group's node holds what ``open(path, group=...)`` gives, stamped as
            :meth:`open` stamps; ``tree.encoding["abo_lake_store"]`` is the store.
        """
        store = self.store(path, verify=verify)
        if chunks is None:
            tree = self._datatree_as_stored(store, path, verify)
        else:
            # every group's index coordinates too large to be inline: read together
            groups = {k.rpartition("/")[0].rpartition("/")[0] for k in store.manifest.metadata}
            store.prefetch(sorted({k for g in groups for k in store.index_chunks(g)}))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module=r"zarr\..*")
                tree = xr.open_datatree(
                    store, engine="zarr", consolidated=True, chunks=chunks, zarr_format=3
                )
        tree.encoding["abo_lake_store"] = store
        for node in tree.subtree:
            node.attrs.update(self._stamp_attrs(path))
        return tree

    def _datatree_as_stored(self, store: ManifestStore, path: str, verify: bool) -> xr.DataTree:
        """``open_datatree``'s default: each group as :meth:`_open_as_stored` opens it (one
        dask chunk per stored object, decoded in the task's thread, graphs named from the
        manifest's hash), with Zarr parsing the hierarchy once and the index coordinates of
        every group that are not inline read in one batch."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"zarr\..*")
            groups = xr.open_groups(
                store,
                engine="zarr",
                consolidated=True,
                chunks=None,
                zarr_format=3,
                create_default_indexes=False,
            )
        indexed: dict[str, list[str]] = {}
        arrays: set[str] = set()
        for name, ds in groups.items():
            read_in_thread(
                ds, store.read_chunk, store.decode_error, crc_checked=True,
                get_many=store.read_chunks,
            )  # fmt: skip
            prefix = f"{name.strip('/')}/" if name.strip("/") else ""
            indexed[name] = [n for n, c in ds.coords.items() if c.dims == (n,)]
            arrays |= {f"{prefix}{n}" for n in indexed[name]}
        store.prefetch([k for k in store.manifest.chunks if array_of(k) in arrays])
        out = {
            name: self._chunked_as_stored(ds, store, path, name, indexed[name], verify)
            for name, ds in groups.items()
        }
        return xr.DataTree.from_dict(out)

    def _stamp_attrs(self, path: str) -> dict[str, str]:
        return {
            "abo_lake_release": self.name,
            "abo_lake_release_root": self.root,
            "abo_lake_dataset": path,
        }

    def _stamp(self, ds: xr.Dataset, path: str) -> xr.Dataset:
        ds.attrs.update(self._stamp_attrs(path))
        return ds

    @cached_property
    def nbytes(self) -> int:
        """Stored bytes of all datasets (what downloading the whole release would move)."""
        return self.record.logical_bytes

    def storage_options(self) -> dict[str, Any]:
        """``storage_options`` for opening a dataset with plain xarray + fsspec (no abo_lake).

        Examples
        --------
        >>> so = rel.storage_options()  # doctest: +SKIP
        >>> so["fo"] = rel.manifest_url("ophys/experiment/1")  # doctest: +SKIP
        >>> xr.open_dataset("reference://", engine="zarr", storage_options=so)  # doctest: +SKIP
        """
        st = self.lake.storage
        remote = "file" if st.local else st.protocol
        return {
            "remote_protocol": remote,
            "remote_options": {**st.storage_options, "asynchronous": True},
            "target_protocol": remote,
            "target_options": dict(st.storage_options),
        }

    def manifest_url(self, path: str) -> str:
        """URL of a dataset's manifest (a standard fsspec reference file)."""
        return self.lake.storage.url_of(manifest_key(self._entry(path)["manifest"]))
