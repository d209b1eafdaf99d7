"""Benchmark: AllenSDK's Neuropixels stimulus-analysis metric tables, abo_lake vs AllenSDK.

Input: the synthetic Visual Coding Neuropixels session at realistic scale
(``vcn_ecephys.write(scale="realistic", seed=0)``: 600 units, ~20 M spikes, 600 drifting
gratings, 150 flashes, 5,950 natural scenes, 600 static gratings, 729 Gabors), the same NWB file
for both. The lake side reads a local lake made from it (spike chunks of 524,288); AllenSDK
(2.16.2, its venv, when present) reads the NWB with ``EcephysSession.from_nwb_path``.

Each table runs in a fresh subprocess, timed after loading (AllenSDK's load time, and the
lake's open time, are printed apart); memory is the growth of peak RSS during the table
(``VmHWM``, reset at the start, minus ``VmRSS`` before; Linux). Both analyse the same
``N_UNITS`` units (AllenSDK's ``filter`` list; its per-unit loops make all units take hours,
the receptive-field shuffles alone about 3 s per unit); the lake is also timed on all units.
Ratio = AllenSDK / lake. AllenSDK reads every unit's spike times inside its first table call
(lazily), so that read is in its table time, as the lake's chunk reads are in ours.

Measured here (2026-12-07, 2 shared cores, other jobs running; 40 of 522 units; seconds):

=========================  ======  ==========  =====  ===========  ==========  ===========
table                      lake s  AllenSDK s  ratio  lake MB (a)  SDK MB (b)  lake, 522 u
=========================  ======  ==========  =====  ===========  ==========  ===========
drifting_gratings             7.4       116.1   15.6           92         326           34
static_gratings               5.8       106.0   18.2           80         187           25
natural_scenes                6.0       171.7   28.4          108         274           28
flashes                       4.7        83.2   17.8           74         119           19
receptive_field_mapping      13.0       172.2   13.3           93         185           91
=========================  ======  ==========  =====  ===========  ==========  ===========

AllenSDK's load (``from_nwb_path`` + units) 78.8 s per run; the lake's open 0.6 s.
(a) from a lake-only rerun (``BENCH_LAKE_ONLY=1``, VmHWM reset); its times were 5-18 s for 40
units and 18-164 s for all (busier machine). (b) growth of ``ru_maxrss`` over the RSS before
the table (the first run's measure; a lower bound of the peak growth).

Run (about 20 minutes with AllenSDK on a busy 2-core machine, plus writing the session;
``BENCH_LAKE_ONLY=1`` skips AllenSDK)::

    nice .venv/bin/python tests/benchmarks/bench_ecephys_metrics.py [WORKDIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALLENSDK_PYTHON = Path(os.environ.get("ALLENSDK_VENV", "/tmp/allensdk-venv")) / "bin" / "python"
N_UNITS = 40
ANALYSES = {  # ours -> AllenSDK's module and class
    "drifting_gratings": ("drifting_gratings", "DriftingGratings"),
    "static_gratings": ("static_gratings", "StaticGratings"),
    "natural_scenes": ("natural_scenes", "NaturalScenes"),
    "flashes": ("flashes", "Flashes"),
    "receptive_field_mapping": ("receptive_field_mapping", "ReceptiveFieldMapping"),
}

_RSS = """
def _status(field):
    with open('/proc/self/status') as f:
        return next(int(x.split()[1]) for x in f if x.startswith(field)) / 1024
def rss_mb():
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # Linux: reset the peak RSS (VmHWM) to the current RSS
    return _status('VmRSS:')
def peak_mb():
    return _status('VmHWM:')
"""

ALLENSDK_RUN = (
    _RSS
    + """
import json, sys, time, warnings
import numpy as np
LIFTED = {'amplitude_cutoff_maximum': np.inf, 'presence_ratio_minimum': -np.inf,
          'isi_violations_maximum': np.inf}
warnings.simplefilter('ignore')
from importlib import import_module
from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession
path, module, cls, units = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t0 = time.perf_counter()
session = EcephysSession.from_nwb_path(path, api_kwargs=LIFTED)
session.units  # the units table is part of loading
load = time.perf_counter() - t0
analysis = getattr(import_module(
    'allensdk.brain_observatory.ecephys.stimulus_analysis.' + module), cls)(session, filter=units)
before = rss_mb()
t0 = time.perf_counter()
table = analysis.metrics
seconds = time.perf_counter() - t0
print(json.dumps({'load': load, 'seconds': seconds, 'mb': peak_mb() - before,
                  'rows': len(table), 'columns': len(table.columns)}))
"""
)

LAKE_RUN = (
    _RSS
    + """
import json, sys, time, warnings
import numpy as np
warnings.simplefilter('ignore')
import abo_lake, abo_lake.accessors
lake_path, analysis, units = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
ds = abo_lake.open_lake(lake_path).release('bench').open('ecephys/session/1')
load = time.perf_counter() - t0
before = rss_mb()
t0 = time.perf_counter()
table = ds.ecephys.stimulus_metrics(analysis, units, seed=0)
seconds = time.perf_counter() - t0
print(json.dumps({'load': load, 'seconds': seconds, 'mb': peak_mb() - before,
                  'rows': len(table), 'columns': len(table.columns)}))
"""
)


def _run(python: str, code: str, *args: str) -> dict:
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True,
                         check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(work: Path) -> tuple[Path, Path, list[int], list[int]]:
    """The realistic session's NWB (written once) and a local lake of it."""
    import warnings

    import numpy as np

    import abo_lake
    import abo_lake.accessors
    from abo_lake.sources import vcn_ecephys as reader
    from abo_lake.synthetic import vcn_ecephys

    nwb = next(work.glob("session_*/session_*.nwb"), None)
    if nwb is None:
        t0 = time.perf_counter()
        nwb = vcn_ecephys.write(work, scale="realistic", seed=0)[0]
        print(f"wrote {nwb.name} in {time.perf_counter() - t0:.0f} s")
    lake_path = work / "lake"
    if not (lake_path / "releases").exists():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = next(v for k, v in reader.read(nwb).items() if k.startswith("ecephys/session/"))
            lake = abo_lake.open_lake(str(lake_path))
            ds = ds.chunk({"spike": 524_288})
            for name in ("spike_times", "spike_amplitudes"):
                ds[name].encoding["chunks"] = (524_288,)
            with lake.stage("bench") as st:
                st.write("ecephys/session/1", ds)
        print(f"converted into a lake in {time.perf_counter() - t0:.0f} s")
    ds = abo_lake.open_lake(str(lake_path)).release("bench").open("ecephys/session/1")
    lifted = ds.ecephys.filtered_units(
        amplitude_cutoff_maximum=np.inf, presence_ratio_minimum=-np.inf,
        isi_violations_maximum=np.inf,
    ).index.to_numpy()  # fmt: skip
    every = max(1, lifted.size // N_UNITS)
    few = [int(u) for u in lifted[::every][:N_UNITS]]
    return nwb, lake_path, few, [int(u) for u in lifted]


def main(work: Path) -> None:
    nwb, lake_path, few, every = prepare(work)
    have_allensdk = ALLENSDK_PYTHON.exists() and not os.environ.get("BENCH_LAKE_ONLY")
    print(f"{len(few)} units compared (of {len(every)}); AllenSDK: "
          f"{ALLENSDK_PYTHON if have_allensdk else 'skipped'}")  # fmt: skip
    header = (f"{'table':<24} {'lake s':>8} {'lake MB':>8} {'AllenSDK s':>11} "
              f"{'AllenSDK MB':>12} {'ratio s':>8} {'lake, all units s':>18}")  # fmt: skip
    print(header)
    allen_loads, lake_loads = [], []
    for analysis, (module, cls) in ANALYSES.items():
        ours = _run(sys.executable, LAKE_RUN, str(lake_path), analysis, json.dumps(few))
        all_units = _run(sys.executable, LAKE_RUN, str(lake_path), analysis, json.dumps(every))
        theirs = None
        if have_allensdk:
            theirs = _run(str(ALLENSDK_PYTHON), ALLENSDK_RUN, str(nwb), module, cls,
                          json.dumps(few))  # fmt: skip
            allen_loads.append(theirs["load"])
        cells = (f"{theirs['seconds']:>11.2f} {theirs['mb']:>12.0f} "
                 f"{theirs['seconds'] / ours['seconds']:>8.1f}" if theirs
                 else f"{'-':>11} {'-':>12} {'-':>8}")  # fmt: skip
        print(f"{analysis:<24} {ours['seconds']:>8.2f} {ours['mb']:>8.0f} {cells} "
              f"{all_units['seconds']:>18.2f}")  # fmt: skip
        lake_loads.append(ours["load"])
    if allen_loads:
        print(f"AllenSDK load (from_nwb_path + units), median per run: "
              f"{sorted(allen_loads)[len(allen_loads) // 2]:.2f} s")  # fmt: skip
    print(f"lake open (release + dataset), median per run: "
          f"{sorted(lake_loads)[len(lake_loads) // 2]:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench_em_")))
