"""WADO-RS: the study from the source's DICOMweb root (PS3.18 10.4, RetrieveStudy).

``GET {wado_url}/studies/{uid}`` asks for ``multipart/related; type="application/dicom";
transfer-syntax=*``: every instance as a PS3.10 file in the transfer syntax the source
holds it in (what a C-STORE from it would carry). The response is read as it streams
and each part is passed on while its bytes arrive (:mod:`node.retrieve.retrieve_intake`): its
File Meta Information first, then its data set into an incoming file of the spool;
nothing is held whole in memory.
"""

from __future__ import annotations

import time

import httpx
from python_multipart.multipart import MultipartParser, parse_options_header

from node.retrieve.query_retrieve import Timeouts
from node.retrieve.retrieve_intake import InstanceWriter, StudyIntake
from node.retrieve.retrieve_outcome import Progress, Retrieved, RetrieveError, no_progress
from node.retrieve.retrieve_settings import RetrieveSource

METHOD = "wado"
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class _Parts:
    """The multipart parser's callbacks: one :class:`InstanceWriter` per part."""

    def __init__(self, intake: StudyIntake, progress: Progress) -> None:
        self.intake = intake
        self.progress = progress
        self.writer: InstanceWriter | None = None
        self.parts = 0

    def begin(self) -> None:
        self.writer = self.intake.instance()

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.writer is not None:
            self.writer.write(memoryview(data)[start:end])

    def end(self) -> None:
        if self.writer is not None:
            self.writer.finish()
            self.writer = None
            self.parts += 1
            self.progress(self.intake.stored, None)

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.abandon()
            self.writer = None


def _boundary(response: httpx.Response, peer: str) -> bytes:
    media_type, options = parse_options_header(response.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/related" or not boundary:
        raise RetrieveError(METHOD, peer, f"answered {media_type.decode() or 'no media type'}, "
                            "not multipart/related with a boundary")  # fmt: skip
    return boundary


def wado_study(
    source: RetrieveSource,
    study_instance_uid: str,
    intake: StudyIntake,
    timeouts: Timeouts,
    progress: Progress = no_progress,
) -> Retrieved:
    """Retrieve the study over WADO-RS into ``intake``; RetrieveError on failure."""
    root = str(source.wado_url).rstrip("/")
    url = f"{root}/studies/{study_instance_uid}"
    headers = {**source.http_headers, "Accept": ACCEPT}
    parts = _Parts(intake, progress)
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeouts.network)) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                response.read()
                text = " ".join(response.text.split())[:200]
                status = f"HTTP {response.status_code} {response.reason_phrase}"
                raise RetrieveError(METHOD, source.peer, f"{status}: {text}" if text else status)
            callbacks = {"on_part_begin": parts.begin, "on_part_data": parts.data,
                         "on_part_end": parts.end}  # fmt: skip
            parser = MultipartParser(_boundary(response, source.peer), callbacks)  # type: ignore[arg-type]
            for chunk in response.iter_bytes():
                parser.write(chunk)
                if time.monotonic() > timeouts.deadline:
                    late = "not finished within the retrieve timeout"
                    raise RetrieveError(METHOD, source.peer, late)
            parser.finalize()
    except httpx.HTTPError as exc:
        raise RetrieveError(METHOD, source.peer, f"{type(exc).__name__}: {exc}") from exc
    finally:
        parts.abandon()  # a part cut off by a failure: its bytes go
    if parts.parts == 0:
        raise RetrieveError(METHOD, source.peer, "the source holds no instance of the study")
    refused = intake.record.refused
    warning = f"{refused} instances refused: {intake.last_refusal}" if refused else ""
    return Retrieved(METHOD, source.name, intake.stored, refused, warning)
