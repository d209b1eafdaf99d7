"""Cloud reads, lake vs peers, same run, counted by a proxy (issue 18).

A moto S3 server on loopback and a counting proxy in front of it (``tests/faultproxy.py``:
requests and bytes on the client's connection, both ways, status lines and headers
included). A Visual Behavior 2P experiment and a Visual Coding Neuropixels session are
synthesised (``abo_lake.synthetic``, ``--scale realistic``: 39,614 frames x 200 cells; 600
units, ~21 M spikes), their NWB files uploaded to the bucket (for the peers) and converted
into an S3 lake in the same bucket with ``abo_lake.jobs.run`` (as ``abo-lake convert`` does).
Uploads and the conversion go straight to moto; every measured read goes through the proxy.

Tools, each reading through the proxy as its user would:

``lake``
    ``abo_lake.open_lake(url, endpoint_url=...)``, ``.release(name).open(path)``; one cell
    ``ds["dff"].sel(cell_specimen_id=id).values``; all cells ``ds["dff"].values``; one unit
    ``ds.ecephys.spike_times(unit_id).values`` (the accessor's lazy form: the mapping form
    ``spike_times[unit_id]`` first loads the default-filtered units table, as AllenSDK's dict
    keys are those units); all units ``spike_times``, ``spike_times_index`` (ragged arrays).
``s3fs``
    ``h5py.File(S3FileSystem(...).open(key))`` with s3fs's defaults (readahead, 50 MiB blocks).
``blockcache``
    fsspec's ``blockcache`` over s3 (a fresh, empty cache folder per open).
``remfile``
    ``h5py.File(remfile.File(presigned_url))`` with remfile's defaults (skipped with a note if
    remfile is not installed: ``pip install -e .[bench]``).
``download``
    ``S3FileSystem.get_file`` of the whole file, then h5py on the local copy (its open is the
    download; its reads are local and make no request).

The peers get the benefit of h5py with the dataset paths known (pynwb's ``NWBHDF5IO.read``
would visit every group); they locate the cell or unit from the NWB's id columns
(``cell_specimen_table/cell_specimen_id`` via ``dff/traces/rois``; ``units/id``), which
counts in their read.

Operations: ``open`` (lake: open_lake + release + open; peers: open the file and reach the
datasets), ``cell`` (one cell's dF/F), ``dff_all`` (every cell), ``unit`` (one unit's spike
times), ``spikes_all`` (every unit's). Each tool x operation runs in its own fresh Python
process: *cold* is the first run there (imports included in the open, new connections), then
``--repeat`` *warm* runs, each on a freshly opened handle (no data cached between runs; module
imports, fsspec instances and their connection pools reused). A read operation is measured
after its open (requests, bytes and seconds of the read alone); the ``+open`` columns add the
open's. Tables show the warm medians. Values are checked equal across tools (SHA-256 of the
values in cell/unit id order) before any table is printed; a mismatch fails the run.

"Own bytes" are the result's values as float64 (one cell: frames x 8; one unit: spikes x 8;
all spikes: spikes x 8 + units x 8 for the index). The lake's goals (issue 18): open in <= 2
requests and < 0.3 s warm; one cell's trace or one unit's spikes in <= 2 requests and <= 2x
its own bytes on the wire; whole-population reads no slower than before the chunking change
(the ``BEFORE`` figures below: bytes and requests within 5%, warm wall within 25%, the machine
being shared).

remfile's size probe is a streaming GET of the whole object closed after the headers: the
proxy charges what the client accepted before hanging up (up to a few MiB of loopback
buffers), as a real link would carry what was in flight.

Run::

    nice .venv/bin/python tests/benchmarks/bench_cloud_reads.py [--scale realistic|tiny]
        [--repeat 3] [--tools lake,s3fs,blockcache,remfile,download] [--kinds ophys,ecephys]
        [--ops open,cell,dff_all,unit,spikes_all] [--work DIR]

Everything is written under a temporary folder (or ``--work``, which keeps the synthesised
NWB files for the next run); the lake lives in moto's memory.

Measured 2026-12-07 on the shared 2-core machine (load 14-24 throughout: wall times are
inflated and noisy; requests and bytes are exact and repeatable), realistic scale. Moto reads
a whole object for any range of it: a 100-byte range GET of the VB file (312 MiB) took
1.7-2.7 s, of the Neuropixels file (370 MiB) 2.3-3.6 s, of the lake's largest object (3.5 MiB)
0.04-0.07 s, so the peers' wall times carry ~2 s per request that real S3 would not charge;
compare their requests and bytes, and read their seconds as upper bounds.

The lake, before and after the chunking change (``--tools lake --repeat 2``; warm medians;
"before" is commit 6061509, the tree before f08418c "Packed chunks and inline index
coordinates", run from a ``git archive`` copy; "after" is 86f33db; both in the same
half hour):

=====================  ==================================  ==================================
operation              before (6061509)                    after (86f33db)
=====================  ==================================  ==================================
VB open                11 req, 2.59 MiB, 2.92 s (cold 44)  4 req, 2.73 MiB, 1.42 s (cold 26)
VB one cell's dF/F     5 req, 8.63 MiB = 28.6x own, 0.87 s 1 req, 0.27 MiB = 0.91x own, 0.11 s
VB all dF/F (60 MiB)   36 req, 53.9 MiB, 10.0 s            17 req, 54.0 MiB, 2.39 s
Npx open               11 req, 0.76 MiB, 3.13 s (cold 48)  2 req, 1.35 MiB, 1.79 s (cold 21)
Npx one unit's spikes  2 req, 2.79 MiB = 8.3x own, 0.29 s  2 req, 0.27 MiB = 0.80x own, 0.16 s
Npx all spikes (160M)  41 req, 110.8 MiB, 9.27 s           41 req, 111.5 MiB, 5.14 s
=====================  ==================================  ==================================

Goals after: one cell and one unit met (1 and 2 requests, <= 1x their own bytes: the
lake's chunks are compressed); Neuropixels open met on requests (2) but not on time (1.79 s
warm here, at load ~20; < 0.3 s not shown); VB open unmet (4 requests; a lake converted
minutes earlier, before ccde457 inlined only index coordinates <= 256 KiB, opened in 2
requests, 3.33 MiB); whole-population reads not slower (same bytes,
fewer or equal requests, faster). (``BEFORE`` above holds these "before" rows.)

Last run, 09:43-09:48 at addb923, load 5 falling to 0.3 (``--tools lake --kinds ophys
--ops open,cell --show-requests``): VB open 4 requests, 2.73 MiB, 0.36 s warm, 4.68 s cold
(imports included): release.json (5.9 KB), the manifest (966 KB) and two ranged reads of
~0.9 MiB each from the start of packed objects (index coordinates over 256 KiB, which
ccde457 no longer inlines; which coordinates was not checked); one cell 1 request, 0.27 MiB,
0.03 s warm. Moto's 100-byte range GET of the VB file: 0.29 s at that load.

The open after the CPU cuts in ``Release.open`` (members-only Zarr metadata, index
coordinates decoded in-thread, dask graphs built directly; DESIGN.md "Opening a dataset"),
``--tools lake --ops open --repeat 7``, 7 warm runs, 12:24-12:30, before = 2fec12b run from a
``git archive`` copy (``PYTHONPATH``) just before the tree at 60080e5; the ``cpu s`` column is
the worker's CPU (all threads), which the machine's load does not inflate:

=============  ====================================  ====================================
open           before (2fec12b, load 4.0-5.1)        after (60080e5, load 5.1-9.9)
=============  ====================================  ====================================
VB             2 req, 3.15 MiB, 0.27 s, CPU 0.190 s  2 req, 3.15 MiB, 0.23 s, CPU 0.107 s
Npx            2 req, 1.12 MiB, 0.30 s, CPU 0.262 s  2 req, 1.12 MiB, 0.34 s, CPU 0.119 s
=============  ====================================  ====================================

Whole-population reads with it (``--tools lake --repeat 3``, 12:09-12:14, load 5.6-6.4): VB
all dF/F 17 requests, 54.0 MiB, 1.69 s; Npx all spikes 41 requests, 111.5 MiB, 2.38 s (no
slower than the figures above); one cell 1 request, 0.27 MiB, 0.03 s; one unit 2 requests,
0.27 MiB, 0.10 s; open 0.38 / 0.37 s warm at that load.

The peers, same files, same proxy (their figures do not depend on the lake's format).
Full run (all tools, ``--repeat 1``, load 23 falling to 7; the lake converted at ~09:11, a
tree after 6c6c584 and before ccde457). Per read alone: requests / MiB on the wire / warm s;
``+open``: requests / MiB / s with the open. Values equal across all five tools (SHA-256):

==========  ====================  =====================  ======================================
op          lake                  s3fs (defaults)        blockcache | remfile | download
==========  ====================  =====================  ======================================
VB open     2 / 3.33 / 1.52       20 / 682.6 / 91.2      6/161.7/16.1 | 14/2.36/30.8 |
                                                         8/311.7/18.1
VB cell     1 / 0.27 / 0.20;      4 / 150.4 / 11.0;      0 (open's block); +open 6/161.7/18.0 |
(0.30 MiB)  +open 3/3.60/1.72     +open 24/833/102       10/60.4/7.4, +open 24/62.7/38.2 |
                                                         0, +open 8/311.7/18.2
VB all dF/F 17 / 54.0 / 2.20;     3 / 160.9 / 4.5;       0, +open 6/161.7/17.0 | 1/60.4/2.4,
(60.5 MiB)  +open 19/57.3/3.72    +open 23/843/95.7      +open 15/62.7/33.2 | 0, +open 8/312/18.7
Npx open    2 / 1.35 / 0.92       16 / 615.6 / 21.3      7/220.4/7.8 | 11/0.99/11.6 |
                                                         9/370.4/16.4
Npx unit    2 / 0.27 / 0.13;      4 / 154.2 / 4.8;       1/50.0/1.1, +open 8/270/8.9 |
(0.33 MiB)  +open 4/1.61/1.05     +open 20/770/26.1      1/4.10/0.67, +open 12/5.09/12.3 |
                                                         0, +open 9/370/16.4
Npx all     41 / 111.5 / 2.69;    6 / 256.2 / 10.7;      2/100/3.1, +open 9/320/10.9 |
spikes      +open 43/112.8/3.61   +open 22/872/32.0      7/165.8/7.6, +open 18/166.8/19.2 |
(160 MiB)                                                0, +open 9/370/16.8
==========  ====================  =====================  ======================================

With the open, the lake is the fastest tool for every operation in this run (peers 3.0x to
60x its wall time, moto's per-request floor included) and moves the fewest bytes for one cell
or one unit with the open (3.60 / 1.61 MiB; next remfile, 62.7 / 5.09 MiB). remfile's open
alone moves fewer bytes than the lake's (2.36 vs 3.33 MiB VB, 0.99 vs 1.35 MiB Npx) in more
requests (14 / 11 vs 2). s3fs's defaults (readahead, 50 MiB blocks) fetch 616-683 MiB just to open a
file with h5py. The lake's open is still not < 0.3 s warm here (0.92-1.52 s at load ~20; the
cold open, imports included, 8.6-39 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for faultproxy

TOOLS = ("lake", "s3fs", "blockcache", "remfile", "download")
OPS = {"ophys": ("open", "cell", "dff_all"), "ecephys": ("open", "unit", "spikes_all")}
SYNTH = {"ophys": "vbo-ophys", "ecephys": "vcn-ecephys"}
CREDENTIALS = {"key": "testing", "secret": "testing"}
MIB = 2**20

#: The lake's whole-population figures before the chunking change (issue 18), measured by
#: this script at the realistic scale: (requests, MiB on the wire, warm seconds).
BEFORE: dict[str, tuple[int, float, float]] = {
    "dff_all": (36, 53.89, 10.00),  # commit 6061509, 2026-12-07, load ~20
    "spikes_all": (41, 110.83, 9.27),
}

DFF = "processing/ophys/dff/traces/data"
ROIS = "processing/ophys/dff/traces/rois"
CELL_IDS = "processing/ophys/image_segmentation/cell_specimen_table/cell_specimen_id"
ROI_IDS = "processing/ophys/image_segmentation/cell_specimen_table/id"  # cell_roi_id


# -- values in a canonical form (equal across tools) ---------------------------------------------


def _digest_one(values: np.ndarray) -> tuple[str, int]:
    values = np.ascontiguousarray(values, dtype=np.float64)
    return hashlib.sha256(values.tobytes()).hexdigest(), values.nbytes


def _digest_rows(ids: np.ndarray, rows: np.ndarray) -> tuple[str, int]:
    """(cell, time) rows in ``cell_roi_id`` order (invalid ROIs share cell_specimen_id -1 in
    the NWB file; the lake gives them distinct negative ids)."""
    order = np.argsort(ids, kind="stable")
    h = hashlib.sha256(np.asarray(ids, dtype=np.int64)[order].tobytes())
    values = np.ascontiguousarray(np.asarray(rows, dtype=np.float64)[order])
    h.update(values.tobytes())
    return h.hexdigest(), values.nbytes


def _digest_ragged(ids: np.ndarray, ends: np.ndarray, values: np.ndarray) -> tuple[str, int]:
    """Each unit's spikes (``values[start:end]``, NWB's ragged layout) in unit id order."""
    ids, ends = np.asarray(ids, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    starts = np.concatenate([[0], ends[:-1]])
    h = hashlib.sha256()
    for u in np.argsort(ids, kind="stable"):
        h.update(ids[u : u + 1].tobytes())
        h.update(values[starts[u] : ends[u]].tobytes())
    return h.hexdigest(), values.nbytes + ends.nbytes


# -- the tools (run in a worker process) -----------------------------------------------------------


class LakeTool:
    """The lake through its public API."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg

    def open(self, kind: str) -> Any:
        import abo_lake

        lake = abo_lake.open_lake(self.cfg["lake_url"], **self.cfg["proxied"])
        return lake.release(self.cfg["release"]).open(self.cfg[kind]["path"])

    def cell(self, ds: Any) -> tuple[str, int]:
        return _digest_one(ds["dff"].sel(cell_specimen_id=self.cfg["ophys"]["cell"]).values)

    def dff_all(self, ds: Any) -> tuple[str, int]:
        values = ds["dff"].transpose("cell_specimen_id", ...).values
        return _digest_rows(ds["cell_roi_id"].values, values)

    def unit(self, ds: Any) -> tuple[str, int]:
        return _digest_one(ds.ecephys.spike_times(self.cfg["ecephys"]["unit"]).values)

    def spikes_all(self, ds: Any) -> tuple[str, int]:
        ends = ds["spike_times_index"].values
        return _digest_ragged(ds["unit_id"].values, ends, ds["spike_times"].values)


class H5Tool:
    """A peer: h5py over some file object; subclasses say how the file is reached."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.handles: list[Any] = []

    def file(self, kind: str) -> Any:
        raise NotImplementedError

    def open(self, kind: str) -> Any:
        import h5py

        for h in self.handles:  # the previous run's handles
            h.close()
        self.handles = []
        h = h5py.File(self.file(kind), "r")
        self.handles.insert(0, h)
        if kind == "ophys":
            return {"dff": h[DFF], "rois": h[ROIS], "ids": h[CELL_IDS], "roi_ids": h[ROI_IDS]}
        return {
            "ids": h["units/id"],
            "ends": h["units/spike_times_index"],
            "times": h["units/spike_times"],
        }

    def cell(self, d: dict) -> tuple[str, int]:
        ids = d["ids"][:][d["rois"][:]]
        (col,) = np.flatnonzero(ids == self.cfg["ophys"]["cell"])
        return _digest_one(d["dff"][:, int(col)])

    def dff_all(self, d: dict) -> tuple[str, int]:
        return _digest_rows(d["roi_ids"][:][d["rois"][:]], d["dff"][:].T)

    def unit(self, d: dict) -> tuple[str, int]:
        (pos,) = np.flatnonzero(d["ids"][:] == self.cfg["ecephys"]["unit"])
        first = int(d["ends"][pos - 1]) if pos else 0
        return _digest_one(d["times"][first : int(d["ends"][pos])])

    def spikes_all(self, d: dict) -> tuple[str, int]:
        return _digest_ragged(d["ids"][:], d["ends"][:], d["times"][:])

    def _s3(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.cfg["proxied"])


class S3fsTool(H5Tool):
    def file(self, kind: str) -> Any:
        f = self._s3().open(self.cfg[kind]["key"], "rb")
        self.handles.append(f)
        return f


class BlockcacheTool(H5Tool):
    def file(self, kind: str) -> Any:
        import fsspec

        cache = Path(self.cfg["tmp"]) / f"blockcache-{uuid.uuid4().hex[:8]}"
        fs = fsspec.filesystem(
            "blockcache",
            target_protocol="s3",
            target_options=self.cfg["proxied"],
            cache_storage=str(cache),
            skip_instance_cache=True,
        )
        f = fs.open(self.cfg[kind]["key"], "rb")
        self.handles.append(f)
        return f


class RemfileTool(H5Tool):
    def file(self, kind: str) -> Any:
        import boto3
        import remfile

        client = boto3.client(
            "s3",
            endpoint_url=self.cfg["proxied"]["endpoint_url"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )  # presigning is local: no request
        bucket, key = self.cfg[kind]["key"].split("/", 1)
        url = client.generate_presigned_url("get_object", {"Bucket": bucket, "Key": key})
        return remfile.File(url)


class DownloadTool(H5Tool):
    """The whole file fetched, then read locally; a read after the open reuses the copy."""

    local: Path | None = None
    reuse = False

    def file(self, kind: str) -> Any:
        if self.local is None or not self.reuse:
            if self.local is not None:
                self.local.unlink()
            self.local = Path(self.cfg["tmp"]) / f"download-{uuid.uuid4().hex[:8]}.nwb"
            self._s3().get_file(self.cfg[kind]["key"], str(self.local))
        return str(self.local)


TOOL_CLASSES = {
    "lake": LakeTool,
    "s3fs": S3fsTool,
    "blockcache": BlockcacheTool,
    "remfile": RemfileTool,
    "download": DownloadTool,
}


def worker(cfg: dict) -> None:
    """Measure one tool x operation: a cold run, then ``repeat`` warm runs; marks on stdout."""

    def mark(label: str) -> None:
        print(f"@@mark {label}", flush=True)
        sys.stdin.readline()  # the parent has taken its mark

    tool = TOOL_CLASSES[cfg["tool"]](cfg)
    kind, op = cfg["kind"], cfg["op"]
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}  # the process's CPU seconds (all its threads): load-independent
    digests: set[str] = set()
    own = 0

    def timed(label: str, fn: Any, *args: Any) -> Any:
        mark(f"{label}:begin")
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        seconds[label] = time.perf_counter() - t0
        cpu[label] = time.process_time() - c0
        mark(f"{label}:end")
        return out

    for run in ["cold"] + [f"warm{i}" for i in range(cfg["repeat"])]:
        if isinstance(tool, DownloadTool):
            tool.reuse = op != "open" and run != "cold"
        if op == "open":
            timed(f"{run}.open", tool.open, kind)
            continue
        handle = timed(f"{run}.open", tool.open, kind)
        digest, own = timed(f"{run}.op", getattr(tool, op), handle)
        digests.add(digest)
    result = {"seconds": seconds, "cpu": cpu, "digests": sorted(digests), "own": own}
    print("@@result " + json.dumps(result))


# -- the parent: server, proxy, data, workers, tables ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def provenance(load_at_start: float, run: str) -> str:
    """What a run's figures come from: the tree and commit, the machine and its load."""
    import abo_lake

    here = Path(abo_lake.__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=here).stdout.strip() or "not a git tree"  # fmt: skip
    return (f"(abo_lake from {here}, commit {commit}; {os.cpu_count()} cores, load "
            f"{load_at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; {run})")  # fmt: skip


def run_worker(cfg: dict, proxy: Any, script: str = __file__) -> dict:
    """Run one worker process (``script --worker cfg``), taking the proxy's marks when it
    asks; its result and tallies."""
    cmd = [sys.executable, script, "--worker", json.dumps(cfg)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    marks: dict[str, int] = {}
    result = None
    for line in proc.stdout:
        if line.startswith("@@mark "):
            marks[line.split()[1]] = proxy.mark()
            proc.stdin.write("\n")
            proc.stdin.flush()
        elif line.startswith("@@result "):
            result = json.loads(line[len("@@result ") :])
    if proc.wait() != 0 or result is None:
        what = " ".join(str(cfg[k]) for k in ("tool", "kind", "op", "way") if k in cfg)
        raise RuntimeError(f"{what} failed (see stderr)")
    result["tally"] = {
        label: proxy.tally(marks[f"{label}:begin"], marks[f"{label}:end"])
        for label in result["seconds"]
    }
    if cfg.get("show_requests"):
        last = [k for k in result["seconds"] if k.startswith("warm")][-1]
        for hit in proxy.hits[marks[f"{last}:begin"] : marks[f"{last}:end"]]:
            print(f"  {cfg['tool']} {cfg['kind']} {last}: {hit.method} {hit.path} "
                  f"{hit.range or ''} {hit.body_out} B")  # fmt: skip
    return result


def prepare(args: argparse.Namespace, tmp: Path, moto_url: str, bucket: str) -> dict:
    """Synthesise (or reuse), upload and convert; the configuration the workers share."""
    import boto3
    import h5py

    import abo_lake
    from abo_lake import jobs
    from abo_lake.synthetic import synthesize

    work = Path(args.work) if args.work else tmp
    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    cfg: dict[str, Any] = {"lake_url": f"s3://{bucket}/lake", "release": "bench"}
    files = []
    for kind in args.kinds:
        src = work / f"src-{args.scale}-{kind}"
        pattern = "**/session_*.nwb" if kind == "ecephys" else "**/*.nwb"
        found = sorted(src.glob(pattern))
        if not found:
            t0 = time.perf_counter()
            synthesize(SYNTH[kind], src, scale=args.scale)
            found = sorted(src.glob(pattern))
            print(f"synthesised {found[0].name} in {time.perf_counter() - t0:.0f} s", flush=True)
        nwb = found[0]
        key = f"nwb/{nwb.name}"
        client.upload_file(str(nwb), bucket, key)
        cfg[kind] = {"key": f"{bucket}/{key}", "nwb_mib": nwb.stat().st_size / MIB}
        files.append(nwb)
        with h5py.File(nwb, "r") as h:
            if kind == "ophys":
                ids = np.sort(h[CELL_IDS][:][h[ROIS][:]])
                ids = ids[ids > 0]  # valid cells (invalid ROIs have -1)
                cfg[kind]["cell"] = int(ids[len(ids) // 2])
                cfg[kind]["shape"] = list(h[DFF].shape)
            else:
                ids = h["units/id"][:]
                cfg[kind]["unit"] = int(ids[len(ids) // 2])
                cfg[kind]["shape"] = [len(ids), int(h["units/spike_times"].shape[0])]
    direct = {"endpoint_url": moto_url, **CREDENTIALS}
    lake = abo_lake.open_lake(cfg["lake_url"], **direct)
    t0 = time.perf_counter()
    report = jobs.run(files, lake, cfg["release"], workers=2, progress=False)
    if not report.published:
        raise SystemExit(f"conversion failed:\n{report.summary()}")
    print(f"converted into {cfg['lake_url']} in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg["floor"] = server_floor(client, bucket, cfg)
    datasets = lake.release(cfg["release"]).datasets()
    for kind, prefix in (("ophys", "ophys/experiment/"), ("ecephys", "ecephys/session/")):
        if kind in cfg:
            cfg[kind]["path"] = next(d for d in datasets if d.startswith(prefix))
    return cfg


def server_floor(client: Any, bucket: str, cfg: dict) -> dict[str, float]:
    """Seconds moto takes for a 100-byte range GET, straight (no proxy), per NWB object and
    for the lake's largest object: moto reads a whole object for any range of it, so each
    request of a peer on a large NWB file costs this much on top of its transfer (real S3
    does not); the peers' wall times include it."""
    objects = {kind: cfg[kind]["key"].split("/", 1)[1] for kind in OPS if kind in cfg}
    listing = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/")
    sizes = {o["Key"]: o["Size"] for page in listing for o in page.get("Contents", [])}
    objects["largest lake object"] = max(sizes, key=sizes.get)
    floor = {}
    for name, key in objects.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            client.get_object(Bucket=bucket, Key=key, Range="bytes=0-99")["Body"].read()
            times.append(time.perf_counter() - t0)
        floor[name] = median(times)
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"] / MIB
        print(f"moto: a 100-byte range GET of {name} ({size:.1f} MiB) takes {floor[name]:.3f} s")
    return floor


def summary(res: dict, name: str) -> dict:
    """Warm medians and the cold figures of one measured step (``open`` or ``op``)."""
    warm = [k for k in res["seconds"] if k.startswith("warm") and k.endswith("." + name)]
    cold = res["tally"][f"cold.{name}"]
    return {
        "requests": median(res["tally"][k].requests for k in warm),
        "mib": median(res["tally"][k].wire_bytes for k in warm) / MIB,
        "s": median(res["seconds"][k] for k in warm),
        "cpu": median(res["cpu"][k] for k in warm),
        "cold_requests": cold.requests,
        "cold_mib": cold.wire_bytes / MIB,
        "cold_s": res["seconds"][f"cold.{name}"],
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "UNMET"


def table(
    kind: str, op: str, rows: dict[str, dict], opens: dict[str, dict], scale: str
) -> list[str]:
    """Print one operation's table; return the lake's goal lines (met/unmet).

    ``x lake`` is the tool's warm seconds over the lake's (with the open for a read).
    """
    read = op != "open"
    print(
        f"\n{kind} / {op}" + ("  (the read alone; +open: with the open's figures)" if read else "")
    )
    head = f"{'tool':<11}{'requests':>16}{'MiB wire':>10}{'own MiB':>9}{'wire/own':>9}"
    head += f"{'cold s':>8}{'warm s':>8}{'cpu s':>7}"
    if read:
        head += f"{'+open req':>10}{'+open MiB':>10}{'+open s':>8}"
    print(head + f"{'x lake':>8}")
    goals, totals, lines = [], {}, {}
    for tool, res in rows.items():
        m = summary(res, "op" if read else "open")
        req, wire, own = m["requests"], m["mib"], res["own"] / MIB
        cold_req = m["cold_requests"]
        reqs = f"{req:.0f}" if cold_req == req else f"{req:.0f} (cold {cold_req})"
        line = f"{tool:<11}{reqs:>16}{wire:>10.2f}"
        line += f"{own:>9.2f}{wire / own:>9.2f}" if own else f"{'-':>9}{'-':>9}"
        line += f"{m['cold_s']:>8.2f}{m['s']:>8.2f}{m['cpu']:>7.2f}"
        totals[tool] = m["s"]
        if read:
            o = opens.get(tool) or summary(res, "open")
            totals[tool] = m["s"] + o["s"]
            line += f"{req + o['requests']:>10.0f}{wire + o['mib']:>10.2f}{totals[tool]:>8.2f}"
        lines[tool] = line
        if tool != "lake":
            continue
        cold_note = f"{m['cold_s']:.2f} s cold, {cold_req} requests cold"
        if op == "open":
            ok = max(req, cold_req) <= 2 and m["s"] < 0.3
            goals.append(
                f"{kind} open: {req:.0f} requests, {wire:.2f} MiB, {m['s']:.2f} s warm "
                f"(CPU {m['cpu']:.3f} s) "
                f"({cold_note}) [goal <= 2 requests, < 0.3 s warm: {_verdict(ok)}]"
            )
        elif op in ("cell", "unit"):
            ok = max(req, cold_req) <= 2 and wire <= 2 * own
            goals.append(
                f"{kind} {op}: {req:.0f} requests, {wire:.2f} MiB on the wire for {own:.2f} "
                f"MiB own ({wire / own:.2f}x), {m['s']:.2f} s warm ({cold_note}) "
                f"[goal <= 2 requests, <= 2x: {_verdict(ok)}]"
            )
        else:
            text = f"{kind} {op}: {req:.0f} requests, {wire:.2f} MiB, {m['s']:.2f} s warm"
            before = BEFORE.get(op) if scale == "realistic" else None
            if before is None:
                goals.append(text + " [no 'before' figures to compare with]")
            else:
                b_req, b_mib, b_s = before
                ok = req <= 1.05 * b_req and wire <= 1.05 * b_mib and m["s"] <= 1.25 * b_s
                goals.append(
                    f"{text} vs before {b_req} requests, {b_mib:.2f} MiB, {b_s:.2f} s "
                    f"[goal no slower: {_verdict(ok)}]"
                )
    lake_s = totals.get("lake")
    for tool, line in lines.items():
        print(line + (f"{totals[tool] / lake_s:>8.1f}" if lake_s else ""))
    return goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="realistic", choices=("tiny", "realistic"))
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per tool and operation")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--kinds", default="ophys,ecephys")
    parser.add_argument("--ops", default=None, help="subset of open,cell,dff_all,unit,spikes_all")
    parser.add_argument("--work", help="keep the synthesised NWB files here (default: temporary)")
    parser.add_argument(
        "--show-requests", action="store_true", help="list each request of the last warm run"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    args.kinds = args.kinds.split(",")
    tools = args.tools.split(",")
    if "remfile" in tools:
        try:
            import remfile  # noqa: F401
        except ImportError:
            print("note: remfile is not installed (pip install -e .[bench]): skipping that peer")
            tools.remove("remfile")
    load0 = os.getloadavg()
    import logging

    from faultproxy import FaultProxy
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="abo-cloud-reads-") as tmp_name:
        tmp = Path(tmp_name)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        proxy = FaultProxy(moto_url, max_requests=10**7, timeout=120)
        try:
            cfg = prepare(args, tmp, moto_url, f"abo-{uuid.uuid4().hex[:12]}")
            cfg.update(
                proxied={"endpoint_url": proxy.url, **CREDENTIALS},
                tmp=str(tmp),
                repeat=args.repeat,
                scale=args.scale,
                show_requests=args.show_requests,
            )
            for kind in args.kinds:
                print(f"{kind}: {cfg[kind]['key']} ({cfg[kind]['nwb_mib']:.0f} MiB, shape "
                      f"{cfg[kind]['shape']}), lake {cfg[kind]['path']}")  # fmt: skip
            goals, problems = [], []
            for kind in args.kinds:
                ops = [o for o in OPS[kind] if args.ops is None or o in args.ops.split(",")]
                opens: dict[str, dict] = {}
                for op in ops:
                    rows = {}
                    for tool in tools:
                        job = {**cfg, "tool": tool, "kind": kind, "op": op}
                        rows[tool] = run_worker(job, proxy)
                    if op != "open":
                        seen = {t: r["digests"] for t, r in rows.items()}
                        if (
                            any(len(d) != 1 for d in seen.values())
                            or len({d[0] for d in seen.values()}) != 1
                        ):
                            problems.append(f"{kind}/{op}: values differ across tools: {seen}")
                            continue
                    if op == "open":
                        opens = {t: summary(r, "open") for t, r in rows.items()}
                    goals += table(kind, op, rows, opens, args.scale)
        finally:
            proxy.stop()
            moto.stop()
    print("\nthe lake's goals (issue 18):")
    for line in goals:
        print("  " + line)
    print(provenance(load0[0], f"scale {args.scale}, {args.repeat} warm runs"))
    for problem in problems:
        print("FAILED:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
