"""``GET /``: the operator dashboard, one static page (its script and style under /static).

Without a principal the browser is sent to the sign-in page, which comes back here.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, status
from fastapi.responses import FileResponse, RedirectResponse, Response

from node.web.routes.deps import OptionalPrincipalDep

router = APIRouter(include_in_schema=False)

_INDEX = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/")
def read_dashboard(principal: OptionalPrincipalDep) -> Response:
    if principal is None:
        return RedirectResponse("/signin?next=/", status.HTTP_303_SEE_OTHER)
    return FileResponse(_INDEX, media_type="text/html", headers={"Cache-Control": "no-cache"})
