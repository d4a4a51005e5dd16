"""Sign-in through the hospital's OpenID Connect provider: ``GET /signin/oidc`` and
``GET /signin/oidc/callback`` (the protocol itself is ``node.auth.oidc``).

Present only when ``AINODE_OIDC_ISSUER`` is set (``create_app`` includes
:func:`router_for`). The first route sends the browser to the provider with a new
transaction in a signed cookie (``SameSite=Lax``: the provider's redirect back is a
cross-site navigation, which a Strict cookie would not follow; its path is these routes
alone). The callback checks the provider's answer against it and, for an identity with
a role, starts the same session a local sign-in does (``signin.start_session``).
Every callback, accepted or refused, is told to ``record_action`` with the provider
``oidc:<issuer>``; a refusal shows the sign-in page with the reason.
"""

from __future__ import annotations

import hashlib
import html
import logging
from dataclasses import asdict
from string import Template

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from node.auth.actions import ActionRecord
from node.auth.oidc import TRANSACTION_SECONDS, RelyingParty, SignInRefused, Transaction
from node.auth.sessions import session_key
from node.settings import Settings
from node.web.routes.deps import ContextDep, client_address, own_origin
from node.web.routes.signin import refusal_page, safe_next, start_session

log = logging.getLogger(__name__)

CALLBACK_PATH = "/signin/oidc/callback"
_COOKIE_PATH = "/signin/oidc"
_NO_STORE = {"Cache-Control": "no-store"}
# The session cookie is SameSite=Strict, and a browser keeps it back for the rest of a
# navigation that began at another site (the provider's redirect here): this page is
# same-site, so the dashboard it goes on to is requested with the cookie.
_CONTINUE = Template("""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta http-equiv="refresh" content="0;url=$next">
  <title>Signed in · ainode</title>
  <link rel="stylesheet" href="/static/style.css">
</head>
<body class="signin-page">
  <main class="signin-card"><p>Signed in as $name. <a href="$next">Continue</a></p></main>
</body>
</html>
""")


class TransactionCookie:
    """Signs a :class:`Transaction` into a cookie value and reads it back (expires with
    ``TRANSACTION_SECONDS``); the key is the session key, the salt is this cookie's own."""

    name = "ainode_oidc"

    def __init__(self, key: bytes) -> None:
        self._serializer = URLSafeTimedSerializer(
            key, salt="ainode.oidc-transaction", signer_kwargs={"digest_method": hashlib.sha256}
        )

    def dumps(self, transaction: Transaction) -> str:
        return self._serializer.dumps(asdict(transaction))

    def loads(self, value: str) -> Transaction | None:
        try:
            return Transaction(**self._serializer.loads(value, max_age=TRANSACTION_SECONDS))
        except (BadSignature, TypeError):  # SignatureExpired is one
            return None


def router_for(settings: Settings) -> APIRouter:
    """The two routes, bound to one :class:`RelyingParty` for ``settings``' provider."""
    party = RelyingParty(settings)
    cookie = TransactionCookie(session_key(settings.web_session_secret, settings.data_dir))
    router = APIRouter(include_in_schema=False)

    @router.get("/signin/oidc")
    def begin_oidc_sign_in(request: Request, next: str | None = None) -> Response:
        redirect_uri = settings.oidc_redirect_url or own_origin(request) + CALLBACK_PATH
        target = safe_next(next)
        try:
            url, transaction = party.begin(redirect_uri, target)
        except SignInRefused as refused:
            log.warning("OpenID Connect sign-in cannot start: %s", refused)
            return refusal_page(request, target, str(refused), refused.status)
        response = RedirectResponse(url, status.HTTP_303_SEE_OTHER, headers=_NO_STORE)
        response.set_cookie(
            cookie.name,
            cookie.dumps(transaction),
            max_age=TRANSACTION_SECONDS,
            path=_COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    @router.get(CALLBACK_PATH)
    def finish_oidc_sign_in(request: Request, context: ContextDep) -> Response:
        value = request.cookies.get(cookie.name)
        transaction = cookie.loads(value) if value else None
        target = transaction.next_path if transaction else "/"
        try:
            if transaction is None:
                raise SignInRefused("no sign-in was in progress here (or it took too long)")
            identity = party.finish(transaction, dict(request.query_params))
        except SignInRefused as refused:
            context.record_action(
                ActionRecord(
                    action="sign_in",
                    actor=refused.who,
                    actor_role="",
                    succeeded=False,
                    reason=str(refused),
                    peer=client_address(request),
                    provider=party.provider_label,
                )
            )
            response: Response = refusal_page(request, target, str(refused), refused.status)
        else:
            context.record_action(
                ActionRecord(
                    action="sign_in",
                    actor=identity.name,
                    actor_role=identity.role.value,
                    succeeded=True,
                    peer=client_address(request),
                    provider=party.provider_label,
                )
            )
            page = _CONTINUE.substitute(next=html.escape(target), name=html.escape(identity.name))
            response = HTMLResponse(page, headers=_NO_STORE)
            start_session(
                response,
                request,
                context,
                name=identity.name,
                role=identity.role,
                provider=party.provider_label,
                subject=identity.subject,
            )
        response.delete_cookie(cookie.name, path=_COOKIE_PATH)
        return response

    return router
