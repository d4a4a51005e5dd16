"""Secrets in the settings (node.credentials): values from files, passwords into URLs, and
the config file a worker child is given instead of an environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from node.settings import Settings


def secret_file(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n")  # as `openssl rand -hex 32 > file` writes it
    return path


def test_passwords_come_from_files_into_their_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AINODE_DATABASE_URL", "postgresql+psycopg2://ainode@db:5432/ainode")
    monkeypatch.setenv(
        "AINODE_DATABASE_PASSWORD_FILE", str(secret_file(tmp_path, "pg", "p@ss/w:rd"))
    )
    monkeypatch.setenv("AINODE_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("AINODE_BROKER_PASSWORD_FILE", str(secret_file(tmp_path, "rd", "r p@ss")))

    settings = Settings.load()

    assert make_url(settings.database_url or "").password == "p@ss/w:rd"
    assert settings.broker_url == "redis://:r%20p%40ss@redis:6379/0"
    assert "p@ss" not in repr(settings.database_password)  # a SecretStr shows none


def test_any_setting_may_come_from_a_file_but_not_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destinations = '[{"name": "viewer", "stow_url": "https://v/dicom-web", "http_headers": {"Authorization": "Bearer t"}}]'  # noqa: E501
    monkeypatch.setenv("AINODE_DESTINATIONS_FILE", str(secret_file(tmp_path, "d", destinations)))
    assert Settings.load().destinations[0].http_headers == {"Authorization": "Bearer t"}

    monkeypatch.setenv("AINODE_DESTINATIONS", "[]")
    with pytest.raises(
        ValueError, match="set one of AINODE_DESTINATIONS and AINODE_DESTINATIONS_FILE"
    ):
        Settings.load()


def test_a_url_naming_its_own_password_keeps_it_and_a_lone_password_is_refused() -> None:
    settings = Settings(
        database_url="postgresql+psycopg2://u:own@db/n",
        database_password="other",
        broker_url="redis://:own@r:6379/0",
        broker_password="other",
    )
    assert make_url(settings.database_url or "").password == "own"
    assert settings.broker_url == "redis://:own@r:6379/0"
    with pytest.raises(ValidationError, match="broker_password needs broker_url"):
        Settings(broker_password="lonely")


def test_the_config_a_child_is_given_rebuilds_the_settings_with_their_secrets(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url="postgresql+psycopg2://u@db/n",
        database_password="pw",
        destinations=[{"name": "v", "stow_url": "https://v", "http_headers": {"A": "t"}}],
        retention_days=7,
    )
    config = tmp_path / "child.json"
    config.write_text(json.dumps(settings.as_config()))

    rebuilt = Settings.load(config)

    assert rebuilt == settings
    assert rebuilt.database_password is not None
    assert rebuilt.database_password.get_secret_value() == "pw"
