"""The node's one settings object: environment, file and arguments, and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from node.delivery.destinations import DicomAddress
from node.settings import Settings


def test_settings_from_environment_file_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("ae_title: FROMFILE\nstable_seconds: 12\nhttp_port: 9000\n")
    monkeypatch.setenv("AINODE_HTTP_PORT", "9100")
    monkeypatch.setenv("AINODE_ALLOWED_CALLING_AETS", "CT1, PACS")
    settings = Settings.load(config, stable_seconds=3)
    assert settings.ae_title == "FROMFILE"  # file
    assert settings.http_port == 9100  # environment beats the file
    assert settings.stable_seconds == 3  # arguments beat both
    assert settings.allowed_calling_aets == ["CT1", "PACS"]
    # What a child process needs to rebuild the same settings (node.supervisor).
    config = settings.as_config()
    assert config["ae_title"] == "FROMFILE" and config["http_port"] == 9100


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValidationError, match="AE title"):
        Settings(ae_title="WAY_TOO_LONG_AE_TITLE")
    with pytest.raises(ValidationError, match="AET@host:port"):
        Settings(archive="orthanc:4242")
    assert Settings(archive="ORTHANC@pacs.local:4242").archive_destination == DicomAddress(
        ae_title="ORTHANC", host="pacs.local", port=4242
    )
