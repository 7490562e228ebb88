from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from managed_os.settings import ServiceSettings


class DeclarationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_DECLARATIONS_", extra="ignore")

    port: int = 8082
    database_url: str = "sqlite+aiosqlite:///./data/declarations.db"
