"""What an OpenID provider's tokens say, checked, and the role that makes on this node.

:func:`verify_id_token` checks an ID token's signature against the provider's JWKS
(joserfc) and its claims (authlib's ``CodeIDToken``: ``iss``, ``aud``, ``exp``, ``iat``,
``nonce``, ``azp``, ``at_hash``); :func:`claim_values` and :func:`role_for` turn the
role claim (``AINODE_OIDC_ROLE_CLAIM``) into a role through ``AINODE_OIDC_ROLE_MAP``.
No network here: ``node.auth.oidc`` fetches the tokens and keys.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from node.auth.roles import Role

CLOCK_LEEWAY_SECONDS = 60  # the provider's clock and ours may differ this much
# Asymmetric signatures only: never "none", nor an HMAC keyed with a shared secret.
SIGNING_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                "ES256", "ES384", "ES512", "EdDSA", "Ed25519"})  # fmt: skip


def claim_values(claims: Mapping[str, Any], path: str) -> list[str]:
    """The values of claim ``path`` as strings: a list's items, or the one value;
    ``a.b`` reaches into an object (Keycloak's ``realm_access.roles``)."""
    value: Any = claims.get(path)
    if value is None and "." in path:
        value = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(item) for item in items if isinstance(item, str | int)]


def role_for(values: Collection[str], role_map: Mapping[str, Role]) -> Role | None:
    """The highest role that any of ``values`` maps to; None when none does."""
    roles = [role_map[value] for value in values if value in role_map]
    return max(roles, key=lambda role: role.rank) if roles else None


def verify_id_token(
    id_token: str,
    *,
    keys: Mapping[str, Any],
    issuer: str,
    client_id: str,
    nonce: str,
    access_token: str | None,
    algorithms: Collection[str],
    now: int | None = None,
) -> dict[str, Any]:
    """The ID token's claims once its signature (by one of the JWKS ``keys``, with one of
    ``algorithms``) and its claims are checked; ``InvalidKeyIdError`` when it names a key
    not among ``keys``, another ``JoseError`` when anything else is wrong."""
    registry = JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
    token = jwt.decode(id_token, KeySet.import_key_set(dict(keys)), registry=registry)
    claims = CodeIDToken(
        token.claims,
        token.header,
        {"iss": {"essential": True, "value": issuer}, "aud": {"essential": True}},
        {"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    if client_id not in (claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]):
        raise JoseError(f"the ID token is for {claims['aud']!r}, not this node")
    if not nonce:
        raise JoseError("no nonce to check the ID token against")
    claims.validate(now=now, leeway=CLOCK_LEEWAY_SECONDS)
    return dict(claims)
