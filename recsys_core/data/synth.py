"""Synthetic logs and catalogs in the generic format, with structure a model can find.

- Popularity follows a power law (Zipf exponent `popularity_exponent`).
- Each user has a taste cluster and picks items from it with probability `taste`.
- Each item belongs to a cluster, and its title and description draw words from that
  cluster's vocabulary, so the text carries the same signal as the behavior.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

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


@dataclass(frozen=True)
class SynthConfig:
    users: int = 1000
    items: int = 500
    events: int = 50_000
    clusters: int = 8
    taste: float = 0.8  # probability that an event stays in the user's cluster
    popularity_exponent: float = 1.0
    min_words: int = 10
    max_words: int = 300
    days: int = 180
    start: int = 1_700_000_000  # unix seconds of the first event
    seed: int = 0


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


def synth_events(config: SynthConfig) -> pl.DataFrame:
    """Event rows: user_id, item_id, timestamp (unix seconds), event_type, value."""
    rng = np.random.default_rng(config.seed)
    n = config.events
    item_cluster = np.arange(config.items) % config.clusters
    popularity = 1.0 / np.arange(1, config.items + 1) ** config.popularity_exponent
    popularity = popularity[rng.permutation(config.items)]
    user_cluster = rng.integers(0, config.clusters, size=config.users)
    activity = 1.0 / np.arange(1, config.users + 1) ** 0.5
    activity = activity[rng.permutation(config.users)]
    users = rng.choice(config.users, size=n, p=activity / activity.sum())
    stay = rng.random(n) < config.taste
    cluster = np.where(stay, user_cluster[users], rng.integers(0, config.clusters, size=n))
    items = np.empty(n, dtype=np.int64)
    for c in range(config.clusters):
        members = np.flatnonzero(item_cluster == c)
        where = np.flatnonzero(cluster == c)
        if len(members) == 0 or len(where) == 0:
            continue
        weights = popularity[members] / popularity[members].sum()
        items[where] = rng.choice(members, size=len(where), p=weights)
    timestamps = config.start + rng.integers(0, config.days * 86_400, size=n)
    kinds = rng.choice(np.array(["view", "click", "purchase"]), size=n, p=[0.7, 0.25, 0.05])
    return pl.DataFrame(
        {
            "user_id": pl.Series(users).cast(pl.String).str.replace(r"^", "u"),
            "item_id": pl.Series(items).cast(pl.String).str.replace(r"^", "i"),
            "timestamp": timestamps,
            "event_type": kinds,
            "value": np.ones(n),
        }
    ).sort("timestamp")


def write_synthetic(config: SynthConfig, out: Path, *, fmt: str = "csv") -> tuple[Path, Path]:
    """Write `events.<fmt>` and `items.<fmt>` under `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    events, items = synth_events(config), synth_items(config)
    writers = {
        "csv": lambda df, p: df.write_csv(p),
        "parquet": lambda df, p: df.write_parquet(p),
        "jsonl": lambda df, p: df.write_ndjson(p),
    }
    if fmt not in writers:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(writers)}")
    paths = out / f"events.{fmt}", out / f"items.{fmt}"
    writers[fmt](events, paths[0])
    writers[fmt](items, paths[1])
    return paths
