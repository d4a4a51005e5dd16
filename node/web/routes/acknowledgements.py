"""``POST /api/critical-findings/{id}/acknowledge``: an operator acknowledges a critical finding.

The acknowledgement itself is ``node.acknowledgement``' (the one writer of its columns); this
module maps its refusals to HTTP (404 unknown, 409 acknowledged before) and tells
``record_action`` (the audit trail) who acknowledged which finding, with the note, or
why it was refused.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from node.acknowledgement import AlreadyAcknowledged, acknowledge
from node.auth.actions import ActionRecord
from node.db.findings import CriticalFinding
from node.web.routes.deps import ContextDep, OperatorDep, SessionDep, client_address
from node.web.routes.reading_worklist_schemas import AcknowledgeIn, CriticalFindingOut
from node.web.routes.schemas import ErrorOut

router = APIRouter(tags=["worklist"])

ACTION = "critical_finding_acknowledge"


@router.post(
    "/critical-findings/{finding_id}/acknowledge",
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def acknowledge_finding(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    principal: OperatorDep,
    finding_id: int,
    body: AcknowledgeIn | None = None,
) -> CriticalFindingOut:
    """Acknowledge a critical finding (operator), with an optional note; 409 when it was
    acknowledged before (by whom and when), which changes nothing."""
    note = body.note.strip() if body else ""
    refusal: HTTPException | None = None
    try:
        acknowledge(context.sessions, finding_id, principal.name, principal.role, note)
    except AlreadyAcknowledged as exc:
        refusal = HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    except LookupError as exc:
        refusal = HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    why = f"refused: {refusal.detail}" if refusal else ""
    context.record_action(
        ActionRecord(
            action=ACTION,
            actor=principal.name,
            actor_role=principal.role.value,
            succeeded=refusal is None,
            target=request.url.path,  # e.g. /api/critical-findings/3/acknowledge
            reason="; ".join(part for part in (note, why) if part),
            peer=client_address(request),
            provider=principal.provider,
        )
    )
    if refusal is not None:
        raise refusal
    # Read after the acknowledgement committed: this session has not begun a transaction.
    return CriticalFindingOut.model_validate(session.get_one(CriticalFinding, finding_id))
