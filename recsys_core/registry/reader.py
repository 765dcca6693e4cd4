"""Read-only access to the MLflow store of one data directory.

Looking up the champion, a registered version or a run must not change anything: building a
`Tracker` creates the database and the experiment, which a cache key or a report has no
business doing. `RegistryReader` only reads; when the data
directory has no MLflow store yet it answers "none" (None, an empty list) without creating
one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_core.registry.versions import RegisteredVersion
from recsys_core.storage import Lake

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class VersionFiles:
    """A registered version named by a reference, and where its files are.

    Attributes:
        name: Registered model name.
        version: Version number.
        source: URI of the version's files (a `file:` URI, a path or a remote store).
    """

    name: str
    version: str
    source: str


class RegistryReader:
    """Reads registered versions, aliases and runs of the store under `lake.mlflow_dir`.

    Args:
        lake: The data directory whose `mlflow/mlflow.db` holds the store.
    """

    def __init__(self, lake: Lake):
        self.lake = lake
        self._client: MlflowClient | None = None

    @property
    def has_store(self) -> bool:
        """Whether the data directory has an MLflow database (nothing is created to find out)."""
        return (self.lake.mlflow_dir / "mlflow.db").is_file()

    def _mlflow(self) -> MlflowClient | None:
        """A client bound to this store (built once), or None while there is no store."""
        if self._client is None and self.has_store:
            from mlflow import MlflowClient

            uri = self.lake.tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def version_by_alias(self, registered_model: str, alias: str) -> RegisteredVersion | None:
        """The version of `registered_model` behind `alias`, or None when there is none."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        if client is None:
            return None
        try:
            mv = client.get_model_version_by_alias(registered_model, alias)
        except MlflowException:
            return None
        tags = mv.tags
        return RegisteredVersion(
            name=registered_model,
            version=str(mv.version),
            model=tags.get("model", ""),
            params=json.loads(tags.get("params", "{}")),
            metric=tags.get("metric", ""),
            metric_value=float(tags.get("metric_value", "nan")),
            run_id=tags.get("run_id", mv.run_id or ""),
        )

    def alias_version(self, registered_model: str, alias: str) -> str | None:
        """Just the version number behind `alias`, or None."""
        found = self.version_by_alias(registered_model, alias)
        return None if found is None else found.version

    def registered_versions(self, registered_model: str) -> list[str]:
        """Every registered version number of `registered_model`, oldest first."""
        client = self._mlflow()
        if client is None:
            return []
        found = client.search_model_versions(f"name='{registered_model}'")
        return sorted((str(v.version) for v in found), key=int)

    def resolve(self, reference: str) -> VersionFiles:
        """The version a `models:/NAME/VERSION` (or `/latest`, `@alias`) reference names.

        Raises:
            LookupError: No store, or the reference names no registered version; the message
                is the first line of MLflow's answer.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        client = self._mlflow()
        if client is None:
            raise LookupError(f"no MLflow store under {self.lake.mlflow_dir}")
        try:
            name, version = get_model_name_and_version(client, reference)
            found = client.get_model_version(name, version)
        except (MlflowException, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LookupError(first) from None
        return VersionFiles(name=name, version=str(version), source=found.source)

    def experiment_of_run(self, run_id: str) -> str | None:
        """The experiment id of a run, or None when the store does not have the run."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        if client is None:
            return None
        try:
            return client.get_run(run_id).info.experiment_id
        except MlflowException:
            return None

    def download(self, artifact_uri: str, dst_path: str | Path | None = None) -> Path:
        """The files at `artifact_uri` (a version's source) on the local disk: a local store's
        own folder, else a copy under `dst_path`.

        Args:
            artifact_uri: Where the files live (`file:` or a remote artifact store).
            dst_path: Where to copy remote files to.

        Raises:
            LookupError: MLflow cannot read the files (the first line of its answer).
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=artifact_uri,
                    dst_path=None if dst_path is None else str(dst_path),
                    tracking_uri=self.lake.tracking_uri,
                    registry_uri=self.lake.tracking_uri,
                )
            )
        except MlflowException as exc:
            raise LookupError(str(exc).strip().splitlines()[0] if str(exc).strip() else "") from exc
