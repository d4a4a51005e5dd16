"""The node's one settings object.

Built once at start-up (``Settings.load``) from ``AINODE_*`` environment variables
and an optional YAML/JSON config file (``AINODE_CONFIG``), then passed down to every
role. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_AET_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


class DicomDestination(BaseModel):
    """A DICOM application entity the node sends results to (``AET@host:port``)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomDestination:
        """Parse ``AET@host:port``; the error names the part that is wrong."""
        aet, sep, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not sep or not colon or not aet or not host or not port.isdigit():
            raise ValueError(f"destination {text!r} is not of the form AET@host:port")
        if not _AET_RE.match(aet) or aet.strip() != aet:
            raise ValueError(f"AE title {aet!r} must be 1-16 printable characters, no padding")
        return cls(ae_title=aet, host=host, port=int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class Settings(BaseSettings):
    """Every knob the node has. Environment names are ``AINODE_`` + the field name."""

    model_config = SettingsConfigDict(env_prefix="AINODE_", extra="ignore")

    ae_title: str = "AINODE"
    dicom_port: int = 11112
    dicom_bind: str = "0.0.0.0"
    http_port: int = 8080
    http_bind: str = "127.0.0.1"
    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite under data_dir"
    )
    broker_url: str | None = Field(
        default=None, description="Redis URL; unset starts an embedded Redis under data_dir"
    )
    archive: str | None = Field(
        default=None, description="where results are sent, AET@host:port; unset keeps them local"
    )
    stable_seconds: float = Field(
        default=30.0, ge=0, description="quiet period before a series counts as complete"
    )
    allowed_calling_aets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="empty: any calling AE may store"
    )
    models_dir: Path | None = Field(
        default=None, description="extra model packages, scanned beside the shipped ones"
    )
    scheduler_interval: float = Field(default=1.0, gt=0)
    reconcile_seconds: float = Field(
        default=120.0, gt=0, description="a job queued this long without starting is re-sent"
    )
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="how often a worker renews the job it runs"
    )
    lost_worker_seconds: float = Field(
        default=60.0, gt=0, description="a running job not renewed this long is run again"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    log_level: str = "INFO"

    @field_validator("ae_title")
    @classmethod
    def _check_aet(cls, value: str) -> str:
        if not _AET_RE.match(value) or value.strip() != value:
            raise ValueError("AE title must be 1-16 printable characters, no padding")
        return value

    @field_validator("archive")
    @classmethod
    def _check_archive(cls, value: str | None) -> str | None:
        if value:
            DicomDestination.parse(value)
        return value or None

    @field_validator("allowed_calling_aets", mode="before")
    @classmethod
    def _split_aets(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

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
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ainode.db').resolve()}"

    @property
    def archive_destination(self) -> DicomDestination | None:
        return DicomDestination.parse(self.archive) if self.archive else None

    def worker_environment(self) -> dict[str, str]:
        """The environment that rebuilds these exact settings in a child process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            key = f"AINODE_{name.upper()}"
            env[key] = json.dumps(value) if isinstance(value, list) else str(value)
        return env

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
        merged = {**file_values, **env_values.model_dump(exclude_unset=True), **overrides}
        return cls.model_validate(merged) if merged else env_values
