"""Turning a config file's tables and `SHIPPER__*` variables into the raw data the config models validate.

The models (shipper/config/) say what each key is; this module walks them to learn a key's type, so an override
is read the way its field reads (a digits-only token stays a string, a mode is octal) and lands key by key in the
file's table or in the built-in default it overrides, and so a relative path in a file is read against the file's
directory; and which file a command reads (--config, $SHIPPER_CONFIG, the system file, the built-in defaults).
Not responsible for validation (pydantic and the models) or for reading and quoting the file's text
(configtext.py).
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, SecretStr

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


def models_of(annotation: Any, node: Any) -> list[type[BaseModel]]:
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
        return get_origin(bare) in (dict, tuple, list) or bool(models_of(bare, None))

    @property
    def optional(self) -> bool:
        return get_origin(self.annotation) in (Union, types.UnionType) and type(None) in get_args(self.annotation)


def slot(root: type[BaseModel], keys: Sequence[str | int], data: Any) -> Slot | None:
    """Follow `keys` from the root model through tables, named tables (`sinks.NAME`) and tagged unions."""
    current = Slot(root)
    node = data
    for key in keys:
        models = models_of(current.annotation, node)
        if models:
            owner = next((m for m in models if key in m.model_fields), models[0])
            info = owner.model_fields.get(str(key))
            if info is None:
                return None
            current = Slot(info.annotation, tuple(info.metadata))
        elif (container := get_origin(_strip(current.annotation))) in (dict, tuple, list):
            args = get_args(_strip(current.annotation))  # dict[str, V]: V; tuple[X, ...] and list[X]: X
            current = Slot(args[1 if container is dict else 0] if args else Any)
        else:
            return None
        node = node.get(key) if isinstance(node, dict) else None
    return current


def node_at(data: Any, loc: Sequence[str | int]) -> Any:
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
        table = node_at(data, loc[:-1])
        value = table[loc[-1]]
        if found is not None and found.is_path and isinstance(value, str) and value and not Path(value).is_absolute():
            table[loc[-1]] = str(base / value)


# -- environment overrides ---------------------------------------------------------------------------------------


def _default_table(root: type[BaseModel], keys: Sequence[str], data: Any) -> dict[str, Any]:
    """What a table holds when the file does not set it: the raw form of its built-in default, so an override of
    one key keeps the others (SHIPPER__SINKS__X__... on the defaults keeps the built-in `local` sink)."""
    parent = slot(root, keys[:-1], data)
    models = models_of(parent.annotation, node_at(data, keys[:-1])) if parent is not None else []
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
        node_at(data, loc[:-1])[loc[-1]] = _read_env_value(name, raw, slot(root, loc, data))
    return {loc: name for loc, (name, _) in placed.items()}


# -- which file --------------------------------------------------------------------------------------------------

# Where the daemon's configuration lives on a host; SHIPPER_SYSTEM_CONFIG moves it (tests, unusual layouts).
SYSTEM_CONFIG = Path("/etc/shipper/shipper.toml")


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Which configuration a command uses and why: the file (None for the built-in defaults) and how it was found."""

    path: Path | None
    found_by: str

    def describe(self) -> str:
        if self.path is None:
            return f"built-in defaults ({self.found_by})"
        return f"{self.path} ({self.found_by})"


def find_config(explicit: Path | None, environ: Mapping[str, str] | None = None) -> ConfigSource:
    """--config, then $SHIPPER_CONFIG, then the system file if it exists, then the built-in defaults."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return ConfigSource(explicit, "--config")
    if environ.get("SHIPPER_CONFIG"):
        return ConfigSource(Path(environ["SHIPPER_CONFIG"]), "$SHIPPER_CONFIG")
    system = Path(environ.get("SHIPPER_SYSTEM_CONFIG") or SYSTEM_CONFIG)
    if os.path.exists(system):
        return ConfigSource(system, "the system configuration")
    return ConfigSource(None, f"no --config, $SHIPPER_CONFIG or {system}")
