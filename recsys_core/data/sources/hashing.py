"""One pass over a file's bytes: its content hash (what the ingest manifest remembers) and
what its text needs (UTF-8 checks, trimming)."""

from __future__ import annotations

import codecs
import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from recsys_core.data.sources.files import plain_name


@dataclass(frozen=True)
class FileFacts:
    """What one pass over a file's bytes tells: its content hash, whether its text is valid
    UTF-8 and whether it holds any space or tab (both None for compressed files, whose
    bytes say nothing about their text). Rows need no trimming or UTF-8 checks when the
    whole file is known not to need them."""

    content_hash: str
    valid_utf8: bool | None
    has_blanks: bool | None


def file_facts(path: Path, block: int = 8 << 20) -> FileFacts:
    """Hash `path` and check its UTF-8 in the same read (ASCII blocks are skipped fast).

    Args:
        path: The file.
        block: Bytes read at a time.
    """
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    # compressed and Parquet bytes are not the text itself: their rows are checked instead
    compressed = plain_name(path) != path.name.lower() or plain_name(path).endswith(".parquet")
    valid = not compressed
    blanks = False
    # the hash runs on a second thread (hashlib lets go of the GIL on large buffers) while
    # this one reads the next block and looks at its text
    with path.open("rb") as fh, ThreadPoolExecutor(1, thread_name_prefix="hash") as hasher:
        hashed: Future | None = None
        while chunk := fh.read(block):
            if hashed is not None:
                hashed.result()
            hashed = hasher.submit(digest.update, chunk)
            blanks = blanks or b" " in chunk or b"\t" in chunk
            if not valid or (chunk.isascii() and not decoder.getstate()[0]):
                continue
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                valid = False
        if hashed is not None:
            hashed.result()
    if valid:
        try:
            decoder.decode(b"", final=True)  # a file cut inside a character
        except UnicodeDecodeError:
            valid = False
    if compressed:
        return FileFacts(digest.hexdigest(), None, None)
    return FileFacts(digest.hexdigest(), valid, blanks)
