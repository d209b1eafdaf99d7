"""GLIF simulation time: abo_lake's simulator against AllenSDK 2.16.2's ``GlifNeuron.run``.

One run: a generated config per GLIF level (``abo_lake.synthetic.glif.config``, the
references' seed) on the same stimuli at 200 kHz (Allen's sampling rate), ``--seconds`` long:
a Long Square at 1.6× the model's rheobase and a noise sweep (1.3× rheobase plus white noise
of 1× rheobase). Each is simulated by ``abo_lake.glif.simulate`` in this process (best of
``--repeat``) and by AllenSDK's ``GlifNeuron.run`` in a subprocess of AllenSDK's Python (the
same stimulus from a ``.npy`` file; imports and file reading untimed; best of
``--repeat``). The spike time steps must be equal; the table gives both times and the ratio.
``--many N`` also times ``simulate_many`` of N configs (levels 1–5 in turn) on one stimulus
over a LocalCluster of 2 worker processes (keeping only the spike steps, so the traces stay on
the workers), against a serial loop. Run::

    python tests/benchmarks/bench_glif.py [--seconds 3] [--repeat 3] [--many 40]
                                          [--allensdk /tmp/allensdk-venv/bin/python]

Without AllenSDK's Python (not in CI) only abo_lake's side runs, with a message. Exits 1
when spike times differ.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from abo_lake import glif
from abo_lake.synthetic.glif import config

ALLENSDK_PYTHON = "/tmp/allensdk-venv/bin/python"
DT = 5e-6
SEED = 2026

_ALLENSDK = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from allensdk.model.glif.glif_neuron import GlifNeuron
cfg = json.load(open(sys.argv[1])); stim = np.load(sys.argv[2]); repeat = int(sys.argv[3])
best, steps = float("inf"), None
for _ in range(repeat):
    neuron = GlifNeuron.from_dict(cfg)
    neuron.dt = float(sys.argv[4])
    t = time.perf_counter()
    out = neuron.run(stim)
    best = min(best, time.perf_counter() - t)
    steps = [int(s) for s in out["spike_time_steps"]]
print(json.dumps({"seconds": best, "spike_time_steps": steps}))
"""


def stimuli(cfg: dict, seconds: float) -> dict[str, np.ndarray]:
    """The Long Square and noise stimuli (A) for ``cfg``."""
    i_rh = cfg["th_inf"] * cfg["coeffs"]["th_inf"] / cfg["R_input"]
    n = round(seconds / DT)
    pad = np.zeros(round(0.1 / DT))
    square = np.concatenate([pad, np.full(n - 2 * len(pad), 1.6 * i_rh), pad])
    rng = np.random.default_rng(SEED)
    noise = 1.3 * i_rh + i_rh * rng.standard_normal(n)
    return {"square": square, "noise": noise}


def ours(cfg: dict, stim: np.ndarray, repeat: int) -> tuple[float, list[int]]:
    best, steps = float("inf"), []
    for _ in range(repeat):
        t = time.perf_counter()
        out = glif.simulate(cfg, stim, dt=DT)
        best = min(best, time.perf_counter() - t)
        steps = out["spike_time_steps"].values.tolist()
    return best, steps


def allensdk(python: str, cfg: dict, stim: np.ndarray, repeat: int) -> tuple[float, list[int]]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, stim_path = Path(tmp) / "neuron_config.json", Path(tmp) / "stim.npy"
        cfg_path.write_text(json.dumps(cfg))
        np.save(stim_path, stim)
        out = subprocess.run(
            [python, "-c", _ALLENSDK, str(cfg_path), str(stim_path), str(repeat), repr(DT)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], result["spike_time_steps"]


def many(n: int, seconds: float) -> None:
    """``simulate_many`` of ``n`` configs over 2 worker processes against a serial loop."""
    import distributed

    rng = np.random.default_rng(SEED + 1)
    cfgs = [config(1 + i % 5, rng) for i in range(n)]
    stim = stimuli(cfgs[0], seconds)["noise"]
    t = time.perf_counter()
    serial = [glif.simulate(c, stim, dt=DT) for c in cfgs]
    t_serial = time.perf_counter() - t
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.run(lambda: __import__("abo_lake.glif"))  # warm the workers' imports
        t = time.perf_counter()
        parallel = glif.simulate_many(
            cfgs, stim, dt=DT, client=client, variables=["spike_time_steps"]
        )
        t_parallel = time.perf_counter() - t
    same = all(
        np.array_equal(a["spike_time_steps"], b["spike_time_steps"])
        for a, b in zip(serial, parallel, strict=True)
    )
    print(
        f"\nsimulate_many: {n} models × {seconds:g} s noise at 200 kHz: serial {t_serial:.2f} s, "
        f"2 dask workers {t_parallel:.2f} s ({t_serial / t_parallel:.2f}×), "
        f"{'same spikes' if same else 'SPIKES DIFFER'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="stimulus length (s)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--many", type=int, default=0, help="also time simulate_many of N")
    parser.add_argument("--allensdk", default=ALLENSDK_PYTHON, help="AllenSDK's Python")
    args = parser.parse_args()
    have_sdk = Path(args.allensdk).exists()
    if not have_sdk:
        print(f"{args.allensdk} is absent: timing abo_lake only (AllenSDK's side skipped)")
    rng = np.random.default_rng(SEED)
    print(
        f"{'model':8} {'stimulus':8} {'samples':>8} {'spikes':>6} {'abo_lake':>10} "
        f"{'AllenSDK':>10} {'ratio':>7}"
    )
    ok = True
    for level in (1, 2, 3, 4, 5):
        cfg = config(level, rng)
        for name, stim in stimuli(cfg, args.seconds).items():
            t_ours, steps = ours(cfg, stim, args.repeat)
            line = f"GLIF{level:<4} {name:8} {len(stim):>8} {len(steps):>6} {t_ours:>9.3f}s"
            if have_sdk:
                t_sdk, sdk_steps = allensdk(args.allensdk, cfg, stim, args.repeat)
                same = sdk_steps == steps
                ok &= same
                line += f" {t_sdk:>9.3f}s {t_sdk / t_ours:>6.1f}×"
                line += "" if same else "  SPIKE TIMES DIFFER"
            print(line, flush=True)
    if args.many:
        many(args.many, args.seconds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
