"""parse_rate_limit: documented API responses, hostile input, and properties over random input."""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from queue_ratelimit.dialect import GENERIC
from queue_ratelimit.policy.signals_http import Quota, RateLimitInfo, parse_rate_limit
from queue_ratelimit.registry import BUILTIN_INTEGRATIONS
from tests.unit.http_cases import CASES, DOCUMENTED, NOW, HttpCase
from tests.unit.http_cases_vendors import VENDOR_CASES

Headers = Mapping[str, str] | Sequence[tuple[str, str]]


def flat(signal: RateLimitInfo) -> dict[str, object]:
    """The signal's fields and wait as one plain dict, quotas spelled out, for approx."""
    fields: dict[str, object] = {
        name: getattr(signal, name)
        for name in ("backoff", "retry_after", "limit", "remaining", "reset_after", "near_limit")
    }
    fields["refused"] = signal.refused
    fields["wait"] = signal.wait
    for key, quota in signal.quotas.items():
        fields.update({f"{key}.{name}": value for name, value in dataclasses.asdict(quota).items()})
    return fields


# --- The case table ------------------------------------------------------------------------


ALL_CASES = [*CASES, *VENDOR_CASES]


def test_table_is_large_documented_and_uniquely_named() -> None:
    documented = [*DOCUMENTED, *VENDOR_CASES]
    assert len(documented) >= 150
    assert len({case.name for case in ALL_CASES}) == len(ALL_CASES)
    assert all(case.source.startswith("https://") for case in documented)
    apis = {case.integration or case.name.split("_")[0] for case in documented}
    assert len(apis) >= 30, sorted(apis)


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.name for case in ALL_CASES])
def test_case(case: HttpCase) -> None:
    codes, dialect = case.backoff_status_codes, GENERIC
    if case.integration is not None:
        config = BUILTIN_INTEGRATIONS[case.integration]
        codes, dialect = config.backoff_status_codes, config.dialect
    signal = parse_rate_limit(
        case.status,
        case.headers,
        case.body,
        case.now,
        backoff_status_codes=codes,
        max_backoff=case.max_backoff,
        dialect=dialect,
    )
    expected = flat(case.expected) | {"wait": case.wait}
    assert flat(signal) == pytest.approx(expected, abs=1e-6)


# --- Header shapes, purity, the value object -----------------------------------------------


def test_header_containers_read_alike() -> None:
    pairs = [("retry-after", "junk"), ("Retry-After", "12"), ("X-RateLimit-Remaining", "0")]
    shapes: list[Headers] = [
        dict(pairs[1:]),
        pairs,
        CaseInsensitiveDict(dict(pairs[1:])),
        httpx.Headers(pairs),
    ]
    signals = {parse_rate_limit(429, shape, now=NOW) for shape in shapes}
    assert signals == {RateLimitInfo(backoff=True, retry_after=12.0, remaining=0)}


def test_bytes_headers_are_read() -> None:
    raw = [(b"Retry-After", b"3"), (b"x-ratelimit-limit", b"10")]
    signal = parse_rate_limit(429, raw, now=NOW)  # type: ignore[arg-type]
    assert (signal.retry_after, signal.limit) == (3.0, 10)


def test_now_defaults_to_the_clock() -> None:
    in_a_minute = email.utils.formatdate(time.time() + 60.0, usegmt=True)
    signal = parse_rate_limit(429, {"Retry-After": in_a_minute})
    assert signal.retry_after is not None
    assert 55.0 <= signal.retry_after <= 61.0


def test_given_now_reads_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("the clock was read although now was given")

    monkeypatch.setattr(time, "time", no_clock)
    parse_rate_limit(429, {"Retry-After": "Wed, 01 May 2024 12:02:00 GMT"}, now=NOW)


@pytest.mark.parametrize("max_backoff", [0.0, -1.0, math.nan, math.inf])
def test_invalid_max_backoff_is_a_caller_error(max_backoff: float) -> None:
    with pytest.raises(ValueError, match="max_backoff"):
        parse_rate_limit(429, {}, now=NOW, max_backoff=max_backoff)


def test_signal_is_immutable_and_hashable() -> None:
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1s"}
    signal = parse_rate_limit(200, headers, now=NOW)
    assert signal.quotas == {"tokens": Quota(None, 0, 1.0)}
    with pytest.raises(TypeError):
        signal.quotas["tokens"] = Quota()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        signal.backoff = True  # type: ignore[misc]
    assert hash(signal) == hash(dataclasses.replace(signal))


def test_empty_signal_says_wait_nothing() -> None:
    assert RateLimitInfo().wait is None
    assert parse_rate_limit(200, {}, now=NOW) == RateLimitInfo()


def test_huge_values_are_cheap() -> None:
    huge = "9" * 1_000_000
    headers = {name: huge for name in ("Retry-After", "RateLimit", "X-RateLimit-Reset")}
    started = time.perf_counter()
    for _ in range(20):
        parse_rate_limit(429, headers, huge, NOW)
    assert time.perf_counter() - started < 1.0


# --- Properties ----------------------------------------------------------------------------

KNOWN_NAMES = [
    "Retry-After", "retry-after-ms", "x-ms-retry-after-ms",
    "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Used",
    "X-RateLimit-Reset-After", "X-RateLimit-NearLimit",
    "X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset",
    "RateLimit", "RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-input-tokens-remaining",
    "X-Shopify-Shop-Api-Call-Limit", "Sforce-Limit-Info",
    "X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds", "X-HubSpot-RateLimit-Secondly",
    "X-HubSpot-RateLimit-Daily-Remaining",
]  # fmt: skip


def random_case(name: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(name), max_size=len(name))
    return flips.map(
        lambda up: "".join(c.upper() if u else c.lower() for c, u in zip(name, up, strict=True))
    )


def render_members(members: list[tuple[str, dict[str, str]]]) -> str:
    return ", ".join(
        head + "".join(f";{k}={v}" for k, v in params.items()) for head, params in members
    )


def date_texts(moment: datetime) -> st.SearchStrategy[str]:
    aware = moment.replace(tzinfo=timezone.utc)
    return st.sampled_from(
        [
            email.utils.format_datetime(aware, usegmt=True),
            moment.isoformat(),
            aware.isoformat(),
            moment.isoformat(timespec="minutes") + "Z",
            moment.strftime("%a %b %d %H:%M:%S %Y"),
        ]
    )


number_texts = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-1e13, 1e13).map(lambda x: f"{x:.3f}"),
    st.sampled_from(
        ["1e3", "+5", "0x10", "1_000", "9" * 300, "\u0663\u0660", "\uff11\uff10\uff10"]
    ),
)
duration_texts = st.lists(
    st.tuples(st.integers(0, 10**7), st.sampled_from(["h", "m", "s", "ms", "us", "ns", "d", ""])),
    min_size=1,
    max_size=4,
).map(lambda parts: "".join(f"{n}{unit}" for n, unit in parts))
member_texts = st.lists(
    st.tuples(
        st.sampled_from(['"default"', "burst", '"a b"', '"', "", "limit=5", "reset=x", '"q";"']),
        st.dictionaries(st.sampled_from(["r", "t", "q", "w", "pk", ""]), number_texts, max_size=3),
    ),
    max_size=3,
).map(render_members)
value_texts = st.one_of(
    st.text(max_size=40),
    number_texts,
    st.datetimes().flatmap(date_texts),
    duration_texts,
    member_texts,
    st.tuples(st.integers(-5, 10**6), st.integers(-5, 10**6)).map(lambda p: f"{p[0]}/{p[1]}"),
    st.sampled_from(["", " ", "true", "api-usage=25/5000", "9" * 300]),
)
name_texts = st.one_of(st.sampled_from(KNOWN_NAMES).flatmap(random_case), st.text(max_size=30))
header_sets: st.SearchStrategy[Headers] = st.one_of(
    st.dictionaries(name_texts, value_texts, max_size=12),
    st.lists(st.tuples(name_texts, value_texts), max_size=12),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(
    st.sampled_from(["retry_after", "global", "message"]) | st.text(max_size=5),
    json_values,
    max_size=4,
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.text(max_size=200),
    json_objects,
    json_objects.map(lambda doc: json.dumps(doc).encode()),
    json_objects.map(json.dumps),
)
statuses = st.one_of(st.sampled_from([200, 202, 403, 429, 503]), st.integers(100, 599))
code_sets = st.frozensets(st.sampled_from([403, 418, 429, 500, 503]), max_size=4)


def assert_sane(signal: RateLimitInfo, max_backoff: float) -> None:
    quotas = [Quota(signal.limit, signal.remaining, signal.reset_after), *signal.quotas.values()]
    for delay in (signal.retry_after, signal.wait, *(quota.reset_after for quota in quotas)):
        assert delay is None or (type(delay) is float and 0.0 <= delay <= max_backoff)
    for number in (n for quota in quotas for n in (quota.limit, quota.remaining)):
        assert number is None or (type(number) is int and number >= 0)
    assert signal.backoff or signal.retry_after is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=statuses,
    headers=header_sets,
    body=bodies,
    now=st.floats(0.0, 4e9),
    codes=code_sets,
    max_backoff=st.floats(1e-3, 1e7),
)
def test_never_raises_and_stays_in_bounds(
    status: int,
    headers: Headers,
    body: bytes | str | Mapping[str, object] | None,
    now: float,
    codes: frozenset[int],
    max_backoff: float,
) -> None:
    signal = parse_rate_limit(
        status, headers, body, now, backoff_status_codes=codes, max_backoff=max_backoff
    )
    assert_sane(signal, max_backoff)
    if status not in codes:
        assert not signal.backoff
    again = parse_rate_limit(
        status, headers, body, now, backoff_status_codes=codes, max_backoff=max_backoff
    )
    assert again == signal


@settings(max_examples=150, deadline=None)
@given(
    values=st.dictionaries(st.sampled_from(KNOWN_NAMES), value_texts, max_size=8),
    data=st.data(),
    status=st.sampled_from([200, 403, 429]),
)
def test_header_names_are_case_insensitive(
    values: dict[str, str], data: st.DataObject, status: int
) -> None:
    shuffled = {data.draw(random_case(name)): value for name, value in values.items()}
    codes = frozenset({403, 429})
    assert parse_rate_limit(status, shuffled, now=NOW, backoff_status_codes=codes) == (
        parse_rate_limit(status, values, now=NOW, backoff_status_codes=codes)
    )
