"""The config file as text: reading it, finding the line that sets a key, and saying what is wrong with the
configuration in shipper's words (the file, the line or the variable, the key as written, what was expected).

Not responsible for what the keys mean (the models) or how overrides merge (configfile.py).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from shipper.configfile import Loc, models_of, node_at, slot, tags_of
from shipper.errors import ConfigError

# -- the file ----------------------------------------------------------------------------------------------------


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc


_KEY_PART = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")


def _parts(dotted: str) -> list[str]:
    return [p.strip("\"'") for p in re.findall(_KEY_PART, dotted)]


def line_of(text: str, loc: Loc) -> int | None:
    """The line setting `loc`, or else the line opening the deepest table on its way; None when the file has neither.
    A plain reading of table headers and `key =` lines: enough to point at a key, not a TOML parser."""
    table: list[str | int] = []
    counts: dict[tuple[str, ...], int] = {}
    best: tuple[int, int] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = _parts(header.group(2))
            table = list(names)
            if header.group(1) == "[[":
                index = counts.get(tuple(names), -1) + 1
                counts[tuple(names)] = index
                table.append(index)
            here: list[str | int] = table
        elif assign := _ASSIGN.match(line):
            here = [*table, *_parts(assign.group(1))]
        else:
            continue
        depth = len(here)
        if tuple(here) == loc[:depth] and (best is None or depth > best[0]):
            best = (depth, number)
    return best[1] if best else None


# -- errors ------------------------------------------------------------------------------------------------------

_SHOW_INPUT = frozenset(
    {"literal_error", "float_parsing", "int_parsing", "bool_parsing", "int_from_float", "greater_than",
     "greater_than_equal", "less_than", "less_than_equal", "float_type", "int_type", "bool_type"}
)  # fmt: skip
_PLAIN = {
    "missing": "required, not set",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
}


@dataclass
class Origin:
    """Where the raw data came from, to point each error at the line or the variable that set the key."""

    root: type[BaseModel]
    data: dict[str, Any]
    path: Path | None = None
    text: str = ""
    env: dict[Loc, str] = field(default_factory=dict)


def _clean_loc(loc: Sequence[str | int], data: Any) -> Loc:
    """The key as the operator writes it: pydantic puts a union member's tag in the path (`sinks.x.http.url`)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else None
    return tuple(out)


def _message(item: Any, loc: Loc, origin: Origin) -> tuple[Loc, str]:
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        found = slot(origin.root, loc, origin.data)
        tags = [t for m in (models_of(found.annotation, None) if found else []) for t in tags_of(m)]
        given = f"{ctx['tag']!r} is not one of " if kind == "union_tag_invalid" else "required, one of "
        return (*loc, "type"), given + ", ".join(tags)
    if kind == "value_error":
        return loc, str(ctx.get("error", item["msg"]))
    if kind == "extra_forbidden":
        table = slot(origin.root, loc[:-1], origin.data)
        models = models_of(table.annotation, node_at(origin.data, loc[:-1])) if table else []
        close = difflib.get_close_matches(str(loc[-1]), list(models[0].model_fields) if models else [], n=1)
        return loc, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    message = _PLAIN.get(kind) or re.sub(r"^Input should be ", "expected ", item["msg"])
    if kind in _SHOW_INPUT and isinstance(item.get("input"), str | int | float):
        message += f", got {item['input']!r}"
    return loc, message


def _where(loc: Loc, origin: Origin) -> str:
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in origin.env:
            return f"{origin.env[loc[:depth]]}: "
    line = line_of(origin.text, loc) if origin.text else None
    if line:
        return f"line {line}: "
    below = [name for key, name in origin.env.items() if key[: len(loc)] == loc]  # a table the variables made
    return f"{', '.join(below)}: " if below else ""


def describe(error: ValidationError, origin: Origin) -> str:
    """One line naming the file, then each problem: line or variable, key, what was expected."""
    problems = []
    for item in error.errors():
        loc, message = _message(item, _clean_loc(item["loc"], origin.data), origin)
        # A check across sections (nothing would listen, two sinks serve one vendor) names its keys itself.
        problems.append(f"{_where(loc, origin)}{'.'.join(map(str, loc))}: {message}" if loc else message)
    source = str(origin.path) if origin.path else "(built-in defaults)"
    return f"invalid config {source}: " + "; ".join(problems)


# -- printing the effective configuration ------------------------------------------------------------------------

MASK = "********"
# Values under such names are secrets (a header `X-Api-Key`, a token); `*_env` and `*_file` only say where one is.
_SECRET_NAME = re.compile(r"key|token|secret|password|authorization", re.IGNORECASE)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _mask(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, name) for v in value]
    if isinstance(value, str) and value and _SECRET_NAME.search(name) and not name.endswith(("_env", "_file")):
        return MASK
    return value


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else orjson.dumps(name).decode()


def _value(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and name.endswith("_mode"):
        return f"0o{value:o}"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # JSON's string escapes are a subset of TOML's basic strings'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, name) for v in value) + "]"
    items = (f"{_key(k)} = {_value(v, k)}" for k, v in value.items() if v is not None)
    return "{" + ", ".join(items) + "}"


def _tables(data: dict[str, Any], prefix: tuple[str, ...], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if prefix and (scalars or len(scalars) == len(data)):  # `[sinks]` alone, before its `[sinks.NAME]`, says nothing
        lines.append(f"\n[{'.'.join(map(_key, prefix))}]")
    for name, value in scalars.items():
        lines.append(f"# {_key(name)}: unset" if value is None else f"{_key(name)} = {_value(value, name)}")
    for name, value in data.items():
        if isinstance(value, dict):
            _tables(value, (*prefix, name), lines)


def effective_toml(config: BaseModel) -> str:
    """The configuration as validated (every override applied, paths as they will be opened) in TOML that loads
    back to the same configuration, with every secret masked."""
    lines: list[str] = []
    _tables(_mask(config.model_dump(mode="json"), ""), (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"
