"""A mixed vendor load for the ordering tests: native records for the fp, hl and kw sinks (tests/fakes/rig.py), each
entity's records in order and interleaved with the others', and how to read the order back at a fake."""

from __future__ import annotations

import uuid
from typing import Any

from tests.fakes import snippets as sdk


def first_occurrences(operations: list[str]) -> list[str]:
    """Operations in arrival order with redeliveries folded into their first arrival."""
    return list(dict.fromkeys(operations))


def mixed_records(
    n_fp: int, n_traces: int, n_hl: int, n_kw: int
) -> tuple[list[list[dict[str, Any]]], dict[str, list[str]]]:
    """Per-entity record sequences (create first) and the ids to look for at the remotes: Freeplay completions
    (create, update, feedback) and traces (record, update), Humanloop flow logs (create, update), Keywords AI logs."""
    project = sdk.FP_PROJECT
    seqs: list[list[dict[str, Any]]] = []
    ids: dict[str, list[str]] = {"fp": [], "trace": [], "hl": [], "kw": []}
    for n in range(n_fp):
        sid, cid = str(uuid.uuid4()), str(uuid.uuid4())
        ids["fp"].append(cid)
        seqs.append([
            {"sink": "fp", "path": f"/v2/projects/{project}/sessions/{sid}/completions",
             "body": {"messages": [{"role": "user", "content": f"q{n}"}], "completion_id": cid}},
            {"sink": "fp", "path": f"/v2/projects/{project}/completions/{cid}",
             "body": {"new_messages": [{"role": "assistant", "content": f"a{n}"}], "eval_results": None}},
            {"sink": "fp", "path": f"/v2/projects/{project}/completion-feedback/id/{cid}", "body": {"n": n}},
        ])  # fmt: skip
    for n in range(n_traces):
        sid, tid = str(uuid.uuid4()), str(uuid.uuid4())
        ids["trace"].append(tid)
        trace = dict.fromkeys(("agent_name", "parent_id", "custom_metadata", "eval_results", "test_run_info"))
        trace.update(input=f"i{n}", output=None, kind="agent", name="mix", start_time=None, end_time=None)
        path = f"/v2/projects/{project}/sessions/{sid}/traces/id/{tid}"
        seqs.append([
            {"sink": "fp", "path": path, "body": trace},
            {"sink": "fp", "method": "PATCH", "path": path, "body": {"output": f"o{n}"}},
        ])  # fmt: skip
    for n in range(n_hl):
        log_id = f"mix-flow-{n}"
        ids["hl"].append(log_id)
        seqs.append([
            {"sink": "hl", "path": "/v5/flows/log",
             "body": {"path": f"mix/flow-{n % 10}", "log_id": log_id, "inputs": {"n": n}, "log_status": "incomplete"}},
            {"sink": "hl", "method": "PATCH", "path": f"/v5/flows/logs/{log_id}",
             "body": {"output": str(n), "log_status": "complete"}},
        ])  # fmt: skip
    for n in range(n_kw):
        ids["kw"].append(f"mix-{n}")
        body = {"model": "gpt-4o-mini", "input": f"i{n}", "output": "o", "custom_identifier": f"mix-{n}"}
        seqs.append([{"sink": "kw", "path": "/request-logs/create", "body": body}])
    return seqs, ids


def interleave(seqs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Round-robin over entities: an entity's records keep their order, spread across several batches."""
    out: list[dict[str, Any]] = []
    depth = max(len(seq) for seq in seqs)
    for step in range(depth):
        out.extend(seq[step] for seq in seqs if step < len(seq))
    return out
