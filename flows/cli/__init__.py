"""`recsys`: run the nightly pipeline or one stage, and read recommendations.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, row or column, and why);
1 internal failure; 130 stopped by SIGINT (Ctrl-C) or SIGTERM (see `recsys_core.errors`). A
failed or stopped run publishes nothing.

`app` holds the commands, registered in the order `recsys --help` lists them: the pipeline's
stages (`pipeline`), published recommendations (`published`), input data (`inputs`). What
they print is built in `render`.
"""

# importing a command module registers its commands; help lists them in this order
# isort: off
from flows.cli import pipeline  # noqa: F401
from flows.cli import published  # noqa: F401
from flows.cli import inputs  # noqa: F401

# isort: on
from flows.cli.app import app, model_specs
from flows.cli.exits import main

__all__ = ["app", "main", "model_specs"]
