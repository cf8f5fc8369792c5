"""The vendor registry is the only place vendors are known: each module brings every piece, nothing else names one.

A vendor change is one module's edit, so drift between "where the row goes" and "where its usage, marks and protected
ids are" can only be a test failure here, never silent: every registered vendor provides each member of the Adapter
protocol, every `outbound` entry (marks, usage and cost targets) is the forwarded form of one of its drop-in calls,
and no shipper module outside shipper/vendors/ holds a table, branch or string naming a vendor.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from typing_extensions import get_protocol_members

import shipper
from shipper.config.sinks import VENDOR_BASE_URLS, VendorSinkConfig
from shipper.core.rows import SpoolRow
from shipper.vendors import VENDORS
from shipper.vendors.base import Adapter, Route, Spooled
from shipper.vendors.sent import Sent

P = "/v2/projects/11111111-2222-3333-4444-555555555555"
SID = "08d33bf9-fc92-420d-9d7c-a74d1a2e4440"
TID = "b7006ff4-46d4-4393-afa8-00563cebf7dc"
# One drop-in call per kind of forwarded row each vendor's `outbound` table describes: a new vendor adds its own.
CALLS: dict[str, list[tuple[str, str, Any]]] = {
    "freeplay": [
        ("POST", f"{P}/sessions/{SID}/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("POST", f"{P}/sessions/{SID}/traces/id/{TID}", {"input": "q", "output": "a"}),
        ("PATCH", f"{P}/sessions/{SID}/traces/id/{TID}", {"output": "a"}),
        ("PATCH", f"{P}/sessions/id/{SID}/metadata", {"ticket": "T-1"}),
        ("PATCH", f"{P}/sessions/{SID}/traces/id/{TID}/metadata", {"k": 1}),
    ],
    "humanloop": [
        ("POST", "/v5/prompts/log", {"path": "demo/p"}),
        ("POST", "/v5/tools/log", {"path": "demo/t"}),
        ("PATCH", "/v5/tools/tl_1/log/log_1", {"output": "5"}),
    ],
    "keywordsai": [
        ("POST", "/request-logs/create", {"model": "m", "input": "i"}),
        ("PATCH", "/api/request-logs/batch-update/", {"logs": []}),
        ("PATCH", "/api/request-logs/u1/", {"note": "x"}),
    ],
}
PACKAGE = Path(shipper.__file__).parent
REGISTRY = PACKAGE / "vendors" / "__init__.py"
# The config names the sink types (a pydantic Literal must be spelled out) and their default base URLs: the config
# must not import the vendors (it sits below them), so the test below holds both equal to the registry instead.
CONFIG = PACKAGE / "config" / "sinks.py"


def row_of(planned: Spooled) -> SpoolRow:
    new = planned.row("s", None)
    return SpoolRow(1, "s", new.key, new.method, new.path, new.query, new.body, 0.0, 1, new.scope, new.after, new.kind)


def rows_of(vendor: str) -> list[SpoolRow]:
    assert vendor in CALLS, f"{vendor} needs its sample calls in CALLS"
    planned = [VENDORS[vendor].plan(method, path, {}, body) for method, path, body in CALLS[vendor]]
    assert all(isinstance(plan, Spooled) for plan in planned), planned
    return [row_of(plan) for plan in planned if isinstance(plan, Spooled)]


def test_the_registry_is_keyed_by_each_vendors_type_and_matches_the_configs_sink_types() -> None:
    assert {name: adapter.type for name, adapter in VENDORS.items()} == {name: name for name in VENDORS}
    assert set(get_args(VendorSinkConfig.model_fields["type"].annotation)) == set(VENDORS)
    assert set(VENDOR_BASE_URLS) <= set(VENDORS)


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_vendor_provides_routes_success_rules_usage_targets_and_protected_ids(vendor: str) -> None:
    adapter = VENDORS[vendor]
    missing = sorted(name for name in get_protocol_members(Adapter) if getattr(adapter, name, None) is None)
    assert missing == [], f"{vendor} lacks {missing}"
    assert adapter.routes and all(isinstance(route, Route) for route in adapter.routes)
    assert adapter.outbound and all(isinstance(entry, Sent) for entry in adapter.outbound)
    assert any(entry.usage is not None for entry in adapter.outbound), f"{vendor} names no usage target"
    assert isinstance(adapter.protected, frozenset) and all(isinstance(name, str) for name in adapter.protected)
    for row in rows_of(vendor):
        success = adapter.success(row)
        assert success is None or (success and all(200 <= code <= 299 for code in success)), (row.path, success)


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_outbound_entry_is_the_forwarded_form_of_one_of_the_vendors_drop_in_calls(vendor: str) -> None:
    """An entry whose path no route produces (a typo, a path changed in one table only) would never mark or fill."""
    rows = rows_of(vendor)
    unmatched = [
        f"{entry.method} {entry.pattern.pattern}"
        for entry in VENDORS[vendor].outbound
        if not any(row.method == entry.method and entry.pattern.match(row.path) for row in rows)
    ]
    assert unmatched == []


def _names_in_code(tree: ast.AST) -> list[tuple[int, str]]:
    """Identifiers and string constants, docstrings left out (prose may name a vendor; code may not)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.append((node.lineno, node.name))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, node.module or "")] + [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def _named(text: str) -> set[str]:
    """The registered vendors a text names, however spelt (`Keywords AI`, `keywords_ai`, `KeywordsAI`)."""
    squeezed = re.sub(r"[\s_-]", "", text.lower())
    return {vendor for vendor in VENDORS if vendor in squeezed}


def _allowed(path: Path, named: set[str]) -> bool:
    if path in (REGISTRY, CONFIG):
        return True  # the registry, and the config's sink types (held equal to it above)
    return path.parent == REGISTRY.parent and named == {path.stem}  # a vendor's own module names only itself


def test_no_module_outside_its_vendors_own_names_a_vendor() -> None:
    """The tables that used to live in enrich/ (usage, marks, protected ids) and sinks/ must not grow back."""
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, text in _names_in_code(ast.parse(path.read_text(), str(path)))
        if _named(text) and not _allowed(path, _named(text))
    ]
    assert offenders == []
