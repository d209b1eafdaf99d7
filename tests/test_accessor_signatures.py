"""Every accessor member against the function it delegates to, and against AllenSDK's signature.

The first tests are generic: they find every xarray accessor abo_lake registers and every public
member of it, read the member's source for the call into an ``abo_lake`` module (its delegate)
and compare signatures: a member added later is covered without editing this file.
The last tests hold AllenSDK 2.16.2's signatures (transcribed from ``ecephys_session.py`` and
``core/simple_tree.py`` / ``structure_tree.py``) for the members that have an AllenSDK twin.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from xarray.core.extensions import _CachedAccessor

import abo_lake.accessors  # noqa: F401 (registers the accessors)
from abo_lake import ccf
from abo_lake.ontology import Ontology

_NOT_DELEGATES = ("abo_lake.accessors", "abo_lake.errors", "abo_lake.schema", "abo_lake.kinds")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _accessors() -> list[tuple[str, type]]:
    """(``Dataset.ophys``-like label, accessor class) for every accessor abo_lake registers."""
    out = []
    for owner in (xr.Dataset, xr.DataArray, xr.DataTree):
        for name in dir(owner):
            attr = inspect.getattr_static(owner, name, None)
            if isinstance(attr, _CachedAccessor) and attr._accessor.__module__.startswith(
                "abo_lake.accessors"
            ):
                out.append((f"{owner.__name__}.{name}", attr._accessor))
    return out


def _members() -> list[tuple[str, type, str]]:
    return [
        (label, cls, name)
        for label, cls in _accessors()
        for name, _ in inspect.getmembers(cls)
        if not name.startswith("_")
    ]


def _function_of(cls: type, name: str) -> tuple[Callable, bool]:
    """The member's function (a property's getter) and whether it is a property."""
    attr = inspect.getattr_static(cls, name)
    if isinstance(attr, property):
        return attr.fget, True
    if isinstance(attr, staticmethod | classmethod):
        pytest.fail(f"{cls.__name__}.{name} is a static/class method; accessors hold methods")
    return attr, False


def _resolve(node: ast.expr, scope: dict) -> object | None:
    """The object a ``name`` or ``module.name`` call target is, from the accessor's globals."""
    if isinstance(node, ast.Name):
        return scope.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = scope.get(node.value.id)
        if isinstance(module, types.ModuleType):
            return getattr(module, node.attr, None)
    return None


def _delegate(fn: Callable, member: str) -> tuple[Callable, ast.Call] | None:
    """The call into an abo_lake module (not schema/errors/kinds/accessors) in ``fn``'s body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = _resolve(node.func, fn.__globals__)
        module = getattr(target, "__module__", "") or ""
        if (
            callable(target)
            and module.startswith("abo_lake.")
            and not module.startswith(_NOT_DELEGATES)
        ):
            found.append((target, node))
    if len(found) > 1:  # e.g. a helper call inside the arguments: prefer the same name
        same = [f for f in found if getattr(f[0], "__name__", "") == member]
        found = same or found[:1]
    return found[0] if found else None


class _Arg:
    """Placeholder for one argument of the delegate call, remembering its AST."""

    def __init__(self, node: ast.expr) -> None:
        self.node = node


def _bound(function: Callable, call: ast.Call) -> inspect.BoundArguments:
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        pytest.fail("the delegate call forwards *args/**kwargs: spell the arguments out")
    return inspect.signature(function).bind(
        *map(_Arg, call.args), **{k.arg: _Arg(k.value) for k in call.keywords}
    )


def _spec(p: inspect.Parameter) -> tuple:
    kind = "positional" if p.kind in _POSITIONAL else p.kind.name.lower()
    return (p.name, kind, p.default)


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


MEMBERS = _members()


def test_the_accessors_are_found():
    """The generic tests below see the registered accessors and their members."""
    labels = {label for label, _ in _accessors()}
    assert {"Dataset.ophys", "Dataset.ecephys", "Dataset.ccf", "DataTree.ccf"} <= labels
    names = {(label, name) for label, _, name in MEMBERS}
    assert ("Dataset.ecephys", "presentationwise_spike_counts") in names
    assert ("Dataset.ccf", "ancestor_ids") in names


@pytest.mark.parametrize(("label", "cls", "name"), MEMBERS, ids=[f"{m[0]}.{m[2]}" for m in MEMBERS])
def test_member_signature_is_its_function_minus_the_dataset(label, cls, name):
    """Names, kinds (positional or keyword-only) and defaults of each member are its function's,
    without the function's first (Dataset) argument; every argument is forwarded by name."""
    fn, is_property = _function_of(cls, name)
    found = _delegate(fn, name)
    if found is None:
        if is_property:  # a variable of the Dataset, e.g. ``ds.ophys.dff``
            return
        pytest.fail(f"{label}.{name} calls no abo_lake function: accessors delegate")
    function, call = found
    params = list(inspect.signature(fn).parameters.values())[1:]  # without self
    assert not [p.name for p in params if p.kind in _VAR], (
        f"{label}.{name} takes *args/**kwargs: give it an explicit signature"
    )
    bound = _bound(function, call)
    fparams = list(inspect.signature(function).parameters.values())
    first, rest = fparams[0], fparams[1:]
    assert first.name in bound.arguments, f"{label}.{name} passes no Dataset to {function}"
    if is_property:
        missing = [p.name for p in rest if p.name not in bound.arguments and p.default is p.empty]
        assert not missing, f"property {label}.{name}: {function.__name__} also needs {missing}"
        return
    consumed = _names_in(bound.arguments[first.name].node)  # e.g. self.level(resolution_um)
    extras = [p for p in params if p.name in consumed]
    assert all(p.kind is p.KEYWORD_ONLY for p in extras), (
        f"{label}.{name}: accessor-only arguments {[p.name for p in extras]} must be keyword-only"
    )
    forwarded = []
    for p in rest:
        if p.name not in bound.arguments:
            pytest.fail(f"{label}.{name} does not expose {function.__name__}'s {p.name!r}")
        node = bound.arguments[p.name].node
        if isinstance(node, ast.Constant):  # fixed by the member, e.g. image(ds, "max_projection")
            continue
        passed = node.id if isinstance(node, ast.Name) else ast.unparse(node)
        assert passed == p.name, (
            f"{label}.{name} passes {passed} as {function.__name__}'s {p.name!r}"
        )
        forwarded.append(p)
    ours = [_spec(p) for p in params if p not in extras]
    theirs = [_spec(p) for p in forwarded]
    assert ours == theirs, (
        f"{label}.{name} vs {function.__module__}.{function.__name__}: (name, kind, default) "
        f"differ; accessor {ours}, function {theirs}"
    )


def test_a_mismatch_is_caught():
    """The comparison fails on a member whose default differs from its function's."""

    class Probe:
        def presentationwise_spike_counts(self, bin_edges, stimulus_presentation_ids=None,
                                          unit_ids=None, binarize=True, dtype=None,
                                          large_bin_size_threshold=0.001,
                                          time_domain_callback=None):  # fmt: skip
            return ecephys.presentationwise_spike_counts(
                self._ds, bin_edges, stimulus_presentation_ids, unit_ids, binarize, dtype,
                large_bin_size_threshold, time_domain_callback,
            )  # fmt: skip

    from abo_lake import ecephys

    globals()["ecephys"] = ecephys
    try:
        with pytest.raises(AssertionError, match="presentationwise_spike_counts vs"):
            test_member_signature_is_its_function_minus_the_dataset(
                "Probe", Probe, "presentationwise_spike_counts"
            )
    finally:
        del globals()["ecephys"]


# --- AllenSDK 2.16.2 ------------------------------------------------------------------------------

_REQUIRED = inspect.Parameter.empty
#: (our class, member) -> AllenSDK's parameters (name, default) in order, without ``self``.
ALLENSDK = {
    # allensdk/brain_observatory/ecephys/ecephys_session.py, EcephysSession
    ("Dataset.ecephys", "presentationwise_spike_counts"): [
        ("bin_edges", _REQUIRED), ("stimulus_presentation_ids", _REQUIRED),
        ("unit_ids", _REQUIRED), ("binarize", False), ("dtype", None),
        ("large_bin_size_threshold", 0.001), ("time_domain_callback", None),
    ],
    ("Dataset.ecephys", "presentationwise_spike_times"): [
        ("stimulus_presentation_ids", None), ("unit_ids", None),
    ],
    ("Dataset.ecephys", "conditionwise_spike_statistics"): [
        ("stimulus_presentation_ids", None), ("unit_ids", None), ("use_rates", False),
    ],
    ("Dataset.ecephys", "get_stimulus_table"): [
        ("stimulus_names", None), ("include_detailed_parameters", False),
        ("include_unused_parameters", False),
    ],
    ("Dataset.ecephys", "get_screen_gaze_data"): [("include_filtered_data", False)],
    ("Dataset.ecephys", "get_pupil_data"): [],
    # allensdk/brain_observatory/ecephys/behavior_ecephys_session.py, BehaviorEcephysSession
    ("Dataset.ecephys", "get_units"): [
        ("filter_by_validity", False), ("filter_out_of_brain_units", False),
        ("amplitude_cutoff_maximum", None), ("presence_ratio_minimum", None),
        ("isi_violations_maximum", None),
    ],
    ("Dataset.ecephys", "get_channels"): [("filter_by_validity", True)],
    # allensdk/brain_observatory/behavior/behavior_ophys_experiment.py, BehaviorOphysExperiment
    ("Dataset.ophys", "get_dff_traces"): [("cell_specimen_ids", None)],
    ("Dataset.ophys", "get_cell_specimen_ids"): [],
    ("Dataset.ophys", "get_cell_specimen_indices"): [("cell_specimen_ids", _REQUIRED)],
    ("Dataset.ophys", "get_segmentation_mask_image"): [],
    # allensdk/brain_observatory/behavior/behavior_session.py, BehaviorSession (inherited by
    # BehaviorOphysExperiment and BehaviorEcephysSession)
    ("Dataset.ophys", "get_reward_rate"): [],
    ("Dataset.ophys", "get_rolling_performance_df"): [],
    ("Dataset.ophys", "get_performance_metrics"): [("engaged_trial_reward_rate_threshold", 2.0)],
    ("Dataset.ecephys", "get_reward_rate"): [],
    ("Dataset.ecephys", "get_rolling_performance_df"): [],
    ("Dataset.ecephys", "get_performance_metrics"): [
        ("engaged_trial_reward_rate_threshold", 2.0),
    ],
    # allensdk/core/simple_tree.py and structure_tree.py, StructureTree
    ("Ontology", "ancestor_ids"): [("node_ids", _REQUIRED)],
    ("Ontology", "descendant_ids"): [("node_ids", _REQUIRED)],
    ("Ontology", "child_ids"): [("node_ids", _REQUIRED)],
    ("Ontology", "parent_ids"): [("node_ids", _REQUIRED)],
    ("Ontology", "structure_descends_from"): [("child_id", _REQUIRED), ("parent_id", _REQUIRED)],
    ("Ontology", "get_colormap"): [],
    ("Ontology", "get_id_acronym_map"): [],
    ("Ontology", "get_name_map"): [],
    ("Ontology", "get_ancestor_id_map"): [],
    ("Ontology", "get_structures_by_id"): [("structure_ids", _REQUIRED)],
    ("Ontology", "get_structures_by_acronym"): [("acronyms", _REQUIRED)],
    ("Ontology", "get_structures_by_name"): [("names", _REQUIRED)],
    ("Ontology", "get_structures_by_set_id"): [("structure_set_ids", _REQUIRED)],
    ("Ontology", "node_ids"): [],
    ("Ontology", "nodes"): [("node_ids", None)],
    ("Ontology", "parents"): [("node_ids", _REQUIRED)],
    ("Ontology", "children"): [("node_ids", _REQUIRED)],
    ("Ontology", "ancestors"): [("node_ids", _REQUIRED)],
    ("Ontology", "descendants"): [("node_ids", _REQUIRED)],
    ("Ontology", "filter_nodes"): [("criterion", _REQUIRED)],
    ("Ontology", "value_map"): [("from_fn", _REQUIRED), ("to_fn", _REQUIRED)],
    ("Dataset.ccf", "ancestor_ids"): [("node_ids", _REQUIRED)],
    ("Dataset.ccf", "descendant_ids"): [("node_ids", _REQUIRED)],
    # allensdk/core/reference_space.py, ReferenceSpace (its tree: ontology=)
    ("Dataset.ccf", "make_structure_mask"): [("structure_ids", _REQUIRED), ("direct_only", False)],
    ("Dataset.ccf", "many_structure_masks"): [
        ("structure_ids", _REQUIRED), ("output_cb", None), ("direct_only", False),
    ],
    # allensdk/core/mouse_connectivity_cache.py, MouseConnectivityCache: after experiment_ids
    # (our first argument: the experiment Dataset(s)); get_projection_matrix's deprecated
    # dataframe=False is not served
    ("Dataset.ccf", "unionize"): [
        ("is_injection", None), ("structure_ids", None), ("include_descendants", False),
        ("hemisphere_ids", None),
    ],
    ("abo_lake.ccf", "unionize"): [
        ("is_injection", None), ("structure_ids", None), ("include_descendants", False),
        ("hemisphere_ids", None),
    ],
    # allensdk/core/nwb_data_set.py, NwbDataSet
    ("Dataset.celltypes", "get_sweep"): [("sweep_number", _REQUIRED)],
    ("Dataset.celltypes", "get_sweep_numbers"): [],
    ("Dataset.celltypes", "get_sweep_metadata"): [("sweep_number", _REQUIRED)],
    ("Dataset.celltypes", "get_spike_times"): [("sweep_number", _REQUIRED), ("key", None)],
    # allensdk/core/swc.py, Morphology
    ("Dataset.morphology", "node"): [("n", _REQUIRED)],
    ("Dataset.morphology", "tree"): [("n", _REQUIRED)],
    ("Dataset.morphology", "parent_of"): [("seg", _REQUIRED)],
    ("Dataset.morphology", "children_of"): [("seg", _REQUIRED)],
    ("Dataset.morphology", "compartment_list_by_type"): [("compartment_type", _REQUIRED)],
    ("Dataset.morphology", "compartment_index_by_type"): [("compartment_type", _REQUIRED)],
    ("abo_lake.ccf", "projection_matrix"): [
        ("projection_structure_ids", None), ("hemisphere_ids", None),
        ("parameter", "projection_volume"),
    ],
}  # fmt: skip
#: What AllenSDK's cache objects hold and our functions take as (required) keywords.
STATE = {"annotation", "ontology"}
#: Our names where AllenSDK's differ (the README's table says so); positions are AllenSDK's.
RENAMED = {"node_ids": "structures"}
#: AllenSDK properties the accessors serve as properties too.
ALLENSDK_PROPERTIES = {
    "Dataset.ecephys": ["units", "stimulus_presentations", "spike_times", "spike_amplitudes",
                        "mean_waveforms", "channels", "probes", "invalid_times", "metadata",
                        "stimulus_conditions", "optogenetic_stimulation_epochs",
                        "running_speed"],
    "Dataset.ophys": ["stimulus_presentations", "trials", "dff_traces", "events",
                      "cell_specimen_table", "ophys_timestamps", "metadata", "running_speed",
                      "raw_running_speed", "licks", "rewards", "stimulus_templates",
                      "eye_tracking", "task_parameters", "max_projection", "average_projection",
                      "segmentation_mask_image", "corrected_fluorescence_traces",
                      "demixed_traces", "neuropil_traces", "motion_correction", "roi_masks"],
    "Dataset.ccf": ["ontology"],
    "Dataset.morphology": ["compartment_list", "compartment_index", "soma", "num_nodes",
                           "num_trees"],
}  # fmt: skip


def _ours(label: str, name: str) -> Callable:
    """Our twin; its first parameter (self, or the experiment Dataset) is AllenSDK's self."""
    if label == "Ontology":
        return getattr(Ontology, name)
    if label == "abo_lake.ccf":
        return getattr(ccf, name)
    return getattr(dict(_accessors())[label], name)


@pytest.mark.parametrize(("label", "name"), list(ALLENSDK), ids=[".".join(k) for k in ALLENSDK])
def test_allensdk_calls_bind_unchanged(label, name):
    """AllenSDK's positional order and defaults; where AllenSDK requires an argument we may
    default it (None: all), never the other way round."""
    allen = ALLENSDK[(label, name)]
    params = list(inspect.signature(_ours(label, name)).parameters.values())[1:]
    assert len(params) >= len(allen), f"{label}.{name} takes fewer arguments than AllenSDK"
    for (aname, adefault), p in zip(allen, params, strict=False):
        assert p.name == RENAMED.get(aname, aname), f"{label}.{name}: {p.name} for {aname}"
        assert p.kind in _POSITIONAL, f"{label}.{name}: AllenSDK passes {aname} positionally"
        if adefault is not _REQUIRED:
            assert p.default == adefault, f"{label}.{name}: default of {aname}"
    extra = [p for p in params[len(allen) :] if p.kind in _POSITIONAL or p.name not in STATE]
    assert all(p.default is not p.empty or p.kind in _VAR for p in extra), (
        f"{label}.{name}: arguments AllenSDK does not have must be optional"
    )


@pytest.mark.parametrize("label", list(ALLENSDK_PROPERTIES))
def test_allensdk_properties_are_properties(label):
    cls = dict(_accessors())[label]
    for name in ALLENSDK_PROPERTIES[label]:
        assert isinstance(inspect.getattr_static(cls, name, None), property), f"{label}.{name}"


def test_allensdk_positional_call_of_presentationwise_spike_counts_binds():
    """``session.presentationwise_spike_counts(bin_edges, ids, units)``: the issue's call."""
    sig = inspect.signature(_ours("Dataset.ecephys", "presentationwise_spike_counts"))
    bound = sig.bind(None, np.arange(3.0), [1, 2], [3], True, np.uint8, 0.01, None)
    assert bound.arguments["unit_ids"] == [3]
    assert bound.arguments["large_bin_size_threshold"] == 0.01


def test_readme_table_names_members_that_exist():
    """Each lake call in README's 'AllenSDK calls in the lake' table names a real member."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## AllenSDK calls in the lake", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 15
    accessors = {label.split(".")[1]: cls for label, cls in _accessors() if "Dataset" in label}
    checked = 0
    for row in rows:
        lake = row[1]
        for acc, member in re.findall(r"\.(ophys|ecephys|ccf|celltypes|morphology)\.(\w+)", lake):
            if acc == "ccf" and member in ("level", "levels"):
                assert hasattr(dict(_accessors())["DataTree.ccf"], member)
            else:
                assert hasattr(accessors[acc], member), f"README: no .{acc}.{member}"
            checked += 1
        for member in re.findall(r"\bonto\.(\w+)", lake):
            assert hasattr(Ontology, member), f"README: no Ontology.{member}"
            checked += 1
        for member in re.findall(r"\bccf\.(\w+)\(", lake):
            assert hasattr(ccf, member), f"README: no abo_lake.ccf.{member}"
            checked += 1
    assert checked >= 20
