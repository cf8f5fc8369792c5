"""`python -m bench.enrich [--quick] [--json]`: per-record CPU cost of redaction and of token counting + pricing.

Redaction runs on the ingest path (before the spool append, so before the ack); counting and pricing run in the
forwarder, off it. Both are measured in-process on ~1 KB completion-like records (bench/records.py's bodies), as
microseconds per record: the best of several rounds of many records, after a warm-up that loads the encodings and
the price table (one-off costs, reported separately).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.records import BODY_BYTES, completion_body
from shipper.config.transform import EnrichConfig, RedactConfig, RedactPattern
from shipper.enrich.chat import count_completion, count_prompt
from shipper.enrich.cost import Pricer
from shipper.enrich.redact import Redactor
from shipper.enrich.tokens import TokenCounter
from shipper.enrich.usage import Enricher
from shipper.records import NewRow

POOL = 64
DEFAULT_SET = RedactConfig(builtin=("emails", "cards", "api_keys"))
ALL_BUILTIN = RedactConfig(builtin=("emails", "cards", "api_keys", "bearer_tokens", "aws_keys", "jwts"))
WITH_PATHS = ALL_BUILTIN.model_copy(update={"drop": ("inputs.password",), "mask": ("metadata.*token*", "**.ssn")})
WITH_PATTERN = ALL_BUILTIN.model_copy(update={"patterns": (RedactPattern(name="employee", regex=r"EMP-\d{6}"),)})
SECRETS = ("reach me at jane.doe@example.com", "card 4111 1111 1111 1111", "key sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2")
KW_PATH = "/api/request-logs/create/"


def completion_bodies(seed: int = 7) -> list[dict[str, Any]]:
    """~1 KB completion-like bodies (messages, output, params, usage, timing, metadata)."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(POOL):
        state = rng.getstate()
        for words in range(10, 200):
            rng.setstate(state)
            body = completion_body(rng, words)
            if len(orjson.dumps(body)) >= BODY_BYTES:
                bodies.append(body)
                break
    return bodies


def with_secret(body: dict[str, Any], index: int) -> dict[str, Any]:
    messages = [dict(m) for m in body["messages"]]
    messages[-1]["content"] += " " + SECRETS[index % len(SECRETS)]
    return {**body, "messages": messages}


def keywordsai_log(body: dict[str, Any]) -> dict[str, Any]:
    """The same conversation as a Keywords AI log that carries no usage and no cost."""
    return {
        "model": body["model"],
        "prompt_messages": body["messages"],
        "completion_message": body["output"],
        "metadata": body["metadata"],
    }


def per_record_us(run: Callable[[int], object], count: int, rounds: int) -> float:
    """Best round's mean, in microseconds per record."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for index in range(count):
            run(index)
        best = min(best, (time.perf_counter_ns() - started) / count / 1000)
    return best


def redaction(count: int, rounds: int) -> dict[str, float]:
    bodies = completion_bodies()
    clean = [NewRow("local", "POST", "/v1/completions", None, orjson.dumps(b), None) for b in bodies]
    dirty = [
        NewRow("local", "POST", "/v1/completions", None, orjson.dumps(with_secret(b, i)), None)
        for i, b in enumerate(bodies)
    ]
    cases = {
        "redact_off": (Redactor(), clean),
        "redact_default_clean": (Redactor(DEFAULT_SET), clean),
        "redact_builtin_clean": (Redactor(ALL_BUILTIN), clean),
        "redact_builtin_paths_clean": (Redactor(WITH_PATHS), clean),
        "redact_builtin_secret": (Redactor(ALL_BUILTIN), dirty),
        "redact_user_pattern_clean": (Redactor(WITH_PATTERN), clean),
    }
    results = {}
    for name, (redactor, rows) in cases.items():
        results[name] = per_record_us(lambda i, r=redactor, rs=rows: r.redact_rows([rs[i % POOL]], {}), count, rounds)
    return results


def enrichment(count: int, rounds: int) -> dict[str, float]:
    logs = [keywordsai_log(b) for b in completion_bodies()]
    raw = [orjson.dumps(log) for log in logs]
    complete = [orjson.dumps({**log, "prompt_tokens": 100, "completion_tokens": 10, "cost": 0.001}) for log in logs]
    counter = TokenCounter()
    pricer = Pricer()
    both = Enricher(EnrichConfig(), counter)
    tokens_only = Enricher(EnrichConfig(cost=False), counter)
    started = time.perf_counter()
    both.apply("keywordsai", "POST", KW_PATH, raw[0])  # loads o200k_base (gpt-4o*) and the price table
    # Other providers' models are approximated with o200k_base too: nothing more is loaded (tokens.py).
    both.apply("keywordsai", "POST", KW_PATH, orjson.dumps({**logs[0], "model": "claude-3-haiku"}))
    warm_up = time.perf_counter() - started

    def count_tokens(i: int) -> None:
        log = logs[i % POOL]
        count_prompt(counter, log["prompt_messages"], log["model"])
        count_completion(counter, log["completion_message"], log["model"])

    return {
        "count_tokens": per_record_us(count_tokens, count, rounds),
        "price": per_record_us(lambda i: pricer.price("gpt-4o-mini", 900 + i % 7, 120), count, rounds),
        "enrich_tokens_and_cost": per_record_us(
            lambda i: both.apply("keywordsai", "POST", KW_PATH, raw[i % POOL]), count, rounds
        ),
        "enrich_tokens_only": per_record_us(
            lambda i: tokens_only.apply("keywordsai", "POST", KW_PATH, raw[i % POOL]), count, rounds
        ),
        "enrich_nothing_missing": per_record_us(
            lambda i: both.apply("keywordsai", "POST", KW_PATH, complete[i % POOL]), count, rounds
        ),
        "first_use_load_s": warm_up,
    }


LABELS = {
    "redact_off": "redaction off (no rules)",
    "redact_default_clean": "emails + cards + api_keys, record without secrets",
    "redact_builtin_clean": "all six built-in rules, record without secrets",
    "redact_builtin_paths_clean": "built-in rules + drop/mask paths, without secrets",
    "redact_builtin_secret": "built-in rules on, record with a secret (rewritten)",
    "redact_user_pattern_clean": "built-in rules + one user pattern (always parsed)",
    "count_tokens": "token count (prompt + completion, tiktoken)",
    "price": "price (genai-prices, gpt-4o-mini)",
    "enrich_tokens_and_cost": "enrich: count + price + mark (Keywords AI log)",
    "enrich_tokens_only": "enrich: count + mark, cost off",
    "enrich_nothing_missing": "enrich: record already has usage and cost",
}


def run(quick: bool = False) -> dict[str, float]:
    logging.getLogger("shipper.enrich.cost").setLevel(logging.ERROR)  # the pool's llama model has no price: fine
    count, rounds = (2000, 3) if quick else (20000, 5)
    results = redaction(count, rounds)
    results.update(enrichment(max(200, count // 4), rounds))
    bodies = completion_bodies()
    results["record_bytes"] = sum(len(orjson.dumps(b)) for b in bodies) / len(bodies)
    return results


def render(results: dict[str, float]) -> str:
    lines = [f"per-record cost on ~{results['record_bytes']:.0f} B completion-like records (µs, best round's mean)"]
    for key, label in LABELS.items():
        lines.append(f"  {label:<55} {results[key]:>9.1f} µs")
    lines.append(f"  {'first use: load encodings + price table (once)':<55} {results['first_use_load_s']:>9.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enrich", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records per round (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.quick)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() if args.json else render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
