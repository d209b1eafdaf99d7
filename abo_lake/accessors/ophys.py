"""The ``.ophys`` accessor of ``ophys_experiment`` Datasets (Visual Behavior and Visual Coding 2P)
and of ``behavior_session`` Datasets (Visual Behavior behavior-only sessions).

Thin: ``__init__`` validates the layout (dims and variable names only, no data read) and every
member delegates to :mod:`abo_lake.ophys` (imaging) or :mod:`abo_lake.behavior` (AllenSDK's
behavior attributes, which ``BehaviorOphysExperiment`` and ``BehaviorSession`` share). On a
behavior-only session the imaging members (:data:`_IMAGING`) raise a SchemaError saying so.

>>> ds.ophys                                   # doctest: +SKIP
<ophys_experiment 951980471 · 12 cells · 1980 frames at 11.00 Hz · 121 µm · VISal · ...>
>>> ds.ophys.trial_responses(window=(-0.5, 1.0))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from abo_lake import (
    behavior,
    behavior_alignment,
    ophys,
    schema,
    task_performance,
    vc2p_metrics,
)
from abo_lake.errors import SchemaError

__all__ = ["OphysAccessor"]

_KIND = "ophys_experiment"
_BEHAVIOR = "behavior_session"
#: Members that need imaging: on a behavior-only session they raise a SchemaError saying so.
_IMAGING = frozenset(
    {
        "valid_cells",
        "dff",
        "events",
        "filtered_events",
        "roi_masks",
        "max_projection",
        "average_projection",
        "segmentation_mask_image",
        "dff_traces",
        "corrected_fluorescence_traces",
        "demixed_traces",
        "neuropil_traces",
        "cell_specimen_table",
        "motion_correction",
        "ophys_timestamps",
        "timestamps",
        "frame_rate",
        "running_speed_on_ophys_time",
        "behavior_on_ophys_time",
        "trial_responses",
        "mean_response",
        "change_responses",
        "omission_responses",
        "drifting_grating_metrics",
        "stimulus_analysis",
        "stimulus_metrics",
        "to_pynapple",
        "get_cell_specimen_ids",
        "get_cell_specimen_indices",
        "get_dff_traces",
        "get_segmentation_mask_image",
        "ophys_experiment_id",
        "ophys_session_id",
    }
)


@xr.register_dataset_accessor("ophys")
class OphysAccessor:
    """Analysis of one two-photon imaging plane (:mod:`abo_lake.ophys`) and its behavior
    (:mod:`abo_lake.behavior`), or of a behavior-only session's behavior.

    Raises
    ------
    SchemaError
        If the Dataset is neither an ``ophys_experiment`` (open ``ophys/experiment/<id>``) nor
        a ``behavior_session`` (``behavior/session/<id>``).
    """

    def __init__(self, ds: xr.Dataset) -> None:
        kind = _BEHAVIOR if schema.kind_of(ds) == _BEHAVIOR else _KIND
        try:
            schema.validate(ds, kind)
        except SchemaError as err:
            raise SchemaError(
                f".ophys needs an {_KIND!r} or {_BEHAVIOR!r} Dataset (open "
                f"'ophys/experiment/<id>' or 'behavior/session/<id>' from a release): {err}"
            ) from err
        self._ds = ds
        self._kind = kind

    def __getattribute__(self, name: str) -> Any:
        if name in _IMAGING and object.__getattribute__(self, "_kind") == _BEHAVIOR:
            ds = object.__getattribute__(self, "_ds")
            raise SchemaError(
                f".ophys.{name} needs imaging; this is a behavior-only session "
                f"(behavior_session {ds.attrs.get('behavior_session_id', '?')}, no two-photon "
                "data). Its behavior members work: trials, licks, rewards, running_speed, "
                "stimulus_presentations, stimulus_templates, eye_tracking, metadata, ..."
            )
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        a = self._ds.attrs
        if self._kind == _BEHAVIOR:
            return (
                f"<behavior_session {a.get('behavior_session_id', '?')} · "
                f"{a.get('session_type', '?')} · {self._ds.sizes.get('trials_id', 0)} trials · "
                f"{self._ds.sizes.get(ophys.PRESENTATION, 0)} presentations · "
                f"{a.get('equipment_name', '?')} · no imaging>"
            )
        cre = a.get("cre_line") or ";".join(a.get("driver_line") or []) or "?"
        stimuli = a.get("stimulus_names") or a.get("session_type") or "?"
        if isinstance(stimuli, list):
            stimuli = ", ".join(map(str, stimuli))
        n_t = self._ds.sizes["time"]
        try:
            rate = f"{ophys.frame_rate(self._ds):.2f} Hz"
        except ValueError:  # one timestamp and no ophys_frame_rate attribute
            rate = "? Hz"
        return (
            f"<ophys_experiment {a.get('ophys_experiment_id', '?')} · "
            f"{self._ds.sizes['cell_specimen_id']} cells · {n_t} frames at {rate} · "
            f"depth {a.get('imaging_depth', '?')} µm · {a.get('targeted_structure', '?')} · "
            f"{cre} · stimuli: {stimuli}>"
        )

    # ----------------------------------------------------------------- data
    def valid_cells(self) -> xr.Dataset:
        """The experiment without invalid ROIs (AllenSDK's default); see
        :func:`abo_lake.ophys.valid_cells`."""
        return ophys.valid_cells(self._ds)

    @property
    def dff(self) -> xr.DataArray:
        """ΔF/F (cell_specimen_id, time), lazy."""
        return self._ds["dff"]

    @property
    def events(self) -> pd.DataFrame:
        """AllenSDK's ``events`` table (Visual Behavior only), loaded; see
        :func:`abo_lake.ophys.events`. The lazy (cell_specimen_id, time) events are
        ``ds["events"]``."""
        return ophys.events(self._ds)

    def filtered_events(
        self,
        *,
        filter_scale_seconds: float = ophys.EVENTS_FILTER_SCALE_SECONDS,
        n_time_steps: int = ophys.EVENTS_FILTER_N_TIME_STEPS,
    ) -> xr.DataArray:
        """Events smoothed as AllenSDK's ``filtered_events`` (see
        :func:`abo_lake.ophys.filtered_events`), lazy; also ``trace="filtered_events"``."""
        return ophys.filtered_events(
            self._ds, filter_scale_seconds=filter_scale_seconds, n_time_steps=n_time_steps
        )

    @property
    def roi_masks(self) -> xr.DataArray:
        """ROI masks (cell_specimen_id, y, x) bool over the full field of view, lazy."""
        return self._ds["roi_mask"]

    @property
    def max_projection(self) -> xr.DataArray:
        """Maximum intensity projection (y, x), with AllenSDK's ``.spacing`` (mm) and ``.unit``."""
        return ophys.image(self._ds, "max_projection")

    @property
    def average_projection(self) -> xr.DataArray:
        """Average intensity projection (y, x), with AllenSDK's ``.spacing`` and ``.unit``."""
        return ophys.image(self._ds, "average_projection")

    @property
    def segmentation_mask_image(self) -> xr.DataArray:
        """Sum of the valid ROIs' masks (y, x) int64, lazy, as AllenSDK computes it; see
        :func:`abo_lake.ophys.segmentation_mask_image`."""
        return ophys.segmentation_mask_image(self._ds)

    # ----------------------------------------------------------------- AllenSDK's tables
    @property
    def dff_traces(self) -> pd.DataFrame:
        """AllenSDK's ``dff_traces`` (valid ROIs, loaded); :func:`abo_lake.ophys.traces_table`."""
        return ophys.traces_table(self._ds, "dff_traces")

    @property
    def corrected_fluorescence_traces(self) -> pd.DataFrame:
        """AllenSDK's ``corrected_fluorescence_traces`` with ``r`` and ``RMSE`` (loaded)."""
        return ophys.traces_table(self._ds, "corrected_fluorescence_traces")

    @property
    def demixed_traces(self) -> pd.DataFrame:
        """AllenSDK's ``demixed_traces`` (loaded)."""
        return ophys.traces_table(self._ds, "demixed_traces")

    @property
    def neuropil_traces(self) -> pd.DataFrame:
        """The neuropil traces (loaded); AllenSDK 2.16.2's ``neuropil_traces`` returns the
        demixed ones by mistake, this gives the real ones (column ``neuropil_trace``)."""
        return ophys.traces_table(self._ds, "neuropil_traces")

    @property
    def cell_specimen_table(self) -> pd.DataFrame:
        """AllenSDK's ``cell_specimen_table`` with ``roi_mask`` (valid ROIs, loaded)."""
        return ophys.cell_specimen_table(self._ds)

    @property
    def motion_correction(self) -> pd.DataFrame:
        """AllenSDK's ``motion_correction`` (``x``, ``y``), loaded."""
        return ophys.motion_correction(self._ds)

    @property
    def ophys_timestamps(self) -> np.ndarray:
        """AllenSDK's ``ophys_timestamps`` (s) as a NumPy array."""
        return ophys.ophys_timestamps(self._ds)

    @property
    def ophys_experiment_id(self) -> int:
        """AllenSDK's ``ophys_experiment_id``."""
        return int(self._ds.attrs["ophys_experiment_id"])

    @property
    def ophys_session_id(self) -> int:
        """AllenSDK's ``ophys_session_id``."""
        return int(self._ds.attrs["ophys_session_id"])

    def get_segmentation_mask_image(self) -> xr.DataArray:
        """AllenSDK's legacy ``get_segmentation_mask_image()``: :attr:`segmentation_mask_image`."""
        return ophys.segmentation_mask_image(self._ds)

    def get_cell_specimen_ids(self) -> np.ndarray:
        """AllenSDK's legacy ``get_cell_specimen_ids()``; see
        :func:`abo_lake.ophys.cell_specimen_ids`."""
        return ophys.cell_specimen_ids(self._ds)

    def get_cell_specimen_indices(self, cell_specimen_ids: Sequence[int]) -> list[int]:
        """AllenSDK's legacy ``get_cell_specimen_indices(ids)``; see
        :func:`abo_lake.ophys.cell_specimen_indices`."""
        return ophys.cell_specimen_indices(self._ds, cell_specimen_ids)

    def get_dff_traces(
        self, cell_specimen_ids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """AllenSDK's legacy ``get_dff_traces(cell_specimen_ids=None)``: (timestamps, dF/F);
        see :func:`abo_lake.ophys.dff_traces_of`."""
        return ophys.dff_traces_of(self._ds, cell_specimen_ids)

    @property
    def metadata(self) -> dict[str, Any]:
        """AllenSDK's ``BehaviorOphysExperiment.metadata`` (see :func:`abo_lake.ophys.metadata`;
        ``get_metadata()`` of a Visual Coding 2P experiment), or ``BehaviorSession.metadata`` of
        a behavior-only session (:func:`abo_lake.behavior.metadata`)."""
        if self._kind == _BEHAVIOR:
            return behavior.metadata(self._ds)
        return ophys.metadata(self._ds)

    @property
    def timestamps(self) -> xr.DataArray:
        """Ophys frame timestamps (s)."""
        return self._ds["time"]

    @property
    def frame_rate(self) -> float:
        """Ophys frame rate (Hz) measured from the timestamps (the file's
        ``ophys_frame_rate`` with fewer than two)."""
        return ophys.frame_rate(self._ds)

    # ----------------------------------------------------------------- behavior (AllenSDK's)
    @property
    def stimulus_presentations(self) -> pd.DataFrame:
        """AllenSDK's ``stimulus_presentations`` (Visual Behavior, indexed by
        ``stimulus_presentations_id``; see :func:`abo_lake.behavior.stimulus_presentations`), or
        the Visual Coding 2P stimulus table indexed by ``stimulus_presentation_id``."""
        if "trials_id" in self._ds.dims:
            return behavior.stimulus_presentations(self._ds)
        return ophys.stimulus_presentations(self._ds)

    @property
    def trials(self) -> pd.DataFrame:
        """AllenSDK's ``trials``, indexed by ``trials_id`` (Visual Behavior)."""
        return behavior.trials(self._ds)

    @property
    def licks(self) -> pd.DataFrame:
        """AllenSDK's ``licks``: ``timestamps`` and ``frame`` (Visual Behavior)."""
        return behavior.licks(self._ds)

    @property
    def rewards(self) -> pd.DataFrame:
        """AllenSDK's ``rewards``: ``volume``, ``timestamps``, ``auto_rewarded``."""
        return behavior.rewards(self._ds)

    @property
    def running_speed(self) -> pd.DataFrame:
        """AllenSDK's ``running_speed`` (filtered, cm/s): ``timestamps`` and ``speed``."""
        return behavior.running_speed(self._ds)

    @property
    def raw_running_speed(self) -> pd.DataFrame:
        """AllenSDK's ``raw_running_speed`` (unfiltered, cm/s): ``timestamps`` and ``speed``."""
        return behavior.raw_running_speed(self._ds)

    @property
    def stimulus_timestamps(self) -> np.ndarray:
        """AllenSDK's ``stimulus_timestamps`` (s): every stimulus frame."""
        return behavior.stimulus_timestamps(self._ds)

    @property
    def stimulus_templates(self) -> pd.DataFrame:
        """AllenSDK's ``stimulus_templates``: ``unwarped`` and ``warped`` images by
        ``image_name`` (lazy arrays: ``ds["stimulus_templates.warped"]``)."""
        return behavior.stimulus_templates(self._ds)

    @property
    def eye_tracking(self) -> pd.DataFrame:
        """AllenSDK's ``eye_tracking`` with its blink filtering (z-score 3, dilation 2); see
        :func:`abo_lake.behavior.eye_tracking` for other thresholds."""
        return behavior.eye_tracking(self._ds)

    @property
    def eye_tracking_rig_geometry(self) -> dict[str, Any]:
        """AllenSDK's ``eye_tracking_rig_geometry`` (``{}`` when the session has none)."""
        return behavior.eye_tracking_rig_geometry(self._ds)

    @property
    def task_parameters(self) -> dict[str, Any]:
        """AllenSDK's ``task_parameters``."""
        return behavior.task_parameters(self._ds)

    def get_reward_rate(self) -> np.ndarray:
        """AllenSDK's ``get_reward_rate()``: rewards/min over a ±25-trial window, per trial;
        see :func:`abo_lake.task_performance.get_reward_rate`."""
        return task_performance.get_reward_rate(self._ds)

    def get_rolling_performance_df(self) -> pd.DataFrame:
        """AllenSDK's ``get_rolling_performance_df()``: reward rate, hit and false-alarm rates
        (raw and trial-count corrected) and d′ per trial; see
        :func:`abo_lake.task_performance.get_rolling_performance_df`."""
        return task_performance.get_rolling_performance_df(self._ds)

    def get_performance_metrics(
        self, engaged_trial_reward_rate_threshold: float = 2.0
    ) -> dict[str, Any]:
        """AllenSDK's ``get_performance_metrics(engaged_trial_reward_rate_threshold=2.0)``; see
        :func:`abo_lake.task_performance.get_performance_metrics`."""
        return task_performance.get_performance_metrics(
            self._ds, engaged_trial_reward_rate_threshold
        )

    def get_engaged_trials(self, engaged_trial_reward_rate_threshold: float = 2.0) -> pd.Series:
        """AllenSDK's engagement criterion per trial (reward rate above the threshold,
        rewards/min); see :func:`abo_lake.task_performance.get_engaged_trials`."""
        return task_performance.get_engaged_trials(self._ds, engaged_trial_reward_rate_threshold)

    def get_eye_tracking(
        self, *, z_threshold: float = 3.0, dilation_frames: int = 2
    ) -> pd.DataFrame:
        """AllenSDK's ``eye_tracking`` with other blink thresholds (``BehaviorSession.from_nwb``'s
        ``eye_tracking_z_threshold`` / ``eye_tracking_dilation_frames``); see
        :func:`abo_lake.behavior.eye_tracking`."""
        return behavior.eye_tracking(
            self._ds, z_threshold=z_threshold, dilation_frames=dilation_frames
        )

    def annotated_stimulus_presentations(
        self,
        time_window: Sequence[float] = behavior_alignment.TUTORIAL_WINDOW,
        engaged_trial_reward_rate_threshold: float = 2.0,
    ) -> pd.DataFrame:
        """``stimulus_presentations`` with licks, rewards, mean running speed and pupil area,
        time since the last lick/reward/change, reward rate and engagement per presentation
        (the Visual Behavior tutorials' columns); see
        :func:`abo_lake.behavior_alignment.annotated_stimulus_presentations`."""
        return behavior_alignment.annotated_stimulus_presentations(
            self._ds, time_window, engaged_trial_reward_rate_threshold
        )

    def behavior_on_ophys_time(
        self, *, z_threshold: float = 3.0, dilation_frames: int = 2
    ) -> xr.Dataset:
        """Running speed, blink-filtered pupil area, lick and reward counts per ophys frame;
        see :func:`abo_lake.behavior_alignment.behavior_on_ophys_time`."""
        return behavior_alignment.behavior_on_ophys_time(
            self._ds, z_threshold=z_threshold, dilation_frames=dilation_frames
        )

    def running_speed_on_ophys_time(self) -> xr.DataArray:
        """Running speed (cm/s) interpolated onto the ophys timestamps, lazy; see
        :func:`abo_lake.ophys.running_speed`."""
        return ophys.running_speed(self._ds)

    # ----------------------------------------------------------------- analyses
    def trial_responses(
        self,
        *,
        window: Sequence[float] = (-0.5, 1.0),
        presentations: Any = None,
        trace: str = "dff",
    ) -> xr.DataArray:
        """See :func:`abo_lake.ophys.trial_responses`."""
        return ophys.trial_responses(
            self._ds, window=window, presentations=presentations, trace=trace
        )

    def mean_response(
        self,
        *,
        by: str | Sequence[str] = ("image_name",),
        window: Sequence[float] = (0.0, 0.5),
        baseline: Sequence[float] | None = None,
        presentations: Any = None,
        trace: str = "dff",
    ) -> xr.DataArray:
        """See :func:`abo_lake.ophys.mean_response`."""
        return ophys.mean_response(
            self._ds,
            by=by,
            window=window,
            baseline=baseline,
            presentations=presentations,
            trace=trace,
        )

    def change_responses(
        self, *, window: Sequence[float] = (-0.5, 1.0), trace: str = "dff"
    ) -> xr.DataArray:
        """See :func:`abo_lake.ophys.change_responses`."""
        return ophys.change_responses(self._ds, window=window, trace=trace)

    def omission_responses(
        self, *, window: Sequence[float] = (-0.5, 1.0), trace: str = "dff"
    ) -> xr.DataArray:
        """See :func:`abo_lake.ophys.omission_responses`."""
        return ophys.omission_responses(self._ds, window=window, trace=trace)

    def drifting_grating_metrics(self) -> pd.DataFrame:
        """See :func:`abo_lake.ophys.drifting_grating_metrics`."""
        return ophys.drifting_grating_metrics(self._ds)

    def stimulus_analysis(
        self, stimulus: str, cells: Sequence[int] | None = None
    ) -> vc2p_metrics.StimulusAnalysis:
        """AllenSDK's ``DriftingGratings(data_set)`` / ``StaticGratings`` / ``NaturalScenes`` /
        ``NaturalMovie(data_set, name)`` (Visual Coding 2P): ``.peak``, ``.response``,
        ``.sweep_response``, ``.mean_sweep_response``; see
        :func:`abo_lake.vc2p_metrics.stimulus_analysis`."""
        return vc2p_metrics.stimulus_analysis(self._ds, stimulus, cells)

    def stimulus_metrics(
        self, cells: Sequence[int] | None = None, stimuli: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Every AllenSDK per-cell stimulus metric the session's stimuli allow (Visual Coding
        2P, ``SessionAnalysis`` names); see :func:`abo_lake.vc2p_metrics.stimulus_metrics`."""
        return vc2p_metrics.stimulus_metrics(self._ds, cells, stimuli)

    def to_pynapple(self, *, trace: str = "dff") -> Any:
        """See :func:`abo_lake.ophys.to_pynapple`."""
        return ophys.to_pynapple(self._ds, trace=trace)
