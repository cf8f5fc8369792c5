"""Turning a TOML file and `SHIPPER__*` variables into the raw data the config models validate, and saying what is
wrong with it in shipper's words: the file, the line, the key or the variable, and what was expected.

The models (shipper/config.py) say what each key is; this module walks them to learn a key's type, so an override
is read the way its field reads (a digits-only token stays a string, a mode is octal) and lands key by key in the
file's table or in the built-in default it overrides. Not responsible for validation itself (pydantic and the models).
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, SecretStr, ValidationError

from shipper.errors import ConfigError

ENV_PREFIX = "SHIPPER__"
Loc = tuple[str | int, ...]


class FilePath:
    """Marks a `str` field that names a file (`Annotated[str, FILE_PATH]`), so a relative one is read against the
    config file's directory like the `Path` fields are."""


FILE_PATH = FilePath()


# -- the models' types, as the raw data sees them ----------------------------------------------------------------


def _strip(annotation: Any) -> Any:
    """The type without Annotated metadata and without `| None`."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _models(annotation: Any, node: Any) -> list[type[BaseModel]]:
    """The models a table may be: one, or the members of a tagged union, the one its `type` names first."""
    bare = _strip(annotation)
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return [bare]
    if get_origin(bare) not in (Union, types.UnionType):
        return []
    members = [m for m in get_args(bare) if isinstance(m, type) and issubclass(m, BaseModel)]
    tag = node.get("type") if isinstance(node, dict) else None
    return sorted(members, key=lambda m: tag not in tags_of(m))


def tags_of(model: type[BaseModel]) -> tuple[Any, ...]:
    """The `type` values a union member takes."""
    found = model.model_fields.get("type")
    return get_args(found.annotation) if found is not None else ()


@dataclass(frozen=True, slots=True)
class Slot:
    """What the models say about one key: its type and its metadata."""

    annotation: Any
    metadata: tuple[Any, ...] = ()

    @property
    def is_text(self) -> bool:
        bare = _strip(self.annotation)
        literal = get_origin(bare) is Literal and all(isinstance(a, str) for a in get_args(bare))
        return bare in (str, SecretStr, Path) or literal

    @property
    def is_path(self) -> bool:
        return _strip(self.annotation) is Path or FILE_PATH in self.metadata

    @property
    def is_container(self) -> bool:
        bare = _strip(self.annotation)
        return get_origin(bare) in (dict, tuple, list) or bool(_models(bare, None))

    @property
    def optional(self) -> bool:
        return get_origin(self.annotation) in (Union, types.UnionType) and type(None) in get_args(self.annotation)


def slot(root: type[BaseModel], keys: Sequence[str | int], data: Any) -> Slot | None:
    """Follow `keys` from the root model through tables, named tables (`sinks.NAME`) and tagged unions."""
    current = Slot(root)
    node = data
    for key in keys:
        models = _models(current.annotation, node)
        if models:
            owner = next((m for m in models if key in m.model_fields), models[0])
            info = owner.model_fields.get(str(key))
            if info is None:
                return None
            current = Slot(info.annotation, tuple(info.metadata))
        elif get_origin(_strip(current.annotation)) in (dict, tuple, list):
            args = get_args(_strip(current.annotation))
            current = Slot(args[-1] if args else Any)
        else:
            return None
        node = node.get(key) if isinstance(node, dict) else None
    return current


def _node(data: Any, loc: Sequence[str | int]) -> Any:
    for part in loc:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def resolve_paths(root: type[BaseModel], data: dict[str, Any], base: Path) -> None:
    """Relative file paths in a config file mean relative to the file's directory, wherever shipper runs from."""
    for loc in list(_leaves(data)):
        found = slot(root, loc, data)
        table = _node(data, loc[:-1])
        value = table[loc[-1]]
        if found is not None and found.is_path and isinstance(value, str) and value and not Path(value).is_absolute():
            table[loc[-1]] = str(base / value)


# -- environment overrides ---------------------------------------------------------------------------------------


def _default_table(root: type[BaseModel], keys: Sequence[str], data: Any) -> dict[str, Any]:
    """What a table holds when the file does not set it: the raw form of its built-in default, so an override of
    one key keeps the others (SHIPPER__SINKS__X__... on the defaults keeps the built-in `local` sink)."""
    parent = slot(root, keys[:-1], data)
    models = _models(parent.annotation, None) if parent is not None else []
    info = models[0].model_fields.get(keys[-1]) if models else None
    default = info.get_default(call_default_factory=True) if info is not None else None
    if isinstance(default, BaseModel):
        return default.model_dump(exclude_unset=True)
    if isinstance(default, dict):
        return {k: v.model_dump(exclude_unset=True) if isinstance(v, BaseModel) else v for k, v in default.items()}
    return {}


def _read_env_value(name: str, raw: str, found: Slot | None) -> Any:
    if found is None or found.is_text:
        return raw  # an unknown key is refused by the models, naming the variable
    if found.is_container:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{name}: expected JSON (an array or an object), got {raw!r}") from None
    if found.optional and raw == "null":
        return None
    return raw  # numbers, booleans and modes: the field's own validation reads the text


def apply_env(root: type[BaseModel], data: dict[str, Any], environ: Mapping[str, str]) -> dict[Loc, str]:
    """Merge `SHIPPER__SECTION__KEY` variables into `data` key by key; returns which variable set which key."""
    placed: dict[tuple[str, ...], tuple[str, str]] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        target = data
        for depth, part in enumerate(keys[:-1], start=1):
            if part not in target:
                target[part] = _default_table(root, keys[:depth], data)
            target = target[part]
            if not isinstance(target, dict):
                raise ConfigError(f"{name}: {'.'.join(keys[:depth])} is not a table, so it has no key {keys[-1]!r}")
        target[keys[-1]] = raw
        placed[tuple(keys)] = (name, raw)
    # Typed once every variable is in place: a sink's `type` may come from a variable read after its other keys.
    for loc, (name, raw) in placed.items():
        _node(data, loc[:-1])[loc[-1]] = _read_env_value(name, raw, slot(root, loc, data))
    return {loc: name for loc, (name, _) in placed.items()}


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
        tags = [t for m in (_models(found.annotation, None) if found else []) for t in tags_of(m)]
        given = f"{ctx['tag']!r} is not one of " if kind == "union_tag_invalid" else "required, one of "
        return (*loc, "type"), given + ", ".join(tags)
    if kind == "value_error":
        return loc, str(ctx.get("error", item["msg"]))
    if kind == "extra_forbidden":
        table = slot(origin.root, loc[:-1], origin.data)
        models = _models(table.annotation, _node(origin.data, loc[:-1])) if table else []
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
        problems.append(f"{_where(loc, origin)}{'.'.join(map(str, loc)) or '(top level)'}: {message}")
    source = str(origin.path) if origin.path else "(built-in defaults)"
    return f"invalid config {source}: " + "; ".join(problems)
