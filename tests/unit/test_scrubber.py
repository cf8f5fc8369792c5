"""The proxy's scrubber blanks a secret however the answer is cut into chunks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shipper.ingest.proxy import REDACTED, Scrubber

# Lower-case hex keys cannot overlap the upper-case marker, so the whole-text replace is the exact expectation.
SECRET = st.text("0123456789abcdef", min_size=1, max_size=24)


@given(SECRET, st.lists(st.binary(max_size=40) | st.just(b"abc") | st.just(b"0f"), max_size=12), st.data())
def test_any_chunking_gives_the_same_text_as_one_replace_over_the_whole(
    secret: str, pieces: list[bytes], data: st.DataObject
) -> None:
    whole = secret.encode().join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    chunks = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    scrubber = Scrubber([secret])
    out = b"".join(scrubber.feed(chunk) for chunk in chunks) + scrubber.finish()
    assert out == whole.replace(secret.encode(), REDACTED)


def test_without_secrets_chunks_pass_unchanged_and_unheld() -> None:
    scrubber = Scrubber([None, ""])
    assert scrubber.feed(b"abc") == b"abc"
    assert scrubber.finish() == b""
