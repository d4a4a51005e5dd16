"""UID rules: received UIDs validated, the node's own derived deterministically."""

from __future__ import annotations

import dataclasses

import pytest

from node.uids import InvalidUID, derive_uid, validate_uid
from workers.encode.identity import ResultUIDs


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
    # study-level ids aside, each object and series its own: SEG, SR, SC, KO and 2 images
    assert len(set(uids)) == len(uids) == len(dataclasses.fields(first)) + 2
    assert {"ko_series", "ko_instance"} <= {f.name for f in dataclasses.fields(first)}
    for uid in uids:
        assert validate_uid(uid) == uid and uid.startswith("2.25.")
    # Results already in archives keep their UIDs: the derivation inputs are fixed.
    assert first.sc_instance == derive_uid(
        "ainode-result", "model", "1.0.0", sources, "overlay-instance"
    )
    assert derive_uid("a", "b") != derive_uid("ab")
