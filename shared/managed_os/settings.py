"""Settings: one pydantic-settings object per service, each with its own env prefix
(`MOS_CATALOG_`, `MOS_DECLARATIONS_`, `MOS_DEVICE_CHANNEL_`, `MOS_COMPLIANCE_`).
Built once at startup and passed down; nothing else reads the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(ValueError):
    """Settings that are valid on their own but not enough to serve traffic."""


class ServiceSettings(BaseSettings):
    """Settings every service shares; subclasses add their own and set `env_prefix`."""

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__")

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    database_url: str = Field(
        "sqlite+aiosqlite:///./data/service.db",
        description="`postgresql+asyncpg://user:pass@host/db` or `sqlite+aiosqlite:///path`.",
    )
    auto_migrate: bool = Field(
        False, description="Apply migrations at startup (embedded mode); else run `migrate`."
    )
    bus: Literal["inprocess", "kafka"] = Field("inprocess", description="Event bus backend.")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap list.")
    kafka_topic_partitions: int = Field(
        3, ge=1, description="Partitions for topics this service creates if missing."
    )
    kafka_replication_factor: int = Field(1, ge=1, description="Replication for those topics.")
    auth_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC key that signs and verifies API bearer tokens (shared by services).",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted.")
    outbox_poll_interval: float = Field(0.5, gt=0, description="Seconds between relay polls.")
    outbox_batch_size: int = Field(
        500, ge=1, le=50_000, description="Most outbox events relayed in one transaction."
    )
    log_level: str = Field("INFO", description="Log level.")

    def check_serving(self) -> None:
        """Raise `ConfigurationError` if these settings cannot serve traffic (checked when an
        app is built, not for `migrate`, which needs only the database)."""

    @field_validator("auth_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 32:
            raise ValueError("auth_secret must be at least 32 characters (HS256 key strength)")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("database_url must use postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value
