"""Cost from genai-prices' bundled table: known models, the batch rate, unknown models counted, never the network."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipper.enrich.cost import Pricer
from tests.offline import run_offline

MILLION = 1_000_000
WHEN = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model", "provider", "per_million_in", "per_million_out"),
    [
        ("gpt-4o", None, 2.5, 10.0),
        ("gpt-4o", "openai", 2.5, 10.0),
        ("gpt-4o-mini", None, 0.15, 0.6),
        ("openai/gpt-4o-mini", None, 0.15, 0.6),  # a "provider/model" name
        ("gpt-4o-mini", "openai_azure", 0.15, 0.6),  # a provider name the table does not know: by model alone
        ("claude-3-5-sonnet", "anthropic", 3.0, 15.0),
    ],
)
def test_known_models_are_priced_per_million_tokens(
    model: str, provider: str | None, per_million_in: float, per_million_out: float
) -> None:
    price = Pricer().price(model, MILLION, MILLION, provider=provider, when=WHEN)
    assert price is not None
    assert (price.input, price.output) == (pytest.approx(per_million_in), pytest.approx(per_million_out))
    assert price.total == pytest.approx(per_million_in + per_million_out)
    assert price.batch_rate is False


def test_a_small_call_costs_its_share() -> None:
    price = Pricer().price("gpt-4o", 1200, 300, when=WHEN)
    assert price is not None
    assert price.input == pytest.approx(1200 * 2.5 / MILLION)
    assert price.output == pytest.approx(300 * 10.0 / MILLION)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1"])
def test_a_batch_call_is_priced_at_the_providers_batch_rate(model: str) -> None:
    pricer = Pricer()
    standard = pricer.price(model, MILLION, MILLION, when=WHEN)
    batch = pricer.price(model, MILLION, MILLION, batch=True, when=WHEN)
    assert standard is not None and batch is not None
    assert batch.batch_rate is True
    # OpenAI's Batch API: half the price of input and output tokens.
    assert batch.input == pytest.approx(standard.input / 2)
    assert batch.output == pytest.approx(standard.output / 2)


def test_a_batch_call_for_a_model_without_a_batch_rate_keeps_the_standard_rate() -> None:
    pricer = Pricer()
    standard = pricer.price("claude-3-5-sonnet", MILLION, MILLION, provider="anthropic", when=WHEN)
    batch = pricer.price("claude-3-5-sonnet", MILLION, MILLION, provider="anthropic", batch=True, when=WHEN)
    assert standard is not None and batch is not None
    assert batch.batch_rate is False
    assert batch.total == pytest.approx(standard.total)


@pytest.mark.parametrize("model", ["my-finetune-7b", "", None])
def test_an_unknown_model_leaves_the_cost_empty_and_is_counted(model: str | None) -> None:
    pricer = Pricer()
    assert pricer.price(model, 100, 10) is None
    assert pricer.price(model, 100, 10) is None
    assert pricer.counters.unknown_model == 2
    assert pricer.counters.priced == 0
    assert pricer.price("gpt-4o", 100, 10) is not None
    assert (pricer.counters.unknown_model, pricer.counters.priced) == (2, 1)


def test_pricing_needs_no_network(tmp_path: Path) -> None:
    # genai-prices only fetches when an UpdatePrices task is started; shipper never starts one. Prove it.
    code = """
        from shipper.enrich.cost import Pricer
        price = Pricer().price("gpt-4o", 1_000_000, 0, batch=True)
        print(price.input)
    """
    assert float(run_offline(tmp_path, tmp_path, code)) == pytest.approx(1.25)
