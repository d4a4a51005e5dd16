"""Settings parsing and the node's UID rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.delivery.destinations import DicomAddress, DicomDestination, StowDestination
from node.settings import Settings
from node.uids import InvalidUID, derive_uid, validate_uid
from workers.encode.identity import ResultUIDs


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
    # What a child process needs to rebuild the same settings.
    env = settings.worker_environment()
    assert env["AINODE_AE_TITLE"] == "FROMFILE" and env["AINODE_HTTP_PORT"] == "9100"


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValidationError, match="AE title"):
        Settings(ae_title="WAY_TOO_LONG_AE_TITLE")
    with pytest.raises(ValidationError, match="AET@host:port"):
        Settings(archive="orthanc:4242")
    assert Settings(archive="ORTHANC@pacs.local:4242").archive_destination == DicomAddress(
        ae_title="ORTHANC", host="pacs.local", port=4242
    )


@pytest.mark.parametrize(
    "bad", ["", "1.2.03", "1..2", "../etc/passwd", "1.2.a", "1." + "2" * 70, None, "1.2/3"]
)
def test_invalid_uids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidUID):
        validate_uid(bad)


def test_valid_uid_loses_its_padding() -> None:
    assert validate_uid("1.2.840.10008.1.2\x00") == "1.2.840.10008.1.2"


def test_derived_uids_are_deterministic_valid_and_distinct() -> None:
    sources = ["1.2.3.4", "1.2.3.5", "1.2.3.6"]
    first = ResultUIDs.of_job(sources, "model", "1.0.0")
    # The order instances arrived in does not matter; the model version does.
    assert first == ResultUIDs.of_job(list(reversed(sources)), "model", "1.0.0")
    assert first != ResultUIDs.of_job(sources, "model", "1.0.1")
    uids = [*dataclasses.astuple(first), first.sc_image(0), first.sc_image(1)]
    assert len(set(uids)) == len(uids) == 8
    for uid in uids:
        assert validate_uid(uid) == uid and uid.startswith("2.25.")
    # Results already in archives keep their UIDs: the derivation inputs are fixed.
    assert first.sc_instance == derive_uid(
        "ainode-result", "model", "1.0.0", sources, "overlay-instance"
    )
    assert derive_uid("a", "b") != derive_uid("ab")


def test_destinations_from_the_environment_and_their_rules(
    monkeypatch: pytest.MonkeyPatch,
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
    # A worker rebuilds the same destinations from the environment it is given.
    monkeypatch.delenv("AINODE_DESTINATIONS")
    for key, value in settings.worker_environment().items():
        monkeypatch.setenv(key, value)
    assert Settings.load().all_destinations == settings.all_destinations


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
