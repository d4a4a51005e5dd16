"""``GET /api/node``: the node's identity and destinations, for the dashboard's header."""

from __future__ import annotations

from fastapi import APIRouter

from node.web.routes.deps import SettingsDep
from node.web.routes.schemas import NodeOut

router = APIRouter(tags=["node"])


@router.get("/node")
def read_node(settings: SettingsDep) -> NodeOut:
    return NodeOut.model_validate(settings)
