"""Catalogs and table search: written on publish, pinned to their release, plain-intake readable.

Tests taking ``lake`` run on a local folder lake and on the moto S3 server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import abo_lake
from abo_lake import cas, catalog, cli
from abo_lake.catalog import (
    Table,
    open_catalog,
    parse_value,
    release_table,
    root_catalog,
    search_table,
    write_catalog,
)
from abo_lake.errors import DatasetNotFoundError, ReleaseNotFoundError
from abo_lake.lake import PUBLISH_HOOKS

#: Rows of the vendored VBO sample that get data in the test releases.
WITH_DATA = 3


@pytest.fixture(scope="module")
def vbo_table() -> pd.DataFrame:
    """The 127 real VBO experiment rows, indexed by ophys_experiment_id."""
    ref = resources.files("abo_lake.synthetic.data") / "vbo_ophys_experiments_sample.csv"
    with resources.as_file(ref) as path:
        df = pd.read_csv(path).set_index("ophys_experiment_id").sort_index()
    return df


def experiment(row: pd.Series, exp_id: int, seed: int) -> xr.Dataset:
    """A tiny ophys experiment Dataset with the row's metadata as attrs."""
    rng = np.random.default_rng(seed)
    n_cells, n_time = 4, 60
    ds = xr.Dataset(
        {
            "dff": (("cell_specimen_id", "time"), rng.normal(size=(n_cells, n_time))),
            "roi_mask": (("cell_specimen_id", "y", "x"), rng.random((n_cells, 8, 8)) > 0.7),
            "max_projection": (("y", "x"), rng.integers(0, 4000, (8, 8)).astype("uint16")),
        },
        coords={
            "cell_specimen_id": np.arange(n_cells, dtype="int64") + 1_086_000_000,
            "cell_roi_id": ("cell_specimen_id", np.arange(n_cells, dtype="int64") + 1_080_000),
            "time": np.arange(n_time) / 31.0,
        },
        attrs={
            "abo_lake_kind": "ophys_experiment",
            "source_file": f"behavior_ophys_experiment_{exp_id}.nwb",
            "ophys_experiment_id": int(exp_id),
            "cre_line": str(row["cre_line"]),
            "targeted_structure": str(row["targeted_structure"]),
            "imaging_depth": int(row["imaging_depth"]),
            "session_type": str(row["session_type"]),
            "experience_level": str(row["experience_level"]),
            "equipment_name": str(row["equipment_name"]),
        },
    )
    ds["time"].attrs["units"] = "s"
    return ds


def publish(lake: abo_lake.Lake, name: str, table: pd.DataFrame, *, seed: int) -> list[int]:
    """Publish a release: data for the first WITH_DATA rows, the whole table. Return data ids."""
    ids = [int(i) for i in table.index[:WITH_DATA]]
    df = table.copy()
    df["dataset_path"] = ""
    with lake.stage(name) as stage:
        for k, exp_id in enumerate(ids):
            path = f"ophys/experiment/{exp_id}"
            stage.write(path, experiment(table.loc[exp_id], exp_id, seed + k))
            df.loc[exp_id, "dataset_path"] = path
        stage.write_table("ophys_experiments", df)
    return ids


def lake_options(lake: abo_lake.Lake) -> dict:
    return dict(lake.storage.storage_options)


# -- catalogs on both lakes ----------------------------------------------------------------
class TestCatalog:
    def test_catalog_written_on_publish(self, lake, vbo_table):
        ids = publish(lake, "r1", vbo_table, seed=0)
        rel = lake.release("r1")
        doc = yaml.safe_load(lake.storage.read("releases/r1/catalog.yaml"))
        assert doc["version"] == 2
        assert doc["metadata"]["abo_lake_release"] == "r1"
        assert doc["metadata"]["abo_lake_release_root"] == rel.root
        assert doc["metadata"]["created"] == rel.record.created
        # stored: no line per dataset (its size does not grow with the release), the by-id
        # entry and the table; the ids are in the table
        assert set(doc["entries"]) == {"ophys_experiment", "ophys_experiments"}
        up = doc["user_parameters"]["ophys_experiment_id"]
        assert "options" not in up
        assert up["dtype"] == "str"
        assert f"{len(ids)} in release r1" in up["description"]
        # by id: the dataset's path, in its record part, in the release record
        so = doc["data"]["ophys_experiment_by_id"]["kwargs"]["storage_options"]
        assert so["fo"] == "ophys/experiment/{ophys_experiment_id}.json"
        route = rel.record.summary["route"]["ophys/experiment"]
        routed = f"ophys/experiment/{{ophys_experiment_id:.{route}}}.json"
        assert so["target_options"]["fo"] == routed
        record_url = lake.storage.url_of("releases/r1/release.json")
        assert so["target_options"]["target_options"]["fo"] == record_url
        # the catalog open_catalog builds also has an entry per dataset, by its manifest
        cat = open_catalog(lake.url, release="r1", **lake_options(lake))
        assert {f"ophys_experiment_{i}" for i in ids} <= set(cat)
        fo = cat.data[f"ophys_experiment_{ids[0]}_zarr"].kwargs["storage_options"]["fo"]
        assert fo == rel.manifest_url(f"ophys/experiment/{ids[0]}")
        root = yaml.safe_load(lake.storage.read("catalog.yaml"))
        assert set(root["entries"]) == {"r1", "latest", "release"}
        assert root["metadata"]["releases"] == ["r1"]

    def test_entries_open_what_release_open_opens(self, lake, vbo_table):
        ids = publish(lake, "r1", vbo_table, seed=0)
        rel = lake.release("r1")
        cat = open_catalog(lake.url, release="latest", **lake_options(lake))
        assert cat.metadata["abo_lake_release"] == "r1"
        for exp_id in ids:
            expected = rel.open(f"ophys/experiment/{exp_id}")
            got = cat[f"ophys_experiment_{exp_id}"].read()
            assert isinstance(got["dff"].data, type(expected["dff"].data))  # lazy dask
            xr.testing.assert_identical(got, expected)
            by_id = cat(ophys_experiment_id=exp_id).ophys_experiment.read()
            xr.testing.assert_identical(by_id, expected)
        pd.testing.assert_frame_equal(cat.ophys_experiments.read(), rel.table("ophys_experiments"))

    def test_search_then_open(self, lake, vbo_table):
        ids = publish(lake, "r1", vbo_table, seed=0)
        rel = lake.release("r1")
        table = release_table(rel, "ophys_experiments")
        first = vbo_table.loc[ids[0]]
        found = table.search(
            cre_line=first["cre_line"][:3].lower(), imaging_depth=int(first["imaging_depth"])
        )
        assert ids[0] in found.df.index
        expected_rows = vbo_table[
            vbo_table["cre_line"].str.contains(first["cre_line"][:3], case=False)
            & (vbo_table["imaging_depth"] == first["imaging_depth"])
        ]
        assert sorted(found.df.index) == sorted(expected_rows.index)
        ds = found.open(ids[0])
        xr.testing.assert_identical(ds, rel.open(f"ophys/experiment/{ids[0]}"))
        assert ds.attrs["abo_lake_release"] == "r1"
        assert ds.attrs["abo_lake_release_root"] == rel.root

    def test_each_release_catalog_keeps_its_own_data(self, lake, vbo_table):
        ids = publish(lake, "r1", vbo_table, seed=0)
        publish(lake, "r2", vbo_table, seed=100)
        so = lake_options(lake)
        with pytest.warns(UserWarning, match=r"not the newest.*'r2'.*lake.diff\('r1', 'r2'\)"):
            cat1 = open_catalog(lake.url, release="r1", **so)
        cat2 = open_catalog(lake.url, release="r2", **so)
        publish(lake, "r3", vbo_table, seed=200)
        r1, r2 = lake.release("r1"), lake.release("r2")
        path = f"ophys/experiment/{ids[0]}"
        for cat, rel in [(cat1, r1), (cat2, r2)]:
            got = cat[f"ophys_experiment_{ids[0]}"].read()
            np.testing.assert_array_equal(got["dff"].values, rel.open(path)["dff"].values)
            assert got.attrs["abo_lake_release"] == rel.name
            by_id = cat(ophys_experiment_id=ids[0]).ophys_experiment.read()
            np.testing.assert_array_equal(by_id["dff"].values, rel.open(path)["dff"].values)
        assert not np.array_equal(
            r1.open(path)["dff"].values, r2.open(path)["dff"].values
        )  # the two releases do differ
        # reopened after r3 was published, r1's stored catalog still opens r1's data
        with pytest.warns(UserWarning, match="not the newest"):
            again = open_catalog(lake.url, release="r1", **so)
        np.testing.assert_array_equal(
            again(ophys_experiment_id=ids[0]).ophys_experiment.read()["dff"].values,
            r1.open(path)["dff"].values,
        )
        root = root_catalog(lake.url, **so)
        assert list(root) == ["r1", "r2", "r3", "latest", "release"]
        assert root.latest.read().metadata["abo_lake_release"] == "r3"
        assert root(release="r2").release.read().metadata["abo_lake_release"] == "r2"

    def test_verify_covers_tables_and_the_catalog(self, lake, vbo_table):
        """A release is more than its chunks: its tables' Parquet objects are re-hashed and
        its catalog is checked too (a corrupt table used to pass verify)."""
        publish(lake, "r1", vbo_table, seed=0)
        rel = lake.release("r1")
        report = lake.verify("r1")
        assert report.ok
        table = rel.record.tables["ophys_experiments"]["object"]
        data = bytearray(lake.storage.read(cas.key_of(table)))
        data[len(data) // 2] ^= 0xFF
        lake.storage.write(cas.key_of(table), bytes(data))
        index = "releases/r1/catalog.yaml"
        lake.storage.delete([index])
        report = lake.verify("r1")
        assert report.corrupt == [("table ophys_experiments", "parquet", table)]
        assert report.incomplete == [(index, "missing")]
        assert "table ophys_experiments" in str(report)

    def test_diff_reports_changed_tables(self, lake, vbo_table):
        publish(lake, "r1", vbo_table, seed=0)
        noted = vbo_table.assign(my_note="re-curated")
        publish(lake, "r2", noted, seed=0)  # same data, one more column
        diff = lake.diff("r1", "r2")
        assert {d.status for d in diff.datasets} == {"unchanged"}
        assert [(t.name, t.status) for t in diff.tables] == [("ophys_experiments", "changed")]
        assert diff.bytes_to_fetch == diff.tables[0].bytes_to_fetch > 0
        assert "changed   table ophys_experiments" in str(diff)
        assert diff.to_dict()["tables"][0]["status"] == "changed"
        assert lake.diff("r2", "r2").tables[0].status == "unchanged"


def test_no_credentials_in_a_stored_s3_catalog(s3_bucket, s3_options, vbo_table):
    lake = abo_lake.open_lake(
        f"s3://{s3_bucket}/lake", **s3_options, client_kwargs={"aws_session_token": "tok3n"}
    )
    publish(lake, "r1", vbo_table, seed=0)
    for key in ["releases/r1/catalog.yaml", "catalog.yaml"]:
        text = lake.storage.read(key).decode()
        assert "testing" not in text  # key and secret
        assert "tok3n" not in text
        assert not any(w in text for w in ("secret", "key:", "token"))
        assert s3_options["endpoint_url"] in text  # endpoints are not secret
    # credentials given at open time are used in memory only
    cat = open_catalog(f"s3://{s3_bucket}/lake", **s3_options)
    assert cat.ophys_experiments.read().shape[0] == len(vbo_table)
    assert "testing" not in lake.storage.read("releases/r1/catalog.yaml").decode()


def test_public_options_strip_every_secret():
    options = {
        "endpoint_url": "http://x",
        "anon": False,
        "key": "k",
        "secret": "s",
        "token": "t",
        "client_kwargs": {"region_name": "us-west-2", "aws_secret_access_key": "s2"},
        "s3_additional_kwargs": {"SSECustomerKey": "k2"},
        "password": "p",
    }
    assert catalog._public(options) == {
        "endpoint_url": "http://x",
        "anon": False,
        "client_kwargs": {"region_name": "us-west-2"},
        "s3_additional_kwargs": {},
    }


def test_plain_intake_reads_the_stored_catalogs_without_abo_lake(local_lake, vbo_table):
    ids = publish(local_lake, "r1", vbo_table, seed=0)
    rel = local_lake.release("r1")
    root_url = local_lake.storage.url_of("catalog.yaml")
    release_url = local_lake.storage.url_of("releases/r1/catalog.yaml")
    script = textwrap.dedent(
        f"""
        import sys, intake
        root = intake.from_yaml_file({root_url!r})
        cat = root.latest.read()
        ds = cat(ophys_experiment_id={ids[1]}).ophys_experiment.read()
        by_id = cat(ophys_experiment_id="{ids[2]}").ophys_experiment.read()
        table = cat.ophys_experiments.read()
        meta = cat.ophys_experiment.metadata
        cat2 = intake.open_catalog({release_url!r})
        same = cat2(ophys_experiment_id={ids[1]}).ophys_experiment.read()
        assert "abo_lake" not in sys.modules, "plain intake imported abo_lake"
        print(float(ds["dff"].sum()), float(by_id["dff"].sum()), len(table),
              meta["abo_lake_release"], meta["abo_lake_release_root"],
              float(same["dff"].sum()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    d1 = float(rel.open(f"ophys/experiment/{ids[1]}")["dff"].sum())
    d2 = float(rel.open(f"ophys/experiment/{ids[2]}")["dff"].sum())
    assert float(words[0]) == pytest.approx(d1)
    assert float(words[1]) == pytest.approx(d2)
    assert int(words[2]) == len(vbo_table)
    assert words[3:5] == ["r1", rel.root]
    assert float(words[5]) == pytest.approx(d1)


def test_repository_root_catalog_opens_a_lake(local_lake, vbo_table):
    import intake

    ids = publish(local_lake, "r1", vbo_table, seed=0)
    publish(local_lake, "r2", vbo_table, seed=7)
    path = Path(__file__).resolve().parents[1] / "catalogs" / "root.yaml"
    cat = intake.from_yaml_file(str(path))
    lake_cat = cat(lake=local_lake.url).lake.read()
    assert list(lake_cat) == ["r1", "r2", "latest", "release"]
    latest = lake_cat.latest.read()
    assert latest.metadata["abo_lake_release"] == "r2"
    r1 = cat(lake=local_lake.url, release="r1").release.read()
    got = r1(ophys_experiment_id=ids[0]).ophys_experiment.read()
    expected = local_lake.release("r1").open(f"ophys/experiment/{ids[0]}")
    np.testing.assert_array_equal(got["dff"].values, expected["dff"].values)


def test_multiscale_ccf_volume_by_resolution(local_lake):
    attrs = {"abo_lake_kind": "ccf_volume", "source_file": "annotation_25.nrrd"}
    levels = {}
    for res, n in [(25, 8), (50, 4)]:
        ds = xr.Dataset(
            {"annotation": (("ap", "dv", "lr"), np.full((n, n, n), res, dtype="uint32"))},
            coords={d: np.arange(n) * float(res) for d in ("ap", "dv", "lr")},
            attrs={**attrs, "resolution_um": res},
        )
        levels[f"{res}um"] = ds
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **levels})
    with local_lake.stage("r1") as stage:
        stage.write("ccf/2017/annotation", tree)
    cat = open_catalog(local_lake.url)
    finest = cat.ccf_2017_annotation.read()
    assert finest.sizes["ap"] == 8
    assert cat.ccf_2017_annotation.metadata["resolutions_um"] == [25, 50]
    coarse = cat(resolution_um=50, ccf_version=2017).ccf_annotation.read()
    assert coarse.sizes["ap"] == 4
    assert int(coarse["annotation"].max()) == 50
    assert coarse.attrs["abo_lake_dataset"] == "ccf/2017/annotation"
    with pytest.raises(ValueError, match="Could not validate"):
        cat(resolution_um=10).ccf_annotation.read()


def test_release_published_without_catalog_gets_one_on_open(local_lake, vbo_table, monkeypatch):
    monkeypatch.setattr("abo_lake.lake.PUBLISH_HOOKS", [])
    ids = publish(local_lake, "r1", vbo_table, seed=0)
    monkeypatch.undo()
    assert write_catalog in PUBLISH_HOOKS
    assert not local_lake.storage.exists("releases/r1/catalog.yaml")
    cat = open_catalog(local_lake.url, release="r1")
    assert local_lake.storage.exists("releases/r1/catalog.yaml")
    ds = cat(ophys_experiment_id=ids[0]).ophys_experiment.read()
    assert ds.attrs["ophys_experiment_id"] == ids[0]


# -- tables --------------------------------------------------------------------------------
@pytest.fixture
def table_lake(local_lake, vbo_table):
    ids = publish(local_lake, "r1", vbo_table, seed=0)
    return local_lake, ids


class TestTable:
    def test_repr_len_and_unique(self, table_lake, vbo_table):
        lake, _ = table_lake
        table = release_table(lake.release("r1"), "ophys_experiments")
        assert repr(table) == f"<Table ophys_experiments: {len(vbo_table)} of 127 rows>"
        sst = table.search(cre_line="Sst")
        n_sst = int(vbo_table["cre_line"].str.contains("Sst").sum())
        assert 0 < n_sst < len(vbo_table)
        assert repr(sst) == f"<Table ophys_experiments: {n_sst} of 127 rows>"
        assert table.unique("cre_line") == sorted(vbo_table["cre_line"].unique())
        summary = table.unique()
        assert summary.loc["cre_line", "nunique"] == vbo_table["cre_line"].nunique()
        assert summary.loc["ophys_experiment_id", "nunique"] == len(vbo_table)
        html_text = table._repr_html_()
        assert "r1@" in html_text
        assert "<table" in html_text
        pd.testing.assert_frame_equal(table.to_dataframe(), table.df)

    def test_search_kinds(self, table_lake, vbo_table):
        lake, _ = table_lake
        table = release_table(lake.release("r1"), "ophys_experiments")
        v = vbo_table
        cases = [
            ({"imaging_depth": (150, 250)}, v["imaging_depth"].between(150, 250)),
            ({"imaging_depth": (None, 150)}, v["imaging_depth"] <= 150),
            (
                {"targeted_structure": ["VISp", "VISl"]},
                v["targeted_structure"].str.contains("VISp|VISl"),
            ),
            ({"session_type": "images_b"}, v["session_type"].str.contains("images_B")),
            ({"passive": True}, v["passive"]),
            ({"passive": "false"}, ~v["passive"]),
            ({"imaging_depth": "175"}, v["imaging_depth"] == 175),
            ({"imaging_depth": lambda s: s % 2 == 1}, v["imaging_depth"] % 2 == 1),
            ({"ophys_experiment_id": list(v.index[:4])}, v.index.isin(v.index[:4])),
            (
                {"cre_line": "vip", "experience_level": ["novel"]},
                v["cre_line"].str.startswith("Vip") & v["experience_level"].str.contains("Novel"),
            ),
        ]
        for query, expected in cases:
            got = table.search(**query)
            assert sorted(got.df.index) == sorted(v.index[np.asarray(expected)]), query
        # chained searches narrow
        both = table.search(cre_line="Sst").search(imaging_depth=(0, 200))
        assert sorted(both.df.index) == sorted(
            v.index[v["cre_line"].str.contains("Sst") & v["imaging_depth"].between(0, 200)]
        )
        assert both.total == 127

    def test_search_table_and_parse_value(self, table_lake, vbo_table):
        lake, _ = table_lake
        df = search_table(
            lake.release("r1"), "ophys_experiments", imaging_depth=parse_value("100:300")
        )
        assert sorted(df.index) == sorted(
            vbo_table.index[vbo_table["imaging_depth"].between(100, 300)]
        )
        assert parse_value("100:300") == (100, 300)
        assert parse_value("100:") == (100, None)
        assert parse_value("0.5:1.5") == (0.5, 1.5)
        assert parse_value("VISp,VISl") == ["VISp", "VISl"]
        assert parse_value("1,2") == [1, 2]
        assert parse_value("175") == 175
        assert parse_value("-2.5") == -2.5
        assert parse_value("1e3") == 1000.0
        assert parse_value("true") is True
        assert parse_value("Sst-IRES-Cre") == "Sst-IRES-Cre"
        assert parse_value("2018-12-10 13:37:29") == "2018-12-10 13:37:29"

    def test_cli_catalog_search(self, table_lake, vbo_table, capsys):
        lake, _ = table_lake
        argv = ["catalog", "--lake", lake.url, "--table", "ophys_experiments", "--json"]
        code = cli.main([*argv, "--search", "cre_line=vip", "imaging_depth=100:200"])
        assert code == 0
        rows = json.loads(capsys.readouterr().out)["data"]
        expected = vbo_table[
            vbo_table["cre_line"].str.startswith("Vip")
            & vbo_table["imaging_depth"].between(100, 200)
        ]
        assert sorted(r["ophys_experiment_id"] for r in rows) == sorted(expected.index)

    def test_open_and_to_dataset_dict(self, table_lake):
        lake, ids = table_lake
        rel = lake.release("r1")
        table = release_table(rel, "ophys_experiments")
        with_data = table.search(dataset_path="ophys/experiment")
        assert sorted(with_data.df.index) == sorted(ids)
        dsets = with_data.to_dataset_dict()
        assert sorted(dsets) == sorted(ids)
        for exp_id, ds in dsets.items():
            xr.testing.assert_identical(ds, rel.open(f"ophys/experiment/{exp_id}"))
            assert ds.attrs["ophys_experiment_id"] == exp_id
        # an id given as text works too
        assert table.open(str(ids[0])).attrs["abo_lake_dataset"] == f"ophys/experiment/{ids[0]}"
        # an id outside a search result still opens: search is a view of the release table
        assert (
            table.search(ophys_experiment_id=ids[1]).open(ids[0]).attrs["ophys_experiment_id"]
            == ids[0]
        )
        with pytest.warns(UserWarning, match="have no data"):
            partial = table.search(
                ophys_experiment_id=[*ids, int(table.df.index[-1])]
            ).to_dataset_dict(skip_missing=True)
        assert sorted(partial) == sorted(ids)

    def test_open_warns_on_an_old_release(self, local_lake, vbo_table):
        ids = publish(local_lake, "r1", vbo_table, seed=0)
        publish(local_lake, "r2", vbo_table, seed=5)
        table = release_table(local_lake.release("r1"), "ophys_experiments")
        with pytest.warns(UserWarning, match=r"r1@.* is not the newest.*lake.diff\('r1', 'r2'\)"):
            ds = table.open(ids[0])
        assert ds.attrs["abo_lake_release"] == "r1"
        newest = release_table(local_lake.release("latest"), "ophys_experiments")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            newest.open(ids[0])


class TestErrors:
    def test_unknown_release(self, local_lake, vbo_table):
        publish(local_lake, "r1", vbo_table, seed=0)
        with pytest.raises(ReleaseNotFoundError, match=r"no release 'r9'.*available: r1"):
            open_catalog(local_lake.url, release="r9")

    def test_unknown_table(self, table_lake):
        lake, _ = table_lake
        with pytest.raises(DatasetNotFoundError, match=r"no table 'units'.*ophys_experiments"):
            release_table(lake.release("r1"), "units")

    def test_unknown_column_lists_columns(self, table_lake):
        lake, _ = table_lake
        table = release_table(lake.release("r1"), "ophys_experiments")
        with pytest.raises(KeyError, match=r"no column 'cre'.*did you mean.*'cre_line'.*columns"):
            table.search(cre="Sst")
        with pytest.raises(DatasetNotFoundError, match="imaging_depth"):
            table.unique("depth")

    def test_empty_search_is_an_empty_table(self, table_lake):
        lake, _ = table_lake
        table = release_table(lake.release("r1"), "ophys_experiments")
        empty = table.search(cre_line="no-such-line", imaging_depth=(0, 10_000))
        assert isinstance(empty, Table)
        assert len(empty) == 0
        assert repr(empty) == "<Table ophys_experiments: 0 of 127 rows>"
        assert empty.to_dataset_dict() == {}
        assert list(empty.df.columns) == list(table.df.columns)

    def test_bad_values(self, table_lake):
        lake, _ = table_lake
        table = release_table(lake.release("r1"), "ophys_experiments")
        with pytest.raises(ValueError, match=r"'imaging_depth' is numeric.*'deep'"):
            table.search(imaging_depth="deep")
        with pytest.raises(ValueError, match=r"range for 'imaging_depth' must be \(lo, hi\)"):
            table.search(imaging_depth=(1, 2, 3))

    def test_unknown_id_lists_near_ids(self, table_lake):
        lake, ids = table_lake
        table = release_table(lake.release("r1"), "ophys_experiments")
        with pytest.raises(
            DatasetNotFoundError, match=rf"no ophys_experiment_id {ids[0] + 1}.*{ids[0]}"
        ):
            table.open(ids[0] + 1)

    def test_row_without_data(self, table_lake):
        lake, ids = table_lake
        table = release_table(lake.release("r1"), "ophys_experiments")
        no_data = int(table.df.index[-1])
        assert no_data not in ids
        with pytest.raises(DatasetNotFoundError, match=rf"{no_data}.*r1@.*has no data for it"):
            table.open(no_data)
        with pytest.raises(DatasetNotFoundError, match="has no data"):
            table.search(ophys_experiment_id=no_data).to_dataset_dict()

    def test_catalog_rejects_unknown_id(self, table_lake):
        lake, ids = table_lake
        cat = open_catalog(lake.url)
        with pytest.raises(ValueError, match="Could not validate"):
            cat(ophys_experiment_id=ids[0] + 1).ophys_experiment.read()
