"""What the ingest fuzzer (test_fuzz_ingest.py) sends: hypothesis strategies for hostile and valid requests to every
ingest route.

Three modes per request: clean (a valid call), odd (a valid call with one odd value inside: deep nesting, a huge
number, NaN, duplicate keys), hostile (anything, broken anywhere: random bytes, invalid UTF-8, empty, huge, wrong types
for every field, hostile path ids). Valid calls are as common as broken ones, so that acknowledged rows are common
too and the spool check at the end has something to check. Not responsible for sending or judging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from tests.e2e.fuzz_wire import build_request

# The limits the fuzzed daemon is configured with (small, so that exceeding them is cheap).
MAX_BODY = 1024 * 1024
MAX_LINE = 256 * 1024
MAX_ITEMS = 1000
KEYS = {"fp": "fp-fuzz-key", "hl": "hl_fuzz_key", "kw": "kw-fuzz-key"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl"}


# -- JSON text, valid and not -------------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # orjson encodes no wider integer
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values: SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
# Literals that are not JSON, or that JSON parsers disagree on.
ODD_LITERALS = [
    "NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "undefined", "True", "None", "'single'", "0x10", "01",
    "+1", ".5", "1.", "-", "1e400", "-1e400", "1E-400", "123456789012345678901234567890",
    "-123456789012345678901234567890", "18446744073709551616", "1e99999999999", "-0", '"\\ud800"', '"\\udc00x"',
    '"\\x41"', '"\\u00"', '"unterminated', '"tab\there"', "[1,]", '{"a":1,}', "[", "{", "]", "}", ":", ",", "",
    "/* c */ 1", "\u00a01", "nul\u0000l",
]  # fmt: skip
scalar_text = st.one_of(json_scalars.map(dumps), st.sampled_from(ODD_LITERALS))
DEPTH = st.one_of(st.integers(2, 130), st.integers(126, 300), st.integers(250, 1100), st.integers(1000, 5000))


def nest(depth: int, opener: str, inner: str, closed: bool = True) -> str:
    closer = "]" if opener == "[" else "}"
    return opener * depth + inner + (closer * depth if closed else "")


def _containers(children: SearchStrategy[str]) -> SearchStrategy[str]:
    pair = st.tuples(
        st.sampled_from(['"a"', '"sink"', '"body"', '"messages"', '""']) | st.text(max_size=6).map(dumps), children
    )
    return st.one_of(
        st.lists(children, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(pair, max_size=4).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"),
        st.builds(nest, DEPTH, st.sampled_from(["[", '{"a":']), children, st.booleans() | st.just(True)),
    )


# Any text that looks like JSON: valid, or broken in one of the ways above, nested anywhere.
json_text: SearchStrategy[str] = st.recursive(scalar_text, _containers, max_leaves=6)

# What a field spec looks like: name → (valid values, required for a valid object).
Fields = dict[str, tuple[SearchStrategy[Any], bool]]


odd_values = st.one_of(
    st.builds(nest, DEPTH, st.sampled_from(["[", '{"a":']), scalar_text),
    scalar_text,
    json_text,
    st.sampled_from(['{"a":1,"a":2}', '{"a":1,"a":{"b":[1e400]}}', "[NaN]", '{"x":Infinity}']),
)


@st.composite
def object_text(draw: st.DrawFn, fields: Fields, mode: str, odd_field: str | None = None) -> str:
    """An object with these fields.

    valid: required fields present, optional ones maybe. odd: valid, plus one odd value (deep nesting, a huge
    number, a NaN, duplicate keys...) in `odd_field` or in an extra field. mutated: each field valid, missing, broken
    JSON, or valid JSON of (probably) the wrong type; sometimes a duplicate key or a stray one.
    """
    pairs: list[tuple[str, str]] = []
    for name, (valid, required) in fields.items():
        roll = draw(st.integers(0, 19)) if mode == "mutated" else (0 if required or draw(st.booleans()) else 19)
        if roll <= 9:
            pairs.append((name, dumps(draw(valid))))
        elif roll <= 12:
            pairs.append((name, draw(json_text)))
        elif roll <= 16:
            pairs.append((name, dumps(draw(json_values))))
    if mode == "odd":
        value = draw(odd_values)
        pairs = [(name, v) for name, v in pairs if name != odd_field]
        name = odd_field or draw(st.sampled_from(["extra", "note", ""]) | st.text(max_size=6))
        pairs.insert(draw(st.integers(0, len(pairs))), (name, value))
    if mode == "mutated" and pairs and draw(st.booleans()):
        name = draw(st.sampled_from([name for name, _ in pairs]))  # a duplicate key: which one wins?
        pairs.insert(draw(st.integers(0, len(pairs))), (name, draw(json_text)))
    if mode == "mutated" and draw(st.integers(0, 3)) == 0:
        pairs.append((draw(st.text(max_size=8)), draw(json_text)))
    return "{" + ",".join(f"{dumps(name)}:{value}" for name, value in pairs) + "}"


def shaped(fields: Fields, mode: str) -> SearchStrategy[str]:
    """ "any": valid objects as often as odd or broken ones, so that accepted requests are common too."""
    if mode != "any":
        return object_text(fields, mode)
    return st.one_of(object_text(fields, "valid"), object_text(fields, "odd"), object_text(fields, "mutated"))


# -- field specs ---------------------------------------------------------------------------------------------------

uuids = st.uuids().map(str)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}", fullmatch=True)
short_text = st.text(max_size=30)
metadata = st.dictionaries(st.text(max_size=8), st.one_of(short_text, ints, st.booleans()), max_size=3)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": short_text}),
    min_size=1,
    max_size=3,
)
models = st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20241022", "no-such-model", ""])
usage = st.fixed_dictionaries({"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6)})

FP_COMPLETION: Fields = {
    "messages": (messages, True),
    "completion_id": (uuids, False),
    "inputs": (metadata, False),
    "prompt_info": (st.fixed_dictionaries({"prompt_template_version_id": uuids, "environment": short_text}), False),
    "call_info": (st.fixed_dictionaries({"provider": st.just("openai"), "model": models, "usage": usage}), False),
    "session_info": (st.fixed_dictionaries({"custom_metadata": metadata}), False),
    "trace_info": (st.fixed_dictionaries({"trace_id": uuids}), False),
    "parent_id": (uuids, False),
}
FP_TRACE: Fields = {
    "input": (json_values, False),
    "output": (json_values, False),
    "agent_name": (short_text, False),
    "parent_id": (uuids, False),
    "custom_metadata": (metadata, False),
}
FP_UPDATE: Fields = {
    "freeplay_feedback": (st.sampled_from(["positive", "negative"]), False),
    "custom_metadata": (metadata, False),
    "output": (json_values, False),
    "eval_results": (metadata, False),
}
HL_LOG: Fields = {
    "path": (st.text(min_size=1, max_size=20), True),
    "id": (ids, False),
    "log_id": (ids, False),
    "messages": (messages, False),
    "output": (short_text, False),
    "trace_parent_id": (ids, False),
    "prompt": (st.fixed_dictionaries({"model": models, "template": messages}), False),
    "log_status": (st.sampled_from(["complete", "incomplete"]), False),
    "prompt_tokens": (st.integers(0, 10**6), False),
    "output_tokens": (st.integers(0, 10**6), False),
}
HL_UPDATE: Fields = {
    "output": (short_text, False),
    "log_status": (st.sampled_from(["complete", "incomplete"]), False),
    "error": (short_text, False),
}
KW_CREATE: Fields = {
    "model": (models, False),
    "prompt_messages": (messages, False),
    "completion_message": (st.fixed_dictionaries({"role": st.just("assistant"), "content": short_text}), False),
    "customer_params": (st.fixed_dictionaries({"customer_identifier": short_text}), False),
    "prompt_tokens": (st.integers(0, 10**6), False),
    "completion_tokens": (st.integers(0, 10**6), False),
    "cost": (st.floats(0, 100), False),
    "metadata": (metadata, False),
}
KW_UPDATE: Fields = {
    "metadata": (metadata, False),
    "note": (short_text, False),
    "logs": (st.lists(st.fixed_dictionaries({"unique_id": ids, "metadata": metadata}), max_size=3), False),
}

# -- paths -------------------------------------------------------------------------------------------------------

HOSTILE_IDS = [
    "..", ".", "%2e%2e", "%2E%2E", ".%2e", "//evil.example", "%2F%2Fevil.example", "..%2F..%2Fadmin", "a%2F..%2Fb",
    "a%0D%0AX-Injected:%201", "%0d%0a", "%00", "%", "%zz", "@evil.example", "http:%2F%2Fevil.example%2Fx",
    "%C3%BC", "%E2%80%AE", "%F0%9F%92%A5", "%EF%BF%BD", "%FF", "%C0%AF", "a;b", "a,b", "~", "$", "a'b", "%20", "%09",
    "x" * 200, "..;", "%5C..%5C", "%u002e",
]  # fmt: skip
# A path segment as a client would put it on the wire: a real id, a hostile one, or any text percent-encoded.
path_ids = st.one_of(
    uuids,
    ids,
    st.sampled_from(HOSTILE_IDS),
    st.text(max_size=12).map(lambda s: quote(s, safe="")),
    st.text(max_size=12).map(lambda s: quote(s, safe="/:@.")),
)


valid_ids = uuids | ids


@st.composite
def route_path(draw: st.DrawFn, template: str, segments: SearchStrategy[str], decorate: bool) -> str:
    """Fill `{}`s with path segments; when decorating, sometimes double a slash, add a trailing one, or a query."""
    path = template.format(*(draw(segments) for _ in range(template.count("{}"))))
    if decorate and draw(st.integers(0, 5)) == 0:
        path = path.replace("/", "//", 1)
    if decorate and draw(st.integers(0, 5)) == 0:
        path += "/"
    if decorate and draw(st.integers(0, 5)) == 0:
        value = draw(st.sampled_from(["prod", "%0d%0a", "v_shp_1"]) | st.text(max_size=8).map(quote))
        path += draw(st.sampled_from(["?version_id=", "?environment=", "?x="])) + value
    return path


native_paths = st.one_of(
    st.lists(ids, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.lists(path_ids, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["", "/", "//evil.example/x", "http://evil.example/", "/a/../b", "/a/%2e%2e/b", "/a?b", "/a#b"]),
    st.sampled_from(["/a\\b", "/a b", "/a\r\nX: y", "/\u00fc", "/%0a", "relative", "@evil.example/x"]),
)

# -- bodies ------------------------------------------------------------------------------------------------------

BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80", b"\xe2\x82"]


@st.composite
def hostile(draw: st.DrawFn, base: SearchStrategy[str]) -> bytes:
    """Mostly `base` as UTF-8; else the same broken: invalid UTF-8, random bytes, empty, huge, deeply nested."""
    kind = draw(st.integers(0, 13))
    text = draw(base)
    if kind <= 7:
        return text.encode()
    if kind == 8:
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from(BAD_UTF8)) + raw[at:]
    if kind == 9:
        return draw(st.binary(max_size=300))
    if kind == 10:
        return b""
    if kind == 11:
        size = draw(st.sampled_from([10_000, MAX_LINE + 1, MAX_BODY + 1]))
        return ('{"huge":"' + "x" * size + '",' + text[1:]).encode() if text.startswith("{") else b'"' + b"x" * size
    if kind == 12:
        return nest(draw(DEPTH), draw(st.sampled_from(["[", '{"a":'])), text, draw(st.booleans())).encode()
    return (text + draw(st.sampled_from(["\n", " ", "\x00", "garbage", "}", "]"]))).encode()


# -- requests ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    content_type: str | None
    body: bytes | None
    headers: tuple[tuple[str, str], ...]
    transport: str

    def __repr__(self) -> str:
        """Short enough to read (and for hypothesis to print): long bodies and paths are cut in the middle."""
        body = self.body if self.body is None or len(self.body) <= 400 else self.body[:200] + b"..." + self.body[-200:]
        size = "" if self.body is None else f" ({len(self.body)} bytes)"
        path = self.path if len(self.path) <= 300 else self.path[:150] + "..." + self.path[-150:]
        return (
            f"Req({self.method} {path!r} via {self.transport}, {self.content_type!r}, {self.headers}, {body!r}{size})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints dataclasses field by field
        printer.text(repr(self))

    def raw(self) -> bytes:
        headers = [(n.encode(), v.encode()) for n, v in self.headers]
        if self.content_type is not None:
            headers.append((b"Content-Type", self.content_type.encode()))
        return build_request(self.method.encode(), self.path.encode(), headers, self.body)


transports = st.sampled_from(["tcp", "unix"])
vendor_types = st.sampled_from(["application/json", "application/json", "application/json", "text/plain", None])


@st.composite
def auth_headers(draw: st.DrawFn, vendor: str) -> tuple[tuple[str, str], ...]:
    """The vendor's usual key header, often; sometimes none (401), a malformed one, or both styles."""
    roll = draw(st.integers(0, 5))
    bearer = ("Authorization", f"Bearer {KEYS.get(vendor, 'k')}")
    api_key = ("X-API-KEY", KEYS["hl"])
    if roll == 0:
        return ()
    if roll == 1:
        return (("Authorization", draw(st.sampled_from(["Bearer", "Bearer ", "Basic abc", "bearer  x"]))),)
    if roll == 2:
        return (bearer, api_key)
    return (api_key,) if vendor == "hl" else (bearer,)


def good_auth(vendor: str) -> tuple[tuple[str, str], ...]:
    return (("X-API-KEY", KEYS["hl"]),) if vendor == "hl" else (("Authorization", f"Bearer {KEYS[vendor]}"),)


# clean: a valid call; odd: a valid call with one odd value inside; hostile: anything, broken anywhere.
modes = st.sampled_from(["clean", "odd", "hostile", "clean", "odd", "hostile", "hostile"])


@st.composite
def vendor_request(draw: st.DrawFn, vendor: str, routes: list[tuple[str, str, Fields]]) -> Req:
    method, template, fields = draw(st.sampled_from(routes))
    mode = draw(modes)
    if mode != "hostile":
        path = draw(route_path(template, valid_ids, decorate=False))
        body = draw(object_text(fields, "valid" if mode == "clean" else "odd")).encode()
        return Req(method, path, "application/json", body, good_auth(vendor), draw(transports))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))  # a known path, another method
    return Req(
        method,
        draw(route_path(template, path_ids, decorate=True)),
        draw(vendor_types),
        draw(hostile(shaped(fields, "any"))),
        draw(auth_headers(vendor)),
        draw(transports),
    )


FP_ROUTES = [
    ("POST", "/api/v2/projects/{}/sessions/{}/completions", FP_COMPLETION),
    ("POST", "/v2/projects/{}/sessions/{}/completions", FP_COMPLETION),
    ("POST", "/api/v2/projects/{}/completions/{}", FP_UPDATE),
    ("POST", "/api/v2/projects/{}/sessions/{}/traces/id/{}", FP_TRACE),
    ("PATCH", "/api/v2/projects/{}/sessions/{}/traces/id/{}", FP_UPDATE),
    ("PATCH", "/api/v2/projects/{}/sessions/{}/traces/id/{}/metadata", FP_UPDATE),
    ("POST", "/api/v2/projects/{}/completion-feedback/id/{}", FP_UPDATE),
    ("POST", "/api/v2/projects/{}/trace-feedback/id/{}", FP_UPDATE),
    ("PATCH", "/api/v2/projects/{}/sessions/id/{}/metadata", FP_UPDATE),
    ("DELETE", "/api/v2/projects/{}/sessions/{}", FP_UPDATE),
    ("GET", "/api/v2/projects/{}/prompt-templates/name/{}", FP_UPDATE),  # proxied
]
HL_ROUTES = [
    ("POST", "/v5/prompts/log", HL_LOG),
    ("POST", "/v5/flows/log", HL_LOG),
    ("POST", "/v5/tools/log", HL_LOG),
    ("POST", "/prompts/log", HL_LOG),
    ("PATCH", "/v5/prompts/{}/log/{}", HL_UPDATE),
    ("PATCH", "/v5/tools/{}/log/{}", HL_UPDATE),
    ("PATCH", "/v5/flows/logs/{}", HL_UPDATE),
    ("POST", "/v5/prompts/call", HL_LOG),  # proxied
]
KW_ROUTES = [
    ("POST", "/request-logs/create", KW_CREATE),
    ("POST", "/api/request-logs/create/", KW_CREATE),
    ("POST", "/api/request-logs/create", KW_CREATE),
    ("POST", "/api/request-logs/", KW_CREATE),
    ("PATCH", "/api/request-logs/{}/", KW_UPDATE),
    ("PATCH", "/api/request-logs/batch-update/", KW_UPDATE),
    ("GET", "/api/request-logs/{}/", KW_UPDATE),  # proxied
]

NATIVE_HTTP: Fields = {
    "sink": (st.just("remote"), True),
    "method": (st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]), False),
    "path": (st.lists(ids, max_size=3).map(lambda parts: "/" + "/".join(parts)), False),
    "query": (st.dictionaries(st.text(max_size=6), st.one_of(short_text, ints, st.booleans())), False),
    "body": (json_values, False),
    "key": (st.text(min_size=1, max_size=40), False),
}
NATIVE_STRAY: Fields = {
    "sink": (st.sampled_from(["remote", "fp", "hl", "kw", "nope", ""]), True),
    "method": (st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET", "post"]), False),
    "path": (native_paths, False),
    "query": (st.dictionaries(st.text(max_size=6), json_values, max_size=3), False),
    "body": (json_values, False),
    "key": (st.text(max_size=600), False),
}


@st.composite
def native_vendor_item(draw: st.DrawFn, mode: str) -> str:
    """A native record naming a vendor sink, with that vendor's log path and body."""
    sink, routes = draw(st.sampled_from([("fp", FP_ROUTES), ("hl", HL_ROUTES), ("kw", KW_ROUTES)]))
    method, template, fields = draw(st.sampled_from(routes))
    segments, decorate = (valid_ids, False) if mode in ("valid", "odd") else (path_ids, True)
    path = draw(route_path(template, segments, decorate))
    path = path.removeprefix("/api" if sink == "fp" else "/v5" if sink == "hl" else "")
    body = draw(shaped(fields, mode))
    return f'{{"sink":{dumps(sink)},"method":{dumps(method)},"path":{dumps(path)},"body":{body}}}'


native_valid_item = st.one_of(object_text(NATIVE_HTTP, "valid"), native_vendor_item("valid"))
native_odd_item = st.one_of(object_text(NATIVE_HTTP, "odd", odd_field="body"), native_vendor_item("odd"))
native_any_item = st.one_of(
    native_valid_item,
    native_odd_item,
    object_text(NATIVE_HTTP, "mutated"),
    object_text(NATIVE_STRAY, "mutated"),
    native_vendor_item("any"),
    json_text,
)
native_types = st.sampled_from(
    [
        "application/x-ndjson",
        "application/json",
        "text/plain",
        "application/ndjson",
        "application/jsonl",
        "application/json; charset=utf-8",
        "application/x-ndjson; charset=latin-1",
        "",
        None,
    ]
)
BOTH_KEYS = (("Authorization", f"Bearer {KEYS['fp']}"), ("X-API-KEY", KEYS["hl"]))


@st.composite
def native_body(draw: st.DrawFn) -> str:
    """NDJSON lines, a JSON array, or one object, from valid and invalid items; sometimes over max_items."""
    items = draw(st.lists(native_any_item, max_size=6))
    if items and draw(st.integers(0, 15)) == 0:
        items = items * (MAX_ITEMS // len(items) + 1)
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return "[" + ",".join(items) + "]"
    if shape == 1:
        return items[0] if items else ""
    separator = draw(st.sampled_from(["\n", "\n", "\r\n", "\n\n", "\n \n"]))
    return separator.join(items) + draw(st.sampled_from(["", "\n"]))


@st.composite
def native_request(draw: st.DrawFn) -> Req:
    mode = draw(modes)
    if mode == "hostile":
        headers = draw(auth_headers("fp")) + draw(st.sampled_from([(), (("X-API-KEY", KEYS["hl"]),)]))
        body = draw(hostile(native_body()))
        return Req("POST", "/v1/records", draw(native_types), body, headers, draw(transports))
    items = draw(st.lists(native_valid_item, min_size=1, max_size=5))
    if mode == "odd":  # valid records with one odd one among them
        items.insert(draw(st.integers(0, len(items))), draw(native_odd_item))
    shape = draw(st.sampled_from(["ndjson", "array", "object"]))
    if shape == "ndjson":
        text, content_type = "\n".join(items) + "\n", draw(st.sampled_from(sorted(NDJSON_TYPES)))
    else:
        text = "[" + ",".join(items) + "]" if shape == "array" or len(items) > 1 else items[0]
        content_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
    return Req("POST", "/v1/records", content_type, text.encode(), BOTH_KEYS, draw(transports))
