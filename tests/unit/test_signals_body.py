"""Throttles stated in bodies: dialects read JSON, XML and text bounded, and never raise."""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_ratelimit.dialect import GENERIC, Dialect
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.policy.signals_body import MAX_BODY_BYTES, read_body
from queue_ratelimit.policy.signals_http import Quota, parse_rate_limit
from queue_ratelimit.registry import BUILTIN_INTEGRATIONS

NOW = 1_714_564_800.0
GRAPHQL = Dialect(
    body_statuses=frozenset({200, 400}),
    throttle_codes=frozenset({"THROTTLED", "RATE_LIMITED", "RATELIMITED"}),
)
CLOUD = Dialect(
    body_statuses=frozenset({400, 403}),
    throttle_codes=frozenset({"Throttling", "ThrottlingException", "SlowDown"}),
    wait_fields=("retryDelay", "retry_in_seconds"),
    default_wait=1.0,
)
DIALECTS = [GENERIC, GRAPHQL, CLOUD]

THROTTLED_GRAPHQL = {
    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
    "extensions": {"cost": {"requestedQueryCost": 101, "actualQueryCost": None}},
}


@pytest.mark.parametrize("encode", [json.dumps, lambda d: json.dumps(d).encode(), lambda d: d])
def test_a_throttle_code_in_a_graphql_200_is_a_backoff(encode: object) -> None:
    body = encode(THROTTLED_GRAPHQL)  # type: ignore[operator]
    assert parse_rate_limit(200, {}, body, NOW, dialect=GRAPHQL).backoff
    assert not parse_rate_limit(200, {}, body, NOW).backoff  # the generic parser reads no 200


def test_a_code_in_the_data_of_a_clean_answer_is_not_under_an_error_key() -> None:
    body = json.dumps({"data": {"order": {"note": "THROTTLED"}}})
    assert not parse_rate_limit(200, {}, body, NOW, dialect=GRAPHQL).backoff


def test_codes_compare_after_an_aws_hash_and_before_a_dropbox_slash() -> None:
    aws = b'{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Slow"}'
    assert read_body(aws, {"ThrottlingException"}).throttled
    dropbox = b'{"error_summary": "too_many_requests/..", "error": {"reason": {".tag": "x"}}}'
    assert read_body(dropbox, {"too_many_requests"}).throttled


def test_an_xml_code_element_is_read() -> None:
    body = b"<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>"
    signal = parse_rate_limit(400, {}, body, NOW, dialect=CLOUD)
    assert (signal.backoff, signal.retry_after) == (True, 1.0)  # the dialect's default wait
    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your rate.</Message></Error>"
    signal = parse_rate_limit(503, {}, body, NOW, dialect=CLOUD)
    assert (signal.backoff, signal.retry_after) == (True, None)  # a 503 may be an outage


def test_a_wait_field_is_read_as_seconds_or_a_duration() -> None:
    google = {"error": {"status": "RESOURCE_EXHAUSTED", "details": [{"retryDelay": "30s"}]}}
    assert parse_rate_limit(429, {}, json.dumps(google), NOW, dialect=CLOUD).retry_after == 30.0
    monday = {"errors": [{"extensions": {"code": "x", "retry_in_seconds": 12}}]}
    assert parse_rate_limit(429, {}, json.dumps(monday), NOW, dialect=CLOUD).retry_after == 12.0


def test_a_header_delay_beats_the_body_and_the_default() -> None:
    body = json.dumps({"retry_after": 9})
    assert parse_rate_limit(429, {"Retry-After": "4"}, body, NOW, dialect=CLOUD).retry_after == 4


def test_a_backoff_status_of_the_dialect_backs_off_without_evidence() -> None:
    overloaded = Dialect(backoff_statuses=frozenset({529}))
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert parse_rate_limit(529, {}, body, NOW, dialect=overloaded).backoff
    assert not parse_rate_limit(529, {}, body, NOW).backoff


def test_a_large_body_is_not_read() -> None:
    throttled = {"errors": [{"extensions": {"code": "THROTTLED"}}]}
    body = json.dumps({**throttled, "pad": "x" * MAX_BODY_BYTES})
    assert not parse_rate_limit(200, {}, body, NOW, dialect=GRAPHQL).backoff


def test_a_dialect_names_its_invalid_field() -> None:
    with pytest.raises(ConfigError, match=r"dialect.backoff_statuses"):
        Dialect(backoff_statuses=frozenset({999}))
    with pytest.raises(ConfigError, match=r"dialect.headers.X-Left"):
        Dialect(headers={"X-Left": "nothing"})
    with pytest.raises(ConfigError, match=r"dialect.colour"):
        Dialect.from_mapping({"colour": "red"}, "myapi")
    with pytest.raises(ConfigError, match=r"dialect.default_wait"):
        Dialect(default_wait=math.inf)
    with pytest.raises(ConfigError, match=r"dialect.refusal_codes"):  # one or the other
        Dialect(throttle_codes=frozenset({"x"}), refusal_codes=frozenset({"x"}))
    with pytest.raises(ConfigError, match=r"dialect.app_refusals"):  # a refusal first
        Dialect(refusal_codes=frozenset({"x"}), app_refusals=frozenset({"y"}))
    with pytest.raises(ConfigError, match=r"dialect.contention_codes"):  # a throttle already
        Dialect(throttle_codes=frozenset({"x"}), contention_codes=frozenset({"x"}))
    with pytest.raises(ConfigError, match=r"dialect.contention_codes"):  # a refusal already
        Dialect.from_mapping({"refusal_codes": ["x"], "contention_codes": ["x"]}, "myapi")
    with pytest.raises(ConfigError, match=r"dialect.wording"):
        Dialect.from_mapping({"wording": "yes"})
    with pytest.raises(ConfigError, match=r"dialect.resources"):  # read from which header?
        Dialect(resources=frozenset({"core"}))
    with pytest.raises(ConfigError, match=r"dialect.resource_header"):
        Dialect(resource_header="not a header")


def test_name_keys_state_refusals_only() -> None:
    dialect = Dialect(
        body_statuses=frozenset({200}),
        throttle_codes=frozenset({"THROTTLED"}),
        refusal_codes=frozenset({"DAILY"}),
    )
    named = {"name": "THROTTLED", "id": 1}  # a record named so, not an error's code
    assert parse_rate_limit(200, {}, named, dialect=dialect, now=0.0).backoff is False
    coded = {"code": "THROTTLED"}
    assert parse_rate_limit(200, {}, coded, dialect=dialect, now=0.0).backoff is True
    spent = {"errorType": "RATE_LIMIT", "policyName": "DAILY"}  # HubSpot's
    assert parse_rate_limit(429, {}, spent, dialect=dialect, now=0.0).refused == "DAILY"


def test_a_dialect_round_trips_through_a_mapping() -> None:
    assert Dialect.from_mapping(CLOUD.to_dict()) == CLOUD
    full = Dialect(
        refusal_codes=frozenset({"insufficient_quota"}),
        wording=True,
        resource_header="X-RateLimit-Resource",
        resources=frozenset({"core"}),
    )
    assert Dialect.from_mapping(full.to_dict()) == full
    assert "refusal_codes" not in Dialect().to_dict()  # (an earlier version reads it still)
    assert full.resource_header == "x-ratelimit-resource"  # header names compare lowercased


# --- Hostile bodies ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["THROTTLED", "Throttling", "30s", "-1", "1e9", "inf", "", "\udcff"])
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from(["code", "type", "__type", "retry_after", "retryDelay", ".tag", "x"])
            | st.text(max_size=10),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


def _nested(depth: int) -> str:
    return '{"errors":' * depth + "1" + "}" * depth


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)[:-1]),  # truncated
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
    st.text(max_size=300),
    st.builds(lambda c: f"<Error><Code>{c}</Code></Error>", st.text(max_size=200)),
    st.builds(lambda n: "<" * n + "Code>Throttling</Code>", st.integers(0, 5000)),
    st.integers(1, 100_000).map(_nested),
    st.integers(MAX_BODY_BYTES - 10, MAX_BODY_BYTES + 10).map(lambda n: "{" + " " * n + "}"),
    json_values,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.sampled_from([200, 400, 403, 429, 503, 529]),
    body=bodies,
    dialect=st.sampled_from(DIALECTS),
    max_backoff=st.sampled_from([0.5, 300.0, 86400.0]),
)
def test_hostile_bodies_never_raise_and_waits_stay_in_bounds(
    status: int, body: object, dialect: Dialect, max_backoff: float
) -> None:
    hostile: Any = body  # any JSON value, not only what the signature promises
    signal = parse_rate_limit(status, {}, hostile, NOW, max_backoff=max_backoff, dialect=dialect)
    if signal.retry_after is not None:
        assert 0.0 <= signal.retry_after <= max_backoff
    if not signal.backoff:
        assert signal.retry_after is None


# --- Points budgets stated in bodies (GraphQL costs) --------------------------------------

SHOPIFY = BUILTIN_INTEGRATIONS["shopify-graphql"].dialect


def _shopify(requested: int, actual: int | None, available: int) -> str:
    status = {"maximumAvailable": 1000.0, "currentlyAvailable": available, "restoreRate": 50.0}
    cost = {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": status}
    body: dict[str, object] = {"extensions": {"cost": cost}}
    if actual is None:
        body["errors"] = [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
    else:
        body["data"] = {"shop": {"name": "x"}}
    return json.dumps(body)


def test_a_cost_budget_becomes_a_quota_and_the_actual_cost_is_reported() -> None:
    signal = parse_rate_limit(200, {}, _shopify(101, 46, 954), NOW, dialect=SHOPIFY)
    assert not signal.backoff
    # 46 points spent restore in 46 / 50 s; the budget does not headline (it is not requests)
    assert signal.quotas["points"] == Quota(1000, 954, 0.92)
    assert signal.costs == {"points": 46.0}
    assert signal.remaining is None


def test_a_throttled_query_waits_until_its_cost_is_restored() -> None:
    signal = parse_rate_limit(200, {}, _shopify(101, None, 51), NOW, dialect=SHOPIFY)
    assert signal.backoff and signal.costs == {}
    assert signal.retry_after == pytest.approx((101 - 51) / 50.0)


def test_github_rate_limit_object_resets_at_its_timestamp() -> None:
    dialect = BUILTIN_INTEGRATIONS["github-graphql"].dialect
    body = {"data": {"rateLimit": {"cost": 3, "remaining": 4990, "limit": 5000,
                                   "resetAt": "2024-05-01T12:30:00Z"}}}  # fmt: skip
    signal = parse_rate_limit(200, {}, json.dumps(body), NOW, dialect=dialect, max_backoff=3600)
    assert signal.quotas["requests"] == Quota(5000, 4990, 1800.0)
    assert signal.costs == {"requests": 3.0}


def test_cost_fields_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"dialect.cost_fields.spent"):
        Dialect(cost_fields={"spent": "a.b"})
    with pytest.raises(ConfigError, match=r"dialect.cost_fields.actual"):
        Dialect(cost_fields={"actual": "a..b"})
    with pytest.raises(ConfigError, match=r"dialect.cost_quota"):
        Dialect(cost_quota="Points!")


def test_the_limiter_corrects_an_estimate_with_the_cost_a_body_states() -> None:
    config = BUILTIN_INTEGRATIONS["shopify-graphql"]
    limiter = Limiter(configs={"shopify-graphql": config})
    decision = limiter.acquire("shopify-graphql", cost={"points": 10})
    before = _points(limiter)
    limiter.report_response(
        "shopify-graphql", None, 200, {}, _shopify(10, 46, 990).encode(), decision=decision,
        estimated={"points": 10},
    )  # fmt: skip
    assert _points(limiter) < before - 30  # the 36 points more it cost are charged


def _points(limiter: Limiter) -> float:
    return limiter.snapshot("shopify-graphql").limit("points").tokens


def test_a_dialect_pickles_with_its_config() -> None:
    config = BUILTIN_INTEGRATIONS["shopify-graphql"]
    assert pickle.loads(pickle.dumps(config)) == config


def test_a_cost_header_reports_what_the_call_cost() -> None:
    linear = BUILTIN_INTEGRATIONS["linear"].dialect
    headers = {
        "X-Complexity": "120",
        "X-RateLimit-Complexity-Limit": "3000000",
        "X-RateLimit-Complexity-Remaining": "2999880",
        "X-RateLimit-Complexity-Reset": str(int(NOW * 1000) + 3_600_000),
    }
    signal = parse_rate_limit(200, headers, None, NOW, dialect=linear, max_backoff=3600)
    assert signal.costs == {"complexity": 120.0}
    assert signal.quotas["complexity"] == Quota(3_000_000, 2_999_880, 3600.0)


def test_review_findings_stay_fixed() -> None:
    shopify, aws = SHOPIFY, BUILTIN_INTEGRATIONS["aws"].dialect
    codes = BUILTIN_INTEGRATIONS["aws"].backoff_status_codes  # 400 among them
    huge = '{"extensions":{"cost":{"actualQueryCost": -' + "1" * 400 + "}}}"
    assert parse_rate_limit(200, {}, huge, NOW, dialect=shopify).costs == {}  # no overflow
    coded = {"data": {"shippingLines": [{"code": "THROTTLED/express"}]}}
    assert not parse_rate_limit(200, {}, json.dumps(coded), NOW, dialect=shopify).backoff
    worded = b'{"__type":"ValidationException","message":"bad throttlingBurstLimit"}'
    assert not parse_rate_limit(
        400, {}, worded, NOW, backoff_status_codes=codes, dialect=aws
    ).backoff
    header = {"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/"}
    plain = b'{"message":"Rate exceeded"}'
    assert parse_rate_limit(
        400, header, plain, NOW, backoff_status_codes=codes, dialect=aws
    ).backoff
    bom = b"\xef\xbb\xbf" + json.dumps({"errors": [{"extensions": {"code": "THROTTLED"}}]}).encode()
    assert parse_rate_limit(200, {}, bom, NOW, dialect=shopify).backoff
    other = {"x-ratelimit-burst-remaining": "0", "x-ratelimit-burst-reset": "5"}
    assert parse_rate_limit(200, other, None, NOW).quotas == {}  # not read as a quota


def test_a_stated_cost_counts_up_to_the_burst_and_only_against_an_estimate() -> None:
    config = BUILTIN_INTEGRATIONS["shopify-graphql"]
    limiter = Limiter(configs={"shopify-graphql": config})
    decision = limiter.acquire("shopify-graphql", cost={"points": 10})
    before = _points(limiter)
    body = _shopify(10, 10**9, 990).encode()
    limiter.report_response("shopify-graphql", None, 200, {}, body, decision=decision)
    assert _points(limiter) >= before - 1  # no estimate given: the stated cost is not charged
    limiter.report_response(
        "shopify-graphql", None, 200, {}, body, decision=decision, estimated={"points": 10}
    )
    assert _points(limiter) >= before - 1000 - 1  # at most the burst, not a billion


def test_contention_is_no_backoff_and_keeps_a_stated_wait() -> None:
    dialect = Dialect(
        headers={"Stripe-Rate-Limited-Reason": "code"},
        refusal_codes=frozenset({"spent"}),
        contention_codes=frozenset({"lock_timeout", "resource-specific"}),
    )
    assert Dialect.from_mapping(dialect.to_dict()) == dialect  # (round-trips)
    locked = {"error": {"code": "lock_timeout"}}
    info = parse_rate_limit(429, {"Retry-After": "2"}, locked, dialect=dialect, now=0.0)
    assert (info.backoff, info.contended, info.refused, info.retry_after) == (
        False,
        "lock_timeout",
        None,
        2.0,
    )
    info = parse_rate_limit(429, {}, locked, dialect=dialect, now=0.0)
    assert (info.contended, info.retry_after) == ("lock_timeout", None)  # none stated
    by_header = {"Stripe-Rate-Limited-Reason": "resource-specific"}
    assert parse_rate_limit(429, by_header, {}, dialect=dialect, now=0.0).contended == (
        "resource-specific"
    )
    rate = {"Stripe-Rate-Limited-Reason": "global-rate"}  # the account's rate: a backoff
    info = parse_rate_limit(429, rate, {}, dialect=dialect, now=0.0)
    assert (info.backoff, info.contended) == (True, None)
    both = parse_rate_limit(429, by_header, {"error": {"code": "spent"}}, dialect=dialect, now=0.0)
    assert (both.refused, both.contended, both.backoff) == ("spent", None, False)  # it wins
    plain = parse_rate_limit(429, {}, locked, now=0.0)  # the generic dialect: a backoff
    assert (plain.backoff, plain.contended) == (True, None)
