"""Seeded Cell Types specimens: an NWB 1 ``ephys.nwb``, ``ephys_sweeps.json`` and an SWC.

Each specimen folder ``specimen_<id>/`` holds what ``CellTypesCache`` downloads
(``ALLEN_DATA.md`` section 5):

- ``ephys.nwb``: NWB 1.0.5 HDF5 written with h5py in the AIBS in-vitro layout read by
  AllenSDK's ``NwbDataSet``. Sweep ``n`` is a TimeSeries at ``stimulus/presentation/Sweep_n``
  (current in pA, ``conversion`` 1e-12, unit "Amps") and ``acquisition/timeseries/Sweep_n``
  (membrane potential in mV, ``conversion`` 1e-3, unit "Volts"), both float32 with the
  sampling rate in the ``rate`` attribute of ``starting_time`` (200 kHz). The epoch
  ``epochs/Sweep_n/{stimulus,response}`` holds ``idx_start``, ``count`` and a soft link
  ``timeseries`` to the series; ``epochs/Experiment_n`` starts after the test pulse.
  Sweep metadata (``aibs_stimulus_name``, ``aibs_stimulus_amplitude_pa``, ``gain``, ``seal``,
  ``initial_access_resistance``, ...) are datasets of the stimulus series, where
  ``NwbDataSet.get_sweep_metadata`` looks. ``general/generated_by`` records pipeline version
  "1.1", which tells AllenSDK to apply ``conversion``. Threshold-crossing spike times (s from
  the sweep start) are at ``analysis/spike_times/Sweep_n``.
- ``ephys_sweeps.json``: one record per sweep (sweep_number, stimulus_name, num_spikes, ...).
- ``reconstruction.swc``: a morphology grown by a seeded branching process (soma at the
  origin, basal and apical dendrites, an axon).

The response is an adaptive leaky integrate-and-fire neuron driven by the stimulus, simulated
at 20 kHz (vectorised over sweeps) and interpolated to 200 kHz with a stereotyped action
potential added at each spike. The neuron's rheobase is 100-200 pA by construction, so a
50 pA Long Square never fires and larger Long Squares fire more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

__all__ = ["QC_FAILURES", "SAMPLING_RATE", "write"]

#: Sampling rate of every sweep (Hz), as in most Cell Types files.
SAMPLING_RATE = 200_000.0
_SIM_STEP = 10  # the neuron is simulated every 10 samples (20 kHz)
_TEST_PULSE = (0.010, 0.020, -20.0)  # start s, stop s, amplitude pA
_EXPERIMENT_START_S = 0.030
_STIM_CONVERSION = 1e-12  # stored pA -> A
_RESP_CONVERSION = 1e-3  # stored mV -> V
_PIPELINE_VERSION = "1.1"


@dataclass(frozen=True)
class _SweepSpec:
    sweep_number: int
    stimulus_name: str
    amplitude_pa: float
    description: str


@dataclass(frozen=True)
class _Scale:
    sweep_s: float  # length of every sweep
    onset_s: float  # stimulus onset
    long_square_s: float  # Long Square step duration
    protocol: tuple[_SweepSpec, ...]
    morphology_orders: int  # maximum branch order of dendrites


def _protocol(kind: str) -> tuple[_SweepSpec, ...]:
    if kind == "tiny":
        items = [
            ("Short Square", 800.0, "C1SSCOARSE150112"),
            ("Long Square", 50.0, "C1LSCOARSE150216"),
            ("Long Square", 250.0, "C1LSCOARSE150216"),
            ("Long Square", 400.0, "C1LSCOARSE150216"),
            ("Ramp", 400.0, "C1RP25PR1S"),
        ]
        first = 8  # numbers 8..12 so that HDF5's name order differs from numeric order
    elif kind == "features":  # what IPFX's long-square analysis needs, in few samples
        items = [("Long Square", float(a), "C1LSCOARSE150216") for a in range(-90, 300, 40)]
        items += [("Ramp", 400.0, "C1RP25PR1S")]
        first = 3
    else:
        items = [("Short Square", a, "C1SSCOARSE150112") for a in (700.0, 750.0, 800.0, 850.0)]
        items += [("Long Square", float(a), "C1LSCOARSE150216") for a in range(-110, 390, 20)]
        items += [("Ramp", 400.0, "C1RP25PR1S")] * 3
        items += [("Noise 1", a, "C1NSSEED_1150216") for a in (100.0, 100.0, 150.0, 150.0)]
        items += [("Noise 1", a, "C1NSSEED_1150216") for a in (200.0, 200.0)]
        first = 3
    return tuple(
        _SweepSpec(first + i, name, amp, f"{desc}[{i}]")
        for i, (name, amp, desc) in enumerate(items)
    )


_SCALES = {
    "tiny": _Scale(0.5, 0.1, 0.3, _protocol("tiny"), morphology_orders=4),
    "realistic": _Scale(3.0, 1.02, 1.0, _protocol("realistic"), morphology_orders=6),
    # 0.6 s before and 0.7 s after the step: IPFX's QC epochs (0.5 s of stable Vm before the
    # stimulus and at the end of the recording) lie after the test pulse and the step
    "features": _Scale(1.8, 0.6, 0.5, _protocol("features"), morphology_orders=3),
}


@dataclass(frozen=True)
class _Neuron:
    e_l: float  # resting potential, mV
    r_mohm: float  # input resistance, MOhm
    tau_m: float  # membrane time constant, s
    v_th: float  # threshold, mV
    v_reset: float  # reset, mV
    b_pa: float  # spike-triggered adaptation current, pA
    tau_w: float  # adaptation time constant, s
    t_ref: float  # refractory period, s
    noise_pa: float  # input noise per simulation step, pA


def _neuron(rng: np.random.Generator) -> _Neuron:
    e_l = float(rng.uniform(-75.0, -65.0))
    r = float(rng.uniform(120.0, 180.0))
    gap = float(rng.uniform(18.0, 24.0))  # rheobase = gap / r in nA: 100..200 pA
    return _Neuron(
        e_l=e_l,
        r_mohm=r,
        tau_m=float(rng.uniform(0.010, 0.025)),
        v_th=e_l + gap,
        v_reset=e_l + float(rng.uniform(3.0, 8.0)),
        b_pa=float(rng.uniform(3.0, 8.0)),
        tau_w=float(rng.uniform(0.05, 0.15)),
        t_ref=0.002,
        noise_pa=5.0,
    )


def _stimulus(spec: _SweepSpec, scale: _Scale, rng: np.random.Generator) -> np.ndarray:
    """Return the injected current of one sweep in pA at :data:`SAMPLING_RATE`."""
    n = round(scale.sweep_s * SAMPLING_RATE)
    t = np.arange(n) / SAMPLING_RATE
    i = np.zeros(n)
    tp0, tp1, tp_amp = _TEST_PULSE
    i[(t >= tp0) & (t < tp1)] = tp_amp
    on = t >= scale.onset_s
    if spec.stimulus_name == "Long Square":
        i[on & (t < scale.onset_s + scale.long_square_s)] = spec.amplitude_pa
    elif spec.stimulus_name == "Short Square":
        i[on & (t < scale.onset_s + 0.003)] = spec.amplitude_pa
    elif spec.stimulus_name == "Ramp":
        # Allen ramps rise at 25 pA/s for many seconds; ours reaches the amplitude at sweep end
        stop = scale.sweep_s - 0.01
        ramp = on & (t < stop)
        i[ramp] = spec.amplitude_pa * (t[ramp] - scale.onset_s) / (stop - scale.onset_s)
    elif spec.stimulus_name == "Noise 1":
        stop = scale.sweep_s - 0.1
        noisy = on & (t < stop)
        # pink-ish noise: white noise low-passed at ~100 Hz, 20% coefficient of variation
        white = rng.normal(0.0, 1.0, int(noisy.sum()))
        kernel = np.exp(-np.arange(2000) / 300.0)
        pink = np.convolve(white, kernel / np.linalg.norm(kernel), mode="same")
        i[noisy] = spec.amplitude_pa * (1.0 + 0.2 * pink)
    return i


def _spike_shape() -> np.ndarray:
    """Return an action potential (mV above the trace) at 200 kHz, 3 ms long."""
    t = np.arange(round(0.003 * SAMPLING_RATE)) / SAMPLING_RATE
    k = np.exp(-t / 0.0004) - np.exp(-t / 0.0001)
    return 75.0 * k / k.max()


def _simulate(
    stim_pa: np.ndarray, cell: _Neuron, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Drive the neuron with every sweep at once.

    Returns
    -------
    (response_mv, spike_times)
        Membrane potential (n_sweeps, n_samples) in mV and each sweep's spike times in s.
    """
    n_sweeps, n = stim_pa.shape
    i_sim = stim_pa[:, ::_SIM_STEP] + rng.normal(0.0, cell.noise_pa, (n_sweeps, -(-n // _SIM_STEP)))
    dt = _SIM_STEP / SAMPLING_RATE
    decay_m, decay_w = np.exp(-dt / cell.tau_m), np.exp(-dt / cell.tau_w)
    n_ref = round(cell.t_ref / dt)
    v = np.full(n_sweeps, cell.e_l)
    w = np.zeros(n_sweeps)
    refractory = np.zeros(n_sweeps, dtype=np.int64)
    trace = np.empty(i_sim.shape)
    spikes: list[list[float]] = [[] for _ in range(n_sweeps)]
    for k in range(i_sim.shape[1]):
        v_inf = cell.e_l + 1e-3 * cell.r_mohm * (i_sim[:, k] - w)
        v_new = np.where(refractory > 0, cell.v_reset, v_inf + (v - v_inf) * decay_m)
        fired = v_new >= cell.v_th
        if fired.any():
            for j in np.flatnonzero(fired):
                frac = (cell.v_th - v[j]) / (v_new[j] - v[j])
                spikes[j].append((k - 1 + frac) * dt)
            v_new[fired] = cell.v_reset
            w[fired] += cell.b_pa
            refractory[fired] = n_ref
        refractory[refractory > 0] -= 1
        w *= decay_w
        v = v_new
        trace[:, k] = v
    t_sim = np.arange(i_sim.shape[1]) * dt
    t = np.arange(n) / SAMPLING_RATE
    shape = _spike_shape()
    response = np.empty((n_sweeps, n))
    for j in range(n_sweeps):
        response[j] = np.interp(t, t_sim, trace[j])
        for s in spikes[j]:
            start = int(np.ceil(s * SAMPLING_RATE))
            stop = min(n, start + shape.size)
            response[j, start:stop] += shape[: stop - start]
    response += rng.normal(0.0, 0.05, response.shape)  # amplifier noise, mV
    return response, [np.asarray(s, dtype=np.float64) for s in spikes]


#: Ways :func:`write` can spoil a sweep so that it fails IPFX's sweep QC.
QC_FAILURES = {
    "noisy_baseline": "0.3 mV rms noise from the sweep start to the stimulus onset (pre-noise "
    "and slow noise above IPFX's 0.07 / 0.5 mV)",
    "drifting_vm": "Vm drifting linearly from the stimulus onset to +3 mV at the sweep end "
    "(Vm delta above IPFX's 1 mV)",
}


def _spoil(resp_mv: np.ndarray, how: str, scale: _Scale, rng: np.random.Generator) -> None:
    """Make one sweep (row of ``resp_mv``, in place) fail QC as :data:`QC_FAILURES` says."""
    n = resp_mv.size
    onset = round(scale.onset_s * SAMPLING_RATE)
    if how == "noisy_baseline":
        resp_mv[:onset] += rng.normal(0.0, 0.3, onset)
    elif how == "drifting_vm":
        resp_mv[onset:] += np.linspace(0.0, 3.0, n - onset)
    else:
        choices = sorted(QC_FAILURES)
        raise ValueError(f"qc_failures: unknown failure {how!r}; choose one of {choices}")


def _bytes(s: str) -> np.bytes_:
    return np.bytes_(s.encode())


def _series(
    group: h5py.Group,
    data: np.ndarray,
    *,
    unit: str,
    conversion: float,
    ancestry: list[str],
    description: str,
    metadata: dict[str, float | str],
) -> None:
    group.attrs["ancestry"] = np.array([a.encode() for a in ancestry])
    group.attrs["neurodata_type"] = _bytes("TimeSeries")
    group.attrs["description"] = _bytes(description)
    group.attrs["source"] = _bytes("abo_lake.synthetic.celltypes")
    group.attrs["comments"] = _bytes("")
    group.attrs["help"] = _bytes("Current or voltage of one patch-clamp sweep")
    dset = group.create_dataset(
        "data",
        data=data.astype(np.float32),
        chunks=(min(data.size, 65536),),
        compression="gzip",
        compression_opts=1,
        shuffle=True,
    )
    dset.attrs["conversion"] = conversion
    dset.attrs["resolution"] = np.nan
    dset.attrs["unit"] = _bytes(unit)
    start = group.create_dataset("starting_time", data=0.0)
    start.attrs["rate"] = SAMPLING_RATE
    start.attrs["unit"] = _bytes("Seconds")
    group.create_dataset("num_samples", data=np.int32(data.size))
    group.create_dataset("electrode_name", data=_bytes("Electrode 1"))
    for name, value in metadata.items():
        group.create_dataset(name, data=_bytes(value) if isinstance(value, str) else value)


def _epoch(f: h5py.File, name: str, idx_start: int, count: int, sweep: int, start_s: float) -> None:
    ep = f.create_group(f"epochs/{name}")
    ep.attrs["neurodata_type"] = _bytes("Epoch")
    ep.attrs["ancestry"] = np.array([b"Epoch"])
    ep.create_dataset("description", data=_bytes(f"{name.split('_')[0]} of sweep {sweep}"))
    ep.create_dataset("start_time", data=start_s + idx_start / SAMPLING_RATE)
    ep.create_dataset("stop_time", data=start_s + (idx_start + count) / SAMPLING_RATE)
    ep.create_dataset("tags", data=np.array([name.split("_")[0].encode()]))
    for part, target in [
        ("stimulus", f"/stimulus/presentation/Sweep_{sweep}"),
        ("response", f"/acquisition/timeseries/Sweep_{sweep}"),
    ]:
        g = ep.create_group(part)
        g.create_dataset("idx_start", data=np.int64(idx_start))
        g.create_dataset("count", data=np.int64(count))
        g["timeseries"] = h5py.SoftLink(target)


def _write_nwb(
    path: Path,
    specimen_id: int,
    specimen_name: str,
    sweeps: list[dict],
    stim_pa: np.ndarray,
    resp_mv: np.ndarray,
    spikes: list[np.ndarray],
) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("nwb_version", data=_bytes("NWB-1.0.5"))
        f.create_dataset("identifier", data=_bytes(f"Cell Types specimen {specimen_id}; NWB-1.0.5"))
        f.create_dataset("session_start_time", data=_bytes("Tue Feb 16 10:00:00 2016"))
        f.create_dataset("file_create_date", data=np.array([b"Tue Feb 16 18:00:00 2016"]))
        f.create_dataset(
            "session_description", data=_bytes("In vitro patch-clamp recording (synthetic)")
        )
        gen = f.create_group("general")
        gen.create_dataset(
            "generated_by",
            data=np.array([b"name", b"abo_lake.synthetic.celltypes", b"version", b"1.1"]),
        )
        gen.create_dataset("specimen_id", data=_bytes(str(specimen_id)))
        gen.create_dataset("specimen_name", data=_bytes(specimen_name))
        gen.create_dataset("institution", data=_bytes("Allen Institute for Brain Science"))
        electrode = gen.create_group("intracellular_ephys/Electrode 1")
        electrode.create_dataset("description", data=_bytes("whole-cell patch electrode"))
        electrode.create_dataset("location", data=_bytes("VISp"))
        electrode.create_dataset("device", data=_bytes("MultiClamp 700B"))
        for group in ("acquisition/timeseries", "acquisition/images", "stimulus/presentation"):
            f.create_group(group)
        f.create_group("stimulus/templates")
        f.create_group("processing")
        f.create_group("epochs").attrs["tags"] = _bytes("[]")
        f.create_group("analysis/spike_times")
        interval_start = 0.0
        for j, sw in enumerate(sweeps):
            n = sw["sweep_number"]
            meta = {
                "aibs_stimulus_name": sw["stimulus_name"],
                "aibs_stimulus_description": sw["stimulus_description"],
                "aibs_stimulus_amplitude_pa": sw["stimulus_absolute_amplitude"],
                "aibs_stimulus_interval": sw["stimulus_interval"],
                "gain": sw["gain"],
                "initial_access_resistance": sw["initial_access_resistance"],
                "seal": sw["seal"],
                "bias_current": sw["leak_pa"],
                "bridge_balance": sw["bridge_balance_mohm"],
                "capacitance_compensation": 0.0,
                "sweep_number": np.int32(n),
            }
            _series(
                f.create_group(f"stimulus/presentation/Sweep_{n}"),
                stim_pa[j],
                unit="Amps",
                conversion=_STIM_CONVERSION,
                ancestry=["TimeSeries", "PatchClampSeries", "CurrentClampStimulusSeries"],
                description=f"{sw['stimulus_name']} stimulus of sweep {n}",
                metadata=meta,
            )
            acq_meta = {k: meta[k] for k in ("gain", "initial_access_resistance", "seal")}
            acq_meta |= {k: meta[k] for k in ("bias_current", "bridge_balance", "sweep_number")}
            _series(
                f.create_group(f"acquisition/timeseries/Sweep_{n}"),
                resp_mv[j],
                unit="Volts",
                conversion=_RESP_CONVERSION,
                ancestry=["TimeSeries", "PatchClampSeries", "CurrentClampSeries"],
                description=f"membrane potential of sweep {n}",
                metadata=acq_meta,
            )
            count = stim_pa.shape[1]
            _epoch(f, f"Sweep_{n}", 0, count, n, interval_start)
            exp0 = round(_EXPERIMENT_START_S * SAMPLING_RATE)
            _epoch(f, f"Experiment_{n}", exp0, count - exp0, n, interval_start)
            f.create_dataset(f"analysis/spike_times/Sweep_{n}", data=spikes[j], maxshape=(None,))
            interval_start += count / SAMPLING_RATE + sw["stimulus_interval"]


#: QC fields of ``ephys_sweeps.json`` (IPFX's definitions, :mod:`abo_lake.sweep_qc`).
_QC_JSON = ("pre_noise_rms_mv", "slow_noise_rms_mv", "slow_vm_mv", "pre_vm_mv", "post_vm_mv")
_QC_JSON += ("post_noise_rms_mv", "vm_delta_mv")


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _sweep_records(
    specimen_id: int,
    scale: _Scale,
    spikes: list[np.ndarray],
    stim_pa: np.ndarray,
    resp_mv: np.ndarray,
    rng: np.random.Generator,
) -> list[dict]:
    """Return the ``ephys_sweeps.json`` records (a subset of the Allen API's fields; the QC
    fields as IPFX computes them from the stored float32 samples)."""
    from abo_lake import sweep_qc

    pre = slice(round(_EXPERIMENT_START_S * SAMPLING_RATE), round(scale.onset_s * SAMPLING_RATE))
    records = []
    for j, spec in enumerate(scale.protocol):
        stored_i = stim_pa[j].astype(np.float32).astype(np.float64)
        stored_v = resp_mv[j].astype(np.float32).astype(np.float64)
        qc = sweep_qc.evaluate(stored_v, stored_i, SAMPLING_RATE, spec.stimulus_name)
        records.append(
            {
                "id": int(specimen_id * 1000 + spec.sweep_number),
                "specimen_id": int(specimen_id),
                "sweep_number": spec.sweep_number,
                "stimulus_name": spec.stimulus_name,
                "stimulus_description": spec.description,
                "stimulus_units": "Amps",
                "stimulus_absolute_amplitude": spec.amplitude_pa,
                "stimulus_start_time": _json_float(qc["stimulus_start_time"]),
                "stimulus_duration": _json_float(qc["stimulus_duration"]),
                "stimulus_interval": 5.0,
                "num_spikes": int(spikes[j].size),
                **{k: _json_float(qc[k]) for k in _QC_JSON},
                "peak_deflection": round(float(resp_mv[j].max() - resp_mv[j, pre].mean()), 4),
                "leak_pa": round(float(rng.normal(0.0, 5.0)), 3),
                "bridge_balance_mohm": round(float(rng.uniform(8.0, 20.0)), 3),
                "gain": 1.0,
                "initial_access_resistance": round(float(rng.uniform(8.0, 18.0)), 3),
                "seal": round(float(rng.uniform(1.0, 5.0)), 3),
            }
        )
    return records


# --- morphology ---------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _grow_morphology(rng: np.random.Generator, max_order: int) -> np.ndarray:
    """Grow a neuron; returns the SWC table (n, 7) as float64, parents before children."""
    soma_r = float(rng.uniform(6.0, 10.0))
    rows: list[tuple[float, ...]] = [(1, 1, 0.0, 0.0, 0.0, soma_r, -1)]
    # (parent id, position, direction, radius, type, order)
    tips: list[tuple[int, np.ndarray, np.ndarray, float, int, int]] = []
    stems = [(2, np.array([0.0, -1.0, 0.0]), 1.0)]  # axon towards white matter (-y)
    stems.append((4, np.array([0.0, 1.0, 0.0]), 2.0))  # apical towards pia (+y)
    for _ in range(int(rng.integers(4, 8))):
        d = rng.normal(0.0, 1.0, 3)
        d[1] = -abs(d[1]) * 0.5
        stems.append((3, d, 1.0))
    for swc_type, direction, radius in stems:
        d = _unit(direction + rng.normal(0.0, 0.15, 3))
        tips.append((1, soma_r * d, d, radius, swc_type, 0))
    seg = 2.0  # um between nodes
    while tips:
        parent, pos, d, radius, swc_type, order = tips.pop(0)
        mean_len = {2: 150.0, 4: 120.0}.get(swc_type, 60.0)
        n_seg = max(2, int(rng.exponential(mean_len) / seg))
        for _ in range(n_seg):
            d = _unit(d + rng.normal(0.0, 0.25, 3))
            pos = pos + seg * d
            radius = max(0.15, radius * 0.995)
            rows.append((len(rows) + 1, swc_type, *pos, radius, parent))
            parent = len(rows)
        if order < max_order and rng.random() < 0.85 - 0.1 * order:
            for sign in (1.0, -1.0):
                child = _unit(d + sign * 0.6 * _unit(rng.normal(0.0, 1.0, 3)))
                tips.append((parent, pos, child, radius * 0.8, swc_type, order + 1))
    return np.array(rows, dtype=np.float64)


def _write_swc(path: Path, table: np.ndarray, specimen_id: int, seed: int) -> None:
    lines = [
        "# generated by abo_lake.synthetic.celltypes",
        f"# source file(s): synthetic specimen {specimen_id} (seed {seed})",
        "# id,type,x,y,z,r,pid",
    ]
    lines += [
        f"{int(r[0])} {int(r[1])} {r[2]:.4f} {r[3]:.4f} {r[4]:.4f} {r[5]:.4f} {int(r[6])}"
        for r in table
    ]
    path.write_text("\n".join(lines) + "\n")


# --- entry point --------------------------------------------------------------------------


def write(
    out_dir: str | Path,
    *,
    scale: str = "tiny",
    seed: int = 0,
    n_specimens: int = 1,
    qc_failures: Mapping[tuple[int, int], str] | None = None,
) -> list[Path]:
    """Write synthetic Cell Types specimens (ephys NWB 1, sweep table, SWC).

    Parameters
    ----------
    out_dir
        Folder to write ``specimen_<id>/`` folders into (created if needed).
    scale
        ``"tiny"``: 5 sweeps of 0.5 s (Short Square, Long Square at 50, 250 and 400 pA,
        Ramp), ~1.3 MB per NWB file. ``"realistic"``: 38 sweeps of 3 s (4 Short Square,
        25 Long Square 1 s steps from -110 to 370 pA, 3 Ramp, 6 Noise 1), ~55 MB per NWB file
        (gzip level 1), about 7 s per specimen. ``"features"``: 11 sweeps of 1.8 s (10 Long
        Square 0.5 s steps at 0.6 s from -90 to 270 pA by 40 pA, a Ramp), the smallest
        protocol with what electrophysiology features need (hyperpolarising steps, an f-I
        curve) and with IPFX's sweep-QC epochs (0.5 s of baseline before the step and at the
        end) clear of the test pulse and the step. The other scales' sweeps start their
        stimulus less than 0.5 s after the sweep start and fail IPFX's QC.
    seed
        Seed of ``np.random.default_rng``; the same seed gives byte-identical arrays.
    n_specimens
        Number of specimens.
    qc_failures
        ``{(specimen index, sweep_number): how}``: sweeps to spoil so that they fail IPFX's
        sweep QC, ``how`` one of :data:`QC_FAILURES` (``"noisy_baseline"``,
        ``"drifting_vm"``). Every other sweep and specimen is byte-identical to a write
        without them (the spoiling noise has its own random stream).

    Returns
    -------
    list of Path
        ``ephys.nwb``, ``ephys_sweeps.json`` and ``reconstruction.swc`` of each specimen.

    Examples
    --------
    >>> paths = write("/tmp/celltypes", seed=1)  # doctest: +SKIP
    """
    if scale not in _SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(_SCALES)}")
    sc = _SCALES[scale]
    out = Path(out_dir)
    written: list[Path] = []
    for k in range(n_specimens):
        rng = np.random.default_rng([seed, k])
        specimen_id = 480_000_000 + 1000 * seed + k
        folder = out / f"specimen_{specimen_id}"
        folder.mkdir(parents=True, exist_ok=True)
        cell = _neuron(rng)
        stim = np.stack([_stimulus(spec, sc, rng) for spec in sc.protocol])
        resp, spikes = _simulate(stim, cell, rng)
        for (index, number), how in (qc_failures or {}).items():
            if index != k:
                continue
            rows = [j for j, spec in enumerate(sc.protocol) if spec.sweep_number == number]
            if not rows:
                numbers = [spec.sweep_number for spec in sc.protocol]
                raise ValueError(
                    f"qc_failures: sweep {number} is not in the {scale!r} protocol {numbers}"
                )
            _spoil(resp[rows[0]], how, sc, np.random.default_rng([seed, k, number, 7]))
        records = _sweep_records(specimen_id, sc, spikes, stim, resp, rng)
        name = f"Syn-IRES-Cre;Ai14-{specimen_id % 1_000_000:06d}.01.01.01"
        _write_nwb(folder / "ephys.nwb", specimen_id, name, records, stim, resp, spikes)
        (folder / "ephys_sweeps.json").write_text(json.dumps(records, indent=1) + "\n")
        table = _grow_morphology(rng, sc.morphology_orders)
        _write_swc(folder / "reconstruction.swc", table, specimen_id, seed)
        written += [folder / "ephys.nwb", folder / "ephys_sweeps.json"]
        written.append(folder / "reconstruction.swc")
    return written
