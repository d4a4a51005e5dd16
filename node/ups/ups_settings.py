"""The settings of the UPS provider (``AINODE_UPS_*``): its port and AE title, the
subscribers' addresses, and how events are sent.

They are fields of the node's one ``node.settings.Settings`` (which takes them from
this class, as a base), read and checked with every other setting at start-up; a
malformed receiver address stops the node there. ``node.ups.service`` applies them.

N-EVENT-REPORTs go to a subscriber on an association the node opens, so the node must
know where each subscribing AE title listens: ``AINODE_UPS_EVENT_RECEIVERS`` lists
them (``AET@host:port``, comma-separated). A subscription from an AE title not listed
is refused with 0xC308 (Receiving AE-TITLE is unknown to this SCP).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from node.delivery.destinations import AE_TITLE, DicomAddress
from node.settings_lists import listed


class UpsSettings(BaseModel):
    """Where the UPS provider listens, who may subscribe, how events are retried."""

    ups_port: int = Field(
        default=11114,
        ge=0,
        le=65535,
        description="port of the UPS DIMSE service (Push, Pull, Watch, Event, Query); 0: off",
    )
    ups_tls_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="port of the UPS DIMSE service over DICOM TLS (the Storage SCP's "
        "certificate, key and CA)",
    )
    ups_ae_title: str = Field(
        default="", description="the UPS provider's AE title; empty: the node's own"
    )
    ups_event_receivers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="AET@host:port of each AE title that may subscribe to UPS events "
        "(N-EVENT-REPORTs are sent there), comma-separated",
    )
    ups_event_retry_seconds: float = Field(
        default=5.0, gt=0, description="first wait before sending to a subscriber that failed"
    )
    ups_event_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="longest wait between tries to a subscriber that is down"
    )
    ups_event_poll_seconds: float = Field(
        default=5.0,
        ge=1.0,
        description="how often the event dispatcher looks for events written by other "
        "processes (the workers' jobs); the node's own requests wake it at once",
    )

    @field_validator("ups_event_receivers", mode="before")
    @classmethod
    def _split_receivers(cls, value: Any) -> Any:
        return listed(value)

    @field_validator("ups_event_receivers")
    @classmethod
    def _check_receivers(cls, value: list[str]) -> list[str]:
        for entry in value:
            DicomAddress.parse(entry)  # names the part that is wrong
        return value

    @field_validator("ups_ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        if value and (not AE_TITLE.match(value) or value.strip() != value):
            raise ValueError("ups_ae_title must be 1-16 printable characters, no padding")
        return value

    def event_receivers(self) -> dict[str, DicomAddress]:
        """Each subscribing AE title's address."""
        addresses = (DicomAddress.parse(entry) for entry in self.ups_event_receivers)
        return {address.ae_title: address for address in addresses}
