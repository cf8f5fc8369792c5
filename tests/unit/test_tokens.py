"""Token counts: tiktoken's own, from the shipped rank files, with no network; OpenAI's billing formula for chats."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.enrich.chat import count_completion, count_prompt
from shipper.enrich.tokens import (
    CL100K,
    O200K,
    ON_LOOP_CHARS,
    RANK_FILES,
    Encodings,
    LoopCounter,
    TokenCounter,
    TokenDataError,
    WouldBlock,
    encoding_for_model,
    is_openai_model,
    load_ranks,
)
from tests.offline import run_offline
from tests.support import REPO

DATA = REPO / "shipper" / "data"
BLOB_URLS = {
    O200K: "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    CL100K: "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
SAMPLES = [
    "tiktoken is great!",
    "antidisestablishmentarianism",
    "2 + 2 = 4",
    "お誕生日おめでとう",
    "Hello, world!\n\n  def f(x):\n\treturn x ** 2  # 🫡🍣顏文字",
    "台北 101 高度 508 公尺",
    "x" * 5000,
    "",
]


def test_counts_equal_tiktokens_own_encodings_with_the_network_unreachable(tmp_path: Path) -> None:
    # Reference: tiktoken.get_encoding() unchanged, fed from a cache seeded with the same published files (the
    # way tiktoken caches downloads: named by the sha1 of the blob URL), so it has no need of the network either.
    reference_cache = tmp_path / "reference-cache"
    reference_cache.mkdir()
    for name, url in BLOB_URLS.items():
        (reference_cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(
            gzip.decompress((DATA / RANK_FILES[name][0]).read_bytes())
        )
    code = f"""
        import json, tiktoken
        print(json.dumps({{n: [tiktoken.get_encoding(n).encode(s) for s in {SAMPLES!r}] for n in {list(BLOB_URLS)!r}}}))
    """
    reference = run_offline(tmp_path, reference_cache, code)
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    ours = run_offline(
        tmp_path,
        empty_cache,
        f"""
        import json
        from shipper.enrich.tokens import DEFAULT_ENCODINGS as E
        print(json.dumps({{n: [E.get(n).encode(s) for s in {SAMPLES!r}] for n in {list(BLOB_URLS)!r}}}))
        """,
    )
    assert ours == reference
    assert list(empty_cache.iterdir()) == []  # nothing cached, nothing downloaded
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary rank file and tiktoken's copy of it are gone


def test_the_shipped_rank_files_parse_to_what_tiktokens_own_loader_makes_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tiktoken.load

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's loader keeps no copy of what it reads
    for name, (filename, pinned) in RANK_FILES.items():
        data = gzip.decompress((DATA / filename).read_bytes())
        (tmp_path / name).write_bytes(data)
        assert load_ranks(data, pinned, name) == tiktoken.load.load_tiktoken_bpe(str(tmp_path / name), pinned)


def test_a_built_encoding_keeps_no_python_copy_of_its_ranks() -> None:
    """The Rust core holds the ranks; the ~26 MB dict o200k_base is built from goes once the core is built, so the
    process grows by the core's ~45 MB, not ~75 MB (measured in a fresh interpreter: RSS is per process)."""
    code = textwrap.dedent(
        """
        import tiktoken, tiktoken_ext.openai_public
        from shipper.enrich.tokens import DEFAULT_ENCODINGS, O200K
        def rss():
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
        before = rss()
        assert DEFAULT_ENCODINGS.get(O200K).encode_ordinary("tiktoken is great!") == [83, 8251, 2488, 382, 2212, 0]
        print(rss() - before)
        """
    )
    grown = float(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout)
    assert 30 < grown < 62, grown


def test_known_token_ids_and_counts_from_tiktokens_documentation() -> None:
    counter = TokenCounter()
    assert counter.encoding("gpt-4").encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert counter.encoding("gpt-3.5-turbo").encode("台北 101 高度 508 公尺") == [
        55038, 49409, 220, 4645, 18630, 41519, 27479, 220, 19869, 35469, 105, 16175, 118,
    ]  # fmt: skip
    # The cookbook's compare_encodings: cl100k_base / o200k_base counts.
    assert [counter.text("antidisestablishmentarianism", m) for m in ("gpt-4", "gpt-4o")] == [6, 6]
    assert [counter.text("2 + 2 = 4", m) for m in ("gpt-4", "gpt-4o")] == [7, 7]
    assert [counter.text("お誕生日おめでとう", m) for m in ("gpt-4", "gpt-4o")] == [9, 8]


def test_text_that_spells_a_special_token_is_counted_as_text() -> None:
    # encode() would raise on it by default; a log record is data, never a prompt with control tokens.
    assert TokenCounter().text("<|endoftext|>", "gpt-4o") > 1


def corrupt_copy(tmp_path: Path, name: str, mutate: Any) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    filename = RANK_FILES[name][0]
    (data_dir / filename).write_bytes(mutate((DATA / filename).read_bytes()))
    return data_dir


def _flip_one_rank(raw: bytes) -> bytes:
    text = gzip.decompress(raw)
    return gzip.compress(text.replace(b" 1000\n", b" 1001\n", 1))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_flip_one_rank, "corrupted: sha256"),  # a valid gzip of a tampered file
        (lambda raw: raw[: len(raw) // 2], "cannot read"),  # truncated
        (lambda raw: b"not gzip at all", "cannot read"),
    ],
    ids=["tampered", "truncated", "not-gzip"],
)
def test_a_corrupted_rank_file_is_refused_and_stays_refused(tmp_path: Path, mutate: Any, message: str) -> None:
    encodings = Encodings(corrupt_copy(tmp_path, O200K, mutate))
    with pytest.raises(TokenDataError, match=message):
        encodings.get(O200K)
    with pytest.raises(TokenDataError, match=message):  # remembered: not re-read for every record
        encodings.get(O200K)
    assert encodings.loaded() == []


def test_a_missing_rank_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenDataError, match="cannot read"):
        Encodings(tmp_path).get(CL100K)


def test_encodings_load_lazily_only_what_is_asked_for(tmp_path: Path) -> None:
    encodings = Encodings(DATA)
    assert encodings.loaded() == []
    encodings.get(CL100K)
    assert encodings.loaded() == [CL100K]
    assert encodings.get(CL100K) is encodings.get(CL100K)


@pytest.mark.parametrize(
    ("model", "encoding", "openai"),
    [
        ("gpt-4o", O200K, True),
        ("gpt-4o-mini-2024-07-18", O200K, True),
        ("chatgpt-4o-latest", O200K, True),
        ("gpt-4.1-nano", O200K, True),
        ("o1-preview", O200K, True),
        ("o3-mini", O200K, True),
        ("o4-mini", O200K, True),
        ("gpt-5", O200K, True),
        ("openai/gpt-4o", O200K, True),  # Keywords AI / LiteLLM style
        ("GPT-4O", O200K, True),
        ("gpt-4", CL100K, True),
        ("gpt-4-turbo", CL100K, True),
        ("gpt-3.5-turbo-0125", CL100K, True),
        ("gpt-35-turbo", CL100K, True),  # Azure
        ("text-embedding-3-small", CL100K, True),
        ("claude-3-5-sonnet", O200K, False),  # approximation for other providers
        ("gemini-2.5-flash", O200K, False),
        ("llama-3.1-70b", O200K, False),
        (None, O200K, False),
        ("", O200K, False),
    ],
)
def test_the_encoding_follows_the_model(model: str | None, encoding: str, openai: bool) -> None:
    assert encoding_for_model(model) == encoding
    assert is_openai_model(model) is openai


def test_a_mix_of_gpt_4o_and_other_providers_models_loads_one_encoding() -> None:
    """Deployed with vendor sinks, records name gpt-4o* next to Claude, Llama, Mistral: one encoding, ~75 MB."""
    encodings = Encodings(DATA)
    counter = TokenCounter(encodings)
    for model in ("claude-3-5-sonnet", "gpt-4o-mini", "llama-3.1-70b", "mistral-large", "openai/gpt-4o"):
        assert counter.text("How many tokens is this?", model) > 0
    assert encodings.loaded() == [O200K]
    counter.text("a legacy model still gets its own", "gpt-3.5-turbo")
    assert encodings.loaded() == [CL100K, O200K]


# -- the chat formula -------------------------------------------------------------------------------------------

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain "
        "English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased "
        "leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_message_counts_match_the_prompt_tokens_openai_billed(model: str, expected: int) -> None:
    # The OpenAI API's own usage.prompt_tokens for these messages, as published in OpenAI's cookbook.
    assert count_prompt(TokenCounter(), COOKBOOK_MESSAGES, model) == expected


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)]
)
def test_tool_schemas_count_as_openai_billed_them(model: str, expected: int) -> None:
    assert count_prompt(TokenCounter(), COOKBOOK_TOOL_MESSAGES, model, COOKBOOK_TOOLS) == expected


def test_anthropic_and_bare_tool_schemas_count_like_openai_ones() -> None:
    function = COOKBOOK_TOOLS[0]["function"]
    anthropic = [
        {"name": function["name"], "description": function["description"], "input_schema": function["parameters"]}
    ]
    bare = [function]
    counter = TokenCounter()
    expected = count_prompt(counter, COOKBOOK_TOOL_MESSAGES, "gpt-4o", COOKBOOK_TOOLS)
    assert count_prompt(counter, COOKBOOK_TOOL_MESSAGES, "gpt-4o", anthropic) == expected
    assert count_prompt(counter, COOKBOOK_TOOL_MESSAGES, "gpt-4o", bare) == expected


def test_names_tool_calls_and_content_parts_are_counted() -> None:
    counter = TokenCounter()
    n = counter.text
    model = "gpt-4o"
    user = {"role": "user", "content": "hi"}
    assert count_prompt(counter, [user], model) == 3 + 3 + n("user", model) + n("hi", model)
    named = {**user, "name": "bob"}
    assert count_prompt(counter, [named], model) == count_prompt(counter, [user], model) + n("bob", model) + 1
    parts = {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}]}
    assert count_prompt(counter, [parts], model) == count_prompt(counter, [user], model)
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    call_tokens = 3 + n("get_weather", model) + n('{"city":"Paris"}', model)
    assert count_prompt(counter, [assistant], model) == 3 + 3 + n("assistant", model) + call_tokens
    assert count_completion(counter, assistant, model) == call_tokens
    use = {"type": "tool_use", "name": "get_weather", "input": {"city": "Paris"}}
    tool_use = {"role": "assistant", "content": [use]}
    assert count_completion(counter, tool_use, model) == call_tokens


def test_completion_tokens_are_the_replys_text_without_framing() -> None:
    counter = TokenCounter()
    reply = "The weather in Paris is sunny."
    assert count_completion(counter, reply, "gpt-4o") == counter.text(reply, "gpt-4o")
    assert count_completion(counter, {"role": "assistant", "content": reply}, "gpt-4o") == counter.text(reply, "gpt-4o")
    assert count_completion(counter, None, "gpt-4o") == 0


def test_repeated_texts_count_the_same_from_the_cache_and_the_cache_stays_within_its_bound() -> None:
    """A conversation sent again with every turn is counted from the cache; the counts are tiktoken's all the same,
    and the text kept for it never passes the bound (it is forgotten at once, then filled again)."""
    counter = TokenCounter(max_cached_chars=100)
    fresh = TokenCounter(max_cached_chars=0)
    texts = [f"message number {n} of a long conversation" for n in range(10)]
    for _ in range(3):
        for text in texts:
            assert counter.text(text, "gpt-4o") == fresh.text(text, "gpt-4o") > 0
            assert counter.cached_chars <= 100
    assert counter.text(texts[-1], "gpt-4") == fresh.text(texts[-1], "gpt-4")  # another model, another encoding


def test_on_the_loop_counts_come_from_the_cache_or_a_little_new_text_and_anything_more_waits_for_a_thread() -> None:
    counter = TokenCounter()
    counter.text("build the encoding first", "gpt-4o")
    long = "word " * 700  # 3,500 characters: within ON_LOOP_CHARS alone, not twice
    loop = counter.on_loop()
    assert loop.text(long, "gpt-4o") == TokenCounter().text(long, "gpt-4o")
    with pytest.raises(WouldBlock):  # the record's budget is spent: the second new long text goes to a thread
        loop.text(long + "more", "gpt-4o")
    assert counter.on_loop().text(long, "gpt-4o") == counter.text(long, "gpt-4o")  # cached: no budget spent
    with pytest.raises(WouldBlock):
        counter.on_loop().text("x" * (ON_LOOP_CHARS + 1), "gpt-4o")


def test_on_the_loop_an_encoding_never_built_waits_for_a_thread() -> None:
    counter = TokenCounter(Encodings())
    with pytest.raises(WouldBlock):
        counter.on_loop().text("hello", "gpt-4")
    assert counter.encodings.loaded() == []  # nothing was built on the loop
    counter.text("hello", "gpt-4")
    assert counter.on_loop().text("hello again", "gpt-4") == counter.text("hello again", "gpt-4")


SHARED = TokenCounter()  # the loop's cache fills across examples, as a daemon's does


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=3000), max_size=6), st.sampled_from(["gpt-4o", "gpt-4", "claude-3-haiku"]))
def test_a_count_on_the_loop_is_the_threads_count_or_none(texts: list[str], model: str) -> None:
    """On the loop a record's texts are counted exactly as in a worker thread, or not at all (WouldBlock)."""
    SHARED.text("built by a first count in a thread", model)
    counter, loop = TokenCounter(), LoopCounter(SHARED)
    for text in texts:
        try:
            counted = loop.text(text, model)
        except WouldBlock:
            break
        assert counted == counter.text(text, model)
