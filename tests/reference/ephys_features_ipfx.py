"""IPFX 2.1.2's electrophysiology features on synthetic Cell Types specimens.

Two uses, one file:

- ``measure`` (run with a Python that has IPFX, e.g. ``/tmp/ipfx-try2/bin/python`` made by
  ``python3 -m venv /tmp/ipfx-try2 && /tmp/ipfx-try2/bin/pip install ipfx==2.1.2``; IPFX pins
  pynwb 3.1.2 so it cannot live in the project's venv): read each ``ephys.nwb`` (NWB 1, the
  AIBS layout) with h5py as IPFX's NWB 1 reader did (``data * conversion``, A -> pA, V -> mV,
  ``rate`` of ``starting_time``), run IPFX's ``LongSquareAnalysis`` (``subthresh_min_amp=-100``,
  as ``ipfx.data_set_features``) and ``RampAnalysis`` with IPFX's default
  ``SpikeFeatureExtractor``/``SpikeTrainFeatureExtractor`` between stimulus onset and offset,
  then ``ipfx.feature_record.build_cell_feature_record``; write the record per specimen and
  the first long-square spikes of every spiking sweep to ``--out.json``. As IPFX's pipeline
  (``run_feature_extraction`` drops the sweeps whose ``passed`` is False), only sweeps that
  pass IPFX's sweep QC (``sweep_qc_ipfx.qc_sweep``, IPFX's own QC functions) are analysed.
- ``make`` (run with the project's Python): synthesise the specimens of
  ``tests/test_ephys_features.py`` (``synthetic.celltypes.write(scale="features", seed=11,
  n_specimens=2, qc_failures=...)``: ``sweep_qc_ipfx.SPECIMENS["features"]``, one sweep of
  each specimen spoiled so that it fails QC), run ``measure`` under IPFX's Python and write
  ``tests/reference/ephys_features_ipfx.json`` (CI needs no IPFX)::

      .venv/bin/python tests/reference/ephys_features_ipfx.py make [--ipfx PYTHON]

Only numpy and the standard library are imported at module level.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "ephys_features_ipfx.json"
IPFX_PYTHON = "/tmp/ipfx-try2/bin/python"
sys.path.insert(0, str(HERE))
import sweep_qc_ipfx  # noqa: E402  (beside this file)

SPECIMENS = "features"  # sweep_qc_ipfx.SPECIMENS key


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Sweep whose after-spike shape :func:`reshaped` changes, and the shapes.
RESHAPED_SWEEP, RESHAPES = 10, ("detour", "adp")


def reshaped(v: np.ndarray, rate: float, spike_times: np.ndarray, kind: str) -> np.ndarray:
    """``v`` (mV) with a slow after-hyperpolarisation (12 mV, 3/20 ms, 2.5 ms after each spike
    time: a "detour" reset) or for ``kind="adp"`` an after-depolarisation (6 mV, 0.5/1.5 ms,
    1.8 ms after it) and that after-hyperpolarisation 4 ms after it, so that IPFX's trough
    details find slow troughs and ADPs (the synthetic spikes reset directly)."""
    t = np.arange(v.size) / rate
    out = np.array(v, dtype=np.float64)
    for s in spike_times:
        if kind == "adp":
            y = t - s - 0.0018
            k = y > 0
            out[k] += 6.0 * (np.exp(-y[k] / 0.0015) - np.exp(-y[k] / 0.0005))
        z = t - s - (0.004 if kind == "adp" else 0.0025)
        n = z > 0
        out[n] += -12.0 * (np.exp(-z[n] / 0.020) - np.exp(-z[n] / 0.003))
    return out


def _trough_detail_spikes(path: str, sweeps: list[dict]) -> dict:
    """IPFX's spikes of :data:`RESHAPED_SWEEP` after :func:`reshaped`, per shape."""
    import h5py
    from ipfx.feature_extractor import SpikeFeatureExtractor

    (s,) = [s for s in sweeps if s["sweep_number"] == RESHAPED_SWEEP]
    with h5py.File(path, "r") as f:
        times = f[f"analysis/spike_times/Sweep_{RESHAPED_SWEEP}"][()]
    start, end = stimulus_window(s)
    out = {}
    for kind in RESHAPES:
        v = reshaped(s["v"], s["rate"], times, kind)
        spikes = SpikeFeatureExtractor(start=start, end=end).process(s["t"], v, s["i"])
        cols = ["threshold_t", "peak_t", "trough_t", "trough_v", "fast_trough_t", "fast_trough_v"]
        cols += ["adp_t", "adp_v", "slow_trough_t", "slow_trough_v", "isi_type"]
        out[kind] = {c: spikes[c].tolist() for c in cols}
    return out


def read_sweeps(path: str) -> list[dict]:
    """Every sweep of an AIBS NWB 1 file: number, stimulus name, t (s), v (mV), i (pA)."""
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        for name in f["epochs"]:
            if not name.startswith("Sweep_"):
                continue
            n = int(name.split("_")[1])
            stim = f[f"stimulus/presentation/{name}"]
            resp = f[f"acquisition/timeseries/{name}"]
            rate = float(stim["starting_time"].attrs["rate"])
            i = stim["data"][()] * float(stim["data"].attrs["conversion"]) * 1e12
            v = resp["data"][()] * float(resp["data"].attrs["conversion"]) * 1e3
            label = stim["aibs_stimulus_name"][()]
            label = label.decode() if isinstance(label, bytes) else str(label)
            exp = f[f"epochs/Experiment_{n}/stimulus"]
            first = int(exp["idx_start"][()])
            out.append(
                {
                    "sweep_number": n,
                    "stimulus_name": label,
                    "t": np.arange(i.size) / rate,
                    "v": v.astype(np.float64),
                    "i": i.astype(np.float64),
                    "rate": rate,
                    "experiment_start": first,
                }
            )
    return sorted(out, key=lambda s: s["sweep_number"])


def stimulus_window(sweep: dict) -> tuple[float, float]:
    """Onset and offset (s) of the stimulus after the test pulse (first and last non-zero)."""
    i = sweep["i"][sweep["experiment_start"] :]
    nz = np.flatnonzero(i != 0)
    return (
        (sweep["experiment_start"] + nz[0]) / sweep["rate"],
        (sweep["experiment_start"] + nz[-1] + 1) / sweep["rate"],
    )


def measure(paths: list[str], out: str) -> None:
    """IPFX's cell record of each ``ephys.nwb`` in ``paths``; see the module docstring."""
    import ipfx
    from ipfx.feature_extractor import SpikeFeatureExtractor, SpikeTrainFeatureExtractor
    from ipfx.feature_record import build_cell_feature_record
    from ipfx.stimulus_protocol_analysis import LongSquareAnalysis, RampAnalysis
    from ipfx.sweep import Sweep, SweepSet

    result = {"ipfx": ipfx.__version__, "specimens": {}}
    for path in paths:
        qc = {s["sweep_number"]: sweep_qc_ipfx.qc_sweep(s) for s in sweep_qc_ipfx.read_sweeps(path)}
        sweeps = [s for s in read_sweeps(path) if qc[s["sweep_number"]].get("passed")]
        features: dict = {"long_squares": None, "ramps": None, "short_squares": None}
        per_sweep = {}
        longs = [s for s in sweeps if s["stimulus_name"] == "Long Square"]
        start, end = stimulus_window(longs[0])
        ss = SweepSet(
            [
                Sweep(s["t"], s["v"], s["i"], "CurrentClamp", s["rate"], s["sweep_number"])
                for s in longs
            ]
        )
        lsa = LongSquareAnalysis(
            SpikeFeatureExtractor(start=start, end=end),
            SpikeTrainFeatureExtractor(start=start, end=end),
            subthresh_min_amp=-100.0,
        )
        numbers = [s["sweep_number"] for s in longs]
        raw = lsa.analyze(ss)
        features["long_squares"] = lsa.as_dict(raw, [{"sweep_number": n} for n in numbers])
        for s, spikes in zip(longs, lsa._spikes_set, strict=True):
            cols = ["threshold_t", "threshold_v", "peak_t", "peak_v", "trough_t", "trough_v"]
            cols += ["fast_trough_v", "upstroke", "downstroke", "upstroke_downstroke_ratio"]
            cols += ["width", "fast_trough_t", "adp_t", "adp_v", "slow_trough_t", "slow_trough_v"]
            cols += ["isi_type"]
            per_sweep[str(s["sweep_number"])] = {
                c: spikes[c].tolist() if len(spikes) else [] for c in cols
            }
        sweep_table = lsa._sweep_features
        ramps = [s for s in sweeps if s["stimulus_name"] == "Ramp"]
        if ramps:
            r_start, _ = stimulus_window(ramps[0])
            r_end = ramps[0]["t"][-1]
            rss = SweepSet(
                [Sweep(s["t"], s["v"], s["i"], "CurrentClamp", s["rate"]) for s in ramps]
            )
            ra = RampAnalysis(
                SpikeFeatureExtractor(start=r_start, end=r_end),
                SpikeTrainFeatureExtractor(start=r_start, end=r_end),
            )
            ramp_numbers = [{"sweep_number": s["sweep_number"]} for s in ramps]
            features["ramps"] = ra.as_dict(ra.analyze(rss), ramp_numbers)
        record = build_cell_feature_record(features)
        specimen = Path(path).parent.name.removeprefix("specimen_")
        result["specimens"][specimen] = {
            "record": _clean(record),
            "rheobase_i": _clean(raw["rheobase_i"]),
            "input_resistance": _clean(raw["input_resistance"]),
            "spikes": _clean(per_sweep),
            "avg_rate": {
                str(numbers[k]): _clean(float(sweep_table["avg_rate"].iloc[k]))
                for k in range(len(numbers))
            },
            "window": [start, end],
            "passed": sorted(s["sweep_number"] for s in sweeps),
            "trough_details": _clean(_trough_detail_spikes(path, sweeps)),
        }
    Path(out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def make(ipfx_python: str) -> None:
    """Synthesise the test's specimens, run :func:`measure` under IPFX, write the reference."""
    with tempfile.TemporaryDirectory() as tmp:
        nwbs = sweep_qc_ipfx.write_specimens(Path(tmp), SPECIMENS)
        cmd = [ipfx_python, __file__, "measure", "--out", str(REFERENCE), *nwbs]
        subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("paths", nargs="+")
    k = sub.add_parser("make")
    k.add_argument("--ipfx", default=IPFX_PYTHON)
    args = parser.parse_args()
    if args.cmd == "measure":
        measure(args.paths, args.out)
    else:
        make(args.ipfx)


if __name__ == "__main__":
    main()
