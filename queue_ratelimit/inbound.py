"""Limits on your own API, the inbound side of the 429: rules, keys and the answer's fields.

A ``Rule`` says which requests it limits (path prefixes, methods), how they are keyed (a
function of the request: client IP, an API key's digest, a user id; ``None`` keys every
request alike: a global limit) and at which ``Rate``\\ s (per second and per day at once:
one decision, all or nothing). Each rule is an integration of the limiter with fixed rates
(no AIMD unless ``adaptive``), and each key one of its tenants, so the shared limiter, its
Redis state, the CLI and the metrics serve inbound limits as they serve outbound ones.

This module is pure (no I/O): the ASGI middleware and the FastAPI dependency
(``queue_ratelimit.asgi``) use it. The answer's fields follow the IETF draft
(draft-ietf-httpapi-ratelimit-headers): ``RateLimit-Policy`` states each rate as
``"name";q=<limit>;w=<seconds>``; ``RateLimit`` states, per rate, ``r``: the requests that
may go now (the bucket's whole tokens), and ``t``: the seconds until it is full again. A
refusal has ``Retry-After`` (whole seconds, rounded up) and ``r=0``. A client that keeps to
``r`` and waits ``t`` at ``r=0`` meets no 429 (this project's HTTP clients do it).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.errors import ConfigError

__all__ = [
    "Adaptive",
    "KeyFunction",
    "Rate",
    "Rule",
    "by_client_ip",
    "by_header",
    "by_route",
    "fields_for_grant",
    "fields_for_refusal",
    "key_name",
]

KeyFunction = Callable[[Any], "str | None"]
"""A function of the request (a ``starlette.requests.Request``) to the key its limit counts
under; ``None`` exempts the request from the rule."""

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,47}$")


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``per`` seconds, in bursts of up to ``burst`` (default
    ``limit``): a token bucket holding ``burst`` and refilling ``limit / per`` each second.
    Over any ``per`` seconds at most ``burst + limit`` pass, and ``limit`` when sustained.

    ``aligned=True`` makes it a fixed window instead: exactly ``limit`` in each window of
    ``per`` seconds, aligned to multiples of it since the epoch (``per=86_400``: each UTC
    day, renewed at 00:00 UTC). Not for a rule's first rate, which is its bucket."""

    limit: float
    per: float = 1.0
    burst: float | None = None
    aligned: bool = False

    def __post_init__(self) -> None:
        for name, value in (("limit", self.limit), ("per", self.per), ("burst", self.burst)):
            if value is None and name == "burst":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(None, f"rate.{name}", value, "must be a number")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(None, f"rate.{name}", value, "must be a finite number > 0")
            if name != "burst" and value != int(value):  # q and w are whole in the fields
                raise ConfigError(
                    None, f"rate.{name}", value, "must be a whole number (0.5/s: Rate(1, per=2))"
                )
        if self.burst is not None and self.burst < 1:
            raise ConfigError(None, "rate.burst", self.burst, "must be >= 1 (one request)")
        if self.limit / self.per > 1e6:
            raise ConfigError(None, "rate.limit", self.limit, "more than 1e6 per second")

    @property
    def rate(self) -> float:
        """Requests per second, sustained."""
        return self.limit / self.per

    @property
    def capacity(self) -> float:
        """The bucket's size: the most requests at once."""
        return max(1.0, self.burst if self.burst is not None else self.limit)


@dataclass(frozen=True)
class Adaptive:
    """AIMD on an inbound rule, to protect a fragile downstream: the rate falls when the app
    answers a status in ``statuses`` or takes longer than ``slow_after`` seconds, and climbs
    back on answers that are neither, between ``min_share`` of the first rate and the rate."""

    statuses: tuple[int, ...] = (500, 502, 503, 504)
    slow_after: float | None = None
    min_share: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.statuses, str | int) or not all(
            isinstance(code, int) and 100 <= code <= 599 for code in self.statuses
        ):
            raise ConfigError(None, "adaptive.statuses", self.statuses, "give HTTP status codes")
        if not 0 < self.min_share <= 1:
            raise ConfigError(None, "adaptive.min_share", self.min_share, "must be in (0, 1]")
        if self.slow_after is not None and not self.slow_after > 0:
            raise ConfigError(None, "adaptive.slow_after", self.slow_after, "must be > 0")

    def is_backoff(self, status: int, seconds: float) -> bool:
        """Whether an answer of the app slows the rule down."""
        slow = self.slow_after is not None and seconds > self.slow_after
        return status in self.statuses or slow


@dataclass(frozen=True)
class Rule:
    """One inbound limit.

    Args:
        name: the rule's name: the integration its keys live under (lower case letters,
            digits, ``_`` and ``-``; the CLI's ``status NAME`` shows its keys) and the first
            part of its policies' names in the ``RateLimit`` fields.
        rates: one or more ``Rate``; a request spends one unit of each, all or nothing.
        key: the request's key (``by_client_ip``, ``by_header(...)``, ``by_route``, your
            own); ``None``: one key for every request (a global limit). A key function that
            returns ``None`` exempts the request from this rule.
        paths: path prefixes the rule applies to (``()``: every path).
        methods: HTTP methods it applies to (``()``: every method).
        exempt: requests it never limits (a health check, an internal caller).
        adaptive: AIMD driven by the app's own answers (``Adaptive``); fixed rates when None.
    """

    name: str
    rates: tuple[Rate, ...]
    key: KeyFunction | None = None
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    exempt: Callable[[Any], bool] | None = None
    adaptive: Adaptive | None = None
    _methods: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                None, "rule.name", self.name, "use 1-48 of a-z, 0-9, _ and -, from a letter"
            )
        rates = tuple(self.rates) if isinstance(self.rates, Sequence) else (self.rates,)
        if not rates or not all(isinstance(rate, Rate) for rate in rates):
            raise ConfigError(self.name, "rates", self.rates, "give one Rate or more")
        if rates[0].aligned:
            raise ConfigError(
                self.name,
                "rates",
                rates[0],
                "the first rate is a bucket: put an aligned one after it",
            )
        object.__setattr__(self, "rates", rates)
        if self.adaptive is not None and len(rates) > 1:
            raise ConfigError(
                self.name,
                "adaptive",
                self.adaptive,
                "an adaptive rule has one rate (a backoff empties every bucket of its key): "
                "put a day's rate in a rule of its own",
            )
        for field_name in ("paths", "methods"):
            if isinstance(getattr(self, field_name), str):
                raise ConfigError(self.name, field_name, getattr(self, field_name), "give a tuple")
        for path in self.paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigError(self.name, "paths", path, "each must start with /")
        object.__setattr__(self, "_methods", frozenset(m.upper() for m in self.methods))

    def applies(self, method: str, path: str) -> bool:
        """Whether a request of ``method`` to ``path`` falls under the rule."""
        if self._methods and method.upper() not in self._methods:
            return False
        return not self.paths or any(path.startswith(prefix) for prefix in self.paths)

    def policy_names(self) -> list[str]:
        """The name each rate's policy has in the answer's fields."""
        return [self.name] + [f"{self.name}-{i}" for i in range(2, len(self.rates) + 1)]

    def limit_names(self) -> list[str]:
        """The limiter's name of each rate's limit (``requests`` first, as the limiter's)."""
        return ["requests"] + [f"rate{i}" for i in range(2, len(self.rates) + 1)]

    def costs(self) -> dict[str, float]:
        """One unit of every rate."""
        return dict.fromkeys(self.limit_names(), 1.0)

    def config(self) -> IntegrationConfig:
        """The integration config the limiter decides the rule with."""
        first, *others = self.rates
        adaptive = self.adaptive
        low = first.rate * adaptive.min_share if adaptive else first.rate
        extra = tuple(
            LimitConfig.per_window(name, rate.limit, rate.per)
            if rate.aligned
            else LimitConfig(
                name,
                rate_limit_per_sec=rate.rate,
                burst_size=rate.capacity,
                min_rate=rate.rate,
                max_rate=rate.rate,
                increase_factor=0.0,
                decrease_factor=0.5,  # (min_rate = max_rate: it holds)
            )
            for name, rate in zip(self.limit_names()[1:], others, strict=True)
        )
        return IntegrationConfig(
            name=self.name,
            rate_limit_per_sec=first.rate,
            burst_size=first.capacity,
            min_rate=low,
            max_rate=first.rate,
            increase_factor=first.rate / 20 if adaptive else 0.0,
            decrease_factor=0.5,  # (fixed: min_rate = max_rate holds it)
            slow_start=False,
            max_wait=0.0,
            limits=extra,
            on_backend_error="open",  # Redis down: each process limits on its own
        )


def key_name(key: str) -> str:
    """The tenant a key is stored under: a short plain key as it is, anything else (long,
    unicode, control characters, a lone surrogate) as a digest: no key can reach Redis or a
    log line in a form that breaks it, and distinct keys stay distinct."""
    if _PLAIN_KEY.match(key):
        return key
    raw = key.encode("utf-8", "surrogatepass")
    return "k-" + hashlib.sha256(raw).hexdigest()[:32]


def by_client_ip(request: Any) -> str | None:
    """The client's address as the server saw it (behind a proxy, configure the server to
    trust ``X-Forwarded-For``: uvicorn's ``--proxy-headers``), IPv6 grouped by /64."""
    client = getattr(request, "client", None)
    host = client.host if client is not None else None
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def by_header(name: str, *, digest: bool = True) -> KeyFunction:
    """Key by a request header (``X-API-Key``, ``Authorization``); requests without it are
    exempt. With ``digest`` (the default) the key is a SHA-256 digest of the value: a secret
    never reaches Redis, signals or logs."""

    def key(request: Any) -> str | None:
        value = request.headers.get(name)
        if not value:
            return None
        if not digest:
            return str(value)
        return "h-" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]

    return key


def by_route(request: Any) -> str | None:
    """The request's method and route: its path template once the app routed it (a FastAPI
    dependency: ``GET /items/{item_id}``), else its literal path (a middleware runs before
    routing: each path its own key; bound them with a rule's ``paths`` instead)."""
    route = request.scope.get("route")
    path = getattr(route, "path", None) or request.url.path
    return f"{request.method} {path}"


def _policy(name: str, rate: Rate) -> str:
    return f'"{name}";q={_count(rate.limit)};w={_count(rate.per)}'


def _count(value: float) -> int:
    return max(0, math.ceil(value))


def fields_for_grant(
    rule: Rule, tokens: Sequence[float], now: float = 0.0
) -> list[tuple[str, str]]:
    """``RateLimit-Policy`` and ``RateLimit`` for a granted request, from each limit's
    tokens left at ``now`` (the decision's time): ``r`` the requests that may go now (whole
    tokens), ``t`` the seconds until the bucket is full again, or until an aligned window's
    end (rounded up; 0 when full)."""
    policies, states = [], []
    for name, rate, left in zip(rule.policy_names(), rule.rates, tokens, strict=False):
        left = max(0.0, left)
        if rate.aligned:
            seconds = max(1, math.ceil((now // rate.per + 1) * rate.per - now - 1e-9))
        else:
            seconds = max(0, math.ceil((rate.capacity - left) / rate.rate - 1e-9))
        policies.append(_policy(name, rate))
        states.append(f'"{name}";r={math.floor(left + 1e-9)};t={seconds}')
    return [("RateLimit-Policy", ", ".join(policies)), ("RateLimit", ", ".join(states))]


def fields_for_refusal(rule: Rule, wait: float) -> list[tuple[str, str]]:
    """``Retry-After`` (whole seconds, rounded up) and the rule's fields for a refusal."""
    seconds = max(1, math.ceil(wait - 1e-9))
    policies = ", ".join(
        _policy(n, r) for n, r in zip(rule.policy_names(), rule.rates, strict=True)
    )
    state = f'"{rule.name}";r=0;t={seconds}'
    return [
        ("Retry-After", str(seconds)),
        ("RateLimit-Policy", policies),
        ("RateLimit", state),
    ]
