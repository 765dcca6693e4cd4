"""MLflow: candidate runs, registered versions and the champion gate.

The store lives in the data directory (sqlite + artifact folder), so `make ui` shows the same
runs that the nightly wrote. Aliases: `champion` is what recommendations come from;
`challenger` is a better-than-nothing candidate that did not beat the champion.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys_core.registry.artifacts import ModelBundle, load_bundle, save_bundle
from recsys_core.registry.reader import RegistryReader
from recsys_core.registry.versions import RegisteredVersion
from recsys_core.storage import Lake

if TYPE_CHECKING:
    from mlflow.entities import Run

    from recsys_core.context import RunContext

warnings.filterwarnings("ignore", category=DeprecationWarning, module="sqlalchemy")
# the signature is given explicitly; an input example would make MLflow run the model at log time
warnings.filterwarnings("ignore", message=".*input example was not provided.*")

CHAMPION = "champion"
CHALLENGER = "challenger"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SERVING_REQUIREMENTS = (
    "torch",
    "numpy",
    "polars",
    "pyarrow",
    "scipy",
    "safetensors",
    "pandas",
    "transformers",
)  # transformers: ranking by a query encodes its text


class Tracker:
    """Every MLflow write of the pipeline, bound to one data directory: runs and what they
    log, registered versions, aliases, downloads of a version's files.

    Building one creates the store and the experiment. It sets no process-wide state: the
    client is given its URIs, runs are opened through it (not MLflow's fluent active run),
    and its reads go through `reader`, a `RegistryReader` that creates nothing. The one MLflow
    call that reads process-wide URIs, logging a pyfunc model, is confined to `register`
    (see `_mlflow_uris`).

    Args:
        lake: The data directory whose `mlflow/` folder holds the store.
        experiment: Experiment name.
        registered_model: Registered model name.
    """

    def __init__(self, lake: Lake, experiment: str, registered_model: str):
        from mlflow import MlflowClient

        lake.mlflow_dir.mkdir(parents=True, exist_ok=True)
        lake.artifact_root.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = lake.tracking_uri
        self.client = MlflowClient(tracking_uri=lake.tracking_uri, registry_uri=lake.tracking_uri)
        self.reader = RegistryReader(lake)
        self.registered_model = registered_model
        self._open_runs: list[str] = []  # ids of the runs opened by `run`, innermost last
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(
                experiment, artifact_location=lake.artifact_root.as_uri()
            )
        )

    @classmethod
    def of(cls, context: RunContext, *, experiment: str | None = None) -> Tracker:
        """The tracker of a run: its data directory, experiment and registered model.

        Args:
            context: The run.
            experiment: Another experiment than the configured one (same registered model).
        """
        tracking = context.settings.tracking
        return cls(context.lake, experiment or tracking.experiment, tracking.registered_model)

    # -- runs -----------------------------------------------------------------------------
    @contextmanager
    def run(
        self, name: str, *, nested: bool = False, tags: dict[str, str] | None = None
    ) -> Iterator[Run]:
        """Open a run for the block; the `log_*`/`set_tag` calls inside it go to this run.

        It carries the tags `mlflow.start_run` gives (user, source, git commit), ends
        FINISHED, or FAILED when the block raises.

        Args:
            name: Run name.
            nested: A child of the run open in this tracker (if any).
            tags: More tags.
        """
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        if self._open_runs and not nested:
            raise RuntimeError(f"run {self._open_runs[-1]} is open; open {name!r} nested")
        given = {**(tags or {}), MLFLOW_RUN_NAME: name}
        if nested and self._open_runs:
            given[MLFLOW_PARENT_RUN_ID] = self._open_runs[-1]
        opened = self.client.create_run(self.experiment_id, run_name=name, tags=resolve_tags(given))
        self._open_runs.append(opened.info.run_id)
        status = "FAILED"
        try:
            yield opened
            status = "FINISHED"
        finally:
            self._open_runs.pop()
            self.client.set_terminated(opened.info.run_id, status)

    @property
    def run_id(self) -> str:
        """The innermost run open in this tracker."""
        if not self._open_runs:
            raise RuntimeError("no run is open (log inside `with tracker.run(...)`)")
        return self._open_runs[-1]

    def log_params(self, params: dict[str, Any]) -> None:
        """Parameters of the open run (values as text)."""
        from mlflow.entities import Param

        self.client.log_batch(
            self.run_id, params=[Param(key, str(value)) for key, value in params.items()]
        )

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Metrics of the open run, at `step` (0 when not given)."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(key, float(value), now, step or 0) for key, value in metrics.items()],
        )

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """One metric of the open run."""
        self.log_metrics({key: value}, step=step)

    def set_tag(self, key: str, value: str) -> None:
        """A tag of the open run."""
        self.client.set_tag(self.run_id, key, value)

    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None:
        """A JSON (or YAML, by extension) file in the open run's artifacts."""
        self.client.log_dict(self.run_id, dictionary, artifact_file)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """A file in the open run's artifacts."""
        self.client.log_artifact(self.run_id, local_path, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """A folder's files in the open run's artifacts."""
        self.client.log_artifacts(self.run_id, local_dir, artifact_path)

    def artifact_uri(self, artifact_path: str) -> str:
        """Where `artifact_path` of the open run lives."""
        from mlflow.tracking.artifact_utils import get_artifact_uri

        return get_artifact_uri(self.run_id, artifact_path, tracking_uri=self.tracking_uri)

    def log_epochs(self, epochs: list[dict[str, float]]) -> None:
        """Per-epoch training metrics (losses) of the open run, one step per epoch."""
        for step, values in enumerate(epochs):
            if values:  # an epoch may have measured nothing (e.g. ALS's loss on some passes)
                self.log_metrics(mlflow_names(values), step=step)

    def log_bundle(
        self, bundle: ModelBundle, *, artifact_path: str = "model_files", max_weights_mb: int = 512
    ) -> None:
        """Log a fitted model's files to the open run: config JSON, vocabulary Parquet,
        safetensors weights and histories.

        Weights larger than `max_weights_mb` are left out, never written (tag
        `weights_logged=false`), so a nightly on a large catalog does not copy gigabytes per
        candidate.
        """
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_bundle(
                bundle, Path(tmp) / artifact_path, max_weights_bytes=max_weights_mb << 20
            )
            logged = (folder / "weights.safetensors").exists()
            self.log_artifacts(str(folder), artifact_path)
            self.set_tag("weights_logged", str(logged).lower())

    # -- registry -------------------------------------------------------------------------
    def register(
        self,
        bundle: ModelBundle,
        *,
        run_id: str,
        metric: str,
        metric_value: float,
        alias: str,
        tags: dict[str, str] | None = None,
    ) -> RegisteredVersion:
        """Log `bundle` as a pyfunc in `run_id`, register it, and point `alias` at it."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            folder = save_bundle(bundle, Path(tmp) / "bundle")
            # log_model reads the process-wide URIs and active run: set for this call only
            with _mlflow_uris(self.tracking_uri), mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_CODE),
                    artifacts={"bundle": str(folder)},
                    code_paths=[str(PACKAGE_DIR)],
                    pip_requirements=_pinned(SERVING_REQUIREMENTS),
                    registered_model_name=self.registered_model,
                    signature=_signature(),
                )
        version = str(info.registered_model_version)
        self.tag_version(
            version,
            {
                "model": bundle.model.name,
                "params": json.dumps(bundle.model.params(), sort_keys=True),
                "metric": metric,
                "metric_value": repr(float(metric_value)),
                "run_id": run_id,
                **(tags or {}),
            },
        )
        self.client.set_registered_model_alias(self.registered_model, alias, version)
        return self.get(alias)  # type: ignore[return-value]

    def register_files(
        self, source: str, *, run_id: str, description: str, model_description: str,
        tags: dict[str, str] | None = None,
    ) -> str:  # fmt: skip
        """Register the files at `source` (e.g. an artifact folder of `run_id`) as a new
        version, creating the registered model on first use; returns the version.

        Args:
            source: Artifact URI of the files.
            run_id: The run that made them.
            description: The version's description.
            model_description: The registered model's description, when it is created.
            tags: The version's tags.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.registered_model)
        except MlflowException:
            self.client.create_registered_model(
                self.registered_model, description=model_description
            )
        found = self.client.create_model_version(
            self.registered_model, source=source, run_id=run_id, tags=tags,
            description=description,
        )  # fmt: skip
        return str(found.version)

    def tag_version(self, version: str, tags: dict[str, str], *, and_its_run: bool = False) -> None:
        """Tag a registered version (and, with `and_its_run`, the run it came from).

        Args:
            version: The version of this tracker's registered model.
            tags: Tag names and values.
            and_its_run: Also set them on the version's run, when it has one.
        """
        run_id = None
        if and_its_run:
            run_id = self.client.get_model_version(self.registered_model, version).run_id
        for key, value in tags.items():
            self.client.set_model_version_tag(self.registered_model, version, key, value)
            if run_id:
                self.client.set_tag(run_id, key, value)

    def get(self, alias: str) -> RegisteredVersion | None:
        """The version behind `alias`, or None when there is none."""
        return self.reader.version_by_alias(self.registered_model, alias)

    def clear_alias(self, alias: str) -> None:
        if self.get(alias) is not None:
            self.client.delete_registered_model_alias(self.registered_model, alias)

    def load(self, alias: str = CHAMPION) -> tuple[ModelBundle, RegisteredVersion]:
        """Download the version behind `alias` and load its bundle."""
        found = self.get(alias)
        if found is None:
            raise LookupError(
                f"no {alias} version of model {self.registered_model!r} (run `recsys train` first)"
            )
        return self.load_version(found.version), found

    def load_version(self, version: str) -> ModelBundle:
        """Download one registered version (not an alias, which may move) and load its
        bundle."""
        import mlflow

        # the version's own location: a `models:/` URI would be resolved against MLflow's
        # process-wide registry URI, whatever this tracker's is
        location = self.client.get_model_version_download_uri(self.registered_model, version)
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            return load_bundle(Path(local) / "artifacts" / "bundle")


@contextmanager
def _mlflow_uris(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs (and their environment variables)
    set to `uri` for the block, then put back as they were.

    `mlflow.pyfunc.log_model` has no URI argument: it reads the process-wide ones. MLflow's
    own `_use_tracking_uri` would drop an `MLFLOW_TRACKING_URI` the user exported, and has no
    registry counterpart, hence this.
    """
    from mlflow.tracking._model_registry import utils as registry_uris
    from mlflow.tracking._tracking_service import utils as tracking_uris

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environment = {name: os.environ.get(name) for name in names}
    tracking, registry = tracking_uris._tracking_uri, registry_uris._registry_uri
    tracking_uris.set_tracking_uri(uri)
    registry_uris.set_registry_uri(uri)
    try:
        yield
    finally:
        # through the setters, which also reset what MLflow derived from the URI (tracing)
        tracking_uris.set_tracking_uri(tracking)  # type: ignore[arg-type]  # None: unset
        registry_uris.set_registry_uri(registry)  # type: ignore[arg-type]
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def mlflow_names(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow metric names cannot contain '@': `ndcg@10` is logged as `ndcg_at_10`."""
    return {name.replace("@", "_at_"): value for name, value in metrics.items()}


def _signature():
    """Input: user ids and optional query texts; params: k, query_weight; output: one row per
    (user, rank), as the published table."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id"), ColSpec("string", "query", required=False)]),
        outputs=Schema(
            [
                ColSpec("string", "user_id"),
                ColSpec("integer", "rank"),
                ColSpec("string", "item_id"),
                ColSpec("float", "score"),
                ColSpec("string", "reason_item_id", required=False),
            ]
        ),
        params=ParamSchema([ParamSpec("k", "long", 20), ParamSpec("query_weight", "double", 0.5)]),
    )


def _pinned(packages: tuple[str, ...]) -> list[str]:
    """`name==version` of each installed package, without local labels such as `+cpu`."""
    out = []
    for name in packages:
        try:
            out.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out
