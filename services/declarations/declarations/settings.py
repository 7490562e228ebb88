from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from managed_os.settings import ServiceSettings


class DeclarationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_DECLARATIONS_", extra="ignore")

    port: int = 8082
    database_url: str = "sqlite+aiosqlite:///./data/declarations.db"
    catalog_url: str = Field(
        "",
        description="The catalog's base URL (e.g. http://catalog:8081). When set, the release "
        "view is rebuilt from its REST API at start (bus events keep it current after that).",
    )
    bootstrap_retry_seconds: float = Field(
        10, gt=0, description="Wait between attempts while the catalog cannot be reached."
    )
