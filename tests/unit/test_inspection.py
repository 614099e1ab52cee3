"""The operator tools work through the ``Backend`` protocol alone: the CLI's ``status``
against the memory backend; ``open_backend`` names a URL it cannot read. (``scan`` and
``purge`` on both backends: test_limiter_behaviour.)"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from queue_ratelimit import Limiter, MemoryBackend
from queue_ratelimit.backends import open_backend
from queue_ratelimit.cli import status
from queue_ratelimit.cli_context import Context
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.registry import load_configs


def test_status_reads_the_memory_backend_through_the_protocol() -> None:
    backend = MemoryBackend()
    limiter = Limiter(backend, load_configs())
    limiter.acquire("notion", "workspace-1")
    limiter.on_backoff("notion", "workspace-1", retry_after=30.0)
    obj = Context("memory://", "qrl", None, backend=backend)
    result = CliRunner().invoke(status, ["--json"], obj=obj)
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert (row["integration"], row["tenant"]) == ("notion", "workspace-1")
    assert 25.0 < row["cooldown_left"] <= 30.0


@pytest.mark.parametrize("url", ["redis//host", "http://127.0.0.1:6379", ""])
def test_a_url_no_backend_reads_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="url"):
        open_backend(url)


def test_the_cli_names_a_bad_url_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from queue_ratelimit.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--redis", "redis//host", "status"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "redis//host" in err and "url" in err


def test_a_backend_describes_itself_without_a_password() -> None:
    from queue_ratelimit.backends.redis import RedisBackend

    described = RedisBackend("redis://:s3cret@127.0.0.1:6390/2", prefix="app1").describe()
    assert described == "redis://127.0.0.1:6390/2 (prefix app1)"  # built, never connected
    assert MemoryBackend().describe() == "memory (this process only)"


def test_a_typed_name_that_matches_nothing_fails_with_a_suggestion() -> None:
    from queue_ratelimit.cli_change import reset

    backend = MemoryBackend()
    limiter = Limiter(backend, load_configs())
    limiter.acquire("notion", "workspace-1")
    obj = Context("memory://", "qrl", None, backend=backend)
    typo = CliRunner().invoke(reset, ["notion", "--tenant", "workspace-l", "--yes"], obj=obj)
    assert typo.exit_code == 1
    assert "no such key: notion:workspace-l (did you mean 'workspace-1'?)" in typo.output
    unknown = CliRunner().invoke(status, ["notoin"], obj=obj)
    assert unknown.exit_code != 0 and "did you mean 'notion'?" in str(unknown.exception)
    done = CliRunner().invoke(reset, ["notion", "--yes"], obj=obj)
    assert done.exit_code == 0 and "reset notion (1 key)" in done.output
    assert list(backend.scan("notion")) == []
