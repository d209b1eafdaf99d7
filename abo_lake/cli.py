"""The ``abo-lake`` command: a thin layer over the library.

Every lake command takes ``--lake URL`` (default: ``$ABO_LAKE_URL`` or the local lake) and
``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abo_lake import __version__, release_tables
from abo_lake.errors import AboLakeError
from abo_lake.kinds import FORMATS
from abo_lake.storage import describe_storage_error

__all__ = ["main", "reference"]

#: Top-level keys of a job specification (``abo-lake convert --spec FILE``).
SPEC_KEYS = ("release", "sources", "metadata", "codec", "chunk_mb")


class UsageError(Exception):
    """Bad input found after parsing: reported like argparse's own errors (exit 2)."""


def _json_object(text: str) -> dict[str, Any]:
    """``--storage-options``/``--source-options``: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"anon\": true}}', not {text!r}"
        )
    return value


def _positive_int(text: str) -> int:
    """``--workers N``: at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def _search_term(text: str) -> tuple[str, str]:
    """``--search KEY=VALUE``."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (e.g. cre_line=Vip or imaging_depth=100:300)"
        )
    return key.strip(), value


def _Formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=92)


def _lake(args: argparse.Namespace, *, must_exist: bool = True):
    """The lake of ``--lake``; unless ``must_exist`` is false (a job creates it), a URL with
    nothing there (a misspelt bucket or folder) is an error, not an empty lake."""
    from abo_lake.lake import open_lake

    lake = open_lake(args.lake, **(args.storage_options or {}))
    if must_exist and not lake.storage.root_exists():
        raise FileNotFoundError(
            f"no lake at {lake.url}: nothing is there (check the bucket and folder); "
            "`abo-lake convert` or `abo-lake demo` creates a lake"
        )
    return lake


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=1, default=str) if args.json else text)


def _cmd_releases(args: argparse.Namespace) -> int:
    lake = _lake(args)
    rows = [lake.release(n) for n in lake.releases()]
    data = [
        {
            "name": r.name,
            "root": r.root,
            "created": r.record.created,
            "datasets": len(r.datasets()),
            "bytes": r.nbytes,
        }
        for r in rows
    ]
    text = (
        "\n".join(
            f"{r.pin:28} {r.record.created[:19]}  {len(r.datasets()):5} datasets  "
            f"{r.nbytes / 1e6:10.1f} MB"
            for r in rows
        )
        or f"no releases in {lake.url}"
    )
    _emit(args, data, text)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    diff = _lake(args).diff(args.a, args.b)
    _emit(args, diff.to_dict(), str(diff))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    s = _lake(args).stats(storage=True)
    text = (
        f"{s['lake']}: {len(s['releases'])} releases, logical {s['logical_bytes'] / 1e6:.1f}"
        f" MB, stored {s['stored_bytes'] / 1e6:.1f} MB in {s['chunk_objects']} chunk "
        f"objects (+{s['manifest_bytes'] / 1e6:.2f} MB manifests); dedup ratio "
        f"{s['dedup_ratio']:.2f}"
    )
    _emit(args, s, text)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    report = _lake(args).verify(args.release)
    from dataclasses import asdict

    _emit(args, {**asdict(report), "ok": report.ok}, str(report))
    return 0 if report.ok else 1


def _cmd_repair(args: argparse.Namespace) -> int:
    done = _lake(args).repair(args.release)
    text = "\n".join(f"wrote {key} (was {state})" for key, state in done) or (
        f"release {args.release} is complete; nothing to repair"
    )
    _emit(args, {"repaired": [{"key": k, "state": s} for k, s in done]}, text)
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    report = _lake(args).gc(grace=args.grace, dry_run=not args.delete)
    from dataclasses import asdict

    text = str(report)
    if report.dry_run:
        text += "\n(dry run: nothing was deleted; rerun with --delete to delete)"
    _emit(args, asdict(report), text)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from abo_lake.synthetic import synthesize

    paths = synthesize(args.kind, args.out, scale=args.scale, seed=args.seed)
    total = sum(p.stat().st_size for p in paths if p.is_file())
    data = [{"path": str(p), "bytes": p.stat().st_size} for p in paths if p.is_file()]
    text = "\n".join(f"{p.stat().st_size / 1e6:9.2f} MB  {p}" for p in paths if p.is_file())
    _emit(args, data, f"{text}\nwrote {len(paths)} files, {total / 1e6:.1f} MB")
    return 0


def _load_spec(path: str) -> dict[str, Any]:
    """Read and check a job specification; every problem names the file (UsageError)."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UsageError(f"cannot read job specification {path}: {err.strerror or err}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path} is not valid YAML{where}: {problem or err}") from None
    if not isinstance(spec, dict):
        found = "an empty file" if spec is None else f"a {type(spec).__name__}"
        raise UsageError(
            f"{path}: a job specification is a YAML mapping with keys {', '.join(SPEC_KEYS)}; "
            f"found {found}"
        )
    unknown = sorted(str(k) for k in spec if k not in SPEC_KEYS)
    if unknown:
        raise UsageError(
            f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SPEC_KEYS)}"
        )
    release = spec.get("release")
    if release is not None and not isinstance(release, str | list | dict | bool):
        # `release: 2026.10` is the float 2026.1 to YAML, `2026-10-01` a date: take the name
        # exactly as written
        release = yaml.load(text, Loader=yaml.BaseLoader)["release"]
    if release is not None and (not isinstance(release, str) or not release.strip()):
        raise UsageError(f"{path}: release must be a release name, not {release!r}")
    spec["release"] = release
    codec = spec.get("codec")
    if codec is not None and not isinstance(codec, dict):
        raise UsageError(
            f"{path}: codec must be a mapping like {{cname: zstd, clevel: 3, shuffle: shuffle}}, "
            f"not {codec!r}"
        )
    base = Path(path).parent
    for key in ("sources", "metadata"):
        value = spec.get(key)
        if value is None:
            spec[key] = []
            continue
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise UsageError(f"{path}: {key} must be a path/URL or a list of them, not {value!r}")
        spec[key] = [i if "://" in i else str(base / i) for i in items]
    return spec


def _cmd_convert(args: argparse.Namespace) -> int:
    from abo_lake import jobs
    from abo_lake.writer import WriteOptions

    specs, release, metadata = args.sources, args.release, args.metadata or []
    options = None
    if args.spec:
        spec = _load_spec(args.spec)
        missing = [
            f"'{key}:' (or {flag} on the command line)"
            for key, flag, given in [
                ("release", "--release NAME", release or spec["release"]),
                ("sources", "SOURCES", specs or spec["sources"]),
            ]
            if not given
        ]
        if missing:
            raise UsageError(f"{args.spec}: no {' and no '.join(missing)}")
        specs = specs or spec["sources"]
        release = release or spec["release"]
        metadata = metadata or spec["metadata"]
        try:
            options = WriteOptions.from_spec(spec)
        except ValueError as err:
            raise UsageError(f"{args.spec}: {err}") from None
    elif not specs or not release:
        raise UsageError("give SOURCES and --release NAME, or --spec FILE")
    report = jobs.run(
        specs,
        _lake(args, must_exist=False),
        release,
        scheduler=args.scheduler,
        workers=args.workers or 2,
        publish=args.publish,
        metadata=metadata,
        source_options=args.source_options,
        write_options=options,
    )
    _emit(args, report.to_dict(), report.summary())
    return 0 if not report.failures else 1


def _cmd_catalog(args: argparse.Namespace) -> int:
    from abo_lake import tables

    rel = _lake(args).release(args.release)
    query = {key: tables.parse_value(value) for key, value in args.search or []}
    table = tables.search_table(rel, args.table, **query)
    shown = table
    if not args.json:
        columns = args.columns or [c for c in _BROWSE_COLUMNS if c in table.columns]
        shown = table[columns or list(table.columns[:8])]
    _emit(
        args,
        json.loads(table.to_json(orient="table")),
        shown.to_string(max_rows=50) if len(table) else "no matching rows",
    )
    return 0


#: Columns ``abo-lake catalog`` shows by default (all of them with --json or --columns).
_BROWSE_COLUMNS = [
    "cre_line",
    "targeted_structure",
    "imaging_depth",
    "session_type",
    "experience_level",
    "equipment_name",
    "specimen_id",
    "structure_abbrev",
    "injection_structures",
    "dataset_path",
]


def _cmd_demo(args: argparse.Namespace) -> int:
    from abo_lake.demo import run_demo

    run_demo(work=Path(args.work), lake_url=args.lake)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from abo_lake.web import serve

    serve(_lake(args), host=args.host, port=args.port, base_url=args.base_url)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="abo-lake",
        description="Allen Brain Observatory data as a versioned, chunked data lake.",
        epilog="Exit status: 0 on success, 1 when a command finds a problem (verify, a failed "
        "conversion), 2 on bad input.",
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)
        c.set_defaults(parser=c)
        return c

    def lake_cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = command(name, help)
        c.add_argument(
            "--lake",
            default=None,
            help="lake URL (default: $ABO_LAKE_URL or the local lake folder)",
        )
        c.add_argument(
            "--storage-options",
            type=_json_object,
            default=None,
            help="JSON storage options, e.g. '{\"anon\": true}'",
        )
        c.add_argument("--json", action="store_true", help="machine-readable output")
        return c

    c = lake_cmd("demo", "the whole story on a local lake: sources -> releases -> analysis")
    c.add_argument(
        "--work",
        default="abo_lake_work",
        help="folder for sources and figures, relative to the current directory "
        "(default: abo_lake_work)",
    )
    c.set_defaults(func=_cmd_demo)

    c = command("synth", "write synthetic Allen-format source files")
    c.add_argument(
        "kind",
        help="one of " + ", ".join(f.name for f in FORMATS.values() if f.synthetic),
    )
    c.add_argument("--out", required=True, help="folder to write the files to (created)")
    c.add_argument(
        "--scale",
        default="tiny",
        choices=["tiny", "realistic"],
        help="tiny: a few MB for tests and demos; realistic: sizes like the real files "
        "(default: tiny)",
    )
    c.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same seed gives the same files (default: 0)",
    )
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=_cmd_synth)

    c = lake_cmd("convert", "convert source files into a release (on dask.distributed)")
    c.add_argument("sources", nargs="*", help="files, folders or globs (local or s3://)")
    c.add_argument(
        "--release",
        default=None,
        help="name of the release, e.g. 2026.1 (required unless --spec gives it); if it "
        "is already published, a rerun that makes exactly it succeeds, any other is refused",
    )
    c.add_argument(
        "--spec",
        default=None,
        help="a job specification YAML (see conversion/); SOURCES, --release and --metadata "
        "given here override its values",
    )
    c.add_argument(
        "--metadata",
        nargs="+",
        action="extend",
        help="project metadata CSVs joined by id (repeatable: --metadata A --metadata B joins "
        "both); the report says how many rows of each matched",
    )
    cluster = c.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler",
        default=None,
        help="address of a running dask scheduler (default: start a LocalCluster)",
    )
    cluster.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes of the LocalCluster (default: 2)",
    )
    c.add_argument(
        "--source-options",
        type=_json_object,
        default=None,
        help="JSON storage options for s3:// (etc.) sources",
    )
    c.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publishing is the default: the release is published when every file "
        "converted; --no-publish only converts (a rerun resumes, until gc drops unpublished "
        "work older than its grace period)",
    )
    c.set_defaults(func=_cmd_convert)

    lake_cmd("releases", "list published releases").set_defaults(func=_cmd_releases)
    c = lake_cmd("diff", "what changed between two releases, per dataset, array and table")
    c.add_argument("a", help="the older release (name or name@root)")
    c.add_argument("b", help="the newer release (name or name@root)")
    c.set_defaults(func=_cmd_diff)
    lake_cmd("stats", "logical vs stored bytes, dedup ratio").set_defaults(func=_cmd_stats)
    c = lake_cmd(
        "verify",
        "re-hash every object a release references (chunks, tables) and compare its catalogs "
        "with the record (exit 1 on a problem, or if the release is incomplete)",
    )
    c.add_argument("release", nargs="?", default="latest", help="release (default: latest)")
    c.set_defaults(func=_cmd_verify)
    c = lake_cmd(
        "repair",
        "complete a published release whose catalog or root-catalog entry is missing, stale "
        "or altered (e.g. its publisher was killed after writing its record)",
    )
    c.add_argument("release", help="release name")
    c.set_defaults(func=_cmd_repair)
    c = lake_cmd(
        "gc",
        "find (with --delete: delete) chunks and manifests no release references; "
        "a dry run by default",
    )
    c.add_argument(
        "--grace",
        default="1h",
        help="keep objects and open stages younger than this, e.g. 90s, 30m, 1h, 2d (default: 1h)",
    )
    mode = c.add_mutually_exclusive_group()
    mode.add_argument(
        "--delete", action="store_true", help="delete what is found (default: only report it)"
    )
    mode.add_argument(
        "--dry-run", action="store_true", help="only report what would be deleted (the default)"
    )
    c.set_defaults(func=_cmd_gc)
    c = lake_cmd("catalog", "search a release's metadata tables")
    c.add_argument(
        "--release", default="latest", help="release name or name@root (default: latest)"
    )
    c.add_argument(
        "--table",
        default="ophys_experiments",
        help="metadata table (default: ophys_experiments): "
        + ", ".join(release_tables.TABLE_NAMES),
    )
    c.add_argument("--columns", nargs="*", help="columns to show (default: the usual ones)")
    c.add_argument(
        "--search",
        nargs="*",
        type=_search_term,
        metavar="KEY=VALUE",
        help="e.g. cre_line=Vip imaging_depth=100:300 (substring, lo:hi range, a,b list)",
    )
    c.set_defaults(func=_cmd_catalog)
    c = lake_cmd("serve", "a local, read-only web app over the lake: releases, search, plots")
    c.add_argument("--port", type=_positive_int, default=8050, help="TCP port (default: 8050)")
    c.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    c.add_argument(
        "--base-url",
        default="",
        help="URL prefix when behind a proxy, e.g. /user/NAME/proxy/8050 for "
        "jupyter-server-proxy (default: none)",
    )
    c.set_defaults(func=_cmd_serve)
    return p


def reference() -> str:
    """The CLI reference as Markdown, from each command's ``--help`` (kept in the README)."""
    parser = _parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["```", parser.format_help().rstrip(), "```"]
    for name, command in sub.choices.items():
        parts += ["", f"### `abo-lake {name}`", "", "```", command.format_help().rstrip(), "```"]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``abo-lake``: 0 on success, 1 on a problem found, 2 on bad input."""
    args = _parser().parse_args(argv)
    previous = _terminate_as_interrupt()
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print(
            f"abo-lake {args.command}: interrupted; nothing unfinished was published (a "
            "release is published whole or not at all): run the same command again to resume",
            file=sys.stderr,
        )
        return 130  # 128 + SIGINT
    except UsageError as err:
        args.parser.error(str(err))  # usage and message on stderr, exit 2
    except (AboLakeError, FileNotFoundError, PermissionError, ValueError) as err:
        print(f"abo-lake {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`abo-lake catalog --json | head`): stop quietly, and keep
        # Python from failing again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    except Exception as err:
        problem = describe_storage_error(err)
        if problem is None:
            raise
        print(f"abo-lake {args.command}: error: {problem}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 2  # not reached: parser.error exits


def _terminate_as_interrupt() -> Any:
    """Treat SIGTERM (what batch schedulers and Kubernetes send) like Ctrl-C, so an open
    stage is discarded and the cluster closed on the way out; the previous handler, or None
    off the main thread (where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
