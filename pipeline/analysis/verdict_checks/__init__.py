"""Named checks of the model's claims. Each check is a function that returns a reason
string when the claim must not be shown, or None when it passes; `run` records every
check as a CheckResult so the console can show each failed one with its reason.

One module per claim: summary, severity, attack, next_steps. The context (the alert, its
facts, the prompt's own text) is in `context`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from pipeline.analysis.verdict_checks.context import CheckContext
from schemas.verdict import CheckResult

Claim = Literal["summary", "severity", "attack", "next_steps"]
T = TypeVar("T")


def run(claim: Claim, checks: Sequence[tuple[str, Callable[[CheckContext, T], str | None]]],
        ctx: CheckContext, subject: T) -> list[CheckResult]:
    """Run every named check on one claim (all of them, so every reason is recorded)."""
    results = []
    for name, check in checks:
        reason = check(ctx, subject)
        results.append(CheckResult(name=name, claim=claim, passed=reason is None,
                                   reason=reason))
    return results


def passed(results: Sequence[CheckResult]) -> bool:
    return all(result.passed for result in results)
