from managed_os.migrations import run_env

from device_channel.models import metadata

run_env(metadata)
