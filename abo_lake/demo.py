"""``abo-lake demo``: the whole idea on a local folder lake, in a few minutes.

sources (every Allen format, written here) -> conversion on a local Dask cluster -> release
``demo.1`` -> the Visual Behavior files regenerated with only event detection changed ->
release ``demo.2`` -> dedup figures and the diff -> catalog search -> a lazy analysis -> PNGs.
Rerunning it reuses what is already there.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from pathlib import Path

from abo_lake import jobs
from abo_lake.catalog import open_catalog
from abo_lake.kinds import FORMATS
from abo_lake.lake import Lake, open_lake
from abo_lake.release import Release
from abo_lake.synthetic import synthesize

__all__ = ["demo_lake", "run_demo"]

#: source format -> options for the demo's tiny sources (declared in :mod:`abo_lake.kinds`)
SOURCES = {f.name: f.demo for f in FORMATS.values() if f.demo is not None}


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _sources(work: Path) -> tuple[Path, Path]:
    """Write demo sources once: release 1's, and release 2's (VBO event detection changed)."""
    v1, v2 = work / "sources" / "release1", work / "sources" / "release2"
    if not (v1 / ".done").exists():
        shutil.rmtree(v1, ignore_errors=True)
        for kind, options in SOURCES.items():
            paths = synthesize(kind, v1 / kind, scale="tiny", seed=1, **options)
            size = sum(p.stat().st_size for p in paths if p.is_file())
            print(f"  {kind:13} {len(paths):3} files {size / 1e6:8.1f} MB  -> {v1 / kind}")
        (v1 / ".done").touch()
    if not (v2 / ".done").exists():
        shutil.rmtree(v2, ignore_errors=True)
        shutil.copytree(v1, v2, ignore=shutil.ignore_patterns("vbo-ophys", ".done"))
        synthesize(
            "vbo-ophys",
            v2 / "vbo-ophys",
            scale="tiny",
            seed=1,
            event_detection_version=2,
            **SOURCES["vbo-ophys"],
        )
        (v2 / ".done").touch()
    return v1, v2


def _release(lake: Lake, name: str, sources: Path, notes: str, progress: bool = True) -> None:
    if name in lake.releases():
        print(f"  {name} already published in {lake.url}: reusing it")
        return
    report = jobs.run([sources], lake, name, workers=2, notes=notes, progress=progress)
    print(report.summary())
    if not report.published:
        raise SystemExit(f"demo: release {name} was not published (see failures above)")


def _analysis(rel: Release, out: Path) -> list[Path]:
    """Search, open lazily, compute a trial-aligned response and a PSTH, save figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(rel.lake.url, release=rel.name)
    print(
        f"  intake catalog of {rel.pin}: {len(list(catalog))} entries, e.g. "
        f"{', '.join(list(catalog)[:3])}"
    )
    experiments = rel.ophys_experiments
    print(f"  {experiments!r}:")
    print(
        experiments.df[
            ["cre_line", "targeted_structure", "imaging_depth", "session_type"]
        ].to_string(max_rows=10)
    )
    vbo = experiments.search(session_type="OPHYS").df
    row = vbo.iloc[0]
    found = experiments.search(cre_line=row.cre_line, targeted_structure=row.targeted_structure)
    print(
        f"  rel.ophys_experiments.search(cre_line={row.cre_line!r}, targeted_structure="
        f"{row.targeted_structure!r}) -> {found!r}"
    )
    ds = rel.open(row.dataset_path)
    store = ds.encoding["abo_lake_store"]
    print(f"  opened lazily: {ds.ophys!r}")
    reads_at_open = store.chunk_reads
    responses = ds.ophys.change_responses(window=(-1.0, 2.0))
    mean = responses.mean("stimulus_presentation_id").compute()
    manifest = rel.manifest(row.dataset_path)
    print(
        f"  change-aligned dF/F of {mean.sizes['cell_specimen_id']} cells over "
        f"{responses.sizes['stimulus_presentation_id']} changes: read "
        f"{store.chunk_reads - reads_at_open} chunk objects (opening read {reads_at_open}, "
        f"the index coordinates) of the dataset's {len(manifest.chunks)} "
        f"({manifest.nbytes / 1e6:.1f} MB)"
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    t = mean["time_relative_to_stimulus_onset"].values
    order = np.argsort(
        -mean.sel(time_relative_to_stimulus_onset=slice(0, 0.75))
        .mean("time_relative_to_stimulus_onset")
        .values
    )
    im = ax.imshow(
        mean.values.T[order], aspect="auto", cmap="magma", extent=[t[0], t[-1], len(order), 0]
    )
    ax.axvline(0, color="w", lw=0.8)
    ax.set(
        xlabel="time from image change (s)",
        ylabel="cell (sorted)",
        title=f"experiment {vbo.index[0]}: mean change response",
    )
    fig.colorbar(im, label="dF/F")
    figures = [out / "change_responses.png"]
    fig.savefig(figures[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    (session_path,) = rel.datasets("ecephys/session/")[:1]
    session = rel.open(session_path)
    units = session.ecephys.units
    names = session["stimulus_presentations.stimulus_name"].values
    ids = session["stimulus_presentation_id"].values[names == "drifting_gratings"]
    edges = np.arange(-0.5, 2.5001, 0.05)
    psth = session.ecephys.psth(
        bin_edges=edges, stimulus_presentation_ids=ids, unit_ids=units.index.values
    ).compute()
    rate = psth.mean("stimulus_condition_id")
    fig, ax = plt.subplots(figsize=(6, 4))
    centres = rate["time_relative_to_stimulus_onset"].values
    for structure, group in units.groupby("ecephys_structure_acronym"):
        ax.plot(centres, rate.sel(unit_id=group.index.values).mean("unit_id"), label=structure)
    ax.axvspan(0, 2, color="0.9")
    ax.set(
        xlabel="time from grating onset (s)",
        ylabel="rate (spikes/s)",
        title=f"session {session_path.rsplit('/', 1)[1]}: PSTH by structure",
    )
    ax.legend(fontsize=7, ncol=2)
    figures.append(out / "psth_drifting_gratings.png")
    fig.savefig(figures[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(
        f"  PSTH of {len(units)} units (AllenSDK's quality filter) around {len(ids)} "
        "drifting-grating presentations computed"
    )
    return figures


def demo_lake(work: str | Path = "abo_lake_work", lake_url: str | None = None) -> Lake:
    """The demo's lake with releases ``demo.1`` and ``demo.2``, built if absent.

    The notebooks start with this: a fresh machine builds the lake in about half a minute;
    afterwards it is reused.
    """
    work = Path(work).resolve()
    lake = open_lake(lake_url or str(work / "lake"))
    if {"demo.1", "demo.2"} <= set(lake.releases()):
        return lake
    v1, v2 = _sources(work)
    _release(lake, "demo.1", v1, "abo-lake demo, first release", progress=False)
    _release(lake, "demo.2", v2, "abo-lake demo: event detection fix", progress=False)
    return lake


def run_demo(work: Path = Path("abo_lake_work"), lake_url: str | None = None) -> None:
    """Run the demo; sources and figures go to ``work``, releases to the lake."""
    t0 = time.perf_counter()
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    lake = open_lake(lake_url)
    _say(f"1. writing tiny sources in the real Allen layouts under {work / 'sources'}")
    v1, v2 = _sources(work)

    _say(f"2. converting them on a local Dask cluster into release demo.1 of {lake.url}")
    _release(lake, "demo.1", v1, "abo-lake demo, first release")

    _say("3. Visual Behavior files regenerated with only event detection changed -> demo.2")
    _release(lake, "demo.2", v2, "abo-lake demo: event detection fix (AllenSDK#2175)")

    _say("4. what the second release cost")
    a, b = lake.release("demo.1"), lake.release("demo.2")
    diff = lake.diff("demo.1", "demo.2")
    print(diff)
    full = a.nbytes + b.nbytes
    new = diff.bytes_to_fetch
    print(
        f"  two full copies: {full / 1e6:.1f} MB; stored for demo.2 beyond demo.1: "
        f"{new / 1e6:.2f} MB ({new / b.nbytes:.1%} of demo.2)"
    )
    stats = lake.stats()
    print(
        f"  lake: logical {stats['logical_bytes'] / 1e6:.1f} MB, stored "
        f"{stats['stored_bytes'] / 1e6:.1f} MB, dedup ratio {stats['dedup_ratio']:.2f}"
    )

    _say("5. searching the release and opening one experiment lazily")
    newest = lake.releases()[-1]
    if newest != b.name:
        print(
            f"  note: the newest release of this lake is {newest!r}; the demo works with "
            f"{b.name!r} (see what changed: abo-lake diff {b.name} {newest})"
        )
    with warnings.catch_warnings():  # said once above, not as a warning with a source line
        warnings.filterwarnings("ignore", r"release .* is not the newest", UserWarning)
        figures = _analysis(b, work / "figures")
    _say(f"done in {time.perf_counter() - t0:.0f} s. Figures:")
    for f in figures:
        print(f"  {f}")
    flag = f" --lake {lake_url}" if lake_url else ""
    print(
        f"\nNext: abo-lake releases{flag} · abo-lake diff demo.1 demo.2{flag} · "
        f"abo-lake verify demo.2{flag} · "
        f"abo-lake catalog --release demo.2 --search cre_line=Vip{flag}  (lake: {lake.url})"
    )
    if shutil.which("abo-lake") is None:  # e.g. after `make demo`: the venv is not active
        activate = Path(sys.prefix) / "bin" / "activate"
        script = Path(sys.executable).parent / "abo-lake"
        how = f"`source {activate}`, or call {script}" if activate.exists() else str(script)
        print(f"(`abo-lake` is not on your PATH: first {how})")
