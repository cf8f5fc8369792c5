"""Cost of an LLM call in US dollars, from genai-prices' bundled price table, fully offline.

genai-prices (pydantic's maintained table of ~50 providers, with dated price changes, tiered long-context rates
and per-request variants) ships its data inside the package and only goes to the network when a caller starts
its `UpdatePrices` task, which shipper never does: prices are those of the installed version, and upgrading the
package updates them. A batch request (`api_style = "batch"`) is priced with the table's batch variant for the
model (`price_context={"processing": "batch"}`: OpenAI, Anthropic, Google, Mistral, Groq, xAI publish ~50%); a
model the table has no batch rate for is priced at its standard rate rather than at a guessed discount.

A model the table does not know leaves the cost empty and counts in `PriceCounters.unknown_model`, a plain int
the metrics collector reads. Not responsible for token counts (tokens.py) or vendor field names (shipper/vendors/).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # genai-prices imports its whole table (~0.15 s): only when the first price is asked for
    from genai_prices import Usage
    from genai_prices.types import PriceCalculation

log = logging.getLogger(__name__)

BATCH_CONTEXT = {"processing": "batch"}
# Model names the app chose are unbounded; remembering which were logged must not be.
_LOGGED_MAX = 256


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # dollars for the prompt tokens
    output: float  # dollars for the completion tokens
    batch_rate: bool  # the table's batch rate was applied

    @property
    def total(self) -> float:
        return self.input + self.output


@dataclass(slots=True)
class PriceCounters:
    """Plain ints for the metrics collector; written under the Pricer's lock (pricing runs in worker threads)."""

    priced: int = 0
    unknown_model: int = 0


class Pricer:
    """Prices calls; thread-safe, so it can run in `asyncio.to_thread` workers."""

    def __init__(self, counters: PriceCounters | None = None) -> None:
        self.counters = counters or PriceCounters()
        self._lock = threading.Lock()
        self._logged: set[str] = set()

    def price(
        self,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        *,
        provider: str | None = None,
        batch: bool = False,
        when: datetime | None = None,
    ) -> Price | None:
        """The call's cost, or None (counted) when the table does not know the model."""
        from genai_prices import Usage

        usage = Usage(input_tokens=max(0, input_tokens), output_tokens=max(0, output_tokens))
        when = when or datetime.now(tz=UTC)
        found = self._calc(usage, model, provider, batch, when) if model else None
        if found is None:
            self._unknown(model, provider)
            return None
        with self._lock:
            self.counters.priced += 1
        return Price(_dollars(found.input_price), _dollars(found.output_price), batch and _has_batch_rate(found, when))

    def _calc(
        self, usage: Usage, model: str, provider: str | None, batch: bool, when: datetime
    ) -> PriceCalculation | None:
        from genai_prices import calc_price

        context = BATCH_CONTEXT if batch else None
        for provider_id, model_ref in _candidates(model, provider):
            try:
                return calc_price(
                    usage,
                    model_ref,
                    provider_id=provider_id,
                    genai_request_timestamp=when,
                    price_context=context,
                )
            except LookupError:
                continue
        return None

    def _unknown(self, model: str | None, provider: str | None) -> None:
        with self._lock:
            self.counters.unknown_model += 1
            first = model not in self._logged and len(self._logged) < _LOGGED_MAX
            if first:
                self._logged.add(str(model))
        if first:
            log.warning("no price for model %r (provider %r): cost left empty", model, provider)


def _candidates(model: str, provider: str | None) -> list[tuple[str | None, str]]:
    """The app's provider first, then the model alone, then a "provider/model" name split (Keywords AI, LiteLLM)."""
    found: list[tuple[str | None, str]] = []
    if provider:
        found.append((provider, model))
    found.append((None, model))
    prefix, slash, rest = model.partition("/")
    if slash and rest:
        found += [(prefix, rest), (None, rest)]
    return found


def _has_batch_rate(found: PriceCalculation, when: datetime) -> bool:
    if not any(candidate is found.model for candidate in found.provider.models):
        return False  # matched through another provider's table: genai-prices applies no variant then
    return any(
        dict(variant.when) == BATCH_CONTEXT and (variant.constraint is None or variant.constraint.active(when))
        for variant in found.model.price_variants or ()
    )


def _dollars(value: Decimal) -> float:
    return float(round(value, 12))
