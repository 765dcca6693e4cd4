"""One contract for the stages whose middle step runs on many workers: plan -> run -> commit.

1. `plan(context)` reads what the stage needs once, claims its staging and cuts the work
   into shards: a small, picklable plan with a `shards` sequence, each shard with an `index`.
2. `run(context, plan, shard)` does one shard's work and stages it; nothing readers see
   changes. Shards are independent, so a task runner may run them anywhere, in any order.
3. `commit(context, plan, results)` checks that every shard returned a result
   (`results_in_plan_order`, which raises `MissingShards`) and publishes them all in one
   commit. A missing or failed shard means no commit: nothing is published.

`encode` and `recommend` implement it; `run_here` runs a stage in this process, and
`tasks.stages`/`flows.stages` wrap any stage as Prefect tasks with one shard map. A new
sharded stage is one module with a `ShardedStage` subclass plus one call in a flow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from recsys_core.context import RunContext


class Indexed(Protocol):
    """A shard, or a shard's result: which shard of the plan it is."""

    @property
    def index(self) -> int: ...


class Plan(Protocol):
    """What `plan` returns: an id and the shards (small, so tasks can pass it around)."""

    @property
    def plan_id(self) -> str: ...

    @property
    def shards(self) -> Sequence[Indexed]: ...


PlanT = TypeVar("PlanT", bound=Plan)
ShardT = TypeVar("ShardT", bound=Indexed)
ResultT = TypeVar("ResultT", bound=Indexed)
ReportT = TypeVar("ReportT")


class MissingShards(RuntimeError):
    """A shard of the plan returned no result (a lost worker, a skipped task): the commit
    refuses and nothing is written. An internal failure, not bad input (exit code 1)."""


class ShardedStage(ABC, Generic[PlanT, ShardT, ResultT, ReportT]):
    """A stage cut into shards: `plan`, then `run` per shard (anywhere), then one `commit`.

    Attributes:
        name: The stage's name, e.g. `encode` (task names, messages).
        shard_name: What a shard's task is called, e.g. `encode-shard`.
        commit_name: What the commit's task is called, e.g. `commit-encode`.
        wants_gpu: Whether its shards go to GPU workers when a cluster has some.
    """

    name: str
    shard_name: str
    commit_name: str
    wants_gpu: bool = False

    @abstractmethod
    def plan(self, context: RunContext) -> PlanT:
        """Read the inputs, claim the staging and cut the work into shards.

        Args:
            context: The data directory, run settings and run id.
        """

    @abstractmethod
    def run(
        self, context: RunContext, plan: PlanT, shard: ShardT, *, progress: bool = False
    ) -> ResultT:
        """Do one shard's work and stage it (readers see nothing new).

        Args:
            context: The data directory and the settings of the worker running the shard.
            plan: From `plan`.
            shard: One of `plan.shards`.
            progress: Show a progress bar.
        """

    @abstractmethod
    def commit(self, context: RunContext, plan: PlanT, results: Sequence[ResultT]) -> ReportT:
        """Publish every shard's staged work in one commit.

        Args:
            context: The data directory, run settings and run id.
            plan: From `plan`.
            results: One result per shard of the plan, in any order.

        Raises:
            MissingShards: A shard of the plan has no result; nothing is written.
        """

    # one line each for the run's log; a stage may say more
    def plan_line(self, plan: PlanT) -> str:
        return f"{self.name} plan {plan.plan_id}: {len(plan.shards)} shard(s)"

    def result_line(self, result: ResultT) -> str:
        return f"{self.shard_name} {result.index} done"

    def report_line(self, report: ReportT) -> str:
        return f"{self.name} committed: {report}"

    def run_here(self, context: RunContext, *, progress: bool = False) -> ReportT:
        """Plan, run every shard one after another in this process, and commit.

        Args:
            context: The data directory, run settings and run id.
            progress: Show progress bars.
        """
        plan = self.plan(context)
        results = [self.run(context, plan, shard, progress=progress) for shard in plan.shards]
        return self.commit(context, plan, results)


def results_in_plan_order(stage: str, plan: Plan, results: Sequence[ResultT]) -> list[ResultT]:
    """One result per shard of `plan`, in the plan's shard order.

    Args:
        stage: The stage's name, for the message.
        plan: The plan the results belong to.
        results: The shards' results, in any order.

    Raises:
        MissingShards: A shard of the plan returned no result.
    """
    by_index = {r.index: r for r in results}
    missing = [s.index for s in plan.shards if s.index not in by_index]
    if missing:
        raise MissingShards(
            f"{stage} plan {plan.plan_id}: shard(s) {missing} returned no result; nothing written"
        )
    return [by_index[s.index] for s in plan.shards]
