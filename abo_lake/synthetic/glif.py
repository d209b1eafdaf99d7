"""Seeded writer of GLIF neuron configs (Allen's ``neuron_config.json``, GLIF 1–5).

Parameters are drawn from the ranges of the Allen Cell Types Database's published models
(Teeter et al. 2018): membrane time constants of 5–40 ms, input resistances of 100–400 MΩ,
thresholds 15–35 mV above rest (``El`` is 0 and the resting potential is ``El_reference``, as
in Allen's files), two after-spike currents of 3–30 ms and 30–300 ms, spike cuts of 20–80
steps. Files go to ``specimen_<id>/glif_<neuronal_model_id>/neuron_config.json`` (where
:mod:`abo_lake.sources.glif` reads the ids).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from abo_lake.glif import GLIF_LEVELS, validate_config

__all__ = ["config", "write"]

_SCALES = {"tiny": 1, "realistic": 20}  # specimens, each with one model per GLIF level
_SPECIMEN_0 = 474626527
_MODEL_0 = 566302806


def _method(name: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "params": params}


def config(level: int, rng: np.random.Generator) -> dict[str, Any]:
    """One valid GLIF ``level`` (1–5) config with parameters drawn by ``rng``."""
    th_dyn, th_reset, v_reset, asc_dyn, asc_reset = GLIF_LEVELS[level]
    R = float(rng.uniform(1e8, 4e8))
    tau_m = float(rng.uniform(0.005, 0.04))
    C = tau_m / R
    th_inf = float(rng.uniform(0.015, 0.035))
    c_th = float(rng.uniform(0.9, 1.3))
    tau_asc = [float(rng.uniform(0.003, 0.03)), float(rng.uniform(0.03, 0.3))]
    amp = [-float(rng.uniform(5e-12, 6e-11)), -float(rng.uniform(1e-12, 2e-11))]
    uses_asc = asc_dyn == "exp"
    a_spike = float(rng.uniform(0.001, 0.01))
    b_spike = float(rng.uniform(50.0, 500.0))
    a_voltage = float(rng.uniform(1.0, 10.0))
    c_b = float(rng.uniform(0.5, 2.0))
    b_voltage = float(rng.uniform(10.0, 100.0))
    if abs(b_voltage * c_b - 1.0 / tau_m) < 1.0:  # keep clear of the exact solution's pole
        b_voltage += 5.0
    th_params = (
        {}
        if th_dyn == "inf"
        else {
            "a_spike": a_spike,
            "b_spike": b_spike,
            "a_voltage": a_voltage,
            "b_voltage": b_voltage,
        }
    )
    out = {
        "El_reference": float(rng.uniform(-0.08, -0.065)),
        "C": C,
        "asc_amp_array": amp,
        "init_threshold": th_inf * c_th,
        "threshold_reset_method": (
            _method("inf")
            if th_reset == "inf"
            else _method("three_components", a_spike=a_spike, b_spike=b_spike)
        ),
        "th_inf": th_inf,
        "spike_cut_length": int(rng.integers(20, 81)),
        "init_AScurrents": [0.0, 0.0],
        "init_voltage": 0.0,
        "threshold_dynamics_method": _method(th_dyn, **th_params),
        "voltage_reset_method": (
            _method("zero")
            if v_reset == "zero"
            else _method(
                "v_before", a=float(rng.uniform(0.2, 0.8)), b=float(rng.uniform(-0.003, 0.003))
            )
        ),
        "extrapolation_method_name": "endpoints",
        "dt": 5e-05,
        "voltage_dynamics_method": _method("linear_forward_euler"),
        "El": 0.0,
        "asc_tau_array": tau_asc,
        "R_input": R,
        "AScurrent_dynamics_method": _method(asc_dyn),
        "AScurrent_reset_method": (
            _method("sum", r=[1.0, 1.0]) if asc_reset == "sum" else _method("none")
        ),
        "dt_multiplier": 10,
        "th_adapt": float(rng.uniform(0.01, 0.03)) if level == 5 else None,
        "coeffs": {
            "a": float(rng.uniform(0.5, 2.0)) if level == 5 else 1,
            "C": 1,
            "b": c_b if level == 5 else 1,
            "G": 1,
            "th_inf": c_th,
            "asc_amp_array": (
                [float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5))]
                if uses_asc
                else [1.0, 1.0]
            ),
        },
        "type": "GLIF",
    }
    return validate_config(out)


def write(out_dir: str | Path, *, scale: str = "tiny", seed: int = 0) -> list[Path]:
    """Write GLIF 1–5 neuron configs of synthetic specimens.

    Parameters
    ----------
    out_dir
        Folder to write ``specimen_<id>/glif_<model_id>/neuron_config.json`` into.
    scale
        ``"tiny"``: one specimen with one model per GLIF level (5 files); ``"realistic"``: 20
        specimens (100 files).
    seed
        Seed of ``np.random.default_rng``; the same seed gives identical files.

    Returns
    -------
    list of Path
        The configs written, by specimen then level.

    Examples
    --------
    >>> paths = write("/tmp/glif", seed=1)  # doctest: +SKIP
    """
    if scale not in _SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(_SCALES)}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    paths = []
    for i in range(_SCALES[scale]):
        specimen = _SPECIMEN_0 + 1000 * seed + i
        for level in GLIF_LEVELS:
            model = _MODEL_0 + 100_000 * seed + 10 * i + level
            path = out / f"specimen_{specimen}" / f"glif_{model}" / "neuron_config.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(config(level, rng), indent=2))
            paths.append(path)
    return paths
