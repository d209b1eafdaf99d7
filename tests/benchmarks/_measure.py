"""Measure one side of a benchmark in a fresh process, and print the lake beside a baseline.

Every measurement runs in its own process (nothing cached or imported by an earlier one), with
any interpreter: the project's, or AllenSDK's venv beside it. This module uses the standard
library alone, so both can import it.

- :class:`Clock`, inside the measured process: wall time of named phases (``lap``), CPU time
  of the process since the clock started (all its threads; not its child processes), its RSS
  at the start and its peak RSS (``VmHWM``: unlike ``ru_maxrss``, not inherited across exec).
- :func:`run_callable` runs a module-level function of a script in a fresh process of a given
  Python; the function returns a JSON-able dict (usually ``Clock.report``); the call's own wall,
  CPU and peak RSS are filled in when the dict lacks them.
- :func:`run_script` runs a script that prints its measurement as its last stdout line (JSON).
- :func:`best` keeps the fastest of repeated runs; :func:`row` prints lake vs baseline with
  ratios (end to end, per phase, CPU, memory above the process's RSS after its imports).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

__all__ = ["Clock", "best", "row", "rss_mb", "run_callable", "run_script"]


def rss_mb(field: str = "VmHWM") -> float:
    """This process's ``VmRSS`` (now) or ``VmHWM`` (peak) from ``/proc/self/status``, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class Clock:
    """Wall time per phase, CPU time and memory of the current process from its creation."""

    def __init__(self) -> None:
        self.base_rss_mb = rss_mb("VmRSS")
        self.phases: dict[str, float] = {}
        self._t0 = self._last = time.perf_counter()
        self._c0 = time.process_time()

    def lap(self, name: str) -> float:
        """End the phase ``name`` (wall seconds since the previous lap or the start)."""
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._last
        self._last = now
        return self.phases[name]

    def report(self, **extra: Any) -> dict[str, Any]:
        """``<phase>_s`` for each phase, ``wall_s``, ``cpu_s``, ``base_rss_mb``,
        ``peak_rss_mb``, then ``extra``."""
        out: dict[str, Any] = {f"{k}_s": v for k, v in self.phases.items()}
        out.update(
            wall_s=time.perf_counter() - self._t0,
            cpu_s=time.process_time() - self._c0,
            base_rss_mb=self.base_rss_mb,
            peak_rss_mb=rss_mb("VmHWM"),
        )
        out.update(extra)
        return out


_CHILD = r"""
import importlib.util, json, sys
measure_dir, path, name, args = sys.argv[1:5]
sys.path[:0] = [measure_dir, str(__import__("pathlib").Path(path).parent)]
from _measure import Clock
spec = importlib.util.spec_from_file_location("_measured", path)
module = importlib.util.module_from_spec(spec)
sys.modules["_measured"] = module
spec.loader.exec_module(module)
clock = Clock()
result = getattr(module, name)(*json.loads(args))
result = dict(result or {})
for key, value in clock.report().items():
    result.setdefault(key, value)
print("\n" + json.dumps(result), flush=True)
"""


def _last_json(done: subprocess.CompletedProcess, what: str) -> dict[str, Any]:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise RuntimeError(
            f"{what} printed no JSON line last; stdout ends {done.stdout[-500:]!r}"
        ) from exc


def run_callable(
    func: Callable[..., dict | None],
    *args: Any,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``func(*args)`` in a fresh process of ``python`` (default: this one's).

    ``func`` must be a module-level function of a file (importable by its path; the file's
    directory and this module's are put on ``sys.path``) and the args JSON-able (paths are
    passed as strings). Returns its dict with ``wall_s``, ``cpu_s``, ``base_rss_mb`` and
    ``peak_rss_mb`` of the call (module imports excluded) unless the dict has them.
    """
    path = inspect.getfile(func)
    plain = [str(a) if isinstance(a, Path) else a for a in args]
    cmd = [python or sys.executable, "-c", _CHILD, str(HERE), path, func.__name__,
           json.dumps(plain)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    return _last_json(done, f"{func.__name__} under {cmd[0]}")


def run_script(
    python: str, script: str | Path, *args: Any, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process; its last stdout line, as JSON."""
    cmd = [python, str(script), *(str(a) for a in args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    return _last_json(done, f"{Path(script).name} {' '.join(cmd[2:4])} under {python}")


def best(runs: Sequence[dict[str, Any]], phases: Sequence[str] = ("load", "compute")) -> dict:
    """The run with the least wall time over ``phases`` (all of them: ``wall_s``), with the
    largest peak RSS seen over all runs, and ``runs`` (how many)."""

    def total(r: dict) -> float:
        keys = [f"{p}_s" for p in phases]
        return sum(r[k] for k in keys) if all(k in r for k in keys) else r["wall_s"]

    out = dict(min(runs, key=total))
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["runs"] = len(runs)
    return out


def _total(r: dict, phases: Sequence[str]) -> float:
    return sum(r[f"{p}_s"] for p in phases)


def _side(label: str, r: dict, phases: Sequence[str], pad: str) -> str:
    parts = " + ".join(f"{r[f'{p}_s']:6.2f}" for p in phases)
    extra = r["peak_rss_mb"] - r["base_rss_mb"]
    text = (
        f"{pad}{label:<9}{parts} = {_total(r, phases):6.2f} s (CPU {r['cpu_s']:6.2f} s), "
        f"peak RSS {r['peak_rss_mb']:5.0f} MB (+{extra:5.0f})"
    )
    if r.get("result_mb"):
        text += f" = {extra / r['result_mb']:4.2f}x the {r['result_mb']:.0f} MB result"
    return text


def row(
    name: str,
    lake: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    *,
    baseline_name: str = "AllenSDK",
    phases: Sequence[str] = ("load", "compute"),
    width: int = 20,
) -> str:
    """Lines: the lake's phases (``a + b = total s``), CPU and peak RSS (and above the RSS
    after imports; with ``result_mb``, as a multiple of the result), the baseline's, and the
    ratios baseline / lake: end to end, per phase, CPU, memory above the imports."""
    head = f"{name:<{width}}"
    pad = " " * width
    lines = [_side("lake", lake, phases, head)]
    if baseline is None:
        return lines[0]
    lines.append(_side(baseline_name, baseline, phases, pad))
    per_phase = ", ".join(
        f"{p} {baseline[f'{p}_s'] / max(lake[f'{p}_s'], 1e-9):.1f}x" for p in phases
    )
    lake_mem = max(lake["peak_rss_mb"] - lake["base_rss_mb"], 1.0)
    base_mem = baseline["peak_rss_mb"] - baseline["base_rss_mb"]
    lines.append(
        f"{pad}ratio: {_total(baseline, phases) / _total(lake, phases):5.1f}x faster end to end "
        f"({per_phase}), {baseline['cpu_s'] / max(lake['cpu_s'], 1e-9):5.1f}x less CPU, "
        f"{base_mem / lake_mem:4.1f}x less memory"
    )
    return "\n".join(lines)
