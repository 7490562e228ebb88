from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from managed_os.settings import ConfigurationError, ServiceSettings


class DeviceChannelSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MOS_DEVICE_CHANNEL_", extra="ignore")

    port: int = 8083
    database_url: str = "sqlite+aiosqlite:///./data/device-channel.db"
    hmac_key: SecretStr = Field(
        SecretStr(""),
        description="Key of NanoMDM's -dm-send-hmac-key/-dm-recv-hmac-key: verifies "
        "X-Hmac-Signature on DDM requests and signs responses.",
    )
    allow_unsigned: bool = Field(
        False, description="Accept DDM requests without an HMAC key configured (embedded only)."
    )

    def check_serving(self) -> None:
        if not self.hmac_key.get_secret_value() and not self.allow_unsigned:
            raise ConfigurationError(
                "MOS_DEVICE_CHANNEL_HMAC_KEY is required (or set MOS_DEVICE_CHANNEL_ALLOW_UNSIGNED"
                "=true for a local embedded run)"
            )
