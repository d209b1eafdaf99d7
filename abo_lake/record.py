"""The release record and its head: what ``releases/<name>/`` holds, parsed and checked."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from abo_lake.errors import ManifestError
from abo_lake.manifest import manifest_key, root_hash

__all__ = [
    "INDEX_INLINE_MAX",
    "INDEX_MAX",
    "PART_INLINE_MAX",
    "PART_MAX",
    "RECORDS_PREFIX",
    "PartitionedDatasets",
    "ReleaseHead",
    "ReleaseRecord",
    "part_key",
    "record_root",
    "route_of",
]

#: Where the record parts of format-3 records are stored, content-addressed.
RECORDS_PREFIX = "records"
#: A record part holds at most this many datasets: the route grows a digit until it does.
PART_MAX = 256
#: When all its parts together are at most this many bytes, they live inside the record
#: (a small lake reads no part object); otherwise every part is an object of its own.
PART_INLINE_MAX = 65536
#: A record index object routes to at most this many parts' routes (its width, per family,
#: grows a digit until it does).
INDEX_MAX = 128
#: When the index objects of a record with stored parts are together at most this many
#: bytes, they live inside the record (one request less to reach a part).
INDEX_INLINE_MAX = 16384
_HEX = frozenset("0123456789abcdef")


#: Fields of a release record; a record with any other field is refused.
_RECORD_FIELDS = {
    "format",
    "name",
    "root",
    "created",
    "abo_lake_version",
    "notes",
    "datasets",
    "tables",
}
#: Format 3 adds the fsspec reference-file fields that route a dataset path to its part.
_RECORD_FIELDS_3 = _RECORD_FIELDS | {"version", "refs"}


def part_key(h: str) -> str:
    """Storage key of the record part whose sha256 is ``h``."""
    return f"{RECORDS_PREFIX}/{h[:2]}/{h}.json"


def family_of(path: str) -> str:
    """A path's first two segments (``ophys/experiment``): what shares one route width."""
    return "/".join(path.split("/")[:2])


def route_of(path: str, digits: int) -> str:
    """The record part a dataset path lives in: its first two segments and the first
    ``digits`` characters of its third (``ophys/experiment/95`` for
    ``ophys/experiment/951980471`` at 2 digits, ``ophys/experiment/`` at 0); a path of one
    or two segments is its own."""
    seg = path.split("/")
    if len(seg) <= 2:
        return path
    return f"{seg[0]}/{seg[1]}/{seg[2][:digits]}"


def route_at(path: str, widths: Mapping[str, int]) -> str:
    """:func:`route_of` at the width ``widths`` gives ``path``'s family (0 if none)."""
    return route_of(path, widths.get(family_of(path), 0))


def route_widths(paths: list[str]) -> dict[str, int]:
    """Per family (:func:`family_of`), the fewest digits (0 for a family of at most
    :data:`PART_MAX` datasets) whose routes hold at most :data:`PART_MAX` paths each."""
    families: dict[str, list[str]] = {}
    for p in paths:
        if p.count("/") >= 2:
            families.setdefault(family_of(p), []).append(p.split("/")[2])
    widths = {}
    for family, ids in families.items():
        longest = max(map(len, ids))
        for digits in range(longest + 1):
            sizes: dict[str, int] = {}
            for i in ids:
                sizes[i[:digits]] = sizes.get(i[:digits], 0) + 1
            if max(sizes.values()) <= PART_MAX:
                break
        widths[family] = digits
    return widths


def index_widths(routes: list[str], widths: Mapping[str, int]) -> dict[str, int]:
    """Per family, the fewest digits (at most its route width) whose index routes
    (:func:`route_of` of a route) hold at most :data:`INDEX_MAX` routes each."""
    families: dict[str, list[str]] = {}
    for r in routes:
        if r.count("/") >= 2:
            families.setdefault(family_of(r), []).append(r)
    out = {}
    for family, rs in families.items():
        for digits in range(widths.get(family, 0) + 1):
            sizes: dict[str, int] = {}
            for r in rs:
                ir = route_of(r, digits)
                sizes[ir] = sizes.get(ir, 0) + 1
            if max(sizes.values()) <= INDEX_MAX:
                break
        out[family] = digits
    return out


def _shared_parts(
    groups: Mapping[str, Mapping[str, Any]], unit: Callable[[str], str] = family_of
) -> list[list[str]]:
    """Consecutive routes of a ``unit`` (a family, or an index route) stored as one part,
    up to :data:`PART_MAX` datasets.

    Where a part ends is decided by the routes themselves (content-defined: after a route
    whose sha256 is 0 modulo ``k``, ``k`` the power of two that makes parts about half full
    on average), not by counting from the unit's first route, so adding or changing a
    dataset rewrites its own part, not every part after it. Routes stay fine where ids are
    dense (10-digit ids beside 9-digit ones need more digits), and parts stay full. A part
    never spans two units, so an index object's parts are its own.
    """
    families: dict[str, list[str]] = {}
    for route in sorted(groups):
        families.setdefault(unit(route), []).append(route)
    out: list[list[str]] = []
    for routes in families.values():
        mean = sum(len(groups[r]) for r in routes) / len(routes)
        k = 1 << max(0, int(math.log2(max(1.0, PART_MAX / 2 / mean))))
        current: list[str] = []
        size = 0
        for route in routes:
            n = len(groups[route])
            if current and size + n > PART_MAX:
                out.append(current)
                current, size = [], 0
            current.append(route)
            size += n
            if int(hashlib.sha256(route.encode()).hexdigest()[:8], 16) % k == 0:
                out.append(current)
                current, size = [], 0
        if current:
            out.append(current)
    return out


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def part_bytes(entries: dict[str, dict[str, Any]], url_of: Callable[[str], str]) -> bytes:
    """A record part: ``datasets`` (path -> manifest, kind, nbytes), and the same as an fsspec
    reference file (``<path>.json`` -> the manifest's URL), so plain fsspec and intake reach
    a dataset's manifest through the record and its part without abo_lake."""
    refs = {f"{p}.json": [url_of(manifest_key(e["manifest"]))] for p, e in entries.items()}
    return _canonical({"version": 1, "refs": refs, "datasets": entries})


class PartitionedDatasets(Mapping[str, dict[str, Any]]):
    """The datasets of a format-3 record, read one part at a time as paths are asked for.

    ``rec.datasets[path]`` reads the one part ``path`` routes to (and, in a record with an
    index level, the one index object that routes to the part); iterating reads every part
    (at once, concurrently on S3). Each object read is checked against the hash the level
    above holds for it (and so against the root), and every path in a part must route to
    it, every route in an index object to that object. Parsed objects are shared by the
    releases that hold them (one parse per lake, through the cache given to :meth:`bind`).
    """

    def __init__(
        self,
        refs: Mapping[str, Any],
        widths: Mapping[str, int],
        count: int,
        where: str,
        index: Mapping[str, int] | None = None,
    ) -> None:
        self.widths = dict(widths)
        self.index = None if index is None else dict(index)  # family -> index route width
        self.where = where
        self._count = count
        self._inline: dict[str, str] = {}  # route -> inline part (no index level)
        self._hashes: dict[str, str] = {}  # route -> stored part hash (as far as known)
        self._index_inline: dict[str, str] = {}  # index route -> inline index document
        self.index_hashes: dict[str, str] = {}  # index route -> stored index object hash
        self._index_routes: dict[str, list[str]] = {}  # index route -> its routes, once read
        top_inline, top_hashes = (
            (self._inline, self._hashes)
            if self.index is None
            else (self._index_inline, self.index_hashes)
        )
        for key, value in refs.items():
            route = key.removesuffix(".json")
            if isinstance(value, str):
                top_inline[route] = value
            else:
                top_hashes[route] = _object_hash(value, f"{where}: record reference")
        self._loaded: dict[str, dict[str, dict[str, Any]]] = {}
        self._read: Callable[[list[str]], Mapping[str, bytes | Exception]] | None = None
        self._read_fresh = self._read  # errors(fresh=True): the lake's own, never a cache
        self._cache: dict[str, Any] = {}  # object hash -> its checked content
        self._why: dict[str, str] = {}  # label -> why its object was refused
        self._flat: dict[str, dict[str, Any]] = {}  # path -> entry, once iterated

    def bind(
        self,
        read_many: Callable[[list[str]], Mapping[str, bytes | Exception]],
        cache: dict[str, Any] | None = None,
        read_fresh: Callable[[list[str]], Mapping[str, bytes | Exception]] | None = None,
    ) -> None:
        """Read stored objects with ``read_many`` (keys -> bytes or exception), sharing
        ``cache`` (object hash -> checked content) with the lake's other records;
        ``errors(fresh=True)`` reads with ``read_fresh`` (default ``read_many``): the lake's
        objects, bypassing any local cache (:attr:`abo_lake.storage.Storage.uncached`)."""
        self._read = read_many
        self._read_fresh = read_fresh or read_many
        if cache is not None:
            self._cache = cache
            for route, h in self._hashes.items():  # what a publisher built, others reuse
                if route in self._loaded:
                    cache.setdefault(h, self._loaded[route])
            for iroute, h in self.index_hashes.items():
                if iroute in self._index_routes:
                    cache.setdefault(h, {r: self._hashes[r] for r in self._index_routes[iroute]})

    def route(self, path: str) -> str:
        """The part ``path`` lives in (:func:`route_of` at its family's width)."""
        return route_at(path, self.widths)

    def index_route(self, route: str) -> str:
        """The index object that routes to part ``route`` (a record with an index level)."""
        return route_at(route, self.index or {})

    def _preload(self, route: str, entries: dict[str, dict[str, Any]]) -> None:
        self._loaded[route] = entries

    def _index_level(self) -> list[str]:
        return sorted({*self._index_inline, *self.index_hashes})

    @property
    def hashes(self) -> dict[str, str]:
        """Route -> the hash of its stored part (in a record with an index level, reading
        every index object not read yet)."""
        if self.index is not None:
            self._load_index(self._index_level())
        return self._hashes

    @property
    def routes(self) -> list[str]:
        """Every route (part) of the record."""
        return sorted({*self._inline, *self.hashes})

    def objects(self) -> set[str]:
        """The hashes of every stored object of the record: its parts and index objects."""
        return {*self.hashes.values(), *self.index_hashes.values()}

    def _check(self, route: str, data: bytes | str, place: str) -> dict[str, dict[str, Any]]:
        """Parse the part ``route`` references; every path in it must route to ``route`` or
        (a stored part shared by consecutive routes) to a route referencing the same part."""
        try:
            doc = json.loads(data)
            entries = {str(p): dict(e) for p, e in doc["datasets"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ManifestError(f"{place}: unreadable record part ({err!r})") from err
        part = self._hashes.get(route)
        for path, entry in entries.items():
            own = self.route(path)
            if own != route and (part is None or self._hashes.get(own) != part):
                raise ManifestError(f"{place}: holds {path!r}, which is not in part {route!r}")
            h = str(entry.get("manifest", ""))
            if len(h) != 64 or not set(h) <= _HEX:
                raise ManifestError(f"{place}: dataset {path!r} has no manifest hash")
        return entries

    def _check_index(self, iroute: str, data: bytes | str, place: str) -> dict[str, str]:
        """Parse the index object ``iroute`` references: route -> stored part hash, every
        route in it routing to ``iroute``."""
        try:
            refs = dict(json.loads(data)["refs"])
            routes = {str(k).removesuffix(".json"): _object_hash(v, place) for k, v in refs.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ManifestError(f"{place}: unreadable record index ({err!r})") from err
        for route in routes:
            if self.index_route(route) != iroute:
                raise ManifestError(f"{place}: routes {route!r}, which is not in {iroute!r}")
        return routes

    def _fetch(
        self,
        labels: dict[str, tuple[str, str | bytes]],
        check: Callable[[str, bytes | str, str], Any],
        kind: str,
        fresh: bool,
        bad: dict[str, tuple[str, str, bool]],
    ) -> dict[str, Any]:
        """Read and check objects: ``labels`` maps a name (route or index route) to
        ("inline", document) or ("stored", hash). Returns name -> checked content; what is
        missing, altered or refused goes to ``bad`` (label -> key, hash, missing)."""
        out: dict[str, Any] = {}
        stored: dict[str, str] = {}
        for name, (how, value) in labels.items():
            if how == "inline":
                try:
                    out[name] = check(name, value, self.where)
                except ManifestError as err:
                    bad[f"record {kind} {name}"] = ("release.json", "", False)
                    self._why[f"record {kind} {name}"] = str(err)
            elif not fresh and value in self._cache:
                out[name] = self._cache[value]
            else:
                stored[name] = str(value)
        if stored and self._read is None:
            raise ManifestError(f"{self.where}: the record's parts cannot be read (unbound)")
        read = self._read_fresh if fresh else self._read
        keys = list(dict.fromkeys(part_key(h) for h in stored.values()))
        got = read(keys) if keys and read else {}
        for name, h in stored.items():
            label, key = f"record {kind} {name}", part_key(h)
            data = got[key]
            if isinstance(data, FileNotFoundError):
                bad[label] = (key, h, True)
            elif isinstance(data, Exception):
                raise data
            elif hashlib.sha256(data).hexdigest() != h:
                bad[label] = (key, h, False)
            else:
                try:
                    out[name] = self._cache[h] = check(name, data, f"{self.where}, {key}")
                except ManifestError as err:
                    bad[label] = (key, h, False)
                    self._why[label] = str(err)
        return out

    def _index_errors(
        self, iroutes: list[str], fresh: bool, bad: dict[str, tuple[str, str, bool]]
    ) -> None:
        """Read the index objects ``iroutes`` not read yet (``fresh``: all of them again)."""
        if fresh:
            for ir in iroutes:
                for route in self._index_routes.pop(ir, []):
                    self._hashes.pop(route, None)
                    self._loaded.pop(route, None)
                self._cache.pop(self.index_hashes.get(ir, ""), None)
        todo = {
            ir: ("inline", self._index_inline[ir])
            if ir in self._index_inline
            else ("stored", self.index_hashes[ir])
            for ir in iroutes
            if ir not in self._index_routes
            and (ir in self._index_inline or ir in self.index_hashes)
        }
        for ir, routes in self._fetch(todo, self._check_index, "index", fresh, bad).items():
            self._hashes.update(routes)
            self._index_routes[ir] = sorted(routes)

    def _load_index(self, iroutes: list[str]) -> None:
        bad: dict[str, tuple[str, str, bool]] = {}
        self._index_errors(iroutes, False, bad)
        self._raise(bad)

    def errors(
        self, routes: list[str] | None = None, *, fresh: bool = False
    ) -> dict[str, tuple[str, str, bool]]:
        """Read ``routes`` (default: all) and the index objects that route to them; return
        ``"record part <route>"`` or ``"record index <index route>"`` -> (key, hash,
        missing) for the objects that are missing or fail their checks, instead of raising.
        ``fresh``: read every stored object again from the lake (what verify does), trusting
        nothing parsed before."""
        bad: dict[str, tuple[str, str, bool]] = {}
        if fresh:
            self._flat.clear()
        if self.index is not None:
            wanted_index = (
                self._index_level()
                if routes is None
                else sorted({self.index_route(r) for r in routes})
            )
            self._index_errors(wanted_index, fresh, bad)
            if routes is None:
                routes = sorted({r for ir in wanted_index for r in self._index_routes.get(ir, [])})
        wanted = self.routes if routes is None else routes
        if fresh:
            for r in wanted:
                if r in self._hashes:
                    self._loaded.pop(r, None)
                    self._cache.pop(self._hashes[r], None)
        todo: dict[str, tuple[str, str]] = {}
        for r in wanted:
            if r in self._loaded:
                continue
            if r in self._inline:
                todo[r] = ("inline", self._inline[r])
            elif r in self._hashes:
                todo[r] = ("stored", self._hashes[r])
        # a part shared by consecutive routes is read once: one name per hash
        first: dict[str, str] = {}
        for r, (how, value) in list(todo.items()):
            if how == "stored":
                if value in first:
                    del todo[r]
                else:
                    first[value] = r
        got = self._fetch(todo, self._check, "part", fresh, bad)
        for r in wanted:
            h = self._hashes.get(r)
            if r in got:
                self._loaded[r] = got[r]
            elif h is not None and h in first and first[h] in got:
                self._loaded[r] = got[first[h]]
            elif h is not None and h in first and f"record part {first[h]}" in bad:
                bad[f"record part {r}"] = bad[f"record part {first[h]}"]
        return bad

    def checked(self) -> list[str]:
        """The paths of the parts read and checked so far (after :meth:`errors`: every part
        that reads and checks), without reading anything."""
        return sorted({p for entries in self._loaded.values() for p in entries})

    def _raise(self, bad: dict[str, tuple[str, str, bool]]) -> None:
        if bad:
            label, (key, _, missing) = next(iter(bad.items()))
            if label in self._why:
                raise ManifestError(self._why.pop(label))
            what = "is missing from the lake" if missing else "does not match the record"
            name = label.split(" ", 2)[2]
            raise ManifestError(f"{self.where}: {label.rsplit(' ', 1)[0]} {key} ({name!r}) {what}")

    def _load(self, routes: list[str]) -> None:
        self._raise(self.errors(routes))

    def _known(self, route: str) -> bool:
        """Whether ``route`` is a part of the record (reading its index object if need be)."""
        if self.index is not None and route not in self._hashes:
            ir = self.index_route(route)
            if ir not in self._index_inline and ir not in self.index_hashes:
                return False
            self._load_index([ir])
        return route in self._inline or route in self._hashes

    def __getitem__(self, path: str) -> dict[str, Any]:
        entry = self._flat.get(path)  # after iterating: one dict lookup per path
        if entry is not None:
            return entry
        route = self.route(path)
        entries = self._loaded.get(route)  # a part read and checked before: no other work
        if entries is None:
            if not self._known(route):
                raise KeyError(path)
            self._load([route])
            entries = self._loaded[route]
        return entries[path]

    def __iter__(self) -> Iterator[str]:
        routes = self.routes
        self._load(routes)
        if len(self._flat) != self._count:  # what diff, GC and a head look up path by path
            for r in routes:
                self._flat.update(self._loaded[r])
        return iter(sorted(self._flat))

    def __len__(self) -> int:
        return self._count

    def under(self, prefix: str) -> list[str]:
        """Paths starting with ``prefix``, reading only the objects that can hold them."""

        def near(r: str) -> bool:
            return r.startswith(prefix) or prefix.startswith(r)

        if self.index is not None:
            self._load_index([ir for ir in self._index_level() if near(ir)])
        routes = [r for r in {*self._inline, *self._hashes} if near(r)]
        self._load(routes)
        return sorted({p for r in routes for p in self._loaded[r] if p.startswith(prefix)})


def _object_hash(value: Any, place: str) -> str:
    """The sha256 a stored-object reference (``[url]``, named ``<sha256>.json``) names."""
    h = str(value[0]).rsplit("/", 1)[-1].removesuffix(".json") if isinstance(value, list) else ""
    if len(h) != 64 or not set(h) <= _HEX:
        raise ManifestError(f"{place}: reference {value!r} is not a stored record object")
    return h


def record_root(doc: dict[str, Any]) -> str:
    """The root hash of a format-2 or 3 release record: sha256 over its canonical JSON
    without ``root`` itself, so it covers every published field (name, created, notes, each
    dataset's manifest, kind and nbytes, or in format 3 each part's hash or inline content,
    each table's object, rows and columns)."""
    body = {k: v for k, v in doc.items() if k != "root"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ReleaseRecord:
    """What ``releases/<name>/release.json`` holds (written last, never changed).

    ``root`` is what ``name@root`` pins: the hash of the whole record (:func:`record_root`)
    for formats 2 and 3, of the content only (:attr:`content_root`) for format 1.

    Format 3 (every record published now) keeps its datasets in content-addressed parts
    (``records/<2 hex>/<sha256>.json``, at most :data:`PART_MAX` datasets each, grouped by
    :func:`route_of` at a width per family, :func:`route_widths`); the record holds each
    part's hash, so the root covers them (a Merkle tree). When the parts are stored, the
    record routes to them through index objects (``<index route>.json`` -> an object
    mapping ``<route>.json`` to parts, at most :data:`INDEX_MAX` routes each, inline while
    together small; :func:`index_widths`), so a release that changes one dataset stores one
    new part, one index object and a record of a few kB, not the size of the release. The
    record, its index objects and parts are also fsspec reference files (``refs``; all parts
    inline when together small), which the catalog's by-id entries follow with plain intake.
    ``datasets`` is then a :class:`PartitionedDatasets`, read part by part. Formats 1 and 2
    hold every dataset inline.
    """

    name: str
    root: str
    created: str
    abo_lake_version: str
    notes: str
    datasets: Mapping[str, dict[str, Any]]  # path -> {"manifest": hash, "kind", "nbytes"}
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"object", "rows"}
    format: int = 1
    refs: dict[str, Any] = field(default_factory=dict)  # format 3: <route>.json -> part
    summary: dict[str, Any] = field(default_factory=dict)  # format 3: count, nbytes, route

    @classmethod
    def sealed(cls, **fields: Any) -> ReleaseRecord:
        """A format-2 record of ``fields`` (all but ``root`` and ``format``), root computed."""
        record = cls(root="", format=2, **fields)
        return replace(record, root=record_root(record._doc()))

    @classmethod
    def partitioned(
        cls,
        *,
        datasets: Mapping[str, dict[str, Any]],
        url_of: Callable[[str], str],
        where: str,
        **fields: Any,
    ) -> tuple[ReleaseRecord, dict[str, bytes]]:
        """A format-3 record of ``datasets`` and ``fields`` (name, created, abo_lake_version,
        notes, tables), and the part objects to store before it (key -> bytes).

        ``url_of`` gives a storage key's URL (parts and manifests are referenced by URL, as
        manifests reference chunks, so plain fsspec follows them).
        """
        widths = route_widths(list(datasets))
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for path in sorted(datasets):
            route = route_at(path, widths)
            groups.setdefault(route, {})[path] = dict(datasets[path])
        data = {route: part_bytes(entries, url_of) for route, entries in groups.items()}
        refs: dict[str, Any] = {}
        objects: dict[str, bytes] = {}
        index = None
        if sum(map(len, data.values())) <= PART_INLINE_MAX:
            refs = {f"{route}.json": part.decode() for route, part in data.items()}
        else:
            index = index_widths(list(groups), widths)
            docs: dict[str, dict[str, Any]] = {}
            part_of: dict[str, str] = {}  # route -> its stored part's hash
            for shared in _shared_parts(groups, lambda r: route_at(r, index)):
                entries = {p: e for r in shared for p, e in groups[r].items()}
                part = part_bytes(entries, url_of)
                h = hashlib.sha256(part).hexdigest()
                objects[part_key(h)] = part
                part_of |= dict.fromkeys(shared, h)
                doc = docs.setdefault(route_at(shared[0], index), {})
                doc.update({f"{r}.json": [url_of(part_key(h))] for r in shared})
            index_data = {ir: _canonical({"version": 1, "refs": d}) for ir, d in docs.items()}
            if sum(map(len, index_data.values())) <= INDEX_INLINE_MAX:
                refs = {f"{ir}.json": doc.decode() for ir, doc in index_data.items()}
            else:
                for ir, doc in index_data.items():
                    key = part_key(hashlib.sha256(doc).hexdigest())
                    objects[key] = doc
                    refs[f"{ir}.json"] = [url_of(key)]
        summary = {
            "count": len(datasets),
            "nbytes": sum(int(e.get("nbytes", 0)) for e in datasets.values()),
            "route": widths,
            **({"index": index} if index is not None else {}),
        }
        view = PartitionedDatasets(refs, widths, len(datasets), where, index)
        if index is not None:  # the publisher knows every index object's content
            for route in sorted(groups):
                view._index_routes.setdefault(view.index_route(route), []).append(route)
            view._hashes.update(part_of)
        by_part: dict[str, dict[str, dict[str, Any]]] = {}
        for route, entries in groups.items():  # a shared part's routes see all its entries
            h = view._hashes.get(route)
            view._preload(route, by_part.setdefault(h, {}) if h else entries)
            if h:
                by_part[h].update(entries)
        record = cls(root="", format=3, datasets=view, refs=refs, summary=summary, **fields)
        return replace(record, root=record_root(record._doc())), objects

    @property
    def pin(self) -> str:
        """``name@root`` with a 12-hex root: enough to pin a study to this exact content."""
        return f"{self.name}@{self.root[:12]}"

    @property
    def logical_bytes(self) -> int:
        """The sum of the datasets' ``nbytes`` (format 3: without reading any part)."""
        if self.format == 3:
            return int(self.summary["nbytes"])
        return sum(int(d.get("nbytes", 0)) for d in self.datasets.values())

    @property
    def content_root(self) -> str:
        """The hash over the datasets' manifests and the tables' objects only: equal for
        equal content whatever the name, time or notes (what a rerun is compared by)."""
        return root_hash(
            {p: d["manifest"] for p, d in self.datasets.items()},
            {n: t["object"] for n, t in self.tables.items()},
        )

    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "root": self.root,
            "created": self.created,
            "abo_lake_version": self.abo_lake_version,
            "notes": self.notes,
            "datasets": self.summary if self.format == 3 else self.datasets,
            "tables": self.tables,
        }
        if self.format != 1:
            doc["format"] = self.format
        if self.format == 3:
            doc["version"] = 1
            doc["refs"] = self.refs
        return doc

    def to_bytes(self) -> bytes:
        if self.format == 3:
            return json.dumps(self._doc(), sort_keys=True, separators=(",", ":")).encode()
        return json.dumps(self._doc(), indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> ReleaseRecord:
        """Parse and check a release record (its root hash must match what it covers)."""
        try:
            doc = json.loads(data)
            fmt = int(doc.get("format", 1))
            fields: dict[str, Any] = {
                "name": str(doc["name"]),
                "root": str(doc["root"]),
                "created": str(doc["created"]),
                "abo_lake_version": str(doc.get("abo_lake_version", "")),
                "notes": str(doc.get("notes", "")),
                "tables": {str(k): dict(v) for k, v in (doc.get("tables") or {}).items()},
                "format": fmt,
            }
            if fmt == 3:
                summary = {k: int(doc["datasets"][k]) for k in ("count", "nbytes")}
                summary["route"] = {str(k): int(v) for k, v in doc["datasets"]["route"].items()}
                index = doc["datasets"].get("index")
                if index is not None:
                    summary["index"] = {str(k): int(v) for k, v in index.items()}
                refs = dict(doc["refs"])
                fields |= {
                    "refs": refs,
                    "summary": summary,
                    "datasets": PartitionedDatasets(
                        refs, summary["route"], summary["count"], where, summary.get("index")
                    ),
                }
            else:
                fields["datasets"] = {str(k): dict(v) for k, v in doc["datasets"].items()}
            record = cls(**fields)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise ManifestError(f"{where}: unreadable release record ({err!r})") from err
        if record.format in (2, 3):
            allowed = _RECORD_FIELDS_3 if record.format == 3 else _RECORD_FIELDS
            unknown = sorted(set(doc) - allowed)
            if unknown:
                raise ManifestError(f"{where}: unknown release record field(s) {unknown}")
            expected, what = record_root(doc), "its fields"
        elif record.format == 1:
            expected, what = record.content_root, "its datasets"
        else:
            raise ManifestError(f"{where}: unknown release record format {record.format}")
        if expected != record.root:
            raise ManifestError(
                f"{where}: root hash {record.root[:12]} does not match {what} "
                f"({expected[:12]}); the record was altered"
            )
        return record


@dataclass(frozen=True)
class ReleaseHead:
    """What ``releases/<name>/head.json`` holds: a few hundred bytes that let a lake list
    its releases and sum their sizes without reading every full record.

    Written just after the record by the publisher that won the name (and again by
    :meth:`abo_lake.lake.Lake.repair` if missing or altered). ``record`` is the sha256 of the
    record's exact bytes, so a listing checks a record by hashing it, without parsing it;
    ``seal`` is the sha256 over the head's other fields (an altered head is not trusted: the
    record is then checked on its own). ``summary`` is what :meth:`abo_lake.lake.Lake.stats`
    needs: ``datasets``, ``logical_bytes`` (sum of the datasets' ``nbytes``), ``objects``
    and ``object_bytes`` (unique chunk objects the release references and their stored
    bytes), ``previous`` (the release created just before, or None) and ``new_objects`` /
    ``new_object_bytes`` (those not referenced by ``previous``).
    """

    name: str
    created: str
    root: str
    record: str
    summary: dict[str, Any]
    seal: str = ""

    def _body(self) -> dict[str, Any]:
        return {
            "format": 1,
            "name": self.name,
            "created": self.created,
            "root": self.root,
            "record": self.record,
            "summary": self.summary,
        }

    @classmethod
    def of(cls, record: ReleaseRecord, record_bytes: bytes, summary: dict) -> ReleaseHead:
        """The sealed head of ``record`` (stored as ``record_bytes``)."""
        head = cls(
            record.name,
            record.created,
            record.root,
            hashlib.sha256(record_bytes).hexdigest(),
            dict(summary),
        )
        return replace(head, seal=_seal(head._body()))

    def to_bytes(self) -> bytes:
        return json.dumps({**self._body(), "seal": self.seal}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> ReleaseHead:
        """Parse a head and check its seal; ManifestError naming ``where`` otherwise."""
        try:
            doc = json.loads(data)
            head = cls(
                name=str(doc["name"]),
                created=str(doc["created"]),
                root=str(doc["root"]),
                record=str(doc["record"]),
                summary=dict(doc["summary"]),
                seal=str(doc["seal"]),
            )
            body = {k: v for k, v in doc.items() if k != "seal"}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            raise ManifestError(f"{where}: unreadable release head ({err!r})") from err
        if doc.get("format") != 1 or _seal(body) != head.seal:
            raise ManifestError(f"{where}: release head does not match its seal; altered")
        return head

    def matches(self, record_bytes: bytes) -> bool:
        """Whether ``record_bytes`` are exactly the record this head was sealed for."""
        return hashlib.sha256(record_bytes).hexdigest() == self.record


def _seal(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()
