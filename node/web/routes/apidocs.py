"""The API's own description, for admins only: ``/openapi.json``, ``/docs``, ``/redoc``.

Swagger UI and ReDoc are served from the node itself (the files the ``fastapi-offline``
package ships), never from a CDN: a hospital network may not reach one, and the Content
Security Policy allows the node's own scripts only. Swagger UI's "Try it out" requests
carry the session's CSRF token (``/static/apidocs.js``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from node.auth.principal import Principal
from node.auth.roles import Role
from node.web.routes.deps import AdminDep, OptionalPrincipalDep

router = APIRouter(include_in_schema=False)

_ASSET_DIR = Path(str(files("fastapi_offline") / "static"))
_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "redoc.standalone.js": "text/javascript",
}

# Both set inline styles on their elements, and ReDoc searches in a worker it makes
# from a blob; scripts stay the node's own.
_DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_SWAGGER = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ainode API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <script src="/docs/assets/swagger-ui-bundle.js" defer></script>
  <script src="/static/apidocs.js" defer></script>
</head>
<body><div id="swagger-ui"></div></body>
</html>
"""

_REDOC = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ainode API</title>
  <script src="/docs/assets/redoc.standalone.js" defer></script>
</head>
<body><redoc spec-url="/openapi.json"></redoc></body>
</html>
"""


def _admin_page(principal: Principal | None, path: str, page: str) -> Response:
    if principal is None:
        return RedirectResponse(f"/signin?next={path}", status.HTTP_303_SEE_OTHER)
    if not principal.may(Role.ADMIN):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"your role ({principal.role.value}) may not do this; it needs admin",
        )
    return HTMLResponse(page, headers={"Content-Security-Policy": _DOCS_POLICY})


@router.get("/openapi.json")
def read_openapi(request: Request, _admin: AdminDep) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def read_docs(principal: OptionalPrincipalDep) -> Response:
    return _admin_page(principal, "/docs", _SWAGGER)


@router.get("/redoc")
def read_redoc(principal: OptionalPrincipalDep) -> Response:
    return _admin_page(principal, "/redoc", _REDOC)


@router.get("/docs/assets/{asset}")
def read_docs_asset(asset: str, _admin: AdminDep) -> FileResponse:
    media_type = _ASSETS.get(asset)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file")
    return FileResponse(_ASSET_DIR / asset, media_type=media_type)
