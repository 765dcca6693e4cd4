"""Train: candidates on a leakage-free split -> MLflow runs -> champion gate -> registry.

Every configured model is fitted on the training part of the split and evaluated with full
ranking on the held-out part. The current champion's model and config are always among the
candidates, so it is measured on the same validation data as its challengers tonight.

Gate: a candidate with a different model or config replaces the champion only when its
validation metric beats the champion's by more than `min_improvement`; otherwise the
champion's own config wins and the best other candidate becomes `challenger`. The winner is
refit on all events and registered; the alias `champion` then points at that refit, so
recommendations always come from a model that has seen last night's data.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from recsys_core.data.interactions import Interactions
from recsys_core.data.splits import make_split
from recsys_core.errors import InputError
from recsys_core.evaluation import evaluate
from recsys_core.models import MODELS, FitOptions, TrainingData, create
from recsys_core.pipeline.encode import embedding_matrix, encoder_id
from recsys_core.registry.artifacts import ModelBundle
from recsys_core.registry.tracking import CHALLENGER, CHAMPION, Tracker, config_key
from recsys_core.settings import Settings
from recsys_core.storage import Lake

PROTOCOL = "global_temporal"


@dataclass
class CandidateResult:
    model: str
    params: dict[str, Any]
    metrics: dict[str, float]
    fit_seconds: float
    run_id: str = ""

    @property
    def key(self) -> str:
        return config_key(self.model, self.params)


@dataclass
class TrainReport:
    metric: str
    protocol: str
    candidates: list[CandidateResult] = field(default_factory=list)
    champion: str = ""  # registered name/version
    champion_model: str = ""
    champion_metrics: dict[str, float] = field(default_factory=dict)
    decision: str = ""
    challenger: str = ""
    users: int = 0
    items: int = 0
    events: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def load_interactions(lake: Lake) -> Interactions:
    events = lake.read("events", ["user_id", "item_id", "timestamp", "value"])
    catalog = lake.read("items", ["item_id"])["item_id"]
    if events.is_empty():
        raise InputError(f"table events under {lake.root} is empty: nothing to train on")
    return Interactions.from_events(events, catalog)


def train(
    lake: Lake, settings: Settings, *, run_id: str = "", progress: bool = False
) -> TrainReport:
    """Fit, evaluate, track and register; returns what was decided and why."""
    data = load_interactions(lake)
    embeddings = embedding_matrix(lake, data.items, encoder_id(settings))
    split = make_split(data, PROTOCOL, settings.holdout_fraction)
    options = FitOptions(device=settings.device, seed=settings.seed, progress=progress)
    tracker = Tracker(lake, settings.experiment, settings.registered_model)
    champion = tracker.get(CHAMPION)
    report = TrainReport(
        metric=settings.selection_metric, protocol=PROTOCOL,
        users=data.n_users, items=data.n_items, events=len(data),
    )  # fmt: skip

    candidates: list[tuple[str, dict[str, Any]]] = []
    for name in settings.models:
        model = create(name)
        if model.uses_text and embeddings is None:
            raise InputError(
                f"model {name} needs item embeddings from encoder {encoder_id(settings)} "
                "(run `recsys encode` first)"
            )
        candidates.append((name, model.params()))
    keys = {config_key(n, p) for n, p in candidates}
    if champion is not None and champion.model in MODELS and champion.config_key not in keys:
        candidates.append((champion.model, champion.params))

    tags = {"pipeline_run": run_id, "protocol": PROTOCOL, "split": split.fingerprint()}
    with tracker.run(f"train {time.strftime('%Y-%m-%d %H:%M')}", tags=tags) as parent:
        for name, params in candidates:
            report.candidates.append(
                _fit_candidate(tracker, name, params, split, embeddings, options, settings)
            )
        winner, challenger, report.decision = _gate(
            report.candidates, champion, settings.selection_metric, settings.min_improvement
        )
        tracker.mlflow.log_dict(
            {"decision": report.decision, "candidates": [asdict(c) for c in report.candidates]},
            "candidates.json",
        )
        tracker.mlflow.set_tag("decision", report.decision)
        parent_id = parent.info.run_id

    full = TrainingData(data, embeddings)
    extra = {"pipeline_run": run_id, "parent_run": parent_id, "split": split.fingerprint()}
    registered = _refit_and_register(tracker, winner, full, options, settings, CHAMPION, extra)
    report.champion = registered.label
    report.champion_model = winner.model
    report.champion_metrics = winner.metrics
    if challenger is not None:
        report.challenger = _refit_and_register(
            tracker, challenger, full, options, settings, CHALLENGER, extra
        ).label
    else:
        tracker.clear_alias(CHALLENGER)
    return report


def _fit_candidate(
    tracker: Tracker,
    name: str,
    params: dict[str, Any],
    split,
    embeddings,
    options: FitOptions,
    settings: Settings,
) -> CandidateResult:
    model = create(name, params)
    with tracker.run(name, nested=True, tags={"model": name}) as run:
        tracker.mlflow.log_params({"model": name, **{f"param.{k}": v for k, v in params.items()}})
        tracker.mlflow.log_dict({"model": name, "params": params}, "config.json")
        start = time.perf_counter()
        epochs = model.fit(TrainingData(split.train, embeddings), options)
        seconds = time.perf_counter() - start
        tracker.log_epochs(epochs)
        metrics = evaluate(model, split, (10, 20), memory_mb=settings.score_memory_mb)
        tracker.mlflow.log_metrics({**_mlflow_names(metrics), "fit_seconds": seconds})
        return CandidateResult(name, params, metrics, round(seconds, 3), run.info.run_id)


def _gate(results, champion, metric: str, min_improvement: float):
    """Pick the winner (to be champion) and an optional challenger. See the module doc."""
    if metric not in results[0].metrics:
        raise InputError(f"selection metric {metric!r} is not computed (try ndcg@10, recall@20)")

    def best_of(pool):  # first of equals: the configured order
        return max(pool, key=lambda r: r.metrics[metric]) if pool else None

    if champion is None:
        best = best_of(results)
        return best, None, f"{best.model} is the first champion ({metric}={_f(best, metric)})"
    incumbent = next(r for r in results if r.key == champion.config_key)
    contender = best_of([r for r in results if r.key != incumbent.key])
    if contender is None:
        return incumbent, None, f"champion {incumbent.model} refreshed (no other candidates)"
    if contender.metrics[metric] > incumbent.metrics[metric] + min_improvement:
        return (
            contender,
            None,
            (
                f"{contender.model} ({metric}={_f(contender, metric)}) beats champion "
                f"{incumbent.model} ({_f(incumbent, metric)}) and replaces it"
            ),
        )
    return (
        incumbent,
        contender,
        (
            f"{contender.model} ({metric}={_f(contender, metric)}) does not beat champion "
            f"{incumbent.model} ({_f(incumbent, metric)}) by more than {min_improvement}; "
            "it becomes challenger and the champion is refreshed"
        ),
    )


def _refit_and_register(tracker, result, full, options, settings, alias, extra):
    model = create(result.model, result.params)
    model.fit(full, options)
    # the item vectors and their encoder travel with the model, so it can rank by a query
    encoder = {} if full.item_embeddings is None else {
        "encoder": encoder_id(settings), "encoder_source": settings.encoder,
        "encoder_max_length": settings.encoder_max_length,
    }  # fmt: skip
    bundle = ModelBundle.from_fit(
        model,
        full.interactions,
        {"validation": result.metrics, "alias": alias, **extra, **encoder},
        item_embeddings=full.item_embeddings,
    )
    return tracker.register(
        bundle,
        run_id=result.run_id,
        metric=settings.selection_metric,
        metric_value=result.metrics[settings.selection_metric],
        alias=alias,
        tags={"validation": json.dumps(result.metrics, sort_keys=True), **extra},
    )


def _mlflow_names(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow metric names cannot contain '@'."""
    return {name.replace("@", "_at_"): value for name, value in metrics.items()}


def _f(result: CandidateResult, metric: str) -> str:
    return f"{result.metrics[metric]:.4f}"


def candidates_table(report: TrainReport) -> pl.DataFrame:
    """One row per candidate: model, key metrics, fit time (for the CLI and artifacts)."""
    return pl.DataFrame(
        [
            {
                "model": c.model,
                **{m: round(c.metrics.get(m, float("nan")), 4)
                   for m in ("ndcg@10", "recall@10", "ndcg@20", "recall@20")},
                "fit_s": c.fit_seconds,
            }
            for c in report.candidates
        ]
    )  # fmt: skip
