"""The node's web side: the JSON API, the Prometheus metrics and the operator dashboard.

Everything is built by :func:`node.web.app.create_app` from objects the entry point
passes in; nothing here reads settings or opens a database at import time.
"""

from node.web.app import HealthCheck, ReanalyseJob, RetryJob, create_app

__all__ = ["HealthCheck", "ReanalyseJob", "RetryJob", "create_app"]
