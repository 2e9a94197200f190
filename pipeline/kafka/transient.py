"""Which failures are the world's fault (retry the batch, however long it takes) and which
are the record's (isolate it and dead-letter it).

Only a failure known to be transient is retried as it is: anything else is assumed to be
caused by the records, because retrying a poison record forever stalls its partition. A
good alert is never dead-lettered for an outage: a connection error anywhere in the chain
of explicit causes (`raise ... from`) makes the failure transient. The implicit context
(an error raised while handling another) is not followed: a poison record's error raised
in some retry path must not be mistaken for the outage it happened during.
"""

from __future__ import annotations

import asyncio

import psycopg
from aiokafka import errors as kafka_errors

from pipeline.router.errors import NoHealthyReplica, Saturated

# SQLSTATE classes of psycopg's OperationalError that mean "the server or the connection",
# not "this statement": connection exception, transaction rollback (deadlock, serialization),
# insufficient resources, operator intervention (shutdown, cancel), system error. Class 54
# (program limit exceeded: an index row or a nesting too big) is the record's fault.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})

# SQLSTATEs of any psycopg error that mean "the database is not deployed as this code
# expects" (a migration not yet run, a wrong database, a missing grant or extension). The
# statements are fixed text and records only fill parameters, so no alert can cause them:
# dead-lettering on them would empty a live stream into the DLQ during a deploy.
_SCHEMA_NOT_READY_SQLSTATES = frozenset({
    "42P01",  # undefined_table
    "42703",  # undefined_column
    "42704",  # undefined_object (e.g. type "vector": pgvector not installed)
    "42883",  # undefined_function (an operator of a missing extension)
    "3F000",  # invalid_schema_name
    "3D000",  # invalid_catalog_name
    "42501",  # insufficient_privilege: the stages write as the owner, without row-level
              # security, so not a policy refusing a record's row (also 42501); a stage
              # writing under pipeline.store.tenant_scope would have to drop this one
})

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError,  # asyncio.TimeoutError is TimeoutError since 3.11
    asyncio.TimeoutError,
    ConnectionError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    Saturated,
    NoHealthyReplica,
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same records later can succeed (broker, database or LLM
    unreachable or overloaded)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__
    return False


def schema_not_ready(exc: BaseException) -> bool:
    """The database lacks a table, column, extension or grant the statement needs."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate in _SCHEMA_NOT_READY_SQLSTATES


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return bool(exc.exceptions) and all(is_transient(e) for e in exc.exceptions)
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if schema_not_ready(exc):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # No SQLSTATE: the client could not reach the server or lost the connection.
        state = exc.sqlstate
        return state is None or state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False))
    return _is_http_connection_error(exc)


def _is_http_connection_error(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency of the router
        return False
    return isinstance(exc, aiohttp.ClientConnectionError)
