"""``GET /healthz``: 200 when every part of the node answers, 503 otherwise, same JSON."""

from __future__ import annotations

import logging

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from node.web.routes.deps import HealthDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=dict[str, bool],
    responses={503: {"description": "at least one part is down; the body says which"}},
)
def read_health(health: HealthDep) -> JSONResponse:
    try:
        parts = {name: bool(ok) for name, ok in health().items()}
    except Exception:  # noqa: BLE001 - a broken probe must read as "unhealthy", not a 500
        log.exception("health check raised")
        parts = {"health_check": False}
    code = status.HTTP_200_OK if all(parts.values()) else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(parts, status_code=code)
