"""``GET /api/deliveries``: the outbox across jobs, oldest first; ``?state=dead`` is the
dead-letter queue an operator works through (each row names its job to retry)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from node.db.models import Delivery, DeliveryState, ResultObject
from node.web.routes.deps import SessionDep
from node.web.routes.schemas import OutboxRowOut

router = APIRouter(tags=["deliveries"])


@router.get("/deliveries")
def list_deliveries(
    session: SessionDep,
    state: Annotated[list[DeliveryState] | None, Query()] = None,
    destination: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OutboxRowOut]:
    """Outbox rows oldest first, filtered by ``state`` (repeatable) and ``destination``."""
    query = (
        select(Delivery)
        .options(selectinload(Delivery.result))
        .join(ResultObject)
        .order_by(Delivery.id)
        .limit(limit)
    )
    if state:
        query = query.where(Delivery.state.in_(state))
    if destination:
        query = query.where(Delivery.destination == destination)
    return [OutboxRowOut.model_validate(row) for row in session.scalars(query)]
