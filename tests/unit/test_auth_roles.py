"""Roles nest (viewer < operator < admin); who sees patient identifiers is a policy."""

from __future__ import annotations

import pytest

from node.auth.principal import Principal
from node.auth.roles import IdentifierPolicy, Role, parse_role
from node.settings import Settings


def test_roles_nest() -> None:
    assert [r for r in Role if Role.OPERATOR.includes(r)] == [Role.VIEWER, Role.OPERATOR]
    assert all(Role.ADMIN.includes(r) for r in Role)
    assert not Role.VIEWER.includes(Role.OPERATOR)
    viewer = Principal("v", Role.VIEWER, via="token")
    assert viewer.may(Role.VIEWER) and not viewer.may(Role.OPERATOR)


def test_parse_role_names_the_roles_there_are() -> None:
    assert parse_role(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError, match="one of viewer, operator, admin"):
        parse_role("root")


def test_identifier_policy_from_the_settings() -> None:
    default = IdentifierPolicy.from_names(Settings().phi_roles)
    assert [default.may_see(r) for r in Role] == [False, True, True]
    only_admin = IdentifierPolicy.from_names(Settings(phi_roles="admin").phi_roles)
    assert [only_admin.may_see(r) for r in Role] == [False, False, True]
    assert not IdentifierPolicy.from_names([]).may_see(Role.ADMIN)
    with pytest.raises(ValueError, match="unknown role"):
        Settings(phi_roles="viewer,nurse")
