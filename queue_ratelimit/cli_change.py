"""The ``queue-ratelimit`` commands that change the shared state: ``reset``, ``breaker``,
``set`` and ``unset`` (each logged with who ran it), and ``migrate`` (a SQL store's tables).
``cli.py`` adds them to its group."""

from __future__ import annotations

import getpass

import click

from queue_ratelimit.backends import open_backend
from queue_ratelimit.cli_context import Context
from queue_ratelimit.cli_tables import key_text, override_text
from queue_ratelimit.inspection import known, tool_plan
from queue_ratelimit.logs import install_logging
from queue_ratelimit.policy.state import Plan
from queue_ratelimit.registry import did_you_mean

__all__ = ["breaker", "migrate", "reset", "set_override", "unset_override"]


@click.command()
@click.argument("integration")
@click.option("--tenant", default=None, help="Reset one tenant's key only.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset(obj: Context, integration: str, tenant: str | None, yes: bool) -> None:
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


@click.command()
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
def breaker(obj: Context, action: str, integration: str, seconds: float | None, yes: bool) -> None:
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


@click.command()
@click.pass_obj
def migrate(obj: Context) -> None:
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


@click.command("set")
@click.argument("integration")
@click.option("--tenant", default=None, help="Bound one tenant's key only.")
@click.option("--max-rate", type=float, default=None, help="Highest rate, calls per second.")
@click.option("--min-rate", type=float, default=None, help="Lowest rate AIMD may fall to.")
@click.option("--rate", type=float, default=None, help="Pin the rate: both bounds at once.")
@click.pass_obj
def set_override(
    obj: Context,
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
    click.echo(f"override on {key_text(integration, tenant)}: {override_text(override)}")


@click.command("unset")
@click.argument("integration")
@click.option("--tenant", default=None, help="The tenant's override only.")
@click.pass_obj
def unset_override(obj: Context, integration: str, tenant: str | None) -> None:
    """Remove an override ``set`` made: the workers' config holds again."""
    limiter, _ = obj.limiter()
    if tenant not in limiter.overrides(integration):
        raise click.ClickException(f"no override on {key_text(integration, tenant)}")
    install_logging()
    limiter.clear_override(integration, tenant, by=_operator())
    click.echo(f"override removed from {key_text(integration, tenant)}")


def _operator() -> str:
    """Who runs the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
