"""docker-compose.yml: it is a valid Compose file, its commands are the documented ones and its
files agree. Validated in Python (no Docker tool needed); a real ``docker compose config`` or
``docker-compose config`` also runs where one is installed, and must then pass."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from queue_ratelimit.registry import load_configs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCS = ROOT / "docs"
SERVICES = {
    "redis",
    "rabbitmq",
    "upstream",
    "celery-worker",
    "dramatiq-worker",
    "rq-worker",
    "producer",
    "exporter",
    "prometheus",
    "grafana",
}
TOP_LEVEL = {"version", "name", "services", "volumes", "networks", "configs", "secrets"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
PORT = re.compile(r"(?:(?:\d{1,3}\.){3}\d{1,3}:)?(?:\d{1,5}:)?\d{1,5}(?:/(?:tcp|udp))?")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $VAR and $$ (a literal $)
INTERPOLATION = re.compile(r"\$(?:\$|\{\w+(?:(?::?[-?+])[^}]*)?\}|\w+)")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _document()["services"]
    return services


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _service_problems(name: str, service: Any, document: dict[str, Any]) -> list[str]:
    """What ``docker compose config`` would refuse in one service (the parts we use)."""
    if not isinstance(service, dict):
        return [f"{name}: a service is a mapping"]
    services, volumes = document["services"], document.get("volumes") or {}
    problems = []
    build = service.get("build")
    if "image" not in service and build is None:
        problems.append(f"{name}: neither image nor build")
    if isinstance(build, dict):
        context = ROOT / build.get("context", ".")
        if not context.is_dir() or not (context / build.get("dockerfile", "Dockerfile")).is_file():
            problems.append(f"{name}: build context or dockerfile missing")
    if not isinstance(service.get("command", ""), (str, list)):
        problems.append(f"{name}: command is a string or a list")
    if service.get("restart", "no") not in RESTART:
        problems.append(f"{name}: restart {service['restart']!r}")
    for port in service.get("ports", []):
        if not isinstance(port, str) or not PORT.fullmatch(port):
            problems.append(f"{name}: port {port!r}")
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    if not isinstance(environment, dict):
        problems.append(f"{name}: environment is a mapping or a list")
        environment = {}
    for key, value in environment.items():
        if not ENV_NAME.fullmatch(str(key)) or isinstance(value, (dict, list)):
            problems.append(f"{name}: environment {key!r}")
    depends = service.get("depends_on", [])
    targets = depends if isinstance(depends, list) else list(depends)
    for target in targets:
        if target not in services or target == name:
            problems.append(f"{name}: depends on unknown service {target!r}")
            continue
        condition = depends[target].get("condition") if isinstance(depends, dict) else None
        if condition is not None and condition not in CONDITIONS:
            problems.append(f"{name}: depends_on condition {condition!r}")
        if condition == "service_healthy" and "healthcheck" not in services[target]:
            problems.append(f"{name}: waits for {target} to be healthy; it has no healthcheck")
    for volume in service.get("volumes", []):
        source = str(volume).split(":")[0]
        if not source.startswith(("/", ".", "~")) and source not in volumes:
            problems.append(f"{name}: volume {source!r} is not declared")
    pid = service.get("pid", "host")
    if pid != "host" and pid.removeprefix("service:") not in services:
        problems.append(f"{name}: pid {pid!r}")
    test = service.get("healthcheck", {}).get("test", ["NONE"])
    if isinstance(test, list) and test[0] not in {"CMD", "CMD-SHELL", "NONE"}:
        problems.append(f"{name}: healthcheck test starts with {test[0]!r}")
    return problems


def compose_problems(document: Any) -> list[str]:
    """The Compose rules this stack relies on, checked without Docker."""
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        return ["the file has no services mapping"]
    problems = [
        f"unknown top-level key {key!r}"
        for key in document
        if key not in TOP_LEVEL and not str(key).startswith("x-")
    ]
    for name, service in document["services"].items():
        problems += _service_problems(name, service, document)
    for text in _strings(document):
        if INTERPOLATION.sub("", text).count("$"):
            problems.append(f"malformed interpolation in {text!r}")
    return problems


def test_the_compose_file_is_valid() -> None:
    assert compose_problems(_document()) == []


def _break(document: dict[str, Any], how: str) -> None:
    services = document["services"]
    if how == "no image":
        del services["redis"]["image"]
    elif how == "bad port":
        services["grafana"]["ports"] = ["127.0.0.1:3000:3000:1"]
    elif how == "unknown dependency":
        services["producer"]["depends_on"]["celery-wroker"] = {"condition": "service_started"}
    elif how == "healthy without healthcheck":
        services["producer"]["depends_on"]["upstream"] = {"condition": "service_healthy"}
    elif how == "undeclared volume":
        services["exporter"]["volumes"] = ["metrcis:/run/qrl-metrics"]
    elif how == "bad interpolation":
        services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"] = "${RABBITMQ_USER:-qrl"
    elif how == "missing dockerfile":
        services["upstream"]["build"] = {"context": ".", "dockerfile": "deploy/Nope"}
    elif how == "bad restart":
        services["redis"]["restart"] = "sometimes"


@pytest.mark.parametrize(
    "how",
    [
        "no image",
        "bad port",
        "unknown dependency",
        "healthy without healthcheck",
        "undeclared volume",
        "bad interpolation",
        "missing dockerfile",
        "bad restart",
    ],
)
def test_the_validator_refuses_a_broken_file(how: str) -> None:
    document = copy.deepcopy(_document())
    _break(document, how)
    assert compose_problems(document)


def _compose_tools() -> list[list[str]]:
    tools = []
    if shutil.which("docker-compose"):
        tools.append(["docker-compose"])
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        tools.append([docker, "compose"])
    return tools


def test_a_real_compose_tool_accepts_the_file_where_one_is_installed() -> None:
    # Docker's own tools are optional on a developer's machine: checked where present, and
    # the file is validated in Python above either way
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for tool in _compose_tools():
        done = subprocess.run(
            [*tool, "-f", str(COMPOSE), "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{' '.join(tool)}: {done.stderr}"


def test_the_stack_has_every_service_and_each_command_is_documented() -> None:
    services = _services()
    assert set(services) == SERVICES
    page = (DOCS / "compose.md").read_text()
    commands = {name: s["command"] for name, s in services.items() if "command" in s}
    assert set(commands) == SERVICES - {"redis", "rabbitmq", "prometheus", "grafana"}
    for name, command in commands.items():
        assert isinstance(command, str) and "$" not in command, name
        assert command in page, f"{name}: {command!r} is not in docs/compose.md"


def test_worker_and_exporter_commands_are_the_forms_the_framework_docs_give() -> None:
    commands = {name: s.get("command", "") for name, s in _services().items()}
    rq_form = "rq worker -w queue_ratelimit.integrations.rq.RateLimitedWorker --with-scheduler"
    assert rq_form in (DOCS / "rq.md").read_text()
    assert commands["rq-worker"] == f"{rq_form} crm helpdesk"
    assert commands["exporter"] in (DOCS / "metrics.md").read_text()
    assert re.search(r"\bcelery -A \w+ worker -Q ", (DOCS / "celery.md").read_text())
    celery = re.fullmatch(
        r"celery -A ([\w.]+) worker -Q crm,helpdesk .*", commands["celery-worker"]
    )
    assert re.search(r"\bdramatiq \w+ -Q ", (DOCS / "dramatiq.md").read_text())
    dramatiq = re.fullmatch(r"dramatiq ([\w.]+) -Q crm helpdesk .*", commands["dramatiq-worker"])
    producer = re.fullmatch(r"python -m ([\w.]+)", commands["producer"])
    assert celery and dramatiq and producer
    for module in (celery[1], dramatiq[1], producer[1]):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


def test_mounted_files_exist_and_point_at_each_other() -> None:
    services = _services()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts a missing {source}"
    build = services["upstream"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()

    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    dashboard = next(target for target in grafana if target.endswith(".json"))
    assert grafana[dashboard] == "./dashboards/queue_ratelimit.json"
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    provider = yaml.safe_load((provisioning / "dashboards" / "queue_ratelimit.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == str(Path(dashboard).parent)
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"

    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    port = services["exporter"]["command"].rsplit("--port ", 1)[1]
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == [f"exporter:{port}"]


def test_the_integrations_file_defines_the_apps_integrations() -> None:
    env = _services()["celery-worker"]["environment"]
    path = env["QUEUE_RATELIMIT_CONFIG"].replace("/app/", "", 1)  # the image's /app is ROOT
    configs = load_configs(toml_path=ROOT / path, environ={})
    from deploy.app.settings import INTEGRATIONS

    for name in INTEGRATIONS:
        assert configs[name].max_rate >= 20  # the upstream's hidden limit is reachable


def test_no_password_is_written_in_the_file() -> None:
    for name, service in _services().items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if re.search(r"PASS|SECRET|TOKEN", key):
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
            userinfo = re.search(r"://([^/@]*)@", str(value))
            if userinfo:  # amqp://user:password@host: both from the environment
                assert re.fullmatch(r"\$\{\w+:-\w*\}:\$\{\w+:-\w*\}", userinfo[1]), key
