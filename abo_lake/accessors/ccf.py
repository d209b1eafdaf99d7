"""The ``.ccf`` accessor: CCF volumes, the ontology and connectivity experiments.

Registered on Datasets of kind ``ccf_volume``, ``ccf_structures`` or
``connectivity_experiment``, and on the multiscale ``ccf_volume`` DataTree. Thin: it checks the
kind and delegates to :mod:`abo_lake.ccf`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import xarray as xr

from abo_lake import ccf
from abo_lake.errors import SchemaError
from abo_lake.kinds import kinds_for
from abo_lake.schema import kind_of, validate

__all__ = ["CCFAccessor", "CCFTreeAccessor"]

_KINDS = kinds_for("ccf")  # ccf_volume, ccf_structures, connectivity_experiment
Structure = int | str


def _kind(ds: xr.Dataset) -> str:
    recorded = kind_of(ds)
    if recorded == "ccf_volume" and not ds.dims and "ome" in ds.attrs:
        levels = [
            d["path"].split("/")[0]
            for m in ds.attrs["ome"].get("multiscales", [])[:1]
            for d in m.get("datasets", [])
        ]
        raise SchemaError(
            f"{ds.attrs.get('abo_lake_dataset', 'this dataset')} is a multiscale group with "
            f"no voxels at its root: pick a level, e.g. rel.open(path, group={levels[0]!r}) "
            f"or rel.open_datatree(path).ccf.level(<µm>); levels: {levels}"
            if levels
            else "a multiscale group with no voxels at its root: pick a level"
        )
    if recorded in _KINDS:
        validate(ds, recorded)
        return recorded
    if recorded is None:
        for kind in _KINDS:
            try:
                validate(ds, kind)
            except SchemaError:
                continue
            return kind
    raise SchemaError(
        f".ccf needs a {' / '.join(map(repr, _KINDS))} Dataset (rel.open('ccf/<version>/"
        f"annotation', group='25um'), 'ccf/<version>/structures' or 'connectivity/experiment/"
        f"<id>'); this one is {recorded!r} with variables {list(ds.data_vars)[:10]}"
    )


@xr.register_dataset_accessor("ccf")
class CCFAccessor:
    """CCF analyses on an annotation level, the ontology or a connectivity experiment.

    Examples
    --------
    >>> ann = rel.open("ccf/ccf_2017/annotation", group="25um")  # doctest: +SKIP
    >>> onto = rel.open("ccf/ccf_2017/structures")  # doctest: +SKIP
    >>> ann.ccf.structure_mask("VISp", ontology=onto)  # doctest: +SKIP
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds
        self._kind = _kind(ds)

    def __repr__(self) -> str:
        ds = self._ds
        if self._kind == "ccf_structures":
            return f"<.ccf ontology · {ds.sizes['structure_id']} structures>"
        grid = "×".join(str(ds.sizes[d]) for d in ("ap", "dv", "lr"))
        res = ccf.resolution_um(ds)
        if self._kind == "ccf_volume":
            return f"<.ccf volume {list(ds.data_vars)} · {grid} voxels at {res:g} µm>"
        exp = ds.attrs.get("experiment_id", ds.attrs.get("id", "?"))
        return f"<.ccf connectivity experiment {exp} · {grid} voxels at {res:g} µm>"

    def _need(self, kind: str, what: str) -> None:
        if self._kind != kind:
            raise SchemaError(f".ccf.{what} needs a {kind!r} Dataset; this is a {self._kind!r}")

    # volumes
    @property
    def resolution_um(self) -> float:
        """Voxel size in µm."""
        return ccf.resolution_um(self._ds)

    def structure_mask(
        self,
        structure: Structure | Sequence[Structure],
        *,
        ontology: ccf.Ontology | xr.Dataset,
        descendants: bool = True,
        hemisphere_id: int = 3,
    ) -> xr.DataArray:
        """Lazy bool mask of a structure; see :func:`abo_lake.ccf.structure_mask`."""
        self._need("ccf_volume", "structure_mask")
        return ccf.structure_mask(
            self._ds,
            structure,
            ontology=ontology,
            descendants=descendants,
            hemisphere_id=hemisphere_id,
        )

    def make_structure_mask(
        self,
        structure_ids: Structure | Sequence[Structure],
        direct_only: bool = False,
        *,
        ontology: ccf.Ontology | xr.Dataset,
    ) -> xr.DataArray:
        """AllenSDK's ``ReferenceSpace.make_structure_mask``: uint8, lazy; see
        :func:`abo_lake.ccf.make_structure_mask`."""
        self._need("ccf_volume", "make_structure_mask")
        return ccf.make_structure_mask(self._ds, structure_ids, direct_only, ontology=ontology)

    def many_structure_masks(
        self,
        structure_ids: Sequence[Structure],
        output_cb: Callable[[Structure, Callable[[], xr.DataArray]], Any] | None = None,
        direct_only: bool = False,
        *,
        ontology: ccf.Ontology | xr.Dataset,
    ) -> Iterator[Any]:
        """AllenSDK's ``ReferenceSpace.many_structure_masks`` generator; see
        :func:`abo_lake.ccf.many_structure_masks`."""
        self._need("ccf_volume", "many_structure_masks")
        return ccf.many_structure_masks(
            self._ds, structure_ids, output_cb, direct_only, ontology=ontology
        )

    def structure_at(self, points_um: Any) -> xr.DataArray:
        """Structure ids at (ap, dv, lr) µm points; see :func:`abo_lake.ccf.structure_at`."""
        self._need("ccf_volume", "structure_at")
        return ccf.structure_at(self._ds, points_um)

    def voxel_counts(
        self,
        *,
        ontology: ccf.Ontology | xr.Dataset | None = None,
        descendants: bool = False,
        hemisphere_id: int = 3,
    ) -> pd.Series:
        """Voxels per structure; see :func:`abo_lake.ccf.voxel_counts`."""
        self._need("ccf_volume", "voxel_counts")
        return ccf.voxel_counts(
            self._ds, ontology=ontology, descendants=descendants, hemisphere_id=hemisphere_id
        )

    # ontology
    @property
    def ontology(self) -> ccf.Ontology:
        """The structure tree in memory (:class:`abo_lake.ccf.Ontology`)."""
        self._need("ccf_structures", "ontology")
        return ccf.Ontology(self._ds)

    def structure_id(self, structure: Structure) -> int:
        """Id of a structure given by id or acronym."""
        return ccf.structure_id(self.ontology, structure)

    def ancestor_ids(
        self, structures: Structure | Sequence[Structure]
    ) -> list[int] | list[list[int]]:
        """Self-to-root ids (AllenSDK's order); a list of lists for a list of structures."""
        return ccf.ancestor_ids(self.ontology, structures)

    def descendant_ids(
        self, structures: Structure | Sequence[Structure]
    ) -> list[int] | list[list[int]]:
        """A structure then its descendants, depth first (AllenSDK's order)."""
        return ccf.descendant_ids(self.ontology, structures)

    def rgb_triplet(self, structure: Structure) -> tuple[int, int, int]:
        """A structure's (r, g, b) colour."""
        return ccf.rgb_triplet(self.ontology, structure)

    # connectivity
    def direct_unionize(
        self,
        *,
        annotation: xr.Dataset | xr.DataTree | xr.DataArray,
        ontology: ccf.Ontology | xr.Dataset,
    ) -> xr.Dataset:
        """Lazy per-label sums; see :func:`abo_lake.ccf.direct_unionize`."""
        self._need("connectivity_experiment", "direct_unionize")
        return ccf.direct_unionize(self._ds, annotation=annotation, ontology=ontology)

    def unionize(
        self,
        is_injection: bool | None = None,
        structure_ids: Sequence[Structure] | None = None,
        include_descendants: bool = False,
        hemisphere_ids: Sequence[int] | None = None,
        *,
        annotation: xr.Dataset | xr.DataTree | xr.DataArray,
        ontology: ccf.Ontology | xr.Dataset,
    ) -> pd.DataFrame:
        """AllenSDK structure unionize records, filters in ``get_structure_unionizes``' order;
        see :func:`abo_lake.ccf.unionize`."""
        self._need("connectivity_experiment", "unionize")
        return ccf.unionize(
            self._ds,
            is_injection,
            structure_ids,
            include_descendants,
            hemisphere_ids,
            annotation=annotation,
            ontology=ontology,
        )


@xr.register_datatree_accessor("ccf")
class CCFTreeAccessor:
    """``.ccf`` on a multiscale ``ccf_volume`` DataTree: pick a level, then as on a Dataset."""

    def __init__(self, tree: xr.DataTree) -> None:
        if kind_of(tree) not in (None, "ccf_volume"):
            raise SchemaError(
                f".ccf on a DataTree needs a multiscale 'ccf_volume' group "
                f"(rel.open_datatree('ccf/<version>/annotation')); this is {kind_of(tree)!r}"
            )
        self._tree = tree

    def __repr__(self) -> str:
        return f"<.ccf multiscale volume · levels {list(self.levels)} µm>"

    @property
    def levels(self) -> Mapping[float, str]:
        """Resolution (µm) -> level name, finest first."""
        return ccf.levels(self._tree)

    def level(self, resolution_um: float | None = None) -> xr.Dataset:
        """The coarsest level at least as fine as ``resolution_um`` (None: the finest)."""
        return ccf.choose_level(self._tree, resolution_um)

    def structure_mask(
        self,
        structure: Structure | Sequence[Structure],
        *,
        ontology: ccf.Ontology | xr.Dataset,
        resolution_um: float | None = None,
        descendants: bool = True,
        hemisphere_id: int = 3,
    ) -> xr.DataArray:
        """Lazy bool mask at the chosen level; see :func:`abo_lake.ccf.structure_mask`."""
        return ccf.structure_mask(
            self.level(resolution_um),
            structure,
            ontology=ontology,
            descendants=descendants,
            hemisphere_id=hemisphere_id,
        )

    def structure_at(self, points_um: Any, *, resolution_um: float | None = None) -> xr.DataArray:
        """Structure ids at points, at the chosen level (default: the finest)."""
        return ccf.structure_at(self.level(resolution_um), points_um)

    def voxel_counts(
        self,
        *,
        resolution_um: float | None = None,
        ontology: ccf.Ontology | xr.Dataset | None = None,
        descendants: bool = False,
        hemisphere_id: int = 3,
    ) -> pd.Series:
        """Voxels per structure at the chosen level."""
        return ccf.voxel_counts(
            self.level(resolution_um),
            ontology=ontology,
            descendants=descendants,
            hemisphere_id=hemisphere_id,
        )
