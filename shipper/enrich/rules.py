"""The redaction rules themselves: the built-in patterns users switch on, their own patterns, and field paths.

A pattern rule has a strict regex (what gets replaced) and a prefilter: a regex that finds at least every strict
match in the body's *raw JSON text*, so a body with no hit is passed through without being parsed. The two differ
only where JSON escapes could hide a strict match: a `\\n` before `sk-…` puts an `n` where the strict lookbehind
wants a boundary, so the prefilter drops that lookbehind. No built-in can match `"`, `\\` or a control character,
so JSON escapes cannot split a match; `\\uXXXX` and `\\/` escapes can, and bodies containing them skip the
prefilter. User patterns can match anything (anchors, lookarounds, newlines), so they are never prefiltered.

Not responsible for walking a record or marking it (redact.py).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[str], bool]
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
    prefilter: re.Pattern[str] | None  # None: cannot be prefiltered (user patterns)
    hint: str = ""  # a substring every match contains: a cheap `in` test before any regex runs
    check: Check | None = None  # a match is replaced only when this holds

    def sub(self, text: str) -> str:
        if self.hint and self.hint not in text:
            return text
        if self.check is None:
            return self.regex.sub(self.replacement, text)
        check, replacement = self.check, self.replacement
        return self.regex.sub(lambda m: replacement if check(m.group(0)) else m.group(0), text)

    def hits_raw(self, text: str) -> bool:
        if self.prefilter is None:
            return True
        if self.hint and self.hint not in text:
            return False
        if self.check is None:
            return self.prefilter.search(text) is not None
        return any(self.check(m.group(0)) for m in self.prefilter.finditer(text))


def _rule(
    name: str, strict: str, replacement: str, relaxed: str | None = None, hint: str = "", check: Check | None = None
) -> PatternRule:
    return PatternRule(name, re.compile(strict), replacement, re.compile(relaxed or strict), hint, check)


_KEY = r"[A-Za-z0-9_-]"
BUILTIN: dict[str, PatternRule] = {
    rule.name: rule
    for rule in (
        _rule(
            "emails",
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            "[REDACTED_EMAIL]",
            relaxed=r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            hint="@",
        ),
        # 13-19 digits, optionally grouped by single spaces or dashes, that pass the Luhn check.
        _rule("cards", r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])", "[REDACTED_CARD]", check=luhn),
        # OpenAI sk-/sk-proj-, Anthropic sk-ant-, Stripe, GitHub, Slack and Google API keys.
        _rule(
            "api_keys",
            rf"(?<![A-Za-z0-9])(?:sk-{_KEY}{{20,}}|[sr]k_(?:live|test)_[A-Za-z0-9]{{16,}}|gh[pousr]_[A-Za-z0-9]{{30,}}"
            rf"|github_pat_[A-Za-z0-9_]{{30,}}|xox[abposr]-[A-Za-z0-9-]{{10,}}|AIza{_KEY}{{35}})",
            "[REDACTED_API_KEY]",
            relaxed=rf"sk-{_KEY}{{20,}}|[sr]k_(?:live|test)_[A-Za-z0-9]{{16,}}|gh[pousr]_[A-Za-z0-9]{{30,}}"
            rf"|github_pat_[A-Za-z0-9_]{{30,}}|xox[abposr]-[A-Za-z0-9-]{{10,}}|AIza{_KEY}{{35}}",
        ),
        _rule(
            "bearer_tokens",
            r"(?<![A-Za-z0-9])(?i:bearer) +[A-Za-z0-9._~+/-]{16,}=*",
            "Bearer [REDACTED_TOKEN]",
            relaxed=r"(?i:bearer) +[A-Za-z0-9._~+/-]{16,}",
        ),
        # Access key ids, and a secret key when it is labelled as one.
        _rule(
            "aws_keys",
            r"(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])"
            r"|(?i:aws_?secret_?access_?key|aws_?secret_?key)[ :=]+[A-Za-z0-9/+=]{40}",
            "[REDACTED_AWS_KEY]",
        ),
        _rule("jwts", rf"eyJ{_KEY}{{8,}}\.eyJ{_KEY}{{8,}}\.{_KEY}{{8,}}", "[REDACTED_JWT]", hint="eyJ"),
    )
}


def user_rule(name: str, regex: str, replacement: str) -> PatternRule:
    return PatternRule(name, re.compile(regex), replacement, prefilter=None)


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
            chunks += [c for c in re.split(r"[*?\[\]]+", segment.lower()) if c and not c.isdigit()]
        return cls(text, tuple(None if s == "**" else _matcher(s) for s in segments), tuple(chunks))

    def may_apply(self, lowered_raw: str) -> bool:
        return all(chunk in lowered_raw for chunk in self.chunks)


def _matcher(segment: str) -> Matcher:
    if not any(c in segment for c in "*?["):
        lowered = segment.lower()
        return lambda key: key.lower() == lowered
    pattern = re.compile(fnmatch.translate(segment), re.IGNORECASE)
    return lambda key: pattern.match(key) is not None
