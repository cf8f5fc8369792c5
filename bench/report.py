"""Turn measurements into figures (value, target, ceiling, verdict) and print them as one table."""

from __future__ import annotations

from typing import Any

# (id, label, scenario, key, unit, comparison, target, ceiling, ceiling key). Targets: issue 12's first targets.
_FIGURES: tuple[tuple[str, str, str, str, str, str, float | None, str, str], ...] = (
    ("a_fsync", "(a) ingest NDJSON/unix, fsync, forwarding on", "a.ingest.fsync.batch", "records_per_s",
     "rec/s", ">=", 45_000, "FULL/256", "rows_per_s"),
    ("a_fsync_down", "(a) ingest NDJSON/unix, fsync, remote down", "a.ingest.fsync.down", "records_per_s",
     "rec/s", ">=", None, "FULL/256", "rows_per_s"),
    ("a_os", "(a) ingest NDJSON/unix, os, forwarding on", "a.ingest.os.batch", "records_per_s",
     "rec/s", ">=", 45_000, "NORMAL/256", "rows_per_s"),
    ("a_os_down", "(a) ingest NDJSON/unix, os, remote down", "a.ingest.os.down", "records_per_s",
     "rec/s", ">=", None, "NORMAL/256", "rows_per_s"),
    ("o_otlp", "(o) OTLP/HTTP protobuf, 100 spans/request, 3 vendor sinks down", "o.otlp", "records_per_s",
     "spans/s", ">=", None, "FULL/256", "rows_per_s"),
    ("b_max", "(b) single-record TCP max, fsync, fwd on", "b.single.max", "requests_per_s",
     "req/s", ">=", 10_000, "FULL/16", "rows_per_s"),
    ("b_p50", "(b) ack latency p50 @2000 req/s", "b.single.latency", "p50_ms",
     "ms", "<=", None, "FULL/1", "commit_p50_ms"),
    ("b_p99", "(b) ack latency p99 @2000 req/s", "b.single.latency", "p99_ms",
     "ms", "<=", 10, "FULL/1", "commit_p99_ms"),
    ("c_batch", "(c) end to end, http batch, fsync", "c.e2e.batch", "records_per_s",
     "rec/s", ">=", 45_000, "FULL/256", "rows_per_s"),
    ("c_replay", "(c) end to end, http replay, fsync", "c.e2e.replay", "records_per_s",
     "rec/s", ">=", 8_000, "FULL/16", "rows_per_s"),
    ("p_acked", "(p) vendor path: Freeplay creates acked, 64 conns", "p.vendor_path", "records_per_s",
     "rec/s", ">=", None, "FULL/16", "rows_per_s"),
    ("p_delivered", "(p) vendor path: delivered meanwhile", "p.vendor_path", "delivered_per_s",
     "rec/s", ">=", 6_000, "FULL/16", "rows_per_s"),
    ("p_p99", "(p) vendor path: ack p99", "p.vendor_path", "p99_ms",
     "ms", "<=", None, "FULL/1", "commit_p99_ms"),
    ("p_sustained_acked", "(p) vendor path, offered 4,000/s: acked", "p.vendor_path.sustained", "records_per_s",
     "rec/s", ">=", None, "FULL/16", "rows_per_s"),
    ("p_sustained_delivered", "(p) vendor path, offered 4,000/s: delivered", "p.vendor_path.sustained",
     "delivered_per_s", "rec/s", ">=", None, "FULL/16", "rows_per_s"),
    ("f_1i1d_delivered", "(f) vendor path, 1 ingest + 1 delivery: delivered", "f.vendor_path.1i1d", "delivered_per_s",
     "rec/s", ">=", None, "FULL/16", "rows_per_s"),
    ("f_1i2d_delivered", "(f) vendor path, 1 ingest + 2 delivery: delivered", "f.vendor_path.1i2d", "delivered_per_s",
     "rec/s", ">=", None, "FULL/16", "rows_per_s"),
    ("f_2i1d_acked", "(f) vendor path, 2 ingest + 1 delivery: acked", "f.vendor_path.2i1d", "records_per_s",
     "rec/s", ">=", None, "FULL/16", "rows_per_s"),
    ("f_2i1d_delivered", "(f) vendor path, 2 ingest + 1 delivery: delivered", "f.vendor_path.2i1d", "delivered_per_s",
     "rec/s", ">=", None, "FULL/16", "rows_per_s"),
)  # fmt: skip
# Issue 12: every process of the shipper (supervisor, ingest, delivery) added up, token counting loaded once.
RSS_TARGET_MB = 200.0
# (d) is read from the vendor runs, token counting on (e.vendors) and off; the http-sink runs never count tokens.
RSS_RUNS = (("on", "e.vendors"), ("off", "e.vendors.tokens_off"))
HTTP_RUNS = ("a.", "b.", "c.")  # the scenarios with http sinks: (o), (p) and (e) are vendor sinks


def _verdict(value: float, comparison: str, target: float | None) -> str:
    if target is None:
        return "-"
    if comparison == ">=":
        return "pass" if value >= target else f"short by {100 * (1 - value / target):.0f}%"
    return "pass" if value <= target else f"over by {100 * (value / target - 1):.0f}%"


def figures(measured: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios, ceilings = measured["scenarios"], measured["ceiling"]
    out = []
    for fid, label, scenario, key, unit, comparison, target, ceiling, ceiling_key in _FIGURES:
        found = scenarios.get(scenario)
        if not found or key not in found:
            continue
        value = found[key]
        verdict = _verdict(value, comparison, target)
        if found.get("errors"):
            verdict += f" ({found['errors']} errors: {found.get('first_error', '')[:60]})"
        if found.get("complete") is False:
            verdict = f"incomplete: {found['received']} of {found['records']} in {found['seconds']:.0f}s"
        out.append({
            "id": fid, "label": label, "value": value, "unit": unit, "comparison": comparison, "target": target,
            "ceiling": ceilings[ceiling][ceiling_key], "ceiling_of": f"SQLite {ceiling}", "verdict": verdict,
            "daemon_cpu_pct": found.get("cpu_daemon_pct"), "other_cpu_pct": found.get("cpu_other_pct"),
        })  # fmt: skip
    http_runs = [found["peak_rss_mb"] for name, found in scenarios.items() if name.startswith(HTTP_RUNS)]
    if http_runs:
        out.append(_rss("d_rss_http", "(d) peak RSS, http sinks (max of the runs)", max(http_runs), ""))
    for state, name in RSS_RUNS:
        run = scenarios.get(name)
        if run:
            verdict = "" if run["complete"] else f"incomplete: {run['received']} of {run['records']}"
            label = f"(d) peak RSS, vendor sinks, token counting {state}"
            out.append(_rss(f"d_rss_tokens_{state}", label, run["peak_rss_mb"], verdict, run["peak_rss_mb_by_process"]))
    return out


def _rss(fid: str, label: str, rss: float, verdict: str, by_process: dict[str, float] | None = None) -> dict[str, Any]:
    """A total over the daemon's processes (VmHWM each); `by_process` names each one's share in the verdict."""
    verdict = verdict or _verdict(rss, "<=", RSS_TARGET_MB)
    if by_process:
        shares = sorted(by_process.items(), key=lambda item: _ROLE_ORDER.get(_role(item[0]), len(_ROLE_ORDER)))
        verdict += " (" + ", ".join(f"{_role(name)} {mb:.0f}" for name, mb in shares) + ")"
    return {
        "id": fid, "label": label, "value": rss, "unit": "MB", "comparison": "<=", "target": RSS_TARGET_MB,
        "ceiling": None, "ceiling_of": "", "verdict": verdict, "daemon_cpu_pct": None, "other_cpu_pct": None,
        "by_process": by_process,
    }  # fmt: skip


_ROLE_ORDER = {"daemon": 0, "supervisor": 0, "ingest": 1, "delivery": 2}


def _role(process: str) -> str:
    """`delivery-1234` → `delivery`: the role, without the pid that tells two of a role apart in the raw results."""
    return process.rsplit("-", 1)[0]


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    head = ("figure", "result", "target", "ceiling (same run)", "daemon CPU", "others' CPU", "verdict")
    rows = [head]
    for f in results["figures"]:
        target = "-" if f["target"] is None else f"{f['comparison']} {_num(f['target'], f['unit'])}"
        ceiling = "-" if f["ceiling"] is None else f"{_num(f['ceiling'])} ({f['ceiling_of']})"
        cpu = "-" if f["daemon_cpu_pct"] is None else f"{f['daemon_cpu_pct']:.0f}%"
        other = "-" if f["other_cpu_pct"] is None else f"{f['other_cpu_pct']:.0f}%"
        rows.append((f["label"], _num(f["value"], f["unit"]), target, ceiling, cpu, other, f["verdict"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        f"shipper bench {meta['date']}, shipper {meta['shipper_commit']}, "
        f"on {meta['cpus']} CPUs ({meta['cpu_model']}), Python {meta['python']}, "
        f"records {meta['record_line_bytes']} B/line ({meta['record_body_bytes']} B body), "
        f"load at start {meta['load_average_at_start'][0]:.2f}",
        "",
    ]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines += ["", "ceilings: raw sqlite3, WAL, insert 1 KB rows + delete the previous group, per commit:"]
    for name, c in results["ceiling"].items():
        lines.append(
            f"  {name:<11} {c['rows_per_s']:>9,.0f} rows/s  {c['commits_per_s']:>7,.0f} commits/s  "
            f"commit p50 {c['commit_p50_ms']:.2f} ms  p99 {c['commit_p99_ms']:.2f} ms"
        )
    lines += [
        "",
        "CPU columns are % of one core in the measured window; others' CPU is everything on the host that is not",
        "the daemon, the fake remote or the load generator (another test suite, say): above ~10% the run was noisy.",
        "",
        "per scenario:",
    ]
    for name, s in results["scenarios"].items():
        shown = {k: v for k, v in s.items() if k not in ("first_error",) and v is not None}
        lines.append(
            f"  {name}: " + ", ".join(f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in shown.items())
        )
    return "\n".join(lines)
