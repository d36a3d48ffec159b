import doctest
from decimal import Decimal

import pytest

from studio.costs import pricing as costs
from studio.costs.pricing import (ModelPrices, energy_kwh,
                          estimate_messages_tokens, estimate_prompt_cost, estimate_tokens,
                          format_price_per_million, format_usd, format_usd_apart, reply_cost, round_usd, to_decimal)

D = Decimal
GPT4O_MINI = ModelPrices.from_openrouter(
    {"prompt": "0.00000015", "completion": "0.0000006", "request": "0", "image": "0.000217"})
FREE = ModelPrices.from_openrouter({"prompt": "0", "completion": "0"})
PER_REQUEST = ModelPrices(prompt=D("0.000001"), completion=D("0.000002"), request=D("0.005"))
UNKNOWN = ModelPrices.unknown()


@pytest.mark.parametrize("pricing, expected", [
    ({"prompt": "0.00000015", "completion": "0.0000006"},
     ModelPrices(D("0.00000015"), D("0.0000006"), D(0), D(0))),
    ({"prompt": "0", "completion": "0", "image": "0", "request": "0"},
     ModelPrices(D(0), D(0), D(0), D(0))),
    ({"prompt": "-1", "completion": "-1"}, ModelPrices(None, None, D(0), D(0))),
    ({"completion": "0.000001"}, ModelPrices(None, D("0.000001"), D(0), D(0))),
    ({"prompt": "abc", "completion": "0.1", "image": "oops"}, ModelPrices(None, D("0.1"), None, D(0))),
    ({}, ModelPrices(None, None, D(0), D(0))),
    (None, ModelPrices(None, None, D(0), D(0))),
])
def test_model_prices_from_openrouter_parses_decimal_strings(pricing, expected):
    assert ModelPrices.from_openrouter(pricing) == expected


def test_model_prices_per_million_converts_to_per_token():
    prices = ModelPrices.per_million("0.15", "0.60")
    assert prices.prompt == D("0.00000015")
    assert prices.completion == D("0.0000006")
    assert prices.prompt_per_million == D("0.15")
    assert prices.completion_per_million == D("0.60")


@pytest.mark.parametrize("prices, is_free, is_known", [
    (FREE, True, True),
    (GPT4O_MINI, False, True),
    (UNKNOWN, False, False),
    (ModelPrices(D(0), D(0), D(0), D("0.01")), False, True),
    (ModelPrices(D(0), None), False, False),
])
def test_model_prices_flags_free_and_unknown(prices, is_free, is_known):
    assert prices.is_free is is_free
    assert prices.is_known is is_known


@pytest.mark.parametrize("prices, prompt, completion, images, requests, expected", [
    (GPT4O_MINI, 0, 0, 0, 1, D(0)),
    (GPT4O_MINI, 1000, 500, 0, 1, D("0.00045")),
    (GPT4O_MINI, 1_000_000, 1_000_000, 0, 1, D("0.75")),
    (GPT4O_MINI, 10, 4, 1, 1, D("0.0002209")),
    (FREE, 123_456, 7_890, 0, 1, D(0)),
    (PER_REQUEST, 1000, 1000, 0, 1, D("0.008")),
    (PER_REQUEST, 2000, 2000, 0, 2, D("0.016")),
    (UNKNOWN, 10, 10, 0, 1, None),
    (UNKNOWN, 0, 0, 0, 0, D(0)),
    (ModelPrices(D("0.000001"), None), 10, 0, 0, 1, D("0.00001")),
    (ModelPrices(D("0.000001"), None), 10, 5, 0, 1, None),
    (ModelPrices(D(0), D(0), image=None), 0, 0, 2, 1, None),
    (GPT4O_MINI, None, 5, 0, 1, None),
    (None, 10, 5, 0, 1, None),
])
def test_reply_cost_sums_per_token_prices(prices, prompt, completion, images, requests, expected):
    assert reply_cost(prices, prompt, completion, images=images, requests=requests) == expected


def test_reply_cost_is_exact_decimal_not_float():
    cost = reply_cost(ModelPrices(D("0.0000001"), D("0.0000002")), 3, 3)
    assert cost == D("0.0000009")
    assert isinstance(cost, Decimal)


@pytest.mark.parametrize("prices, prompt, max_completion, expected", [
    (GPT4O_MINI, 1000, 1000, D("0.00075")),
    (GPT4O_MINI, 0, 0, D(0)),
    (FREE, 5000, 4096, D(0)),
    (UNKNOWN, 100, 100, None),
])
def test_estimate_prompt_cost_assumes_longest_reply(prices, prompt, max_completion, expected):
    assert estimate_prompt_cost(prices, prompt, max_completion) == expected


@pytest.mark.parametrize("text, tokens", [
    ("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("héllo wörld", 3),
])
def test_estimate_tokens_counts_four_chars_per_token(text, tokens):
    assert estimate_tokens(text) == tokens


def test_estimate_messages_tokens_adds_framing_per_message():
    assert estimate_messages_tokens([]) == 0
    assert estimate_messages_tokens(["abcd", ""]) == 1 + 4 + 0 + 4


@pytest.mark.parametrize("watts, seconds, expected", [
    (300, 60, D("0.005")),
    (1000, 3600, D(1)),
    ("450.5", 0, D(0)),
    (0, 3600, D(0)),
    (250.0, 36, D("0.0025")),
])
def test_energy_kwh_is_watts_times_seconds_in_kwh(watts, seconds, expected):
    assert energy_kwh(watts, seconds) == expected


@pytest.mark.parametrize("watts, seconds", [(-1, 10), (100, None), ("abc", 10)])
def test_energy_kwh_rejects_bad_numbers(watts, seconds):
    with pytest.raises(ValueError):
        energy_kwh(watts, seconds)


@pytest.mark.parametrize("amount, places, expected", [
    (D("0.0000025"), 6, D("0.000003")),
    (D("0.0000024999"), 6, D("0.000002")),
    (D("12.345"), 2, D("12.35")),
    (D("0"), 4, D("0.0000")),
])
def test_round_usd_rounds_half_up(amount, places, expected):
    assert round_usd(amount, places) == expected
    assert str(round_usd(amount, places)) == str(expected)


@pytest.mark.parametrize("amount, text", [
    (D("0.0042"), "$0.0042"),
    (D("0.00421"), "$0.0042"),
    (D("12.341"), "$12.34"),
    (D("12.345"), "$12.35"),
    (D("1234.5"), "$1,234.50"),
    (D("0.5"), "$0.50"),
    (D("0.123"), "$0.123"),
    (D("0.12345"), "$0.1235"),
    (D("0.99996"), "$1.00"),
    (D("0.0001"), "$0.0001"),
    (D("0.00009"), "$0.00009"),
    (D("0.0000834"), "$0.000083"),
    (D("0.00000214"), "$0.0000021"),
    (D("0.0000001"), "$0.0000001"),
    (D("0.000000001"), "<$0.00000001"),
    (D("0"), "free"),
    (0, "free"),
    (0.0042, "$0.0042"),
    ("3", "$3.00"),
    (D("-0.5"), "-$0.50"),
    (None, "unknown"),
    (D("NaN"), "unknown"),
])
def test_format_usd_shows_amounts_for_people(amount, text):
    assert format_usd(amount) == text


@pytest.mark.parametrize("amounts, texts", [
    ((D("0.00012"), D("0.000083")), ["$0.00012", "$0.000083"]),
    ((D("0.000101"), D("0.0001")), ["$0.000101", "$0.0001"]),
    ((D("0.0001234"), D("0.0001239")), ["$0.000123", "$0.000124"]),
    ((D("0.5"), D("0.5")), ["$0.50", "$0.50"]),
])
def test_format_usd_apart_tells_different_amounts_apart(amounts, texts):
    assert format_usd_apart(*amounts) == texts


def test_budget_refusal_of_tiny_amounts_reads_as_numbers():
    # The issue: "could cost up to <$0.0001, more than the <$0.0001 left".
    cost, left = format_usd_apart(D("0.0000634"), D("0.0000412"))
    assert (cost, left) == ("$0.000063", "$0.000041")


def test_format_usd_labels_are_configurable():
    assert format_usd(0, zero="$0.00") == "$0.00"
    assert format_usd(None, unknown="—") == "—"


@pytest.mark.parametrize("price, text", [
    (D("0.00000015"), "$0.15/M"),
    (D("0.0000025"), "$2.50/M"),
    (D("0.000015"), "$15.00/M"),
    (D("0.000000001"), "$0.001/M"),
    (D(0), "free"),
    (None, "?"),
])
def test_format_price_per_million_shows_dollars_per_million_tokens(price, text):
    assert format_price_per_million(price) == text


@pytest.mark.parametrize("value, expected", [
    ("0.5", D("0.5")), (0.1, D("0.1")), (3, D(3)), (D("2"), D(2)),
    (None, None), ("", None), ("-1", None), ("inf", None), (True, None), ("nope", None),
])
def test_to_decimal_reads_prices_and_rejects_garbage(value, expected):
    assert to_decimal(value) == expected


def test_costs_doctests_pass():
    assert doctest.testmod(costs).failed == 0
