"""Bad configuration is one clear line: the real `secanalyst` command, run as a
subprocess for each case of bench/config_errors.py (unreachable database, broker and model
server on closed ports, the embedded stack not started, malformed / missing config file,
unknown keys, invalid values)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.config_errors import Case, cases, run_case
from pipeline.cli.config_errors import mask_secrets

CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_line_naming_the_setting(case: Case, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path)
    assert outcome.returncode != 0
    assert not outcome.traceback, outcome.stderr
    assert len(outcome.lines) == 1, outcome.stderr
    line = outcome.lines[0]
    assert line.startswith("secanalyst: ")
    assert case.must_name in line
    if case.must_not_show:
        assert case.must_not_show not in outcome.stderr + outcome.stdout
        assert "***" in line


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=["database", "config file"])
def test_debug_shows_the_traceback(case: Case, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path, debug=True)
    assert outcome.returncode != 0
    assert outcome.traceback
    assert case.must_name in outcome.lines[-1]  # the sentence still comes last


def test_debug_from_the_environment(tmp_path: Path) -> None:
    case = replace(CASES[1], env={**CASES[1].env, "SECANALYST_DEBUG": "1"})
    outcome = run_case(case, tmp_path)
    assert outcome.returncode != 0
    assert outcome.traceback
    assert case.must_name in outcome.lines[-1]


def test_mask_secrets_hides_only_the_password() -> None:
    assert mask_secrets("postgresql://u:pw@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert mask_secrets("postgresql://u@db/x") == "postgresql://u@db/x"
    assert mask_secrets("127.0.0.1:9092") == "127.0.0.1:9092"


def test_mask_secrets_hides_libpq_password_parameters() -> None:
    # libpq reads a password from a URL's query or a key=value string too.
    assert mask_secrets("postgresql://db/x?user=u&password=topsecret&sslmode=require") == \
        "postgresql://db/x?user=u&password=***&sslmode=require"
    assert mask_secrets("host=db port=5432 password=topsecret dbname=x") == \
        "host=db port=5432 password=*** dbname=x"
    assert mask_secrets("host=db password='top secret' dbname=x") == \
        "host=db password=*** dbname=x"
    assert mask_secrets("host=db sslpassword=k1 dbname=x") == "host=db sslpassword=*** dbname=x"
