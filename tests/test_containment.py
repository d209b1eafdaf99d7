"""Inputs stay inside their file and secrets stay out of the lake (issue 17, items 5-8).

Each test is an attack or a fault on a real file, a real lake (local and moto S3) or the
real CLI; none of them passes without the check it names.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import abo_lake
from abo_lake import catalog, jobs
from abo_lake.errors import ManifestError, ReleaseNotFoundError, SourceFileError
from abo_lake.sources import ccf as reader
from abo_lake.sources._nrrd import open_volume

SHAPE_100 = (132, 80, 114)  # a 100 µm CCF volume


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, SHAPE_100, dtype=np.uint32)


def _header(encoding: str, *extra: str) -> bytes:
    lines = [
        "NRRD0004",
        "type: uint32",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: {} {} {}".format(*SHAPE_100),
        "space directions: (100,0,0) (0,100,0) (0,0,100)",
        "kinds: domain domain domain",
        "endian: little",
        f"encoding: {encoding}",
        "space origin: (0,0,0)",
        *extra,
    ]
    return ("\n".join(lines) + "\n\n").encode()


def _detached(folder, data_name: str, data: np.ndarray, *, encoding: str = "raw"):
    """``annotation_100.nrrd`` in ``folder`` whose header names ``data_name`` as data file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "annotation_100.nrrd"
    path.write_bytes(_header(encoding, f"data file: {data_name}"))
    return path


# -- 5. detached NRRD data ------------------------------------------------------------------
class TestDetachedNrrdData:
    @pytest.mark.parametrize(
        "spelling",
        ["absolute", "../outside/lib.bin", "sub/../../outside/lib.bin", "sub/lib.bin", ".."],
    )
    def test_a_data_file_outside_the_folder_is_refused(self, tmp_path, spelling):
        outside = tmp_path / "outside" / "lib.bin"  # e.g. a shared library of the right size
        outside.parent.mkdir()
        outside.write_bytes(_volume().tobytes(order="F"))
        (tmp_path / "src" / "sub").mkdir(parents=True)
        (tmp_path / "src" / "sub" / "lib.bin").write_bytes(outside.read_bytes())
        name = str(outside) if spelling == "absolute" else spelling
        path = _detached(tmp_path / "src", name, _volume())
        with pytest.raises(SourceFileError, match=r"annotation_100\.nrrd.*data file.*own folder"):
            reader.read(path)
        with pytest.raises(SourceFileError, match="own folder"):
            open_volume(path)
        with pytest.raises(SourceFileError, match="own folder"):
            reader.inputs(path)  # refused before any resume key is computed

    def test_a_missing_data_file_is_named(self, tmp_path):
        path = _detached(tmp_path, "annotation_100.raw", _volume())
        with pytest.raises(SourceFileError, match=r"'annotation_100\.raw' is not a file in"):
            open_volume(path)

    @pytest.mark.parametrize("encoding", ["raw", "gzip"])
    def test_a_data_file_beside_the_header_is_read(self, tmp_path, encoding):
        data = _volume()
        raw = data.tobytes(order="F")
        path = _detached(tmp_path, "annotation_100.dat", data, encoding=encoding)
        (tmp_path / "annotation_100.dat").write_bytes(
            raw if encoding == "raw" else gzip.compress(raw, 1)
        )
        got, _ = open_volume(path)
        np.testing.assert_array_equal(got, data)
        assert reader.inputs(path) == [path, tmp_path / "annotation_100.dat"]

    def test_the_detached_data_file_is_part_of_the_resume_key(self, tmp_path):
        folder = tmp_path / "ccf"
        path = _detached(folder, "annotation_100.dat", _volume(0))
        (folder / "annotation_100.dat").write_bytes(_volume(0).tobytes(order="F"))
        lake_url = str(tmp_path / "lake")
        first = jobs.convert_file(str(path), lake_url)
        assert not first.error, first.error
        (folder / "annotation_100.dat").write_bytes(_volume(1).tobytes(order="F"))
        second = jobs.convert_file(str(path), lake_url)  # same header, other data
        assert not second.error, second.error
        assert not second.resumed
        assert second.source_sha256 != first.source_sha256
        assert second.datasets != first.datasets
        assert second.bytes_in == path.stat().st_size + SHAPE_100[0] * 80 * 114 * 4

    def test_a_job_fails_a_header_pointing_outside_by_name(self, tmp_path):
        (tmp_path / "secret.bin").write_bytes(_volume().tobytes(order="F"))
        path = _detached(tmp_path / "ccf", str(tmp_path / "secret.bin"), _volume())
        result = jobs.convert_file(str(path), str(tmp_path / "lake"))
        assert "annotation_100.nrrd" in result.error
        assert "own folder" in result.error
        assert not result.datasets


class TestGzipBomb:
    def _bomb(self, tmp_path, *extra: str):
        path = tmp_path / "annotation_100.nrrd"  # declares 4.8 MB, inflates to 256 MiB
        path.write_bytes(_header("gzip", *extra) + gzip.compress(bytes(256 << 20), 1))
        return path

    @pytest.mark.parametrize("extra", [(), ("byte skip: 0",), ("line skip: 0",)])
    def test_inflating_stops_at_the_declared_size(self, tmp_path, extra):
        path = self._bomb(tmp_path, *extra)
        with pytest.raises(
            SourceFileError, match=r"annotation_100\.nrrd.*more than the 4815360 bytes"
        ):
            open_volume(path)
        with pytest.raises(SourceFileError, match="decompression bomb"):
            reader.read(path)

    def test_nothing_beyond_the_declared_size_is_written(self, tmp_path):
        """With files limited to 8 MiB (the declared 4.8 MB fits), the bomb is refused by
        name; inflating it first would fail writing the temporary file (EFBIG)."""
        path = self._bomb(tmp_path)
        script = textwrap.dedent(
            f"""
            import resource
            from abo_lake.errors import SourceFileError
            from abo_lake.sources._nrrd import open_volume
            resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))
            try:
                open_volume({str(path)!r})
            except SourceFileError as err:
                print("refused:", err)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
        )
        assert out.stdout.startswith("refused:"), out.stderr[-2000:]
        assert "annotation_100.nrrd" in out.stdout

    def test_a_compressed_byte_skip_of_minus_one_is_refused(self, tmp_path):
        path = self._bomb(tmp_path, "byte skip: -1")
        with pytest.raises(SourceFileError, match="byte skip -1"):
            open_volume(path)


# -- 5. release names on the read side ------------------------------------------------------
BAD_NAMES = ["../../x", "../x", "r1/../../x", "/etc", "x/y", ".", "..", "a b", "latest"]


def _publish_tiny(lake, name: str) -> None:
    import xarray as xr

    with lake.stage(name) as stage:
        stage.write("a/1", xr.Dataset({"v": ("time", np.arange(10.0))}))


class TestReleaseNames:
    @pytest.mark.parametrize("name", BAD_NAMES)
    def test_every_read_path_refuses_a_bad_name(self, lake, name):
        _publish_tiny(lake, "r1")
        for spec in (name, f"{name}@abc"):
            if name == "latest":
                continue
            with pytest.raises(ReleaseNotFoundError, match="not a release name"):
                lake.release(spec)
        if name != "latest":
            with pytest.raises(ReleaseNotFoundError, match="not a release name"):
                lake.diff("r1", name)
            with pytest.raises(ReleaseNotFoundError, match="not a release name"):
                lake.verify(name)
            with pytest.raises(ReleaseNotFoundError, match="not a release name"):
                catalog.open_catalog(lake.url, release=name, **lake.storage.storage_options)

    def test_a_record_outside_the_lake_is_not_loaded(self, tmp_path, capsys):
        other = abo_lake.open_lake(str(tmp_path / "other"))
        _publish_tiny(other, "x")
        planted = tmp_path / "x" / "release.json"  # <lake>/releases/../../x/release.json
        planted.parent.mkdir()
        planted.write_bytes(other.storage.read("releases/x/release.json"))
        lake = abo_lake.open_lake(str(tmp_path / "lake"))
        _publish_tiny(lake, "r1")
        with pytest.raises(ReleaseNotFoundError, match="not a release name"):
            lake.release("../../x")
        from abo_lake.cli import main

        assert main(["verify", "../../x", "--lake", lake.url]) != 0
        assert "not a release name" in capsys.readouterr().err

    def test_a_record_moved_under_another_name_is_refused(self, local_lake):
        _publish_tiny(local_lake, "r1")
        record = local_lake.storage.read("releases/r1/release.json")
        local_lake.storage.write("releases/r2/release.json", record)
        with pytest.raises(ManifestError, match="names release 'r1', not 'r2'"):
            abo_lake.open_lake(local_lake.url).release("r2")


# -- 6. secrets ---------------------------------------------------------------------------
SECRET = "hunter2-c3VwZXI"


class TestSecretsStayOut:
    @pytest.mark.parametrize(
        ("options", "kept"),
        [
            ({"config_kwargs": {"proxies": {"https": f"http://u:{SECRET}@proxy:3128"}}}, {}),
            ({"config_kwargs": {"proxies_config": {"proxy_ca_bundle": SECRET}}}, {}),
            ({"s3_additional_kwargs": {"SSECustomerKey": SECRET}}, {}),
            ({"client_kwargs": {"aws_session_token": SECRET}}, {}),
            ({"profile": SECRET, "session_name": SECRET, "api": SECRET}, {}),
            ({"endpoint_url": f"http://u:{SECRET}@host:9000"}, {}),
            ({"headers": {"Authorization": SECRET}}, {}),
            (
                {"config_kwargs": {"read_timeout": 30, "retries": {"max_attempts": 5}}},
                {"config_kwargs": {"read_timeout": 30, "retries": {"max_attempts": 5}}},
            ),
            ({"anon": True, "requester_pays": True}, {"anon": True, "requester_pays": True}),
        ],
    )
    def test_only_allowed_options_are_written(self, options, kept):
        got = catalog._public(options)
        assert SECRET not in json.dumps(got)
        assert {k: v for k, v in got.items() if v != {}} == kept

    def test_proxy_credentials_reach_no_stored_object(self, s3_bucket, s3_options):
        options = {
            **s3_options,
            # https only: the moto endpoint is plain http, so the proxy is never dialled
            "config_kwargs": {"proxies": {"https": f"http://user:{SECRET}@127.0.0.1:9"}},
        }
        lake = abo_lake.open_lake(f"s3://{s3_bucket}/lake", **options)
        _publish_tiny(lake, "r1")
        _publish_tiny(lake, "r2")
        keys = list(lake.storage.find(""))
        assert "releases/r1/catalog.yaml" in keys
        assert "catalog.yaml" in keys
        for key in keys:
            data = lake.storage.read(key)
            assert SECRET.encode() not in data, key
            assert b"testing" not in data or not key.endswith(".yaml"), key
        doc = yaml.safe_load(lake.storage.read("releases/r2/catalog.yaml"))
        assert s3_options["endpoint_url"] in json.dumps(doc)  # what readers need stays
        # and the credentials given at open time still open it
        cat = catalog.open_catalog(lake.url, release="r2", **options)
        assert "abo_lake_release" in cat.metadata


# -- 7. file names of any bytes -------------------------------------------------------------
BAD_NAME = os.fsdecode(b"structures_\xff\xfe.json")  # not UTF-8: surrogates in a str


@pytest.fixture(scope="module")
def structures_json(tiny_sources):
    return tiny_sources["ccf"] / "structures.json"  # the session's tiny CCF (read, not changed)


def _ledger(lake_url: str) -> list[Path]:
    return sorted((Path(lake_url) / "ledger").glob("*.json"))


class TestFileNamesOfAnyBytes:
    def test_convert_file_refuses_by_name_and_records_nothing(self, tmp_path, structures_json):
        bad = tmp_path / "src" / BAD_NAME
        bad.parent.mkdir()
        shutil.copy(structures_json, bad)
        lake_url = str(tmp_path / "lake")
        result = jobs.convert_file(str(bad), lake_url)
        assert r"structures_\xff\xfe.json" in result.error
        assert "not UTF-8" in result.error
        result.source.encode("utf-8")  # printable, storable
        assert not _ledger(lake_url)

    def test_a_legacy_record_of_such_a_name_is_converted_again(self, tmp_path, structures_json):
        lake_url = str(tmp_path / "lake")
        good = tmp_path / "structures.json"
        shutil.copy(structures_json, good)
        first = jobs.convert_file(str(good), lake_url)
        assert not first.error, first.error
        (key,) = _ledger(lake_url)
        record = json.loads(key.read_bytes())  # as an older version wrote it
        record["source"] = BAD_NAME
        for attrs in record["attrs"].values():
            attrs["source_file"] = BAD_NAME
        key.write_text(json.dumps(record))
        again = jobs.convert_file(str(good), lake_url)
        assert not again.error, again.error
        assert not again.resumed
        json.dumps(again.attrs, ensure_ascii=False).encode("utf-8")
        assert json.loads(key.read_bytes())["source"] == "structures.json"  # replaced
        assert jobs.convert_file(str(good), lake_url).resumed

    def test_a_job_fails_the_file_by_name_instead_of_hanging(self, tmp_path, structures_json):
        src = tmp_path / "src"
        src.mkdir()
        shutil.copy(structures_json, src / BAD_NAME)
        script = textwrap.dedent(
            f"""
            import abo_lake
            from abo_lake import jobs
            if __name__ == "__main__":
                lake = abo_lake.open_lake({str(tmp_path / "lake")!r})
                report = jobs.run([{str(src)!r}], lake, "r1", workers=1, progress=False)
                print(report.summary())
            """
        )
        (tmp_path / "job.py").write_text(script)
        try:
            out = subprocess.run(
                [sys.executable, str(tmp_path / "job.py")],
                capture_output=True,
                text=True,
                timeout=180,
                cwd=tmp_path,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the job hung on a file name that is not UTF-8")
        assert out.returncode == 0, out.stderr[-3000:]
        assert "NOT published" in out.stdout
        assert r"FAILED " in out.stdout
        assert r"structures_\xff\xfe.json" in out.stdout


# -- 8. corrupt NWB files, gc grace -----------------------------------------------------------
@pytest.fixture(scope="module")
def vbo_nwb(tiny_sources):
    """The session's tiny VBO file (tests read it and change copies only)."""
    return sorted(tiny_sources["vbo-ophys"].rglob("*.nwb"))[0]


def _zeroed(src: Path, out: Path, lo: float, hi: float) -> Path:
    data = bytearray(src.read_bytes())
    a, b = int(len(data) * lo), int(len(data) * hi)
    data[a:b] = bytes(b - a)
    out.write_bytes(data)
    return out


class TestCorruptNwb:
    @pytest.mark.parametrize(
        "window", [(0.5, 1.0), (0.1, 1.0), (0.9, 1.0), (0.98, 1.0), (0.95, 0.97), (0.0, 0.5)]
    )
    def test_a_zeroed_file_fails_by_name(self, tmp_path, vbo_nwb, window):
        bad = _zeroed(vbo_nwb, tmp_path / "half_zeroed.nwb", *window)
        result = jobs.convert_file(str(bad), str(tmp_path / "lake"))
        assert result.error.startswith("SourceFileError: "), result.error
        assert "half_zeroed.nwb" in result.error.splitlines()[0]
        assert "Traceback" not in result.error

    def test_read_names_the_file_whatever_the_reader_trips_over(self, tmp_path, vbo_nwb):
        from abo_lake import sources

        bad = _zeroed(vbo_nwb, tmp_path / "half_zeroed.nwb", 0.5, 1.0)
        with pytest.raises(SourceFileError, match=r"half_zeroed\.nwb: cannot read it as vbo-ophys"):
            sources.read(bad, "vbo-ophys")  # format known (from its name, say): no sniffing
        with pytest.raises(SourceFileError, match=r"half_zeroed\.nwb.*root group"):
            sources.read(bad)


class TestGcGrace:
    @pytest.mark.parametrize("grace", ["0s", "0", "30s", "90s", "119s"])
    def test_a_short_grace_is_refused_beside_an_open_stage(self, lake, grace):
        _publish_tiny(lake, "r1")
        with lake.stage("r2") as stage:  # a running job
            stage.write("a/2", __import__("xarray").Dataset({"v": ("t", np.arange(5.0))}))
            with pytest.raises(ValueError, match="a job may be running"):
                lake.gc(grace=grace, dry_run=False)
            assert lake.gc(grace="2m", dry_run=False).live_stages  # the safe minimum runs
        assert lake.release("r2").open("a/2")["v"].values.tolist() == [0.0, 1, 2, 3, 4]

    def test_the_cli_refuses_it_with_exit_2(self, lake, capsys):
        from abo_lake.cli import main

        with lake.stage("r1"):
            opts = json.dumps(lake.storage.storage_options)
            code = main(["gc", "--lake", lake.url, "--storage-options", opts, "--grace", "0s"])
        assert code == 2
        err = capsys.readouterr().err
        assert "'0s'" in err
        assert "120 s" in err
        assert "'r1'" in err

    def test_a_quiet_lake_accepts_any_grace(self, lake):
        _publish_tiny(lake, "r1")
        assert not lake.gc(grace="0s", dry_run=False).live_stages


class TestNrrdSkips:
    @pytest.mark.parametrize("skip", ["byte skip: -1", "byte skip: 16", "line skip: 1"])
    def test_raw_skips_read_what_pynrrd_reads(self, tmp_path, skip):
        import nrrd

        data = _volume(2)
        pad = b"0123456789abcde\n" if skip != "byte skip: -1" else b"junk before data"
        path = tmp_path / "annotation_100.nrrd"
        path.write_bytes(_header("raw", skip) + pad + data.tobytes(order="F"))
        got, _ = open_volume(path)
        np.testing.assert_array_equal(got, nrrd.read(str(path), index_order="F")[0])
        np.testing.assert_array_equal(got, data)

    def test_raw_data_shorter_than_declared_with_byte_skip_minus_one(self, tmp_path):
        path = tmp_path / "annotation_100.nrrd"
        path.write_bytes(_header("raw", "byte skip: -1") + _volume().tobytes(order="F")[:1000])
        with pytest.raises(SourceFileError, match=r"annotation_100\.nrrd: 1000 bytes of raw"):
            open_volume(path)

    def test_gzip_byte_skip_drops_leading_bytes(self, tmp_path):
        data = _volume(3)
        path = tmp_path / "annotation_100.nrrd"
        payload = gzip.compress(b"x" * 100 + data.tobytes(order="F"), 1)
        path.write_bytes(_header("gzip", "byte skip: 100") + payload)
        got, _ = open_volume(path)
        np.testing.assert_array_equal(got, data)
