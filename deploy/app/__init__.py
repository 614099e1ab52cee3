"""The compose stack's apps: one Celery app, Dramatiq actors and RQ jobs calling the same
rate-limited upstream through ``RateLimitedAdapter``, and a producer that keeps them busy.

Every setting comes from the environment (``deploy.app.settings``); see docs/compose.md.
"""
