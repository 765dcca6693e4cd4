"""Train: candidates on a leakage-free split -> MLflow runs -> champion gate -> registry.

Every configured model is fitted on the training part of the split and evaluated with full
ranking on the held-out part. The current champion's model and config are always among the
candidates, so it is measured on the same validation data as its challengers tonight.

Gate: a candidate with a different model or config replaces the champion only when its
validation metric beats the champion's by more than `min_improvement`; otherwise the
champion's own config wins and the best other candidate becomes `challenger`. The winner is
refit on all events and registered; the alias `champion` then points at that refit, so
recommendations always come from a model that has seen last night's data.

Each candidate is one nested MLflow run: parameters, per-epoch training metrics, final
validation metrics, and its fitted files (config JSON, vocabulary Parquet, safetensors
weights). The parent run holds a PNG comparing the candidates and the decision.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch

from recsys_core.cancel import raise_if_stopped
from recsys_core.context import RunContext
from recsys_core.data.interactions import Interactions
from recsys_core.data.splits import DEFAULT_FRACTIONS, Split, check_protocol, make_split
from recsys_core.errors import InputError
from recsys_core.evaluation import evaluate
from recsys_core.evaluation.evaluate import ChunkMap
from recsys_core.models import FitOptions, Recommender, TrainingData, create, registered
from recsys_core.models.blend import DEFAULT_MEMBERS
from recsys_core.models.registry import ModelSpec, parse_spec
from recsys_core.models.sasrec import budgeted
from recsys_core.models.training import fit_shared, shared_fits
from recsys_core.pipeline.encode import embedding_matrix, encoder_id
from recsys_core.pipeline.fingerprints import stage_fingerprint
from recsys_core.progress import Progress
from recsys_core.registry.artifacts import ModelBundle, comparison_png
from recsys_core.registry.tracking import CHALLENGER, CHAMPION, Tracker, mlflow_names
from recsys_core.registry.versions import RegisteredVersion, config_key
from recsys_core.settings import Settings
from recsys_core.storage import Lake

KS = (10, 20)
INPUT_TABLES = ("events", "items", "item_embeddings")  # what training reads
INPUT_SETTINGS = ("compute", "embedding", "train", "tracking")  # the settings groups it reads


def train_inputs(context: RunContext) -> str:
    """Fingerprint of what training reads: its tables, its settings groups and the code
    version.

    Equal fingerprints mean a finished training run would produce the same report, so a
    repeated nightly can take it from the cache.
    """
    return stage_fingerprint("train", context, INPUT_TABLES, INPUT_SETTINGS)


@dataclass
class CandidateResult:
    model: str
    params: dict[str, Any]
    metrics: dict[str, float]
    fit_seconds: float
    run_id: str = ""
    epochs: list[dict[str, float]] = field(default_factory=list)
    role: str = ""  # "champion" or "challenger" when the gate picked it

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
    challenger_model: str = ""
    users: int = 0
    items: int = 0
    events: int = 0
    test_users: int = 0
    evaluated_users: int = 0  # test users ranked per candidate (a sample above eval_users)
    # default candidates (and blend members) that were replaced or did not train, and why
    left_out: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def load_interactions(lake: Lake) -> Interactions:
    events = lake.read("events", ["user_id", "item_id", "timestamp", "value"])
    catalog = lake.read("items", ["item_id"])["item_id"]
    if events.is_empty():
        raise InputError(f"table events under {lake.root} is empty: nothing to train on")
    return Interactions.from_events(events, catalog)


def _holdout(settings: Settings, protocol: str) -> float | None:
    """The test fraction: the setting when given explicitly, else the protocol's usual one."""
    if "holdout_fraction" in settings.train.model_fields_set:
        return settings.train.holdout_fraction
    return DEFAULT_FRACTIONS.get(protocol)


# the sequential model joins where the newest few items carry the signal: histories that are
# ordered and short. On long, dense histories (MovieLens: a median of 65 ratings) the item-item
# models already see the user's taste, and the transformer costs several times more there.
SHORT_HISTORY = 30


def ordered_histories(data: Interactions) -> bool:
    """Whether users' histories carry an order a sequential model can read and pays on:
    most users have at least 3 items, most of those met their items at mostly distinct
    times, and the median history is short (at most `SHORT_HISTORY` items).

    Args:
        data: The training events.
    """
    per_user = data.frame.group_by("user_index").agg(
        items=pl.col("item_index").n_unique(), times=pl.col("timestamp").n_unique()
    )
    several = per_user.filter(pl.col("items") >= 3)
    if several.height < 0.5 * max(per_user.height, 1):
        return False
    if float(per_user["items"].median()) > SHORT_HISTORY:
        return False
    return float((several["times"] >= 0.5 * several["items"]).mean()) >= 0.5


def _adapted_defaults(
    specs: list[ModelSpec], data: Interactions, embeddings: torch.Tensor | None
) -> tuple[list[ModelSpec], list[str]]:
    """The default candidates for this data, and a note per addition.

    When items have text and histories are ordered, the text-fused sequential model joins
    the candidates, sized to its CPU budget for this log (`sasrec.budgeted`), and joins the
    default blend's members with the text similarity to the user's last item.
    """
    if embeddings is None or not ordered_histories(data):
        return specs, []
    params = budgeted(len(data), data.n_items, data.n_users)
    if params is None:
        return specs, [f"sasrec: {len(data)} events exceed its CPU budget; left out"]
    sequential = ModelSpec("sasrec", params)
    last_item = "content(learned=false, half_life=0.5, whiten=1.0)"  # text cosine, newest item
    blend = ModelSpec("blend")  # the default blend, its members adapted here
    out = [s for s in specs if s != blend] + [sequential]
    if blend in specs:
        members = [*DEFAULT_MEMBERS, str(sequential), last_item, "content(whiten=1.0)"]
        out.append(ModelSpec("blend", {"members": members}))
    return out, [f"items have text and histories are ordered: {sequential} joins"]


def _candidate_configs(
    context: RunContext, embeddings, data: Interactions
) -> tuple[list[ModelSpec], list[str]]:
    """The full spec (every parameter) of each candidate, checked before any fit, and notes.

    The `models` setting is parsed here, once; the specs then travel to the fits as they are.
    Requested models (`--models`, RECSYS_MODELS) are refused with exit code 2 when they need
    item embeddings that are missing or more memory than the catalog allows. The default
    candidates adapt instead: the text-fused sequential model joins them where items have
    text and histories are ordered, a model too large for the catalog is replaced by its
    sparse stand-in or left out, and each change is noted for the report.
    """
    settings = context.settings
    requested = "models" in settings.train.model_fields_set
    budget = settings.train.memory_budget_bytes()
    n_items = data.n_items
    configs: list[ModelSpec] = []
    notes: list[str] = []
    specs = [ModelSpec.parse(text) for text in settings.train.models]
    if not requested:
        specs, notes = _adapted_defaults(specs, data, embeddings)
    for spec in specs:
        model = spec.create()
        if requested:
            problem = model.size_problem(n_items, budget)
            if problem is not None:
                raise InputError(f"{problem}; choose another model")
        else:
            model, changes = model.adapted(n_items, budget)
            notes += changes
            if model is None:
                continue
        if model.uses_text and embeddings is None:
            raise InputError(
                f"model {spec} needs item embeddings from encoder {encoder_id(context)} "
                "(run `recsys encode` first)"
            )
        config = ModelSpec.of(model)
        if _key(config) not in {_key(c) for c in configs}:
            configs.append(config)
    if not configs:
        raise InputError(
            "no candidate models configured (set --models or RECSYS_MODELS)"
            + (f"; {'; '.join(notes)}" if notes else "")
        )
    return configs, notes


def _key(spec: ModelSpec) -> str:
    return config_key(spec.name, spec.params)


@dataclass
class Candidates:
    """What training and evaluation share: the data, its split, the candidates to fit.

    Attributes:
        data: Every event, in index space.
        embeddings: (items, D) item text vectors aligned with `data`'s items; None when not
            encoded.
        specs: The candidates, each with its full config.
        split: The leakage-free split they are fitted and judged on.
        options: Run-level fit options (device, seed, progress, validation protocol).
        report: The report being filled in.
    """

    data: Interactions
    embeddings: torch.Tensor | None
    specs: list[ModelSpec]
    split: Split
    options: FitOptions
    report: TrainReport


@dataclass
class Night:
    """The shared state of one training (or evaluation) run, handed to each step.

    Attributes:
        context: The data directory and its settings.
        tracker: Where runs, files and registered versions go.
        work: The data, split and candidates.
        say: Called with a line as each step starts and ends.
        map_chunks: Where evaluation ranks its chunks of test users; None = here.
        fitted: The candidates' fitted models, by config key.
    """

    context: RunContext
    tracker: Tracker
    work: Candidates
    say: Callable[[str], None]
    map_chunks: ChunkMap | None = None
    # each candidate's model fitted on the training part, by config key, until the gate
    # keeps the winner's and challenger's for their refits (`Recommender.refit`)
    fitted: dict[str, Recommender] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def report(self) -> TrainReport:
        return self.work.report

    def everything(self) -> TrainingData:
        """All events with the item vectors: what the winner is refit on."""
        return TrainingData(self.work.data, self.work.embeddings)


def train(
    context: RunContext,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    map_chunks: ChunkMap | None = None,
) -> TrainReport:
    """Fit, evaluate, track and register; returns what was decided and why.

    A candidate whose fit or evaluation fails is left out (its MLflow run is marked failed,
    the report names it and the error); the run fails only when no candidate trained. Each
    config is fitted once per data part (`shared_fits`): the candidates, the blend's members
    while it tunes and refits, and the refits on all events share their fits.

    Args:
        context: The data directory; its settings give the candidates, protocol, gate and
            memory budget; its run id is recorded with the MLflow runs and registered
            versions.
        progress: Show progress bars.
        log: Called with a line as each candidate starts and ends.
        map_chunks: Where evaluation ranks its chunks of test users (e.g. Dask workers);
            None = here.
    """
    protocol = _champion_protocol(context.settings)
    say = log or _quiet
    work = _split_and_candidates(context, protocol, progress, say)
    night = Night(context, Tracker.of(context), work, say, map_chunks)
    champion, note = _champion_to_measure(night)
    with shared_fits():
        winner, challenger, parent_id = _measure_and_decide(night, champion, note)
        _refit_winners(night, winner, challenger, parent_id)
    return work.report


def _quiet(line: str) -> None:
    """Says nothing (no `log` given)."""


def _champion_protocol(settings: Settings) -> str:
    """The configured protocol, refused when it cannot pick a champion."""
    protocol = check_protocol(settings.train.protocol)
    if protocol == "cold_items":
        raise InputError(
            "protocol cold_items ranks held-out items only and cannot pick a champion; "
            "use it with `recsys evaluate` (champion protocols: user_temporal, "
            "global_temporal, leave_one_out, user_random)"
        )
    return protocol


def _champion_to_measure(night: Night) -> tuple[RegisteredVersion | None, str]:
    """Today's champion, added to the candidates so it is measured on tonight's split; None
    (and a note why) when it cannot be re-measured."""
    champion = night.tracker.get(CHAMPION)
    if champion is None:
        return None, ""
    try:
        model = create(champion.model, champion.params)
        problem = model.size_problem(night.report.items, night.settings.train.memory_budget_bytes())
        if problem is not None:
            raise InputError(problem)
    except InputError as exc:  # a model or parameter that no longer exists; too large
        return None, f"champion {champion.label} cannot be re-measured ({exc}); "
    # its config with every parameter this release knows: options added since it was
    # registered take their defaults, so tonight's candidate of the same config has its key
    champion = dataclasses.replace(champion, params=ModelSpec.of(model).params)
    if champion.config_key not in {_key(s) for s in night.work.specs}:
        night.work.specs.append(ModelSpec(champion.model, champion.params))
    return champion, ""


def _measure_and_decide(
    night: Night, champion: RegisteredVersion | None, note: str
) -> tuple[CandidateResult, CandidateResult | None, str]:
    """Fit and evaluate the candidates in one parent MLflow run, then gate them.

    Returns the winner (to be champion), the challenger (or None) and the parent run's id.
    """
    settings, report, split = night.settings, night.report, night.work.split
    tags = {"pipeline_run": night.context.run_id, "protocol": report.protocol,
            "split": split.fingerprint()}  # fmt: skip
    with night.tracker.run(f"train {time.strftime('%Y-%m-%d %H:%M')}", tags=tags) as parent:
        _fit_candidates(night)
        if champion is not None and champion.config_key not in {c.key for c in report.candidates}:
            note += f"champion {champion.label} did not train tonight; "
            champion = None
        winner, challenger, decision = _gate(
            report.candidates, champion, settings.train.selection_metric,
            settings.train.min_improvement,
        )  # fmt: skip
        report.decision = note + decision
        kept = {winner.key, challenger.key if challenger is not None else None}
        night.fitted = {k: m for k, m in night.fitted.items() if k in kept}
        winner.role = CHAMPION
        if challenger is not None:
            challenger.role = CHALLENGER
        _log_comparison(night.tracker, report, winner, challenger)
        return winner, challenger, parent.info.run_id


def _refit_winners(
    night: Night, winner: CandidateResult, challenger: CandidateResult | None, parent_id: str
) -> None:
    """Refit the winner (and challenger) on all events, register them and move the aliases."""
    report, split = night.report, night.work.split
    extra = {"pipeline_run": night.context.run_id, "parent_run": parent_id,
             "split": split.fingerprint()}  # fmt: skip
    night.say(f"refitting {candidate_label(asdict(winner))} on all {report.events} events")
    with Progress(
        "train", 0, heartbeat=True, expected=winner.fit_seconds, step=f"refitting {winner.model}"
    ):
        report.champion = _refit_and_register(night, winner, CHAMPION, extra).label
    report.champion_model = winner.model
    report.champion_metrics = winner.metrics
    if challenger is not None:
        report.challenger = _refit_and_register(night, challenger, CHALLENGER, extra).label
        report.challenger_model = challenger.model
    else:
        night.tracker.clear_alias(CHALLENGER)


def evaluate_models(
    context: RunContext,
    *,
    protocol: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainReport:
    """Fit and evaluate every configured model on one protocol; registers nothing.

    Runs are logged to the MLflow experiment `<experiment>-evaluation`, apart from the
    nightly's training runs.

    Args:
        context: The data directory; its settings give the models, seed, metric and memory
            budget.
        protocol: Any protocol of `recsys_core.data.splits.PROTOCOLS`; default the setting.
        progress: Show progress bars.
        log: Called with a line as each candidate starts and ends.
    """
    settings = context.settings
    protocol = check_protocol(protocol or settings.train.protocol)
    say = log or _quiet
    work = _split_and_candidates(context, protocol, progress, say)
    report = work.report
    tracker = Tracker.of(context, experiment=f"{settings.tracking.experiment}-evaluation")
    night = Night(context, tracker, work, say)
    tags = {"protocol": protocol, "split": work.split.fingerprint()}
    with tracker.run(f"evaluate {protocol} {time.strftime('%Y-%m-%d %H:%M')}", tags=tags):
        with shared_fits():
            _fit_candidates(night, log_files=False, keep=False)
        metric = settings.train.selection_metric
        if metric not in report.candidates[0].metrics:
            raise InputError(f"selection metric {metric!r} is not computed")
        best = max(report.candidates, key=lambda c: c.metrics[metric])
        report.decision = (
            f"best on {protocol}: {best.model} ({metric}={best.metrics[metric]:.4f}); "
            "nothing registered"
        )
        _log_comparison(tracker, report, best, None)
    return report


def _split_and_candidates(
    context: RunContext, protocol: str, progress: bool, say: Callable[[str], None]
) -> Candidates:
    """What training and evaluation share: the data, its split, the candidates to fit."""
    lake, settings = context.lake, context.settings
    data = load_interactions(lake)
    embeddings = embedding_matrix(lake, data.items, encoder_id(context))
    candidates, left_out = _candidate_configs(context, embeddings, data)
    for note in left_out:
        say(note)
    split = judged_items(
        make_split(data, protocol, _holdout(settings, protocol), seed=settings.compute.seed), data
    )
    options = FitOptions(
        device=settings.compute.device, seed=settings.compute.seed, progress=progress,
        validation_protocol=protocol,
    )  # fmt: skip
    report = TrainReport(
        metric=settings.train.selection_metric, protocol=protocol, users=data.n_users,
        items=data.n_items, events=len(data), test_users=len(split.test_users),
        evaluated_users=min(len(split.test_users), settings.train.eval_users), left_out=left_out,
    )  # fmt: skip
    say(
        f"{len(candidates)} candidates on {protocol}: {len(split.train)} training events, "
        f"{report.evaluated_users} of {report.test_users} test users ranked over "
        f"{data.n_items} items"
    )
    return Candidates(data, embeddings, candidates, split, options, report)


def judged_items(split: Split, data: Interactions) -> Split:
    """`split` ranking only the items some event of `data` touches.

    A catalog item without a single event (a product added since the last event) can never
    be a held-out item, so ranking it in validation can only push held-out items down: every
    slot a model gives a new item would count as a miss, and the night would prefer the
    models that never show new items. Such items are left out of the validation's ranking;
    the published lists still rank them.

    Args:
        split: The night's split of `data`.
        data: Every event of the night, over the whole catalog.
    """
    touched = data.item_counts() > 0
    if touched.all():
        return split
    candidates = touched if split.candidates is None else split.candidates & touched
    return dataclasses.replace(split, candidates=candidates)


def _fit_candidates(night: Night, *, log_files: bool = True, keep: bool = True) -> None:
    """Fit and evaluate each candidate into the report; one that fails is left out, noted.

    Args:
        night: The run's state: its candidates, split, tracker and report.
        log_files: Log each fitted model's files with its run (training does; evaluation
            does not).
        keep: Keep each fitted model in `night.fitted` for a refit (training does).
    """
    tracker, settings, report, say = night.tracker, night.settings, night.report, night.say
    specs = night.work.specs
    took: dict[str, float] = {}  # seconds of each finished candidate (fit and evaluation)
    with Progress("train", len(specs), unit="candidates", heartbeat=True) as shown:
        for spec in specs:
            raise_if_stopped()  # `Stopped` is no Exception: it is never taken for a failed fit
            label = candidate_label({"model": spec.name, "params": spec.params})
            shown.advance(0, step=f"fitting {label}", expected=expected_seconds(spec, took))
            say(f"fitting {label}")
            start = time.perf_counter()
            try:
                result = _fit_candidate(night, spec, log_files=log_files, keep=keep)
            except Exception as exc:  # a candidate that cannot train never fails the night
                reason = f"{label}: did not train ({type(exc).__name__}: {exc}); left out"
                report.left_out.append(reason)
                say(reason)
                continue
            finally:
                took[spec.name] = time.perf_counter() - start
                shown.advance()
            report.candidates.append(result)
            say(
                f"{label}: {settings.train.selection_metric}="
                f"{result.metrics.get(settings.train.selection_metric, float('nan')):.4f}, "
                f"fit {result.fit_seconds:.1f} s"
            )
    if report.left_out:
        tracker.log_dict({"left_out": report.left_out}, "left_out.json")
        tracker.set_tag("left_out", "; ".join(report.left_out)[:5000])
    if not report.candidates:
        raise RuntimeError(f"no candidate trained: {'; '.join(report.left_out)}")


def expected_seconds(spec: ModelSpec, took: dict[str, float]) -> float | None:
    """Seconds a candidate should take (fit and evaluation), for the progress estimate.

    A blend fits and scores each of its members, so it should take about as long as the
    finished candidates of its members' models together (the finished ones' average for a
    model not among them); None for any other candidate (the average of the finished ones).

    Args:
        spec: The candidate about to be fitted.
        took: Seconds of each finished candidate, by model name.
    """
    members = spec.params.get("members") if spec.name == "blend" else None
    if not members or not took:
        return None
    average = sum(took.values()) / len(took)
    return sum(took.get(parse_spec(member)[0], average) for member in members)


def _fit_candidate(
    night: Night, spec: ModelSpec, *, log_files: bool = True, keep: bool = True
) -> CandidateResult:
    """Fit one candidate on the training part and evaluate it, in its own nested run."""
    tracker, settings, split = night.tracker, night.settings, night.work.split
    embeddings, options, map_chunks = night.work.embeddings, night.work.options, night.map_chunks
    name, params = spec.name, spec.params
    model = spec.create()
    with tracker.run(name, nested=True, tags={"model": name, "protocol": split.protocol}) as run:
        tracker.log_params({"model": name, **{f"param.{k}": _param(v) for k, v in params.items()}})
        tracker.log_dict({"model": name, "params": params}, "config.json")
        start = time.perf_counter()
        try:
            epochs = fit_shared(model, TrainingData(split.train, embeddings), options)
        except Exception as exc:
            tracker.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
            raise
        seconds = time.perf_counter() - start
        tracker.log_epochs(epochs)
        try:
            metrics = evaluate(
                model, split, KS, item_embeddings=embeddings,
                memory_mb=settings.compute.score_memory_mb, max_users=settings.train.eval_users,
                seed=settings.compute.seed, progress=options.progress, map_chunks=map_chunks,
            )  # fmt: skip
        except Exception as exc:
            tracker.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
            raise
        tracker.log_metrics({**mlflow_names(metrics), "fit_seconds": seconds})
        if log_files:
            tracker.log_bundle(
                ModelBundle.from_fit(model, split.train, {"validation": metrics}),
                max_weights_mb=settings.tracking.log_weights_max_mb,
            )
        result = CandidateResult(name, params, metrics, round(seconds, 3), run.info.run_id, epochs)
        if keep:
            night.fitted[result.key] = model
        return result


def _param(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else value


def _log_comparison(tracker: Tracker, report: TrainReport, winner, challenger) -> None:
    """The decision, every candidate's figures, and a PNG comparing them, in the parent run."""
    tracker.log_dict(
        {
            "protocol": report.protocol,
            "metric": report.metric,
            "decision": report.decision,
            "candidates": [asdict(c) for c in report.candidates],
        },
        "candidates.json",
    )
    tracker.set_tag("decision", report.decision)
    with tempfile.TemporaryDirectory() as tmp:
        path = comparison_png(
            [candidate_label(asdict(c)) for c in report.candidates],
            [c.metrics for c in report.candidates],
            [c.epochs for c in report.candidates],
            Path(tmp) / "candidates.png",
            metric=report.metric,
            title=f"{report.protocol}: {report.decision}",
            winner=report.candidates.index(winner),
            challenger=None if challenger is None else report.candidates.index(challenger),
        )
        tracker.log_artifact(str(path))


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


def _refit_and_register(
    night: Night, result: CandidateResult, alias: str, extra: dict[str, str]
) -> RegisteredVersion:
    """Refit `result`'s config on all events, register it and point `alias` at it.

    Args:
        night: The run's state: the data, fit options, tracker and settings.
        result: The candidate to refit, with its validation metrics and MLflow run.
        alias: `champion` or `challenger`.
        extra: Tags and bundle metadata: the pipeline run, the parent run, the split.
    """
    settings, tracker, context = night.settings, night.tracker, night.context
    full = night.everything()
    model = night.fitted.pop(result.key, None)  # keeps what it tuned on validation
    if model is None or not model.refit(full, night.work.options):
        model = create(result.model, result.params)
        fit_shared(model, full, night.work.options)  # shares the blend's refit members
    # the item vectors and their encoder travel with the model, so it can rank by a query
    encoder = {} if full.item_embeddings is None else {
        "encoder": encoder_id(context), "encoder_source": settings.embedding.encoder,
        "encoder_max_length": settings.embedding.encoder_max_length,
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
        metric=settings.train.selection_metric,
        metric_value=result.metrics[settings.train.selection_metric],
        alias=alias,
        tags={"validation": json.dumps(result.metrics, sort_keys=True), **extra},
    )


def _f(result: CandidateResult, metric: str) -> str:
    return f"{result.metrics[metric]:.4f}"


def candidate_label(candidate: dict) -> str:
    """Model name, plus the parameters that differ from its defaults (so rows stay apart)."""
    name = candidate["model"]
    if name not in registered():
        return name
    defaults = registered()[name]().params()
    changed = {k: v for k, v in candidate["params"].items() if defaults.get(k) != v}
    if not changed:
        return name
    return f"{name}({', '.join(f'{k}={v}' for k, v in changed.items())})"
