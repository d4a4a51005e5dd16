"""What the web side records of sign-ins and operator actions, and its default recorder.

Every sign-in (and failed one), sign-out, retry and re-analysis is handed, as an
:class:`ActionRecord`, to the ``record_action`` callable the node passes to
``node.web.create_app``. Without one, :func:`log_action` writes it to the log; the
node's audit trail is wired in by passing its recorder instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("node.auth.actions")


@dataclass(frozen=True)
class ActionRecord:
    action: str  # "sign_in", "sign_out", "job_retry", "job_reanalyse"
    actor: str  # who (for a failed sign-in: the name that was tried)
    actor_role: str  # "" when nobody signed in
    succeeded: bool
    target: str = ""  # what it acted on: the request's path, e.g. "/api/jobs/12/retry"
    reason: str = ""  # why (the operator's words), or why it was refused
    peer: str = ""  # the client's address as the web server saw it
    provider: str = ""  # "local", "token", "oidc:..."


RecordAction = Callable[[ActionRecord], None]


def log_action(record: ActionRecord) -> None:
    """The default recorder: one log line per action (failures at WARNING)."""
    level = logging.INFO if record.succeeded else logging.WARNING
    log.log(
        level,
        "%s %s by %s (%s) from %s%s%s",
        record.action,
        "succeeded" if record.succeeded else "refused",
        record.actor or "-",
        record.actor_role or "no role",
        record.peer or "-",
        f" on {record.target}" if record.target else "",
        f": {record.reason}" if record.reason else "",
    )
