"""Command line: parse arguments, load the config, call into the daemon or the spool views. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from shipper import __version__
from shipper.config import Config, load_config
from shipper.errors import ShipperError
from shipper.logs import setup_logging
from shipper.sinks import check_secrets
from shipper.spool import dlq
from shipper.spool.salvage import salvage
from shipper.status import gather, render_table

Command = Callable[[Config, argparse.Namespace], int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipper", description="Durable local shipper for LLM observability logs.")
    parser.add_argument("--version", action="version", version=f"shipper {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str, run: Command
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=text, description=text)
        sub.add_argument("--config", type=Path, help="TOML file (default: the built-in configuration)")
        sub.set_defaults(run=run)
        return sub

    run = command(commands, "run", "run the daemon in the foreground", _run)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides daemon.log_level")
    run.add_argument("--log-format", choices=["json", "text"], default="json")
    status = command(commands, "status", "per-sink state; works with the daemon running or stopped", _status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS", help="refresh in place")
    command(commands, "check-config", "validate the configuration and exit", _check_config)

    dead = commands.add_parser("dlq", help="inspect, replay and purge dead letters").add_subparsers(
        dest="dlq_command", required=True
    )
    listing = command(dead, "list", "list dead letters", _dlq_list)
    listing.add_argument("--sink")
    listing.add_argument("--since", help="ISO time or a duration ago (30m, 2h, 7d)")
    listing.add_argument("--json", action="store_true")
    show = command(dead, "show", "one dead letter in full", _dlq_show)
    show.add_argument("id", type=int)
    replay = command(dead, "replay", "put dead letters back in the queue, in their original order", _dlq_replay)
    replay.add_argument("ids", type=int, nargs="*", metavar="ID")
    replay.add_argument("--sink")
    replay.add_argument("--since", help="only those that failed since: ISO time or a duration ago")
    replay.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="send them with the API key in environment variable VAR, not the one the app sent (after reason auth)",
    )
    purge = command(dead, "purge", "delete dead letters", _dlq_purge)
    purge.add_argument("--older-than", help="only those that failed longer ago than this (30m, 2h, 7d)")
    purge.add_argument("--sink")
    purge.add_argument("--all", action="store_true", help="delete all (required without --older-than)")
    spool = commands.add_parser("spool", help="spool maintenance").add_subparsers(dest="spool_command", required=True)
    salvage = command(spool, "salvage", "re-queue every readable row of a damaged spool file", _spool_salvage)
    salvage.add_argument("file", type=Path, help="the damaged file (spool.db.damaged-…)")
    return parser


def _run(config: Config, args: argparse.Namespace) -> int:
    from shipper.daemon import run

    setup_logging(args.log_level or config.daemon.log_level, args.log_format)
    return run(config, args.config, args.log_level)


def _status(config: Config, args: argparse.Namespace) -> int:
    try:
        while True:
            view = gather(config)
            text = orjson.dumps(view, option=orjson.OPT_INDENT_2).decode() if args.json else render_table(view)
            if args.watch is None:
                print(text)
                return 0
            print("\x1b[H\x1b[2J" + text, flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:  # the way out of --watch
        return 0


def _check_config(config: Config, args: argparse.Namespace) -> int:
    check_secrets(config.sinks, os.environ)
    print(f"ok: {len(config.sinks)} sink(s): {', '.join(config.sinks)}")
    return 0


def _dlq_list(config: Config, args: argparse.Namespace) -> int:
    since = dlq.parse_since(args.since) if args.since else None
    rows = dlq.list_dead(config.spool.path, args.sink, since)
    if args.json:
        print(orjson.dumps([{k: v for k, v in r.to_dict().items() if k != "body"} for r in rows]).decode())
        return 0
    print(f"{'ID':>8}  {'SINK':<12} {'FAILED':<20} {'STATUS':>6}  {'REQUEST':<40} REASON")
    for r in rows:
        failed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.failed_at))
        request = f"{r.method} {r.path}"[:40]
        print(f"{r.id:>8}  {r.sink:<12} {failed:<20} {r.status or '-':>6}  {request:<40} {r.reason[:80]}")
    print(f"{len(rows)} dead letter(s)")
    return 0


def _dlq_show(config: Config, args: argparse.Namespace) -> int:
    print(orjson.dumps(dlq.show_dead(config.spool.path, args.id).to_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


def _dlq_replay(config: Config, args: argparse.Namespace) -> int:
    since = dlq.parse_since(args.since) if args.since else None

    def progress(done: int, total: int) -> None:
        if total > dlq.CHUNK:
            print(f"replayed {done}/{total}", file=sys.stderr, flush=True)

    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ShipperError(f"--api-key-env: environment variable {args.api_key_env} is not set")
    count = dlq.replay(config.spool.path, args.ids, args.sink, since, progress, api_key)
    rekeyed = f", with the API key from ${args.api_key_env}" if api_key else ""
    print(f"replayed {count} dead letter(s) into the queue{rekeyed}")
    return 0


def _dlq_purge(config: Config, args: argparse.Namespace) -> int:
    if args.older_than is None and not args.all:
        raise ShipperError("say --older-than DURATION, or --all to delete every dead letter")
    older = dlq.parse_duration(args.older_than) if args.older_than else None
    print(f"purged {dlq.purge(config.spool.path, older, args.sink)} dead letter(s)")
    return 0


def _spool_salvage(config: Config, args: argparse.Namespace) -> int:
    def progress(what: str, count: int) -> None:
        print(f"{what}: {count}", file=sys.stderr, flush=True)

    report = salvage(args.file, config.spool.path, progress)
    print(
        f"salvaged {args.file} into {config.spool.path}: {report.requeued} row(s) re-queued,"
        f" {report.dead_letters} dead letter(s) kept, {report.unreadable_stretches} unreadable stretch(es) skipped"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        result: int = args.run(config, args)
        return result
    except ShipperError as exc:
        print(f"shipper: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
