"""Credentials in the settings: values read from files, and passwords put into URLs.

A deployment keeps its passwords in files (Docker secrets, mode 0400) rather than in
the environment, where every child process and ``/proc/<pid>/environ`` would show
them: ``AINODE_<NAME>_FILE=path`` gives setting ``<name>`` the file's content. The
database and broker passwords may be kept apart from their URLs (one secret shared
with the PostgreSQL or Redis server) and are put into them here, so every role
connects with the URL alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr
from sqlalchemy.engine import make_url

_PREFIX = "AINODE_"
_SUFFIX = "_FILE"


def values_from_files(environ: Mapping[str, str], names: Collection[str]) -> dict[str, str]:
    """Setting values from ``AINODE_<NAME>_FILE`` variables, for the setting ``names``
    known; a setting given both ways is refused, as the PostgreSQL image does."""
    values: dict[str, str] = {}
    for key, path in environ.items():
        if not (key.startswith(_PREFIX) and key.endswith(_SUFFIX)):
            continue
        name = key[len(_PREFIX) : -len(_SUFFIX)].lower()
        if name not in names:
            continue
        if f"{_PREFIX}{name.upper()}" in environ:
            raise ValueError(f"set one of {_PREFIX}{name.upper()} and {key}, not both")
        values[name] = Path(path).read_text().strip()
    return values


def with_password(url: str | None, password: SecretStr | None, role: str) -> str | None:
    """``url`` (the ``database`` or ``broker`` one, as ``role`` says) with ``password``
    put in, unless it names one already; a password without a URL is refused."""
    if password is None:
        return url
    if not url:
        raise ValueError(f"{role}_password needs {role}_url (not the embedded default)")
    secret = password.get_secret_value()
    if role == "database":
        return with_database_password(url, secret)
    return with_broker_password(url, secret)


def with_database_password(url: str, password: str) -> str:
    """A SQLAlchemy URL with ``password``, unless it names one already."""
    parsed = make_url(url)
    if parsed.password is not None:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


def with_broker_password(url: str, password: str) -> str:
    """A Redis URL with ``password`` (``redis://:password@host:port/db``), unless it names
    one already; quoted, as redis-py unquotes it."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
