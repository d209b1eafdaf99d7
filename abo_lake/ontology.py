"""The CCF structure ontology: ids, acronyms, ancestors, descendants and colours.

An :class:`Ontology` is built in memory from a ``ccf_structures`` Dataset (kind of
:mod:`abo_lake.sources.ccf`, ``ALLEN_DATA.md`` §4; a few hundred kB): it resolves a structure
given by id or acronym (exact, else case-insensitive, with close matches in the error), walks
the tree through the ragged ``structure_id_path`` (:meth:`Ontology.ancestor_ids`,
:meth:`Ontology.descendant_ids`) and gives AllenSDK's colormap and acronym map. Methods named
as AllenSDK's ``StructureTree`` (``ancestor_ids``, ``get_structures_by_id``, ``nodes``, ...)
take its arguments and give its order: ancestors self first up to the root, descendants depth
first, a list of lists for a list of structures. The functions
:func:`structure_id`, :func:`ancestor_ids`, :func:`descendant_ids` and :func:`rgb_triplet` take
either an :class:`Ontology` or the Dataset; :mod:`abo_lake.ccf` builds its masks and unionizes
on top of this module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import xarray as xr

from abo_lake.errors import SchemaError, StructureNotFoundError
from abo_lake.scheduling import eager_scheduler
from abo_lake.schema import validate

__all__ = [
    "Ontology",
    "ancestor_ids",
    "descendant_ids",
    "rgb_triplet",
    "structure_id",
]

#: One structure (id or acronym) or a list of them, as AllenSDK's ``node_ids``.
Structures = int | str | Iterable[int | str]


class Ontology:
    """The CCF structure tree, in memory, from a ``ccf_structures`` Dataset.

    Parameters
    ----------
    structures
        The ontology Dataset (``ccf/<version>/structures``); it is loaded (a few hundred kB).

    Examples
    --------
    >>> onto = Ontology(rel.open("ccf/ccf_2017/structures"))  # doctest: +SKIP
    >>> onto.descendant_ids("VISp")[:3]  # doctest: +SKIP
    [385, 593, 821]
    """

    def __init__(self, structures: xr.Dataset) -> None:
        validate(structures, "ccf_structures")
        if "structure_id_path" not in structures or "structure_id_path_index" not in structures:
            raise SchemaError("the ontology Dataset has no ragged 'structure_id_path' (+ _index)")
        # one read of every variable (not one per variable), on the eager analyses' scheduler
        structures = structures.compute(scheduler=eager_scheduler())
        self.ids = np.asarray(structures["structure_id"].values, dtype=np.int64)
        self.acronyms = np.asarray(structures["acronym"].values).astype(str)
        self.names = np.asarray(structures["name"].values).astype(str)
        flat = np.asarray(structures["structure_id_path"].values, dtype=np.int64)
        ends = np.asarray(structures["structure_id_path_index"].values, dtype=np.int64)
        self._paths = np.split(flat, ends[:-1])
        self._owner = np.repeat(np.arange(self.ids.size), np.diff(ends, prepend=0))
        self._flat = flat
        if "rgb_triplet" in structures:
            self.rgb = np.asarray(structures["rgb_triplet"].values, dtype=np.uint8)
        else:
            self.rgb = np.full((self.ids.size, 3), 255, dtype=np.uint8)
        self._row = {int(i): r for r, i in enumerate(self.ids)}
        self._by_acronym = {str(a): int(i) for a, i in zip(self.acronyms, self.ids)}
        self._by_lower = {k.lower(): v for k, v in self._by_acronym.items()}
        self._extra: dict[str, list[Any]] = {}  # AllenSDK node fields beyond the arrays above
        for name in ("graph_id", "graph_order"):
            if name in structures:
                self._extra[name] = np.asarray(structures[name].values).tolist()
        if "structure_set_ids" in structures and "structure_set_ids_index" in structures:
            sets = np.asarray(structures["structure_set_ids"].values, dtype=np.int64)
            set_ends = np.asarray(structures["structure_set_ids_index"].values, dtype=np.int64)
            self._extra["structure_set_ids"] = [a.tolist() for a in np.split(sets, set_ends[:-1])]

    def __repr__(self) -> str:
        root = self.acronym(int(self._flat[0])) if self._flat.size else "?"
        return f"<abo_lake.ccf.Ontology · {self.ids.size} structures · root {root!r}>"

    def __len__(self) -> int:
        return int(self.ids.size)

    def __contains__(self, structure: object) -> bool:
        try:
            self.structure_id(structure)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def structure_id(self, structure: int | str) -> int:
        """The id of a structure given by id or acronym (exact, else case-insensitive).

        Raises
        ------
        StructureNotFoundError
            With up to five close acronyms.
        """
        if isinstance(structure, str):
            sid = self._by_acronym.get(structure, self._by_lower.get(structure.lower()))
            if sid is not None:
                return sid
            near = difflib.get_close_matches(structure, list(self._by_acronym), n=5, cutoff=0.5)
            hint = f"; did you mean {near}?" if near else ""
            raise StructureNotFoundError(
                f"no structure with acronym {structure!r} in the ontology "
                f"({self.ids.size} structures){hint}"
            )
        if isinstance(structure, bool) or not isinstance(structure, int | np.integer):
            raise TypeError(f"a structure is an int id or a str acronym; got {structure!r}")
        if int(structure) not in self._row:
            raise StructureNotFoundError(
                f"no structure with id {int(structure)} in the ontology ({self.ids.size} "
                f"structures; e.g. {self.ids[:5].tolist()})"
            )
        return int(structure)

    def structure_ids(self, structures: int | str | Iterable[int | str]) -> list[int]:
        """Ids of one structure or a list of structures (ids or acronyms)."""
        if isinstance(structures, str | int | np.integer):
            structures = [structures]
        return [self.structure_id(s) for s in structures]

    def _r(self, structure: int | str) -> int:
        return self._row[self.structure_id(structure)]

    def acronym(self, structure: int | str) -> str:
        """The acronym of a structure."""
        return str(self.acronyms[self._r(structure)])

    def name(self, structure: int | str) -> str:
        """The full name of a structure."""
        return str(self.names[self._r(structure)])

    def ancestor_ids(self, structures: Structures) -> list[int] | list[list[int]]:
        """Self first, then the parent, up to the root (AllenSDK ``ancestor_ids``).

        ``structures`` is one structure (id or acronym: one list) or a list of them, as
        AllenSDK's ``StructureTree.ancestor_ids(node_ids)`` (a list of lists).
        """
        return self._each(structures, lambda sid: self._paths[self._row[sid]][::-1].tolist())

    def parent_id(self, structure: int | str) -> int | None:
        """The parent's id, or None for the root."""
        path = self._paths[self._r(structure)]
        return int(path[-2]) if path.size > 1 else None

    def parent_ids(self, structures: Iterable[int | str]) -> list[int | None]:
        """Each structure's parent id, None for the root (AllenSDK ``parent_ids``)."""
        return [self.parent_id(s) for s in structures]

    def descendant_ids(self, structures: Structures) -> list[int] | list[list[int]]:
        """The structure, then its descendants depth first (AllenSDK ``descendant_ids``).

        AllenSDK's order: each structure before its children, children in the ontology's row
        order. ``structures`` is one structure (one list) or a list of them (a list of lists).
        """
        return self._each(structures, self._subtree)

    def _subtree(self, sid: int) -> list[int]:
        rows = np.unique(self._owner[self._flat == sid])
        depth = self._paths[self._row[sid]].size - 1
        keys = [[self._row[int(i)] for i in self._paths[r][depth:]] for r in rows]
        return [int(self.ids[rows[k]]) for k in sorted(range(rows.size), key=keys.__getitem__)]

    def child_ids(self, structures: Structures) -> list[int] | list[list[int]]:
        """The direct children in the ontology's row order (AllenSDK ``child_ids``); one list
        for one structure, a list of lists for a list of them."""

        def children(sid: int) -> list[int]:
            return [i for i in self._subtree(sid) if self.parent_id(i) == sid]

        return self._each(structures, children)

    def structure_descends_from(self, child_id: int | str, parent_id: int | str) -> bool:
        """Whether ``parent_id`` is ``child_id`` or one of its ancestors (AllenSDK's name)."""
        return self.structure_id(parent_id) in self._paths[self._r(child_id)].tolist()

    def _each(self, structures: Structures, fn: Callable[[int], list[int]]) -> Any:
        """``fn`` of one structure's id, or the list of ``fn`` over a list of structures."""
        if isinstance(structures, str | int | np.integer):
            return fn(self.structure_id(structures))
        return [fn(sid) for sid in self.structure_ids(structures)]

    def rgb_triplet(self, structure: int | str) -> tuple[int, int, int]:
        """The structure's colour as (r, g, b) in 0..255."""
        r, g, b = self.rgb[self._r(structure)].tolist()
        return (r, g, b)

    def colormap(self) -> dict[int, list[int]]:
        """id -> [r, g, b] for every structure (AllenSDK ``get_colormap``)."""
        return {int(i): c for i, c in zip(self.ids, self.rgb.tolist())}

    def id_acronym_map(self) -> dict[str, int]:
        """acronym -> id (AllenSDK ``get_id_acronym_map``)."""
        return dict(self._by_acronym)

    def name_map(self) -> dict[int, str]:
        """id -> name (AllenSDK ``get_name_map``)."""
        return {int(i): str(n) for i, n in zip(self.ids, self.names)}

    def ancestor_id_map(self) -> dict[int, list[int]]:
        """id -> its ancestor ids, self first (AllenSDK ``get_ancestor_id_map``)."""
        return {int(i): p[::-1].tolist() for i, p in zip(self.ids, self._paths)}

    def get_colormap(self) -> dict[int, list[int]]:
        """AllenSDK's name of :meth:`colormap`."""
        return self.colormap()

    def get_id_acronym_map(self) -> dict[str, int]:
        """AllenSDK's name of :meth:`id_acronym_map`."""
        return self.id_acronym_map()

    def get_name_map(self) -> dict[int, str]:
        """AllenSDK's name of :meth:`name_map`."""
        return self.name_map()

    def get_ancestor_id_map(self) -> dict[int, list[int]]:
        """AllenSDK's name of :meth:`ancestor_id_map`."""
        return self.ancestor_id_map()

    def _node(self, row: int) -> dict[str, Any]:
        """AllenSDK's cleaned structure dict of one row."""
        node = {
            "acronym": str(self.acronyms[row]),
            "id": int(self.ids[row]),
            "name": str(self.names[row]),
            "rgb_triplet": self.rgb[row].tolist(),
            "structure_id_path": self._paths[row].tolist(),
        }
        node.update({k: v[row] for k, v in self._extra.items()})
        return node

    def get_structures_by_id(self, structure_ids: Iterable[int]) -> list[dict[str, Any] | None]:
        """AllenSDK's structure dicts, one per id (None for an id not in the ontology)."""
        return [
            self._node(self._row[int(i)]) if int(i) in self._row else None for i in structure_ids
        ]

    def get_structures_by_acronym(self, acronyms: Iterable[str]) -> list[dict[str, Any]]:
        """AllenSDK's structure dicts, one per acronym (KeyError for an unknown one)."""
        return [self._node(self._r(a)) for a in acronyms]

    def get_structures_by_name(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """AllenSDK's structure dicts, one per full name (KeyError for an unknown one)."""
        by_name = {str(n): r for r, n in enumerate(self.names)}
        names = list(names)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise StructureNotFoundError(f"no structure named {missing[0]!r} in the ontology")
        return [self._node(by_name[n]) for n in names]

    def get_structures_by_set_id(self, structure_set_ids: Iterable[int]) -> list[dict[str, Any]]:
        """AllenSDK's structure dicts of the structures in any of these structure sets, in row
        order.

        Raises
        ------
        SchemaError
            If the ontology was converted without ``structure_set_ids``.
        """
        if "structure_set_ids" not in self._extra:
            raise SchemaError(
                "this ontology has no structure_set_ids (convert a structures.json that "
                "lists them, e.g. from the Allen API's structure graph 1)"
            )
        wanted = {int(i) for i in structure_set_ids}
        sets = self._extra["structure_set_ids"]
        return [self._node(r) for r in range(self.ids.size) if wanted & set(sets[r])]

    # AllenSDK SimpleTree's node-dict walks (lists in, lists out, as AllenSDK)
    def node_ids(self) -> list[int]:
        """Every structure id, in row order (AllenSDK ``node_ids``)."""
        return self.ids.tolist()

    def nodes(self, structures: Iterable[int | str] | None = None) -> list[dict[str, Any] | None]:
        """Structure dicts (all, by default); None for an unknown id (AllenSDK ``nodes``)."""
        if structures is None:
            return [self._node(r) for r in range(self.ids.size)]

        def one(s: int | str | None) -> dict[str, Any] | None:
            if isinstance(s, str):
                return self._node(self._r(s))
            return None if s is None or int(s) not in self._row else self._node(self._row[int(s)])

        return [one(s) for s in structures]

    def parents(self, structures: Iterable[int | str]) -> list[dict[str, Any] | None]:
        """Each structure's parent dict, None for the root (AllenSDK ``parents``)."""
        return self.nodes(self.parent_ids(structures))  # type: ignore[arg-type]

    def children(self, structures: Iterable[int | str]) -> list[list[dict[str, Any] | None]]:
        """Each structure's child dicts (AllenSDK ``children``)."""
        return [self.nodes(ids) for ids in self.child_ids(list(structures))]

    def ancestors(self, structures: Iterable[int | str]) -> list[list[dict[str, Any] | None]]:
        """Each structure's ancestor dicts, self first (AllenSDK ``ancestors``)."""
        return [self.nodes(ids) for ids in self.ancestor_ids(list(structures))]

    def descendants(self, structures: Iterable[int | str]) -> list[list[dict[str, Any] | None]]:
        """Each structure's descendant dicts, self first (AllenSDK ``descendants``)."""
        return [self.nodes(ids) for ids in self.descendant_ids(list(structures))]

    def filter_nodes(self, criterion: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The structure dicts for which ``criterion`` is true (AllenSDK ``filter_nodes``)."""
        return [n for n in self.nodes() if n is not None and criterion(n)]

    def value_map(
        self, from_fn: Callable[[dict[str, Any]], Any], to_fn: Callable[[dict[str, Any]], Any]
    ) -> dict[Any, Any]:
        """``from_fn(node) -> to_fn(node)`` over every structure (AllenSDK ``value_map``).

        Raises
        ------
        ValueError
            If ``from_fn`` is not unique across structures (AllenSDK: RuntimeError).
        """
        out: dict[Any, Any] = {}
        for node in self.nodes():
            key = from_fn(node)  # type: ignore[arg-type]
            if key in out:
                raise ValueError(f"from_fn is not unique across structures: {key!r} repeats")
            out[key] = to_fn(node)  # type: ignore[arg-type]
        return out

    def _selection(self, structures: Iterable[int], descendants: bool) -> np.ndarray:
        """Sorted unique ids of ``structures`` (and their descendants)."""
        ids = np.asarray(list(structures), dtype=np.int64)
        if descendants:
            ids = self.ids[np.unique(self._owner[np.isin(self._flat, ids)])]
        return np.unique(ids)

    def _ancestor_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(ancestor row, descendant row) for every structure and each id on its path."""
        order = np.argsort(self.ids)
        return order[np.searchsorted(self.ids, self._flat, sorter=order)], self._owner

    def _propagate_sum(self, values: np.ndarray) -> np.ndarray:
        """Per-structure totals over each subtree of per-structure ``values`` (ontology order)."""
        up, down = self._ancestor_pairs()
        return np.bincount(up, weights=values[down], minlength=self.ids.size)

    def _propagate_max(self, values: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-structure subtree maximum of ``values`` and its ``at`` (lowest ``at`` on ties)."""
        up, down = self._ancestor_pairs()
        order = np.lexsort((at[down], -values[down], up))
        first = np.ones(order.size, dtype=bool)
        first[1:] = up[order][1:] != up[order][:-1]
        best = np.full(self.ids.size, -np.inf)
        where = np.full(self.ids.size, np.inf)
        best[up[order][first]] = values[down][order][first]
        where[up[order][first]] = at[down][order][first]
        return best, where


def _ontology(ontology: Ontology | xr.Dataset) -> Ontology:
    if isinstance(ontology, Ontology):
        return ontology
    if isinstance(ontology, xr.Dataset):
        return Ontology(ontology)
    raise TypeError(
        "ontology must be a 'ccf_structures' Dataset (rel.open('ccf/<version>/structures')) or "
        f"an abo_lake.ccf.Ontology; got {type(ontology).__name__}"
    )


def structure_id(ontology: Ontology | xr.Dataset, structure: int | str) -> int:
    """The id of a structure given by id or acronym; KeyError with close matches."""
    return _ontology(ontology).structure_id(structure)


def ancestor_ids(
    ontology: Ontology | xr.Dataset, structures: Structures
) -> list[int] | list[list[int]]:
    """Self-to-root ids of a structure (AllenSDK's order), or of each of a list of them."""
    return _ontology(ontology).ancestor_ids(structures)


def descendant_ids(
    ontology: Ontology | xr.Dataset, structures: Structures
) -> list[int] | list[list[int]]:
    """A structure then its descendants, depth first, or that of each of a list of them."""
    return _ontology(ontology).descendant_ids(structures)


def rgb_triplet(ontology: Ontology | xr.Dataset, structure: int | str) -> tuple[int, int, int]:
    """A structure's (r, g, b) colour."""
    return _ontology(ontology).rgb_triplet(structure)
