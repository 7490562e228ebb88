from declarations.models import metadata
from managed_os.migrations import run_env

run_env(metadata)
