"""File names: which files a source names (files, folders, globs) and their formats."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from recsys_core.errors import InputError

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")
COMPRESSION_SUFFIXES = (".gz", ".zst", ".zstd")


def expand_paths(specs: Sequence[str]) -> list[Path]:
    """Files named by `specs`: files, folders (their supported files) or globs."""
    out: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and supported(p))
            if not found:
                raise InputError(f"{spec}: folder holds no CSV, JSONL or Parquet files")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        elif any(ch in spec for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            if not found:
                raise InputError(f"{spec}: no files match")
            out.extend(p for p in found if p.is_file())
        else:
            raise InputError(f"{spec}: file not found")
    return list(dict.fromkeys(out))


def plain_name(path: Path) -> str:
    """Lower-case file name without a compression suffix."""
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def supported(path: Path) -> bool:
    """Whether `path` names a format the readers know (compressed or not)."""
    return plain_name(path).endswith(SUPPORTED_SUFFIXES)


def require_file(path: Path) -> Path:
    """`path`, or an `InputError` naming it when it is not a file."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return path
