"""Destinations (``node.delivery.destinations``): kinds told apart by type, and their rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.delivery.destinations import DicomAddress, DicomDestination, StowDestination
from node.settings import Settings


def test_destinations_from_the_environment_and_their_rules(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "AINODE_DESTINATIONS",
        '[{"name": "viewer", "stow_url": "http://viewer/dicom-web", "kinds": ["SR", "SC"]},'
        ' {"name": "lung", "dicom": "REG@reg:104", "models": ["ct-lung-nodule-seg"],'
        ' "storage_commitment": true}]',
    )
    settings = Settings.load(archive="PACS@pacs:104")
    names = [d.name for d in settings.all_destinations]
    assert names == ["archive", "viewer", "lung"]
    viewer, lung = settings.destination("viewer"), settings.destination("lung")
    assert viewer is not None and lung is not None
    assert viewer.takes("SC", "any-model") and not viewer.takes("SEG", "any-model")
    assert lung.takes("SEG", "ct-lung-nodule-seg") and not lung.takes("SEG", "other")
    assert isinstance(viewer, StowDestination) and isinstance(lung, DicomDestination)
    assert lung.ae == DicomAddress(ae_title="REG", host="reg", port=104)
    # A worker rebuilds the same destinations from the settings file it is given.
    monkeypatch.delenv("AINODE_DESTINATIONS")
    config = tmp_path / "worker-settings.json"
    config.write_text(json.dumps(settings.as_config()))
    assert Settings.load(config).all_destinations == settings.all_destinations


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ({"name": "x"}, "exactly one of dicom, stow_url"),
        ({"name": "x", "dicom": "A@h:1", "stow_url": "http://h"}, "exactly one of dicom"),
        ({"name": "x", "stow_url": "ftp://h"}, "http"),
        ({"name": "x", "stow_url": "http://h", "storage_commitment": True}, "needs dicom"),
        ({"name": "x", "dicom": "h:104"}, "AET@host:port"),
        ({"name": "x", "dicom": "A@h:1", "kinds": ["PDF"]}, "kinds"),
        ({"name": "bad name", "dicom": "A@h:1"}, "name"),
        ({"name": "x", "dicom": "A@h:1", "http_headers": {"Authorization": "t"}}, "stow_url"),
    ],
)
def test_bad_destinations_are_refused(destination: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(destinations=[destination])


def test_an_explicit_type_names_the_kind_as_inferring_it_would() -> None:
    inferred = Settings(
        destinations=[
            {"name": "pacs", "dicom": "A@h:1", "storage_commitment": True},
            {"name": "web", "stow_url": "https://h/dicom-web"},
        ]
    )
    typed = Settings(
        destinations=[
            {"type": "dicom", "name": "pacs", "dicom": "A@h:1", "storage_commitment": True},
            {"type": "stow", "name": "web", "stow_url": "https://h/dicom-web"},
        ]
    )
    assert typed.destinations == inferred.destinations
    pacs, web = typed.destinations
    assert pacs.commitment_ae == DicomAddress(ae_title="A", host="h", port=1)
    assert web.commitment_ae is None and str(web) == "web (https://h/dicom-web)"
    with pytest.raises(ValidationError, match="type 'ftp' is not one of dicom, stow"):
        Settings(destinations=[{"type": "ftp", "name": "x", "dicom": "A@h:1"}])
    with pytest.raises(ValidationError, match="exactly one of dicom, stow_url"):
        Settings(destinations=[{"type": "stow", "name": "x", "dicom": "A@h:1"}])


def test_destination_names_are_unique() -> None:
    with pytest.raises(ValidationError, match="unique: archive"):
        Settings(archive="A@h:1", destinations=[{"name": "archive", "dicom": "B@h:2"}])
