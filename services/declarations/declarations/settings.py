from __future__ import annotations

from managed_os.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class DeclarationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_DECLARATIONS_", extra="ignore")

    port: int = 8082
    database_url: str = "sqlite+aiosqlite:///./data/declarations.db"
