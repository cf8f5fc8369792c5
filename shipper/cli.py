"""Command line: parse arguments, load the config, call into the daemon or the spool views. No logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from shipper import __version__
from shipper.config import Config, load_config
from shipper.errors import ShipperError
from shipper.logs import setup_logging
from shipper.spool.stats import read_stats
from shipper.status import render_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipper", description="Durable local shipper for LLM observability logs.")
    parser.add_argument("--version", action="version", version=f"shipper {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", type=Path, help="TOML file (default: the built-in configuration)")
        return sub

    run = with_config("run", "run the daemon in the foreground")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides daemon.log_level")
    run.add_argument("--log-format", choices=["json", "text"], default="json")
    status = with_config("status", "queue depth per sink (works with the daemon running or stopped)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    with_config("check-config", "validate the configuration and exit")
    return parser


def _run(config: Config, args: argparse.Namespace) -> int:
    from shipper.daemon import run

    setup_logging(args.log_level or config.daemon.log_level, args.log_format)
    return run(config, args.config)


def _status(config: Config, args: argparse.Namespace) -> int:
    stats = read_stats(config.spool.path, list(config.sinks))
    if args.json:
        sys.stdout.write(orjson.dumps(stats.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_table(stats) + "\n")
    return 0


def _check_config(config: Config, args: argparse.Namespace) -> int:
    sys.stdout.write(f"ok: {len(config.sinks)} sink(s): {', '.join(config.sinks)}\n")
    return 0


COMMANDS = {"run": _run, "status": _status, "check-config": _check_config}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        return COMMANDS[args.command](config, args)
    except ShipperError as exc:
        sys.stderr.write(f"shipper: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
