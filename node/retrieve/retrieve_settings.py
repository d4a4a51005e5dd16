"""The settings of retrieval and of analysis on request (``AINODE_RETRIEVE_*``,
``AINODE_REQUESTS_*``): the PACS the node retrieves studies from, which one is the
default, and the bounds on a retrieval.

Fields of the node's one ``node.settings.Settings`` (a base of it), read and checked
with every other setting at start-up. ``node.retrieve.retriever`` and the runner of
requested workitems (``node.requests.request_runner``) apply them.

A source is retrieved from by one method:

- ``move``: C-MOVE (Study Root) to the node's own AE title; the PACS must know that AE
  title (its address: the node's Storage SCP) and sends the study there;
- ``get``: C-GET on one association, the instances arriving on it;
- ``wado``: WADO-RS from the PACS's DICOMweb root (``wado_url``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from node.delivery.destinations import DicomAddress

RetrieveMethod = Literal["move", "get", "wado"]


class RetrieveSource(BaseModel):
    """One PACS the node retrieves studies from, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    method: RetrieveMethod = "move"
    dicom: str | None = Field(default=None, description="AET@host:port (move, get)")
    wado_url: str | None = Field(default=None, description="DICOMweb root (wado)")
    # Sent with every WADO-RS request (e.g. Authorization); never shown by the API.
    http_headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _address_for_method(self) -> RetrieveSource:
        if self.dicom is not None:
            DicomAddress.parse(self.dicom)
        if self.method in ("move", "get") and self.dicom is None:
            raise ValueError(f"retrieve source {self.name!r}: {self.method} needs dicom")
        if self.method == "wado":
            if self.wado_url is None:
                raise ValueError(f"retrieve source {self.name!r}: wado needs wado_url")
            if not self.wado_url.startswith(("http://", "https://")):
                raise ValueError(f"retrieve source {self.name!r}: wado_url must be http(s)")
        return self

    @property
    def ae(self) -> DicomAddress | None:
        return DicomAddress.parse(self.dicom) if self.dicom else None

    @property
    def peer(self) -> str:
        """Where the source is, in words: what a failure names."""
        if self.method == "wado":
            return str(self.wado_url)
        return str(self.dicom)

    @property
    def sender(self) -> str:
        """Who the retrieved instances count as sent by (their calling AE title, 16
        characters): the source's AE title, else its name."""
        ae = self.ae
        return ae.ae_title if ae is not None else self.name[:16]


class RetrieveSettings(BaseModel):
    """The PACS the node retrieves from, and the bounds on one retrieval."""

    retrieve_sources: Annotated[list[RetrieveSource], NoDecode] = Field(
        default_factory=list,
        description="PACS studies are retrieved from (JSON list of {name, method: "
        "move|get|wado, dicom: AET@host:port, wado_url, http_headers}); none: off",
    )
    retrieve_default: str = Field(
        default="", description="the source used when a workitem names none; empty: the first"
    )
    retrieve_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="a whole study's retrieval fails after this"
    )
    retrieve_network_timeout_seconds: float = Field(
        default=60.0, gt=0, description="a source silent this long (DIMSE or HTTP) fails it"
    )
    requests_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="how often the runner of requested workitems looks for new ones and "
        "for progress of those it performs",
    )

    @field_validator("retrieve_sources", mode="before")
    @classmethod
    def _parse_sources(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_sources(self) -> RetrieveSettings:
        names = [source.name for source in self.retrieve_sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"retrieve source names must be unique: {', '.join(repeated)}")
        if self.retrieve_default and self.retrieve_default not in names:
            raise ValueError(f"retrieve_default {self.retrieve_default!r} is no retrieve source")
        return self

    def retrieve_source(self, name: str = "") -> RetrieveSource | None:
        """The source called ``name``, or the default one; None when there is none."""
        wanted = name or self.retrieve_default
        if not wanted:
            return self.retrieve_sources[0] if self.retrieve_sources else None
        return next((s for s in self.retrieve_sources if s.name == wanted), None)
