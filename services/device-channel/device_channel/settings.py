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

    declarations_url: str = Field(
        "",
        description="The declarations service's base URL; when set, the policy view is "
        "rebuilt from its REST API at start (events keep it current after that).",
    )
    mdm_url: str = Field(
        "",
        description="MDM server base URL for pushes (NanoMDM: its API, e.g. http://nanomdm:9000);"
        " empty: no pushes are sent (Macs pick changes up at their next sync).",
    )
    mdm_api_user: str = Field("nanomdm", description="Basic-auth user of the enqueue API.")
    mdm_api_key: SecretStr = Field(SecretStr(""), description="Basic-auth password (API key).")
    push_batch_size: int = Field(100, ge=1, le=1000, description="Enrollment ids per enqueue.")
    push_concurrency: int = Field(4, ge=1, le=64, description="Enqueue requests in flight.")
    push_interval_seconds: float = Field(1.0, gt=0, description="How often the queue is read.")
    push_lease_seconds: float = Field(
        60, gt=0, description="A claimed push is retried after this long if its sender died."
    )

    sync_cache_size: int = Field(
        100_000,
        ge=0,
        description="Devices whose sync data (blueprint, facts, manifest timestamp) this process "
        "keeps in memory, least recently used first out (about 1.3 KB each); 0 disables the cache.",
    )
    sync_cache_warm: bool = Field(
        True,
        description="Fill the sync cache at start with the most recently updated devices.",
    )

    status_batch_size: int = Field(
        64,
        ge=1,
        le=1000,
        description="Most status reports committed in one transaction: reports arriving while "
        "one commits share the next (each still answered only once committed); 1 commits each "
        "on its own.",
    )

    def check_serving(self) -> None:
        if not self.hmac_key.get_secret_value() and not self.allow_unsigned:
            raise ConfigurationError(
                "MOS_DEVICE_CHANNEL_HMAC_KEY is required (or set MOS_DEVICE_CHANNEL_ALLOW_UNSIGNED"
                "=true for a local embedded run)"
            )
