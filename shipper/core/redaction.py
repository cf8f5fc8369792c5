"""The redaction rules themselves: the built-in patterns users switch on, their own patterns, and field paths.

Each built-in has a strict regex (what gets replaced) and a cheap necessary condition, `might(text, lowered)`:
literal pieces every match contains, found by a C-speed substring search, never a regex scan of the whole text
(CPython's `re` walks ~10 ns per character unless a pattern starts with a literal). Redaction asks it of the
body's *raw JSON text* first, so a body none of the rules can touch is passed through without being parsed, and
only the rules whose condition holds run over the decoded strings. That is sound because JSON escapes never
touch the pieces the conditions look for (letters, digits, `@`, `-`, `_`, space), except `\\uXXXX`, which can spell
anything: a body containing one skips the shortcut. User patterns can match anything, so they always run.

Not responsible for walking a record or marking it (redact.py).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[str], bool]
Might = Callable[[str, str], bool]  # (text, lower-cased text) -> whether a match is possible
Matcher = Callable[[str], bool]


def luhn(text: str) -> bool:
    """The card-number checksum: most 13-19 digit runs (ids, timestamps) fail it and are left alone."""
    digits = [int(c) for c in text if c.isdigit()]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class PatternRule:
    name: str
    regex: re.Pattern[str]
    replacement: str
    might: Might | None = None  # None: no shortcut (user patterns)
    needs_lower: bool = False  # `might` reads the lower-cased text
    check: Check | None = None  # a match is replaced only when this holds

    def sub(self, text: str) -> str:
        if self.check is None:
            return self.regex.sub(self.replacement, text)
        check, replacement = self.check, self.replacement
        return self.regex.sub(lambda m: replacement if check(m.group(0)) else m.group(0), text)


def _any_of(*sources: str, lower: bool = False, gate: str = "") -> Might:
    """Any of these regexes, each starting with a literal (sre's literal-prefix search; a bare `in` is slower for
    more than one character). `gate`: one character every match contains, tested first with `in` (a memchr)."""
    patterns = tuple(re.compile(source) for source in sources)

    def might(text: str, lowered: str) -> bool:
        subject = lowered if lower else text
        if gate and gate not in subject:
            return False
        for pattern in patterns:  # noqa: SIM110 - on the hot path a generator costs more than the searches
            if pattern.search(subject) is not None:
                return True
        return False

    return might


def _has(char: str) -> Might:
    return lambda text, lowered: char in text


# Digits become "0", everything else "x", spaces and dashes vanish: a card number becomes 13+ zeros in a row.
_CARD_DIGITS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x78 for c in range(256))
_THIRTEEN = b"0" * 13


def _card_digits(text: str, lowered: str) -> bool:
    return _THIRTEEN in text.encode("utf-8", "replace").translate(_CARD_DIGITS, b" -")


def _either(first: Might, second: Might) -> Might:
    return lambda text, lowered: first(text, lowered) or second(text, lowered)


_KEY = r"[A-Za-z0-9_-]"
_AWS_IDS = ("AKIA", "ASIA", "AIDA", "AROA", "AGPA", "ANPA", "ANVA", "AIPA")
BUILTIN: dict[str, PatternRule] = {
    rule.name: rule
    for rule in (
        PatternRule(
            "emails",
            re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            "[REDACTED_EMAIL]",
            _has("@"),
        ),
        # 13-19 digits, optionally grouped by single spaces or dashes, that pass the Luhn check.
        PatternRule(
            "cards",
            re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])"),
            "[REDACTED_CARD]",
            _card_digits,
            check=luhn,
        ),
        # OpenAI sk-/sk-proj-, Anthropic sk-ant-, Stripe, GitHub, Slack and Google API keys.
        PatternRule(
            "api_keys",
            re.compile(
                rf"(?<![A-Za-z0-9])(?:sk-{_KEY}{{20,}}|[sr]k_(?:live|test)_[A-Za-z0-9]{{16,}}"
                rf"|gh[pousr]_[A-Za-z0-9]{{30,}}|github_pat_[A-Za-z0-9_]{{30,}}|xox[abposr]-[A-Za-z0-9-]{{10,}}"
                rf"|AIza{_KEY}{{35}})"
            ),
            "[REDACTED_API_KEY]",
            _any_of("k(?:-|_(?:live|test)_)", "g(?:h[pousr]_|ithub_pat_)", "xox", "AIza"),
        ),
        PatternRule(
            "bearer_tokens",
            re.compile(r"(?<![A-Za-z0-9])(?i:bearer) +[A-Za-z0-9._~+/-]{16,}=*"),
            "Bearer [REDACTED_TOKEN]",
            _any_of("bearer", lower=True),
            needs_lower=True,
        ),
        # Access key ids, and a secret key when it is labelled as one.
        PatternRule(
            "aws_keys",
            re.compile(
                rf"(?<![A-Z0-9])(?:{'|'.join(_AWS_IDS)})[A-Z0-9]{{16}}(?![A-Z0-9])"
                r"|(?i:aws_?secret_?access_?key|aws_?secret_?key)[ :=]+[A-Za-z0-9/+=]{40}"
            ),
            "[REDACTED_AWS_KEY]",
            _either(_any_of("A(?:KIA|SIA|IDA|ROA|GPA|NPA|NVA|IPA)"), _any_of("secret", lower=True)),
            needs_lower=True,
        ),
        PatternRule(
            "jwts",
            re.compile(rf"eyJ{_KEY}{{8,}}\.eyJ{_KEY}{{8,}}\.{_KEY}{{8,}}"),
            "[REDACTED_JWT]",
            _any_of("eyJ", gate="J"),
        ),
    )
}


def user_rule(name: str, regex: str, replacement: str) -> PatternRule:
    return PatternRule(name, re.compile(regex), replacement)


_BRACKETS = re.compile(r"\[[^\]]*\]?")
_WILDCARDS = re.compile(r"[*?]+")
# Pieces JSON never escapes (`/` may be written `\/`; `\u` escapes make redaction skip its shortcut anyway).
_PLAIN = re.compile(r"[^\"\\/\x00-\x1f]+")


@dataclass(frozen=True, slots=True)
class PathRule:
    """`a.b*.c`: one glob per segment (case-insensitive; a list's items are matched by index), `**` any depth."""

    text: str
    matchers: tuple[Matcher | None, ...]  # None stands for `**`
    chunks: tuple[str, ...]  # lower-cased literal pieces some key must contain for the rule to apply

    @classmethod
    def parse(cls, text: str) -> PathRule:
        segments = text.split(".")
        if not text or any(not segment for segment in segments):
            raise ValueError(f"field path {text!r} has an empty segment")
        if segments[-1] == "**":
            raise ValueError(f"field path {text!r} must end with a field, not `**`")
        chunks: list[str] = []
        for segment in segments:
            literal = _BRACKETS.sub("*", segment.lower())  # `[wW]` is a choice, not text a key contains
            chunks += [c for c in _WILDCARDS.split(literal) if c and not c.isdigit() and _PLAIN.fullmatch(c)]
        return cls(text, tuple(None if s == "**" else _matcher(s) for s in segments), tuple(chunks))

    def may_apply(self, lowered_raw: str) -> bool:
        return all(chunk in lowered_raw for chunk in self.chunks)


def _matcher(segment: str) -> Matcher:
    if not any(c in segment for c in "*?["):
        lowered = segment.lower()
        return lambda key: key.lower() == lowered
    pattern = re.compile(fnmatch.translate(segment), re.IGNORECASE)
    return lambda key: pattern.match(key) is not None
