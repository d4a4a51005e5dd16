"""Group commit through a real SCP: four storescu senders at once share rounds of
fsyncs and transactions, and an identity conflict among them is refused while every
other instance of its round is kept, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from node.db.models import Instance, Series, SeriesState
from tests.receive_files import header, write_instance
from tests.receive_node import CALLED, running_scp, spool_files, storescu

SENDERS = 4
EACH = 25
STUDY = "1.2.826.0.1.3680043.8.498.1"
HELD = "1.2.3.77.1"  # sent first under series A, then again under series B by sender 0
HELD_SERIES = "1.2.826.0.1.3680043.8.498.2"  # series A, receive_files.header's


def sender_files(root: Path) -> list[list[Path]]:
    """Each sender's instances, in its own series; sender 0's conflicting one mid-list."""
    senders: list[list[Path]] = []
    for sender in range(SENDERS):
        folder = root / f"sender{sender}"
        folder.mkdir()
        files = []
        for number in range(EACH):
            series = f"1.2.3.78.{sender + 2}"
            ds = header(f"1.2.3.77.{sender + 2}.{number + 1}", SeriesInstanceUID=series)
            files.append(folder / f"{number}.dcm")
            write_instance(files[-1], ds, 64 * 1024)
        senders.append(files)
    moved = root / "moved.dcm"
    write_instance(moved, header(HELD, SeriesInstanceUID="1.2.3.78.99"), 64 * 1024)
    senders[0].insert(EACH // 2, moved)
    return senders


def send_at_once(port: int, senders: list[list[Path]]) -> list[str]:
    """Start every storescu before waiting on any; their -v logs."""
    processes = [
        subprocess.Popen(
            [
                "storescu",
                "-v",
                "-nh",  # go on after the refusal: the others must still be kept
                "-xe",
                "-aet",
                f"MOD{n}",
                "-aec",
                CALLED,
                "127.0.0.1",
                str(port),
                *map(str, files),
            ],
            env={**os.environ, "TCP_NODELAY": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for n, files in enumerate(senders)
    ]
    return [process.communicate(timeout=300)[1] for process in processes]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_four_senders_share_rounds_and_a_conflict_fails_only_itself(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    # A peer that cannot start fails the test: the fixture raises, never skips.
    url = {"postgresql": request.getfixturevalue("postgres_url")} if database != "sqlite" else {}
    held = tmp_path / "held.dcm"
    write_instance(held, header(HELD), 64 * 1024)
    senders = sender_files(tmp_path)
    with running_scp(
        tmp_path / "var", **({"database_url": url["postgresql"]} if url else {})
    ) as scp:
        first = storescu(scp.settings.dicom_port, held)
        assert first.returncode == 0 and "Success" in first.stderr, first.stderr
        logs = send_at_once(scp.settings.dicom_port, senders)
        assert all("Success" in log for log in logs)
        refused = [line for line in logs[0].splitlines() if "Store Response (Error" in line]
        assert len(refused) == 1, logs[0]  # the identity conflict (C802), and only it
        for log in logs[1:]:
            assert log.count("(Success)") == EACH, log
        assert logs[0].count("(Success)") == EACH
        with scp.sessions() as session:
            rows = session.execute(select(Instance.sop_instance_uid, Instance.path)).all()
            counts = dict(
                session.execute(
                    select(Series.series_instance_uid, func.count(Instance.id))
                    .join(Instance, Instance.series_pk == Series.id)
                    .group_by(Series.series_instance_uid)
                ).all()
            )
            states = set(session.scalars(select(Series.state)))
        assert len(rows) == SENDERS * EACH + 1
        assert counts == {HELD_SERIES: 1, **{f"1.2.3.78.{n + 2}": EACH for n in range(SENDERS)}}
        assert states == {SeriesState.RECEIVING}
        # Every row's file is in the spool, and nothing else is: no file of the refused one.
        kept = {p.relative_to(scp.settings.spool_dir).as_posix() for p in spool_files(scp)}
        assert kept == {path for _uid, path in rows}
        assert scp.store.committer.largest_round > 1  # the senders did share a transaction
