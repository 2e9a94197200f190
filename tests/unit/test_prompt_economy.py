"""The explain prompt's economy (issue 15): every fixed word in a system message that is
byte-identical for all alerts (vLLM's prefix cache holds it), only the runbook sections the
model uses, and a token budget per verdict measured with the served model's tokenizer on
the sample alerts and the injection corpus — while alert text stays inert data."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from statistics import mean

import pytest

from pipeline.analysis.explain import with_overview
from pipeline.analysis.normalize import normalize
from pipeline.analysis.prompt import Prompt, TaskSize, build_prompt, cut_at_sentence
from pipeline.analysis.runbooks import chunk_runbook, library, matching
from pipeline.analysis.verdict_checks.next_steps import generic_steps, runbook_steps
from pipeline.config import Settings
from pipeline.router.tokens import TokenCounter, counter_for
from pipeline.runtime import tokenizer_dir
from schemas.messages import EnrichedAlert, NormalizedAlert, RunbookCitation

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "samples" / "wazuh-alerts.jsonl"
INJECTION = ROOT / "tests" / "data" / "injection-alerts.jsonl"
# explain-v3 averaged 1,192 input tokens per verdict on the 85 labelled alerts (vLLM's own
# count, docs/benchmarks.md); issue 15 asks for >= 30 % fewer.
V3_TOKENS_PER_VERDICT = 1192
MEAN_BOUND = int(0.7 * V3_TOKENS_PER_VERDICT)
# Worst case of one alert: the whole alert budget (600) + the passages + steps + system.
MAX_BOUND = 1300
# vLLM's CPU KV-cache block: a shared prefix shorter than one block is never reused.
CACHE_BLOCK_TOKENS = 128


def _alerts(path: Path) -> list[NormalizedAlert]:
    return [normalize(line, tenant_id="acme") for line in path.read_bytes().splitlines()
            if line.strip()]


@cache
def _counter() -> TokenCounter:
    path = tokenizer_dir(Settings())
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        pytest.skip(f"the served model's tokenizer is not at {path}")
    return counter_for(path)


def _retrieved(alert: NormalizedAlert) -> list[RunbookCitation]:
    """What retrieval typically brings: five sections of the runbooks written for the
    alert, commands and response included (the sections the prompt must leave out)."""
    runbooks = [r for r, _ in matching(library(), alert.rule_id, alert.rule_groups)]
    chunks = [c for r in runbooks for c in chunk_runbook(r)][:5]
    return [RunbookCitation(chunk_id=c.chunk_id, runbook=c.runbook.slug,
                            title=c.runbook.title, heading=c.heading,
                            score=0.8 - 0.05 * i, text=c.content)
            for i, c in enumerate(chunks)]


def _prompt(alert: NormalizedAlert, task_size: TaskSize = "small") -> Prompt:
    runbooks = [r for r, _ in matching(library(), alert.rule_id, alert.rule_groups)]
    steps = next((s for r in runbooks if (s := runbook_steps(r, alert))),
                 generic_steps(alert))[:6]
    enriched = with_overview(EnrichedAlert(alert=alert, runbooks=_retrieved(alert)), runbooks)
    return build_prompt(enriched, _counter().count_text, steps=[s.text for s in steps],
                        band="medium", task_size=task_size)


@pytest.mark.parametrize("task_size", ["small", "large"])
def test_system_prefix_is_identical_for_every_alert(task_size: TaskSize) -> None:
    alerts = _alerts(SAMPLES) + _alerts(INJECTION)
    systems = {_prompt(a, task_size).messages[0]["content"] for a in alerts}
    assert len(systems) == 1, "alert content leaked into the shared system message"
    (system,) = systems
    assert not any(a.agent_name and a.agent_name in system for a in alerts)
    rendered = _counter().render([{"role": "system", "content": system},
                                  {"role": "user", "content": "\0"}])
    prefix_tokens = _counter().count_text(rendered[:rendered.index("\0")])
    assert prefix_tokens >= CACHE_BLOCK_TOKENS, "shorter than one prefix-cache block"


def test_input_tokens_per_verdict_within_budget_on_the_samples() -> None:
    tokens = [_counter().count_chat(_prompt(a).messages) for a in _alerts(SAMPLES)]
    assert mean(tokens) <= MEAN_BOUND, f"mean {mean(tokens):.0f} > {MEAN_BOUND}"
    assert max(tokens) <= MAX_BOUND, f"max {max(tokens)} > {MAX_BOUND}"


def test_passages_leave_out_the_steps_section_and_repeat_no_runbook() -> None:
    for alert in _alerts(SAMPLES):
        prompt = _prompt(alert)
        headings = [c.heading.lower() for c in prompt.runbooks]
        assert not any(h.startswith(("investigation", "containment")) for h in headings)
        assert len({c.runbook for c in prompt.runbooks}) == len(prompt.runbooks)
        user = prompt.messages[1]["content"]
        assert "```" not in user.split("<alert>")[0], "a command block reached the passages"


def test_the_runbook_written_for_the_rule_explains_it_when_retrieval_missed_it() -> None:
    alert = next(a for a in _alerts(SAMPLES) if a.rule_id == "5712")
    (runbook, _), *_ = matching(library(), alert.rule_id, alert.rule_groups)
    only_commands = [c for c in _retrieved(alert) if c.heading.startswith("Investigation")]
    enriched = with_overview(EnrichedAlert(alert=alert, runbooks=only_commands), [runbook])
    prompt = build_prompt(enriched, _counter().count_text)
    assert [c.heading for c in prompt.runbooks] == ["What this alert means"]
    assert f'From the runbook "{runbook.title}"' in prompt.messages[1]["content"]


def test_injection_corpus_stays_data_in_the_compact_prompt() -> None:
    for alert in _alerts(INJECTION):
        user = _prompt(alert).messages[1]["content"]
        assert user.count("<alert>") == 1 and user.count("</alert>") == 1
        assert "<|im_start|>" not in user and "<|im_end|>" not in user
        block = user.split("<alert>")[1].split("</alert>")[0]
        assert "<" not in block and ">" not in block and "`" not in block


def test_cut_at_sentence_ends_on_a_sentence_or_a_marked_word() -> None:
    text = "First sentence here. Second one is longer than the limit allows it to be."
    assert cut_at_sentence(text, 40) == "First sentence here."
    cut = cut_at_sentence("no sentence end in this long run of words", 20)
    assert cut == "no sentence end in …"
    assert cut_at_sentence("short.", 40) == "short."
