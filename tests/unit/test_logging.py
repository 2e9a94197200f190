import io
import sys

import structlog

from pipeline.logging import configure_logging


def test_logs_follow_the_current_stderr_after_it_is_swapped_and_closed(monkeypatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO", "json")
    log = structlog.get_logger("t")
    log.info("one")
    first.close()  # what a test runner does to a captured stream
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("two")  # must not raise "I/O operation on closed file"
    assert '"event": "two"' in second.getvalue()
