"""Offline token counting: tiktoken's own encodings, built from rank files shipped inside the package.

`tiktoken.get_encoding()` downloads its rank files on first use; shipper's hosts often have no internet, so the two
files shipper needs (`o200k_base`, `cl100k_base`) ship as package data (`shipper/data/*.tiktoken.gz`). Each is
decompressed, checked against the sha256 tiktoken itself pins, parsed as `tiktoken.load.load_tiktoken_bpe` parses it
(one line at a time; a test holds the two equal) and turned into a `tiktoken.Encoding` by
tiktoken_ext.openai_public's own constructor, so the pattern, special tokens and vocabulary size are tiktoken's, not
a copy. Loading is lazy (o200k_base costs ~47 MB once built, ~71 MB at its peak while it is built, and ~0.3 s;
cl100k_base ~27 MB, ~38 MB at its peak, ~0.15 s; so only the ones a model needs are built), cached, thread-safe and
never touches the network; tiktoken itself is imported with the first encoding, so a process that never counts
(the supervisor, an ingest process) never holds it. Models whose tokenizer is not OpenAI's are approximated with
o200k_base, the encoding current OpenAI models use, so a deployment mixing those with other providers' models loads
one encoding, not both; cl100k_base is loaded only for the models that use it (gpt-4, gpt-3.5, embeddings).

Not responsible for the chat-message formula (chat.py) or for what a vendor record looks like (usage.py).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import threading
import types
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shipper.errors import ShipperError

if TYPE_CHECKING:  # tiktoken itself is imported by the first encoding built: see Encodings._build
    import tiktoken

O200K = "o200k_base"
CL100K = "cl100k_base"
# The sha256 of each decompressed rank file: the very `expected_hash` tiktoken_ext.openai_public pins.
RANK_FILES: dict[str, tuple[str, str]] = {
    O200K: ("o200k_base.tiktoken.gz", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    CL100K: ("cl100k_base.tiktoken.gz", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
}
# Model prefixes (after any "provider/" prefix) and their encodings, most specific first; as tiktoken.model maps them.
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss", "ft:gpt-4o")
_CL100K_PREFIXES = (
    "gpt-4", "gpt-3.5", "gpt-35", "text-embedding-", "davinci-002", "babbage-002", "ft:gpt-4", "ft:gpt-3.5",
)  # fmt: skip


APPROXIMATION = O200K


# How much new text one record may have counted on the event loop: tiktoken takes ~13 µs per 1,000 characters, so
# this is ~50 µs, against ~1 ms for the trip to a worker thread and back on a busy daemon.
ON_LOOP_CHARS = 4096


class Counter(Protocol):
    def text(self, text: str, model: str | None) -> int:
        """Tokens of `text` in the encoding of `model`."""
        ...


class WouldBlock(Exception):
    """Counting this on the event loop would hold it too long: count in a worker thread instead."""


class TokenDataError(ShipperError):
    """A shipped rank file is missing or corrupted: token counts cannot be trusted, so none are made."""


def encoding_for_model(model: str | None) -> str:
    """The encoding OpenAI's model uses; o200k_base stands in (an approximation) for every other model.

    Claude, Gemini, Llama, Mistral … have tokenizers of their own that are not public or not offline; any of
    tiktoken's encodings is an estimate of theirs, which is what a missing usage figure needs. The stand-in is the
    one the gpt-4o family already loads, so it costs no second encoding's memory.
    """
    name = (model or "").strip().lower().rsplit("/", 1)[-1]  # "openai/gpt-4o", "azure/gpt-4o-mini"
    if name.startswith(_O200K_PREFIXES):
        return O200K
    if name.startswith(_CL100K_PREFIXES):
        return CL100K
    return APPROXIMATION


def is_openai_model(model: str | None) -> bool:
    """Whether the count for this model is OpenAI's own tokenizer rather than the cl100k_base approximation."""
    name = (model or "").strip().lower().rsplit("/", 1)[-1]
    return name.startswith(_O200K_PREFIXES + _CL100K_PREFIXES)


def _package_data() -> Traversable:
    return resources.files("shipper").joinpath("data")


class Encodings:
    """The shipped encodings, built on first use; a failure is remembered so it is not retried per record."""

    def __init__(self, data_dir: Traversable | Path | None = None) -> None:
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._built: dict[str, tiktoken.Encoding] = {}
        self._failed: dict[str, TokenDataError] = {}

    def get(self, name: str) -> tiktoken.Encoding:
        found = self._built.get(name)
        if found is not None:
            return found
        with self._lock:
            if name in self._failed:
                raise self._failed[name]
            if name not in self._built:
                try:
                    self._built[name] = self._build(name)
                except TokenDataError as exc:
                    self._failed[name] = exc
                    raise
            return self._built[name]

    def loaded(self) -> list[str]:
        return sorted(self._built)

    def built(self, name: str) -> bool:
        return name in self._built

    def _build(self, name: str) -> tiktoken.Encoding:
        # Imported here, not with this module: every process imports the enrichment code (the sinks do), but only
        # the one that counts (the delivery role, or the daemon alone) should hold tiktoken in its memory.
        import tiktoken
        import tiktoken_ext.openai_public  # type: ignore[import-untyped]

        if name not in RANK_FILES:
            raise TokenDataError(f"no rank file is shipped for encoding {name!r}")
        constructor = getattr(tiktoken_ext.openai_public, name)
        # tiktoken's own constructor, run with our loader in place of its downloader (a copy of the function with
        # one global swapped: nothing in tiktoken is patched, other threads and callers are unaffected).
        offline = types.FunctionType(
            constructor.__code__, {**constructor.__globals__, "load_tiktoken_bpe": self._loader(name)}
        )
        spec: dict[str, Any] = offline()
        encoding = tiktoken.Encoding(**spec)
        # The Rust core has copied the ranks; tiktoken keeps our dict only to pickle the encoding, which shipper
        # never does. Emptied, it gives back ~26 MB (o200k_base) for as long as the process lives.
        spec["mergeable_ranks"].clear()
        return encoding

    def _loader(self, name: str) -> Callable[..., dict[bytes, int]]:
        filename, pinned = RANK_FILES[name]

        def load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
            if expected_hash != pinned:  # tiktoken changed its files: ours would silently count differently
                raise TokenDataError(f"tiktoken expects {name} with sha256 {expected_hash}, shipper ships {pinned}")
            return load_ranks(self._read(filename), pinned, name)

        return load

    def _read(self, filename: str) -> bytes:
        base = self._data_dir if self._data_dir is not None else _package_data()
        try:
            return gzip.decompress(base.joinpath(filename).read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise TokenDataError(f"cannot read the shipped rank file {filename}: {exc}") from exc


def load_ranks(data: bytes, expected_hash: str, name: str) -> dict[bytes, int]:
    """Verify, then parse as `tiktoken.load.load_tiktoken_bpe` does (a base64 token and its rank per line), but one
    line at a time and from memory: its list of every line, and the copy it reads back from a file, add ~5 MB to the
    peak of building o200k_base (and it leaves a copy in its cache directory)."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_hash:
        raise TokenDataError(f"rank file for {name} is corrupted: sha256 {actual}, expected {expected_hash}")
    try:
        return {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in io.BytesIO(data) if line.strip())
        }
    except ValueError as exc:
        raise TokenDataError(f"the rank file for {name} is not a tiktoken rank file: {exc}") from exc


DEFAULT_ENCODINGS = Encodings()


# A multi-turn app sends the whole conversation with every call, so the same messages are counted again and again:
# counts are kept per (encoding, text) for texts up to MAX_CACHED_TEXT characters, up to MAX_CACHED_CHARS of text in
# all (then forgotten at once, as the spool's scope cache is). On the bench's Freeplay creates this took a send
# (token count, request, answer) from ~250 to ~105 µs of CPU.
MAX_CACHED_TEXT = 16_384
MAX_CACHED_CHARS = 2_000_000


class TokenCounter:
    """Counts text in the encoding of a model; `encode_ordinary` so text that spells a special token is just text.
    Used from worker threads: the cache is a dict, each step of which the GIL keeps whole."""

    def __init__(self, encodings: Encodings = DEFAULT_ENCODINGS, max_cached_chars: int = MAX_CACHED_CHARS) -> None:
        self.encodings = encodings
        self._counts: dict[tuple[str, str], int] = {}
        self._cached_chars = 0
        self._max_cached_chars = max_cached_chars

    @property
    def cached_chars(self) -> int:
        return self._cached_chars

    def encoding(self, model: str | None) -> tiktoken.Encoding:
        return self.encodings.get(encoding_for_model(model))

    def text(self, text: str, model: str | None) -> int:
        if not text:
            return 0
        name = encoding_for_model(model)
        found = self.cached(name, text)
        if found is not None:
            return found
        return self._count(name, text)

    def cached(self, name: str, text: str) -> int | None:
        return self._counts.get((name, text))

    def on_loop(self) -> LoopCounter:
        """A counter for one record on the event loop (see LoopCounter)."""
        return LoopCounter(self)

    def _count(self, name: str, text: str) -> int:
        key = (name, text)
        count = len(self.encodings.get(name).encode_ordinary(text))
        if len(text) <= MAX_CACHED_TEXT:
            if self._cached_chars + len(text) > self._max_cached_chars:
                self._counts.clear()
                self._cached_chars = 0
            self._counts[key] = count
            self._cached_chars += len(text)
        return count


class LoopCounter:
    """One record's counts on the event loop, where a worker thread would cost more than the count: a multi-turn app
    re-sends its conversation with every call, so most texts are in the cache, and what is new is short. Counts from
    the cache, and new text up to ON_LOOP_CHARS in all in an encoding already built; anything more (a long new text,
    an encoding still to build) raises WouldBlock before tiktoken is asked, and the record is counted in a thread."""

    def __init__(self, counter: TokenCounter, budget: int = ON_LOOP_CHARS) -> None:
        self._counter = counter
        self._budget = budget

    def text(self, text: str, model: str | None) -> int:
        if not text:
            return 0
        name = encoding_for_model(model)
        found = self._counter.cached(name, text)
        if found is not None:
            return found
        if len(text) > self._budget or not self._counter.encodings.built(name):
            raise WouldBlock(name)
        self._budget -= len(text)
        return self._counter.text(text, model)
