"""Commands that read and manage what the pipeline published: a user's recommendations,
restoring an earlier night, and forgetting a user everywhere."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli.app import DataDir, app, run_options
from flows.cli.exits import guard
from flows.cli.render import (
    recommendations_json,
    render_recommendations,
    render_restored,
    render_versions,
)
from flows.cli.runs import FlowModule, point_at_data_dir, prefect_api, start_prefect_server
from recsys_core.errors import EXIT_BAD_INPUT
from recsys_core.settings import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from flows import privacy as privacy_flows
else:  # run on first use, after PREFECT_HOME points at the data directory
    privacy_flows = FlowModule("flows.privacy")


@app.command()
@run_options("recs")
def recs(
    user_id: Annotated[str, typer.Argument(help="External user id.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    k: Annotated[int, typer.Option("--k", min=1, help="How many to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the history item behind each one.")
    ] = False,
    query: Annotated[
        str | None,
        typer.Option(
            "--query", help="Rank live by a blend of this text's relevance and the model score."
        ),
    ] = None,
    *,
    options: dict[str, Any],
) -> None:
    """Show a user's recommendations: the published ones, or live ones for a --query."""

    def run():
        from recsys_core.api import user_recommendations

        if query is not None:  # loading the champion from MLflow: no progress bars
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return user_recommendations(
            data_dir, user_id, k=k, query=query, query_weight=options.get("query_weight")
        )

    frame = guard(run)
    if as_json:
        payload = recommendations_json(frame, user_id, query=query, explain=explain)
        typer.echo(json.dumps(payload, default=str, indent=2))
        return
    typer.echo(render_recommendations(frame, user_id, query=query, explain=explain))


@app.command()
def rollback(
    to: Annotated[
        int | None, typer.Option("--to", min=0, help="The recommendations version to restore.")
    ] = None,
    list_versions: Annotated[
        bool, typer.Option("--list", help="List the versions that can be restored.")
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Restore an earlier night of recommendations (one new commit), or --list versions."""
    from recsys_core import api

    if list_versions or to is None:
        typer.echo(render_versions(guard(lambda: api.recommendation_versions(data_dir))))
        if to is None and not list_versions:
            typer.echo("restore one with: recsys rollback --to VERSION", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    typer.echo(render_restored(guard(lambda: api.restore_recommendations(data_dir, to))))


@app.command("forget-user")
def forget_user(
    user_id: Annotated[str, typer.Argument(help="External user id to forget.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user's data everywhere, including old table versions (no rollback past it).

    The id is not kept by Prefect or the logs: nothing under the data directory holds it
    afterwards.
    """
    if not yes:
        if not sys.stdin.isatty():
            typer.echo("error: forget-user: no terminal to confirm on; pass --yes", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        confirmed = typer.confirm(
            f"Forget user {user_id!r}: delete their rows and every older version of the "
            "events, recommendations and quarantine tables?"
        )
        if not confirmed:
            typer.echo("error: forget-user: not confirmed; nothing was deleted", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)

    def run() -> dict:
        point_at_data_dir(data_dir)
        server = start_prefect_server()  # while the flows are imported
        from pydantic import SecretStr

        from flows.params import DataOptions

        flow = privacy_flows.forget_user_flow  # imports the flows while the server starts
        with prefect_api(server):
            # a SecretStr parameter is stored by Prefect as '**********'
            return flow(user_id=SecretStr(user_id), options=DataOptions(data_dir=str(data_dir)))

    typer.echo(json.dumps({"user_id": user_id, **guard(run)}, indent=2, default=str))
