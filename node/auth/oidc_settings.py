"""The settings of sign-in through the hospital's OpenID Connect provider (``AINODE_OIDC_*``).

They are fields of the node's one ``node.settings.Settings`` (which takes them from
this class, as a base), so they are read, merged and checked with every other setting
at start-up; a wrong one stops the node there, not at someone's sign-in. With
``oidc_issuer`` unset, OpenID Connect is off (``node.auth.oidc`` owns the protocol).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from node.auth.roles import Role, parse_role


def parse_role_map(text: str) -> dict[str, Role]:
    """``"radiology-admins=admin,radiology=viewer"`` -> claim value to role; a JSON object
    for values with commas (directory DNs): ``{"CN=Radiology,OU=Groups": "admin"}``."""
    if text.strip().startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("oidc_role_map must be a JSON object of claim value to role")
        return {str(value): parse_role(str(role)) for value, role in loaded.items()}
    mapping: dict[str, Role] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        value, equals, role = entry.rpartition("=")
        if not equals or not value.strip():
            raise ValueError(f"oidc_role_map entry {entry!r} is not VALUE=ROLE")
        mapping[value.strip()] = parse_role(role)
    return mapping


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OidcSettings(BaseModel):
    """Who the identity provider is, how the node is registered there, and which values of
    which claim make which role."""

    oidc_issuer: str | None = Field(
        default=None,
        description="the provider's issuer URL (its /.well-known/openid-configuration); "
        "unset: OpenID Connect off",
    )
    oidc_client_id: str | None = Field(default=None, description="the node's client ID there")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="its client secret; unset: a public client (PKCE only)"
    )
    oidc_redirect_url: str | None = Field(
        default=None,
        description="the callback URL registered at the provider; unset: the URL the browser "
        "uses for the node, + /signin/oidc/callback",
    )
    oidc_ca: Path | None = Field(
        default=None, description="PEM CA(s) the provider's TLS certificate is checked against"
    )
    oidc_scopes: str = Field(
        default="openid profile email", description="scopes asked for, space-separated"
    )
    oidc_role_claim: str = Field(
        default="groups",
        description="the claim whose values give the role; dots reach into objects "
        "(realm_access.roles)",
    )
    oidc_role_map: Annotated[dict[str, Role], NoDecode] = Field(
        default_factory=dict,
        description="claim value = role, comma-separated (or a JSON object); the highest "
        "role matched wins, no match is refused",
    )
    oidc_provider_name: str | None = Field(
        default=None, description="shown as 'Sign in with NAME'; unset: the issuer's host"
    )

    @field_validator("oidc_role_map", mode="before")
    @classmethod
    def _parse_role_map(cls, value: Any) -> Any:
        if isinstance(value, dict):  # from a config file, or as_config
            return {str(claim): parse_role(str(role)) for claim, role in value.items()}
        return parse_role_map(value) if isinstance(value, str) else value

    @field_validator("oidc_issuer", "oidc_redirect_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            # Codes and tokens would cross the network in clear.
            raise ValueError(f"{value!r} must be https (http only on the loopback address)")
        return value

    @field_validator("oidc_scopes")
    @classmethod
    def _check_scopes(cls, value: str) -> str:
        if "openid" not in value.split():
            raise ValueError("oidc_scopes must include openid")
        return " ".join(value.split())

    @model_validator(mode="after")
    def _check_oidc(self) -> OidcSettings:
        if self.oidc_issuer is None:
            return self
        if not self.oidc_client_id:
            raise ValueError("oidc_issuer needs oidc_client_id")
        if not self.oidc_role_map:
            raise ValueError("oidc_issuer needs oidc_role_map: without it nobody gets a role")
        return self

    @property
    def oidc_display_name(self) -> str | None:
        """The provider's name on the sign-in page; None when OpenID Connect is off."""
        if self.oidc_issuer is None:
            return None
        return self.oidc_provider_name or urlsplit(self.oidc_issuer).hostname or self.oidc_issuer
