from managed_os.migrations import run_env

from catalog.models import metadata

run_env(metadata)
