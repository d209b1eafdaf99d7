"""The abo-lake command line: documented as it behaves, and synth for every kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from abo_lake.cli import main, reference
from abo_lake.synthetic import KINDS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_cli_reference_is_the_current_help():
    text = README.read_text()
    documented = text.split("<!-- cli-reference:start -->\n")[1].split("\n<!-- cli-reference:end")[
        0
    ]
    assert documented == reference(), (
        "README's CLI reference is stale: regenerate it with "
        "`python -c 'from abo_lake.cli import reference; print(reference())'`"
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_synth_every_kind(kind, tmp_path, capsys):
    assert main(["synth", kind, "--out", str(tmp_path), "--seed", "2", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written
    for item in written:
        assert Path(item["path"]).is_file()
        assert item["bytes"] == Path(item["path"]).stat().st_size > 0


def test_synth_unknown_kind_is_a_clear_error(tmp_path, capsys):
    assert main(["synth", "vbo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown source kind 'vbo'" in err
    assert "vbo-ophys" in err


# -- bad input exits 2 with a message (argparse style) ---------------------------------------------


def _exit_code(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


def test_version_prints_the_package_version(capsys):
    import abo_lake

    with pytest.raises(SystemExit) as exc:  # argparse's version action exits
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"abo-lake {abo_lake.__version__}"


def test_convert_without_release_is_a_usage_error(tmp_path, capsys):
    code, err = _exit_code(["convert", str(tmp_path), "--lake", str(tmp_path / "lake")], capsys)
    assert code == 2
    assert "usage: abo-lake convert" in err
    assert "--release" in err


def test_convert_without_anything_is_a_usage_error(capsys):
    code, err = _exit_code(["convert"], capsys)
    assert code == 2
    assert "give SOURCES and --release NAME, or --spec FILE" in err


@pytest.mark.parametrize("term", ["cre_line", "=Vip"])
def test_catalog_search_term_without_key_value_is_rejected(term, tmp_path, capsys):
    argv = ["catalog", "--lake", str(tmp_path / "lake"), "--search", "imaging_depth=1:2", term]
    code, err = _exit_code(argv, capsys)
    assert code == 2
    assert "argument --search" in err
    assert "is not KEY=VALUE" in err


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]"])
def test_storage_options_must_be_a_json_object(bad, capsys):
    code, err = _exit_code(["releases", "--storage-options", bad], capsys)
    assert code == 2
    assert "argument --storage-options" in err


def test_scheduler_and_workers_exclude_each_other(tmp_path, capsys):
    argv = ["convert", str(tmp_path), "--release", "r", "--scheduler", "tcp://h:8786"]
    code, err = _exit_code([*argv, "--workers", "2"], capsys)  # 2 is also the default
    assert code == 2
    assert "not allowed with argument --scheduler" in err


def test_workers_must_be_positive(tmp_path, capsys):
    code, err = _exit_code(["convert", str(tmp_path), "--release", "r", "--workers", "0"], capsys)
    assert code == 2
    assert "argument --workers" in err


def test_help_states_defaults():
    text = reference()
    for needle in [
        "(default: tiny)",
        "(default: 0)",
        "folder to write the files to",
        "name of the release, e.g. 2026.1",
        "(default: 1h)",
        "publishing is the default",
        "LocalCluster (default: 2)",
        "(default: ophys_experiments)",
        "[--scheduler SCHEDULER | --workers WORKERS]",
        "--version",
    ]:
        assert needle in text, needle


# -- gc: a dry run unless --delete ----------------------------------------------------------------


@pytest.fixture
def lake_with_garbage(tmp_path):
    import numpy as np
    import xarray as xr

    import abo_lake

    lake = abo_lake.open_lake(tmp_path / "lake")
    with lake.stage("r1") as stage:
        stage.write("a/1", xr.Dataset({"x": ("t", np.arange(1000.0))}))
    with pytest.raises(RuntimeError), lake.stage("r2") as stage:  # discarded: its chunk is garbage
        stage.write("a/2", xr.Dataset({"x": ("t", np.arange(1000.0) + 1)}))
        raise RuntimeError
    return lake


def _gc(lake, *flags, capsys) -> dict:
    assert main(["gc", "--lake", lake.url, "--grace", "0s", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_gc_is_a_dry_run_by_default(lake_with_garbage, capsys):
    lake = lake_with_garbage
    before = set(lake.storage.find("cas"))
    report = _gc(lake, capsys=capsys)
    assert report["dry_run"] is True
    assert len(report["chunks"]) == 1
    assert set(lake.storage.find("cas")) == before  # nothing deleted
    assert _gc(lake, "--dry-run", capsys=capsys)["chunks"] == report["chunks"]  # still accepted
    assert set(lake.storage.find("cas")) == before
    assert main(["gc", "--lake", lake.url, "--grace", "0s"]) == 0
    assert "rerun with --delete" in capsys.readouterr().out


def test_gc_delete_deletes(lake_with_garbage, capsys):
    lake = lake_with_garbage
    report = _gc(lake, "--delete", capsys=capsys)
    assert report["dry_run"] is False
    (key,) = report["chunks"]
    assert key not in lake.storage.find("cas")
    assert lake.verify("r1").ok
    assert _gc(lake, capsys=capsys)["chunks"] == []


def test_gc_delete_and_dry_run_exclude_each_other(tmp_path, capsys):
    code, err = _exit_code(["gc", "--lake", str(tmp_path), "--delete", "--dry-run"], capsys)
    assert code == 2
    assert "not allowed with argument --delete" in err


# -- job specifications ---------------------------------------------------------------------------


class _Report:
    failures = ()

    def to_dict(self) -> dict:
        return {}

    def summary(self) -> str:
        return "converted"


@pytest.fixture
def fake_run(monkeypatch):
    """Record what ``abo-lake convert`` hands to jobs.run, without converting anything."""
    from abo_lake import jobs

    calls = []

    def run(specs, lake, release, **kwargs):
        calls.append({"specs": list(specs), "release": release, **kwargs})
        return _Report()

    monkeypatch.setattr(jobs, "run", run)
    return calls


def _spec(tmp_path, text: str) -> Path:
    path = tmp_path / "conversion" / "job.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("release: r\nsources: [a]\nmetdata: []\n", "unknown key(s) metdata; allowed: release"),
        ("sources: [a]\n", "no 'release:'"),
        ("release: r\n", "no 'sources:'"),
        ("release: r\nsources: [a\n", "is not valid YAML, line 3"),
        ("release: r\n\tsources: [a]\n", "is not valid YAML, line 2"),
        ("- a\n- b\n", "a job specification is a YAML mapping"),
        ("", "found an empty file"),
        ("release: r\nsources: [1, 2]\n", "sources must be a path/URL or a list of them"),
        ("release: r\nsources: {a: 1}\n", "sources must be a path/URL or a list of them"),
        ("release: r\nsources: [a]\nmetadata: 3\n", "metadata must be a path/URL"),
        ("release: [r]\nsources: [a]\n", "release must be a release name"),
        ("release: r\nsources: [a]\ncodec: {level: 3}\n", "codec: unknown Blosc option"),
        ("release: r\nsources: [a]\ncodec: 5\n", "codec must be a mapping"),
        ("release: r\nsources: [a]\ncodec: zstd\n", "codec must be a mapping"),
        ("release: r\nsources: [a]\nchunk_mb: 0\n", "chunk_mb must be a number"),
    ],
)
def test_bad_spec_names_the_file_and_exits_2(tmp_path, capsys, fake_run, text, message):
    spec = _spec(tmp_path, text)
    code, err = _exit_code(["convert", "--spec", str(spec), "--lake", str(tmp_path)], capsys)
    assert code == 2
    assert f"abo-lake convert: error: {spec}" in err or f"specification {spec}" in err
    assert message in err
    assert "Traceback" not in err
    assert fake_run == []


def test_missing_spec_file(tmp_path, capsys, fake_run):
    spec = tmp_path / "nope.yaml"
    code, err = _exit_code(["convert", "--spec", str(spec)], capsys)
    assert code == 2
    assert f"cannot read job specification {spec}" in err


def test_spec_single_source_string_is_one_source(tmp_path, capsys, fake_run):
    spec = _spec(tmp_path, "release: r\nsources: ../data\nmetadata: meta.csv\n")
    assert main(["convert", "--spec", str(spec), "--lake", str(tmp_path / "lake")]) == 0
    (call,) = fake_run
    assert call["specs"] == [str(spec.parent / "../data")]  # not one source per character
    assert call["metadata"] == [str(spec.parent / "meta.csv")]
    assert call["release"] == "r"
    assert call["workers"] == 2
    assert call["publish"] is True


def test_spec_paths_and_values(tmp_path, capsys, fake_run):
    spec = _spec(
        tmp_path,
        "release: 2026.10\nsources: [a/, 's3://b/raw/*.nwb']\nmetadata: ['s3://b/m.csv']\n"
        "codec: {clevel: 5}\nchunk_mb: 2\n",
    )
    assert main(["convert", "--spec", str(spec), "--lake", str(tmp_path / "lake")]) == 0
    (call,) = fake_run
    assert call["release"] == "2026.10"  # as written, not the float 2026.1
    assert call["specs"] == [str(spec.parent / "a"), "s3://b/raw/*.nwb"]
    assert call["metadata"] == ["s3://b/m.csv"]
    assert call["write_options"].chunk_bytes == 2 * 2**20


def test_spec_release_that_yaml_reads_as_a_date(tmp_path, capsys, fake_run):
    spec = _spec(tmp_path, "release: 2026-10-01\nsources: [a/]\n")
    assert main(["convert", "--spec", str(spec), "--lake", str(tmp_path / "lake")]) == 0
    (call,) = fake_run
    assert call["release"] == "2026-10-01"


def test_command_line_overrides_spec(tmp_path, capsys, fake_run):
    spec = _spec(tmp_path, "sources: [a]\n")  # no release: given on the command line
    argv = ["convert", "--spec", str(spec), "x", "--release", "cli", "--workers", "3"]
    assert main([*argv, "--lake", str(tmp_path / "lake"), "--no-publish"]) == 0
    (call,) = fake_run
    assert (call["specs"], call["release"], call["workers"]) == (["x"], "cli", 3)
    assert call["publish"] is False


def test_demo_spec_is_valid(capsys, fake_run, tmp_path):
    spec = README.parent / "conversion" / "demo.yaml"
    assert main(["convert", "--spec", str(spec), "--lake", str(tmp_path / "lake")]) == 0
    (call,) = fake_run
    assert call["release"] == "demo.spec.1"
    assert call["specs"] == [str(spec.parent / "../abo_lake_work/sources/release1")]


# -- a closed pipe ends the command quietly ----------------------------------------------------


def test_broken_pipe_is_quiet(tmp_path, monkeypatch, capsys):
    read, write = os.pipe()
    os.close(read)
    stdout = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        code = main(["synth", "ccf", "--out", str(tmp_path), "--json"])
    finally:
        stdout.close()
    assert code == 141
    assert "Traceback" not in capsys.readouterr().err


def test_broken_pipe_in_a_real_process(tmp_path):
    """`abo-lake ... | head`: the reader is gone before the output; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # as `head` exits after its lines
    try:
        out = subprocess.run(
            [sys.executable, "-m", "abo_lake.cli", "synth", "ccf", "--out", str(tmp_path)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert "Traceback" not in out.stderr, out.stderr
    assert "BrokenPipeError" not in out.stderr
    assert out.returncode == 141


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"endpoint": "http://127.0.0.1:9"}, "not one the filesystem takes"),
        (  # nothing listens on port 9 (discard): refused at once
            {
                "endpoint_url": "http://127.0.0.1:9",
                "key": "k",
                "secret": "s",
                "config_kwargs": {"retries": {"max_attempts": 1}},
            },
            "cannot access S3 storage: Could not connect",
        ),
    ],
)
def test_storage_that_cannot_be_used_is_bad_input_not_a_traceback(options, message, capsys):
    """A misspelt option (``endpoint``) or an S3 endpoint that refuses: botocore's errors
    are not OSErrors, and they used to end in a traceback with exit status 1."""
    argv = ["releases", "--lake", "s3://bucket/lake", "--storage-options", json.dumps(options)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("abo-lake releases: error: ")
    assert message in err
    assert "Traceback" not in err


def test_a_lake_url_with_nothing_there_is_an_error(tmp_path, s3_options, capsys):
    """A misspelt bucket or folder used to look like an empty lake ('no releases', exit 0)."""
    assert main(["releases", "--lake", str(tmp_path / "typo")]) == 2
    assert "no lake at" in capsys.readouterr().err
    options = ["--storage-options", json.dumps(s3_options)]
    assert main(["stats", "--lake", "s3://no-such-bucket-here/abo", *options]) == 2
    err = capsys.readouterr().err
    assert "no lake at s3://no-such-bucket-here/abo" in err
    (tmp_path / "empty").mkdir()  # a lake with nothing published yet is fine
    assert main(["releases", "--lake", str(tmp_path / "empty")]) == 0
    assert "no releases" in capsys.readouterr().out


def test_our_own_type_errors_are_not_called_storage_options():
    """Only a TypeError raised inside fsspec/s3fs/botocore is a bad storage option; one of
    our own (a programming error) keeps its traceback."""
    from abo_lake.storage import describe_storage_error

    def ours() -> None:
        pass

    with pytest.raises(TypeError, match="unexpected keyword argument") as info:
        ours(endpoint="x")  # type: ignore[call-arg]
    assert describe_storage_error(info.value) is None
