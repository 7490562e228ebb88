from managed_os.migrations import run_env

from compliance.models import metadata

run_env(metadata)
