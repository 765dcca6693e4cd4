"""Encoder references: a Hugging Face id, a local folder, or an MLflow registry version.

`recsys finetune-encoder` registers fine-tuned encoders as versions of the registered model
`recsys-encoder` in the data directory's MLflow store. `models:/recsys-encoder/3`,
`models:/recsys-encoder/latest` and `models:/recsys-encoder@alias` name such a version; they
resolve to the Hugging Face folder stored as that version's artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys_core.errors import InputError
from recsys_core.registry.reader import RegistryReader
from recsys_core.storage import Lake

ENCODER_REGISTRY_NAME = "recsys-encoder"
REGISTRY_PREFIX = "models:/"


@dataclass(frozen=True)
class ResolvedEncoder:
    """Where to load an encoder from, and the name its encoder id shows.

    Attributes:
        source: Local folder or Hugging Face id; None = the bundled all-MiniLM-L6-v2.
        name: Readable name (`recsys-encoder/3` for a registry version); None = derived from
            `source`.
    """

    source: str | None
    name: str | None = None


def is_registry_reference(source: str | None) -> bool:
    return bool(source) and str(source).startswith(REGISTRY_PREFIX)


def resolve_encoder(source: str | None, data_dir: str | Path) -> ResolvedEncoder:
    """Turn an encoder setting into something `ItemTextEncoder` can load.

    Args:
        source: Hugging Face id, local folder, `models:/NAME/VERSION` (or `/latest`, `@alias`)
            or None for the default encoder.
        data_dir: Data directory whose MLflow store holds registered encoders.

    Raises:
        InputError: The reference names no registered version, or its files are gone.
    """
    if not is_registry_reference(source):
        return ResolvedEncoder(source)
    lake = Lake(Path(data_dir))
    reader = RegistryReader(lake)
    if not reader.has_store:
        raise InputError(
            f"encoder {source!r}: no MLflow store under {lake.mlflow_dir} "
            "(run `recsys finetune-encoder` first)"
        )
    try:
        found = reader.resolve(str(source))
    except LookupError as exc:
        raise InputError(f"encoder {source!r} is not a registered version: {exc}") from None
    name, version = found.name, found.version
    cache = lake.root / "encoders" / "cache" / name / str(version)
    try:
        if found.source.startswith(("file:", "/")):
            folder = reader.download(found.source)
        elif (cache / "config.json").is_file():
            folder = cache
        else:  # a remote artifact store: download once, then reuse the copy
            cache.mkdir(parents=True, exist_ok=True)
            folder = reader.download(found.source, dst_path=cache)
    except (LookupError, OSError) as exc:
        raise InputError(
            f"encoder {source!r}: the files of {name} version {version} cannot be read from "
            f"{found.source}: {type(exc).__name__}"
        ) from None
    if not (folder / "config.json").is_file():
        raise InputError(
            f"encoder {source!r}: {folder} is not a Hugging Face model folder (no config.json)"
        )
    return ResolvedEncoder(str(folder), f"{name}/{version}")
