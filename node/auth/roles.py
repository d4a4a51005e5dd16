"""The roles a principal holds, in order, and which of them see patient identifiers.

Roles nest: an operator may do what a viewer may, an admin what an operator may.

- viewer: reads studies, jobs, deliveries (patient identifiers masked unless
  ``AINODE_PHI_ROLES`` names the role);
- operator: also retries, cancels, acknowledges;
- admin: also users, tokens, destinations, models, re-analysis, the API docs, metrics.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def includes(self, required: Role) -> bool:
        """Whether this role may do what ``required`` may."""
        return self.rank >= required.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def parse_role(text: str) -> Role:
    """``"operator"`` -> ``Role.OPERATOR``; ValueError naming the roles there are."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        known = ", ".join(role.value for role in Role)
        raise ValueError(f"unknown role {text!r}: one of {known}") from None


@dataclass(frozen=True)
class IdentifierPolicy:
    """Which roles see patient name, ID, birth date and accession number unmasked."""

    roles: frozenset[Role]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> IdentifierPolicy:
        return cls(frozenset(parse_role(name) for name in names))

    def may_see(self, role: Role) -> bool:
        return role in self.roles
