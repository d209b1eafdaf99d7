"""Conversion jobs on a real dask.distributed LocalCluster: publish, dedup, resume, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

import abo_lake
from abo_lake import cas, cli, jobs, release_tables, sources
from abo_lake.errors import ReleaseExistsError
from abo_lake.synthetic import synthesize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vbo_sources(tmp_path_factory):
    """Two tiny VBO experiments, and the same files with only event detection changed."""
    root = tmp_path_factory.mktemp("vbo")
    v1 = synthesize("vbo-ophys", root / "v1", seed=3, n_experiments=2)
    v2 = synthesize("vbo-ophys", root / "v2", seed=3, n_experiments=2, event_detection_version=2)
    return root / "v1", root / "v2", v1, v2


@pytest.fixture
def scheduler(dask_cluster):
    """The session cluster's address. Jobs share it instead of each starting a LocalCluster
    of its own (seconds of a test's time each): a job sends its progress on a topic of its
    own and submits its conversions with ``pure=False``, so nothing of one job reaches the
    next. Tests about a job's own cluster (a kill, SIGTERM, one CLI convert) start one."""
    return dask_cluster.scheduler_address


@pytest.fixture(scope="module")
def mixed_sources(tiny_sources):
    """One source of several kinds (the session's tiny sources)."""
    return [tiny_sources[k] for k in ("vc2p-ophys", "celltypes", "connectivity")]


def test_plan_groups_sources_and_skips_auxiliary_json(mixed_sources):
    files = jobs.plan(mixed_sources)
    names = sorted(f.rsplit("/", 1)[1] for f in files)
    # one entry per connectivity experiment (4 volumes + metadata.json; 2 experiments),
    # no ephys_sweeps.json
    assert len(names) == 5
    assert names.count("projection_density_100.nrrd") == 2
    assert {"ephys.nwb", "reconstruction.swc", "projection_density_100.nrrd"} < set(names)
    assert not any(f.endswith(".json") for f in files)


def test_plan_follows_symlinked_folders(mixed_sources, tmp_path):
    """A folder of links to other folders (say, into a download cache) is planned like the
    folders themselves (they were skipped silently); a link loop ends."""
    linked = tmp_path / "linked"
    linked.mkdir()
    for i, folder in enumerate(mixed_sources):
        (linked / f"part{i}").symlink_to(Path(folder).resolve(), target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)
    names = sorted(Path(f).name for f in jobs.plan([linked]))
    assert names == sorted(Path(f).name for f in jobs.plan(mixed_sources))
    assert names


def test_plan_keeps_ontology_and_broken_json_in_folders(tiny_sources, tmp_path, scheduler):
    folder = tmp_path / "ccf"
    shutil.copytree(tiny_sources["ccf"], folder)
    (folder / "notes.json").write_text('{"about": "not a source"}')
    assert {Path(f).name for f in jobs.plan([folder])} == {
        "annotation_100.nrrd",
        "average_template_100.nrrd",
        "structures.json",
    }
    # a file named twice (in its folder and on its own) is one task
    assert jobs.plan([folder, folder / "structures.json", f"{folder}/./structures.json"]) == (
        jobs.plan([folder])
    )
    # a truncated ontology stays in the job, to fail it by name instead of vanishing
    text = (folder / "structures.json").read_text()
    (folder / "structures.json").write_text(text[: len(text) // 2])
    assert "structures.json" in {Path(f).name for f in jobs.plan([folder])}
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run([folder], lake, "r1", scheduler=scheduler, progress=False)
    assert not report.published
    assert lake.releases() == []
    (failure,) = report.failures
    assert failure.source == str(folder / "structures.json")
    assert "structures.json" in failure.error


def test_bad_files_fail_with_what_is_wrong(vbo_sources, tmp_path, shared_data, scheduler):
    _, _, files, _ = vbo_sources
    src = tmp_path / "src"
    src.mkdir()
    data = files[0].read_bytes()
    (src / "behavior_ophys_experiment_1.nwb").write_bytes(data[: len(data) // 2])
    (src / "behavior_ophys_experiment_2.nwb").write_text("<html>Access denied</html>")
    shutil.copy(shared_data / "nwb" / "dandi_sub_anm00239123_ecephys_and_ogen.nwb", src)
    # a download corrupted inside one compressed chunk of the events
    corrupt = src / "behavior_ophys_experiment_3.nwb"
    shutil.copy(files[0], corrupt)
    with h5py.File(corrupt, "r") as f:
        info = f["processing/ophys/event_detection/data"].id.get_chunk_info(0)
    with corrupt.open("r+b") as fh:
        fh.seek(info.byte_offset + 16)
        fh.write(b"\xff" * 64)
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run([src], lake, "r1", scheduler=scheduler, progress=False)
    assert not report.published
    assert lake.releases() == []
    errors = {Path(f.source).name: f.error for f in report.failures}
    assert len(errors) == 4
    assert "truncated" in errors["behavior_ophys_experiment_1.nwb"]
    assert "not an HDF5 file (starts with b'<html>Ac'" in errors["behavior_ophys_experiment_2.nwb"]
    dandi = errors["dandi_sub_anm00239123_ecephys_and_ogen.nwb"]
    assert "of no kind abo_lake reads" in dandi
    assert "intervals/*_presentations" in dandi
    assert "SourceFileError" in errors["behavior_ophys_experiment_3.nwb"]
    assert "cannot read /processing/ophys/event_detection/data[" in errors[corrupt.name]
    # unreadable files still count in the bytes a job took in
    assert all(f.bytes_in == Path(f.source).stat().st_size for f in report.failures)
    assert "files      4: 0 converted, 0 already converted before, 4 failed" in report.summary()


def test_job_publishes_every_kind_and_rerun_converts_nothing(mixed_sources, tmp_path, scheduler):
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run(mixed_sources, lake, "r1", scheduler=scheduler, progress=False)
    assert report.published, report.summary()
    rel = lake.release("r1")
    kinds = {rel.kind(p) for p in rel.datasets()}
    assert kinds == {
        "ophys_experiment",
        "celltypes_ephys",
        "celltypes_morphology",
        "connectivity_experiment",
    }
    assert set(rel.tables()) == {
        "ophys_experiments",
        "celltypes_specimens",
        "morphometry",
        "ephys_features",
        "connectivity_experiments",
        "cells",
    }
    table = rel.table("ophys_experiments")
    assert table["dataset_path"].tolist() == rel.datasets("ophys/")
    # the lossless raw group is in the same dataset and was checked against the source
    ophys = rel.datasets("ophys/")[0]
    raw = rel.open(ophys, group="raw/general")
    assert raw.sizes or raw.data_vars or raw.attrs
    objects = set(lake.storage.find("cas"))
    again = jobs.run(mixed_sources, lake, "r2", scheduler=scheduler, progress=False)
    assert again.published
    assert all(f.resumed for f in again.files)
    assert set(lake.storage.find("cas")) - objects == set()
    assert lake.release("r2").record.datasets == rel.record.datasets
    # the summary's bytes: the same stored bytes (from the ledger), none of them new
    stored = sum(rel.manifest(p).nbytes for p in rel.datasets())
    assert sum(f.bytes_stored for f in again.files) == stored > 0
    assert sum(f.new_bytes for f in again.files) == 0
    assert "dedup      100% of the stored bytes" in again.summary()


def test_event_detection_fix_stores_only_new_event_chunks(vbo_sources, tmp_path, scheduler):
    v1, v2, _, _ = vbo_sources
    lake = abo_lake.open_lake(tmp_path / "lake")
    assert jobs.run([v1], lake, "2026.1", scheduler=scheduler, progress=False).published
    before = set(lake.storage.find("cas"))
    second = jobs.run([v2], lake, "2026.2", scheduler=scheduler, progress=False)
    assert second.published
    new = set(lake.storage.find("cas")) - before
    diff = lake.diff("2026.1", "2026.2")
    changed_arrays = {a.array for d in diff.datasets for a in d.arrays}
    # only the events and their per-cell parameters (and the raw copies of nothing else)
    assert changed_arrays <= {"events", "event_lambda", "event_noise_std"}, changed_arrays
    assert "events" in changed_arrays
    rel1, rel2 = lake.release("2026.1"), lake.release("2026.2")
    referenced = {h for p in rel2.datasets() for h in rel2.manifest(p).chunks.values()}
    old = {h for p in rel1.datasets() for h in rel1.manifest(p).chunks.values()}
    # the objects (packs of ~4 MB, or whole chunks) that hold a changed or added chunk
    changed_objects = {
        rel2.manifest(d.path).chunks[k]
        for d in diff.datasets
        if d.status == "changed"
        for k in rel2.manifest(d.path).chunks
        if rel2.manifest(d.path).chunks[k] not in old
    }
    assert changed_objects
    n_changed = len(changed_objects)
    new_hashes = {k.rsplit("/", 1)[1] for k in new}
    assert new_hashes & referenced == changed_objects  # chunk objects: only the changed ones
    # the job's summary counts exactly those objects and their bytes as new
    new_size = sum(len(lake.storage.read(cas.key_of(h))) for h in new_hashes & referenced)
    assert sum(f.new_objects for f in second.files) == n_changed
    assert sum(f.new_bytes for f in second.files) == new_size
    stored = sum(f.bytes_stored for f in second.files)
    assert stored == sum(rel2.manifest(p).nbytes for p in rel2.datasets())
    assert f"dedup      {1 - new_size / stored:.0%}" in second.summary()
    # the rest are Parquet tables: experiments (source_sha256 changed), cells (event_lambda
    # changed) and the per-file cells parts they are built from
    changed_tables = {
        name
        for name, t in rel2.record.tables.items()
        if t["object"] != rel1.record.tables[name]["object"]
    }
    assert changed_tables == {"ophys_experiments", "cells"}
    parts = {
        h
        for key in lake.storage.glob("ledger/*.json")
        for hashes in json.loads(lake.storage.read(key)).get("tables", {}).values()
        for h in hashes
    }
    tables = {t["object"] for t in rel2.record.tables.values()}
    assert new_hashes - referenced <= tables | parts
    path = rel1.datasets("ophys/")[0]
    np.testing.assert_array_equal(rel1.open(path)["dff"].values, rel2.open(path)["dff"].values)
    assert not np.array_equal(rel1.open(path)["events"].values, rel2.open(path)["events"].values)


def test_a_bad_file_fails_alone_and_blocks_the_release(vbo_sources, tmp_path, scheduler):
    v1, _, files, _ = vbo_sources
    src = tmp_path / "src"
    shutil.copytree(v1, src)
    broken = src / "behavior_ophys_experiment_1.nwb"
    broken.write_bytes(files[0].read_bytes()[:50_000])  # a truncated download
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run([src], lake, "r1", scheduler=scheduler, progress=False)
    assert not report.published
    assert lake.releases() == []
    (failure,) = report.failures
    assert failure.source == str(broken)
    assert "behavior_ophys_experiment_1.nwb" in failure.error
    assert "FAILED" in report.summary()
    # the good files were converted and are remembered: a fixed rerun converts only the bad one
    broken.unlink()
    again = jobs.run([src], lake, "r1", scheduler=scheduler, progress=False)
    assert again.published
    assert all(f.resumed for f in again.files)


def test_killed_job_resumes_to_the_identical_release(vbo_sources, tmp_path, scheduler):
    v1, *_ = vbo_sources
    lake_url = str(tmp_path / "lake")
    # the killed job starts its own cluster: killing its process group kills its workers
    # mid-file (a shared cluster's workers would finish its tasks after the kill)
    script = textwrap.dedent(
        f"""
        import abo_lake
        from abo_lake import jobs
        jobs.run([{str(v1)!r}], abo_lake.open_lake({lake_url!r}), "r1", workers=1,
                 progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 120
    lake = abo_lake.open_lake(lake_url)
    while time.time() < deadline and not lake.storage.glob("ledger/*.json"):
        time.sleep(0.2)
    import os
    import signal

    os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers, mid-run
    proc.wait()
    assert lake.releases() == []
    done = len(lake.storage.glob("ledger/*.json"))
    assert done >= 1
    report = jobs.run([v1], lake, "r1", scheduler=scheduler, progress=False)
    assert report.published
    assert sum(f.resumed for f in report.files) >= done
    clean = abo_lake.open_lake(tmp_path / "clean")
    assert jobs.run([v1], clean, "r1", scheduler=scheduler, progress=False).published
    resumed, fresh = lake.release("r1"), clean.release("r1")
    assert resumed.datasets() == fresh.datasets()
    for path in fresh.datasets():  # identical content, chunk for chunk (lake URLs differ)
        assert resumed.manifest(path).chunks == fresh.manifest(path).chunks
        assert resumed.manifest(path).metadata == fresh.manifest(path).metadata


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``abo-lake ARGV`` in this process (a new interpreter costs seconds to import the
    stack): its exit code, stdout and stderr."""
    capsys.readouterr()  # drop what came before
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_convert_and_lake_commands(vbo_sources, tmp_path, scheduler, capsys):
    v1, v2, *_ = vbo_sources
    lake = str(tmp_path / "lake")
    shared = ["--scheduler", scheduler]  # all but the first convert: the session's cluster
    command = [sys.executable, "-m", "abo_lake.cli", "convert", str(v1), "--lake", lake]
    out = subprocess.run(  # the installed command in a process of its own, own LocalCluster
        [*command, "--release", "a", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["published"] is True
    # the other commands in-process: the same main() the installed command runs
    code, _, err = _cli(["convert", str(v2), "--lake", lake, "--release", "b", *shared], capsys)
    assert code == 0, err
    code, out, err = _cli(["releases", "--lake", lake, "--json"], capsys)
    assert code == 0, err
    releases = json.loads(out)
    assert [r["name"] for r in releases] == ["a", "b"]
    # the same job again (a retry after a crash just after publishing) succeeds, changing
    # nothing; the same name for other sources is refused, naming what differs
    code, out, err = _cli(["convert", str(v1), "--lake", lake, "--release", "a", *shared], capsys)
    assert code == 0, err
    assert "release a: already published with this content" in out
    code, _, err = _cli(["convert", str(v2), "--lake", lake, "--release", "a", *shared], capsys)
    assert code == 2
    assert "already exists" in err
    assert "ophys/experiment/" in err
    assert "ophys_experiments" in err
    code, out, err = _cli(["releases", "--lake", lake, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out) == releases
    code, diff, err = _cli(["diff", "a", "b", "--lake", lake], capsys)
    assert code == 0, err
    assert "events" in diff
    assert "changed" in diff
    code, out, err = _cli(["stats", "--lake", lake, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["dedup_ratio"] > 1.5
    assert _cli(["verify", "b", "--lake", lake], capsys)[0] == 0
    # corrupt one chunk: verify exits non-zero and names it
    obj = next(p for p in (tmp_path / "lake" / "cas").rglob("*") if p.is_file())
    data = bytearray(obj.read_bytes())
    data[0] ^= 0xFF
    obj.write_bytes(bytes(data))
    bad_code, bad_out, _ = _cli(["verify", "a", "--lake", lake], capsys)
    bad_b_code, bad_b_out, _ = _cli(["verify", "b", "--lake", lake], capsys)
    assert 1 in (bad_code, bad_b_code)
    assert "corrupt" in bad_out + bad_b_out
    code, _, err = _cli(["diff", "a", "zz", "--lake", lake], capsys)
    assert code == 2
    assert "available: a, b" in err


def test_tables_join_project_metadata_and_collect_units(
    vbo_sources, tmp_path, shared_data, scheduler
):
    v1, *_ = vbo_sources
    src = tmp_path / "src"
    shutil.copytree(v1, src / "vbo")
    synthesize("vcn-ecephys", src / "vcn", seed=2)
    csv = shared_data / "vbo_metadata" / "ophys_experiment_table.csv"
    session_csv = shared_data / "vbo_metadata" / "ophys_session_table.csv"
    # Neuropixels project CSVs as AllenSDK's cache names them: ``id`` in units.csv and
    # channels.csv, ``ecephys_unit_id`` in the analysis metrics
    (session_path,) = (src / "vcn").rglob("session_*.nwb")
    vcn = next(iter(sources.read(session_path).values()))
    unit_ids, channel_ids = vcn["unit_id"].values, vcn["channel_id"].values
    meta = tmp_path / "meta"
    meta.mkdir()
    pd.DataFrame({"id": unit_ids, "csv_score": np.arange(len(unit_ids)) + 0.5}).to_csv(
        meta / "units.csv", index=False
    )
    pd.DataFrame({"ecephys_unit_id": unit_ids[:3], "g_osi_dg": [0.1, 0.2, 0.3]}).to_csv(
        meta / "brain_observatory_unit_analysis_metrics.csv", index=False
    )
    pd.DataFrame({"id": channel_ids, "ecephys_structure_id": 385}).to_csv(
        meta / "channels.csv", index=False
    )
    pd.DataFrame({"donor_id": [1, 2], "age": [3, 4]}).to_csv(meta / "donors.csv", index=False)
    csvs = [csv, session_csv, *sorted(meta.glob("*.csv"))]
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run([src], lake, "r1", metadata=csvs, scheduler=scheduler, progress=False)
    assert report.published, report.summary()
    notes = dict(zip(csvs, report.notes, strict=True))  # one line per CSV, in order
    assert notes[meta / "donors.csv"] == (
        f"metadata CSV {meta / 'donors.csv'} matched no table: no id column of the converted "
        f"data ({', '.join(sorted(release_tables.id_names()))}) with unique values of the "
        "table's type"
    )
    assert "donors.csv matched no table" in report.summary()
    n = len(unit_ids)
    assert notes[meta / "units.csv"].endswith(f"joined units by id ({n} of {n} rows matched)")
    metrics = meta / "brain_observatory_unit_analysis_metrics.csv"
    assert notes[metrics].endswith("joined units by ecephys_unit_id (3 of 3 rows matched)")
    # the Visual Behavior release table: thousands of rows, only the converted ones match
    assert (
        "joined ophys_experiments by ophys_experiment_id (2 of 1941 rows matched)" in (notes[csv])
    )
    rel = lake.release("r1")
    units = rel.table("units")
    assert units.loc[unit_ids, "csv_score"].tolist() == (np.arange(len(unit_ids)) + 0.5).tolist()
    assert units.loc[unit_ids[:3], "g_osi_dg"].tolist() == [0.1, 0.2, 0.3]
    assert units.loc[unit_ids[3:], "g_osi_dg"].isna().all()
    assert (rel.table("channels").loc[channel_ids, "ecephys_structure_id"] == 385).all()
    experiments = rel.table("ophys_experiments")
    real = pd.read_csv(csv).set_index("ophys_experiment_id")
    # file_path is only in the project CSV: the join brought it in, for the right rows
    assert experiments["file_path"].tolist() == real.loc[experiments.index, "file_path"].tolist()
    assert len(experiments) == 2
    session_id = rel.table("ecephys_sessions").index[0]
    units = rel.table("units")
    session = rel.open(f"ecephys/session/{session_id}")
    assert sorted(units.index) == sorted(session["unit_id"].values.tolist())
    assert (units["ecephys_session_id"] == session_id).all()
    assert set(units["ecephys_structure_acronym"]) == set(
        session["ecephys_structure_acronym"].values.tolist()
    )
    assert len(rel.table("channels")) == session.sizes["channel_id"]
    cells = rel.table("cells")
    assert set(cells["ophys_experiment_id"]) == set(experiments.index)
    # ophys sessions: grouped from the experiments, joined with the real session table
    sessions = rel.table("ophys_sessions")
    assert sorted(sessions.index) == sorted(set(experiments["ophys_session_id"]))
    assert sessions["n_experiments"].sum() == len(experiments)
    for sid, row in sessions.iterrows():
        ids = sorted(experiments.index[experiments["ophys_session_id"] == sid])
        assert row["ophys_experiment_id"] == str(ids)
        assert row["mouse_id"] == experiments.loc[ids[0], "mouse_id"]
    real_sessions = pd.read_csv(session_csv).set_index("ophys_session_id")
    assert (
        sessions["num_depths_per_area"].tolist()
        == real_sessions.loc[sessions.index, "num_depths_per_area"].tolist()
    )


def test_ophys_experiments_are_searchable_across_projects(tmp_path):
    # as the Visual Coding reader and the Visual Behavior reader name their attrs
    vc = {"ophys_experiment_id": 1, "age_days": 90.0, "device_name": "CAM2P.2", "sex": "male"}
    vb = {"ophys_experiment_id": 2, "age_in_days": 171.0, "equipment_name": "MESO.1", "sex": "F"}
    results = [
        jobs.FileResult(
            source=f"{i}.nwb",
            kinds={f"ophys/experiment/{i}": "ophys_experiment"},
            attrs={f"ophys/experiment/{i}": {**attrs, "excitation_lambda": lam}},
        )
        for i, attrs, lam in [(1, vc, "910 nanometers"), (2, vb, 910.0)]
    ]
    table = release_tables.build_tables(results)["ophys_experiments"]
    assert table["age_in_days"].tolist() == [90.0, 171.0]
    assert table["equipment_name"].tolist() == ["CAM2P.2", "MESO.1"]
    assert table["sex"].tolist() == ["M", "F"]
    assert table["excitation_lambda"].tolist() == [910.0, 910.0]
    assert table.loc[1, "device_name"] == "CAM2P.2"  # the project's own names stay
    # a project CSV fills what a file lacks, before the projects' columns are shared
    del results[1].attrs["ophys/experiment/2"]["age_in_days"]
    csv = tmp_path / "experiments.csv"
    pd.DataFrame({"ophys_experiment_id": [2], "age_in_days": [171.0]}).to_csv(csv, index=False)
    assert release_tables.build_tables(results, [csv])["ophys_experiments"][
        "age_in_days"
    ].tolist() == [
        90.0,
        171.0,
    ]
    # text that is not a wavelength in nm is left as it is
    results[1].attrs["ophys/experiment/2"]["excitation_lambda"] = "two-photon"
    assert release_tables.build_tables(results)["ophys_experiments"][
        "excitation_lambda"
    ].tolist() == [
        "910 nanometers",
        "two-photon",
    ]


def test_csvs_key_only_their_own_table():
    units_csv = pd.DataFrame({"id": [1, 2], "ecephys_channel_id": [10, 11], "snr": [1.0, 2.0]})
    channels = pd.DataFrame(index=pd.Index([10, 11], name="channel_id"))
    units = pd.DataFrame(index=pd.Index([1, 2], name="unit_id"))
    connectivity = pd.DataFrame(index=pd.Index([1, 2], name="id"))
    # AllenSDK's units.csv keys units by 'id', not channels by its (here unique) channel ids
    assert release_tables.csv_key("units", units, "m/units.csv", units_csv) == "id"
    assert release_tables.csv_key("channels", channels, "m/units.csv", units_csv) is None
    # a bare 'id' keys only the table the file is named after
    assert (
        release_tables.csv_key("connectivity_experiments", connectivity, "m/units.csv", units_csv)
        is None
    )
    other = pd.DataFrame({"id": [1, 2], "acronym": ["VISp", "VISl"]})
    assert (
        release_tables.csv_key("connectivity_experiments", connectivity, "m/structures.csv", other)
        is None
    )
    named = "m/connectivity_experiments.csv"
    assert release_tables.csv_key("connectivity_experiments", connectivity, named, other) == "id"
    # the metrics CSVs name units by Allen's long name; non-unique ids key nothing
    metrics = pd.DataFrame({"ecephys_unit_id": [1, 2, 2]})
    assert release_tables.csv_key("units", units, "m/metrics.csv", metrics) is None
    assert (
        release_tables.csv_key("units", units, "m/metrics.csv", metrics.iloc[:2])
        == "ecephys_unit_id"
    )


def test_a_broken_metadata_csv_fails_the_job_before_converting(vbo_sources, tmp_path):
    v1, *_ = vbo_sources
    bad = tmp_path / "experiments.csv"
    bad.write_text('ophys_experiment_id,notes\n1,"an open quote\n')
    lake = abo_lake.open_lake(tmp_path / "lake")
    with pytest.raises(ValueError, match=r"experiments\.csv: not a readable metadata CSV"):
        jobs.run([v1], lake, "r1", metadata=[bad], progress=False)
    assert not (tmp_path / "lake" / "cas").exists()


def test_convert_from_a_job_specification(vbo_sources, tmp_path, scheduler, capsys):
    v1, *_ = vbo_sources
    spec = tmp_path / "spec" / "2026.1.yaml"
    spec.parent.mkdir()
    shutil.copytree(v1, tmp_path / "spec" / "data")
    spec.write_text("release: '2026.1'\nsources: [data]\nmetadata: []\n")
    lake = tmp_path / "lake"
    cli_args = ["convert", "--spec", str(spec), "--scheduler", scheduler]
    code, out, err = _cli([*cli_args, "--lake", str(lake), "--json"], capsys)
    assert code == 0, err
    assert abo_lake.open_lake(lake).releases() == ["2026.1"]
    assert len(abo_lake.open_lake(lake).release("2026.1").datasets("ophys/")) == 2
    # codec and chunk choices: stored with them, and not resumed from the default conversion
    spec.write_text(
        "release: '2026.2'\nsources: [data]\n"
        "codec: {cname: lz4, clevel: 5, shuffle: bitshuffle}\nchunk_mb: 0.25\n"
    )
    code, out, err = _cli([*cli_args, "--lake", str(lake), "--json"], capsys)
    assert code == 0, err
    assert not any(f["resumed"] for f in json.loads(out)["files"])
    rel = abo_lake.open_lake(lake).release("2026.2")
    path = rel.datasets("ophys/")[0]
    docs = {
        name: {k: json.loads(v) for k, v in r.manifest(path).metadata.items()}
        for name, r in [("default", abo_lake.open_lake(lake).release("2026.1")), ("spec", rel)]
    }
    meta = docs["spec"]["running_speed.speed/zarr.json"]
    blosc = next(c for c in meta["codecs"] if c["name"] == "blosc")["configuration"]
    assert (blosc["cname"], blosc["clevel"], blosc["shuffle"]) == ("lz4", 5, "bitshuffle")

    def chunk_bytes(doc):
        item = np.dtype(doc["data_type"]).itemsize
        return item * np.prod(doc["chunk_grid"]["configuration"]["chunk_shape"])

    arrays = [
        k
        for k, d in docs["spec"].items()
        if d.get("node_type") == "array"
        and d["data_type"] in ("float64", "float32", "uint16", "int64")
    ]
    smaller = [k for k in arrays if chunk_bytes(docs["spec"][k]) < chunk_bytes(docs["default"][k])]
    assert smaller  # arrays without a reader layout now have ~0.25 MB chunks
    assert all(chunk_bytes(docs["spec"][k]) <= 0.25 * 2**20 for k in smaller)
    spec.write_text("release: '2026.3'\nsources: [data]\ncodec: {cname: zstandard}\n")
    code, _, err = _cli([*cli_args, "--lake", str(lake)], capsys)
    assert code != 0
    assert "2026.1.yaml: codec {'cname': 'zstandard'}" in err


@pytest.mark.s3
def test_sources_on_s3_convert_like_local_ones(
    tiny_sources, s3_bucket, s3_options, tmp_path, scheduler
):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    # cell types, Visual Coding, and a connectivity experiment (one dataset of five files)
    experiment = sorted(tiny_sources["connectivity"].glob("experiment_*"))[0]
    local = [tiny_sources["celltypes"], tiny_sources["vc2p-ophys"], experiment]
    for folder in local:
        fs.put(str(folder), f"{s3_bucket}/raw/{folder.name}", recursive=True)
    # an ontology JSON is a source in a listing too (auxiliary JSON such as ephys_sweeps.json
    # is not); named on its own, it is converted as it is
    ontology = tiny_sources["ccf"] / "structures.json"
    fs.put(str(ontology), f"{s3_bucket}/raw/ontology/structures.json")
    local.append(ontology)
    named = f"s3://{s3_bucket}/raw/ontology/structures.json"
    assert jobs.plan([named], s3_options) == [named]
    remote = abo_lake.open_lake(tmp_path / "from_s3")
    report = jobs.run(
        [f"s3://{s3_bucket}/raw/"],
        remote,
        "r1",
        progress=False,
        source_options=s3_options,
        scheduler=scheduler,
    )
    assert report.published, report.summary()
    assert all(f.source.startswith("s3://") for f in report.files)
    assert [f.bytes_fetched for f in report.files] == [f.bytes_in for f in report.files]
    assert f"({sum(f.bytes_in for f in report.files) / 1e6:.1f} MB downloaded)" in report.summary()
    here = abo_lake.open_lake(tmp_path / "from_disk")
    assert jobs.run(local, here, "r1", scheduler=scheduler, progress=False).published
    a, b = remote.release("r1"), here.release("r1")
    assert a.datasets() == b.datasets()
    assert any(p.startswith("connectivity/") for p in a.datasets())
    assert any(a.kind(p) == "ccf_structures" for p in a.datasets())
    for path in a.datasets():
        assert a.manifest(path).chunks == b.manifest(path).chunks
    # a rerun knows each remote group by its objects' ETags and sizes: nothing downloaded
    fetched = []
    real_fetch = jobs._fetch

    def counting_fetch(fs, path, members):
        fetched.append(path)
        return real_fetch(fs, path, members)

    jobs._fetch = counting_fetch
    try:
        again = [
            jobs.convert_file(f.source, remote.url, source_options=s3_options) for f in report.files
        ]
    finally:
        jobs._fetch = real_fetch
    assert fetched == []
    assert all(r.resumed and not r.error for r in again)
    assert all(r.bytes_fetched == 0 for r in again)
    assert [r.datasets for r in again] == [f.datasets for f in report.files]
    assert len(remote.storage.glob("ledger/etag-*.json")) == len(report.files)


def test_bad_s3_sources_are_named_by_their_urls(s3_bucket, s3_options, tmp_path):
    """A named S3 file that does not exist, and a broken one, are reported by their s3://
    URLs (not a bare key, nor the deleted temporary copy a worker read)."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    fs.pipe(f"{s3_bucket}/raw/vbo/broken.nwb", b"this is not HDF5" * 64)
    missing = f"s3://{s3_bucket}/raw/vbo/missing.nwb"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such file or folder"):
        jobs.plan([missing], s3_options)
    broken = f"s3://{s3_bucket}/raw/vbo/broken.nwb"
    result = jobs.convert_file(broken, str(tmp_path / "lake"), source_options=s3_options)
    assert f"{broken}: " in result.error
    assert "abo-lake-src-" not in result.error


def test_the_real_brain_observatory_file_converts_faithfully(shared_data, tmp_path):
    """A real NWB 1.0.5 file (arrays truncated by its publisher): curated + raw, checked."""
    source = shared_data / "nwb" / "brain_observatory_496908818_nwb1_truncated.nwb"
    result = jobs.convert_file(str(source), str(tmp_path / "lake"))
    assert result.error == ""
    assert list(result.datasets) == ["ophys/experiment/496908818"]
    assert result.attrs["ophys/experiment/496908818"]["session_type"] == "three_session_B"


def test_a_conversion_leaves_no_handle_open_on_its_source(vbo_sources, tmp_path):
    """Readers keep HDF5 files open per thread while converting; when the file is done they
    are closed, so a fetched temporary copy's disk space is freed."""
    import os

    source = shutil.copy(vbo_sources[2][0], tmp_path / "copy.nwb")
    result = jobs.convert_file(str(source), str(tmp_path / "lake"))
    assert result.error == ""
    fds = Path("/proc/self/fd")
    if not fds.exists():
        pytest.skip("needs /proc")
    open_files = {os.path.realpath(fds / fd) for fd in os.listdir(fds)}
    assert os.path.realpath(source) not in open_files


def test_gc_keeps_what_resume_records_need(vbo_sources, tmp_path, scheduler):
    lake = abo_lake.open_lake(tmp_path / "lake")
    src = [vbo_sources[0]]  # two experiments: the cells table is built from two parts
    assert jobs.run(src, lake, "r1", scheduler=scheduler, progress=False).published
    report = lake.gc(grace="0s", dry_run=False)
    assert report.chunks == []  # everything is referenced by r1 or by the ledger
    # resumes: reuses manifests and parts
    again = jobs.run(src, lake, "r2", scheduler=scheduler, progress=False)
    assert again.published
    assert all(f.resumed for f in again.files)
    assert lake.verify("r2").ok
    assert lake.release("r2").table("cells").equals(lake.release("r1").table("cells"))


def test_workers_get_the_malloc_settings_and_the_parent_environment_is_restored(dask_client):
    """Job workers start with :data:`jobs.WORKER_MALLOC` (distributed's default trim setting
    made every chunk buffer a fresh mmap), whatever the parent's environment held."""
    import os

    def environ() -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in jobs.WORKER_MALLOC}

    for env in dask_client.run(environ).values():
        assert env == jobs.WORKER_MALLOC
    os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"  # as an earlier distributed nanny leaves it
    try:
        with jobs.worker_malloc():
            assert environ() == jobs.WORKER_MALLOC
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"
        assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
    finally:
        os.environ.pop("MALLOC_TRIM_THRESHOLD_")


def test_progress_moves_within_files_and_ends_at_all_bytes(vbo_sources, tmp_path, scheduler):
    """Workers report the fraction of each file done (writes by chunk task, then the check),
    so the job's progress passes through values that are not whole files."""
    v1, *_ = vbo_sources
    files = jobs.plan([v1])
    sizes = [Path(f).stat().st_size for f in files]
    seen: list[tuple[int, int]] = []
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run(
        [v1],
        lake,
        "r1",
        scheduler=scheduler,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.published, report.summary()
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {sum(sizes)}
    assert done == sorted(done)
    assert done[-1] == sum(sizes)
    whole_files = {0, *sizes, sum(sizes)}
    assert any(d not in whole_files for d in done), done


def test_bytes_done_adds_up_fractions_of_files():
    from abo_lake.progress import BytesDone

    shown: list[int] = []
    done = BytesDone({"a.nwb": 1000, "b.nwb": 3000}, lambda n, total: shown.append(n))
    done.event((0.0, {"source": "a.nwb", "fraction": 0.5}))
    done.event((0.0, {"source": "b.nwb", "fraction": 0.1}))
    done.event((0.0, {"source": "a.nwb", "fraction": 0.25}))  # late, smaller: ignored
    done.event((0.0, {"source": "other job's file", "fraction": 0.9}))
    done.finished("a.nwb")
    done.event((0.0, {"source": "a.nwb", "fraction": 0.8}))  # after its end: ignored
    done.finished("b.nwb")
    assert shown == [500, 800, 1300, 4000]


def test_tables_keep_integer_ids_when_some_rows_lack_them():
    """Visual Coding experiments have no ophys_session_id: the experiments table keeps the
    column as integers (nullable), and ophys_sessions groups only the experiments that have
    one, by integer id."""

    def experiment(eid, **attrs):
        path = f"ophys/experiment/{eid}"
        return jobs.FileResult(
            source=f"{eid}.nwb",
            kinds={path: "ophys_experiment"},
            attrs={path: {"ophys_experiment_id": eid, "mouse_id": 4, **attrs}},
        )

    results = [
        experiment(11, ophys_session_id=1, imaging_depth=150.0, targeted_structure="VISp"),
        experiment(12, ophys_session_id=1, imaging_depth=250.0, targeted_structure="VISl"),
        experiment(13, imaging_depth=175.0, targeted_structure="VISam"),  # Visual Coding
    ]
    tables = release_tables.build_tables(results)
    experiments, sessions = tables["ophys_experiments"], tables["ophys_sessions"]
    assert str(experiments["ophys_session_id"].dtype) == "Int64"
    assert experiments["ophys_session_id"].isna().tolist() == [False, False, True]
    assert experiments["imaging_depth"].dtype == float  # not an id: stays as it was
    assert sessions.index.tolist() == [1]
    assert str(sessions.index.dtype) == "Int64"
    row = sessions.loc[1]
    assert row["n_experiments"] == 2
    assert row["ophys_experiment_id"] == "[11, 12]"
    assert row["targeted_structure"] == "['VISl', 'VISp']"
    assert row["mouse_id"] == 4


def test_two_files_making_one_dataset_differently_fail_the_job(vbo_sources, tmp_path, scheduler):
    """The same experiments from two different files (here: before and after an event
    detection fix) cannot share a release: the later file fails, naming the other, and
    nothing is published (a release keeps one version of a dataset, never silently)."""
    v1, v2, _, _ = vbo_sources
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run([v1, v2], lake, "r1", scheduler=scheduler, progress=False)
    assert not report.published
    failed = {Path(f.source).parent.name for f in report.failures}
    assert failed == {"v2"}
    for f in report.failures:
        assert "also makes with other content" in f.error
        assert str(Path(v1) / Path(f.source).name) in f.error  # the other file, by path
    assert lake.releases() == []


def test_job_on_a_running_scheduler_without_publishing_then_published(
    vbo_sources, tmp_path, dask_cluster
):
    """``scheduler=`` runs on an existing cluster (as on Kubernetes or dask-gateway);
    ``publish=False`` converts and records the ledger but makes no release; a second run
    resumes every file and publishes."""
    v1, *_ = vbo_sources
    lake = abo_lake.open_lake(tmp_path / "lake")
    glob = str(Path(v1) / "*.nwb")  # a local glob as SOURCES
    first = jobs.run([glob], lake, "r1", scheduler=dask_cluster.scheduler_address, publish=False)
    assert len(first.files) == 2
    assert not any(f.error for f in first.files)
    assert not first.published
    assert "r1" not in lake.releases()
    assert "NOT published" in first.summary()
    assert len(lake.storage.glob("ledger/*.json")) == 2
    second = jobs.run([glob], lake, "r1", scheduler=dask_cluster.scheduler_address)
    assert second.published
    assert all(f.resumed for f in second.files)
    assert sorted(lake.release("r1").datasets()) == sorted(
        p for f in first.files for p in f.datasets
    )


def test_two_workers_writing_the_same_chunks_at_once(vbo_sources, tmp_path, scheduler):
    """Two copies of one file in two folders: two worker processes convert them at the same
    time and race to put the same chunk objects (put-if-absent). Both succeed with the same
    manifest, the release holds one dataset, and every object hashes to its name."""
    _, _, (first, *_), _ = vbo_sources
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(first, tmp_path / folder / Path(first).name)
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run(
        [tmp_path / "a", tmp_path / "b"], lake, "r1", scheduler=scheduler, progress=False
    )
    assert report.published, report.summary()
    a, b = report.files
    assert a.datasets == b.datasets
    assert len(lake.release("r1").datasets()) == 1
    check = lake.verify("r1")
    assert check.checked > 10
    assert check.ok, (check.missing, check.corrupt)


@pytest.mark.parametrize("same", [True, False])
def test_a_job_that_loses_its_name_to_another_job(
    same, vbo_sources, tmp_path, monkeypatch, scheduler
):
    """Two jobs publish one name at once. The loser succeeds when the winner published the
    same release (it used to fail), and is refused naming what differs otherwise; either way
    the catalog is the winner's (it used to be the loser's, written before the name was won).
    """
    from abo_lake.lake import Stage

    v1 = vbo_sources[2][0]
    lake = abo_lake.open_lake(tmp_path / "lake")
    real_publish = Stage._publish

    def another_job_wins(self):
        twin = Stage(self.lake, self.name, notes="the other job")
        twin.datasets, twin.tables = dict(self.datasets), dict(self.tables)
        if not same:
            twin.tables.pop("ophys_experiments")
        real_publish(twin)
        return real_publish(self)

    monkeypatch.setattr(Stage, "_publish", another_job_wins)
    if same:
        report = jobs.run([v1], lake, "r1", progress=False, scheduler=scheduler)
        assert report.published
        assert report.already_published
        assert "already published with this content" in report.summary()
    else:
        with pytest.raises(
            ReleaseExistsError, match="published by another job while this one ran.*ophys_exp"
        ):
            jobs.run([v1], lake, "r1", progress=False, scheduler=scheduler)
    record = lake.release("r1").record
    catalog = yaml.safe_load(lake.storage.read("releases/r1/catalog.yaml"))
    assert catalog["metadata"]["abo_lake_release_root"] == record.root
    assert record.notes == "the other job"
    assert lake.storage.glob("stages/*") == []


def test_a_running_job_keeps_its_stage_alive(vbo_sources, tmp_path, monkeypatch):
    """The stage's heartbeat goes on while files convert (it used to be written only at the
    start and end): GC sees a job longer than its grace period as open, and deletes none of
    what the job has converted or is resuming."""
    from abo_lake.lake import Stage

    monkeypatch.setattr(jobs, "HEARTBEAT_SECONDS", 0.1)
    beats = []
    real_heartbeat = Stage.heartbeat

    def counting(self):
        beats.append(json.loads(self.lake.storage.read(f"stages/{self.id}/stage.json")))
        real_heartbeat(self)

    monkeypatch.setattr(Stage, "heartbeat", counting)
    lake = abo_lake.open_lake(tmp_path / "lake")
    report = jobs.run([vbo_sources[2][0]], lake, "r1", progress=False, workers=1)
    assert report.published
    assert len(beats) >= 3  # a cluster start and one conversion take seconds
    assert beats[-1]["heartbeat"] > beats[0]["heartbeat"]


def test_sigterm_discards_the_stage_and_a_rerun_resumes(vbo_sources, tmp_path, scheduler, capsys):
    """SIGTERM (a batch scheduler's or Kubernetes' stop) ends a job like Ctrl-C: a short
    message and exit 130, the open stage discarded (it used to stay, holding GC back for the
    grace period), nothing published; the same command then publishes."""
    import signal

    lake = tmp_path / "lake"
    cmd = [sys.executable, "-m", "abo_lake.cli", "convert", str(vbo_sources[0])]
    cmd += ["--lake", str(lake), "--release", "r1", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(lake.glob("stages/*/stage.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; nothing unfinished was published" in err
    assert not list(lake.glob("stages/*"))
    assert abo_lake.open_lake(lake).releases() == []
    # the same command again (in-process, on the session's cluster instead of its own)
    code, _, err = _cli([*cmd[3:-2], "--scheduler", scheduler], capsys)
    assert code == 0, err
    assert abo_lake.open_lake(lake).releases() == ["r1"]


def test_a_newer_converter_converts_again(vbo_sources, tmp_path, monkeypatch):
    """The resume key holds the converter version: after a reader fix, a rerun converts the
    file again instead of resuming what the old reader made (the fix never reached it)."""
    source, lake = str(vbo_sources[2][0]), str(tmp_path / "lake")
    assert not jobs.convert_file(source, lake).resumed
    assert jobs.convert_file(source, lake).resumed
    monkeypatch.setattr(jobs, "CONVERTER_VERSION", jobs.CONVERTER_VERSION + 1)
    result = jobs.convert_file(source, lake)
    assert not result.resumed
    assert result.error == ""
    assert result.new_objects == 0  # the same output: every chunk deduplicated


def test_cells_of_both_ophys_projects_share_one_rmse_column(vbo_sources, tiny_sources, tmp_path):
    """Visual Behavior names the neuropil fit's error RMSE, Visual Coding rmse: the release's
    cells table fills RMSE from rmse (both kept), so one column serves both projects."""
    from abo_lake.storage import Storage

    lake = str(tmp_path / "lake")
    vc2p = next(Path(tiny_sources["vc2p-ophys"]).glob("*.nwb"))
    results = [jobs.convert_file(str(p), lake) for p in (vbo_sources[2][0], vc2p)]
    assert [r.error for r in results] == ["", ""]
    cells = release_tables.build_tables(results, storage=Storage(lake))["cells"]
    vc = cells["rmse"].notna()
    assert vc.any()
    assert (~vc).any()
    assert cells["RMSE"].notna().all()
    assert (cells.loc[vc, "RMSE"] == cells.loc[vc, "rmse"]).all()


def test_a_name_taken_before_the_job_opens_its_stage(vbo_sources, tmp_path, monkeypatch, scheduler):
    """Another job publishes the name while ours starts its cluster: ours says the release
    exists (it crashed with UnboundLocalError)."""
    from abo_lake.lake import Lake

    lake = abo_lake.open_lake(tmp_path / "lake")
    real_stage = Lake.stage

    def taken_meanwhile(self, name, **kwargs):
        with real_stage(self, name, notes="the other job") as other:
            other.write_table("t", pd.DataFrame({"x": [1]}))
        return real_stage(self, name, **kwargs)

    monkeypatch.setattr(Lake, "stage", taken_meanwhile)
    with pytest.raises(ReleaseExistsError, match="r1"):
        jobs.run([vbo_sources[2][0]], lake, "r1", progress=False, scheduler=scheduler)


def test_a_rerun_completes_a_release_published_without_its_catalog(
    vbo_sources, tmp_path, scheduler
):
    """A kill between the record and the catalog (or a lost response to the record's PUT)
    left a published release without its catalog: a rerun of the same job completes it."""
    v1 = vbo_sources[2][0]
    lake = abo_lake.open_lake(tmp_path / "lake")
    assert jobs.run([v1], lake, "r1", progress=False, scheduler=scheduler).published
    gone = ["releases/r1/catalog.yaml", "catalog.yaml"]  # (format 3: no by-id index)
    lake.storage.delete(gone)
    report = lake.verify("r1")
    assert sorted(report.incomplete) == sorted((k, "missing") for k in gone)
    again = jobs.run([v1], lake, "r1", progress=False, scheduler=scheduler)
    assert again.already_published
    assert sorted(again.repaired) == sorted(gone)
    assert "already published with this content; completed releases/r1/" in again.summary()
    assert abo_lake.open_lake(lake.url).verify("r1").ok
