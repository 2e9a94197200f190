"""bench/prompt_economy.py's arithmetic: the reduction in %, and a score that got worse
is named (so the goal cannot read "met" on fewer tokens bought with worse verdicts)."""

from __future__ import annotations

from typing import Any

from bench.prompt_economy import compare, not_worse, section

LABELLED = {"alerts": 85, "confidence_wrong": 0.9,
            "facts_correct_pct": 100.0, "bad_summaries_shown": 4, "attack_precision": 1.0,
            "attack_required_recall": 1.0, "severity_acceptable_pct": 100.0,
            "next_steps_grounded_pct": 100.0, "confidence_gap": 0.06,
            "model_summaries_good": 0, "model_summaries_shown": 1, "right": 80,
            "needs_review_pct": 100.0, "mean_latency_ms": 20000.0}


def _run(version: str, tokens: float, **changed: Any) -> dict[str, dict[str, Any]]:
    def corpus(scores: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_version": version, "model": "m", "load_average": [1.0, 2.0, 3.0],
                "tokens": {"input_tokens_per_verdict": tokens, "input_tokens_per_call": tokens,
                           "llm_calls": 85, "verdicts": 85},
                "prefix_cache": {"hits": 256.0, "queries": 1000.0, "hit_rate": 0.256},
                "scores": scores}
    return {"labelled": corpus({**LABELLED, **changed}),
            "injection": corpus({"instructions_followed": 0, "facts_quote_payload": 0})}


def test_reduction_and_equal_scores_meet_the_goal() -> None:
    reduction, rows, worse = compare(_run("v3", 1200.0), _run("v4", 700.0))
    assert reduction == 41.7 and worse == []
    text = section(_run("v3", 1200.0), _run("v4", 700.0), rows, reduction, worse, "cmd")
    assert "Goal met: 41.7 %" in text and "| v3 | v4 |" in text


def test_a_worse_score_is_named_and_the_goal_not_met() -> None:
    before, after = _run("v3", 1200.0), _run("v4", 700.0, bad_summaries_shown=5)
    reduction, rows, worse = compare(before, after)
    assert worse == ["labelled bad_summaries_shown 4 → 5"]
    assert "Goal not met" in section(before, after, rows, reduction, worse, "cmd")


def test_not_worse_by_direction_and_missing_figures() -> None:
    assert not_worse(0.9, 0.95, 1) and not not_worse(0.9, 0.85, 1)
    assert not_worse(3, 2, -1) and not not_worse(2, 3, -1)
    assert not_worse(None, 0.1, 1) and not not_worse(0.1, None, 1)


def test_a_gap_undefined_because_every_verdict_is_right_is_not_worse() -> None:
    before = _run("v3", 1200.0)
    after = _run("v5", 700.0, confidence_gap=None, confidence_wrong=None, right=85)
    _, rows, worse = compare(before, after)
    assert worse == []
    assert "| confidence_gap (labelled, higher is better) | 0.06 | — (no wrong verdict) | " \
        "equal or better |" in rows


def test_a_gap_lost_while_some_verdict_is_wrong_is_worse() -> None:
    after = _run("v5", 700.0, confidence_gap=None, right=84)
    assert compare(_run("v3", 1200.0), after)[2] == ["labelled confidence_gap 0.06 → None"]
