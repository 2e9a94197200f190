"""The `secanalyst` entry point's error handling, in one place: a ConfigError (or a
settings/connection failure that escaped the start-up checks) is printed as one line on
stderr and exits 2; the traceback only with `--debug` or SECANALYST_DEBUG=1."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from pipeline.cli.config_errors import ConfigError, from_validation_error
from pipeline.devstack.processes import PortTaken

EXIT_CONFIG = 2
_debug = {"on": False}


def debug_enabled() -> bool:
    return _debug["on"] or os.environ.get("SECANALYST_DEBUG", "") not in {"", "0"}


def _global_options(debug: Annotated[bool, typer.Option(
        "--debug", help="Show the traceback of an error (or SECANALYST_DEBUG=1).")] = False,
        ) -> None:
    _debug["on"] = debug


def as_config_error(exc: BaseException) -> ConfigError | None:
    """The configuration error behind an exception, if it is one."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return from_validation_error(exc)
    if isinstance(exc, PortTaken):  # e.g. another checkout's embedded stack is up
        return ConfigError("port", ", ".join(map(str, exc.ports)),
                           "taken by another program (another checkout's `secanalyst dev "
                           "up`?)", f"Stop it (`secanalyst dev down` there), or {exc.hint}")
    return _unreachable_service(exc)


def _unreachable_service(exc: BaseException) -> ConfigError | None:
    """A command without a start-up check failed to reach a service: say which setting."""
    import psycopg
    from aiokafka.errors import KafkaConnectionError

    from pipeline.cli.preflight import check_database, check_kafka
    from pipeline.config import load_settings

    checks = {psycopg.OperationalError: check_database, KafkaConnectionError: check_kafka}
    for kind, check in checks.items():
        if isinstance(exc, kind):
            try:
                check(load_settings())
            except ConfigError as error:
                return error
            return None  # reachable now: a different problem, keep the traceback
    return None


class SecanalystTyper(typer.Typer):
    """typer.Typer with a global --debug option and the one-line configuration errors."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callback()(_global_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            error = as_config_error(exc)
            if error is None:
                raise
            if debug_enabled():
                traceback.print_exception(exc)
            print(f"secanalyst: {error.message}", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
