"""Start-up checks of a command: its settings load, and the services it needs answer
(PostgreSQL `select 1`, the Kafka bootstrap's metadata, each model server's /health), each
with a short timeout. A failure is a ConfigError naming the setting to fix; when the
address is unset (the embedded stack) the hint is `secanalyst dev up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from enum import StrEnum

import httpx
import psycopg

from pipeline.cli.config_errors import ConfigError, load_checked_settings, mask_secrets
from pipeline.config import Settings
from pipeline.logging import configure_logging

TIMEOUT_S = 3.0
DEV_UP = "Run `secanalyst dev up` first"


class Need(StrEnum):
    DATABASE = "database"
    KAFKA = "kafka"
    MODEL = "model server"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


def check_database(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    url = settings.database_url
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout_s))) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        embedded = settings.database.url is None
        raise ConfigError(
            "SECANALYST_DATABASE__URL / [database] url"
            + (" (unset: the embedded PostgreSQL)" if embedded else ""),
            mask_secrets(url), f"PostgreSQL is unreachable ({_first_line(exc)})",
            f"{DEV_UP}, or set it to your PostgreSQL." if embedded else
            "Check the host, port, user, password and database name, and that the server "
            "is running.") from exc


def check_kafka(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    bootstrap = settings.kafka_bootstrap
    try:
        asyncio.run(asyncio.wait_for(_kafka_metadata(bootstrap, timeout_s), timeout_s * 2))
    except Exception as exc:  # any failure means: no broker answers at this address
        embedded = settings.kafka.bootstrap_servers is None
        reason = "no answer in time" if isinstance(exc, TimeoutError) else _first_line(exc)
        raise ConfigError(
            "SECANALYST_KAFKA__BOOTSTRAP_SERVERS / [kafka] bootstrap_servers"
            + (" (unset: the embedded broker)" if embedded else ""),
            bootstrap, f"the Kafka broker is unreachable ({reason})",
            f"{DEV_UP}, or set it to your brokers (host:port,...)." if embedded else
            "Check the host:port list and that the broker is running.") from exc


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """aiokafka logs each failed connection at ERROR: the ConfigError says it once."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _kafka_metadata(bootstrap: str, timeout_s: float) -> None:
    """One metadata request answered by any bootstrap server, as a client's first step."""
    from aiokafka.conn import collect_hosts, create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    failures = []
    with _quiet("aiokafka"):
        for host, port, _ in collect_hosts(bootstrap):
            try:
                conn = await create_conn(host, port, client_id="secanalyst-preflight",
                                         request_timeout_ms=int(timeout_s * 1000))
            except Exception as exc:  # refused, unresolvable, timed out
                failures.append(f"{host}:{port}: {_first_line(exc)}")
                continue
            try:
                await conn.send(MetadataRequest([]))
                return
            except Exception as exc:  # not a Kafka broker, or it did not answer
                failures.append(f"{host}:{port}: no metadata ({_first_line(exc)})")
            finally:
                conn.close()
    raise ConnectionError("; ".join(failures) or "no bootstrap server given")


def health_url(base_url: str) -> str:
    """`http://host:8000/v1` → `http://host:8000/health` (vLLM's, at the root)."""
    return f"{base_url.rstrip('/').removesuffix('/v1')}/health"


def check_model_servers(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    """Every pool needs at least one replica answering /health (the router works around
    the others)."""
    embedded = not settings.llm.pools
    with httpx.Client(timeout=timeout_s) as client:
        for name, pool in settings.llm_pools.items():
            reasons = []
            for endpoint in pool.endpoints:
                try:
                    client.get(health_url(endpoint)).raise_for_status()
                    break
                except httpx.HTTPError as exc:
                    reasons.append(f"{endpoint}: {_first_line(exc) or type(exc).__name__}")
            else:
                raise ConfigError(
                    "SECANALYST_LLM__POOLS / [llm.pools]"
                    + (" (unset: the embedded vLLM)" if embedded else f" pool {name!r}"),
                    ", ".join(pool.endpoints),
                    f"no model server answers /health ({'; '.join(reasons) or 'no endpoint'})",
                    f"{DEV_UP}, or set llm.pools to your vLLM servers." if embedded else
                    "Check the endpoints (…/v1 base URLs) and that vLLM is running.")


CHECKS: dict[Need, Callable[[Settings], None]] = {
    Need.DATABASE: check_database, Need.KAFKA: check_kafka,
    Need.MODEL: check_model_servers}


def check_reachable(settings: Settings, needs: tuple[Need, ...]) -> None:
    """Check every need; raise the first failure, naming the other unreachable ones."""
    failures: list[tuple[Need, ConfigError]] = []
    for need in needs:
        try:
            CHECKS[need](settings)
        except ConfigError as exc:
            failures.append((need, exc))
    if failures:
        first = failures[0][1]
        if len(failures) > 1:
            first.problem += f" (also unreachable: {', '.join(n for n, _ in failures[1:])})"
        raise first


def command_settings(*needs: Need) -> Settings:
    """A command's settings, checked: loadable, and every service it needs answering."""
    settings = load_checked_settings()
    configure_logging(settings.log_level, settings.log_format)
    check_reachable(settings, needs)
    return settings
