"""Where results go: one pydantic settings model per kind of destination, registered by type.

Each kind is a subclass of :class:`Destination` registered with :func:`destination_kind`
and told apart by its ``type``: ``dicom`` (a DICOM archive, C-STORE), ``stow`` (a
DICOMweb archive, STOW-RS), and the notifications of critical findings, which take Key
Object Selection results only: ``hl7`` (ORU^R01 over MLLP), ``fhir`` (a FHIR R4
DiagnosticReport) and ``webhook`` (a signed JSON POST). A configuration without
``type``, as every configuration written before it existed, gets the kind whose address
field it sets (``dicom`` or ``stow_url``); exactly one must be set. A field that belongs
to another kind is refused when it asks for something (``storage_commitment: true`` on a
STOW-RS destination).

A new kind is a new model registered here and a send registered for it in
``node.delivery.transports``; nothing that exists is patched. This module imports no
settings and nothing that does, so ``node.settings`` holds parsed destinations
without an import circle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from node.db.models import ResultKind

AE_TITLE = re.compile(r"^[\x20-\x7e]{1,16}$")
"""An AE title as the node accepts it: 1-16 printable characters (no padding is checked
apart: callers compare it with its ``strip()``)."""


class DicomAddress(BaseModel):
    """A DICOM application entity on the network (``AET@host:port``)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomAddress:
        """Parse ``AET@host:port``; the error names the part that is wrong."""
        aet, sep, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not sep or not colon or not aet or not host or not port.isdigit():
            raise ValueError(f"destination {text!r} is not of the form AET@host:port")
        if not AE_TITLE.match(aet) or aet.strip() != aet:
            raise ValueError(f"AE title {aet!r} must be 1-16 printable characters, no padding")
        return cls(ae_title=aet, host=host, port=int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class Destination(BaseModel):
    """What every destination has: a name, and which results it takes.

    ``kinds`` says which objects it takes: an archive or viewer without SEG support
    takes ``["SR", "SC"]`` (SC: the segmentation overlaid on the images, findings in
    words). ``models`` limits it to those models' results (empty: every model), which
    is how a route sends, say, the lung model's results to a second archive.
    """

    # The field whose presence names the kind in a configuration without ``type``.
    address_field: ClassVar[str]

    type: str
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kinds: list[ResultKind] = Field(
        default_factory=lambda: [ResultKind.SEG, ResultKind.SR], min_length=1
    )
    models: list[str] = Field(default_factory=list)

    @property
    def address(self) -> str:
        """Where the destination is, in words (``AET@host:port``, a URL)."""
        return str(getattr(self, self.address_field))

    @property
    def commitment_ae(self) -> DicomAddress | None:
        """The AE to ask for storage commitment; None when delivery ends at stored."""
        return None

    def takes(self, kind: str, model_name: str) -> bool:
        """Whether this destination receives a ``kind`` object of ``model_name``."""
        return kind in self.kinds and (not self.models or model_name in self.models)

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"


_KINDS: dict[str, type[Destination]] = {}
D = TypeVar("D", bound=type[Destination])


def destination_kind(model: D) -> D:
    """Register ``model`` as the kind of destination named by its ``type`` default."""
    kind = model.model_fields["type"].default
    if not isinstance(kind, str) or kind in _KINDS:
        raise ValueError(f"{model.__name__} needs a type of its own, not {kind!r}")
    _KINDS[kind] = model
    return model


@destination_kind
class DicomDestination(Destination):
    """A DICOM archive, sent to by C-STORE.

    ``storage_commitment``: a result counts as delivered once the archive has committed
    to keep it (N-ACTION / N-EVENT-REPORT), not merely stored it.
    """

    address_field: ClassVar[str] = "dicom"

    type: Literal["dicom"] = "dicom"
    dicom: str = Field(description="AET@host:port")
    storage_commitment: bool = False

    @model_validator(mode="after")
    def _check_address(self) -> DicomDestination:
        DicomAddress.parse(self.dicom)
        return self

    @property
    def ae(self) -> DicomAddress:
        return DicomAddress.parse(self.dicom)

    @property
    def commitment_ae(self) -> DicomAddress | None:
        return self.ae if self.storage_commitment else None


@destination_kind
class StowDestination(Destination):
    """A DICOMweb archive, sent to by STOW-RS at ``{stow_url}/studies``."""

    address_field: ClassVar[str] = "stow_url"

    type: Literal["stow"] = "stow"
    stow_url: str = Field(description="DICOMweb root, e.g. .../dicom-web")
    # Sent with every STOW-RS request, e.g. {"Authorization": "Bearer ..."}; never shown
    # by the API. Keep the config file that holds them readable by the node only.
    http_headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _check_url(self) -> StowDestination:
        if not self.stow_url.startswith(("http://", "https://")):
            raise ValueError(f"destination {self.name!r}: stow_url must be an http(s) URL")
        return self


class NotificationDestination(Destination):
    """What the kinds that tell the reading worklist of a critical finding share (``hl7``,
    ``fhir``, ``webhook``): they take the job's Key Object Selection only (``kinds:
    [KO]``), whose delivery carries the finding's facts (``node.delivery.critical_facts``),
    and each try waits ``timeout_seconds`` at most for the answer."""

    kinds: list[ResultKind] = Field(default_factory=lambda: [ResultKind.KO], min_length=1)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _key_objects_only(self) -> NotificationDestination:
        if list(self.kinds) != [ResultKind.KO]:
            raise ValueError(
                f"destination {self.name!r}: a {self.type} notification takes KO results "
                "only (kinds: [KO])"
            )
        return self


def _http_url(url: str, name: str, field: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"destination {name!r}: {field} must be an http(s) URL")


@destination_kind
class Hl7Destination(NotificationDestination):
    """A reading worklist or RIS told of critical findings by an HL7 v2.5.1 ORU^R01
    message over MLLP (``node.delivery.mllp``), delivered once it answers AA."""

    address_field: ClassVar[str] = "mllp"

    type: Literal["hl7"] = "hl7"
    mllp: str = Field(description="host:port of the MLLP listener")
    tls: bool = Field(default=False, description="MLLP inside TLS (off: plain TCP)")
    tls_ca: Path | None = Field(default=None, description="PEM CA(s) the listener is checked by")
    receiving_application: str = Field(default="", max_length=180)  # MSH-5
    receiving_facility: str = Field(default="", max_length=180)  # MSH-6
    sending_facility: str = Field(default="", max_length=180)  # MSH-4

    @model_validator(mode="after")
    def _check_address(self) -> Hl7Destination:
        host, colon, port = self.mllp.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"destination {self.name!r}: mllp {self.mllp!r} is not host:port")
        return self

    @property
    def host(self) -> str:
        return self.mllp.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.mllp.rpartition(":")[2])


@destination_kind
class FhirDestination(NotificationDestination):
    """A FHIR R4 server told of critical findings by a transaction Bundle holding a
    DiagnosticReport and its Observations, POSTed to ``fhir_url`` (``node.delivery.fhir``)."""

    address_field: ClassVar[str] = "fhir_url"

    type: Literal["fhir"] = "fhir"
    fhir_url: str = Field(description="the FHIR server's base URL")
    # e.g. {"Authorization": "Bearer ..."}; never shown by the API.
    http_headers: dict[str, str] = Field(default_factory=dict, repr=False)
    # The system of the patients' identifiers (the hospital's MRN namespace); empty: none.
    patient_identifier_system: str = ""

    @model_validator(mode="after")
    def _check_url(self) -> FhirDestination:
        _http_url(self.fhir_url, self.name, "fhir_url")
        return self


@destination_kind
class WebhookDestination(NotificationDestination):
    """An HTTP endpoint told of critical findings by a JSON POST to ``url``, signed with
    HMAC-SHA256 over the body (``node.delivery.webhook``). The key is ``secret``, or the
    content of ``secret_file`` (read at each send, so it can be rotated); neither is ever
    shown by the API."""

    address_field: ClassVar[str] = "url"

    type: Literal["webhook"] = "webhook"
    url: str = Field(description="where the JSON is POSTed")
    secret: str = Field(default="", repr=False)
    secret_file: Path | None = Field(default=None, repr=False)
    http_headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _check(self) -> WebhookDestination:
        _http_url(self.url, self.name, "url")
        if bool(self.secret) == (self.secret_file is not None):
            raise ValueError(f"destination {self.name!r}: set one of secret and secret_file")
        if self.secret and len(self.secret) < 16:
            raise ValueError(f"destination {self.name!r}: secret must be 16 characters or more")
        return self

    def signing_key(self) -> bytes:
        """The HMAC key; OSError when ``secret_file`` cannot be read."""
        if self.secret_file is not None:
            return self.secret_file.read_text().strip().encode()
        return self.secret.encode()


def _own_fields(model: type[Destination]) -> set[str]:
    return set(model.model_fields) - set(Destination.model_fields)


def _typed(value: Any) -> Any:
    """A configuration mapping with its ``type``, inferred when absent.

    Raises ValueError when the kind cannot be told (no address field or several), or
    when a field of another kind asks for something this kind cannot do.
    """
    if not isinstance(value, dict):
        return value
    name = value.get("name")
    addressed = [k for k, model in _KINDS.items() if value.get(model.address_field) is not None]
    kind = value.get("type") or (addressed[0] if len(addressed) == 1 else None)
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"destination {name!r}: type {kind!r} is not one of {', '.join(_KINDS)}")
    if kind is None or any(other != kind for other in addressed):
        fields = ", ".join(model.address_field for model in _KINDS.values())
        raise ValueError(f"destination {name!r} needs exactly one of {fields}")
    model = _KINDS[kind]
    for other in _KINDS.values():
        for field in sorted(_own_fields(other) - _own_fields(model) - {other.address_field}):
            if value.get(field):
                raise ValueError(f"destination {name!r}: {field} needs {other.address_field}")
    return {**value, "type": kind}


AnyDestination = Annotated[
    Union[tuple(_KINDS.values())],  # type: ignore[valid-type]  # noqa: UP007 - built from the registry
    Field(discriminator="type"),
    BeforeValidator(_typed),
]
"""A destination of any registered kind, as a settings field parses one."""
