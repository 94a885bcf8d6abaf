"""Splitting pending units into shards, one per worker."""

from __future__ import annotations

from segbench.running.plan import RunPlan, WorkUnit


def by_adapter(plan: RunPlan, units: list[WorkUnit]) -> list[WorkUnit]:
    """The units grouped by adapter in the plan's adapter order, the plan's order kept within a group."""
    order = {name: index for index, name in enumerate(plan.adapters)}
    return sorted(units, key=lambda unit: order[unit.adapter])


def shard_units(plan: RunPlan, units: list[WorkUnit], count: int) -> list[list[WorkUnit]]:
    """Deal the units round-robin into ``count`` shards, adapter by adapter.

    The result depends on nothing but the arguments, so a shard can be named and run again. Every shard
    holds each adapter's units next to each other (a worker loads each adapter once) and every shard
    gets an equal share, within one unit, of each adapter's units (slow and fast models are spread
    evenly over the workers)."""
    if count < 1:
        raise ValueError(f"cannot shard into {count} shards")
    shards: list[list[WorkUnit]] = [[] for _ in range(count)]
    for index, unit in enumerate(by_adapter(plan, units)):
        shards[index % count].append(unit)
    return shards
