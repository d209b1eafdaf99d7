"""Table search and catalog speed on the real Visual Behavior tables.

Prints, for each VBO table: CSV load + search (the AllenSDK way: pandas over the project CSV)
against Parquet load from the lake + search (``release_table(...).search``, which also
hash-checks the object), the ratio (CSV time / Parquet time), and the bytes each moves.
Then the cost of a release catalog at VBO scale (1,941 experiment datasets): writing it on
publish, and opening it with abo_lake and with plain intake.

Run: ``python tests/benchmarks/bench_catalog.py`` (needs ``/work/shared/data/vbo_metadata``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import abo_lake
from abo_lake import catalog, tables
from abo_lake.lake import _now
from abo_lake.manifest import root_hash
from abo_lake.release import ReleaseRecord

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "vbo_metadata"

QUERIES = {
    "ophys_experiment_table": {
        "cre_line": "Sst",
        "imaging_depth": (100, 300),
        "session_type": ["OPHYS_1", "OPHYS_4"],
        "experience_level": "novel",
    },
    "ophys_session_table": {"cre_line": "Vip", "session_type": "images_B"},
    "behavior_session_table": {"cre_line": "Slc17a7", "session_type": ["TRAINING_5", "OPHYS"]},
}


def _best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _csv_search(path: Path, query: dict) -> int:
    df = pd.read_csv(path)
    mask = np.ones(len(df), dtype=bool)
    for col, value in query.items():
        s = df[col]
        if isinstance(value, tuple):
            mask &= s.between(*value).to_numpy()
        elif isinstance(value, list):
            m = np.zeros(len(df), dtype=bool)
            for v in value:
                m |= s.astype(str).str.contains(v, case=False, regex=False).to_numpy()
            mask &= m
        else:
            mask &= s.astype(str).str.contains(value, case=False, regex=False).to_numpy()
    return int(mask.sum())


def bench_tables(lake: abo_lake.Lake) -> None:
    with lake.stage("bench-tables") as stage:
        for csv in sorted(DATA.glob("*.csv")):
            stage.write_table(csv.stem, pd.read_csv(csv))
    rel = lake.release("bench-tables")
    print(
        f"{'table':26} {'rows':>6} {'CSV ms':>8} {'Parquet ms':>11} {'ratio':>6} {'hits':>5} "
        f"{'CSV kB':>7} {'Parquet kB':>10}"
    )
    for csv in sorted(DATA.glob("*.csv")):
        query = QUERIES[csv.stem]

        def lake_search(name: str = csv.stem, query: dict = query) -> int:
            tables._TABLE_CACHE.clear()  # measure the Parquet load, not the cache
            return len(catalog.release_table(rel, name).search(**query))

        hits = lake_search()
        assert hits == _csv_search(csv, query), csv.stem
        t_csv = _best(lambda csv=csv, query=query: _csv_search(csv, query))
        t_pq = _best(lake_search)
        rows = rel.record.tables[csv.stem]["rows"]
        pq_bytes = len(
            lake.storage.read(
                f"cas/{rel.record.tables[csv.stem]['object'][:2]}/"
                f"{rel.record.tables[csv.stem]['object']}"
            )
        )
        print(
            f"{csv.stem:26} {rows:6d} {t_csv * 1e3:8.1f} {t_pq * 1e3:11.1f} "
            f"{t_csv / t_pq:6.1f} {hits:5d} {csv.stat().st_size / 1e3:7.0f} {pq_bytes / 1e3:10.0f}"
        )
    table = catalog.release_table(rel, "ophys_experiment_table")
    t_cached = _best(lambda: len(table.search(**QUERIES["ophys_experiment_table"])))
    print(f"search only (table in memory): {t_cached * 1e3:.1f} ms")


def bench_catalog(lake: abo_lake.Lake) -> None:
    """A release record with VBO's 1,941 experiments (one shared manifest) and its catalog."""
    ids = pd.read_csv(DATA / "ophys_experiment_table.csv")["ophys_experiment_id"].tolist()
    ds = xr.Dataset(
        {"dff": (("cell_specimen_id", "time"), np.zeros((2, 10)))},
        attrs={"abo_lake_kind": "ophys_experiment"},
    )
    with lake.stage("one") as stage:
        h = stage.write("ophys/experiment/1", ds)
    datasets = {
        f"ophys/experiment/{i}": {"manifest": h, "kind": "ophys_experiment", "nbytes": 160}
        for i in ids
    }
    record = ReleaseRecord(
        name="vbo",
        root=root_hash({p: d["manifest"] for p, d in datasets.items()}),
        created=_now().isoformat(),
        abo_lake_version=abo_lake.__version__,
        notes="",
        datasets=datasets,
    )
    t0 = time.perf_counter()
    catalog.write_catalog(lake, record)
    t_write = time.perf_counter() - t0
    lake.storage.put_if_absent("releases/vbo/release.json", record.to_bytes())
    size = len(lake.storage.read("releases/vbo/catalog.yaml"))
    t_open = _best(lambda: catalog.open_catalog(lake.url, release="vbo"), repeat=3)
    import intake

    url = lake.storage.url_of("releases/vbo/catalog.yaml")
    t_intake = _best(lambda: intake.from_yaml_file(url), repeat=3)
    cat = catalog.open_catalog(lake.url, release="vbo")
    t_entry = _best(lambda: cat(ophys_experiment_id=ids[-1]).ophys_experiment.read(), repeat=3)
    print(
        f"catalog of {len(ids)} datasets: {size / 1e6:.2f} MB YAML; written on publish in "
        f"{t_write:.2f} s (incl. {len(ids)} per-id manifest copies); open_catalog "
        f"{t_open:.2f} s, plain intake.from_yaml_file {t_intake:.2f} s; "
        f"one entry by id {t_entry * 1e3:.0f} ms"
    )


def main() -> int:
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lake = abo_lake.open_lake(str(Path(tmp) / "lake"))
        bench_tables(lake)
        bench_catalog(lake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
