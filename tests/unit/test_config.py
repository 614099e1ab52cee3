"""IntegrationConfig validation, the built-in registry and TOML/JSON/env override layering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.errors import ConfigError, QueueRateLimitError
from queue_ratelimit.registry import (
    BUILTIN_INTEGRATIONS,
    get_integration,
    list_integrations,
    load_configs,
    load_env,
    load_json,
    load_toml,
    merge_configs,
)

BUILTIN_NAMES = [
    "airtable", "anthropic", "asana", "attio", "aws", "azure-openai", "clickup", "cloudflare",
    "confluence", "discord", "dropbox", "fieldguide", "github", "github-code-search",
    "github-graphql", "github-search", "gitlab", "gmail", "google-calendar", "google-drive",
    "google-gemini", "google-sheets", "googleapis", "hubspot", "intercom", "jira", "linear",
    "mailchimp", "microsoft-graph", "mistral", "monday", "notion", "openai", "resend",
    "salesforce", "sendgrid", "shopify",
    "shopify-graphql", "slack", "slack-post-message", "slack-tier1", "slack-tier2",
    "slack-tier4", "stripe", "stripe-files", "stripe-search", "twilio", "vanta", "x", "youtube",
    "youtube-search", "youtube-upload", "zapier", "zendesk",
]  # fmt: skip

TOKENS = {"rate_limit_per_sec": 100, "burst_size": 1000, "min_rate": 10, "max_rate": 500}


def assert_config_error(
    err: ConfigError, integration: str | None, field: str, value: object
) -> None:
    """The error carries the integration, field and value, and its message names all three."""
    assert (err.integration, err.field, err.value) == (integration, field, value)
    assert type(err.value) is type(value)  # True must not pass for 1, nor 1 for 1.0
    message = str(err)
    assert field in message
    assert repr(value) in message
    if integration is not None:
        assert integration in message


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- Built-ins ---------------------------------------------------------------------------


def test_builtins_cover_the_documented_integrations() -> None:
    assert list_integrations() == BUILTIN_NAMES
    assert all(get_integration(name).name == name for name in BUILTIN_NAMES)
    with pytest.raises(TypeError):
        BUILTIN_INTEGRATIONS["notion"] = IntegrationConfig("notion")  # type: ignore[index]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_has_sane_bounds(name: str) -> None:
    config = BUILTIN_INTEGRATIONS[name]
    assert 0 < config.min_rate <= config.rate_limit_per_sec < config.max_rate
    assert {429, 503} <= config.backoff_status_codes
    assert 0 < config.decrease_factor < 1
    assert config.burst_size >= 1
    for limit in config.limits:
        assert 0 < limit.min_rate <= limit.rate_limit_per_sec < limit.max_rate
    # to_dict is JSON-friendly and round-trips through from_mapping.
    data = json.loads(json.dumps(config.to_dict()))
    assert IntegrationConfig.from_mapping(name, data) == config


def test_builtin_vendor_specifics() -> None:
    github, airtable, openai = (BUILTIN_INTEGRATIONS[n] for n in ("github", "airtable", "openai"))
    assert 403 in github.backoff_status_codes
    assert github.max_rate <= 5000 / 3600
    assert github.max_concurrent is not None and github.max_concurrent <= 100
    assert airtable.max_rate < 5 and airtable.max_backoff >= 30
    assert airtable.dialect.default_wait == 30  # the 30 s Airtable penalty
    assert [limit.name for limit in openai.limits] == ["tokens"]
    assert BUILTIN_INTEGRATIONS["stripe"].max_rate <= 25
    assert BUILTIN_INTEGRATIONS["hubspot"].max_rate <= 10
    assert BUILTIN_INTEGRATIONS["slack"].max_rate <= 100 / 60


def test_fields_help_documents_every_field() -> None:
    for cls in (IntegrationConfig, LimitConfig):
        help_ = cls.fields_help()
        assert list(help_) == [f for f in cls.__dataclass_fields__]
        assert all(help_.values())


def test_ints_become_floats_and_status_codes_a_frozenset() -> None:
    config = IntegrationConfig.from_mapping(
        "custom", {"max_rate": 4, "backoff_status_codes": [429, 429, 500], "requeue_budget": 3.0}
    )
    assert type(config.max_rate) is float and config.max_rate == 4.0
    assert config.backoff_status_codes == frozenset({429, 500})
    assert type(config.requeue_budget) is int


# --- Override layers ---------------------------------------------------------------------


def test_toml_json_env_layer_in_order(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "queue-ratelimit.toml",
        """
[notion]
max_rate = 2.5
burst_size = 2

[openai.limits.tokens]
max_rate = 450.0

[custom_api]
rate_limit_per_sec = 2.0
max_rate = 5.0
""",
    )
    js = write(tmp_path / "overrides.json", json.dumps({
        "notion": {"max_rate": 2.8},
        "openai": {"limits": {"tokens": {"min_rate": 20}, "images": TOKENS}},
    }))  # fmt: skip
    env = {
        "QUEUE_RATELIMIT__NOTION__MAX_RATE": "2.9",
        "QUEUE_RATELIMIT__NOTION__BACKOFF_STATUS_CODES": "[429, 502, 503]",
        "QUEUE_RATELIMIT__OPENAI__LIMITS__TOKENS__BURST_SIZE": "8000",
        "QUEUE_RATELIMIT__CUSTOM_API__MAX_CONCURRENT": "4",
        "QUEUE_RATELIMIT_CONFIG_UNRELATED": "ignored",
        "HOME": "/ignored",
    }
    configs = load_configs(toml_path=toml, json_path=js, environ=env)

    notion, builtin = configs["notion"], BUILTIN_INTEGRATIONS["notion"]
    assert notion.max_rate == 2.9  # env beats JSON beats TOML
    assert notion.burst_size == 2.0  # TOML kept where nothing later says otherwise
    assert notion.rate_limit_per_sec == builtin.rate_limit_per_sec  # untouched: builtin
    assert notion.backoff_status_codes == frozenset({429, 502, 503})
    tokens, images = configs["openai"].limits
    assert (tokens.name, tokens.max_rate, tokens.min_rate, tokens.burst_size) == (
        "tokens", 450.0, 20.0, 8000.0,
    )  # fmt: skip
    assert tokens.rate_limit_per_sec == BUILTIN_INTEGRATIONS["openai"].limits[0].rate_limit_per_sec
    assert images == LimitConfig(name="images", **TOKENS)
    custom = configs["custom_api"]
    assert (custom.rate_limit_per_sec, custom.max_rate, custom.max_concurrent) == (2.0, 5.0, 4)
    assert custom.burst_size == IntegrationConfig("x").burst_size  # defaults fill the rest
    assert configs["slack"] is BUILTIN_INTEGRATIONS["slack"]


def test_seed_json_override_format(tmp_path: Path) -> None:
    seed = {"custom_api": {
        "rate_limit_per_sec": 2.0, "burst_size": 2.0, "increase_factor": 0.1,
        "decrease_factor": 0.5, "min_rate": 0.1, "max_rate": 5.0, "cooldown_multiplier": 1.5,
    }}  # fmt: skip
    overrides = load_json(write(tmp_path / "o.json", json.dumps(seed)))
    config = get_integration("custom_api", merge_configs(overrides))
    assert (config.max_rate, config.cooldown_multiplier) == (5.0, 1.5)


def test_limit_set_to_null_is_removed() -> None:
    configs = merge_configs({"openai": {"limits": {"tokens": None}}})
    assert configs["openai"].limits == ()


def test_merge_does_not_mutate_its_inputs() -> None:
    layer = {"openai": {"limits": {"tokens": {"max_rate": 300}}}}
    merge_configs(layer, {"openai": {"limits": {"tokens": {"max_rate": 350}}}})
    assert layer == {"openai": {"limits": {"tokens": {"max_rate": 300}}}}


def test_env_pointer_and_cwd_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "queue-ratelimit.toml", "[notion]\nmax_rate = 2.5\n")
    assert load_configs(environ={})["notion"].max_rate == 2.5
    pointed = write(tmp_path / "elsewhere.json", '{"notion": {"max_rate": 2.2}}')
    configs = load_configs(environ={"QUEUE_RATELIMIT_CONFIG": str(pointed)})
    assert configs["notion"].max_rate == 2.2  # JSON layer on top of the discovered TOML


def test_no_files_and_empty_environment_give_the_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_configs(environ={}) == dict(BUILTIN_INTEGRATIONS)


def test_env_variables_parse_as_json_else_string() -> None:
    env = {
        "QUEUE_RATELIMIT__MY-API__MAX_CONCURRENT": "null",
        "QUEUE_RATELIMIT__MY-API__MAX_RATE": "fast",
        "OTHER": "1",
    }
    assert load_env(env) == {"my-api": {"max_concurrent": None, "max_rate": "fast"}}


def test_toml_file_shape(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", "[openai.limits.tokens]\nmax_rate = 300\n")
    assert load_toml(path) == {"openai": {"limits": {"tokens": {"max_rate": 300}}}}


# --- Invalid configuration ---------------------------------------------------------------

LIMIT_TOKENS = "limits.tokens"


@pytest.mark.parametrize(
    ("integration", "settings", "field", "value"),
    [
        ("notion", {"min_rate": -1.0}, "min_rate", -1.0),
        ("notion", {"rate_limit_per_sec": 0}, "rate_limit_per_sec", 0),
        ("notion", {"min_rate": 3.0, "max_rate": 2.0}, "max_rate", 2.0),
        ("notion", {"rate_limit_per_sec": 9.0}, "rate_limit_per_sec", 9.0),
        ("notion", {"decrease_factor": 0}, "decrease_factor", 0),
        ("notion", {"decrease_factor": 1}, "decrease_factor", 1),
        ("notion", {"decrease_factor": 1.5}, "decrease_factor", 1.5),
        ("notion", {"max_rps": 3}, "max_rps", 3),
        ("notion", {"max_rate": "2.0"}, "max_rate", "2.0"),
        ("notion", {"burst_size": True}, "burst_size", True),
        ("notion", {"requeue_budget": 2.5}, "requeue_budget", 2.5),
        ("notion", {"max_concurrent": 0}, "max_concurrent", 0),
        ("notion", {"cooldown_wait": -1}, "cooldown_wait", -1),
        ("notion", {"max_sleepers": 0}, "max_sleepers", 0),
        ("notion", {"tenant_sleepers": 0}, "tenant_sleepers", 0),
        ("notion", {"max_wait": float("inf")}, "max_wait", float("inf")),
        ("notion", {"backoff_status_codes": [429, 99]}, "backoff_status_codes", [429, 99]),
        ("notion", {"backoff_status_codes": 429}, "backoff_status_codes", 429),
        ("openai", {"limits": {"tokens": {"max_rate": -5}}}, f"{LIMIT_TOKENS}.max_rate", -5),
        ("openai", {"limits": {"tokens": {"tpm": 1}}}, f"{LIMIT_TOKENS}.tpm", 1),
        (
            "openai",
            {"limits": {"tokens": {"decrease_factor": 1}}},
            f"{LIMIT_TOKENS}.decrease_factor",
            1,
        ),
        (
            "custom",
            {"limits": {"tokens": {"max_rate": 5.0}}},
            f"{LIMIT_TOKENS}.rate_limit_per_sec",
            None,
        ),
        ("custom", {"limits": {"requests": TOKENS}}, "limits.requests.name", "requests"),
        ("Bad Name", {}, "name", "Bad Name"),
    ],
)
def test_invalid_override_is_rejected(
    integration: str, settings: dict[str, object], field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_configs({integration: settings})
    assert_config_error(caught.value, integration, field, value)


def test_unknown_key_reason_lists_allowed_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        IntegrationConfig.from_mapping("notion", {"max_rps": 3})
    assert "max_rate" in caught.value.reason and "requeue_budget" in caught.value.reason


def test_replace_validates() -> None:
    notion = BUILTIN_INTEGRATIONS["notion"]
    assert notion.replace(max_rate=2.5).max_rate == 2.5
    with pytest.raises(ConfigError) as caught:
        notion.replace(min_rate=0)
    assert_config_error(caught.value, "notion", "min_rate", 0)
    with pytest.raises(ConfigError) as caught:
        notion.replace(colour="blue")
    assert_config_error(caught.value, "notion", "colour", "blue")


def test_duplicate_limit_names_are_rejected() -> None:
    tokens = LimitConfig("tokens", 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ConfigError) as caught:
        IntegrationConfig("custom", limits=(tokens, tokens))
    assert_config_error(caught.value, "custom", "limits.tokens.name", "tokens")


def test_env_string_for_number_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        load_configs(environ={"QUEUE_RATELIMIT__NOTION__MAX_RATE": "fast"}, toml_path=None)
    assert_config_error(caught.value, "notion", "max_rate", "fast")


def test_malformed_env_variable_name_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        load_env({"QUEUE_RATELIMIT__NOTION": "3"})
    assert_config_error(caught.value, None, "QUEUE_RATELIMIT__NOTION", "3")


def test_unknown_integration() -> None:
    with pytest.raises(ConfigError) as caught:
        get_integration("notoin")
    assert_config_error(caught.value, "notoin", "name", "notoin")
    assert "notion" in caught.value.reason


@pytest.mark.parametrize(
    ("filename", "text", "loader", "bad_line"),
    [
        ("q.toml", "[notion]\nmax_rate = = 2\n", load_toml, "max_rate = = 2"),
        ("q.json", '{"notion": {\n"max_rate": 2,,\n}}', load_json, '"max_rate": 2,,'),
        ("q.json", '["notion"]', load_json, None),
    ],
)
def test_malformed_file_is_rejected(
    tmp_path: Path, filename: str, text: str, loader: object, bad_line: str | None
) -> None:
    path = write(tmp_path / filename, text)
    with pytest.raises(ConfigError) as caught:
        loader(path)  # type: ignore[operator]
    expected_value = bad_line if bad_line is not None else ["notion"]
    assert_config_error(caught.value, None, str(path), expected_value)


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_configs(toml_path=path, environ={})
    assert_config_error(caught.value, None, str(path), str(path))


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, QueueRateLimitError)


@pytest.mark.parametrize(
    "layers",
    [
        lambda tmp: [{"notoin": {"max_rate": 3}}],
        lambda tmp: [load_env({"QUEUE_RATELIMIT__NOTOIN__MAX_RATE": "3"})],
        lambda tmp: [load_toml(write(tmp / "q.toml", "[notoin]\nmax_rate = 3\n"))],
    ],
)
def test_an_override_of_an_unknown_name_is_refused_with_a_suggestion(
    tmp_path: Path, layers: Any
) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_configs(*layers(tmp_path))
    assert_config_error(caught.value, "notoin", "name", "notoin")
    assert "did you mean 'notion'?" in str(caught.value)
    assert "rate_limit_per_sec" in str(caught.value)  # how to declare a new one


def test_a_new_integration_is_declared_by_its_rate_in_any_layer() -> None:
    configs = merge_configs({"my-api": {"rate_limit_per_sec": 2.0}}, {"my-api": {"max_rate": 4}})
    assert (configs["my-api"].rate_limit_per_sec, configs["my-api"].max_rate) == (2.0, 4.0)
    env = {"QUEUE_RATELIMIT__MY-API__MAX_RATE": "9"}  # the file declares it, the env tunes it
    assert (
        merge_configs({"my-api": {"rate_limit_per_sec": 2.0}}, load_env(env))["my-api"].max_rate
        == 9
    )


def test_an_unknown_name_at_acquire_suggests_the_close_one() -> None:
    from queue_ratelimit import Limiter

    with pytest.raises(ConfigError, match=r"did you mean 'github'\?"):
        Limiter().acquire("githbu")


def test_a_dialect_is_declared_in_toml_and_json_and_merged_per_field(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "queue-ratelimit.toml",
        """
[myapi]
rate_limit_per_sec = 2.0
max_rate = 20.0

[myapi.dialect]
backoff_statuses = [529]
body_statuses = [200]
throttle_codes = ["SLOW_DOWN"]
default_wait = 30

[myapi.dialect.headers]
"X-Points-Left" = "points.remaining"

[github.dialect]
body_statuses = [200]
""",
    )
    env = {"QUEUE_RATELIMIT__MYAPI__DIALECT": '{"reset_unit": "ms"}'}
    configs = load_configs(toml_path=toml, environ=env)
    dialect = configs["myapi"].dialect
    assert dialect.backoff_statuses == {529} and dialect.throttle_codes == {"SLOW_DOWN"}
    assert dialect.headers == {"x-points-left": "points.remaining"}
    assert (dialect.default_wait, dialect.reset_unit) == (30.0, "ms")  # env merged per field
    github = configs["github"].dialect
    assert github.body_statuses == {200}
    assert github.default_wait == BUILTIN_INTEGRATIONS["github"].dialect.default_wait  # kept


def test_an_invalid_dialect_field_fails_at_load_naming_it(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "q.toml",
        "[myapi]\nrate_limit_per_sec = 1\n[myapi.dialect]\nbackoff_statuses = [999]\n",
    )
    with pytest.raises(ConfigError, match=r"myapi.*dialect\.backoff_statuses"):
        load_configs(toml_path=toml, environ={})
