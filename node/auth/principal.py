"""Who a request acts as: an account signed in through a session, or an API token.

A sign-in of any kind (the local form, or an OpenID Connect callback) ends in the same
:class:`Principal`; ``provider`` says where the identity comes from, ``via`` how this
request proved it (CSRF checks apply to sessions only: a browser cannot forge a bearer
token on another site's behalf).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from node.auth.roles import Role

LOCAL = "local"
"""The provider of accounts kept in the node's own database."""


@dataclass(frozen=True)
class Principal:
    name: str  # account name, "token:<name>" or the identity an OIDC provider vouched for
    role: Role
    via: Literal["session", "token"]
    provider: str = LOCAL  # "local", "token" or e.g. "oidc:https://idp.example"

    def may(self, required: Role) -> bool:
        return self.role.includes(required)
