"""The consumers part of `secanalyst dev status`: per stage, how many consumers are in its
groups and how many records wait (lag), live topic and backfill lane, from the broker
(pipeline/kafka/lag.py) — whoever runs the consumers."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table

from pipeline.config import Settings
from pipeline.kafka.lag import GroupLag, StageLag, stage_lags


def consumers_table(lags: list[StageLag]) -> Table:
    table = Table("stage", "reads (live / backfill lane)", "consumers", "lag (live)",
                  "lag (backfill)", title="consumers (secanalyst run)", title_justify="left")
    for lag in lags:
        table.add_row(lag.stage, f"{lag.live.topics[0]} / {lag.batch.topics[0]}",
                      f"{lag.live.members} / {lag.batch.members}",
                      _lag_cell(lag.live), _lag_cell(lag.batch))
    return table


def _lag_cell(group: GroupLag) -> str:
    return f"{group.lag:,}" if group.partitions else "no topic yet"


def consumers_running(lags: list[StageLag]) -> bool:
    return all(lag.live.members > 0 for lag in lags)


def print_consumers(settings: Settings, console: Console) -> None:
    """The table, or one line saying why the broker could not be asked."""
    try:
        lags = asyncio.run(stage_lags(settings))
    except Exception as exc:  # a status command reports; it never fails on this part
        console.print(f"consumers: could not ask the broker at {settings.kafka_bootstrap} "
                      f"({type(exc).__name__}: {exc})")
        return
    console.print(consumers_table(lags))
    if not consumers_running(lags):
        console.print("Some stage has no consumer: nothing verdicts what arrives. Start them "
                      "with [bold]secanalyst dev up --consumers[/bold] (or `secanalyst run`).")
