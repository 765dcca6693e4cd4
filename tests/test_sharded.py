"""The sharded-stage contract: a stage in one module runs here or as mapped Prefect tasks,
and a commit refuses a plan with a shard missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from recsys_core.context import RunContext
from recsys_core.pipeline.sharded import MissingShards, ShardedStage, results_in_plan_order
from recsys_core.settings import Settings


@dataclass(frozen=True)
class Piece:
    index: int
    numbers: tuple[int, ...]


@dataclass(frozen=True)
class SumPlan:
    plan_id: str
    shards: tuple[Piece, ...]


@dataclass(frozen=True)
class PartialSum:
    index: int
    total: int


@dataclass
class SumReport:
    total: int
    shards: int


class SumStage(ShardedStage[SumPlan, Piece, PartialSum, SumReport]):
    """A whole sharded stage: sums 0..9 in three shards."""

    name, shard_name, commit_name = "sum", "sum-shard", "commit-sum"

    def plan(self, context: RunContext) -> SumPlan:
        numbers = list(range(10))
        return SumPlan("p1", tuple(Piece(i, tuple(numbers[i::3])) for i in range(3)))

    def run(
        self, context: RunContext, plan: SumPlan, shard: Piece, *, progress: bool = False
    ) -> PartialSum:
        return PartialSum(shard.index, sum(shard.numbers))

    def commit(
        self, context: RunContext, plan: SumPlan, results: Sequence[PartialSum]
    ) -> SumReport:
        ordered = results_in_plan_order(self.name, plan, results)
        return SumReport(total=sum(r.total for r in ordered), shards=len(ordered))


SUM = SumStage()


def test_a_stage_runs_here_and_its_commit_refuses_a_missing_shard(tmp_path):
    context = RunContext(Settings(data_dir=tmp_path))
    assert SUM.run_here(context) == SumReport(total=45, shards=3)
    plan = SUM.plan(context)
    results = [SUM.run(context, plan, shard) for shard in plan.shards]
    assert SUM.commit(context, plan, results[::-1]) == SumReport(total=45, shards=3)
    with pytest.raises(MissingShards, match=r"sum plan p1: shard\(s\) \[1\] returned no result"):
        SUM.commit(context, plan, [results[0], results[2]])


def test_a_new_stage_is_one_line_in_a_flow(harness, tmp_path):
    from prefect import flow

    from flows.stages import run_sharded

    @flow
    def sum_flow() -> SumReport:
        return run_sharded(SUM, Settings(data_dir=tmp_path))

    assert sum_flow() == SumReport(total=45, shards=3)
