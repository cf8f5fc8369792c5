"""deploy/'s Prometheus alert rules and Grafana dashboard, held to a real Prometheus and a real daemon: `promtool`
checks the rules and runs their unit tests, every dashboard query is valid PromQL, and every metric (and label) the
rules, their tests and the dashboard name is in the `/metrics` scrape of a running shipper."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    REPO,
    Daemon,
    FakeRemote,
    free_port,
    metric,
    post_items,
    scrape,
    wait_for_metrics,
    write_config,
)

yaml = pytest.importorskip("yaml")

PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "shipper-alerts.yaml"
RULE_TESTS = PROMETHEUS / "shipper-alerts.test.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "shipper-dashboard.json"
# Series Prometheus makes itself, and the labels it adds to every scraped one.
SCRAPE_SERIES = frozenset({"up"})
TARGET_LABELS = frozenset({"instance", "job"})
NOT_NAMES = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
# Grafana's variables, as a query reaches Prometheus.
GRAFANA = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*", "$sink": ".*"}


def promtool(*args: str, cwd: Path) -> str:
    """The pinned promtool `make test` unpacks into the virtualenv, else one on PATH."""
    beside = Path(sys.executable).parent / "promtool"
    tool = str(beside) if beside.exists() else shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: `make test` installs it (Debian's prometheus package, pinned in Makefile)")
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in NOT_NAMES:
            continue
        names.add(match.group())
    return names


def matchers_in(expr: str) -> set[tuple[str, str]]:
    """(metric, label) for every label matcher written on a metric: `m{label="v"}`."""
    found = set()
    for name, inside in re.findall(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", expr):
        found.update((name, label) for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", inside))
    return found


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def rule_test_series() -> list[str]:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return [series["series"] for test in tests for series in test["input_series"]]


def grafana(query: str) -> str:
    for variable, value in GRAFANA.items():
        query = query.replace(variable, value)
    return query


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return data


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [grafana(t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(selector, label): the selector is a query too
            selector = re.fullmatch(r"label_values\((.+), *\w+\)", variable["definition"])
            assert selector, variable["definition"]
            exprs.append(grafana(selector.group(1)))
    return exprs


def exported(text: str) -> dict[str, set[str]]:
    """Every series name a scrape holds or declares (a labelled family may have no child yet) → its label names."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        for suffix in suffixes:
            out.setdefault(family.name + suffix, set())
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


async def test_every_metric_and_label_the_rules_and_dashboard_use_is_in_a_live_scrape(
    tmp_path: Path, remote: FakeRemote
) -> None:
    admin = f"127.0.0.1:{free_port()}"
    sinks = f'[sinks.remote]\ntype = "http"\nbase_url = "{remote.url}"\n'
    extra = f'[admin]\nhttp = "{admin}"\n'
    config = write_config(tmp_path, sinks, extra=extra)
    # Bounds are exported only when set: set them, as an operator who alerts on them would.
    config.write_text(config.read_text().replace("[spool]\n", "[spool]\nmax_bytes = 1073741824\nmax_rows = 100000\n"))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 1}}])
            async with session.post(
                f"http://{daemon.http}/v1/records", data=b"{", headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status == 400
            await wait_for_metrics(
                session, f"http://{admin}", lambda s: metric(s, "shipper_records_delivered_total", sink="remote") == 1
            )
            text, samples = await scrape(session, f"http://{admin}")
    finally:
        await daemon.ensure_stopped()
    assert metric(samples, "shipper_spool_max_bytes") == 1073741824
    assert metric(samples, "shipper_spool_max_rows") == 100000
    free, size = (metric(samples, f"shipper_spool_filesystem_{n}_bytes") or 0 for n in ("avail", "size"))
    assert 0 < free <= size
    series = exported(text)

    used: dict[str, set[str]] = {
        "rules": set().union(*map(names_in, rule_exprs())),
        "rule tests": set().union(*map(names_in, rule_test_series())),
        "dashboard": set().union(*map(names_in, dashboard_exprs())),
    }
    for where, names in used.items():
        assert names, where
        assert names - series.keys() - SCRAPE_SERIES == set(), f"{where} name series shipper does not export"
    queries = rule_exprs() + rule_test_series() + dashboard_exprs()
    for name, label in set().union(*map(matchers_in, queries)):
        # A labelled family with no child yet (no record dropped in this run) cannot show its labels.
        if name in SCRAPE_SERIES or label in TARGET_LABELS or label == "le" or not series[name]:
            continue
        assert label in series[name], f"{name} has no label {label!r} (it has {sorted(series[name])})"


def test_alert_rules_pass_promtool_check_and_their_unit_tests_which_see_every_alert_fire() -> None:
    assert "SUCCESS: 12 rules found" in promtool("check", "rules", RULES.name, cwd=PROMETHEUS)
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name, cwd=PROMETHEUS)
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == alerts


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule files only: each query becomes a recording rule, so Prometheus's own parser judges it.
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard-queries.yaml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", "dashboard-queries.yaml", cwd=tmp_path)


def test_dashboard_panels_have_unique_ids_fit_the_grid_and_query_through_the_datasource_variable() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells), "two panels at the same place"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("queued", "oldest", "delivered", "errors", "dead letters", "state", "auth", "filesystem"):
        assert topic in titles, topic
