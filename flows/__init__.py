"""Prefect flows and the `recsys` CLI.

Import `flows.cli` freely; the flow modules import Prefect, so the CLI imports them only
after it has pointed PREFECT_HOME at the data directory.
"""

import recsys_core  # noqa: F401  (offline defaults before Prefect reads its settings)
