"""GLIF 1–5 neuron models: validation of Allen's ``neuron_config.json`` and our simulator.

The equations are those of AllenSDK 2.16.2 (``allensdk/model/glif/glif_neuron.py`` and
``glif_neuron_methods.py``: the definition; this is our own implementation, not its code).
State per step ``n -> n+1`` under stimulus ``I[n]`` (SI units: V, A, s, F, Ω):

- after-spike currents ``asc[n+1] = asc[n]·exp(-dt/τ)`` (``exp``) or 0 (``none``);
- voltage, forward Euler: ``v[n+1] = v[n] + (I[n] + Σasc[n] - G·cG·(v[n] - El))·dt/(C·cC)``;
- threshold ``θ = θ_v + θ_s + th_inf·c_th_inf``: ``inf`` keeps ``θ_v = θ_s = 0``;
  ``spike_component`` decays ``θ_s`` by ``exp(-b_spike·dt)``; ``three_components_exact`` also
  evolves the voltage component ``θ_v`` exactly (Mihalas & Niebur 2009, eq. 2.1);
- a spike when ``v[n+1] > θ[n+1]``: the ``spike_cut_length`` samples from ``n`` are NaN, the
  resets apply (voltage ``zero`` or ``v_before`` ``a·v+b``; currents ``sum``: new amplitudes
  plus the old ones ×``r`` decayed through the cut; threshold ``inf`` or
  ``three_components``: ``θ_s`` decayed through the cut ``+ a_spike``) and are recorded at
  ``n + spike_cut_length``, where the simulation resumes. A reset above threshold stops it
  (AllenSDK's ``bad_reset_flag``).

Between spikes the dynamics are linear with constant coefficients, so :func:`simulate` steps
through blocks of samples at once (currents in closed form, voltage and threshold as
first-order IIR filters, :func:`scipy.signal.lfilter`) and finds the first crossing of a block;
only the spikes are handled one at a time. Against AllenSDK 2.16.2 on GLIF 1–5 configs and
square, ramp and noise stimuli at 200 kHz (``tests/reference/glif_allensdk.py``): the same spike
time steps, voltage and threshold within 1e-12 V (in fact ~1e-14 V: the filters round the last
bits differently), 40–100× faster (``tests/benchmarks/bench_glif.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy.signal import lfilter

__all__ = [
    "GLIF_LEVELS",
    "METHODS",
    "GlifConfigError",
    "StimulusError",
    "glif_level",
    "simulate",
    "simulate_many",
    "simulate_sweep",
    "sweep_stimulus",
    "validate_config",
]


class GlifConfigError(ValueError):
    """A GLIF neuron config is invalid; the message names the field."""


class StimulusError(ValueError):
    """A stimulus cannot drive a GLIF simulation (units, sampling rate, values)."""


#: Method kind -> method name -> the parameters it takes (AllenSDK's METHOD_LIBRARY).
METHODS: dict[str, dict[str, tuple[str, ...]]] = {
    "AScurrent_dynamics_method": {"exp": (), "none": ()},
    "voltage_dynamics_method": {"linear_forward_euler": ()},
    "threshold_dynamics_method": {
        "inf": (),
        "spike_component": ("a_spike", "b_spike", "a_voltage", "b_voltage"),
        "three_components_exact": ("a_spike", "b_spike", "a_voltage", "b_voltage"),
    },
    "AScurrent_reset_method": {"none": (), "sum": ("r",)},
    "voltage_reset_method": {"zero": (), "v_before": ("a", "b")},
    "threshold_reset_method": {"inf": (), "three_components": ("a_spike", "b_spike")},
}

#: GLIF level -> method names (threshold dynamics, threshold reset, voltage reset, AScurrent
#: dynamics, AScurrent reset), as in the Allen Cell Types Database.
GLIF_LEVELS: dict[int, tuple[str, str, str, str, str]] = {
    1: ("inf", "inf", "zero", "none", "none"),
    2: ("spike_component", "three_components", "v_before", "none", "none"),
    3: ("inf", "inf", "zero", "exp", "sum"),
    4: ("spike_component", "three_components", "v_before", "exp", "sum"),
    5: ("three_components_exact", "three_components", "v_before", "exp", "sum"),
}
_LEVEL_KEYS = (
    "threshold_dynamics_method",
    "threshold_reset_method",
    "voltage_reset_method",
    "AScurrent_dynamics_method",
    "AScurrent_reset_method",
)
#: Scalar fields every config needs (AllenSDK's ``GlifNeuron.from_dict``; ``th_adapt`` may be
#: null).
SCALARS = (
    "El",
    "dt",
    "R_input",
    "C",
    "th_inf",
    "spike_cut_length",
    "init_voltage",
    "init_threshold",
)
ARRAYS = ("asc_tau_array", "asc_amp_array", "init_AScurrents")
COEFFS = ("th_inf", "C", "G", "a", "b", "asc_amp_array")
_POSITIVE = ("dt", "R_input", "C")


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GlifConfigError(f"field {field!r} is {value!r}, expected a number")
    if not math.isfinite(value):
        raise GlifConfigError(f"field {field!r} is {value!r}, expected a finite number")
    return float(value)


def _vector(value: Any, field: str, n: int | None) -> np.ndarray:
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise GlifConfigError(f"field {field!r} is {value!r}, expected a list of numbers")
    out = np.array([_finite(v, f"{field}[{i}]") for i, v in enumerate(value)], dtype=float)
    if n is not None and len(out) != n:
        raise GlifConfigError(
            f"field {field!r} has {len(out)} values, expected {n} (one per asc_tau_array)"
        )
    return out


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``neuron_config.json`` dict; return it unchanged when valid.

    Raises
    ------
    GlifConfigError
        Naming the field: a missing field or coefficient, a non-finite or non-numeric value, a
        capacitance, resistance or ``dt`` that is not positive, a time constant that is not
        positive, arrays of different lengths, an unknown method name, missing or unknown
        method parameters, or a threshold reset that needs threshold components its dynamics
        do not make.
    """
    if not isinstance(config, Mapping):
        raise GlifConfigError(f"a GLIF config is a JSON object, not {type(config).__name__}")
    for key in (*SCALARS, *ARRAYS, "coeffs", *METHODS):
        if key not in config:
            raise GlifConfigError(f"field {key!r} is missing")
    for key in SCALARS:
        value = _finite(config[key], key)
        if key in _POSITIVE and value <= 0:
            raise GlifConfigError(f"field {key!r} is {value!r}, expected a positive number")
    if config["spike_cut_length"] < 0 or config["spike_cut_length"] != int(
        config["spike_cut_length"]
    ):
        raise GlifConfigError(
            f"field 'spike_cut_length' is {config['spike_cut_length']!r}, expected a whole "
            "number of time steps >= 0"
        )
    if config.get("th_adapt") is not None:
        _finite(config["th_adapt"], "th_adapt")
    tau = _vector(config["asc_tau_array"], "asc_tau_array", None)
    if (tau <= 0).any():
        raise GlifConfigError(f"field 'asc_tau_array' is {tau.tolist()}, expected positive")
    _vector(config["asc_amp_array"], "asc_amp_array", len(tau))
    _vector(config["init_AScurrents"], "init_AScurrents", len(tau))
    coeffs = config["coeffs"]
    if not isinstance(coeffs, Mapping):
        raise GlifConfigError(f"field 'coeffs' is {coeffs!r}, expected an object")
    for key in COEFFS:
        if key not in coeffs:
            raise GlifConfigError(f"field 'coeffs.{key}' is missing (coefficient)")
        if key == "asc_amp_array":
            _vector(coeffs[key], f"coeffs.{key}", len(tau))
        else:
            _finite(coeffs[key], f"coeffs.{key}")
    if _finite(coeffs["C"], "coeffs.C") <= 0:
        raise GlifConfigError(f"field 'coeffs.C' is {coeffs['C']!r}, expected positive")
    if _finite(coeffs["G"], "coeffs.G") <= 0:
        raise GlifConfigError(f"field 'coeffs.G' is {coeffs['G']!r}, expected positive")
    for kind, library in METHODS.items():
        method = config[kind]
        if not isinstance(method, Mapping) or "name" not in method or "params" not in method:
            raise GlifConfigError(f"field {kind!r} is {method!r}, expected {{'name', 'params'}}")
        name, params = method["name"], method["params"]
        if name not in library:
            raise GlifConfigError(
                f"field '{kind}.name' is {name!r}, an unknown method; expected one of "
                f"{sorted(library)}"
            )
        params = params or {}
        if not isinstance(params, Mapping):
            raise GlifConfigError(f"field '{kind}.params' is {params!r}, expected an object")
        wanted = library[name]
        for p in wanted:
            if p not in params:
                raise GlifConfigError(f"field '{kind}.params.{p}' is missing (method {name!r})")
            if p == "r":
                _vector(params[p], f"{kind}.params.r", len(tau))
            else:
                _finite(params[p], f"{kind}.params.{p}")
        extra = sorted(set(params) - set(wanted))
        if extra:
            raise GlifConfigError(
                f"field '{kind}.params' has {extra}, which method {name!r} does not take"
            )
    th_dyn = config["threshold_dynamics_method"]["name"]
    if config["threshold_reset_method"]["name"] == "three_components" and th_dyn == "inf":
        raise GlifConfigError(
            "field 'threshold_reset_method.name' is 'three_components', which needs threshold "
            "components; 'threshold_dynamics_method.name' 'inf' makes none"
        )
    b = config["threshold_dynamics_method"]["params"] or {}
    if th_dyn == "three_components_exact":
        bv = b["b_voltage"] * coeffs["b"]
        g_c = 1.0 / (config["R_input"] * coeffs["G"]) / (config["C"] * coeffs["C"])
        if bv == 0 or bv == g_c:
            raise GlifConfigError(
                "field 'threshold_dynamics_method.params.b_voltage' (times coeffs.b) is "
                f"{bv!r}, expected non-zero and unlike G/C"
            )
    return dict(config)


def glif_level(config: Mapping[str, Any]) -> int | None:
    """The GLIF level (1–5) of a config's methods, or None for another combination."""
    names = tuple(config[k]["name"] for k in _LEVEL_KEYS)
    for level, wanted in GLIF_LEVELS.items():
        if names == wanted:
            return level
    return None


# -- stimulus ---------------------------------------------------------------------------------

_AMPERES = {"a": 1.0, "amps": 1.0, "amperes": 1.0, "ampere": 1.0, "pa": 1e-12, "na": 1e-9}


def _stimulus(stimulus: Any, dt: float | None) -> tuple[np.ndarray, float]:
    """(current in A, dt in s) from an array (with ``dt``) or a DataArray with units."""
    if isinstance(stimulus, xr.DataArray):
        units = stimulus.attrs.get("units")
        if units is None or str(units).lower() not in _AMPERES:
            raise StimulusError(
                f"stimulus field 'units' is {units!r}, expected a current: one of "
                "'A', 'pA', 'nA' (a GLIF model is driven by injected current)"
            )
        scale = _AMPERES[str(units).lower()]
        rate = stimulus.attrs.get("sampling_rate")
        if dt is None and rate is not None:
            rate = float(np.asarray(rate))
            if not (math.isfinite(rate) and rate > 0):
                raise StimulusError(f"stimulus field 'sampling_rate' is {rate!r}, expected > 0 Hz")
            dt = 1.0 / rate
        if dt is None and stimulus.ndim == 1 and stimulus.dims[0] in stimulus.coords:
            t = np.asarray(stimulus[stimulus.dims[0]].values, dtype=float)
            steps = np.diff(t)
            if len(steps) and (steps.min() <= 0 or np.ptp(steps) > 1e-6 * steps.mean()):
                raise StimulusError(
                    f"stimulus field {stimulus.dims[0]!r} is not uniformly sampled "
                    f"(steps {steps.min()!r} to {steps.max()!r} s)"
                )
            dt = float(steps.mean()) if len(steps) else None
        values = np.asarray(stimulus.values, dtype=float) * scale
    else:
        values = np.asarray(stimulus, dtype=float)
    if dt is None:
        raise StimulusError(
            "stimulus field 'dt' is missing: pass dt= (s), or a DataArray with a "
            "'sampling_rate' attr (Hz) or a uniform time coordinate"
        )
    if values.ndim != 1:
        raise StimulusError(f"stimulus has shape {values.shape}, expected one sweep (1-D)")
    if not np.isfinite(values).all():
        raise StimulusError("stimulus field 'values' has NaN or infinite samples")
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise StimulusError(f"stimulus field 'dt' is {dt!r}, expected a positive time step (s)")
    return values, dt


def sweep_stimulus(ephys: xr.Dataset, sweep_number: int) -> xr.DataArray:
    """One sweep's stimulus of a ``celltypes_ephys`` Dataset (AllenSDK's ``get_sweep``: the
    whole sweep), with its units and sampling rate, for :func:`simulate`."""
    from abo_lake import celltypes

    sweep = celltypes.get_sweep(ephys, sweep_number)
    rate = float(sweep["sampling_rate"])
    return xr.DataArray(
        sweep["stimulus"],
        dims=("time",),
        coords={"time": np.arange(len(sweep["stimulus"])) / rate},
        attrs={"units": sweep["stimulus_unit"], "sampling_rate": rate},
        name="stimulus",
    )


def simulate_sweep(
    ephys: xr.Dataset,
    model: Mapping[str, Any] | xr.Dataset,
    stimulus: Any,
    dt: float | None = None,
) -> xr.Dataset:
    """``.celltypes.simulate``: a GLIF model on one of a specimen's sweeps or a custom current.

    Parameters
    ----------
    ephys
        The specimen's ``celltypes_ephys`` Dataset.
    model
        A ``glif_model`` Dataset (``celltypes/specimen/<id>/glif/<model_id>``) or config dict.
    stimulus
        A sweep number of ``ephys`` (its whole stimulus at its sampling rate, as AllenSDK's
        GLIF example takes it from ``NwbDataSet.get_sweep``), or a current as for
        :func:`simulate`.
    dt
        Time step (s); by default the sweep's sampling interval.

    Returns
    -------
    xarray.Dataset
        As :func:`simulate`, with ``attrs["sweep_number"]`` for a sweep.
    """
    if isinstance(stimulus, int | np.integer) and not isinstance(stimulus, bool):
        out = simulate(model, sweep_stimulus(ephys, int(stimulus)), dt)
        out.attrs["sweep_number"] = int(stimulus)
        return out
    return simulate(model, stimulus, dt)


# -- simulation -------------------------------------------------------------------------------


class _Model:
    """The constants of one validated config at one ``dt``."""

    def __init__(self, config: Mapping[str, Any], dt: float) -> None:
        c = config["coeffs"]
        self.dt = dt
        self.El = float(config["El"])
        self.C = float(config["C"]) * c["C"]
        self.g = 1.0 / float(config["R_input"]) * c["G"]
        tau_m = self.C / self.g
        if dt >= tau_m:
            raise StimulusError(
                f"stimulus field 'dt' is {dt!r} s, not below the membrane time constant "
                f"{tau_m:.3g} s: check the sampling rate (Hz, not kHz)"
            )
        self.th_inf = float(config["th_inf"]) * c["th_inf"]
        self.cut = int(config["spike_cut_length"])
        self.k = 1.0 / np.asarray(config["asc_tau_array"], dtype=float)
        self.amp = np.asarray(config["asc_amp_array"], float) * np.asarray(c["asc_amp_array"])
        self.asc_method = config["AScurrent_dynamics_method"]["name"]
        self.decay = np.exp(-self.k * dt) if self.asc_method == "exp" else np.zeros_like(self.k)
        self.th_method = config["threshold_dynamics_method"]["name"]
        p = config["threshold_dynamics_method"]["params"] or {}
        self.b_spike = float(p.get("b_spike", 0.0))
        self.a_v = float(p.get("a_voltage", 0.0)) * c["a"]
        self.b_v = float(p.get("b_voltage", 0.0)) * c["b"]
        self.v_reset = config["voltage_reset_method"]
        self.th_reset = config["threshold_reset_method"]
        self.asc_reset = config["AScurrent_reset_method"]
        self.init = (
            float(config["init_voltage"]),
            float(config["init_threshold"]),
            np.asarray(config["init_AScurrents"], dtype=float),
        )

    def block(self, stim: np.ndarray, v: float, tv: float, ts: float, asc: np.ndarray):
        """Voltage, threshold, components and currents after each sample of ``stim``."""
        n = len(stim)
        if self.asc_method == "exp" and asc.size:
            powers = self.decay[None, :] ** np.arange(n + 1)[:, None]  # (n+1, m)
            ascs = powers * asc[None, :]
        else:
            ascs = np.zeros((n + 1, asc.size))
            ascs[0] = asc
        current = stim + ascs[:-1].sum(axis=1)  # I[n] + Σasc[n]
        f = self.dt / self.C
        alpha = 1.0 - self.g * f
        gamma = (current + self.g * self.El) * f
        volts = lfilter([1.0], [1.0, -alpha], gamma, zi=[alpha * v])[0]
        if self.th_method == "inf":
            tvs = np.zeros(n)
            tss = np.zeros(n)
            theta = np.full(n, self.th_inf)
        else:
            tss = ts * np.exp(-self.b_spike * self.dt) ** np.arange(1, n + 1)
            if self.th_method == "three_components_exact":
                g, C, a, b, dt, El = self.g, self.C, self.a_v, self.b_v, self.dt, self.El
                beta = (current + g * El) / g
                phi = a / (b - g / C)
                eg, eb = np.exp(-g * dt / C), 1.0 / np.exp(b * dt)
                v0 = np.concatenate([[v], volts[:-1]])
                u = phi * (v0 - beta) * eg - eb * (phi * (v0 - beta) + (a / b) * (beta - El))
                u += (a / b) * (beta - El)
                tvs = lfilter([1.0], [1.0, -eb], u, zi=[eb * tv])[0]
            else:
                tvs = np.zeros(n)
            theta = tvs + tss + self.th_inf
        return volts, theta, tvs, tss, ascs[1:]

    def reset(self, v: float, tv: float, ts: float, asc: np.ndarray):
        """The state after a spike whose step ended at ``v``, ``tv``, ``ts``, ``asc``."""
        if self.asc_reset["name"] == "sum":
            r = np.asarray(self.asc_reset["params"]["r"], dtype=float)
            asc = self.amp + asc * r * np.exp(-(self.k * self.dt * self.cut))
        else:
            if np.sum(asc) != 0:
                raise ValueError("AScurrent_reset_method 'none' with non-zero after-spike currents")
            asc = np.zeros_like(asc)
        if self.v_reset["name"] == "v_before":
            v = self.v_reset["params"]["a"] * v + self.v_reset["params"]["b"]
        else:
            v = 0.0
        if self.th_reset["name"] == "three_components":
            p = self.th_reset["params"]
            if self.cut:
                ts = ts * np.exp(-p["b_spike"] * (self.cut * self.dt))
            ts = ts + p["a_spike"]
            theta = ts + tv + self.th_inf
        else:
            theta = self.th_inf
        return v, theta, tv, ts, asc


def _run(config: Mapping[str, Any], stim: np.ndarray, dt: float) -> dict[str, Any]:
    """The simulation as arrays (AllenSDK's ``GlifNeuron.run`` outputs)."""
    m = _Model(config, dt)
    n_steps, n_asc = len(stim), len(m.k)
    volts = np.full(n_steps, np.nan)
    theta = np.full(n_steps, np.nan)
    ascs = np.full((n_steps, n_asc), np.nan)
    v, th, asc = m.init
    tv = ts = 0.0
    spikes: list[int] = []
    interp: list[float] = []
    bad_reset = False
    step, size = 0, 4096
    while step < n_steps:
        end = min(n_steps, step + size)
        bv, bth, btv, bts, basc = m.block(stim[step:end], v, tv, ts, asc)
        above = np.flatnonzero(bv > bth)
        if not len(above):
            volts[step:end], theta[step:end], ascs[step:end] = bv, bth, basc
            v, th, tv, ts, asc = bv[-1], bth[-1], btv[-1], bts[-1], basc[-1]
            step = end
            size = min(size * 2, 1 << 16)
            continue
        j = int(above[0])
        volts[step : step + j], theta[step : step + j] = bv[:j], bth[:j]
        ascs[step : step + j] = basc[:j]
        v0, th0 = (bv[j - 1], bth[j - 1]) if j else (v, th)
        v1, th1 = bv[j], bth[j]
        t = step + j
        spikes.append(t)
        interp.append(t * dt + dt * (th0 - v0) / ((v1 - v0) - (th1 - th0)))
        v, th, tv, ts, asc = m.reset(v1, btv[j], bts[j], basc[j])
        bad_reset = v > th
        record = t + m.cut
        if record < n_steps:
            volts[record], theta[record], ascs[record] = v, th, asc
        step = record + 1
        if bad_reset:
            volts[step : step + 5], theta[step : step + 5], ascs[step : step + 5] = v, th, asc
            break
        size = max(256, 2 * (j + 1))
    return {
        "voltage": volts,
        "threshold": theta,
        "AScurrents": ascs,
        "spike_time_steps": np.asarray(spikes, dtype=np.int64),
        "interpolated_spike_times": np.asarray(interp, dtype=float),
        "bad_reset": bad_reset,
    }


def simulate(
    config: Mapping[str, Any] | xr.Dataset, stimulus: Any, dt: float | None = None
) -> xr.Dataset:
    """Simulate a GLIF neuron on one stimulus (AllenSDK's ``GlifNeuron.run``).

    Parameters
    ----------
    config
        A ``neuron_config.json`` dict or a ``glif_model`` Dataset from the lake.
    stimulus
        Injected current: an array in A (then ``dt`` is needed), or a DataArray with
        ``attrs["units"]`` (``A``, ``pA``, ``nA``) and a ``sampling_rate`` attr (Hz) or a
        uniform time coordinate (:func:`sweep_stimulus` gives one from a lake sweep).
    dt
        Time step in s (overrides the config's ``dt``, which is not the stimulus's, as in
        AllenSDK: set it to the stimulus's sampling interval).

    Returns
    -------
    xarray.Dataset
        Along ``time`` (s, ``n·dt``): ``stimulus`` (A), ``voltage`` and ``threshold`` (V,
        NaN during spike cuts), ``after_spike_currents`` (A, along ``asc`` too); along
        ``spike``: ``spike_times`` (s, the first sample above threshold: AllenSDK's
        ``grid_spike_times``), ``interpolated_spike_times`` (s) and ``spike_time_steps``.
        ``attrs["bad_reset"]`` is True when a reset landed above threshold and the simulation
        stopped, as AllenSDK's does.

    Raises
    ------
    GlifConfigError
        An invalid config (naming the field).
    StimulusError
        A stimulus without current units, without a sampling rate, with non-finite samples,
        or a ``dt`` not below the membrane time constant.
    """
    if isinstance(config, xr.Dataset):
        from abo_lake.sources.glif import config_of

        config = config_of(config)
    validate_config(config)
    stim, dt = _stimulus(stimulus, dt)
    out = _run(config, stim, dt)
    steps = out["spike_time_steps"]
    return xr.Dataset(
        {
            "stimulus": ("time", stim, {"units": "A"}),
            "voltage": ("time", out["voltage"], {"units": "V"}),
            "threshold": ("time", out["threshold"], {"units": "V"}),
            "after_spike_currents": (("time", "asc"), out["AScurrents"], {"units": "A"}),
            "spike_times": ("spike", steps * dt, {"units": "s"}),
            "interpolated_spike_times": ("spike", out["interpolated_spike_times"], {"units": "s"}),
            "spike_time_steps": ("spike", steps),
        },
        coords={"time": ("time", np.arange(len(stim)) * dt, {"units": "s"})},
        attrs={"dt": dt, "bad_reset": int(out["bad_reset"]), "glif_level": glif_level(config) or 0},
    )


def simulate_many(
    configs: Sequence[Mapping[str, Any] | xr.Dataset],
    stimulus: Any,
    dt: float | None = None,
    client: Any = None,
    variables: Sequence[str] | None = None,
) -> list[xr.Dataset]:
    """:func:`simulate` each config on the same stimulus, one dask task per config.

    Parameters
    ----------
    configs
        Configs or ``glif_model`` Datasets.
    stimulus, dt
        As for :func:`simulate` (sent to the workers once).
    client
        A ``distributed.Client``; the default client, or dask's local threads without one.
    variables
        Variables of each result to keep (e.g. ``["spike_times"]``): the workers send only
        those back (a 3 s sweep at 200 kHz is ~30 MB of traces per model); default all.

    Returns
    -------
    list of xarray.Dataset
        One simulation per config, in order.
    """
    import dask

    from abo_lake.scheduling import compute, running_client

    plain = []
    for c in configs:
        if isinstance(c, xr.Dataset):
            from abo_lake.sources.glif import config_of

            c = config_of(c)
        plain.append(validate_config(c))
    stim, dt = _stimulus(stimulus, dt)
    if client is None:
        client = running_client()  # without importing distributed when there is none
    if client is not None:
        [stim_f] = client.scatter([stim], broadcast=True)
        futures = [client.submit(_simulate_kept, c, stim_f, dt, variables) for c in plain]
        return client.gather(futures)
    tasks = [dask.delayed(_simulate_kept)(c, stim, dt, variables) for c in plain]
    return list(compute(*tasks))


def _simulate_kept(
    config: Mapping[str, Any], stim: np.ndarray, dt: float, variables: Sequence[str] | None
) -> xr.Dataset:
    out = simulate(config, stim, dt)
    return out if variables is None else out[list(variables)]
