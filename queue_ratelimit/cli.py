"""``queue-ratelimit``: see and steer the fleet's shared limiter state from a terminal.

::

    queue-ratelimit status [INTEGRATION] [--json]       every limiter key in Redis
    queue-ratelimit top [INTEGRATION]                   the same, live, with requeues/s
    queue-ratelimit reset INTEGRATION [--tenant T]      forget a key's learned state
    queue-ratelimit breaker open|close INTEGRATION      an operator's override
    queue-ratelimit config show | validate FILE         the merged configuration
    queue-ratelimit exporter [--port N]                 /metrics for Prometheus
    queue-ratelimit demo [--plot FILE.png]              the product, end to end, no server

Redis and configuration come from ``--redis`` / ``--prefix`` / ``--config`` or the
environment (``QUEUE_RATELIMIT_REDIS_URL``, ``QUEUE_RATELIMIT_PREFIX``,
``QUEUE_RATELIMIT_CONFIG``). Needs the ``cli`` extra (click, rich).
"""

from __future__ import annotations

import getpass
import json
import sys
import threading
import time

import click
import redis
from rich.console import Console

from queue_ratelimit.backends import (
    POSTGRES_SCHEMES,
    SQLITE_SCHEME,
    Backend,
    open_backend,
    redacted,
)
from queue_ratelimit.cli_tables import override_text, status_table, top_table, with_override
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendError, QueueRateLimitError
from queue_ratelimit.inspection import (
    SORTS,
    Activity,
    KeyState,
    known,
    read_keys,
    sort_keys,
    tool_plan,
)
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.logs import install_logging
from queue_ratelimit.policy.state import Plan
from queue_ratelimit.registry import (
    did_you_mean,
    load_configs,
    load_json,
    load_toml,
    merge_configs,
)

__all__ = ["main"]


def _configs(path: str | None) -> dict[str, IntegrationConfig]:
    if path is None:
        return load_configs()
    if path.endswith(".json"):
        return load_configs(json_path=path)
    return load_configs(toml_path=path)


class _Context:
    """What every command needs, built lazily so ``config`` works without Redis."""

    last: _Context | None = None  # the latest, for the error line of ``main``

    def __init__(
        self, redis_url: str, prefix: str, config: str | None, backend: Backend | None = None
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.config_path = config
        self.backend = backend  # given: the commands use it (any Backend), not the URL's
        _Context.last = self

    def limiter(self) -> tuple[Limiter, Backend]:
        backend = self.backend or open_backend(self.redis_url, prefix=self.prefix)
        return Limiter(backend, _configs(self.config_path)), backend


@click.group()
@click.option(
    "--redis",
    "--store",
    "redis_url",
    envvar="QUEUE_RATELIMIT_REDIS_URL",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="The shared state: a Redis URL, postgresql://... or sqlite:///path for a SQLite file.",
)
@click.option(
    "--prefix",
    envvar="QUEUE_RATELIMIT_PREFIX",
    default="qrl",
    show_default=True,
    help="The key prefix the workers use.",
)
@click.option(
    "--config",
    envvar="QUEUE_RATELIMIT_CONFIG",
    default=None,
    help="A TOML or JSON file of integration overrides.",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str, prefix: str, config: str | None) -> None:
    """See and steer queue_ratelimit's shared limiter state."""
    ctx.obj = _Context(redis_url, prefix, config)


_SORT = click.Choice(SORTS)


def _empty(obj: _Context, backend: Backend, integration: str | None) -> str:
    """Why a listing is empty, and what to check."""
    what = f"no keys of {integration}" if integration else "no limiter keys"
    return (
        f"{what} in {backend.describe()}: workers write them at their first decision; "
        "check that they use this Redis and prefix (each worker names both in its start line)"
    )


@cli.command()
@click.argument("integration", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print every key as JSON, for scripts.")
@click.option("--sort", type=_SORT, default="name", show_default=True, help="Order of the keys.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Keys in the table (the first by --sort); --json prints them all.",
)
@click.pass_obj
def status(obj: _Context, integration: str | None, as_json: bool, sort: str, limit: int) -> None:
    """Every limiter key in Redis: rate, tokens, cooldown, reservations, breaker."""
    limiter, backend = obj.limiter()
    if integration is not None:
        known(limiter, backend, integration)
    keys = read_keys(limiter, backend, integration)
    if as_json:
        names = sorted({key.integration for key in keys})
        held = {name: limiter.overrides(name) for name in names}
        found = [
            with_override(state.row(), held[state.integration], state.tenant) for state in keys
        ]
        found += [row for row in (_app_row(limiter, backend, name) for name in names) if row]
        rows = ",\n".join(json.dumps(row) for row in found)  # (a key a line)
        click.echo(f"[\n{rows}\n]" if rows else "[]")
        return
    if not keys:
        click.echo(_empty(obj, backend, integration))
        if integration is not None:  # (bounds set before any worker wrote a key)
            for tenant, override in limiter.overrides(integration).items():
                click.echo(
                    f"override on {_key_text(integration, tenant)}: {override_text(override)}"
                )
        return
    shown = sort_keys(keys, sort)[:limit]
    caption = (
        f"{len(keys) - len(shown):,} more: --limit, --sort or --json" if len(keys) > limit else ""
    )
    console = Console()
    title = f"queue_ratelimit: {len(keys):,} keys under {obj.prefix!r}"
    console.print(status_table(shown, title, console.width, caption))
    for name in sorted({key.integration for key in keys}):
        for tenant, override in sorted(
            limiter.overrides(name).items(), key=lambda item: item[0] or ""
        ):
            click.echo(f"override on {_key_text(name, tenant)}: {override_text(override)}")
        line = _app_line(limiter, backend, name)
        if line:
            click.echo(line)


def _app_row(limiter: Limiter, backend: Backend, integration: str) -> dict[str, object] | None:
    """The integration-wide level of a chained integration as ``status --json`` prints it
    (``"level": "app"``, beside the keys' rows); ``None`` for another."""
    plan = tool_plan(limiter, backend, integration)
    if plan is None or plan.app is None:
        return None
    snap = backend.app_snapshot(integration, plan)
    level = KeyState(integration, None, snap if snap.exists else None, plan.app)
    return {**level.row(), "level": "app"}


def _app_line(limiter: Limiter, backend: Backend, integration: str) -> str:
    """The integration-wide level of a chained integration, one line (``docs/limits.md``);
    ``""`` for another. Its plan is this config's, else what the workers stored."""
    plan = tool_plan(limiter, backend, integration)
    if plan is None or plan.app is None:
        return ""
    snap = backend.app_snapshot(integration, plan)
    if not snap.exists:
        return f"all tenants of {integration}: no call yet"
    level = snap.limit()
    cooling = f", cooling down {snap.cooldown_left:.1f} s" if snap.cooldown_left > 0 else ""
    return (
        f"all tenants of {integration}: {level.rate:.2f}/s, "
        f"{max(0.0, level.tokens):.1f} tokens, {level.reserved:.1f} owed{cooling}"
    )


@cli.command()
@click.argument("integration", required=False)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option(
    "--iterations", type=int, default=0, help="Stop after this many refreshes (0: never)."
)
@click.option(
    "--sort", type=_SORT, default="requeues", show_default=True, help="Busiest keys first by."
)
@click.pass_obj
def top(
    obj: _Context, integration: str | None, interval: float, iterations: int, sort: str
) -> None:
    """``status``, live: the busiest keys first, with requeues and 429s per second."""
    from rich.live import Live

    limiter, backend = obj.limiter()
    if integration is not None:
        known(limiter, backend, integration)
    console = Console()
    meter = Activity(read_keys(limiter, backend, integration))
    done = 0
    empty = top_table([], {}, console.width, sort=sort)
    with Live(empty, console=console, auto_refresh=False) as live:
        while iterations == 0 or done < iterations:
            time.sleep(interval)
            keys = read_keys(limiter, backend, integration)
            rates = meter.measure(keys)
            rows = max(1, console.height - 7)  # title, header, rule, caption, margins
            shown = sort_keys(keys, sort, rates)[:rows]
            table = top_table(shown, rates, console.width, sort=sort, total=len(keys))
            live.update(table, refresh=True)
            done += 1


@cli.command()
@click.argument("integration")
@click.option("--tenant", default=None, help="Reset one tenant's key only.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset(obj: _Context, integration: str, tenant: str | None, yes: bool) -> None:
    """Forget learned rates, debts, cooldowns and leases: of the integration and every one
    of its tenants, or of one tenant's key (``--tenant``; exit 1 when there is no such key).
    The breaker is left as it is (see ``breaker``)."""
    limiter, backend = obj.limiter()
    known(limiter, backend, integration)
    keys = [key for key in backend.scan(integration) if tenant is None or key[1] == tenant]
    if tenant is not None and not keys:
        tenants = [each for _, each in backend.scan(integration) if each]
        hint = did_you_mean(tenant, tenants)
        raise click.ClickException(f"no such key: {integration}:{tenant}{hint}")
    count = f"{len(keys)} key{'' if len(keys) == 1 else 's'}"
    what = f"{integration}:{tenant}" if tenant else f"{integration} ({count})"
    if not yes:
        click.confirm(f"Reset the limiter state of {what}?", abort=True)
    for name, each in keys:
        backend.reset(name, each)
    click.echo(f"reset {what}")


@cli.command()
@click.argument("action", type=click.Choice(["open", "close"]))
@click.argument("integration")
@click.option(
    "--seconds",
    type=float,
    default=None,
    help="How long to hold it open (default: the integration's breaker_open_seconds).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def breaker(obj: _Context, action: str, integration: str, seconds: float | None, yes: bool) -> None:
    """Force an integration's breaker open (every worker pauses its queue) or closed."""
    limiter, backend = obj.limiter()
    known(limiter, backend, integration)
    if not yes:
        click.confirm(f"{action.capitalize()} the breaker of {integration}?", abort=True)
    state = "open" if action == "open" else "closed"
    plan = tool_plan(limiter, backend, integration) or Plan(limits=())  # (its defaults, at worst)
    backend.set_breaker(
        integration, state, plan.breaker_open_seconds if seconds is None else seconds
    )
    click.echo(f"breaker of {integration}: {'open' if action == 'open' else 'closed'}")


@cli.command()
@click.pass_obj
def migrate(obj: _Context) -> None:
    """Create the shared state's tables when missing (a SQL store; idempotent). Redis needs
    none."""
    backend = obj.backend or open_backend(obj.redis_url, prefix=obj.prefix)
    create = getattr(backend, "create_schema", None)
    if create is None:
        click.echo(f"{backend.describe()}: nothing to create")
        return
    try:
        create()
    finally:
        close = getattr(backend, "close", None)
        if close is not None and obj.backend is None:  # (a backend the command opened)
            close()
    click.echo(f"{backend.describe()}: tables ready")


@cli.command("set")
@click.argument("integration")
@click.option("--tenant", default=None, help="Bound one tenant's key only.")
@click.option("--max-rate", type=float, default=None, help="Highest rate, calls per second.")
@click.option("--min-rate", type=float, default=None, help="Lowest rate AIMD may fall to.")
@click.option("--rate", type=float, default=None, help="Pin the rate: both bounds at once.")
@click.pass_obj
def set_override(
    obj: _Context,
    integration: str,
    tenant: str | None,
    max_rate: float | None,
    min_rate: float | None,
    rate: float | None,
) -> None:
    """Bound an integration's rate (or one tenant's) for every running worker, until
    ``unset``: each worker's next decision obeys it, without a restart. Logged, with you."""
    if rate is not None:
        if max_rate is not None or min_rate is not None:
            raise click.UsageError("--rate pins the rate: give it alone, or the bounds")
        max_rate = min_rate = rate
    limiter, backend = obj.limiter()
    known(limiter, backend, integration)
    install_logging()
    override = limiter.set_override(
        integration, tenant, max_rate=max_rate, min_rate=min_rate, by=_operator()
    )
    click.echo(f"override on {_key_text(integration, tenant)}: {override_text(override)}")


@cli.command("unset")
@click.argument("integration")
@click.option("--tenant", default=None, help="The tenant's override only.")
@click.pass_obj
def unset_override(obj: _Context, integration: str, tenant: str | None) -> None:
    """Remove an override ``set`` made: the workers' config holds again."""
    limiter, _ = obj.limiter()
    if tenant not in limiter.overrides(integration):
        raise click.ClickException(f"no override on {_key_text(integration, tenant)}")
    install_logging()
    limiter.clear_override(integration, tenant, by=_operator())
    click.echo(f"override removed from {_key_text(integration, tenant)}")


def _operator() -> str:
    """Who runs the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _key_text(integration: str, tenant: str | None) -> str:
    return f"{integration}:{tenant}" if tenant else f"{integration} (all its keys)"


@cli.group()
def config() -> None:
    """The merged integration configuration."""


@config.command("show")
@click.argument("integration", required=False)
@click.pass_obj
def config_show(obj: _Context, integration: str | None) -> None:
    """Print the merged configuration (built-ins < TOML < JSON < environment) as JSON."""
    configs = _configs(obj.config_path)
    names = [integration] if integration else sorted(configs)
    for name in names:
        if name not in configs:
            hint = did_you_mean(name, configs)
            raise click.BadParameter(
                f"unknown integration {name!r}{hint}", param_hint="INTEGRATION"
            )
    click.echo(json.dumps({name: configs[name].to_dict() for name in names}, indent=2))


@config.command("validate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def config_validate(path: str) -> None:
    """Check a TOML or JSON override file; exit 1 naming the bad field when invalid."""
    layer = load_json(path) if path.endswith(".json") else load_toml(path)
    configs = merge_configs(layer)
    click.echo(f"{path}: valid ({len(layer)} integrations overridden, {len(configs)} in all)")


@cli.command()
@click.option("--port", type=int, default=9808, show_default=True, help="Port to listen on.")
@click.option("--addr", default="0.0.0.0", show_default=True, help="Address to bind.")
@click.option(
    "--multiproc-dir",
    envvar="PROMETHEUS_MULTIPROC_DIR",
    default=None,
    help="prometheus-client's multiprocess directory of the workers on this host.",
)
@click.option(
    "--max-tenants",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Tenants reported per integration: the busiest (requeues and 429s, then debt).",
)
@click.pass_obj
def exporter(
    obj: _Context, port: int, addr: str, multiproc_dir: str | None, max_tenants: int
) -> None:
    """Serve the fleet-wide state (and this host's worker counters) for Prometheus."""
    from queue_ratelimit.metrics import serve

    limiter, backend = obj.limiter()
    serve(limiter, backend, port, addr, multiproc_dir, max_tenants)
    click.echo(f"serving http://{addr}:{port}/metrics from {redacted(obj.redis_url)}")
    threading.Event().wait()


@cli.command()
@click.option("--tasks", type=int, default=800, show_default=True, help="Tasks to run.")
@click.option(
    "--hidden-limit",
    type=float,
    default=20.0,
    show_default=True,
    help="Calls per second the local upstream accepts, per integration.",
)
@click.option("--plot", "plot_path", default=None, help="Write a PNG chart of the rate here.")
@click.option(
    "--redis",
    "demo_redis",
    default=None,
    help="Run a small fleet on this Redis: limiter state, broker and --workers processes.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Celery worker processes (8 threads each) with --redis.",
)
@click.option(
    "--framework",
    type=click.Choice(["celery", "dramatiq"]),
    default="celery",
    show_default=True,
    help="Celery on its in-memory broker, or Dramatiq on its StubBroker.",
)
def demo(
    tasks: int,
    hidden_limit: float,
    plot_path: str | None,
    demo_redis: str | None,
    workers: int,
    framework: str,
) -> None:
    """The product end to end, no server needed: tasks find an upstream's hidden limit."""
    from queue_ratelimit.demo import run_demo

    summary = run_demo(
        tasks=tasks,
        hidden_limit=hidden_limit,
        plot=plot_path,
        redis_url=demo_redis,
        framework=framework,
        workers=workers,
    )
    if not summary.ok:
        raise click.ClickException(f"{summary.lost} lost, {summary.duplicates} duplicated")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one line on stderr and exit status 1."""
    try:
        cli.main(args=argv, prog_name="queue-ratelimit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BackendError as exc:
        click.echo(f"error: {_explain(exc, _Context.last)}", err=True)
        sys.exit(1)
    except QueueRateLimitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _explain(exc: BackendError, obj: _Context | None) -> str:
    """A store's failure as the operator can act on it: what, where and what to check."""
    where = f"Redis at {redacted(obj.redis_url)}" if obj else "the shared state"
    if obj and obj.redis_url.startswith(SQLITE_SCHEME):
        return f"the SQLite file {obj.redis_url[len(SQLITE_SCHEME) :]}: {exc}"
    if obj and obj.redis_url.startswith(POSTGRES_SCHEMES):
        return f"{exc} (is the server up, and the URL's user allowed in?)"
    cause = exc.__cause__
    detail = str(cause or exc)
    lowered = detail.lower()
    if isinstance(cause, redis.AuthenticationError) or any(
        word in lowered for word in ("wrongpass", "noauth", "auth <password>", "invalid password")
    ):
        return (
            f"{where} refused the credentials ({detail}); give them in the URL: "
            "redis://:PASSWORD@host:6379/0 or redis://USER:PASSWORD@host:6379/0"
        )
    if "db index" in lowered:
        return f"{where}: no such database ({detail}); use the database your workers use"
    if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
        reason = (
            "connection refused"
            if "refused" in lowered
            else "unknown host"
            if "not known" in lowered or "nodename" in lowered
            else "no answer in time"
            if isinstance(cause, redis.TimeoutError) or "timed out" in lowered
            else detail
        )
        return (
            f"cannot reach {where}: {reason}; is the server up, and is this the URL your "
            "workers use? (--redis or QUEUE_RATELIMIT_REDIS_URL)"
        )
    return f"{where}: {exc}"


if __name__ == "__main__":
    main()
