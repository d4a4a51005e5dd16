"""Password hashing (argon2id): verify, refuse, rehash, strength rules."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from node.auth.passwords import (
    MIN_LENGTH,
    check_strength,
    hash_password,
    needs_rehash,
    verify_password,
)


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "correct horse battery stapl")
    assert not verify_password(stored, "")
    # Salted: the same password hashes differently each time.
    assert hash_password("correct horse battery staple") != stored


def test_a_malformed_hash_never_matches() -> None:
    for stored in ("", "plain text", "$argon2id$v=19$m=1,t=1,p=1$broken"):
        assert not verify_password(stored, "anything at all")


def test_weaker_parameters_ask_for_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse battery")
    assert verify_password(weak, "correct horse battery")
    assert needs_rehash(weak)
    assert not needs_rehash(hash_password("correct horse battery"))


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("x" * (MIN_LENGTH - 1), "at least"),
        (" leading space!!", "white space"),
        ("trailing space!! ", "white space"),
    ],
)
def test_weak_passwords_are_refused_with_the_rule(password: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        check_strength(password)


def test_a_long_enough_password_passes() -> None:
    check_strength("x" * MIN_LENGTH)
