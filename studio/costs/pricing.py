"""Cost math for chat replies: token usage + a price table -> US dollars, all in ``Decimal``.

Pure functions over data: no I/O, no clients, no gradio. Prices are held per token, the unit
OpenRouter's ``/models`` reports them in (decimal strings), and shown per million tokens.
A price that is not known is ``None``, and any cost that needs it is ``None`` too ("unknown"),
never a silent zero. A price of 0 means free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Iterable, Mapping

MILLION = Decimal(1_000_000)
JOULES_PER_KWH = Decimal(3_600_000)
CHARS_PER_TOKEN = 4
# Role markers and separators each message adds on top of its text (OpenAI-style chat formats).
TOKENS_PER_MESSAGE = 4
# What a chat request adds around all its messages (the reply's priming, OpenAI-style).
TOKENS_PER_REQUEST = 3
# Amounts below this are shown as a bound ("<$0.00000001"), not as a rounded zero: a
# hundredth of a micro-dollar is below one token of the cheapest priced model.
SMALLEST_SHOWN = Decimal("0.00000001")
# The shortest reply worth sending a cloud request for: when a budget cap leaves room for
# fewer tokens, the request is refused before it goes out (issue 14).
MIN_REPLY_TOKENS = 64
# Amounts below a cent get this many significant digits (at least): $0.0042, $0.000083.
SIGNIFICANT_DIGITS = 2


def to_decimal(value: object) -> Decimal | None:
    """Decimal from a number or decimal string; ``None`` for None, blanks and garbage.

    Negative prices (OpenRouter uses ``"-1"`` for variable-price routers) are "unknown" too.

    >>> to_decimal("0.00000015")
    Decimal('1.5E-7')
    >>> to_decimal("-1") is None
    True
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    else:
        try:
            # str() first: Decimal(0.1) would carry the float's binary error into the bill.
            number = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            return None
    if not number.is_finite() or number < 0:
        return None
    return number


@dataclass(frozen=True)
class ModelPrices:
    """USD prices of one model: per token (prompt, completion), per image, per request.

    ``None`` means unknown. ``image`` and ``request`` default to 0 because most models
    do not charge for them separately.
    """

    prompt: Decimal | None
    completion: Decimal | None
    image: Decimal | None = Decimal(0)
    request: Decimal | None = Decimal(0)

    @classmethod
    def from_openrouter(cls, pricing: Mapping[str, object] | None) -> "ModelPrices":
        """Parse OpenRouter's ``pricing`` object (decimal strings, USD per token).

        Missing ``prompt``/``completion`` (or ``"-1"``) -> unknown; missing image/request -> 0.
        """
        pricing = pricing or {}
        return cls(
            prompt=to_decimal(pricing.get("prompt")),
            completion=to_decimal(pricing.get("completion")),
            image=to_decimal(pricing["image"]) if "image" in pricing else Decimal(0),
            request=to_decimal(pricing["request"]) if "request" in pricing else Decimal(0),
        )

    @classmethod
    def per_million(cls, prompt: object, completion: object, *, image: object = 0,
                    request: object = 0) -> "ModelPrices":
        """Build prices from USD per *million* tokens, the way price pages show them."""
        p, c = to_decimal(prompt), to_decimal(completion)
        return cls(
            prompt=None if p is None else p / MILLION,
            completion=None if c is None else c / MILLION,
            image=to_decimal(image),
            request=to_decimal(request),
        )

    @classmethod
    def unknown(cls) -> "ModelPrices":
        return cls(prompt=None, completion=None, image=None, request=None)

    @property
    def is_known(self) -> bool:
        """True when prompt and completion prices are both known."""
        return self.prompt is not None and self.completion is not None

    @property
    def is_free(self) -> bool:
        """True only when every known price is zero and prompt/completion are known."""
        return self.is_known and all(
            price is None or price == 0
            for price in (self.prompt, self.completion, self.image, self.request)
        )

    @property
    def prompt_per_million(self) -> Decimal | None:
        return None if self.prompt is None else self.prompt * MILLION

    @property
    def completion_per_million(self) -> Decimal | None:
        return None if self.completion is None else self.completion * MILLION


def reply_cost(prices: ModelPrices | None, prompt_tokens: int | None, completion_tokens: int | None,
               *, images: int = 0, requests: int = 1) -> Decimal | None:
    """USD cost of a reply (or of ``requests`` replies whose token counts were summed).

    Returns ``None`` when a price or token count that the sum needs is unknown.

    >>> reply_cost(ModelPrices.per_million(1, 2), 1_000, 500) == Decimal("0.002")
    True
    """
    if prices is None or prompt_tokens is None or completion_tokens is None:
        return None
    parts: list[tuple[Decimal | None, int]] = [
        (prices.prompt, prompt_tokens),
        (prices.completion, completion_tokens),
        (prices.image, images),
        (prices.request, requests),
    ]
    total = Decimal(0)
    for price, count in parts:
        if count == 0:
            continue
        if price is None:
            return None
        total += price * count
    return total


def estimate_prompt_cost(prices: ModelPrices | None, prompt_tokens: int,
                         max_completion_tokens: int, *, images: int = 0) -> Decimal | None:
    """Upper-bound cost of a request before sending it: the whole prompt plus the longest
    reply allowed. Used to reserve budget; ``None`` when the prices are unknown."""
    return reply_cost(prices, prompt_tokens, max_completion_tokens, images=images, requests=1)


@dataclass(frozen=True)
class ReplyCost:
    """What a cloud chat request costs as a function of its reply's length, for a budget to
    reserve before it goes out: ``fixed`` (the prompt, its images, the price per request)
    plus ``per_token`` for each reply token, the reply being at most ``max_tokens`` long.
    ``asked`` says whether the request itself set ``max_tokens`` (else it is a default).
    ``None`` prices are unknown: the cost is then unknown too.

    >>> cost = ReplyCost(fixed=Decimal("0.001"), per_token=Decimal("0.00001"), max_tokens=1000)
    >>> cost.at(100), cost.tokens_within(Decimal("0.002")), cost.tokens_within(Decimal("1"))
    (Decimal('0.00200'), 100, 1000)
    """

    fixed: Decimal | None
    per_token: Decimal | None
    max_tokens: int
    asked: bool = False

    @classmethod
    def of(cls, prices: ModelPrices | None, prompt_tokens: int, max_tokens: int, *,
           images: int = 0, asked: bool = False) -> "ReplyCost":
        """From a model's prices and a bound on the prompt's tokens."""
        fixed = reply_cost(prices, prompt_tokens, 0, images=images, requests=1)
        per_token = None if prices is None else prices.completion
        return cls(fixed=fixed, per_token=per_token, max_tokens=max_tokens, asked=asked)

    @property
    def is_known(self) -> bool:
        return self.fixed is not None and self.per_token is not None

    def at(self, tokens: int) -> Decimal | None:
        """The cost with a reply of ``tokens`` tokens; None when a price is unknown."""
        if not self.is_known:
            return None
        return self.fixed + self.per_token * tokens

    def tokens_within(self, left: Decimal) -> int:
        """The longest reply (at most ``max_tokens``) whose request costs no more than
        ``left``; -1 when even the prompt alone costs more. ``max_tokens`` when the
        prices are unknown (nothing can be worked out)."""
        if not self.is_known:
            return self.max_tokens
        room = left - self.fixed
        if room < 0:
            return -1
        if self.per_token == 0:
            return self.max_tokens
        return min(self.max_tokens, int(room / self.per_token))


def describe_prompt_estimate(prices: ModelPrices | None, prompt_tokens: int,
                             reply_tokens: int) -> str:
    """What sending a prompt will cost, for the chat to show before it is sent.

    >>> p = ModelPrices.per_million(prompt=1, completion=4)
    >>> describe_prompt_estimate(p, 3000, 1000)
    '≈ $0.003 to send about 3,000 tokens, up to $0.007 with a 1,000-token reply'
    >>> describe_prompt_estimate(None, 10, 10)
    'Cost unknown: this model has no prices in the catalog.'
    """
    send = estimate_prompt_cost(prices, prompt_tokens, 0)
    most = estimate_prompt_cost(prices, prompt_tokens, reply_tokens)
    if send is None or most is None:
        return "Cost unknown: this model has no prices in the catalog."
    if prices is not None and prices.is_free:
        return f"Free model: about {prompt_tokens:,} tokens to send."
    return (f"≈ {format_usd(send)} to send about {prompt_tokens:,} tokens, "
            f"up to {format_usd(most)} with a {reply_tokens:,}-token reply")


def estimate_tokens(text: str) -> int:
    """Rough token count of ``text``: one token per 4 characters, rounded up.

    >>> estimate_tokens(""), estimate_tokens("abcd"), estimate_tokens("abcde")
    (0, 1, 2)
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_messages_tokens(texts: Iterable[str]) -> int:
    """Rough prompt size of a chat: each message's text plus a few tokens of framing."""
    return sum(estimate_tokens(text) + TOKENS_PER_MESSAGE for text in texts)


def bound_messages_tokens(texts: Iterable[str]) -> int:
    """The most tokens a chat prompt can take, for a budget that must hold: no tokenizer
    makes more tokens of a text than it has UTF-8 bytes (each token stands for at least
    one byte), plus the framing of each message and of the request.

    >>> bound_messages_tokens(["Hello"]), bound_messages_tokens(["né"])
    (12, 10)
    """
    return TOKENS_PER_REQUEST + sum(len(text.encode("utf-8")) + TOKENS_PER_MESSAGE
                                    for text in texts)


def energy_kwh(watts: object, seconds: object) -> Decimal:
    """Energy used running at ``watts`` for ``seconds``, in kWh; ``Accounting`` multiplies it
    by the electricity price. Raises ValueError for a missing or negative figure.

    >>> energy_kwh(300, 60) * Decimal("0.30") == Decimal("0.0015")
    True
    """
    w, s = _required(watts, "watts"), _required(seconds, "seconds")
    return w * s / JOULES_PER_KWH


def round_usd(amount: Decimal, places: int = 6) -> Decimal:
    """Round half-up to ``places`` decimals (default: micro-dollars, enough for per-reply costs).

    >>> round_usd(Decimal("0.00000250"), 6)
    Decimal('0.000003')
    """
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def format_usd(amount: Decimal | float | int | str | None, *, zero: str = "free",
               unknown: str = "unknown", digits: int = SIGNIFICANT_DIGITS) -> str:
    """Dollar amount for people: ``$12.34``, ``$0.0042``, ``$0.000083``, ``free``, ``unknown``.

    Amounts of a dollar or more get cents and thousands separators; smaller ones up to four
    decimals (at least two), and amounts below a cent at least ``digits`` significant
    digits, so that a tiny budget reads as a number ("$0.000083 left"), not as a bound.
    Below ``SMALLEST_SHOWN`` (a hundredth of a micro-dollar) it says ``<$0.00000001``.

    >>> [format_usd(x) for x in ("12.341", "0.00421", "0.0000834", 0, None)]
    ['$12.34', '$0.0042', '$0.000083', 'free', 'unknown']
    >>> format_usd("0.0000834", digits=3)
    '$0.0000834'
    """
    if amount is None:
        return unknown
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    if not value.is_finite():
        return unknown
    if value == 0:
        return zero
    sign, value = ("-", -value) if value < 0 else ("", value)
    if value < SMALLEST_SHOWN:
        return f"{sign}<${SMALLEST_SHOWN:f}"
    if value < 1:
        # Four decimals, or more where the amount needs them for its significant digits;
        # trailing zeros dropped down to cents: $0.50, $0.123, $0.0042, $0.000083.
        places = max(4, digits - 1 - value.adjusted())
        small = round_usd(value, places)
        if small < 1:
            text = f"{small:f}".rstrip("0")
            text += "0" * max(0, 2 - len(text.split(".")[1]))
            return f"{sign}${text}"
    return f"{sign}${round_usd(value, 2):,}"


def format_usd_apart(*amounts: Decimal | None, zero: str = "free") -> list[str]:
    """The amounts formatted with as many significant digits as it takes (up to six) for
    different amounts to read differently, e.g. in "could cost up to X, more than the Y left".

    >>> format_usd_apart(Decimal("0.000101"), Decimal("0.0001"))
    ['$0.000101', '$0.0001']
    """
    for digits in range(SIGNIFICANT_DIGITS, 7):
        texts = [format_usd(a, zero=zero, digits=digits) for a in amounts]
        distinct = {a for a in amounts if a is not None}
        if len(set(texts)) >= len(distinct):
            return texts
    return texts


def format_price_per_million(price_per_token: Decimal | None) -> str:
    """Per-token price shown per million tokens: ``$0.15/M``, ``free``, ``?``.

    >>> format_price_per_million(Decimal("0.00000015"))
    '$0.15/M'
    """
    if price_per_token is None:
        return "?"
    if price_per_token == 0:
        return "free"
    per_million = price_per_token * MILLION
    if per_million >= Decimal("0.01"):
        return f"${round_usd(per_million, 2):,}/M"
    return f"${per_million.normalize():f}/M"


def _required(value: object, name: str) -> Decimal:
    number = to_decimal(value)
    if number is None:
        raise ValueError(f"{name} must be a non-negative number (got {value!r}).")
    return number
