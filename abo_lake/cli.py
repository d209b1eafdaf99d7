"""The ``abo-lake`` command: a thin layer over the library.

Every lake command takes ``--lake URL`` (default: ``$ABO_LAKE_URL`` or the local lake) and
``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abo_lake.errors import AboLakeError

__all__ = ["main", "reference"]


def _Formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=92)


def _lake(args: argparse.Namespace):
    from abo_lake.lake import open_lake

    options = json.loads(args.storage_options) if args.storage_options else {}
    return open_lake(args.lake, **options)


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
    s = _lake(args).stats()
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


def _cmd_gc(args: argparse.Namespace) -> int:
    report = _lake(args).gc(grace=args.grace, dry_run=args.dry_run)
    from dataclasses import asdict

    _emit(args, asdict(report), str(report))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from abo_lake.synthetic import synthesize

    paths = synthesize(args.kind, args.out, scale=args.scale, seed=args.seed)
    total = sum(p.stat().st_size for p in paths if p.is_file())
    data = [{"path": str(p), "bytes": p.stat().st_size} for p in paths if p.is_file()]
    text = "\n".join(f"{p.stat().st_size / 1e6:9.2f} MB  {p}" for p in paths if p.is_file())
    _emit(args, data, f"{text}\nwrote {len(paths)} files, {total / 1e6:.1f} MB")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from abo_lake import jobs
    from abo_lake.writer import WriteOptions

    specs, release, metadata = args.sources, args.release, args.metadata or []
    options = None
    if args.spec:
        import yaml

        spec = yaml.safe_load(Path(args.spec).read_text())
        base = Path(args.spec).parent
        specs = specs or [str(base / s) if "://" not in s else s for s in spec["sources"]]
        release = release or spec["release"]
        metadata = metadata or [str(base / m) for m in spec.get("metadata", [])]
        try:
            options = WriteOptions.from_spec(spec)
        except ValueError as err:
            raise SystemExit(f"abo-lake convert: {args.spec}: {err}") from None
    if not specs or not release:
        raise SystemExit("abo-lake convert: give SOURCES and --release, or --spec FILE")
    report = jobs.run(
        specs,
        _lake(args),
        release,
        scheduler=args.scheduler,
        workers=args.workers,
        publish=args.publish,
        metadata=metadata,
        source_options=json.loads(args.source_options) if args.source_options else None,
        write_options=options,
    )
    _emit(args, report.to_dict(), report.summary())
    return 0 if not report.failures else 1


def _cmd_catalog(args: argparse.Namespace) -> int:
    from abo_lake import tables

    rel = _lake(args).release(args.release)
    query = {}
    for item in args.search or []:
        key, _, value = item.partition("=")
        query[key] = tables.parse_value(value)
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="abo-lake",
        description="Allen Brain Observatory data as a versioned, chunked data lake.",
        formatter_class=_Formatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def lake_cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)
        c.add_argument(
            "--lake",
            default=None,
            help="lake URL (default: $ABO_LAKE_URL or the local lake folder)",
        )
        c.add_argument(
            "--storage-options", default=None, help="JSON storage options, e.g. '{\"anon\": true}'"
        )
        c.add_argument("--json", action="store_true", help="machine-readable output")
        return c

    c = lake_cmd("demo", "the whole story on a local lake: sources -> releases -> analysis")
    c.add_argument("--work", default="abo_lake_work", help="folder for sources, lake, figures")
    c.set_defaults(func=_cmd_demo)

    c = sub.add_parser(
        "synth",
        help="write synthetic Allen-format source files",
        description="write synthetic Allen-format source files",
        formatter_class=_Formatter,
    )
    c.add_argument("kind", help="vbo-ophys, vc2p-ophys, vcn-ecephys, celltypes, ccf, connectivity")
    c.add_argument("--out", required=True)
    c.add_argument("--scale", default="tiny", choices=["tiny", "realistic"])
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_synth)

    c = lake_cmd("convert", "convert source files into a release (on dask.distributed)")
    c.add_argument("sources", nargs="*", help="files, folders or globs (local or s3://)")
    c.add_argument("--release", default=None)
    c.add_argument("--spec", default=None, help="a job specification YAML (conversion/)")
    c.add_argument("--metadata", nargs="*", help="project metadata CSVs joined by id")
    c.add_argument("--scheduler", default=None, help="address of a running dask scheduler")
    c.add_argument(
        "--source-options", default=None, help="JSON storage options for s3:// (etc.) sources"
    )
    c.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    c.add_argument("--publish", action=argparse.BooleanOptionalAction, default=True)
    c.set_defaults(func=_cmd_convert)

    lake_cmd("releases", "list published releases").set_defaults(func=_cmd_releases)
    c = lake_cmd("diff", "what changed between two releases, per dataset and array")
    c.add_argument("a")
    c.add_argument("b")
    c.set_defaults(func=_cmd_diff)
    lake_cmd("stats", "logical vs stored bytes, dedup ratio").set_defaults(func=_cmd_stats)
    c = lake_cmd("verify", "re-hash every chunk a release references (exit 1 on a problem)")
    c.add_argument("release", nargs="?", default="latest")
    c.set_defaults(func=_cmd_verify)
    c = lake_cmd("gc", "delete chunks and manifests no release references")
    c.add_argument("--grace", default="1h")
    c.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False)
    c.set_defaults(func=_cmd_gc)
    c = lake_cmd("catalog", "search a release's metadata tables")
    c.add_argument("--release", default="latest")
    c.add_argument("--table", default="ophys_experiments")
    c.add_argument("--columns", nargs="*", help="columns to show (default: the usual ones)")
    c.add_argument(
        "--search",
        nargs="*",
        metavar="KEY=VALUE",
        help="e.g. cre_line=Sst-IRES-Cre imaging_depth=100:300",
    )
    c.set_defaults(func=_cmd_catalog)
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
    """Entry point of ``abo-lake``."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (AboLakeError, FileNotFoundError, ValueError) as err:
        print(f"abo-lake {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
