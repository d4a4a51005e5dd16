"""``GET /``: the operator dashboard, one static page (its script and style under /static)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

_INDEX = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/")
def read_dashboard() -> FileResponse:
    return FileResponse(_INDEX, media_type="text/html", headers={"Cache-Control": "no-cache"})
