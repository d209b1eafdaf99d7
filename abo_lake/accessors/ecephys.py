"""The ``.ecephys`` accessor: thin delegates to :mod:`abo_lake.ecephys`.

Works on the three Neuropixels kinds: ``ecephys_session`` (units, spikes, stimuli; Visual
Coding sessions with AllenSDK's ``EcephysSession`` semantics, Visual Behavior Neuropixels ones
with ``BehaviorEcephysSession``'s, behavior members included), ``ecephys_lfp`` and
``ecephys_csd``. ``__init__`` checks the kind from dims and
variables only (no data read) and raises :class:`~abo_lake.errors.SchemaError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from abo_lake import behavior, ecephys, ecephys_metrics, schema, task_performance
from abo_lake.errors import SchemaError
from abo_lake.kinds import kinds_for

__all__ = ["EcephysAccessor"]

_KINDS = kinds_for("ecephys")  # ecephys_session, ecephys_lfp, ecephys_csd


def _kind(ds: xr.Dataset) -> str:
    recorded = schema.kind_of(ds)
    candidates = [recorded] if recorded in _KINDS else [] if recorded else list(_KINDS)
    problems = []
    for kind in candidates:
        try:
            schema.validate(ds, kind)
            return kind
        except SchemaError as err:
            problems.append(str(err))
    found = f"a {recorded!r} Dataset" if recorded else "a Dataset without abo_lake_kind"
    raise SchemaError(
        f".ecephys needs an ecephys_session, ecephys_lfp or ecephys_csd Dataset (open "
        f"'ecephys/session/<id>' or 'ecephys/probe/<id>/lfp|csd'); got {found}"
        + (f": {'; '.join(problems)}" if problems else "")
    )


@xr.register_dataset_accessor("ecephys")
class EcephysAccessor:
    """Visual Coding Neuropixels analysis with AllenSDK's names and semantics.

    On a session: :attr:`units`, :meth:`units_in`, :attr:`stimulus_presentations` (AllenSDK's
    ``invalid_presentation`` masking), :meth:`spike_times`, :meth:`presentationwise_spike_counts`,
    :meth:`presentationwise_spike_times`, :meth:`conditionwise_spike_statistics`, :meth:`psth`,
    :meth:`drifting_gratings_metrics`; AllenSDK's stimulus analyses :meth:`stimulus_metrics`,
    :meth:`receptive_fields` and :meth:`optotagging_metrics`.
    On a probe: :meth:`lfp` and :attr:`csd`.
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds
        self._kind = _kind(ds)

    def __repr__(self) -> str:
        ds, kind = self._ds, self._kind
        if kind == "ecephys_session":
            return (
                f"<.ecephys session {ds.attrs.get('ecephys_session_id', '?')}: "
                f"{ds.sizes['unit_id']} units, {ds.sizes['spike']:,} spikes, "
                f"{ds.sizes['stimulus_presentation_id']} stimulus presentations>"
            )
        if kind == "ecephys_lfp":
            return (
                f"<.ecephys LFP of probe {ds.attrs.get('probe_id', '?')}: "
                f"{ds.sizes['channel']} channels × {ds.sizes['time']:,} samples>"
            )
        return (
            f"<.ecephys CSD of probe {ds.attrs.get('probe_id', '?')}: "
            f"{ds.sizes['virtual_channel_index']} virtual channels × {ds.sizes['time']} samples>"
        )

    def _unit_keys(self) -> np.ndarray:
        """The per-unit dicts' keys, computed once per Dataset (the accessor is cached)."""
        if getattr(self, "_keys", None) is None:
            self._keys = ecephys.units_with_spikes(self._need("ecephys_session"))
        return self._keys

    def _need(self, kind: str) -> xr.Dataset:
        if self._kind != kind:
            raise SchemaError(f"this needs an {kind!r} Dataset; this one is {self._kind!r}")
        return self._ds

    @property
    def units(self) -> pd.DataFrame:
        """Units passing AllenSDK's default QC filter (see :func:`abo_lake.ecephys.units`)."""
        return ecephys.units(self._need("ecephys_session"))

    def filtered_units(
        self,
        *,
        filter_by_validity: bool = True,
        filter_out_of_brain_units: bool = True,
        amplitude_cutoff_maximum: float = 0.1,
        presence_ratio_minimum: float = 0.95,
        isi_violations_maximum: float = 0.5,
    ) -> pd.DataFrame:
        """Units with overridden QC filters (AllenSDK's ``api_kwargs`` of ``from_nwb_path``)."""
        return ecephys.units(
            self._need("ecephys_session"),
            filter_by_validity=filter_by_validity,
            filter_out_of_brain_units=filter_out_of_brain_units,
            amplitude_cutoff_maximum=amplitude_cutoff_maximum,
            presence_ratio_minimum=presence_ratio_minimum,
            isi_violations_maximum=isi_violations_maximum,
        )

    def units_in(
        self,
        structure_acronym: str,
        *,
        filter_by_validity: bool = True,
        filter_out_of_brain_units: bool = True,
        amplitude_cutoff_maximum: float = 0.1,
        presence_ratio_minimum: float = 0.95,
        isi_violations_maximum: float = 0.5,
    ) -> pd.DataFrame:
        """Units in one CCF structure (``ecephys_structure_acronym``)."""
        return ecephys.units_in(
            self._need("ecephys_session"),
            structure_acronym,
            filter_by_validity=filter_by_validity,
            filter_out_of_brain_units=filter_out_of_brain_units,
            amplitude_cutoff_maximum=amplitude_cutoff_maximum,
            presence_ratio_minimum=presence_ratio_minimum,
            isi_violations_maximum=isi_violations_maximum,
        )

    @property
    def stimulus_presentations(self) -> pd.DataFrame:
        """The stimulus table, invalid presentations masked as AllenSDK does (see
        :func:`abo_lake.ecephys.stimulus_presentations`)."""
        return ecephys.stimulus_presentations(self._need("ecephys_session"))

    @property
    def spike_times(self) -> ecephys.UnitMapping:
        """AllenSDK's ``session.spike_times`` dict: ``spike_times[unit_id]`` is that unit's
        NumPy array (read on access); ``spike_times(unit_id)`` the lazy DataArray."""
        return ecephys.spike_times_by_unit(self._need("ecephys_session"), self._unit_keys)

    @property
    def spike_amplitudes(self) -> ecephys.UnitMapping:
        """AllenSDK's ``session.spike_amplitudes`` dict (as :attr:`spike_times`)."""
        return ecephys.spike_amplitudes_by_unit(self._need("ecephys_session"), self._unit_keys)

    @property
    def channels(self) -> pd.DataFrame:
        """AllenSDK's ``session.channels`` (valid channels; see
        :func:`abo_lake.ecephys.channels`)."""
        return ecephys.channels(self._need("ecephys_session"))

    def get_channels(self, filter_by_validity: bool = True) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.get_channels(filter_by_validity)``."""
        return ecephys.channels(
            self._need("ecephys_session"), filter_by_validity=filter_by_validity
        )

    @property
    def probes(self) -> pd.DataFrame:
        """AllenSDK's ``session.probes`` (see :func:`abo_lake.ecephys.probes`)."""
        return ecephys.probes(self._need("ecephys_session"))

    def get_units(
        self,
        filter_by_validity: bool = False,
        filter_out_of_brain_units: bool = False,
        amplitude_cutoff_maximum: float | None = None,
        presence_ratio_minimum: float | None = None,
        isi_violations_maximum: float | None = None,
    ) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.get_units(...)``, defaults included (see
        :func:`abo_lake.ecephys.get_units`)."""
        return ecephys.get_units(
            self._need("ecephys_session"),
            filter_by_validity=filter_by_validity,
            filter_out_of_brain_units=filter_out_of_brain_units,
            amplitude_cutoff_maximum=amplitude_cutoff_maximum,
            presence_ratio_minimum=presence_ratio_minimum,
            isi_violations_maximum=isi_violations_maximum,
        )

    @property
    def stimulus_conditions(self) -> pd.DataFrame:
        """AllenSDK's ``session.stimulus_conditions``."""
        return ecephys.stimulus_conditions(self._need("ecephys_session"))

    def get_stimulus_table(
        self,
        stimulus_names: Any = None,
        include_detailed_parameters: bool = False,
        include_unused_parameters: bool = False,
    ) -> pd.DataFrame:
        """AllenSDK's ``session.get_stimulus_table(stimulus_names, ...)``."""
        return ecephys.get_stimulus_table(
            self._need("ecephys_session"),
            stimulus_names,
            include_detailed_parameters=include_detailed_parameters,
            include_unused_parameters=include_unused_parameters,
        )

    @property
    def optogenetic_stimulation_epochs(self) -> pd.DataFrame:
        """AllenSDK's ``EcephysSession.optogenetic_stimulation_epochs``."""
        return ecephys.optogenetic_stimulation_epochs(self._need("ecephys_session"))

    @property
    def optotagging_table(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.optotagging_table`` (the same table)."""
        return ecephys.optogenetic_stimulation_epochs(self._need("ecephys_session"))

    @property
    def invalid_times(self) -> pd.DataFrame:
        """AllenSDK's ``session.invalid_times`` (tags as a list per row)."""
        return ecephys.invalid_times(self._need("ecephys_session"))

    @property
    def running_speed(self) -> pd.DataFrame:
        """AllenSDK's ``running_speed``: ``EcephysSession``'s (start_time, end_time,
        velocity), or ``BehaviorEcephysSession``'s (timestamps, speed: filtered)."""
        ds = self._need("ecephys_session")
        if ecephys.session_class(ds) == "BehaviorEcephysSession":
            return behavior.running_speed(ds)
        return ecephys.running_speed(ds)

    def _behavior(self) -> xr.Dataset:
        ds = self._need("ecephys_session")
        if ecephys.session_class(ds) != "BehaviorEcephysSession":
            raise SchemaError(
                "this is a Visual Coding Neuropixels session (AllenSDK's EcephysSession), which "
                "has no behavior task; trials, licks, rewards... belong to Visual Behavior "
                "Neuropixels sessions"
            )
        return ds

    @property
    def trials(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.trials`` (:func:`abo_lake.behavior.trials`)."""
        return behavior.trials(self._behavior())

    @property
    def licks(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.licks``."""
        return behavior.licks(self._behavior())

    @property
    def rewards(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.rewards``."""
        return behavior.rewards(self._behavior())

    @property
    def raw_running_speed(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.raw_running_speed`` (unfiltered)."""
        return behavior.raw_running_speed(self._behavior())

    @property
    def stimulus_timestamps(self) -> np.ndarray:
        """AllenSDK's ``BehaviorEcephysSession.stimulus_timestamps`` (every frame, s)."""
        return behavior.stimulus_timestamps(self._behavior())

    @property
    def stimulus_templates(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.stimulus_templates``."""
        return behavior.stimulus_templates(self._behavior())

    @property
    def eye_tracking(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.eye_tracking`` (blinks filtered: z-score 3,
        dilation 2; see :func:`abo_lake.behavior.eye_tracking`)."""
        return behavior.eye_tracking(self._behavior())

    @property
    def eye_tracking_rig_geometry(self) -> dict[str, Any]:
        """AllenSDK's ``BehaviorEcephysSession.eye_tracking_rig_geometry``."""
        return behavior.eye_tracking_rig_geometry(self._behavior())

    @property
    def task_parameters(self) -> dict[str, Any]:
        """AllenSDK's ``BehaviorEcephysSession.task_parameters``."""
        return behavior.task_parameters(self._behavior())

    def get_reward_rate(self) -> np.ndarray:
        """AllenSDK's ``BehaviorEcephysSession.get_reward_rate()``; see
        :func:`abo_lake.task_performance.get_reward_rate`."""
        return task_performance.get_reward_rate(self._behavior())

    def get_rolling_performance_df(self) -> pd.DataFrame:
        """AllenSDK's ``BehaviorEcephysSession.get_rolling_performance_df()``; see
        :func:`abo_lake.task_performance.get_rolling_performance_df`."""
        return task_performance.get_rolling_performance_df(self._behavior())

    def get_performance_metrics(
        self, engaged_trial_reward_rate_threshold: float = 2.0
    ) -> dict[str, Any]:
        """AllenSDK's ``BehaviorEcephysSession.get_performance_metrics(
        engaged_trial_reward_rate_threshold=2.0)``; see
        :func:`abo_lake.task_performance.get_performance_metrics`."""
        return task_performance.get_performance_metrics(
            self._behavior(), engaged_trial_reward_rate_threshold
        )

    def get_pupil_data(self) -> pd.DataFrame | None:
        """AllenSDK's ``EcephysSession.get_pupil_data()``."""
        return ecephys.pupil_data(self._need("ecephys_session"))

    def get_screen_gaze_data(self, include_filtered_data: bool = False) -> pd.DataFrame | None:
        """AllenSDK's ``EcephysSession.get_screen_gaze_data(include_filtered_data)``."""
        return ecephys.screen_gaze_data(self._need("ecephys_session"), include_filtered_data)

    @property
    def metadata(self) -> dict[str, Any]:
        """AllenSDK's ``session.metadata``."""
        return ecephys.metadata(self._need("ecephys_session"))

    def _metadata(self, key: str) -> Any:
        return ecephys.metadata(self._need("ecephys_session")).get(key)

    @property
    def ecephys_session_id(self) -> int:
        """AllenSDK's ``session.ecephys_session_id``."""
        return int(self._need("ecephys_session").attrs["ecephys_session_id"])

    @property
    def session_start_time(self) -> Any:
        """AllenSDK's ``EcephysSession.session_start_time`` (a timezone-aware datetime)."""
        return self._metadata("session_start_time")

    @property
    def session_type(self) -> str | None:
        """AllenSDK's ``EcephysSession.session_type`` (e.g. ``brain_observatory_1.1``)."""
        return self._metadata("session_type")

    @property
    def specimen_name(self) -> str | None:
        """AllenSDK's ``EcephysSession.specimen_name``."""
        return self._metadata("specimen_name")

    @property
    def age_in_days(self) -> float | None:
        """AllenSDK's ``EcephysSession.age_in_days``."""
        return self._metadata("age_in_days")

    @property
    def sex(self) -> str | None:
        """AllenSDK's ``EcephysSession.sex``."""
        return self._metadata("sex")

    @property
    def full_genotype(self) -> str | None:
        """AllenSDK's ``EcephysSession.full_genotype``."""
        return self._metadata("full_genotype")

    @property
    def num_units(self) -> int:
        """AllenSDK's ``EcephysSession.num_units`` (units passing the default filter)."""
        return int(ecephys.units(self._need("ecephys_session")).shape[0])

    @property
    def num_channels(self) -> int:
        """AllenSDK's ``EcephysSession.num_channels`` (valid channels)."""
        return int(ecephys.channels(self._need("ecephys_session")).shape[0])

    @property
    def num_probes(self) -> int:
        """AllenSDK's ``EcephysSession.num_probes``."""
        return int(ecephys.probes(self._need("ecephys_session")).shape[0])

    @property
    def num_stimulus_presentations(self) -> int:
        """AllenSDK's ``EcephysSession.num_stimulus_presentations``."""
        return int(self._need("ecephys_session").sizes["stimulus_presentation_id"])

    @property
    def stimulus_names(self) -> list[str]:
        """AllenSDK's ``EcephysSession.stimulus_names`` (in order of first presentation)."""
        return self._metadata("stimulus_names")

    @property
    def structure_acronyms(self) -> list[str | None]:
        """AllenSDK's ``EcephysSession.structure_acronyms`` (of the valid channels)."""
        return self._metadata("structure_acronyms")

    @property
    def structurewise_unit_counts(self) -> pd.Series:
        """AllenSDK's ``EcephysSession.structurewise_unit_counts``."""
        return ecephys.structurewise_unit_counts(self._need("ecephys_session"))

    @property
    def inter_presentation_intervals(self) -> pd.DataFrame:
        """AllenSDK's ``session.inter_presentation_intervals``."""
        return ecephys.inter_presentation_intervals(self._need("ecephys_session"))

    def get_inter_presentation_intervals_for_stimulus(self, stimulus_names: Any) -> pd.DataFrame:
        """AllenSDK's ``session.get_inter_presentation_intervals_for_stimulus(names)``."""
        return ecephys.inter_presentation_intervals_for_stimulus(
            self._need("ecephys_session"), stimulus_names
        )

    def get_invalid_times(self) -> pd.DataFrame:
        """AllenSDK's ``session.get_invalid_times()`` (= :attr:`invalid_times`)."""
        return ecephys.invalid_times(self._need("ecephys_session"))

    def get_stimulus_epochs(self, duration_thresholds: dict | None = None) -> pd.DataFrame:
        """AllenSDK's ``session.get_stimulus_epochs(duration_thresholds)``."""
        return ecephys.stimulus_epochs(self._need("ecephys_session"), duration_thresholds)

    def get_stimulus_parameter_values(
        self, stimulus_presentation_ids: Any = None, drop_nulls: bool = True
    ) -> dict[str, np.ndarray]:
        """AllenSDK's ``session.get_stimulus_parameter_values(ids, drop_nulls)``."""
        return ecephys.stimulus_parameter_values(
            self._need("ecephys_session"), stimulus_presentation_ids, drop_nulls
        )

    def get_parameter_values_for_stimulus(
        self, stimulus_name: str, drop_nulls: bool = True
    ) -> dict[str, np.ndarray]:
        """AllenSDK's ``session.get_parameter_values_for_stimulus(stimulus_name, drop_nulls)``."""
        return ecephys.parameter_values_for_stimulus(
            self._need("ecephys_session"), stimulus_name, drop_nulls
        )

    @property
    def rig_geometry_data(self) -> pd.DataFrame | None:
        """AllenSDK's ``EcephysSession.rig_geometry_data``."""
        return ecephys.rig_geometry_data(self._need("ecephys_session"))

    @property
    def rig_equipment_name(self) -> str | None:
        """AllenSDK's ``EcephysSession.rig_equipment_name``."""
        return ecephys.rig_equipment_name(self._need("ecephys_session"))

    def presentationwise_spike_counts(
        self,
        bin_edges: Any,
        stimulus_presentation_ids: Any = None,
        unit_ids: Any = None,
        binarize: bool = False,
        dtype: Any = None,
        large_bin_size_threshold: float = 0.001,
        time_domain_callback: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> xr.DataArray:
        """AllenSDK's positional order; see :func:`abo_lake.ecephys.presentationwise_spike_counts`
        (lazy)."""
        return ecephys.presentationwise_spike_counts(
            self._need("ecephys_session"),
            bin_edges,
            stimulus_presentation_ids,
            unit_ids,
            binarize,
            dtype,
            large_bin_size_threshold,
            time_domain_callback,
        )

    def presentationwise_spike_times(
        self, stimulus_presentation_ids: Any = None, unit_ids: Any = None
    ) -> pd.DataFrame:
        """See :func:`abo_lake.ecephys.presentationwise_spike_times`."""
        return ecephys.presentationwise_spike_times(
            self._need("ecephys_session"), stimulus_presentation_ids, unit_ids
        )

    def conditionwise_spike_statistics(
        self,
        stimulus_presentation_ids: Any = None,
        unit_ids: Any = None,
        use_rates: bool = False,
    ) -> pd.DataFrame:
        """See :func:`abo_lake.ecephys.conditionwise_spike_statistics`."""
        return ecephys.conditionwise_spike_statistics(
            self._need("ecephys_session"), stimulus_presentation_ids, unit_ids, use_rates
        )

    def psth(
        self, *, bin_edges: Any, stimulus_presentation_ids: Any = None, unit_ids: Any = None
    ) -> xr.DataArray:
        """See :func:`abo_lake.ecephys.psth` (lazy)."""
        return ecephys.psth(
            self._need("ecephys_session"),
            bin_edges=bin_edges,
            stimulus_presentation_ids=stimulus_presentation_ids,
            unit_ids=unit_ids,
        )

    def drifting_gratings_metrics(
        self,
        *,
        unit_ids: Any = None,
        stimulus_name: str = "drifting_gratings",
        trial_duration: float = 2.0,
    ) -> pd.DataFrame:
        """See :func:`abo_lake.ecephys.drifting_gratings_metrics`."""
        return ecephys.drifting_gratings_metrics(
            self._need("ecephys_session"),
            unit_ids=unit_ids,
            stimulus_name=stimulus_name,
            trial_duration=trial_duration,
        )

    def stimulus_metrics(
        self,
        analysis: str | None = None,
        unit_ids: Any = None,
        *,
        stimulus_key: str | None = None,
        trial_duration: float | None = None,
        seed: int | None = None,
    ) -> pd.DataFrame:
        """AllenSDK's ``<Analysis>(session).metrics`` (e.g. ``"drifting_gratings"``), or all
        the session's stimuli allow; see :func:`abo_lake.ecephys_metrics.stimulus_metrics`."""
        return ecephys_metrics.stimulus_metrics(
            self._need("ecephys_session"),
            analysis,
            unit_ids,
            stimulus_key=stimulus_key,
            trial_duration=trial_duration,
            seed=seed,
        )

    def receptive_fields(
        self, unit_ids: Any = None, *, stimulus_key: str | None = None
    ) -> xr.DataArray:
        """AllenSDK's ``ReceptiveFieldMapping(session).receptive_fields["spike_counts"]``; see
        :func:`abo_lake.ecephys_metrics.receptive_fields`."""
        return ecephys_metrics.receptive_fields(
            self._need("ecephys_session"), unit_ids, stimulus_key=stimulus_key
        )

    def optotagging_metrics(self, unit_ids: Any = None) -> pd.DataFrame:
        """Baseline and evoked rates per unit and light condition (the Allen optotagging
        tutorial's); see :func:`abo_lake.ecephys_metrics.optotagging_metrics`."""
        return ecephys_metrics.optotagging_metrics(self._need("ecephys_session"), unit_ids)

    @property
    def mean_waveforms(self) -> ecephys.UnitMapping:
        """AllenSDK's ``session.mean_waveforms`` dict; ``mean_waveforms(unit_id)`` gives the
        lazy DataArray (see :func:`abo_lake.ecephys.mean_waveforms_by_unit`)."""
        return ecephys.mean_waveforms_by_unit(self._need("ecephys_session"), self._unit_keys)

    def lfp(
        self,
        *,
        time: slice | tuple[float, float] | None = None,
        channels: Any = None,
        structure: str | None = None,
        invalid_times: xr.Dataset | pd.DataFrame | None = None,
    ) -> xr.DataArray:
        """See :func:`abo_lake.ecephys.lfp` (lazy)."""
        return ecephys.lfp(
            self._need("ecephys_lfp"),
            time=time,
            channels=channels,
            structure=structure,
            invalid_times=invalid_times,
        )

    def get_lfp(
        self, probe_id: int, mask_invalid_intervals: bool = True, *, release: Any = None
    ) -> xr.DataArray:
        """AllenSDK's ``session.get_lfp(probe_id, mask_invalid_intervals)`` from a session:
        the probe's LFP dataset is opened from ``release`` (see
        :func:`abo_lake.ecephys.get_lfp`)."""
        return ecephys.get_lfp(
            self._need("ecephys_session"), probe_id, mask_invalid_intervals, release=release
        )

    def get_current_source_density(self, probe_id: int, *, release: Any = None) -> xr.DataArray:
        """AllenSDK's ``session.get_current_source_density(probe_id)`` from a session (the
        probe's CSD dataset opened from ``release``)."""
        return ecephys.get_current_source_density(
            self._need("ecephys_session"), probe_id, release=release
        )

    @property
    def csd(self) -> xr.DataArray:
        """The CSD DataArray (lazy), see :func:`abo_lake.ecephys.csd`."""
        return ecephys.csd(self._need("ecephys_csd"))
