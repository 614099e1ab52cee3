"""Thin adapters that put Celery, Dramatiq and RQ tasks behind ``queue_ratelimit.tasks``."""
