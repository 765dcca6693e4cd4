"""MLflow: candidate runs, registered versions and the champion gate.

The store lives in the data directory (sqlite + artifact folder), so `make ui` shows the same
runs that the nightly wrote. Aliases: `champion` is what recommendations come from;
`challenger` is a better-than-nothing candidate that did not beat the champion.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_core.registry.artifacts import ModelBundle, load_bundle, save_bundle
from recsys_core.registry.reader import RegistryReader
from recsys_core.registry.versions import RegisteredVersion
from recsys_core.storage import Lake

if TYPE_CHECKING:
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
    """MLflow writes bound to one data directory: runs, registered versions, aliases.

    Building one creates the store and the experiment and sets MLflow's process-wide URIs;
    its reads go through `reader`, a `RegistryReader` that does none of that.

    Args:
        lake: The data directory whose `mlflow/` folder holds the store.
        experiment: Experiment name.
        registered_model: Registered model name.
    """

    def __init__(self, lake: Lake, experiment: str, registered_model: str):
        import mlflow
        from mlflow import MlflowClient

        lake.mlflow_dir.mkdir(parents=True, exist_ok=True)
        lake.artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(lake.tracking_uri)
        mlflow.set_registry_uri(lake.tracking_uri)
        self.mlflow = mlflow
        self.client = MlflowClient(tracking_uri=lake.tracking_uri, registry_uri=lake.tracking_uri)
        self.reader = RegistryReader(lake)
        self.registered_model = registered_model
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

    @contextmanager
    def run(
        self, name: str, *, nested: bool = False, tags: dict[str, str] | None = None
    ) -> Iterator:
        with self.mlflow.start_run(
            experiment_id=self.experiment_id, run_name=name, nested=nested, tags=tags
        ) as active:
            yield active

    def log_epochs(self, epochs: list[dict[str, float]]) -> None:
        """Per-epoch training metrics (losses) of the active run, one step per epoch."""
        for step, values in enumerate(epochs):
            self.mlflow.log_metrics(mlflow_names(values), step=step)

    def log_bundle(
        self, bundle: ModelBundle, *, artifact_path: str = "model_files", max_weights_mb: int = 512
    ) -> None:
        """Log a fitted model's files to the active run: config JSON, vocabulary Parquet,
        safetensors weights and histories.

        Weights larger than `max_weights_mb` are left out (tag `weights_logged=false`), so
        a nightly on a large catalog does not copy gigabytes per candidate.
        """
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_bundle(bundle, Path(tmp) / artifact_path)
            weights = folder / "weights.safetensors"
            logged = weights.stat().st_size <= max_weights_mb << 20
            if not logged:
                weights.unlink()
            self.mlflow.log_artifacts(str(folder), artifact_path)
            self.mlflow.set_tag("weights_logged", str(logged).lower())

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
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_bundle(bundle, Path(tmp) / "bundle")
            with self.mlflow.start_run(run_id=run_id):
                info = self.mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_CODE),
                    artifacts={"bundle": str(folder)},
                    code_paths=[str(PACKAGE_DIR)],
                    pip_requirements=_pinned(SERVING_REQUIREMENTS),
                    registered_model_name=self.registered_model,
                    signature=_signature(),
                )
        version = str(info.registered_model_version)
        all_tags = {
            "model": bundle.model.name,
            "params": json.dumps(bundle.model.params(), sort_keys=True),
            "metric": metric,
            "metric_value": repr(float(metric_value)),
            "run_id": run_id,
            **(tags or {}),
        }
        for key, value in all_tags.items():
            self.client.set_model_version_tag(self.registered_model, version, key, value)
        self.client.set_registered_model_alias(self.registered_model, alias, version)
        return self.get(alias)  # type: ignore[return-value]

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
        with tempfile.TemporaryDirectory() as tmp:
            local = self.mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{self.registered_model}/{found.version}", dst_path=tmp
            )
            bundle = load_bundle(Path(local) / "artifacts" / "bundle")
        return bundle, found


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
