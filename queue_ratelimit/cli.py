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

import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from queue_ratelimit.backends import Backend, open_backend, redacted
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import QueueRateLimitError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import plan_for
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

    def __init__(
        self, redis_url: str, prefix: str, config: str | None, backend: Backend | None = None
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.config_path = config
        self.backend = backend  # given: the commands use it (any Backend), not the URL's

    def limiter(self) -> tuple[Limiter, Backend]:
        backend = self.backend or open_backend(self.redis_url, prefix=self.prefix)
        return Limiter(backend, _configs(self.config_path)), backend


@click.group()
@click.option(
    "--redis",
    "redis_url",
    envvar="QUEUE_RATELIMIT_REDIS_URL",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="The shared state.",
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


def _plan(limiter: Limiter, backend: Backend, name: str) -> Plan | None:
    """The plan to read ``name``'s keys with: the local config's, else the one its workers
    stored (so the tools need no config file), else none."""
    if name in limiter.configs:
        return plan_for(limiter.config(name))
    return backend.stored_plan(name)


def _known(limiter: Limiter, backend: Backend, integration: str) -> None:
    """``integration`` is configured here or has keys; else a ConfigError with a hint."""
    if integration in limiter.configs or any(True for _ in backend.scan(integration)):
        return
    limiter.config(integration)  # raises, naming the closest known integration


def _rows(limiter: Limiter, backend: Backend, integration: str | None) -> Iterator[dict[str, Any]]:
    plans: dict[str, Plan | None] = {}
    for name, tenant in sorted(backend.scan(integration), key=lambda k: (k[0], k[1] or "")):
        if name not in plans:
            plans[name] = _plan(limiter, backend, name)
        plan = plans[name]
        row: dict[str, Any] = {"integration": name, "tenant": tenant}
        if plan is None or not plan.limits:
            yield row  # no config here and no description stored: shown by name only
            continue
        snap = backend.snapshot(name, tenant, plan)
        primary, bounds = snap.limit(plan.limits[0].name), plan.limits[0]
        if snap.stored_name:
            row["tenant_name"] = snap.stored_name
        row.update(
            rate=round(primary.rate, 4),
            min_rate=bounds.min_rate,
            max_rate=bounds.max_rate,
            tokens=round(primary.tokens, 3),
            reserved=round(primary.reserved, 3),
            cooldown_left=round(snap.cooldown_left, 3),
            leases=snap.leases,
            breaker=snap.breaker,
            breaker_wait=round(snap.breaker_wait, 3),
            counts=dict(snap.counts),
        )
        yield row


@cli.command()
@click.argument("integration", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines for scripts.")
@click.pass_obj
def status(obj: _Context, integration: str | None, as_json: bool) -> None:
    """Every limiter key in Redis: rate, tokens, cooldown, reservations, breaker."""
    limiter, backend = obj.limiter()
    if integration is not None:
        _known(limiter, backend, integration)
    rows = list(_rows(limiter, backend, integration))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"queue_ratelimit keys under {obj.prefix!r}")
    for column in (
        "integration",
        "tenant",
        "rate (min-max)",
        "tokens",
        "reserved",
        "cooldown",
        "leases",
        "breaker",
    ):
        table.add_column(column)
    for row in rows:
        if "rate" not in row:
            table.add_row(row["integration"], row["tenant"] or "-", "(no limits described)")
            continue
        breaker = row["breaker"] + (f" {row['breaker_wait']}s" if row["breaker_wait"] else "")
        table.add_row(
            row["integration"],
            row["tenant"] or "-",
            f"{row['rate']} ({row['min_rate']}-{row['max_rate']})",
            str(row["tokens"]),
            str(row["reserved"]),
            f"{row['cooldown_left']}s",
            str(row["leases"]),
            breaker,
        )
    Console().print(table)


def _top_table(rows: list[dict[str, Any]], rates: dict[str, dict[str, float]]) -> Table:
    table = Table(title="queue_ratelimit top (Ctrl-C to quit)")
    for column in (
        "integration",
        "tenant",
        "rate",
        "tokens",
        "reserved",
        "cooldown",
        "breaker",
        "requeues/s",
        "backoffs/s",
    ):
        table.add_column(column)
    for row in rows:
        per_second = rates.get(row["integration"], {})
        table.add_row(
            row["integration"],
            row["tenant"] or "-",
            str(row.get("rate", "")),
            str(row.get("tokens", "")),
            str(row.get("reserved", "")),
            f"{row.get('cooldown_left', '')}s",
            str(row.get("breaker", "")),
            f"{per_second.get('requeues', 0.0):.2f}",
            f"{per_second.get('backoffs', 0.0):.2f}",
        )
    return table


@cli.command()
@click.argument("integration", required=False)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option(
    "--iterations", type=int, default=0, help="Stop after this many refreshes (0: never)."
)
@click.pass_obj
def top(obj: _Context, integration: str | None, interval: float, iterations: int) -> None:
    """``status``, live, with the fleet's requeues and backoffs per second."""
    from rich.live import Live

    limiter, backend = obj.limiter()
    before = _totals(_rows(limiter, backend, integration))
    started = time.monotonic()
    done = 0
    with Live(_top_table([], {}), console=Console(), auto_refresh=False) as live:
        while iterations == 0 or done < iterations:
            time.sleep(interval)
            elapsed, started = time.monotonic() - started, time.monotonic()
            rows = list(_rows(limiter, backend, integration))
            after = _totals(rows)
            rates = {  # (a key that expired meanwhile takes its counts along: never below 0)
                name: {
                    event: max(0.0, (value - before.get(name, {}).get(event, 0)) / elapsed)
                    for event, value in counts.items()
                }
                for name, counts in after.items()
            }
            before = after
            live.update(_top_table(rows, rates), refresh=True)
            done += 1


def _totals(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Each integration's event counts, summed over its keys' rows."""
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = totals.setdefault(row["integration"], {})
        for event, value in row.get("counts", {}).items():
            counts[event] = counts.get(event, 0) + value
    return totals


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
    _known(limiter, backend, integration)
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
    _known(limiter, backend, integration)
    if not yes:
        click.confirm(f"{action.capitalize()} the breaker of {integration}?", abort=True)
    state = "open" if action == "open" else "closed"
    plan = _plan(limiter, backend, integration) or Plan(limits=())  # (its defaults, at worst)
    backend.set_breaker(
        integration, state, plan.breaker_open_seconds if seconds is None else seconds
    )
    click.echo(f"breaker of {integration}: {'open' if action == 'open' else 'closed'}")


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
@click.pass_obj
def exporter(obj: _Context, port: int, addr: str, multiproc_dir: str | None) -> None:
    """Serve the fleet-wide state (and this host's worker counters) for Prometheus."""
    from queue_ratelimit.metrics import serve

    limiter, backend = obj.limiter()
    serve(limiter, backend, port, addr, multiproc_dir)
    click.echo(f"serving http://{addr}:{port}/metrics from {redacted(obj.redis_url)}")
    threading.Event().wait()


@cli.command()
@click.option("--tasks", type=int, default=300, show_default=True, help="Tasks to run.")
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
    except QueueRateLimitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
