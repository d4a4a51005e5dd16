"""The node's one settings object.

Built once at start-up (``Settings.load``) from ``AINODE_*`` environment variables
and an optional YAML/JSON config file (``AINODE_CONFIG``), then passed down to every
role. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from node.admission import parse_rules
from node.audit.syslog import SyslogAddress
from node.auth.hosts import normalize_host
from node.auth.oidc_settings import OidcSettings  # the AINODE_OIDC_* fields
from node.auth.roles import parse_role
from node.auth.signin_settings import SigninSettings  # AINODE_SIGNIN_* (throttling)
from node.completion_settings import CompletionSettings  # AINODE_COMPLETION_* (rules, grace)
from node.credentials import values_from_files, with_password
from node.delivery.destinations import (
    AE_TITLE,
    AnyDestination,
    Destination,
    DicomAddress,
    DicomDestination,
)
from node.jobs.queue_settings import QueueSettings  # AINODE_RECONCILE_SECONDS, ...
from node.jobs.worker_settings import WorkerSettings  # AINODE_DECODE_CACHE_BYTES, ...
from node.performer.pull_settings import PerformerSettings  # AINODE_UPS_PULL_*
from node.priority_settings import PrioritySettings  # AINODE_PRIORITY_RULES
from node.retrieve.retrieve_settings import RetrieveSettings  # AINODE_RETRIEVE_*, AINODE_REQUESTS_*
from node.settings_lists import listed
from node.ups.ups_settings import UpsSettings  # AINODE_UPS_PORT, AINODE_UPS_EVENT_RECEIVERS, ...


class Settings(
    BaseSettings,
    OidcSettings,
    CompletionSettings,
    WorkerSettings,
    SigninSettings,
    QueueSettings,  # AINODE_RECONCILE_SECONDS, ... (node.jobs.queue_settings)
    PrioritySettings,  # AINODE_PRIORITY_RULES (node.priority_settings)
    RetrieveSettings,  # AINODE_RETRIEVE_*, AINODE_REQUESTS_* (node.retrieve.retrieve_settings)
    PerformerSettings,  # AINODE_UPS_PULL_* (node.performer.pull_settings)
    UpsSettings,  # AINODE_UPS_PORT, AINODE_UPS_EVENT_RECEIVERS, ... (node.ups.ups_settings)
):
    """Every knob the node has. Environment names are ``AINODE_`` + the field name."""

    model_config = SettingsConfigDict(env_prefix="AINODE_", extra="ignore")

    ae_title: str = "AINODE"
    dicom_port: int = 11112
    dicom_bind: str = "0.0.0.0"
    # Admission and limits of the Storage SCP (node.admission), TLS (node.tls).
    dicom_plaintext: bool = Field(
        default=True, description="listen for plain TCP on dicom_port; false: TLS only"
    )
    dicom_tls_port: int | None = Field(
        default=None, description="DICOM TLS listener port (2762 is registered); unset: no TLS"
    )
    dicom_tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain) the TLS listener presents"
    )
    dicom_tls_key: Path | None = Field(default=None, description="PEM private key of the cert")
    dicom_tls_ca: Path | None = Field(
        default=None, description="PEM CA(s) that client certificates are verified against"
    )
    dicom_tls_require_client_cert: bool = Field(
        default=False, description="refuse TLS clients without a certificate the CA signed"
    )
    dicom_max_associations: int = Field(
        default=10, ge=1, description="associations at once, all callers (counted from request)"
    )
    dicom_max_associations_per_aet: int = Field(
        default=0, ge=0, description="associations at once per calling AE title; 0: no own limit"
    )
    dicom_max_connections: int = Field(
        default=64, ge=1, description="TCP connections served at once, silent ones too"
    )
    dicom_receive_processes: int = Field(
        default=0, ge=0, le=64, description="processes serving associations (0: the node's own)"
    )
    dicom_acse_timeout: float = Field(
        default=30.0, gt=0, description="s to wait for association messages; also closes a "
        "connection that sends no A-ASSOCIATE-RQ (or no TLS handshake) within it",
    )  # fmt: skip
    dicom_dimse_timeout: float = Field(default=30.0, gt=0, description="s to wait for a DIMSE")
    dicom_network_timeout: float = Field(
        default=60.0, gt=0, description="s an established association may stay silent"
    )
    http_port: int = 8080
    http_bind: str = "127.0.0.1"
    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite under data_dir"
    )
    broker_url: str | None = Field(
        default=None, description="Redis URL; unset starts an embedded Redis under data_dir"
    )
    # Passwords apart from their URLs, e.g. Docker secrets (AINODE_*_FILE): node.credentials
    database_password: SecretStr | None = Field(
        default=None, description="password for database_url (a PostgreSQL URL without one)"
    )
    broker_password: SecretStr | None = Field(
        default=None, description="password for broker_url (Redis requirepass)"
    )
    archive: str | None = Field(
        default=None,
        description="shorthand for one DICOM destination named 'archive', AET@host:port",
    )
    destinations: Annotated[list[AnyDestination], NoDecode] = Field(
        default_factory=list,
        description="where results go (JSON list in the environment); node.delivery.destinations",
    )
    delivery_attempts: int = Field(
        default=8, ge=1, description="attempts per result and destination before dead-letter"
    )
    delivery_backoff_seconds: float = Field(
        default=5.0, gt=0, description="wait after the first failed attempt; doubles each time"
    )
    delivery_backoff_max_seconds: float = Field(default=600.0, gt=0)
    commitment_timeout_seconds: float = Field(
        default=300.0, gt=0, description="an uncommitted delivery counts as failed after this"
    )
    stable_seconds: float = Field(
        default=30.0, ge=0, description="quiet period before a series counts as complete"
    )
    max_pdu_bytes: int = Field(
        default=256 * 1024,
        ge=4096,
        description="largest PDU the SCP accepts; bounds what one read holds in memory",
    )
    max_instance_bytes: int = Field(
        default=4 * 1024**3, gt=0, description="a larger instance is refused (A700), not kept"
    )
    max_inflated_bytes: int = Field(
        default=256 * 1024**2,
        gt=0,
        description="a Deflated instance inflating past this is refused (A700): no zip bombs",
    )
    duplicate_policy: Literal["keep_first", "replace"] = Field(
        default="keep_first",
        description="a known SOP Instance UID with other content: keep the first, or replace "
        "it and analyse its series again",
    )
    min_free_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="below this free space on the spool C-STORE is refused and /healthz is 503",
    )
    # Retention (node.retention): finished, delivered studies are deleted after this.
    retention_days: float = Field(
        default=30.0, ge=0, description="days a finished, delivered study is kept; 0: for ever"
    )
    retention_interval_seconds: float = Field(
        default=600.0, gt=0, description="how often the retention sweep runs"
    )
    # Bounds on decoding a series (workers.load.limits), checked before any pixel decode.
    max_frame_bytes: int = Field(
        default=64 * 1024**2, gt=0, description="one decoded frame larger than this is refused"
    )
    max_decoded_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="a series whose decoded voxels (float32) pass this is refused",
    )
    allowed_calling_aets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="who may associate: AET, AET@address or AET@network/prefix, * = any AE "
        "title; empty: anyone",
    )
    models_dir: Path | None = Field(
        default=None, description="extra model packages, scanned beside the shipped ones"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    # Web sign-in, roles and browser hardening (node.auth, node.web.hardening).
    web_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Host header names the web server answers (plus http_bind); others: 400",
    )
    web_session_seconds: float = Field(
        default=8 * 3600.0, gt=0, description="a signed-in session ends this long after sign-in"
    )
    web_session_secret: str | None = Field(
        default=None,
        min_length=32,
        repr=False,
        description="key that signs session cookies; unset: a random key in data_dir",
    )
    phi_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["operator", "admin"],
        description="roles that see patient name, ID, birth date and accession number",
    )
    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        repr=False,
        description="bearer token that may read /metrics; unset: an admin principal only",
    )
    # Audit trail (node.audit): every event is a database row; with audit_syslog each is
    # also sent as a DICOM audit message (PS3.15 A.5) to a syslog collector.
    audit_syslog: str = Field(
        default="", description="udp://, tcp:// or tls://host:port of the collector; empty: off"
    )
    audit_syslog_ca: Path | None = Field(
        default=None, description="PEM CA(s) a tls:// collector is checked against; unset: system"
    )
    audit_syslog_cert: Path | None = Field(
        default=None, description="PEM certificate the node shows a tls:// collector (mutual TLS)"
    )
    audit_syslog_key: Path | None = Field(default=None, description="its unencrypted PEM key")
    audit_syslog_accepted_associations: bool = Field(
        default=False, description="also send accepted associations (failures always go)"
    )
    audit_source_id: str | None = Field(
        default=None, description="AuditSourceID of the messages; unset: the AE title"
    )
    log_level: str = "INFO"

    @field_validator("ae_title")
    @classmethod
    def _check_aet(cls, value: str) -> str:
        if not AE_TITLE.match(value) or value.strip() != value:
            raise ValueError("AE title must be 1-16 printable characters, no padding")
        return value

    @field_validator("archive")
    @classmethod
    def _check_archive(cls, value: str | None) -> str | None:
        if value:
            DicomAddress.parse(value)
        return value or None

    @field_validator("destinations", mode="before")
    @classmethod
    def _parse_destinations(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_destination_names(self) -> Settings:
        names = [d.name for d in self.all_destinations]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"destination names must be unique: {', '.join(repeated)}")
        return self

    @field_validator("allowed_calling_aets", mode="before")
    @classmethod
    def _split_aets(cls, value: Any) -> Any:
        return listed(value)

    @field_validator("web_allowed_hosts", "phi_roles", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return listed(value)

    @field_validator("phi_roles")
    @classmethod
    def _check_phi_roles(cls, value: list[str]) -> list[str]:
        return [parse_role(name).value for name in value]

    @field_validator("web_allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        return [normalize_host(name) for name in value]

    @field_validator("audit_syslog")
    @classmethod
    def _check_audit_syslog(cls, value: str) -> str:
        if value.strip():
            SyslogAddress.parse(value)  # a malformed address stops the node at start-up
        return value.strip()

    @model_validator(mode="after")
    def _check_audit_tls(self) -> Settings:
        if (self.audit_syslog_cert is None) != (self.audit_syslog_key is None):
            raise ValueError("audit_syslog_cert and audit_syslog_key go together")
        return self

    @field_validator("allowed_calling_aets")
    @classmethod
    def _check_callers(cls, value: list[str]) -> list[str]:
        parse_rules(value)  # a malformed entry stops the node at start-up, not at a request
        return value

    @model_validator(mode="after")
    def _check_listeners(self) -> Settings:
        if self.dicom_tls_port is not None:
            if self.dicom_tls_cert is None or self.dicom_tls_key is None:
                raise ValueError("dicom_tls_port needs dicom_tls_cert and dicom_tls_key")
            if self.dicom_plaintext and self.dicom_tls_port == self.dicom_port:
                raise ValueError("dicom_tls_port must differ from dicom_port")
        elif not self.dicom_plaintext:
            raise ValueError("dicom_plaintext is off and no dicom_tls_port: nothing would listen")
        if self.dicom_tls_require_client_cert and self.dicom_tls_ca is None:
            raise ValueError("dicom_tls_require_client_cert needs dicom_tls_ca to verify them")
        return self

    # ---- derived locations -------------------------------------------------

    @property
    def spool_dir(self) -> Path:
        """Received instances, exactly as the bytes arrived."""
        return self.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        """Encoded SEG/SR objects waiting for (or after) delivery."""
        return self.data_dir / "results"

    @property
    def effective_allowed_hosts(self) -> frozenset[str]:
        """``web_allowed_hosts``, and ``http_bind`` unless it is a wildcard address."""
        hosts = set(self.web_allowed_hosts)
        if self.http_bind not in ("0.0.0.0", "::", ""):
            hosts.add(normalize_host(self.http_bind))
        return frozenset(hosts)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ainode.db').resolve()}"

    @property
    def archive_destination(self) -> DicomAddress | None:
        return DicomAddress.parse(self.archive) if self.archive else None

    @property
    def all_destinations(self) -> list[Destination]:
        """``archive`` (as the destination named "archive"), then ``destinations``."""
        shorthand = [DicomDestination(name="archive", dicom=self.archive)] if self.archive else []
        return shorthand + list(self.destinations)

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.all_destinations if d.name == name), None)

    @model_validator(mode="after")
    def _passwords_into_urls(self) -> Settings:
        """Put ``database_password`` and ``broker_password`` into their URLs, so every role
        connects with the URL alone; a URL that names its own password keeps it."""
        # Assigned only when changed: an assignment counts as set (``load`` merges those).
        database_url = with_password(self.database_url, self.database_password, "database")
        if database_url != self.database_url:
            self.database_url = database_url
        broker_url = with_password(self.broker_url, self.broker_password, "broker")
        if broker_url != self.broker_url:
            self.broker_url = broker_url
        return self

    def as_config(self) -> dict[str, Any]:
        """These settings as a config file's mapping that ``load`` rebuilds exactly,
        secrets included: write it readable by the node's user alone
        (``node.supervisor`` hands it to the worker child instead of its environment)."""
        config = self.model_dump(mode="json")
        for name, value in self:
            if isinstance(value, SecretStr):
                config[name] = value.get_secret_value()
        return config

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Build settings: file values, overridden by environment, overridden by arguments."""
        path = config_file or (
            Path(os.environ["AINODE_CONFIG"]) if os.environ.get("AINODE_CONFIG") else None
        )
        file_values: dict[str, Any] = {}
        if path is not None:
            text = path.read_text()
            loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            if not isinstance(loaded, dict):
                raise ValueError(f"config file {path} must hold a mapping of setting names")
            file_values = {k.lower(): v for k, v in loaded.items()}
        env_values = cls()  # environment (and defaults)
        merged = {
            **file_values,
            **env_values.model_dump(exclude_unset=True),
            # AINODE_<NAME>_FILE: a secret's value from a file (node.credentials)
            **values_from_files(os.environ, cls.model_fields),
            **overrides,
        }
        return cls.model_validate(merged) if merged else env_values
