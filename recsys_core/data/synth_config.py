"""What a synthetic log is made of: sizes, structure and seed.

Apart from the generator so that the `recsys synth` command can offer these options without
importing numpy and polars.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SynthConfig(BaseModel):
    """Sizes and structure of a synthetic log and catalog (see `recsys_core.data.synth`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: int = Field(1000, ge=1, description="Number of users.")
    items: int = Field(500, ge=1, description="Number of items.")
    events: int = Field(50_000, ge=0, description="Number of events.")
    clusters: int = Field(8, ge=1, description="Taste clusters.")
    taste: float = Field(
        0.8, ge=0.0, le=1.0, description="Probability that an event stays in the user's cluster."
    )
    popularity_exponent: float = Field(1.0, ge=0.0, description="Zipf exponent of item popularity.")
    min_words: int = Field(10, ge=0, description="Fewest words of an item description.")
    max_words: int = Field(300, ge=0, description="Most words of an item description.")
    days: int = Field(180, ge=1, description="Days the events span.")
    start: int = Field(1_700_000_000, description="Unix seconds of the first event.")
    seed: int = Field(0, description="Random seed.")
    duplicate_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of extra rows that repeat an earlier row exactly, as real logs do "
        "on retries.",
    )
    chunk_rows: int = Field(
        1_000_000,
        ge=1,
        description="Events generated (and held in memory) at a time; the output does not "
        "depend on it when the events fit in one chunk.",
    )

    @classmethod
    def sized(cls, events: int, *, min_words: int = 0, max_words: int = 12) -> SynthConfig:
        """A log of `events` events, about 15 per user and 30 per item, seed 0: the size the
        benchmarks' `--synthetic N` option means.

        Args:
            events: Number of events.
            min_words: Fewest words of an item description.
            max_words: Most words of an item description.
        """
        return cls(
            users=max(events // 15, 10), items=max(events // 30, 10), events=events,
            min_words=min_words, max_words=max_words, seed=0,
        )  # fmt: skip

    @model_validator(mode="after")
    def _words_in_order(self) -> SynthConfig:
        if self.min_words > self.max_words:
            raise ValueError("min_words must be at most max_words")
        return self
