"""Every example in examples/ runs against the local testing upstream and loses no task.

Each runs as a user runs it (``python examples/<name>.py``) with no vendor token in its
environment, so its calls go to ``queue_ratelimit.testing``'s upstream; the RQ examples
use the test session's Redis.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# limiter_demo: no upstream and no task framework (a simulated clock); inbound_api: an app
# that uvicorn serves (tests/integration/test_inbound.py runs it)
NOT_RUN_HERE = {"limiter_demo", "inbound_api"}

TASKS = {  # each example: how many tasks it runs
    "airtable_celery": 30,
    "by_host_requests": 40,
    "fieldguide_celery": 20,
    "github_rq": 20,
    "keyring_token": 20,
    "notion_celery": 30,
    "openai_dramatiq": 20,
    "slack_dramatiq": 30,
    "vanta_rq": 20,
    "zapier_rq": 20,
}
NEEDS_REDIS = {"github_rq", "vanta_rq", "zapier_rq"}

# with any of these set, an example would call the vendor's real API
REAL_API_VARIABLES = (
    "AIRTABLE_TOKEN",
    "FIELDGUIDE_TOKEN",
    "GITHUB_TOKEN",
    "NOTION_TOKEN",
    "OPENAI_API_KEY",
    "SLACK_TOKEN",
    "VANTA_TOKEN",
    "ZAPIER_HOOK_URL",
)


def test_every_example_is_run_here() -> None:
    found = {path.stem for path in EXAMPLES.glob("*.py") if not path.name.startswith("_")}
    assert found - NOT_RUN_HERE == set(TASKS)


def _example_env(redis_url: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in REAL_API_VARIABLES}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    # never the developer's own keyring, which might hold a real token: an empty one
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
    return env


@pytest.fixture(scope="module")
def started(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The selected examples, all started at once: they mostly wait on their upstream's
    hidden limit, so together they take about as long as the slowest one."""
    selected = {
        str(item.callspec.params["name"])
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.function is test_example_runs_every_task_once_against_the_local_upstream
    }
    redis_url = request.getfixturevalue("redis_url") if selected & NEEDS_REDIS else None
    cwd = tmp_path_factory.mktemp("examples")  # no queue-ratelimit.toml of the checkout
    runs = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / f"{name}.py")],
            cwd=cwd,
            env=_example_env(redis_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in sorted(selected)
    }
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()
            run.communicate()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=[pytest.mark.redis] if name in NEEDS_REDIS else [])
        for name in sorted(TASKS)
    ],
)
def test_example_runs_every_task_once_against_the_local_upstream(
    name: str, started: dict[str, subprocess.Popen[str]]
) -> None:
    run = started[name]
    stdout, stderr = run.communicate(timeout=90)
    output = stdout + stderr
    assert run.returncode == 0, output
    tasks = TASKS[name]
    assert f"{name}: {tasks} tasks, {tasks} done, 0 lost;" in stdout, output
    assert "local upstream:" in stdout, output
    assert "every task served once" in stdout, output


class MemoryKeyring(KeyringBackend):
    """A keyring in a dict: the OS keyring cannot run here."""

    priority = 0.5

    def __init__(self, passwords: dict[tuple[str, str], str]) -> None:
        super().__init__()
        self.passwords = passwords

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.passwords.pop((service, username), None)


@pytest.fixture
def keyring_example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The keyring example as a module; the process's keyring is restored afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    previous = keyring.get_keyring()
    try:
        yield importlib.import_module("keyring_token")
    finally:
        keyring.set_keyring(previous)


def test_keyring_example_reads_the_token_from_the_keyring(
    keyring_example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    where = (keyring_example.KEYRING_SERVICE, keyring_example.KEYRING_USERNAME)
    keyring.set_keyring(MemoryKeyring({where: "secret-notion-token"}))
    assert keyring_example.token_from_keyring() == "secret-notion-token"
    keyring.set_keyring(MemoryKeyring({}))
    assert keyring_example.token_from_keyring() is None
    assert "secret-notion-token" not in "".join(capsys.readouterr())


def test_keyring_example_without_a_usable_keyring_runs_locally(
    keyring_example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring.set_keyring(fail.Keyring())
    assert keyring_example.token_from_keyring() is None
    assert "keyring unavailable (NoKeyringError): running locally" in capsys.readouterr().err
