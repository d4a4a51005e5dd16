"""What the audit trail is told of the web side: sign-ins, sign-outs, operators' actions.

The web app tells its ``record_action`` callable (``node.web.create_app``) of each, as
an ``ActionRecord``, once the action is done (a retry's transaction has committed).
:func:`action_recorder` makes that callable for a trail: a sign-in (failed ones too)
and a sign-out become the trail's user authentication events, anything else an
operator action with who, from where, on what and why; a refused action is a minor
failure with the reason. The log line of ``node.auth.actions.log_action`` is kept.
"""

from __future__ import annotations

from node.audit.events import EventOutcome
from node.audit.trail import AuditTrail
from node.auth.actions import ActionRecord, RecordAction, log_action

SIGN_IN = "sign_in"
SIGN_OUT = "sign_out"


def _method(provider: str) -> str:
    """How the user proved who they are, as the sign-in row says it."""
    if provider.startswith("oidc"):
        return "OpenID Connect"
    return "password"


def action_recorder(trail: AuditTrail) -> RecordAction:
    """The ``record_action`` callable that logs each action and records it in ``trail``."""

    def record(action: ActionRecord) -> None:
        log_action(action)
        if action.action == SIGN_IN:
            trail.sign_in(
                action.actor,
                action.peer,
                succeeded=action.succeeded,
                reason=action.reason,
                role=action.actor_role,
                method=_method(action.provider),
            )
        elif action.action == SIGN_OUT:
            trail.sign_out(action.actor, action.peer, role=action.actor_role)
        else:
            trail.operator_action(
                action.actor,
                action.action,
                action.target,
                action.reason,
                role=action.actor_role,
                client_host=action.peer,
                outcome=EventOutcome.SUCCESS if action.succeeded else EventOutcome.MINOR_FAILURE,
            )

    return record
