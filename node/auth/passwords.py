"""Password hashing: argon2id (argon2-cffi's defaults, RFC 9106's second recommendation).

Only hashes are kept. Checking a name that has no account still costs one verification
(against a hash made once per process), so the answer's timing does not tell which
names exist.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
"""Shortest password an account may have (NIST SP 800-63B asks for at least 8)."""


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def check_strength(password: str) -> None:
    """ValueError with the rule when ``password`` may not be set."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    if password.strip() != password:
        raise ValueError("a password may not begin or end with white space")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted; its parameters are in the string)."""
    return _hasher().hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash; a malformed hash never matches."""
    try:
        return _hasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with weaker parameters than today's."""
    return _hasher().check_needs_rehash(stored)


@cache
def _decoy() -> str:
    return hash_password("a password no account has")


def spend_a_verification(password: str) -> None:
    """Do the work of one verification for a name that has no account."""
    verify_password(_decoy(), password)
