from managed_os.migrations import run_env

from declarations.models import metadata

run_env(metadata)
