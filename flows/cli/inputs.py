"""Commands about the input data: write a synthetic log and catalog, and show the rows
ingestion set aside."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.app import DataDir, app, with_options
from flows.cli.exits import guard
from flows.cli.render import render_quarantine
from recsys_core.data.synth_config import SynthConfig
from recsys_core.errors import InputError
from recsys_core.settings import DEFAULT_DATA_DIR


@app.command()
@with_options(
    "sizes", SynthConfig.model_fields, panels=dict.fromkeys(SynthConfig.model_fields, "Log")
)
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for events.* and items.*.")],
    fmt: Annotated[
        str, typer.Option("--format", help="csv, jsonl or parquet.", case_sensitive=False)
    ] = "csv",
    compression: Annotated[
        str, typer.Option("--compression", help="none, gzip or zstd (csv and jsonl).")
    ] = "none",
    *,
    sizes: dict[str, Any],
) -> None:
    """Write a synthetic log and catalog in the generic format.

    Power-law popularity, user taste clusters and item text whose words follow the clusters,
    so a model can learn from both; written in chunks, so 20M events need little memory.
    """

    def run() -> tuple[Path, Path]:
        from recsys_core.data.synth import COMPRESSIONS, FORMATS, write_synthetic

        if fmt.lower() not in FORMATS or compression.lower() not in COMPRESSIONS:
            raise InputError(
                f"--format must be one of {', '.join(FORMATS)} and --compression one of "
                f"{', '.join(COMPRESSIONS)}"
            )
        config = SynthConfig(**sizes)  # a broken rule is bad input naming the option
        try:
            return write_synthetic(
                config, out, fmt=fmt.lower(), compression=compression.lower(),
                progress=sys.stderr.isatty(),
            )  # fmt: skip
        except ValueError as exc:
            raise InputError(str(exc)) from None

    events_path, items_path = guard(run)
    typer.echo(f"wrote {events_path} and {items_path}")
    typer.echo(f"ingest with: recsys ingest --events {events_path} --items {items_path}")


@app.command()
def quarantine(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason code.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the rows ingestion set aside, newest first, with their reasons."""
    from recsys_core.api import quarantined_rows

    found = guard(lambda: quarantined_rows(data_dir, reason=reason, limit=limit))
    if as_json:
        typer.echo(
            json.dumps({"reasons": found.reasons, "rows": found.rows}, default=str, indent=2)
        )
        return
    typer.echo(render_quarantine(found, data_dir))
