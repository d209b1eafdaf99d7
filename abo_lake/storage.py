"""Where a lake lives: one URL -> an fsspec filesystem, and the few operations the lake needs.

This is the only module that knows local folders from S3. Everything else passes strings
(``"s3://bucket/lake"``, ``"/data/lake"``) and calls :class:`Storage` methods with keys
relative to the lake root (``"cas/ab/ab12..."``).
"""

from __future__ import annotations

import os
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import zarr.storage
from fsspec.core import url_to_fs

__all__ = ["DEFAULT_LAKE", "Storage", "default_lake_url", "describe_storage_error"]

try:  # s3fs's HTTP client; its payload errors are not OSErrors
    from aiohttp import ClientPayloadError as _PayloadError

    _TRANSPORT_ERRORS: tuple[type[Exception], ...] = (_PayloadError,)
except ImportError:  # pragma: no cover - local-only installs
    _TRANSPORT_ERRORS = ()

#: Used when neither an explicit URL nor ``$ABO_LAKE_URL`` is given.
DEFAULT_LAKE = Path.home() / ".local" / "share" / "abo-lake" / "lake"


def default_lake_url() -> str:
    """Return ``$ABO_LAKE_URL`` if set, else the embedded local default folder."""
    return os.environ.get("ABO_LAKE_URL") or str(DEFAULT_LAKE)


class Storage:
    """A lake root on any fsspec filesystem.

    Parameters
    ----------
    url
        A local path or ``file://`` URL (the default kind), or any fsspec URL such as
        ``s3://bucket/prefix``.
    **storage_options
        Passed to the fsspec filesystem (for S3: ``endpoint_url``, ``key``, ``secret``,
        ``anon=True`` for public buckets, ...). For S3, ``max_concurrency=1`` is the default:
        it saves one HEAD request per chunk read.
    """

    def __init__(self, url: str | Path, **storage_options: Any) -> None:
        url = str(url)
        self.protocol = fsspec.utils.get_protocol(url)
        if self.protocol in ("s3", "s3a"):
            storage_options.setdefault("max_concurrency", 1)
        self.storage_options = storage_options
        self.fs, root = url_to_fs(url, **storage_options)
        self.local = self.protocol in ("file", "local")
        if self.local:
            root = str(Path(root).expanduser().resolve())
        self.root = root.rstrip("/")
        self.url = self.root if self.local else f"{self.protocol}://{self.root}"

    def __reduce__(self) -> tuple:
        return (_rebuild, (self.url, self.storage_options))

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # -- paths ---------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """Full path of ``key`` in the filesystem."""
        return f"{self.root}/{key}" if key else self.root

    def url_of(self, key: str) -> str:
        """Full URL of ``key`` (what a reference manifest points to)."""
        return f"{self.url}/{key}"

    @contextmanager
    def naming(self, key: str) -> Iterator[None]:
        """Re-raise a storage failure on ``key`` (an OSError left after the filesystem's
        retries, such as s3fs's ``OSError(121, 'We encountered an internal error...')``) as an
        OSError whose message names the object; a FileNotFoundError stays one (callers test for
        it), naming the object too. Exists/permission errors and botocore's pass as they are."""
        try:
            yield
        except FileNotFoundError as err:
            if key in str(err):
                raise
            raise FileNotFoundError(
                err.errno, f"{self.url_of(key)}: {err.strerror or err}"
            ) from err
        except (FileExistsError, PermissionError):
            raise
        except OSError as err:
            raise OSError(err.errno, f"{self.url_of(key)}: {err.strerror or err}") from err
        except _TRANSPORT_ERRORS as err:  # a body cut short on every attempt
            raise OSError(f"{self.url_of(key)}: {type(err).__name__}: {err}") from err

    # -- reads ---------------------------------------------------------------------------
    @property
    def uncached(self) -> Storage:
        """This lake with every read going to the lake's own objects, never to a local cache
        (what :meth:`~abo_lake.lake.Lake.verify` reads). A plain Storage caches nothing, so
        it is its own uncached view; :class:`~abo_lake.cache.CachedStorage` gives a plain
        Storage of the same lake."""
        return self

    def read(self, key: str) -> bytes:
        """Return the bytes of ``key``; raise FileNotFoundError if absent, an OSError naming
        the object if the storage keeps failing."""
        with self.naming(key):
            return self.fs.cat_file(self.path(key))

    def read_many(self, keys: list[str]) -> dict[str, bytes | Exception]:
        """Read many objects at once (concurrently on S3); missing ones map to an exception."""
        if not keys:
            return {}
        paths = [self.path(k) for k in keys]
        got = self.fs.cat(paths, on_error="return")
        if not isinstance(got, dict):  # a single path
            got = {paths[0]: got}
        by_path = {self.fs._strip_protocol(p): v for p, v in got.items()}
        return {
            k: by_path.get(self.fs._strip_protocol(p), FileNotFoundError(p))
            for k, p in zip(keys, paths)
        }

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start:end`` of ``key`` (one ranged request); errors as :meth:`read`."""
        with self.naming(key):
            return self.fs.cat_file(self.path(key), start=start, end=end)

    def read_ranges(self, spans: list[tuple[str, int, int]]) -> list[bytes | Exception]:
        """Several ``(key, start, end)`` spans at once (concurrently on S3; one request
        each); a span that cannot be read maps to the exception, naming its object."""
        if len(spans) <= 1:
            out: list[bytes | Exception] = []
            for key, start, end in spans:
                try:
                    out.append(self.read_range(key, start, end))
                except OSError as err:
                    out.append(err)
            return out
        got = self.fs.cat_ranges(
            [self.path(k) for k, _, _ in spans],
            [s for _, s, _ in spans],
            [e for _, _, e in spans],
            on_error="return",
        )
        out = []
        for (key, _, _), data in zip(spans, got):
            if isinstance(data, Exception):
                try:
                    with self.naming(key):
                        raise data
                except Exception as named:
                    data = named
            out.append(data)
        return out

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        with self.naming(key):
            return self.fs.exists(self.path(key))

    def size(self, key: str) -> int:
        """Size in bytes of ``key``."""
        with self.naming(key):
            return int(self.fs.size(self.path(key)))

    def root_exists(self) -> bool:
        """Whether the lake's root folder (or bucket prefix) exists."""
        with self.naming(""):
            return bool(self.fs.exists(self.root))

    def find(self, prefix: str) -> dict[str, dict]:
        """Every object under ``prefix`` (recursive): key -> {"size", "mtime"}."""
        base = self.path(prefix)
        self._fresh(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        strip = len(self.root) + 1
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            out[path[strip:] if path.startswith(self.root) else path] = {
                "size": int(info.get("size") or 0),
                "mtime": _mtime(info),
            }
        return out

    def glob(self, pattern: str) -> list[str]:
        """Keys matching a glob relative to the root."""
        strip = len(self.root) + 1
        self._fresh(self.path(pattern.split("*", 1)[0].rsplit("/", 1)[0]))
        return sorted(p[strip:] for p in self.fs.glob(self.path(pattern)))

    def _fresh(self, base: str) -> None:
        """Drop cached listings at and below ``base``: other writers add objects, and s3fs
        can cache a listing that raced one of their puts after the put invalidated it (a
        published release then looked absent)."""
        self.fs.invalidate_cache(base)
        cache = getattr(self.fs, "dircache", None)
        if cache is not None:
            below = base.rstrip("/") + "/"
            for key in [k for k in cache if k.startswith(below)]:
                cache.pop(key, None)

    # -- writes --------------------------------------------------------------------------
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` unless it exists; atomic. Return True if written.

        Local: write a temporary file, then ``os.link`` it into place (fails if present).
        S3: ``PutObject`` with ``IfNoneMatch="*"``. Two writers never both succeed, and a
        reader never sees a partial object.
        """
        if self.local:
            final = Path(self.path(key))
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.partial"
            tmp.write_bytes(data)
            try:
                os.link(tmp, final)
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        try:
            with self.naming(key):
                self.fs.pipe_file(self.path(key), data, mode="create")
            return True
        except FileExistsError:
            return False

    def write(self, key: str, data: bytes) -> None:
        """Write (or overwrite) ``key`` atomically."""
        if self.local:
            final = Path(self.path(key))
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.partial"
            tmp.write_bytes(data)
            os.replace(tmp, final)
        else:
            with self.naming(key):
                self.fs.pipe_file(self.path(key), data)

    def delete(self, keys: list[str]) -> None:
        """Delete objects; absent ones are ignored."""
        if keys and self.local:
            for key in keys:
                Path(self.path(key)).unlink(missing_ok=True)
        elif keys:
            self.fs.rm([self.path(k) for k in keys])

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under ``prefix``."""
        if self.fs.exists(self.path(prefix)):
            self.fs.rm(self.path(prefix), recursive=True)

    # -- zarr ----------------------------------------------------------------------------
    def zarr_store(self, prefix: str) -> zarr.abc.store.Store:
        """A read-only zarr store rooted at ``prefix`` (zarr's own I/O: LocalStore/FsspecStore)."""
        if self.local:
            return zarr.storage.LocalStore(self.path(prefix), read_only=True)
        return zarr.storage.FsspecStore.from_url(
            self.url_of(prefix), storage_options=self.storage_options, read_only=True
        )


def _rebuild(url: str, storage_options: dict) -> Storage:
    return Storage(url, **storage_options)


def _mtime(info: dict) -> datetime:
    value = info.get("LastModified") or info.get("mtime") or info.get("created")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if value is None:
        return datetime.now(UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


def _raised_in_storage_client(err: BaseException) -> bool:
    """Whether ``err`` was raised inside fsspec, s3fs or the AWS client (not in our code)."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and any(
        part in frames[-1].filename for part in ("fsspec", "s3fs", "botocore", "aiobotocore")
    )


def describe_storage_error(err: BaseException) -> str | None:
    """What is wrong with the storage a command was pointed at, if ``err`` says so: an
    option the filesystem does not take, missing or refused credentials, an endpoint that
    cannot be reached (botocore's errors are not OSErrors). None for anything else."""
    if (
        isinstance(err, TypeError)
        and "unexpected keyword argument" in str(err)
        and _raised_in_storage_client(err)
    ):
        return (
            f"an option of --storage-options or --source-options is not one the filesystem "
            f"takes ({err}); see the fsspec/s3fs documentation for its names, e.g. endpoint_url"
        )
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - s3fs brings botocore
        return None
    if isinstance(err, BotoCoreError | ClientError):
        return (
            f"cannot access S3 storage: {err} (check --lake, the sources, --storage-options "
            "and --source-options, or the AWS environment)"
        )
    return None
