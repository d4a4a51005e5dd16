"""Signing in and out of the dashboard, and ``GET /api/session`` (who am I, my CSRF token).

``GET /signin`` shows the form; ``POST /signin`` checks name and password against the
local accounts and starts a session (:func:`start_session`, which any other sign-in,
such as an OpenID Connect callback, calls the same way); ``POST /signout`` ends it.
Repeated failed sign-ins for one name or from one address are refused for a while
(429, :mod:`node.auth.throttle`) without a password check.
The form carries a double-submit CSRF token (cookie and field agree) and is refused
from other sites, so no page elsewhere can sign a browser in as someone else.
"""

from __future__ import annotations

import html
import secrets
from pathlib import Path
from string import Template
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from node.auth import csrf
from node.auth.actions import ActionRecord
from node.auth.principal import LOCAL
from node.auth.roles import Role
from node.auth.sessions import COOKIE, cookie_options
from node.web.routes.deps import (
    ContextDep,
    OptionalPrincipalDep,
    ViewerDep,
    WebContext,
    client_address,
    get_context,
    own_origin,
    signed_session,
)

router = APIRouter(tags=["session"])

_PAGE = Template((Path(__file__).resolve().parent.parent / "static" / "signin.html").read_text())
_NO_STORE = {"Cache-Control": "no-store"}
# The form's page only: under "no-referrer" a browser posts a form with "Origin: null",
# and the node then could not tell its own form from a sandboxed page elsewhere.
# "same-origin" still sends nothing to any other site.
_FORM_HEADERS = {**_NO_STORE, "Referrer-Policy": "same-origin"}


class SessionOut(BaseModel):
    """Who this request acts as; ``csrf_token`` (sessions only) goes in ``X-CSRF-Token``."""

    name: str
    role: Role
    provider: str
    via: str
    sees_identifiers: bool
    csrf_token: str | None


def safe_next(target: str | None) -> str:
    """A path on this node to go to after signing in; anything else becomes ``/``."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(ord(ch) < 32 or ch == "\\" for ch in target)
    ):
        return "/"
    return target


TOO_MANY = "too many failed sign-ins"  # the reason a throttled sign-in is recorded with


def _throttled(wait: int) -> str:
    minutes = max(1, -(-wait // 60))
    return f"Too many failed sign-ins; try again in {minutes} minute{'s' if minutes > 1 else ''}."


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(
    response: Response,
    request: Request,
    context: WebContext,
    *,
    name: str,
    role: Role,
    provider: str,
    subject: str,
) -> None:
    """Sign the browser in: set the session cookie on ``response`` for this identity."""
    value, _ = context.signer.issue(name, role, provider, subject)
    options = cookie_options(_is_https(request), context.signer.max_age)
    response.set_cookie(COOKIE, value, **options)
    response.delete_cookie(csrf.SIGNIN_COOKIE, path="/")


def _oidc_signin(request: Request, next_path: str) -> str:
    """The link to sign in through OpenID Connect (``node.web.routes.signin_oidc``), if it is on;
    a link, not a form: the CSP's form-action would stop a form's redirect to the provider."""
    provider = get_context(request).settings.oidc_display_name
    if provider is None:
        return ""
    href = html.escape("/signin/oidc?" + urlencode({"next": next_path}))
    return (
        f'<p class="signin-or">or</p><a id="signin-oidc" class="signin-oidc" href="{href}">'
        f"Sign in with {html.escape(provider)}</a>"
    )


def _page(
    request: Request, next_path: str, *, message: str = "", name: str = "", code: int = 200
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    body = _PAGE.substitute(
        csrf_token=html.escape(token),
        next=html.escape(next_path),
        name=html.escape(name),
        message=html.escape(message),
        message_hidden="" if message else " hidden",
        oidc_signin=_oidc_signin(request, next_path),
    )
    response = HTMLResponse(body, status_code=code, headers=_FORM_HEADERS)
    response.set_cookie(
        csrf.SIGNIN_COOKIE,
        token,
        max_age=3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )
    return response


def refusal_page(request: Request, next_path: str, message: str, code: int) -> HTMLResponse:
    """The sign-in page saying why a sign-in elsewhere (OpenID Connect) was refused."""
    return _page(request, next_path, message=message, code=code)


@router.get("/signin", include_in_schema=False)
def signin_page(
    request: Request, principal: OptionalPrincipalDep, next: str | None = None
) -> Response:
    if principal is not None and principal.via == "session":
        return RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    return _page(request, safe_next(next))


@router.post("/signin", include_in_schema=False)
def signin(
    request: Request,
    context: ContextDep,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    target = safe_next(next)
    refused = csrf.cross_site_reason(request.headers, own_origin(request))
    if refused is None and not csrf.tokens_match(
        request.cookies.get(csrf.SIGNIN_COOKIE, ""), csrf_token
    ):
        refused = "the sign-in form expired; please try again"
    peer = client_address(request)
    throttle = context.signin_throttle
    # A throttled name or address gets no password check at all: nothing to time.
    wait = None if refused else throttle.retry_after(name, peer)
    if wait is not None:
        refused = TOO_MANY
    account = None if refused else context.accounts.authenticate(name, password)
    context.record_action(
        ActionRecord(
            action="sign_in",
            actor=name,
            actor_role=account.role.value if account else "",
            succeeded=account is not None,
            reason=refused or ("" if account else "wrong name or password"),
            peer=peer,
            provider=LOCAL,
        )
    )
    if wait is not None:
        response = _page(request, target, message=_throttled(wait), name=name, code=429)
        response.headers["Retry-After"] = str(wait)
        return response
    if refused:
        return _page(request, target, message=refused, name=name, code=403)
    if account is None:
        throttle.failed(name, peer)
        return _page(request, target, message="Wrong name or password.", name=name, code=401)
    throttle.succeeded(name)
    response = RedirectResponse(target, status.HTTP_303_SEE_OTHER, headers=_NO_STORE)
    start_session(
        response,
        request,
        context,
        name=account.name,
        role=account.role,
        provider=LOCAL,
        subject=str(account.id),
    )
    return response


@router.post("/signout", include_in_schema=False)
async def signout(request: Request, context: ContextDep) -> Response:
    """End the session; CSRF token from the header or a form field (a plain form works)."""
    signed = signed_session(request, context)
    if signed is not None:
        given = request.headers.get(csrf.HEADER)
        if given is None:
            form = await request.form()
            field = form.get(csrf.FORM_FIELD)
            given = field if isinstance(field, str) else None
        refused = csrf.cross_site_reason(request.headers, own_origin(request))
        if refused or not csrf.tokens_match(signed.csrf, given):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=refused or "wrong CSRF token")
        context.record_action(
            ActionRecord(
                action="sign_out",
                actor=signed.name,
                actor_role=signed.role.value,
                succeeded=True,
                peer=client_address(request),
                provider=signed.provider,
            )
        )
    response = RedirectResponse("/signin", status.HTTP_303_SEE_OTHER, headers=_NO_STORE)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/api/session")
def read_session(request: Request, context: ContextDep, principal: ViewerDep) -> SessionOut:
    signed = signed_session(request, context) if principal.via == "session" else None
    return SessionOut(
        name=principal.name,
        role=principal.role,
        provider=principal.provider,
        via=principal.via,
        sees_identifiers=context.identifiers.may_see(principal.role),
        csrf_token=signed.csrf if signed is not None else None,
    )
