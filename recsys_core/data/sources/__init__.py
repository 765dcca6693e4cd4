"""Find and read behavior logs and item catalogs, streaming, as raw text columns.

Layouts (`layout.LAYOUTS`, asked in this order): a GroupLens MovieLens download
(`movielens`: ml-100k `u.data`/`u.item`, or `ratings.csv`/`movies.csv`/`tags.csv` of
ml-latest, ml-25m, ml-32m; detected from the folder), RecBole atomic files (`recbole`: the
MovieLens-100K copy bundled in the `recbole` wheel, the `movielens-100k` sample that an
empty data directory starts from) and the generic format (`generic`: CSV, TSV, JSONL or
Parquet; files, folders or globs; `.gz` and `.zst` compressed).

This package only reads: `plan_source` names the files and how to read each, `inspect` reads
a header, `read_event_batches` streams events in batches of string columns with a 1-based
`row_number` (and `extra_fields`: text found past the last column; see `batch`), and
`read_items` reads a catalog. Parsing values, checking rows and quarantining them is
`validation`'s job, and storing them is `pipeline.ingest`'s. A missing file or required
column, or a compressed file cut short, is an `InputError` naming the file (and the column);
everything else about a bad row is decided per row.

Parts: `batch` (the raw-batch format), `spec` (what a source is), `files` (file names),
`hashing` (content hashes), `layout` (the layout interface and registry) with `movielens`,
`recbole` and `generic`, `readers` (CSV, JSONL, Parquet), `headers`, `integrity` (whether a
compressed file is whole) and `planning`.
"""

# the layout modules fill the registry when imported: this order is the order of detection
# isort: off
from recsys_core.data.sources import movielens  # noqa: F401
from recsys_core.data.sources import recbole  # noqa: F401
from recsys_core.data.sources import generic  # noqa: F401

# isort: on
from recsys_core.data.sources.batch import EVENT_FIELDS, FileHeader, InputFile
from recsys_core.data.sources.files import expand_paths
from recsys_core.data.sources.hashing import FileFacts, file_facts
from recsys_core.data.sources.headers import inspect
from recsys_core.data.sources.integrity import check_complete
from recsys_core.data.sources.layout import LAYOUTS, SourceLayout, read_items
from recsys_core.data.sources.planning import plan_source, preflight
from recsys_core.data.sources.readers.events import read_event_batches
from recsys_core.data.sources.recbole import bundled_ml100k_dir
from recsys_core.data.sources.spec import SourcePlan, SourceSpec

__all__ = [
    "EVENT_FIELDS",
    "LAYOUTS",
    "FileFacts",
    "FileHeader",
    "InputFile",
    "SourceLayout",
    "SourcePlan",
    "SourceSpec",
    "bundled_ml100k_dir",
    "check_complete",
    "expand_paths",
    "file_facts",
    "inspect",
    "plan_source",
    "preflight",
    "read_event_batches",
    "read_items",
]
