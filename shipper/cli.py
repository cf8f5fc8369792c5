"""Command line: parse arguments, load the config, call into the daemon or the spool views. No logic of its own.

Every process of a shipper starts here (`shipper run`, and the supervisor's `shipper run --role ...`), so what
only one command needs and costs memory is imported by that command: the status view (its client brings aiohttp,
~10 MB, which the supervisor otherwise never loads) and the sinks' secret check (the sinks, aiohttp again).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from shipper import __version__
from shipper.config import Config, load_config
from shipper.configfile import ConfigSource, find_config
from shipper.configtext import effective_toml
from shipper.cores import usable_cores
from shipper.errors import ShipperError
from shipper.logs import rfc3339, setup_logging
from shipper.spool import dlq
from shipper.spool.reader import DeadRow
from shipper.spool.salvage import salvage

Command = Callable[[Config, ConfigSource, argparse.Namespace], int]
# A refresh reads the spool and asks the daemon; more often than this is a busy loop, not a closer look.
WATCH_FLOOR = 0.5


def _watch_interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and seconds >= WATCH_FLOOR):
        raise argparse.ArgumentTypeError(f"refresh at most every {WATCH_FLOOR:g} seconds, not {text}")
    return seconds


def _command(
    parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str, run: Command
) -> argparse.ArgumentParser:
    sub = parent.add_parser(name, help=text, description=text)
    sub.add_argument(
        "--config",
        type=Path,
        help="TOML file (default: $SHIPPER_CONFIG, else /etc/shipper/shipper.toml if it exists, else built-in)",
    )
    sub.set_defaults(run=run)
    return sub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipper", description="Durable local shipper for LLM observability logs.")
    parser.add_argument("--version", action="version", version=f"shipper {__version__}", help="print the version")
    commands = parser.add_subparsers(dest="command", required=True)
    run = _command(commands, "run", "run the daemon in the foreground", _run)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides daemon.log_level")
    run.add_argument("--log-format", choices=["json", "text"], default="json", help="JSON lines (default) or text")
    run.add_argument(
        "--role",
        choices=["all", "ingest", "delivery", "relay"],
        help="run one role only (a supervisor starts ingest and delivery; relay consumes [relay]'s stream;"
        " default: [daemon] ingest_workers / delivery_workers)",
    )
    status = _command(commands, "status", "per-sink state; works with the daemon running or stopped", _status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--watch",
        type=_watch_interval,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help=f"refresh in place every SECONDS (default 2, at least {WATCH_FLOOR:g})",
    )
    check = _command(commands, "check-config", "validate the configuration and exit", _check_config)
    check.add_argument("--print", action="store_true", help="print the effective configuration (secrets masked)")
    _dlq_commands(commands.add_parser("dlq", help="inspect, replay and purge dead letters"))
    spool = commands.add_parser("spool", help="spool maintenance").add_subparsers(dest="spool_command", required=True)
    salvage = _command(spool, "salvage", "re-queue every readable row of a damaged spool file", _spool_salvage)
    salvage.add_argument("file", type=Path, help="the damaged file (spool.db.damaged-…)")
    return parser


def _dlq_commands(parser: argparse.ArgumentParser) -> None:
    dead = parser.add_subparsers(dest="dlq_command", required=True)
    listing = _command(dead, "list", "list dead letters", _dlq_list)
    listing.add_argument("--sink", help="only this sink's")
    listing.add_argument("--since", help="ISO time or a duration ago (30m, 2h, 7d)")
    listing.add_argument("--json", action="store_true", help="machine-readable output (without bodies)")
    show = _command(dead, "show", "one dead letter in full", _dlq_show)
    show.add_argument("id", type=int, help="the dead letter's id (from dlq list)")
    replay = _command(dead, "replay", "put dead letters back in the queue, in their original order", _dlq_replay)
    replay.add_argument("ids", type=int, nargs="*", metavar="ID", help="these dead letters (default: all matching)")
    replay.add_argument("--sink", help="only this sink's")
    replay.add_argument("--since", help="only those that failed since: ISO time or a duration ago")
    replay.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="send them with the API key in environment variable VAR, not the one the app sent (after reason auth)",
    )
    purge = _command(dead, "purge", "delete dead letters", _dlq_purge)
    purge.add_argument("--older-than", help="only those that failed longer ago than this (30m, 2h, 7d)")
    purge.add_argument("--sink", help="only this sink's")
    purge.add_argument("--all", action="store_true", help="delete all (required without --older-than)")


def _run(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    setup_logging(args.log_level or config.daemon.log_level, args.log_format)
    workers = config.daemon.workers(usable_cores())
    if args.role is None and workers != (0, 0):
        from shipper.supervisor import run_supervisor

        options = [*(["--config", str(source.path)] if source.path else []), "--log-format", args.log_format]
        options += ["--log-level", args.log_level] if args.log_level else []
        return run_supervisor(config, source.path, args.log_level, options, workers)
    from shipper.daemon import run
    from shipper.roles import Role
    from shipper.supervisor.child import die_with_parent, supervised_listeners

    supervised = supervised_listeners(os.environ)
    if supervised is None:
        return run(config, source.path, args.log_level, Role(args.role or "all"), supervised)
    die_with_parent(supervised[0])
    code = run(config, source.path, args.log_level, Role(args.role or "all"), supervised)
    # A role's process has closed its spool, sinks and listeners by now: skip the interpreter's teardown of every
    # module (a tenth of a second or more), which would count against the shipper's drain budget.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _status(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    from shipper.status import gather, render_table

    try:
        while True:
            view = gather(config)
            if args.json:
                view["config"] = {
                    "path": None if source.path is None else str(source.path),
                    "found_by": source.found_by,
                }
                text = orjson.dumps(view, option=orjson.OPT_INDENT_2).decode()
            else:
                text = f"{render_table(view)}\nconfig: {source.describe()}"
            if args.watch is None:
                print(text)
                return 0
            print("\x1b[H\x1b[2J" + text, flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:  # the way out of --watch
        return 0


def _check_config(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    from shipper.sinks import check_secrets

    check_secrets(config.sinks, os.environ)
    if config.relay is not None:
        from shipper.jetstream.options import connect_options

        connect_options("relay", config.relay, os.environ)
    if args.print:
        print(
            f"# config: {source.describe()}, with every SHIPPER__* override applied\n{effective_toml(config)}", end=""
        )
        return 0
    print(f"config: {source.describe()}")
    print(f"ok: {len(config.sinks)} sink(s): {', '.join(config.sinks)}")
    return 0


def _check_sink(config: Config, args: argparse.Namespace) -> None:
    if args.sink is not None:
        dlq.check_sink(config.spool.path, args.sink, list(config.sinks))


# A Freeplay path is ~130 characters; past this the middle goes, keeping the method and the tail that names the call.
REQUEST_WIDTH = 64


def _middle_cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    head = (width - 3) // 3
    return f"{text[:head]}...{text[len(text) - (width - 3 - head) :]}"


def _request(row: DeadRow) -> str:
    """What a dead letter asked for; a bundle (several records in one dead letter) says how many it holds."""
    return f"{row.method} {row.path}" + (f" ({row.records} records)" if row.records > 1 else "")


def _dlq_list(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    since = dlq.parse_since(args.since) if args.since else None
    _check_sink(config, args)
    rows = dlq.list_dead(config.spool.path, args.sink, since)
    if args.json:
        print(orjson.dumps([{k: v for k, v in r.to_dict().items() if k != "body"} for r in rows]).decode())
        return 0
    requests = [_middle_cut(_request(r), REQUEST_WIDTH) for r in rows]
    width = max(map(len, ["REQUEST", *requests]))
    print(f"{'ID':>8}  {'SINK':<12} {'FAILED':<20}  {'STATUS':>6}  {'REQUEST':<{width}}  REASON")
    for r, request in zip(rows, requests, strict=True):
        failed = rfc3339(r.failed_at, "seconds")
        print(f"{r.id:>8}  {r.sink:<12} {failed:<20}  {r.status or '-':>6}  {request:<{width}}  {r.reason[:80]}")
    print(f"{len(rows)} dead letter(s)")
    return 0


def _dlq_show(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    print(orjson.dumps(dlq.show_dead(config.spool.path, args.id).to_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


def _dlq_replay(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    since = dlq.parse_since(args.since) if args.since else None

    def progress(done: int, total: int) -> None:
        if total > dlq.CHUNK:
            print(f"replayed {done}/{total}", file=sys.stderr, flush=True)

    _check_sink(config, args)
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ShipperError(f"--api-key-env: environment variable {args.api_key_env} is not set")
    moved = dlq.replay(config.spool.path, args.ids, args.sink, since, progress, api_key)
    for old, new in moved:
        print(f"dead letter {old} -> row {new}")
    rekeyed = f", with the API key from ${args.api_key_env}" if api_key else ""
    print(f"replayed {len(moved)} dead letter(s) into the queue{rekeyed}")
    return 0


def _dlq_purge(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    if args.older_than is None and not args.all:
        raise ShipperError("say --older-than DURATION, or --all to delete every dead letter")
    older = dlq.parse_duration(args.older_than) if args.older_than else None
    _check_sink(config, args)
    print(f"purged {dlq.purge(config.spool.path, older, args.sink)} dead letter(s)")
    return 0


def _spool_salvage(config: Config, source: ConfigSource, args: argparse.Namespace) -> int:
    def progress(what: str, count: int) -> None:
        print(f"{what}: {count}", file=sys.stderr, flush=True)

    report = salvage(args.file, config.spool.path, progress)
    print(
        f"salvaged {args.file} into {config.spool.path}: {report.requeued} row(s) re-queued,"
        f" {report.dead_letters} dead letter(s) kept, {report.unreadable_stretches} unreadable stretch(es) skipped"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        source = find_config(args.config)
        config = load_config(source.path)
        result: int = args.run(config, source, args)
        return result
    except ShipperError as exc:
        print(f"shipper: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
