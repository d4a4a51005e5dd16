"""The settings of pull mode (``AINODE_UPS_PULL_*``): which UPS providers the node performs
workitems for, which of their worklists it takes, and how often it asks.

Fields of the node's one ``node.settings.Settings`` (a base of it), read and checked
with every other setting at start-up. ``node.performer.performer`` applies them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from node.delivery.destinations import DicomAddress


class PullProvider(BaseModel):
    """One UPS provider the node pulls workitems from: over DIMSE or over UPS-RS."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    dicom: str | None = Field(default=None, description="AET@host:port of its UPS SCP")
    url: str | None = Field(default=None, description="its DICOMweb root, for UPS-RS")
    # Sent with every UPS-RS request (e.g. Authorization); never shown by the API.
    http_headers: dict[str, str] = Field(default_factory=dict, repr=False)
    worklist_label: str = Field(default="", description="the worklist the node takes; any")

    @model_validator(mode="after")
    def _one_address(self) -> PullProvider:
        if (self.dicom is None) == (self.url is None):
            raise ValueError(f"UPS provider {self.name!r} needs exactly one of dicom, url")
        if self.dicom is not None:
            DicomAddress.parse(self.dicom)
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"UPS provider {self.name!r}: url must be an http(s) URL")
        return self


class PerformerSettings(BaseModel):
    """Pull mode: the providers, how often they are asked, how much is taken at once."""

    ups_pull_providers: Annotated[list[PullProvider], NoDecode] = Field(
        default_factory=list,
        description="UPS providers whose workitems the node performs (JSON list); none: off",
    )
    ups_pull_interval_seconds: float = Field(
        default=10.0, gt=0, description="how often each provider's worklist is searched"
    )
    ups_pull_max_claimed: int = Field(
        default=2,
        ge=1,
        description="workitems the node holds claimed and unfinished at once, over all "
        "providers: it never takes more than it is about to perform",
    )

    @field_validator("ups_pull_providers", mode="before")
    @classmethod
    def _parse_providers(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value
