"""verdicts → the Wazuh 4.x manager's queue socket, for the tenants in
`ingest.writeback_tenants` (the Wazuh side: pipeline/sources/writeback.py).

Subscribed like a stage (consumers/subscription.py): batches of raw records, group
`<prefix>-wazuh-writeback`, offsets committed only after the batch is written. A verdict
the manager refuses on its own is dead-lettered (reason + original bytes) and the others
are still written; a manager that cannot be reached rewinds the batch and backs off,
longer each time (pipeline/kafka/messaging.py run_batch). One lane: verdicts have no
batch twin.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_stage
from pipeline.config import Settings
from pipeline.kafka.messaging import Publisher, Record
from pipeline.sources.writeback import QueueSocket, write_verdicts
from pipeline.stages.common import dlq_sink

NAME = "wazuh-writeback"
MAX_RECORDS = 500


def register(broker: KafkaBroker, settings: Settings, queue: QueueSocket,
             publisher: Publisher) -> None:
    """Subscribe the write-back to the verdicts topic; `publisher` carries dead letters."""
    tenants = set(settings.ingest.writeback_tenants)
    if not tenants:
        raise ValueError("no tenant opted in: set ingest.writeback_tenants")
    topics = settings.kafka.topics

    async def handle(records: list[Record]) -> None:
        write_verdicts(queue, (r.value for r in records), tenants)

    subscribe_stage(broker, settings, NAME, [topics.verdicts], handle,
                    dead_letter=dlq_sink(publisher, topics.dlq, NAME),
                    max_records=MAX_RECORDS)
