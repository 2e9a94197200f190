"""is_transient: an outage is retried, anything else is the record's fault."""

from __future__ import annotations

import aiohttp
import psycopg
import pytest
from aiokafka import errors as kafka_errors
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from pipeline.kafka.transient import is_transient
from pipeline.router.errors import ContextTooLong, NoHealthyReplica, Saturated, UpstreamError


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("connection refused"),  # no SQLSTATE: could not connect
    pg_errors.AdminShutdown("terminating connection due to administrator command"),
    pg_errors.SerializationFailure("could not serialize access"),
    pg_errors.TooManyConnections("too many clients"),
    PoolTimeout("couldn't get a connection after 30.00 sec"),
    kafka_errors.KafkaConnectionError("no connection to node"),
    kafka_errors.KafkaTimeoutError(),
    kafka_errors.NodeNotReadyError(),
    kafka_errors.RequestTimedOutError(),
    Saturated(2.0),
    NoHealthyReplica("every replica is down"),
    TimeoutError(),  # what asyncio.wait_for raises (asyncio.TimeoutError since 3.11)
    ConnectionRefusedError(111, "Connect call failed"),
    aiohttp.ServerDisconnectedError(),
    # The database is not deployed as the code expects (a deploy ahead of its migration):
    pg_errors.UndefinedTable('relation "alerts" does not exist'),
    pg_errors.UndefinedColumn('column "model" does not exist'),
    pg_errors.UndefinedObject('type "vector" does not exist'),
    pg_errors.UndefinedFunction("operator does not exist: vector <=> vector"),
    pg_errors.InvalidSchemaName('schema "secanalyst" does not exist'),
    pg_errors.InvalidCatalogName('database "secanalyst" does not exist'),
    pg_errors.InsufficientPrivilege("permission denied for table alerts"),
], ids=lambda e: type(e).__name__)
def test_outages_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    pg_errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
    pg_errors.CharacterNotInRepertoire("invalid byte sequence for encoding UTF8"),
    pg_errors.ProgramLimitExceeded("index row size 8024 exceeds btree maximum 2704"),
    pg_errors.StatementTooComplex("stack depth limit exceeded"),
    kafka_errors.MessageSizeTooLargeError(),
    ContextTooLong(9000, 4096),
    UpstreamError("400 bad request", upstream_status=400),
    ValueError("Circular reference detected"),
    RecursionError("maximum recursion depth exceeded"),
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    KeyError("rule"),
], ids=lambda e: type(e).__name__)
def test_record_failures_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_an_explicit_cause_counts_but_an_implicit_context_does_not() -> None:
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as cause:
            raise RuntimeError("publish failed") from cause
    except RuntimeError as exc:
        assert is_transient(exc)
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError:
            raise ValueError("a poison record met during an outage") from None
    except ValueError as exc:
        assert not is_transient(exc)
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError:
            raise ValueError("raised while handling, not because of, the outage")  # noqa: B904
    except ValueError as exc:
        assert exc.__context__ is not None and not is_transient(exc)


def test_an_exception_group_is_transient_only_when_all_of_it_is() -> None:
    outage = ExceptionGroup("gather", [ConnectionError("db"), Saturated(1.0)])
    mixed = ExceptionGroup("gather", [ConnectionError("db"), ValueError("bad record")])
    assert is_transient(outage)
    assert not is_transient(mixed)

