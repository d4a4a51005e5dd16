"""Cross-site request forgery: what a state-changing request must show.

A request authenticated by the session cookie that changes state (POST, PUT, PATCH,
DELETE) must

1. come from the node's own pages: ``Sec-Fetch-Site``, when the browser sends it, is
   ``same-origin`` (or ``none``: typed by the user); ``Origin``, when sent, is the
   node's own origin;
2. carry the session's CSRF token (a synchronizer token held in the signed session)
   in the ``X-CSRF-Token`` header, or the ``csrf_token`` field of a form.

Another site's page cannot read the token, so a form it posts (even where the browser
sends the cookie along, as it does for a page of the same site on another port) is
refused. Requests with a bearer token are exempt: a browser never adds one by itself.
The sign-in form, which has no session yet, uses a double-submit token instead (a
cookie and a form field that must agree).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

HEADER = "x-csrf-token"
FORM_FIELD = "csrf_token"
SIGNIN_COOKIE = "ainode_signin_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_OWN_SITE = frozenset({"same-origin", "none"})


def tokens_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def cross_site_reason(headers: Mapping[str, str], own_origin: str) -> str | None:
    """Why this request does not come from the node's own pages; None if it does.

    ``headers`` are looked up by lower-case name; ``own_origin`` is
    ``scheme://host[:port]`` as the request addressed the node.
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in _OWN_SITE:
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is not None and origin.rstrip("/").lower() != own_origin.lower():
        return f"cross-origin request refused (Origin: {origin})"
    return None
