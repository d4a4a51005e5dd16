"""Browser hardening around every response: the Host allow-list and security headers.

Both are plain ASGI middleware, so they cover every route, the static files and the
error answers alike.

- :class:`HostAllowList`: a request whose ``Host`` is not one of the node's names
  (``AINODE_WEB_ALLOWED_HOSTS`` and the bind address) is answered 400 before any route
  runs: a DNS-rebinding page cannot read the API through the victim's browser. Only
  ``/healthz`` answers any Host: probes (a load balancer, an orchestrator) address the
  node by an address nobody lists, and it tells nothing but which parts are up.
- :class:`SecurityHeaders`: a Content Security Policy that allows the node's own
  scripts, styles and connections only, and no framing (``frame-ancestors 'none'``,
  ``X-Frame-Options: DENY``); ``X-Content-Type-Options: nosniff``; no referrer; API
  answers (patient data) are not stored by caches. A route may set its own policy.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.auth.hosts import host_of, normalize_host

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

OPEN_TO_ANY_HOST = frozenset({"/healthz"})

_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class HostAllowList:
    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(normalize_host(name) for name in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in OPEN_TO_ANY_HOST:
            host = host_of(Headers(scope=scope).get("host", ""))
            if host not in self.allowed:
                response = PlainTextResponse("host not allowed", status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if is_api:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
