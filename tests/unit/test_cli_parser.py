"""The command line's own surface: every flag explains itself."""

from __future__ import annotations

import argparse

from shipper.cli import build_parser


def every_action(parser: argparse.ArgumentParser, where: str = "shipper") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"{where} {name}", argparse.Action([], name, help=helps.get(name))))
                found += every_action(sub, f"{where} {name}")
        else:
            found.append((where, action))
    return found


def test_every_command_and_flag_has_help_text() -> None:
    actions = every_action(build_parser())
    assert len(actions) > 30  # the walk reached the subcommands
    missing = [f"{where}: {a.option_strings or a.dest}" for where, a in actions if not a.help]
    assert missing == []
