"""Can NEURON run a conductance-based cell on a lake sweep's stimulus here? One measured run.

Allen's perisomatic biophysical models need, per model: ``fit_parameters.json`` (passive and
per-section channel densities), the ``.mod`` channel files of the model zip (Ih, NaTs, Kv3_1,
Im, SK, Ca_HVA, CaDynamics, ...), the specimen's SWC and ``nrnivmodl`` to compile the mod files
(a C compiler). None of Allen's model files is available offline, so this script writes a
minimal Allen-style ``Ih.mod`` itself (the Kole et al. 2006 kinetics used by Allen's ``Ih.mod``)
and runs a one-compartment soma (passive + NEURON's built-in ``hh`` + that ``Ih``); it is a
check of the toolchain, not a model of the specimen.

Two Pythons, as the reference scripts:

- ``run`` (the project's Python): synthesise one specimen (``scale="features"``), convert it
  into a local lake, read one Long Square sweep's stimulus from the lake (A -> nA, its own
  time base), then call ``simulate`` under NEURON's Python and print what it measured::

      .venv/bin/python tests/benchmarks/bench_neuron_sweep.py run \\
          [--neuron-python /tmp/neuron-try/bin/python]

  (``python3 -m venv /tmp/neuron-try && /tmp/neuron-try/bin/pip install neuron==9.0.2``)
- ``simulate`` (NEURON's Python): ``nrnivmodl`` the mod file, play the stimulus into an
  ``IClamp`` with ``Vector.play`` at the sweep's sampling interval, run, count spikes.

Measured here (2 shared, busy cores, 2026-12-07): ``pip install neuron==9.0.2`` from the
manylinux wheel (68 MB installed) in about a minute; ``nrnivmodl`` of the one mod file 15-22 s
(gcc); the 270 pA Long Square sweep (1.2 s at 200 kHz, 240,001 steps: the ``features`` scale
before its sweeps were cut to 0.7 s) read from the lake ran
in 6.3 s and fired 70 spikes (the synthetic recording has 56; a different cell, no fit).
The whole script, with synthesis and conversion, about 110 s.
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

NEURON_PYTHON = "/tmp/neuron-try/bin/python"

IH_MOD = """: Minimal Allen-style Ih (Kole et al. 2006 kinetics, as Allen's perisomatic Ih.mod)
NEURON {
    SUFFIX Ih
    NONSPECIFIC_CURRENT ihcn
    RANGE gbar, g, ihcn
}
UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}
PARAMETER {
    gbar = 0.00001 (S/cm2)
    ehcn = -45.0 (mV)
}
ASSIGNED {
    v (mV)
    ihcn (mA/cm2)
    g (S/cm2)
    mInf
    mTau
    mAlpha
    mBeta
}
STATE { m }
BREAKPOINT {
    SOLVE states METHOD cnexp
    g = gbar*m
    ihcn = g*(v-ehcn)
}
DERIVATIVE states {
    rates()
    m' = (mInf-m)/mTau
}
INITIAL {
    rates()
    m = mInf
}
PROCEDURE rates() {
    UNITSOFF
    if (v == -154.9) { v = v + 0.0001 }
    mAlpha = 0.001*6.43*(v+154.9)/(exp((v+154.9)/11.9)-1)
    mBeta = 0.001*193*exp(v/33.1)
    mInf = mAlpha/(mAlpha+mBeta)
    mTau = 1/(mAlpha+mBeta)
    UNITSON
}
"""


def simulate(stimulus_npz: str, workdir: str) -> dict:
    """Compile ``Ih.mod`` in ``workdir`` and run the soma on the stimulus; NEURON's Python."""
    import neuron
    from neuron import h

    work = Path(workdir)
    (work / "Ih.mod").write_text(IH_MOD)
    t0 = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "nrnivmodl"), "."],
        cwd=work,
        check=True,
        capture_output=True,
    )
    compile_s = time.perf_counter() - t0
    neuron.load_mechanisms(str(work))
    h.load_file("stdrun.hoc")
    with np.load(stimulus_npz) as z:
        i_na, rate = z["stimulus_na"], float(z["sampling_rate"])
    soma = h.Section(name="soma")
    soma.L = soma.diam = 20.0  # um
    soma.cm = 1.0
    for mech in ("pas", "hh", "Ih"):
        soma.insert(mech)
    soma.g_pas, soma.e_pas = 1e-4, -70.0
    soma.gbar_Ih = 2e-4
    clamp = h.IClamp(soma(0.5))
    clamp.delay, clamp.dur = 0.0, 1e9
    dt_ms = 1e3 / rate
    t_vec = h.Vector(np.arange(i_na.size) * dt_ms)
    i_vec = h.Vector(i_na)
    i_vec.play(clamp._ref_amp, t_vec, 1)
    v_rec = h.Vector().record(soma(0.5)._ref_v)
    h.dt = dt_ms
    h.steps_per_ms = 1.0 / dt_ms
    h.tstop = i_na.size * dt_ms
    t1 = time.perf_counter()
    h.finitialize(-70.0)
    h.continuerun(h.tstop)
    run_s = time.perf_counter() - t1
    v = np.asarray(v_rec)
    crossings = np.flatnonzero((v[1:] >= 0.0) & (v[:-1] < 0.0))
    return {
        "neuron": neuron.__version__,
        "compile_s": round(compile_s, 2),
        "run_s": round(run_s, 2),
        "steps": int(v.size),
        "n_spikes": int(crossings.size),
        "v_min_mv": round(float(v.min()), 2),
        "v_max_mv": round(float(v.max()), 2),
    }


def run(neuron_python: str) -> None:
    """Lake sweep -> NEURON run; prints one JSON line of measurements (project's Python)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import abo_lake
    from abo_lake import jobs
    from abo_lake.synthetic import celltypes as synth

    with tempfile.TemporaryDirectory() as tmp:
        synth.write(Path(tmp) / "src", scale="features", seed=1, n_specimens=1)
        lake = abo_lake.open_lake(str(Path(tmp) / "lake"))
        report = jobs.run([Path(tmp) / "src"], lake, "r1", workers=1, progress=False)
        assert report.published, report.summary()
        rel = lake.release("r1")
        (sid,) = rel.table("celltypes_specimens").index
        ds = rel.open(f"celltypes/specimen/{sid}/ephys")
        steps = ds.celltypes.sweeps_by_stimulus("Long Square")
        number = int(steps.index[-1])  # the largest step
        sweep = ds.celltypes.get_sweep(number)
        npz = Path(tmp) / "stimulus.npz"
        np.savez(npz, stimulus_na=sweep["stimulus"] * 1e9, sampling_rate=sweep["sampling_rate"])
        work = Path(tmp) / "model"
        work.mkdir()
        cmd = [neuron_python, __file__, "simulate", str(npz), str(work)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        measured = json.loads(out.strip().splitlines()[-1])
        measured.update(
            specimen_id=int(sid),
            sweep_number=number,
            stimulus_pa=float(steps.loc[number, "stimulus_absolute_amplitude"]),
            recorded_spikes=int(steps.loc[number, "num_spikes"]),
        )
        print(json.dumps(measured))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--neuron-python", default=NEURON_PYTHON)
    s = sub.add_parser("simulate")
    s.add_argument("stimulus_npz")
    s.add_argument("workdir")
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.neuron_python)
    else:
        print(json.dumps(simulate(args.stimulus_npz, args.workdir)))


if __name__ == "__main__":
    main()
