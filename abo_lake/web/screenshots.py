"""A small sample lake for the web app's tests, and ``make screenshots``: each page in Chromium.

``python -m abo_lake.web.screenshots OUT [--lake URL]`` serves the lake (default: the sample
lake, built under ``OUT/sample`` on first use) on 127.0.0.1, opens every kind of page in
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) and
writes one PNG per page to ``OUT``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from abo_lake.lake import Lake, open_lake

__all__ = ["SAMPLE_SOURCES", "browser", "find_browser", "pages", "sample_lake"]

#: Source kind -> synthesizer options of the sample lake (tiny: it builds in under a minute).
SAMPLE_SOURCES: dict[str, dict[str, Any]] = {
    "vbo-ophys": {"n_experiments": 1},
    "vc2p-ophys": {},
    "vcn-ecephys": {},
    "celltypes": {},
    "ccf": {},
}
#: The dataset the second sample release leaves out (so the two releases differ).
WITHDRAWN = "ccf/ccf_2017/template"


def sample_lake(folder: str | Path, *, scheduler: str | None = None) -> Lake:
    """Releases ``sample.1`` (tiny sources of every plotted kind, converted) and ``sample.2``
    (the same without the CCF template volume), built under ``folder`` unless there."""
    from abo_lake import jobs
    from abo_lake.synthetic import synthesize

    folder = Path(folder)
    lake = open_lake(str(folder / "lake"))
    if {"sample.1", "sample.2"} <= set(lake.releases()):
        return lake
    sources = []
    for kind, options in SAMPLE_SOURCES.items():
        out = folder / "sources" / kind
        if not out.exists():
            synthesize(kind, out, scale="tiny", seed=1, **options)
        sources.append(str(out))
    if "sample.1" not in lake.releases():
        report = jobs.run(
            sources,
            lake,
            "sample.1",
            scheduler=scheduler,
            workers=None if scheduler else 2,
            progress=False,
            notes="tiny sources of every plotted kind",
        )
        if not report.published:
            raise RuntimeError(f"the sample release was not published:\n{report.summary()}")
    first = lake.release("sample.1")
    with lake.stage("sample.2", notes="the CCF template volume withdrawn") as stage:
        for path, entry in first.record.datasets.items():
            if path != WITHDRAWN:
                stage.add(path, entry["manifest"], kind=entry.get("kind"))
        for name in first.tables():
            stage.write_table(name, first.table(name))
    return lake


def find_browser() -> tuple[str, str] | None:
    """Paths of Chromium and its WebDriver (Debian's packages), or None if either is absent."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def browser(width: int = 1280, height: int = 1000) -> Any:
    """A headless Chromium driven by Selenium through the system chromedriver (never a
    downloaded one)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError("no chromium/chromedriver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=found[1]), options=options)


def pages(lake: Lake) -> dict[str, str]:
    """Name -> app path of one page of every kind (pinned to the newest release)."""
    rel = lake.release()
    names = lake.releases()
    first = lake.release(names[0])
    out = {
        "releases": "/",
        "diff": f"/diff?a={first.pin}&b={rel.pin}",
        "release": f"/r/{rel.pin}",
    }
    if "ophys_experiments" in rel.record.tables:
        out["table"] = f"/r/{rel.pin}/t/ophys_experiments"
    if "units" in rel.record.tables:
        out["search"] = f"/r/{rel.pin}/t/units?firing_rate=1:20&_sort=firing_rate&_desc=1"
    plots = {
        "ophys_experiment": ["dff", "response"],
        "ecephys_session": ["raster"],
        "ccf_volume": ["slice"],
        "celltypes_ephys": ["sweep"],
    }
    for kind, names_ in plots.items():
        paths = [p for p in rel.datasets() if rel.kind(p) == kind]
        if kind == "ccf_volume":
            paths = [p for p in paths if p.endswith("annotation")]
        for name in names_:
            if paths:
                out[f"plot-{name}"] = f"/r/{rel.pin}/d/{paths[0]}?plot={name}"
    out["error"] = f"/r/{rel.pin}/d/no/such/dataset"
    return out


def main(argv: list[str] | None = None) -> int:
    """Write a PNG of each page to OUT; the time each page took to load is printed."""
    from abo_lake.web.server import running

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder for the PNGs (created)")
    p.add_argument("--lake", default=None, help="lake URL (default: the sample lake in OUT)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if find_browser() is None:
        print("screenshots: no chromium/chromedriver installed", file=sys.stderr)
        return 1
    lake = open_lake(args.lake) if args.lake else sample_lake(out / "sample")
    driver = browser()
    try:
        with running(lake) as root:
            for name, path in pages(lake).items():
                t0 = time.perf_counter()
                driver.get(root + path)
                seconds = time.perf_counter() - t0
                height = driver.execute_script("return document.body.scrollHeight")
                driver.set_window_size(1280, min(max(int(height) + 40, 600), 2400))
                driver.save_screenshot(str(out / f"{name}.png"))
                print(f"{name:16} {seconds:5.2f} s  {path}")
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
