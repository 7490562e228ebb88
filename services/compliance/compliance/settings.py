from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from managed_os.settings import ServiceSettings


class ComplianceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_COMPLIANCE_", extra="ignore")

    port: int = 8084
    database_url: str = "sqlite+aiosqlite:///./data/compliance.db"
    stale_after_hours: float = Field(
        72, gt=0, description="A device silent for longer than this is `unknown`."
    )
