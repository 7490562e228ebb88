from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from managed_os.settings import ConfigurationError, ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_CATALOG_", extra="ignore")

    port: int = 8081
    database_url: str = "sqlite+aiosqlite:///./data/catalog.db"
    gdmf_url: str = Field(
        "bundled:gdmf_snapshot.json",
        description="GDMF /v2/pmv URL (https:// or file://), e.g. https://gdmf.apple.com/v2/pmv;"
        " `bundled:gdmf_snapshot.json` is the shipped snapshot. Empty disables the source.",
    )
    sofa_url: str = Field(
        "bundled:sofa_v2_snapshot.json",
        description="SOFA v2 macOS feed URL, e.g. "
        "https://sofafeed.macadmins.io/v2/macos_data_feed.json. Empty disables the source.",
    )
    sofa_v1_url: str = Field(
        "",
        description="SOFA v1 feed, tried when the v2 feed fails, e.g. "
        "https://sofafeed.macadmins.io/v1/macos_data_feed.json. Empty: no fallback.",
    )
    gdmf_interval_seconds: float = Field(
        24 * 3600, ge=60, description="Seconds between GDMF syncs (Apple asks for ≤ 1/day)."
    )
    sofa_interval_seconds: float = Field(
        6 * 3600, ge=60, description="Seconds between SOFA syncs (SOFA rebuilds about every 6 h)."
    )
    sync_on_start: bool = Field(True, description="Run the scheduler (first syncs at start).")
    scheduler_tick_seconds: float = Field(
        60, gt=0, description="How often the scheduler looks for a due source."
    )
    fetch_timeout_seconds: float = Field(30, gt=0, description="Timeout of one HTTP attempt.")
    fetch_retries: int = Field(3, ge=0, le=10, description="Retries after a failed attempt.")
    fetch_backoff_seconds: float = Field(
        2, ge=0, description="First retry delay; doubles each retry (Retry-After wins)."
    )
    fetch_backoff_max_seconds: float = Field(
        120, ge=0, description="Longest wait between attempts, Retry-After included."
    )
    retry_after_failure_seconds: float = Field(
        900,
        ge=10,
        description="After a failed scheduled sync, try again this much later "
        "(capped by the source's interval) instead of waiting a full interval.",
    )
    ca_bundle: str = Field(
        "",
        description="PEM file of CAs to trust for feed fetches (real GDMF needs Apple Root CA"
        " and Apple Server Authentication CA). Empty: the system's default store.",
    )

    def check_serving(self) -> None:
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise ConfigurationError(f"MOS_CATALOG_CA_BUNDLE {self.ca_bundle!r} is not a file")
