"""AllenSDK 2.16.2's ``GlifNeuron.run`` on generated GLIF 1–5 configs, for ``tests/test_glif.py``.

The configs are abo_lake's generator's (``abo_lake.synthetic.glif.config``, seed 2026, one per
GLIF level, plus a GLIF 4 with ``spike_cut_length`` 0), made by the project's venv in a
subprocess; each runs on three stimuli sampled at 200 kHz (Allen's rate), scaled to the
model's rheobase ``I_rh = th_inf·coeffs.th_inf / R_input``:

- ``square``: 0.5 s at 1.6 ``I_rh`` between 50 ms of zero;
- ``ramp``: 0 to 3 ``I_rh`` over 0.6 s;
- ``noise``: 0.4 s of 1.3 ``I_rh`` plus white noise of 1 ``I_rh`` (seeded), between 50 ms of
  zero.

Run with the AllenSDK venv (never a dependency of abo_lake)::

    /tmp/allensdk-venv/bin/python tests/reference/glif_allensdk.py

It writes ``glif_allensdk.npz`` beside itself: per ``<config>__<stimulus>`` the spike time
steps, grid and interpolated spike times (full), voltage, threshold and after-spike currents
every ``STEP``-th sample (the stimulus is rebuilt by :func:`stimulus`), and the configs as JSON
text (``configs``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "glif_allensdk.npz"
DT = 5e-6  # 200 kHz
STEP = 250  # downsampling of the stored traces (1.25 ms)
SEED = 2026
STIMULI = ("square", "ramp", "noise")

_CONFIGS = """
import json, sys
import numpy as np
from abo_lake.synthetic.glif import config
rng = np.random.default_rng(%d)
out = {f"glif{level}": config(level, rng) for level in (1, 2, 3, 4, 5)}
cut0 = config(4, rng)
cut0["spike_cut_length"] = 0
out["glif4_cut0"] = cut0
json.dump(out, sys.stdout)
"""


def configs() -> dict[str, dict]:
    """The generated configs, by name (from the project's venv)."""
    python = ROOT / ".venv" / "bin" / "python"
    text = subprocess.run(
        [str(python), "-c", _CONFIGS % SEED],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(text)


def rheobase(config: dict) -> float:
    """``th_inf·coeffs.th_inf / R_input`` (A)."""
    return config["th_inf"] * config["coeffs"]["th_inf"] / config["R_input"]


def stimulus(config: dict, name: str) -> np.ndarray:
    """The stimulus ``name`` for ``config`` (A, at :data:`DT`)."""
    i_rh = rheobase(config)
    pad = np.zeros(round(0.05 / DT))
    if name == "square":
        return np.concatenate([pad, np.full(round(0.5 / DT), 1.6 * i_rh), pad])
    if name == "ramp":
        return np.linspace(0.0, 3.0 * i_rh, round(0.6 / DT))
    if name == "noise":
        rng = np.random.default_rng(SEED)
        n = round(0.4 / DT)
        return np.concatenate([pad, 1.3 * i_rh + i_rh * rng.standard_normal(n), pad])
    raise ValueError(name)


def main() -> None:
    from allensdk.model.glif.glif_neuron import GlifNeuron

    cfgs = configs()
    out: dict[str, np.ndarray] = {
        "configs": np.array(json.dumps(cfgs)),
        "dt": np.array(DT),
        "step": np.array(STEP),
    }
    for cname, cfg in cfgs.items():
        for sname in STIMULI:
            neuron = GlifNeuron.from_dict(cfg)
            neuron.dt = DT
            res = neuron.run(stimulus(cfg, sname))
            key = f"{cname}__{sname}"
            out[f"{key}__spike_time_steps"] = np.asarray(res["spike_time_steps"], dtype=np.int64)
            out[f"{key}__grid_spike_times"] = np.asarray(res["grid_spike_times"], dtype=float)
            out[f"{key}__interpolated_spike_times"] = np.asarray(
                res["interpolated_spike_times"], dtype=float
            )
            out[f"{key}__voltage"] = res["voltage"][::STEP]
            out[f"{key}__threshold"] = res["threshold"][::STEP]
            out[f"{key}__AScurrents"] = res["AScurrents"][::STEP]
            print(f"{key}: {len(res['spike_time_steps'])} spikes", file=sys.stderr)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
