"""Synthetic logs and catalogs in the generic format, with structure a model can find.

- Popularity follows a power law (Zipf exponent `popularity_exponent`).
- Each user has a taste cluster and picks items from it with probability `taste`.
- Each item belongs to a cluster, and its title and description draw words from that
  cluster's vocabulary, so the text carries the same signal as the behavior.

Events are generated and written in time-ordered chunks, so memory stays bounded by the
chunk size (not the number of events): 20M events need a few hundred MB at most.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys_core.data.synth_config import SynthConfig

TOPICS: dict[str, tuple[str, ...]] = {
    "space": ("galaxy", "starship", "alien", "orbit", "planet", "astronaut", "nebula", "rocket",
              "cosmic", "asteroid", "interstellar", "moon", "launch", "station", "warp"),
    "romance": ("love", "wedding", "heart", "kiss", "romantic", "couple", "passion", "date",
                "bride", "affair", "sweetheart", "valentine", "embrace", "longing", "tender"),
    "cooking": ("recipe", "kitchen", "chef", "flavor", "bake", "spice", "dinner", "oven",
                "sauce", "pastry", "grill", "taste", "menu", "dessert", "herb"),
    "sports": ("team", "goal", "championship", "coach", "stadium", "league", "match", "score",
               "player", "season", "tournament", "victory", "training", "athlete", "referee"),
    "finance": ("market", "stock", "investor", "bank", "profit", "trading", "economy", "fund",
                "interest", "dividend", "portfolio", "budget", "credit", "inflation", "asset"),
    "horror": ("ghost", "haunted", "blood", "scream", "monster", "nightmare", "curse", "zombie",
               "demon", "fear", "creepy", "graveyard", "vampire", "shadow", "terror"),
    "travel": ("journey", "island", "beach", "passport", "mountain", "hotel", "voyage", "map",
               "adventure", "tourist", "flight", "desert", "explore", "harbor", "trail"),
    "music": ("guitar", "song", "band", "concert", "melody", "drum", "album", "singer",
              "rhythm", "piano", "orchestra", "lyrics", "jazz", "chorus", "tour"),
}  # fmt: skip
COMMON = (
    "the", "story", "new", "great", "life", "world", "people", "day", "best", "old",
    "about", "classic", "tale", "series", "edition", "collection", "guide", "volume",
)  # fmt: skip
FORMATS = ("csv", "jsonl", "parquet")
COMPRESSIONS = ("none", "gzip", "zstd")
COMPRESSED_SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}


def synth_items(config: SynthConfig) -> pl.DataFrame:
    """Catalog rows: item_id, title, description, categories; cluster-specific words."""
    rng = np.random.default_rng(config.seed + 1)
    topics = list(TOPICS)
    clusters = np.arange(config.items) % config.clusters
    lengths = rng.integers(config.min_words, config.max_words + 1, size=config.items)
    titles, descriptions, categories = [], [], []
    for i in range(config.items):
        c = int(clusters[i])
        words = TOPICS[topics[c % len(topics)]]
        topic_draw = rng.choice(words, size=lengths[i])
        common_draw = rng.choice(COMMON, size=lengths[i])
        own = rng.random(lengths[i]) < 0.7
        descriptions.append(" ".join(np.where(own, topic_draw, common_draw)))
        titles.append(f"{' '.join(rng.choice(words, size=2)).title()} {i}")
        categories.append(f"{topics[c % len(topics)]}-{c}")
    return pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(config.items)],
            "title": titles,
            "description": descriptions,
            "categories": categories,
        }
    )


def iter_event_chunks(config: SynthConfig) -> Iterator[pl.DataFrame]:
    """Event rows in time order, `config.chunk_rows` at a time.

    Each chunk covers its own slice of the time range, so the concatenation is sorted by
    timestamp without ever holding all events.

    Args:
        config: Sizes, structure and seed.

    Yields:
        Frames with user_id, item_id, timestamp (unix seconds), event_type, value.
    """
    rng = np.random.default_rng(config.seed)
    item_cluster = np.arange(config.items) % config.clusters
    popularity = 1.0 / np.arange(1, config.items + 1) ** config.popularity_exponent
    popularity = popularity[rng.permutation(config.items)]
    user_cluster = rng.integers(0, config.clusters, size=config.users)
    activity = 1.0 / np.arange(1, config.users + 1) ** 0.5
    activity = activity[rng.permutation(config.users)]
    members = [np.flatnonzero(item_cluster == c) for c in range(config.clusters)]
    weights = [popularity[m] / popularity[m].sum() for m in members]
    span = config.days * 86_400
    n_chunks = max(1, -(-config.events // config.chunk_rows))
    for chunk in range(n_chunks):
        n = config.events * (chunk + 1) // n_chunks - config.events * chunk // n_chunks
        t0 = span * chunk // n_chunks
        t1 = span * (chunk + 1) // n_chunks
        users = rng.choice(config.users, size=n, p=activity / activity.sum())
        stay = rng.random(n) < config.taste
        cluster = np.where(stay, user_cluster[users], rng.integers(0, config.clusters, size=n))
        items = np.empty(n, dtype=np.int64)
        for c in range(config.clusters):
            where = np.flatnonzero(cluster == c)
            if len(members[c]) == 0 or len(where) == 0:
                continue
            items[where] = rng.choice(members[c], size=len(where), p=weights[c])
        timestamps = config.start + t0 + rng.integers(0, max(1, t1 - t0), size=n)
        kinds = rng.choice(np.array(["view", "click", "purchase"]), size=n, p=[0.7, 0.25, 0.05])
        frame = pl.DataFrame(
            {
                "user_id": pl.Series(users).cast(pl.String).str.replace(r"^", "u"),
                "item_id": pl.Series(items).cast(pl.String).str.replace(r"^", "i"),
                "timestamp": timestamps,
                "event_type": kinds,
                "value": np.ones(n),
            }
        )
        if config.duplicate_fraction > 0 and n:
            repeats = rng.integers(0, n, size=int(n * config.duplicate_fraction))
            frame = pl.concat([frame, frame[repeats]])
        yield frame.sort("timestamp")


def synth_events(config: SynthConfig) -> pl.DataFrame:
    """All event rows in one frame (for small configs; `write_synthetic` streams)."""
    return pl.concat(list(iter_event_chunks(config)))


def write_synthetic(
    config: SynthConfig,
    out: Path,
    *,
    fmt: str = "csv",
    compression: str = "none",
    progress: bool = False,
) -> tuple[Path, Path]:
    """Write `events.<fmt>` and `items.<fmt>` under `out`, chunk by chunk.

    Args:
        config: Sizes, structure and seed.
        out: Output folder (created).
        fmt: `csv`, `jsonl` or `parquet`.
        compression: `none`, `gzip` or `zstd` (csv and jsonl only; the files get a `.gz` or
            `.zst` suffix). Parquet is always zstd-compressed inside.
        progress: Show a progress bar over event chunks.

    Returns:
        The events and items paths.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    if fmt == "parquet" and compression != "none":
        raise ValueError("parquet files are compressed inside; use compression 'none'")
    out.mkdir(parents=True, exist_ok=True)
    suffix = COMPRESSED_SUFFIX[compression]
    events_path, items_path = out / f"events.{fmt}{suffix}", out / f"items.{fmt}{suffix}"
    chunks = iter_event_chunks(config)
    total = max(1, -(-config.events // config.chunk_rows))
    chunks = tqdm(chunks, total=total, desc="events", unit="chunk", disable=not progress)
    if fmt == "parquet":
        writer: pq.ParquetWriter | None = None
        try:
            for frame in chunks:
                table = frame.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(events_path, table.schema, compression="zstd")
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        synth_items(config).write_parquet(items_path)
        return events_path, items_path
    with _open_output(events_path, compression) as fh:
        for i, frame in enumerate(chunks):
            _write_text(frame, fh, fmt, header=i == 0)
    with _open_output(items_path, compression) as fh:
        _write_text(synth_items(config), fh, fmt, header=True)
    return events_path, items_path


def _write_text(frame: pl.DataFrame, fh: IO[bytes], fmt: str, *, header: bool) -> None:
    if fmt == "csv":
        fh.write(frame.write_csv(include_header=header).encode())
    else:
        fh.write(frame.write_ndjson().encode())


@contextlib.contextmanager
def _open_output(path: Path, compression: str) -> Iterator[IO[bytes]]:
    """A binary stream that compresses on the fly (pyarrow's codecs: no extra dependency)."""
    if compression == "none":
        with path.open("wb") as fh:
            yield fh
        return
    with pa.CompressedOutputStream(str(path), compression) as fh:
        yield fh
