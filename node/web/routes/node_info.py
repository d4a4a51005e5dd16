"""``GET /api/node``: the node's identity and destinations, for the dashboard's header."""

from __future__ import annotations

from fastapi import APIRouter

from node.web.routes.deps import SettingsDep
from node.web.routes.schemas import DestinationOut, NodeOut

router = APIRouter(tags=["node"])


@router.get("/node")
def read_node(settings: SettingsDep) -> NodeOut:
    return NodeOut(
        ae_title=settings.ae_title,
        dicom_port=settings.dicom_port,
        archive=settings.archive,
        destinations=[
            DestinationOut(
                name=d.name,
                address=d.dicom or d.stow_url or "",
                transport="dicom" if d.dicom else "stow",
                kinds=list(d.kinds),
                models=list(d.models),
                storage_commitment=d.storage_commitment,
            )
            for d in settings.all_destinations
        ],
    )
