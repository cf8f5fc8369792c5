"""Redaction rules, table-driven: built-in patterns, field paths, protected ids, marks, and the raw-text prefilter."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.config import load_config
from shipper.config.transform import BuiltinRedaction, RedactConfig, RedactPattern
from shipper.core.redaction import BUILTIN, luhn
from shipper.enrich.redact import Redactor
from shipper.errors import ConfigError
from shipper.ingest.responses import status_of
from shipper.records import BadInput, NewRow

ALL_BUILTIN: tuple[BuiltinRedaction, ...] = ("emails", "cards", "api_keys", "bearer_tokens", "aws_keys", "jwts")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def redact_text(rules: tuple[BuiltinRedaction, ...], text: str) -> str:
    redactor = Redactor(RedactConfig(builtin=rules))
    raw = orjson.dumps({"content": text})
    return str(orjson.loads(redactor.redact_body(raw, "keywordsai", "PATCH", "/api/request-logs/x/"))["content"])


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [
        ("emails", "write to alice.smith+tag@mail.example.co.uk now", "write to [REDACTED_EMAIL] now"),
        ("emails", "two: a@b.io,c.d@e-f.org", "two: [REDACTED_EMAIL],[REDACTED_EMAIL]"),
        ("emails", "line\nbob@example.com", "line\n[REDACTED_EMAIL]"),
        ("emails", "no address @ all, user@localhost", "no address @ all, user@localhost"),
        ("cards", "card 4111 1111 1111 1111 exp 12/29", "card [REDACTED_CARD] exp 12/29"),
        ("cards", "4111-1111-1111-1111", "[REDACTED_CARD]"),
        ("cards", "amex 378282246310005.", "amex [REDACTED_CARD]."),
        ("cards", "mc:5555555555554444", "mc:[REDACTED_CARD]"),
        ("cards", "fails luhn 4111111111111112", "fails luhn 4111111111111112"),
        ("cards", "timestamp 1795347092746 ms", "timestamp 1795347092746 ms"),
        ("cards", "too long 41111111111111110000000", "too long 41111111111111110000000"),
        ("cards", "phone +1 415 555 0100", "phone +1 415 555 0100"),
        ("api_keys", "key=sk-proj-AbCdEf0123456789_-AbCdEf0123", "key=[REDACTED_API_KEY]"),
        ("api_keys", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "[REDACTED_API_KEY]"),
        ("api_keys", "legacy sk-abcdefghijklmnopqrstuvwx", "legacy [REDACTED_API_KEY]"),
        ("api_keys", "stripe sk_live_abcdefghijklmnop1234", "stripe [REDACTED_API_KEY]"),
        ("api_keys", "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "gh [REDACTED_API_KEY]"),
        ("api_keys", "slack xoxb-1234567890-abcdef", "slack [REDACTED_API_KEY]"),
        ("api_keys", "g AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", "g [REDACTED_API_KEY]"),
        ("api_keys", "\nsk-abcdefghijklmnopqrstuvwx", "\n[REDACTED_API_KEY]"),  # an escape before it in the JSON
        ("api_keys", "task-abcdefghijklmnopqrstuvwxyz", "task-abcdefghijklmnopqrstuvwxyz"),  # not a key
        ("api_keys", "sk-short", "sk-short"),
        ("bearer_tokens", "Authorization: Bearer abcdef0123456789abcdef==", "Authorization: Bearer [REDACTED_TOKEN]"),
        ("bearer_tokens", "authorization: bearer abc/def+ghi_jkl.mno-pqr", "authorization: Bearer [REDACTED_TOKEN]"),
        ("bearer_tokens", "the bearer of bad news", "the bearer of bad news"),
        ("aws_keys", "id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED_AWS_KEY]."),
        ("aws_keys", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "[REDACTED_AWS_KEY]"),
        ("aws_keys", "AKIAIOSFODNN7EXAMPLEX is too long", "AKIAIOSFODNN7EXAMPLEX is too long"),
        ("jwts", f"token {JWT} end", "token [REDACTED_JWT] end"),
    ],
)
def test_builtin_rules(rule: BuiltinRedaction, text: str, expected: str) -> None:
    assert redact_text((rule,), text) == expected


def test_rules_that_are_off_do_nothing() -> None:
    text = "alice@example.com 4111 1111 1111 1111"
    assert redact_text(("cards",), text) == "alice@example.com [REDACTED_CARD]"
    assert redact_text((), text) == text


def test_config_builtin_names_are_the_rule_sets() -> None:
    assert set(ALL_BUILTIN) == set(BUILTIN)


def test_luhn() -> None:
    assert luhn("4111 1111 1111 1111") and luhn("6011111111111117")
    assert not luhn("4111111111111112")


def test_user_patterns_replace_with_literal_text() -> None:
    config = RedactConfig(patterns=(RedactPattern(name="employee", regex=r"EMP-\d{6}", replacement="[EMP]"),))
    raw = orjson.dumps({"note": "ask EMP-123456 or\nEMP-654321", "n": 1})
    out = orjson.loads(Redactor(config).redact_body(raw, None, "POST", "/x"))
    assert out == {"note": "ask [EMP] or\n[EMP]", "n": 1, "_shipper_redacted": "employee"}


def test_user_patterns_see_decoded_strings_anchors_included() -> None:
    config = RedactConfig(patterns=(RedactPattern(name="start", regex=r"^secret\b.*$"),))
    raw = b'{"a": "secret stuff", "b": "not a secret stuff", "c": "line1\\nsecret"}'
    out = orjson.loads(Redactor(config).redact_body(raw, None, "POST", "/x"))
    assert (out["a"], out["b"], out["c"]) == ("[REDACTED]", "not a secret stuff", "line1\nsecret")


# -- field paths ------------------------------------------------------------------------------------------------

BODY: dict[str, Any] = {
    "inputs": {"password": "hunter2", "question": "2+2?"},
    "metadata": {"api_token": "t0k", "Refresh_TOKEN": "r", "user": "u1"},
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    "deep": {"list": [{"ssn": "123-45-6789"}, {"x": {"ssn": "987"}}]},
    "ssn": "top",
}


@pytest.mark.parametrize(
    ("drop", "mask", "changes"),
    [
        (("inputs.password",), (), {"inputs": {"question": "2+2?"}}),
        (("INPUTS.Password",), (), {"inputs": {"question": "2+2?"}}),  # case-insensitive
        ((), ("metadata.*token*",), {"metadata": {"api_token": "[X]", "Refresh_TOKEN": "[X]", "user": "u1"}}),
        (
            (),
            ("messages.*.content",),
            {"messages": [{"role": "user", "content": "[X]"}, {"role": "assistant", "content": "[X]"}]},
        ),
        (("messages.0",), (), {"messages": [{"role": "assistant", "content": "hello"}]}),
        (("messages.*",), (), {"messages": []}),
        (
            (),
            ("**.ssn",),
            {"ssn": "[X]", "deep": {"list": [{"ssn": "[X]"}, {"x": {"ssn": "[X]"}}]}},
        ),
        (("deep.**.ssn",), (), {"deep": {"list": [{}, {"x": {}}]}}),
        (("metadata.user", "metadata.user"), (), {"metadata": {"api_token": "t0k", "Refresh_TOKEN": "r"}}),
        (("inputs",), ("inputs.password",), {"inputs": None}),  # dropped first, so nothing left to mask
    ],
)
def test_field_paths(drop: tuple[str, ...], mask: tuple[str, ...], changes: dict[str, Any]) -> None:
    redactor = Redactor(RedactConfig(drop=drop, mask=mask, mask_with="[X]"))
    out = orjson.loads(redactor.redact_body(orjson.dumps(BODY), None, "POST", "/x"))
    expected = copy.deepcopy(BODY)
    for key, value in changes.items():
        if value is None:
            del expected[key]
        else:
            expected[key] = value
    fired = sorted({"drop"} if drop else set()) + (["mask"] if mask and "inputs" not in drop else [])
    expected["_shipper_redacted"] = ",".join(fired)
    assert out == expected


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("metadata.pass[wW]ord", {"metadata": {"passWord": "x"}}),  # a bracket is a choice, not a literal
        ("**.[a-z]sn", {"deep": [{"ssn": "x"}]}),
        ("a/b", {"a/b": "x"}),  # some serialisers write "/" as "\/"
        ('say"hi"', {'say"hi"': "x"}),
    ],
)
def test_globs_and_odd_keys_still_reach_their_fields(path: str, body: dict[str, Any]) -> None:
    redactor = Redactor(RedactConfig(drop=(path,)))
    raw = orjson.dumps(body).replace(b"/", b"\\/")
    out = redactor.redact_body(raw, None, "POST", "/x")
    assert b'"x"' not in out
    assert orjson.loads(out)["_shipper_redacted"] == "drop"


@pytest.mark.parametrize("path", ["inputs.nothing", "metadata.*secret*", "nope.**.ssn", "messages.7"])
def test_a_path_that_reaches_nothing_leaves_the_same_bytes(path: str) -> None:
    raw = orjson.dumps(BODY)
    redactor = Redactor(RedactConfig(drop=(path,), mask=(path,)))
    assert redactor.redact_body(raw, None, "POST", "/x") is raw
    assert redactor.counters.records == 0


@pytest.mark.parametrize(
    ("vendor", "path", "body", "untouched"),
    [
        ("freeplay", "/v2/projects/p/sessions/s/completions", {"completion_id": "x@y.io", "parent_id": "a@b.io"}, 2),
        ("humanloop", "/prompts/log", {"path": "users/bob@example.com", "id": "id@x.io", "log_id": "l@x.io"}, 3),
    ],
)
def test_ids_that_route_a_record_are_never_redacted(
    vendor: str, path: str, body: dict[str, Any], untouched: int
) -> None:
    redactor = Redactor(RedactConfig(builtin=("emails",), mask=("path", "id", "*_id")))
    body = {**body, "note": "mail c@d.io"}
    out = orjson.loads(redactor.redact_body(orjson.dumps(body), vendor, "POST", path))
    assert sum(out[key] == body[key] for key in body if key != "note") == untouched
    assert out["note"] == "mail [REDACTED_EMAIL]"


# -- marks --------------------------------------------------------------------------------------------------------

SECRET = {"note": "alice@example.com"}


@pytest.mark.parametrize(
    ("vendor", "method", "path", "body", "where"),
    [
        (
            "freeplay",
            "POST",
            "/v2/projects/p/sessions/s/completions",
            {"call_info": None},
            ("call_info", "provider_info"),
        ),
        ("freeplay", "POST", "/v2/projects/p/sessions/s/traces/id/t", {"custom_metadata": None}, ("custom_metadata",)),
        ("freeplay", "PATCH", "/v2/projects/p/sessions/id/s/metadata", {}, ()),
        ("humanloop", "POST", "/prompts/log", {"metadata": {"user": "u1"}}, ("metadata",)),
        ("humanloop", "POST", "/tools/log", {}, ("metadata",)),
        ("keywordsai", "POST", "/api/request-logs/create/", {}, ("metadata",)),
        ("keywordsai", "PATCH", "/api/request-logs/abc/", {"metadata": {}}, ("metadata",)),
    ],
)
def test_a_redacted_record_says_so_in_its_vendors_metadata(
    vendor: str, method: str, path: str, body: dict[str, Any], where: tuple[str, ...]
) -> None:
    out = orjson.loads(
        Redactor(RedactConfig(builtin=("emails",))).redact_body(orjson.dumps({**body, **SECRET}), vendor, method, path)
    )
    target = out
    for key in where:
        target = target[key]
    assert target["shipper_redacted"] == "emails"
    assert out["note"] == "[REDACTED_EMAIL]"


@pytest.mark.parametrize(
    ("vendor", "method", "path"),
    [
        ("keywordsai", "PATCH", "/api/request-logs/abc/"),  # an update never gains a metadata it did not send
        ("humanloop", "PATCH", "/flows/logs/l1"),  # no metadata field
        ("freeplay", "POST", "/v2/projects/p/completion-feedback/id/c"),  # the feedback itself, not metadata
    ],
)
def test_records_without_a_metadata_field_are_redacted_unmarked(vendor: str, method: str, path: str) -> None:
    out = orjson.loads(
        Redactor(RedactConfig(builtin=("emails",))).redact_body(orjson.dumps(SECRET), vendor, method, path)
    )
    assert out == {"note": "[REDACTED_EMAIL]"}


def test_a_generic_record_is_marked_at_the_top_and_a_non_object_is_redacted_unmarked() -> None:
    redactor = Redactor(RedactConfig(builtin=("emails", "cards")))
    raw = orjson.dumps({**SECRET, "card": "4111111111111111", "_shipper_redacted": "earlier"})
    out = orjson.loads(redactor.redact_body(raw, None, "POST", "/x"))
    assert out["_shipper_redacted"] == "cards,earlier,emails"
    assert orjson.loads(redactor.redact_body(b'["bob@example.com", 1]', None, "POST", "/x")) == ["[REDACTED_EMAIL]", 1]
    assert redactor.counters.records == 2
    assert redactor.counters.rules == {"emails": 2, "cards": 1}


def test_rows_keep_their_identity_when_nothing_is_redacted() -> None:
    redactor = Redactor(RedactConfig(builtin=ALL_BUILTIN))
    clean = NewRow("local", "POST", "", None, b'{"a": "nothing to see"}', None)
    dirty = NewRow("kw", "POST", "/api/request-logs/create/", None, orjson.dumps(SECRET), None, credential="k")
    out = redactor.redact_rows([clean, dirty], {"kw": "keywordsai"})
    assert out[0] is clean
    assert orjson.loads(out[1].body) == {"note": "[REDACTED_EMAIL]", "metadata": {"shipper_redacted": "emails"}}
    assert (out[1].sink, out[1].path, out[1].credential) == ("kw", dirty.path, "k")


def test_an_inactive_redactor_returns_the_rows_as_they_are() -> None:
    rows = [NewRow("local", "POST", "", None, orjson.dumps(SECRET), None)]
    assert Redactor().redact_rows(rows, {}) is rows


def test_reconfigure_takes_effect_for_the_next_record() -> None:
    redactor = Redactor()
    raw = orjson.dumps(SECRET)
    assert redactor.redact_body(raw, None, "POST", "/x") is raw
    redactor.reconfigure(RedactConfig(builtin=("emails",)))
    assert orjson.loads(redactor.redact_body(raw, None, "POST", "/x"))["note"] == "[REDACTED_EMAIL]"


# -- the prefilter never hides a match ---------------------------------------------------------------------------

ESCAPED_RAW = [
    b'{"note": "mail alice\\u0040example.com"}',  # \u escape inside the address
    b'{"note": "sk\\u002dabcdefghijklmnopqrstuvwx"}',
    b'{"note": "Bearer abc\\/defghijklmnopqrstu"}',  # \/ inside the token
    b'{"note": "tab\\tsk-abcdefghijklmnopqrstuvwx"}',  # an escape right before a key
    b'{"inputs": {"pass\\u0077ord": "hunter2"}}',  # an escaped key
]


@pytest.mark.parametrize("raw", ESCAPED_RAW)
def test_json_escapes_do_not_hide_a_secret(raw: bytes) -> None:
    redactor = Redactor(RedactConfig(builtin=ALL_BUILTIN, drop=("inputs.password",)))
    out = redactor.redact_body(raw, None, "POST", "/x")
    assert out is not raw
    decoded = orjson.loads(out)
    assert "_shipper_redacted" in decoded
    assert "hunter2" not in out.decode() and "alice@" not in out.decode()


FRAGMENTS = st.sampled_from(
    [
        "alice@example.com", "4111 1111 1111 1111", "4111111111111112", "sk-abcdefghijklmnopqrstuvwxyz01",
        "Bearer abcdefghijklmnop0123", "AKIAIOSFODNN7EXAMPLE", JWT, "\n", "\t", '"', "\\", "/", "@", " ", "-",
        "é", "日本", "🫡", "task", "n", "u0040", "1795347092746", "password", "token", "x",
    ]
)  # fmt: skip
TEXTS = st.lists(FRAGMENTS, max_size=12).map("".join)
BODIES = st.recursive(
    TEXTS | st.integers(-(2**53), 2**53) | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXTS, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("rules", [(rule,) for rule in ALL_BUILTIN] + [ALL_BUILTIN], ids=[*ALL_BUILTIN, "all"])
@settings(max_examples=200, deadline=None, database=None)
@given(body=BODIES)
def test_the_prefilter_finds_every_body_a_full_walk_would_change(
    rules: tuple[BuiltinRedaction, ...], body: Any
) -> None:
    paths = {"drop": ("**.password",), "mask": ("**.*token*",)} if len(rules) > 1 else {}
    redactor = Redactor(RedactConfig(builtin=rules, **paths))
    walked = copy.deepcopy(body)
    fired = redactor.redact_value(walked)
    raw = orjson.dumps(body)
    out = redactor.redact_body(raw, None, "POST", "/x")
    if not fired:
        assert out is raw
        return
    if isinstance(walked, dict):
        earlier = walked.get("_shipper_redacted")
        walked["_shipper_redacted"] = ",".join(sorted(fired | ({earlier} if isinstance(earlier, str) else set())))
    assert orjson.loads(out) == walked


# -- configuration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('[redact]\nbuiltin = ["emails", "passports"]\n', "redact.builtin"),
        ('[redact]\ndrop = ["inputs..password"]\n', "redact.drop"),
        ('[redact]\nmask = ["metadata.**"]\n', "redact.mask"),
        ('[[redact.patterns]]\nname = "x"\nregex = "(unclosed"\n', "redact.patterns.0.regex"),
        ('[[redact.patterns]]\nname = "has space"\nregex = "x"\n', "redact.patterns.0.name"),
        ('[[redact.patterns]]\nname = "emails"\nregex = "x"\n', "emails"),
        ('[[redact.patterns]]\nname = "a"\nregex = "x"\n[[redact.patterns]]\nname = "a"\nregex = "y"\n', "a"),
        ("[redact]\nbogus = 1\n", "redact.bogus"),
        ('[enrich]\ntokens = "maybe"\n', "enrich.tokens"),
        ("[enrich]\nprices = true\n", "enrich.prices"),
    ],
)
def test_a_bad_redact_or_enrich_config_is_a_config_error_naming_the_key(tmp_path: Path, toml: str, names: str) -> None:
    path = tmp_path / "shipper.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match="invalid config") as caught:
        load_config(path, {})
    assert names in str(caught.value)


def test_redact_and_enrich_config_load_from_toml_and_env(tmp_path: Path) -> None:
    path = tmp_path / "shipper.toml"
    path.write_text(
        '[redact]\nbuiltin = ["emails", "cards"]\ndrop = ["inputs.password"]\nmask = ["metadata.*token*"]\n'
        '[[redact.patterns]]\nname = "employee"\nregex = "EMP-[0-9]{6}"\nreplacement = "[EMP]"\n'
        "[enrich]\ncost = false\n"
    )
    config = load_config(path, {"SHIPPER__ENRICH__TOKENS": "false", "SHIPPER__REDACT__MASK_WITH": "***"})
    assert config.redact.builtin == ("emails", "cards")
    assert config.redact.drop == ("inputs.password",)
    assert config.redact.patterns[0].replacement == "[EMP]"
    assert config.redact.mask_with == "***"
    assert (config.enrich.tokens, config.enrich.cost) == (False, False)
    assert Redactor(config.redact).active


def test_the_defaults_redact_nothing_and_enrich_everything() -> None:
    config = load_config(None, {})
    assert not Redactor(config.redact).active
    assert (config.enrich.tokens, config.enrich.cost) == (True, True)


def test_a_body_no_json_library_can_read_is_400_naming_the_item_not_a_crash() -> None:
    redactor = Redactor(RedactConfig(builtin=ALL_BUILTIN))
    clean = NewRow("local", "POST", "", None, b'{"a": "nothing to see"}', None)
    unreadable = NewRow("local", "POST", "", None, b'{"mail": "bob@example.com", "n": 1e400}', None)
    with pytest.raises(BadInput) as caught:
        redactor.redact_rows([clean, unreadable], {})
    assert (status_of(caught.value), caught.value.code, caught.value.detail) == (400, "invalid_json", {"index": 1})


def test_an_otlp_export_requests_ids_and_times_survive_card_redaction_and_its_attributes_do_not() -> None:
    """An `otlp` sink's row is an export request as OTLP/JSON: int64s are decimal strings, and a 19-digit timestamp
    that passes the Luhn check is a card number to the pattern. Masked, the row no longer parsed and was
    dead-lettered; the ids and times are left alone at every depth, the attribute values are redacted as ever."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from shipper.otlp import wire

    stamp = next(t for t in range(1_764_633_600_000_000_000, 1_764_633_600_000_001_000) if luhn(str(t)))
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes(range(16)), bytes(range(8)), "chat"
    span.start_time_unix_nano, span.end_time_unix_nano = stamp, stamp
    span.attributes.append(KeyValue(key="card", value=AnyValue(string_value="4111 1111 1111 1111")))
    span.attributes.append(KeyValue(key="tokens", value=AnyValue(int_value=stamp)))
    raw = wire.to_json(request)
    assert str(stamp).encode() in raw and BUILTIN["cards"].sub(str(stamp)) != str(stamp)  # a card to the pattern
    out = Redactor(RedactConfig(builtin=("cards",))).redact_body(raw, None, "POST", "/v1/traces")
    parsed = wire.decode(out, wire.JSON, ExportTraceServiceRequest)  # it still parses: the sink can send it
    sent = parsed.resource_spans[0].scope_spans[0].spans[0]
    assert (sent.trace_id, sent.span_id) == (span.trace_id, span.span_id)
    assert (sent.start_time_unix_nano, sent.end_time_unix_nano) == (stamp, stamp)
    assert sent.attributes[1].value.int_value == stamp
    assert "4111" not in sent.attributes[0].value.string_value
