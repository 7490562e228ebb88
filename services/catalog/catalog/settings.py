from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from managed_os.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_CATALOG_", extra="ignore")

    port: int = 8081
    database_url: str = "sqlite+aiosqlite:///./data/catalog.db"
    gdmf_url: str = Field(
        "bundled:",
        description="GDMF /v2/pmv URL (https:// or file://); `bundled:` = the shipped snapshot.",
    )
    sync_on_start: bool = Field(True, description="Sync the feeds once at startup.")
    sync_interval_seconds: float = Field(
        6 * 3600, ge=60, description="Seconds between scheduled syncs (Apple asks ≤ daily)."
    )
    fetch_timeout_seconds: float = Field(30, gt=0, description="Timeout of one feed fetch.")
