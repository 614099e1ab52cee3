"""Which limiter key a rate-limited HTTP client's request counts against: its integration
(the client's, its host's with ``BY_HOST``, then its endpoint group's), its tenant and its
estimated cost (:mod:`queue_ratelimit.client_calls` asks and reports for it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from queue_ratelimit import context
from queue_ratelimit.client_requests import Request, host_of, method_and_path, token_tenant
from queue_ratelimit.endpoints import route
from queue_ratelimit.hosts import BY_HOST
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost

BY_TOKEN: Final = "queue_ratelimit:by-token"
"""Pass as ``tenant`` to key each request's limit by a digest of its Authorization header."""

Tenant = str | Callable[[Any], str | None] | None


class RequestKeys:
    """A client's integration, tenant and estimate, resolved for each request."""

    def __init__(
        self,
        limiter: Limiter,
        integration: str,
        tenant: Tenant,
        estimate: Callable[[Any], Cost] | None,
    ) -> None:
        if integration != BY_HOST:
            limiter.config(integration)  # an unknown integration fails here, at construction
        self.limiter = limiter
        self.integration = integration
        self.tenant = tenant
        self.estimate = estimate

    def integration_of(self, request: Request) -> str:
        """The request's integration: the client's, or with ``BY_HOST`` its host's; then
        the one its endpoint group names (see ``grouped``)."""
        return self.grouped(request, self.base_of(request))

    def base_of(self, request: Request) -> str:
        """The client's integration, or with ``BY_HOST`` the request's host's."""
        if self.integration == BY_HOST:
            return self.limiter.for_host(*host_of(request))
        return self.integration

    def grouped(self, request: Request, integration: str) -> str:
        """The integration of the endpoint group the request is one of, when that
        integration is configured here; else ``integration`` (a group whose integration
        this limiter lacks leaves its requests on the main one)."""
        endpoints = self.limiter.config(integration).endpoints
        if endpoints:
            method, path = method_and_path(request)
            target = route(endpoints, method, path)
            if target is not None and target in self.limiter.configs:
                return target
        return integration

    def tenant_of(self, request: Request, integration: str) -> str | None:
        if self.tenant == BY_TOKEN:
            return token_tenant(request.headers.get("Authorization"))
        if callable(self.tenant):
            tenant = self.tenant(request)
            if isinstance(tenant, int) and not isinstance(tenant, bool):
                return format(tenant, "d")  # (an id: 123 is "123", as for tasks)
            return tenant
        if self.tenant is None:
            return context.task_tenant(integration)
        return self.tenant

    def asked(self, request: Request) -> tuple[str, str | None, Cost, context.Prepaid | None]:
        """The request's integration, tenant and estimated cost, and the slot its task paid
        for it, if any."""
        base = self.base_of(request)
        integration = self.grouped(request, base)
        tenant = self.tenant_of(request, base)  # (a task's tenant: named by its integration)
        cost = self.estimate(request) if self.estimate else 1.0
        return integration, tenant, cost, context.take_prepaid(integration, tenant)
