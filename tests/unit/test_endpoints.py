"""Endpoint groups (``queue_ratelimit.endpoints``): config, matching, and the HTTP clients'
choice of the group's integration from each request."""

from __future__ import annotations

import httpx
import pytest
import requests

from queue_ratelimit import BUILTIN_INTEGRATIONS, ConfigError, IntegrationConfig, Limiter
from queue_ratelimit.client_calls import ClientCalls
from queue_ratelimit.endpoints import Endpoint, route
from queue_ratelimit.hosts import BY_HOST

SEARCH = Endpoint("svc-search", paths=("/search/",))
WRITES = Endpoint("svc-writes", paths=("/",), methods=("POST", "PUT"))


def test_the_first_matching_group_wins_and_methods_narrow_it() -> None:
    groups = (SEARCH, WRITES)
    assert route(groups, "GET", "/search/issues") == "svc-search"
    assert route(groups, "POST", "/search/issues") == "svc-search"  # the first that matches
    assert route(groups, "post", "/items") == "svc-writes"
    assert route(groups, "GET", "/items") is None


@pytest.mark.parametrize(
    ("endpoints", "field"),
    [
        ("svc-search", "endpoints"),
        ([{"integration": "svc-search"}], "endpoints.paths"),
        ([{"integration": "svc-search", "paths": ["search/"]}], "endpoints.paths"),
        ([{"integration": "Bad Name", "paths": ["/s/"]}], "endpoints.integration"),
        ([{"integration": "svc", "paths": ["/s/"]}], "endpoints.integration"),  # itself
        ([{"integration": "x", "paths": ["/s/"], "methods": ["G3T"]}], "endpoints.methods"),
        ([{"integration": "x", "paths": ["/s/"], "verbs": ["GET"]}], "endpoints"),
    ],
)
def test_bad_endpoints_fail_at_startup_naming_the_field(endpoints: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        IntegrationConfig.from_mapping("svc", {"rate_limit_per_sec": 1.0, "endpoints": endpoints})


def test_endpoints_round_trip_through_an_override_table() -> None:
    config = IntegrationConfig(name="svc", rate_limit_per_sec=1.0, endpoints=(SEARCH, WRITES))
    again = IntegrationConfig.from_mapping("svc", config.to_dict())
    assert again.endpoints == config.endpoints


def test_a_group_whose_integration_is_not_configured_stays_on_the_main_one() -> None:
    config = IntegrationConfig(name="svc", rate_limit_per_sec=1.0, endpoints=(SEARCH,))
    calls = ClientCalls(Limiter(configs={"svc": config}), "svc", None, None, True, None, None)
    assert calls.integration_of(httpx.Request("GET", "https://x.test/search/a")) == "svc"


@pytest.mark.parametrize(
    ("method", "url", "integration"),
    [
        ("GET", "https://api.github.com/search/issues?q=bug", "github-search"),
        ("GET", "https://api.github.com/search/code?q=addClass", "github-code-search"),
        ("POST", "https://api.github.com/graphql", "github-graphql"),
        ("GET", "https://api.github.com/repos/o/r/issues", "github"),
        # Slack: each method's tier (its path), Tier 3 when not listed
        ("POST", "https://slack.com/api/chat.postMessage", "slack-post-message"),
        ("GET", "https://slack.com/api/users.list?limit=200", "slack-tier2"),
        ("POST", "https://slack.com/api/conversations.listConnectInvites", "slack-tier2"),
        ("GET", "https://slack.com/api/users.info?user=U1", "slack-tier4"),
        ("POST", "https://slack.com/api/apps.connections.open", "slack-tier1"),
        ("GET", "https://slack.com/api/conversations.history?channel=C1", "slack"),
        ("POST", "https://slack.com/api/chat.update", "slack"),
        # www.googleapis.com: each Google API's paths to its integration
        ("GET", "https://www.googleapis.com/drive/v3/files", "google-drive"),
        ("POST", "https://www.googleapis.com/upload/drive/v3/files", "google-drive"),
        ("GET", "https://www.googleapis.com/calendar/v3/calendars/c/events", "google-calendar"),
        ("GET", "https://www.googleapis.com/youtube/v3/videos?id=x", "youtube"),
        ("GET", "https://www.googleapis.com/gmail/v1/users/me/messages", "gmail"),
        ("GET", "https://www.googleapis.com/oauth2/v3/userinfo", "googleapis"),
        ("GET", "https://youtube.googleapis.com/youtube/v3/search", "youtube-search"),
        ("GET", "https://youtube.googleapis.com/youtube/v3/videos", "youtube"),
        ("POST", "https://www.googleapis.com/upload/youtube/v3/videos", "youtube-upload"),
        ("GET", "https://www.googleapis.com/youtube/v3/search?q=x", "youtube-search"),
        ("POST", "https://www.googleapis.com/batch/gmail/v1", "gmail"),
        # Stripe: the Search API apart, the Files API on a host of its own
        ("GET", "https://api.stripe.com/v1/customers/search?query=x", "stripe-search"),
        ("GET", "https://api.stripe.com/v1/customers/cus_1", "stripe"),
        ("POST", "https://files.stripe.com/v1/files", "stripe-files"),
    ],
)
def test_by_host_picks_the_group_of_each_request(method: str, url: str, integration: str) -> None:
    calls = ClientCalls(Limiter(), BY_HOST, None, None, True, None, None)
    assert calls.integration_of(httpx.Request(method, url)) == integration
    prepared = requests.Request(method, url).prepare()
    assert calls.integration_of(prepared) == integration
    assert "github-search" in BUILTIN_INTEGRATIONS
