"""Prefect flows and the `recsys` CLI.

Import `flows.cli` freely; the flow modules import Prefect, so the CLI binds them at import
without running them (`flows.cli.runs.FlowModule`) and runs them only after it has pointed
PREFECT_HOME at the data directory.
"""

import recsys_core  # noqa: F401  (offline defaults before Prefect reads its settings)
