from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from managed_os.settings import ServiceSettings


class ComplianceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_COMPLIANCE_", extra="ignore")

    port: int = 8084
    database_url: str = "sqlite+aiosqlite:///./data/compliance.db"
    declarations_url: str = Field(
        "",
        description="The declarations service's base URL; when set, the blueprints' item "
        "summaries are rebuilt from its REST API at start (events keep them current after).",
    )
    stale_after_hours: float = Field(
        72, gt=0, description="A device silent for longer than this is `unknown`."
    )
    consumer_batch_size: int = Field(
        5000, ge=1, le=50_000, description="Most events applied in one transaction."
    )
    consumer_members: int = Field(
        3,
        ge=1,
        le=32,
        description="Members of the consumer group this process runs (Kafka bus): each "
        "applies the batches of its own partitions, so one member's Python runs while "
        "another's batch is in PostgreSQL.",
    )
    outbox_batch_size: int = Field(
        10_000,
        ge=1,
        le=50_000,
        description="Most outbox events relayed in one transaction (a consumed batch can "
        "change thousands of states, each one event; on a busy process each pass waits on "
        "the event loop, so a pass must carry many to keep up).",
    )
    sweep_interval_seconds: float = Field(
        30, gt=0, description="How often deadlines and stale windows are checked."
    )
    sweep_batch_size: int = Field(1000, ge=1, description="Macs judged per sweep transaction.")
    snapshot_interval_seconds: float = Field(
        3600, gt=0, description="How often today's per-blueprint counts (trend) are stored."
    )
    metrics_interval_seconds: float = Field(
        15, gt=0, description="How often the devices-per-state gauges are refreshed."
    )
    inbox_retention_days: float = Field(
        7, gt=0, description="Processed event ids older than this are pruned."
    )
