"""Whether a compressed file is whole: a gzip or zstd stream cut short (a copy or download
that stopped midway) or damaged is found by decompressing it once, before any of its rows
is read, so a run refuses it before it writes anything."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from recsys_core.data.sources.readers.text import first_line
from recsys_core.errors import InputError

CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
# Files found whole in this process, by what identifies their bytes: the CLI's preflight and
# the ingest run both check a file, and it should be decompressed once, not twice.
_WHOLE: set[tuple[str, int, int, int]] = set()


def compression_of(path: Path) -> str | None:
    """The codec of a compressed file by its suffix (`gzip`, `zstd`), else None."""
    return CODECS.get(path.suffix.lower())


def check_complete(path: Path, block: int = 8 << 20) -> None:
    """Decompress `path` to its end when it is compressed (nothing is kept).

    pyarrow's decompressing stream checks that the stream ends where the codec says it
    ends (and gzip's checksum), and lets go of the GIL while it works. A file this process
    already found whole, unchanged since (same inode, size and modification time), is not
    read again.

    Args:
        path: The file.
        block: Bytes decompressed at a time.

    Raises:
        InputError: The compressed data is cut short or damaged (naming the file).
    """
    codec = compression_of(path)
    if codec is None:
        return
    facts = path.stat()
    key = (str(path.resolve()), facts.st_ino, facts.st_size, facts.st_mtime_ns)
    if key in _WHOLE:
        return
    try:
        with pa.input_stream(str(path), compression=codec) as stream:
            while stream.read(block):
                pass
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"{path}: cannot be read: its {codec} data is cut short or damaged "
            f"({first_line(exc)}); nothing was written"
        ) from None
    _WHOLE.add(key)
