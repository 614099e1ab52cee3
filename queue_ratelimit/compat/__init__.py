"""Drop-in layers for the libraries this project's users come from.

:mod:`queue_ratelimit.compat.api_ratelimiter` speaks the ``api_ratelimiter`` library's names
(``DynamicRateLimiter``, ``DynamicAPIClient``, ``make_client_from_config``,
``EnterpriseClient``, ...) on this project's limiter: migrating is changing one import.
"""
